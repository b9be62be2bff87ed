"""A user's preferences: one JSON object per user in `user_preferences`. A user key reads and
writes its own user's; an admin key anyone's."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from techno_os_api.api.deps import PreferencesDep, SettingsDep
from techno_os_api.api.security import ClientKeyDep, authorize_user
from techno_os_api.core.errors import INVALID_REQUEST, NOT_FOUND, APIError
from techno_os_api.db.jsonb import DocumentError, parse_document
from techno_os_api.db.preferences import Preferences

router = APIRouter(prefix="/preferences", tags=["preferences"])

UserId = Annotated[str, Path(min_length=1, max_length=255)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid client key"},
    403: {"description": "the key acts for another user"},
    503: {"description": "the database is unreachable"},
}
_DOCUMENT: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": "the whole preferences object",
    }
}


def _answer(prefs: Preferences) -> Response:
    # The stored document is spliced in as PostgreSQL returned it (see db/preferences.py).
    body = (
        f'{{"user_id":{json.dumps(prefs.user_id)},"preferences":{prefs.document},'
        f'"updated_at":{json.dumps(prefs.updated_at.isoformat())}}}'
    )
    return Response(body, media_type="application/json")


@router.get("/{user_id}", responses={404: {"description": "unknown user"}, **_ERRORS})
async def get_preferences(
    user_id: UserId, request: Request, key: ClientKeyDep, repository: PreferencesDep
) -> Response:
    authorize_user(request, key, user_id)
    prefs = await repository.get(user_id)
    if prefs is None:
        raise APIError(NOT_FOUND, f"no preferences stored for user {user_id!r}")
    return _answer(prefs)


@router.put(
    "/{user_id}",
    responses={413: {"description": "document too large"}, **_ERRORS},
    openapi_extra=_DOCUMENT,
)
async def put_preferences(
    user_id: UserId,
    request: Request,
    key: ClientKeyDep,
    repository: PreferencesDep,
    settings: SettingsDep,
) -> Response:
    """Replace the user's preferences with the JSON object in the body."""
    authorize_user(request, key, user_id)
    raw = await request.body()  # bounded by PREFERENCES_MAX_BODY_BYTES (GuardMiddleware)
    try:
        document = parse_document(raw, settings.preferences_max_depth)
    except DocumentError as exc:
        raise APIError(INVALID_REQUEST, f"invalid preferences: {exc}", param="body") from None
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return _answer(await repository.put(user_id, text))
