"""The `user_preferences` table (created by the Alembic migrations) and its queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_os_api.db.engine import transaction

metadata = MetaData()

user_preferences = Table(
    "user_preferences",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("preferences", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


@dataclass(frozen=True)
class Preferences:
    user_id: str
    preferences: dict[str, Any]
    updated_at: datetime


class PreferencesRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, user_id: str) -> Preferences | None:
        query = select(user_preferences.c.preferences, user_preferences.c.updated_at).where(
            user_preferences.c.user_id == user_id
        )
        async with transaction(self._engine) as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Preferences(user_id, dict(row.preferences), row.updated_at)

    async def put(self, user_id: str, preferences: dict[str, Any]) -> Preferences:
        """Replace the user's preferences (created on first write)."""
        insert_row = insert(user_preferences).values(user_id=user_id, preferences=preferences)
        upsert = insert_row.on_conflict_do_update(
            index_elements=[user_preferences.c.user_id],
            set_={"preferences": insert_row.excluded.preferences, "updated_at": func.now()},
        ).returning(user_preferences.c.updated_at)
        async with transaction(self._engine) as conn:
            updated_at = (await conn.execute(upsert)).scalar_one()
        return Preferences(user_id, preferences, updated_at)
