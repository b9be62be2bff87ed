"""bench_gateway.py's "same path without auth": the API exactly as served, except that the
client-key dependency returns a fixed key without looking at the request (no header parsing,
hashing, cache or database). The difference to the real API is the cost of authentication."""

from __future__ import annotations

from datetime import UTC, datetime

from techno_os_api.api.security import client_key
from techno_os_api.auth.keys import BudgetPeriod, ClientKey, Role
from techno_os_api.main import app

_KEY = ClientKey(
    id="key_bench",
    name="bench",
    user_id="bench",
    role=Role.USER,
    prefix="tos_bench…",
    providers=None,
    models=None,
    max_tokens=None,
    rpm=None,
    tpm=None,
    max_parallel=None,
    budget_usd=None,
    budget_period=BudgetPeriod.MONTH,
    expires_at=None,
    created_at=datetime.now(UTC),
    last_used_at=None,
    revoked_at=None,
)


async def _fixed_key() -> ClientKey:
    return _KEY


app.dependency_overrides[client_key] = _fixed_key
