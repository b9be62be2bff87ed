"""A user's preferences: one JSON object per user in `user_preferences`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path
from pydantic import BaseModel

from techno_os_api.api.deps import PreferencesDep
from techno_os_api.db.preferences import Preferences

router = APIRouter(prefix="/preferences", tags=["preferences"])

UserId = Annotated[str, Path(min_length=1, max_length=255)]
_DB_DOWN: dict[int | str, dict[str, Any]] = {503: {"description": "the database is unreachable"}}


class PreferencesOut(BaseModel):
    user_id: str
    preferences: dict[str, Any]
    updated_at: datetime


def _out(prefs: Preferences) -> PreferencesOut:
    return PreferencesOut(
        user_id=prefs.user_id, preferences=prefs.preferences, updated_at=prefs.updated_at
    )


@router.get("/{user_id}", responses={404: {"description": "unknown user"}, **_DB_DOWN})
async def get_preferences(user_id: UserId, repository: PreferencesDep) -> PreferencesOut:
    prefs = await repository.get(user_id)
    if prefs is None:
        raise HTTPException(404, f"no preferences stored for user {user_id!r}")
    return _out(prefs)


@router.put("/{user_id}", responses=_DB_DOWN)
async def put_preferences(
    user_id: UserId,
    repository: PreferencesDep,
    preferences: Annotated[dict[str, Any], Body(description="the whole preferences object")],
) -> PreferencesOut:
    """Replace the user's preferences with the JSON object in the body."""
    return _out(await repository.put(user_id, preferences))
