"""The API exactly as served, except that its authenticator answers every request with one fixed
key without looking at the request: the chat path without PostgreSQL, for
bench_provider_path.py and bench_streaming.py.

Unlike gateway_noauth_app.py (a FastAPI dependency override, which FastAPI re-resolves with
`inspect.signature` on every request and so costs more than the authentication it removes), the
route's dependencies stay as in production; only the key lookup behind them is fixed.
"""

from __future__ import annotations

from gateway_noauth_app import _KEY
from techno_os_api.auth.keys import ClientKey
from techno_os_api.main import app

app.dependency_overrides.clear()


async def _fixed(authorization: str | None, address: str) -> ClientKey:
    return _KEY


app.state.services.authenticator.authenticate = _fixed
