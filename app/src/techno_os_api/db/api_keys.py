"""The `api_keys` table and what the operators' tool and the authenticator ask of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_os_api.auth.keys import BudgetPeriod, ClientKey, Role
from techno_os_api.db.calls import CallDatabase
from techno_os_api.db.engine import transaction
from techno_os_api.db.tables import api_key_reservations, api_key_usage, api_keys


@dataclass(frozen=True)
class NewKey:
    id: str
    key_hash: bytes
    key_prefix: str
    name: str
    user_id: str
    role: Role
    providers: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    max_tokens: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: Decimal | None = None
    budget_period: BudgetPeriod = BudgetPeriod.MONTH
    expires_at: datetime | None = None


@dataclass(frozen=True)
class PeriodUsage:
    period_start: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int
    spent_usd: Decimal
    reserved_usd: Decimal


def _tuple(value: Any) -> tuple[str, ...] | None:
    return tuple(value) if value is not None else None


def _key(row: RowMapping | Mapping[str, Any]) -> ClientKey:
    return ClientKey(
        id=row["id"],
        name=row["name"],
        user_id=row["user_id"],
        role=Role(row["role"]),
        prefix=row["key_prefix"],
        providers=_tuple(row["providers"]),
        models=_tuple(row["models"]),
        max_tokens=row["max_tokens"],
        rpm=row["rpm"],
        tpm=row["tpm"],
        max_parallel=row["max_parallel"],
        budget_usd=row["budget_usd"],
        budget_period=BudgetPeriod(row["budget_period"]),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


_COLUMNS = [c for c in api_keys.c if c.name != "key_hash"]


_BY_HASH = (
    "SELECT id, key_prefix, name, user_id, role, providers, models, max_tokens, rpm, tpm, "
    "max_parallel, budget_usd, budget_period, expires_at, created_at, last_used_at, revoked_at "
    "FROM api_keys WHERE key_hash = $1"
)


async def find_by_hash(calls: CallDatabase, key_hash: bytes) -> ClientKey | None:
    """The authenticator's lookup: one round trip on the per-call pool."""
    row = await calls.fetchrow(_BY_HASH, key_hash)
    return _key(row) if row is not None else None


class KeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, new: NewKey) -> ClientKey:
        values = {
            **new.__dict__,
            "role": new.role.value,
            "budget_period": new.budget_period.value,
            "providers": list(new.providers) if new.providers is not None else None,
            "models": list(new.models) if new.models is not None else None,
        }
        query = api_keys.insert().values(**values).returning(*_COLUMNS)
        async with transaction(self._engine) as conn:
            row = (await conn.execute(query)).mappings().one()
        return _key(row)

    async def find_by_hash(self, key_hash: bytes) -> ClientKey | None:
        query = select(*_COLUMNS).where(api_keys.c.key_hash == key_hash)
        async with transaction(self._engine) as conn:
            row = (await conn.execute(query)).mappings().first()
        return _key(row) if row is not None else None

    async def get(self, key_id: str) -> ClientKey | None:
        query = select(*_COLUMNS).where(api_keys.c.id == key_id)
        async with transaction(self._engine) as conn:
            row = (await conn.execute(query)).mappings().first()
        return _key(row) if row is not None else None

    async def list(self) -> list[ClientKey]:
        query = select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
        async with transaction(self._engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_key(row) for row in rows]

    async def revoke(self, key_id: str) -> ClientKey | None:
        """Revoke (idempotent: an already revoked key keeps its first revocation time)."""
        query = (
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
            .returning(*_COLUMNS)
        )
        async with transaction(self._engine) as conn:
            row = (await conn.execute(query)).mappings().first()
        return _key(row) if row is not None else None

    async def usage(self, key: ClientKey) -> PeriodUsage:
        """Usage and spend in the key's current budget period (zero when it made no call)."""
        period = text("SELECT techno_os_period_start(:period, now())")
        async with transaction(self._engine) as conn:
            start = (await conn.execute(period, {"period": key.budget_period.value})).scalar_one()
            row = (
                (
                    await conn.execute(
                        select(api_key_usage).where(
                            api_key_usage.c.key_id == key.id,
                            api_key_usage.c.period_start == start,
                        )
                    )
                )
                .mappings()
                .first()
            )
            reserved = (
                await conn.execute(
                    select(func.coalesce(func.sum(api_key_reservations.c.amount_usd), 0)).where(
                        api_key_reservations.c.key_id == key.id,
                        api_key_reservations.c.period_start == start,
                    )
                )
            ).scalar_one()
        if row is None:
            return PeriodUsage(start, 0, 0, 0, Decimal(0), Decimal(reserved))
        return PeriodUsage(
            start,
            row["requests"],
            row["prompt_tokens"],
            row["completion_tokens"],
            row["spent_usd"],
            Decimal(reserved),
        )
