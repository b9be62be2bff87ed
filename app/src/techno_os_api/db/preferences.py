"""The `user_preferences` table (created by the Alembic migrations) and its queries.

Documents travel as JSON text in both directions: PostgreSQL parses and checks what is written,
and what is read goes back to the client as stored, without being parsed and re-serialised by
the service (no cost per read, and no document can fail on the way out).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Text, cast, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_os_api.db.engine import transaction
from techno_os_api.db.tables import user_preferences


@dataclass(frozen=True)
class Preferences:
    user_id: str
    document: str  # the stored JSON object, as JSON text
    updated_at: datetime


class PreferencesRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, user_id: str) -> Preferences | None:
        query = select(
            cast(user_preferences.c.preferences, Text), user_preferences.c.updated_at
        ).where(user_preferences.c.user_id == user_id)
        async with transaction(self._engine) as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Preferences(user_id, row[0], row[1])

    async def put(self, user_id: str, document: str) -> Preferences:
        """Replace the user's preferences (created on first write) with the JSON object text
        `document`, already checked by `db.jsonb.parse_document`."""
        insert_row = insert(user_preferences).values(
            user_id=user_id, preferences=cast(literal(document, Text), JSONB)
        )
        upsert = insert_row.on_conflict_do_update(
            index_elements=[user_preferences.c.user_id],
            set_={"preferences": insert_row.excluded.preferences, "updated_at": func.now()},
        ).returning(cast(user_preferences.c.preferences, Text), user_preferences.c.updated_at)
        async with transaction(self._engine) as conn:
            row = (await conn.execute(upsert)).one()
        return Preferences(user_id, row[0], row[1])
