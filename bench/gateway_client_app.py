"""The real API (app/src, unchanged) with the HTTP client of BENCH_CLIENT, for
bench_http_clients.py --gateway. The client is injected through `create_app(http_client=...)`,
the seam the tests use; nothing in the app is patched.

    httpx          None: the API builds its own client, exactly as in production (the only
                   variant for revisions whose create_app() takes no http_client)
    httpx-tuned    httpx.AsyncClient, Limits(max_connections=100, max_keepalive_connections=100)
    httpx2         httpx2.AsyncClient, the same settings (httpx2 is API-compatible with httpx)
    aiohttp        a minimal adapter giving aiohttp what the providers use: `post` (up to
                   2ca26a9) or `stream` (the bounded Transport of later revisions), with the
                   tuned settings (no cookie jar, connect timeout only: the gateway's
                   asyncio.timeout is the deadline)
    httpx-aiohttp  httpx_aiohttp.HttpxAiohttpClient: httpx's API and types on aiohttp's pool

Revisions with client keys (a50a12c on): the key dependency is replaced by bench's
gateway_noauth_app fixed key (no limits, so no database on the chat path), as bench_gateway.py's
`noauth` server does. Only the success path is exercised: the gateway's error handling still
catches httpx's exception types, which httpx2 and aiohttp do not raise. A shim, not a port.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from techno_os_api import __version__
from techno_os_api.application import create_app
from techno_os_api.core.config import load_settings

settings = load_settings()
USER_AGENT = {"User-Agent": f"techno-os-api/{__version__}"}


class AiohttpResponse:
    """What `providers._json_object` and `_error_detail` read from an httpx.Response."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.status_code = status
        self.reason_phrase = reason
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class AiohttpStream:
    """What the bounded Transport reads from an httpx streaming response."""

    def __init__(self, response: Any) -> None:
        self.status_code = response.status
        self.headers = response.headers  # case-insensitive, like httpx.Headers
        self._content = response.content

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        chunks: AsyncIterator[bytes] = self._content.iter_any()  # decompressed, bounded pieces
        return chunks


class AiohttpClient:
    def __init__(self) -> None:
        self.session: Any = None

    def _session(self) -> Any:
        import aiohttp

        if self.session is None:  # the connector needs the running loop
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers=USER_AGENT,
            )
        return self.session

    async def post(self, url: str, *, json: Any, headers: dict[str, str]) -> AiohttpResponse:
        async with self._session().post(url, json=json, headers=headers) as response:
            body = await response.read()
            return AiohttpResponse(response.status, response.reason or "", body)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, url: str, *, json: Any, headers: Any
    ) -> AsyncIterator[AiohttpStream]:
        async with self._session().request(method, url, json=json, headers=headers) as response:
            yield AiohttpStream(response)

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


def build_client(variant: str) -> Any:
    timeout = settings.llm_timeout_seconds
    if variant == "httpx":
        return None
    if variant in ("httpx-tuned", "httpx2"):
        module: Any = __import__(variant.removesuffix("-tuned"))
        return module.AsyncClient(
            timeout=module.Timeout(timeout),
            limits=module.Limits(max_connections=100, max_keepalive_connections=100),
            headers=USER_AGENT,
        )
    if variant == "aiohttp":
        return AiohttpClient()
    if variant == "httpx-aiohttp":
        import httpx
        from httpx_aiohttp import HttpxAiohttpClient

        return HttpxAiohttpClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            headers=USER_AGENT,
        )
    raise SystemExit(f"gateway_client_app: unknown BENCH_CLIENT {variant!r}")


VARIANT = os.environ.get("BENCH_CLIENT", "httpx")
if "http_client" in inspect.signature(create_app).parameters:
    app = create_app(settings, http_client=build_client(VARIANT))
elif VARIANT == "httpx":  # the revision builds its own provider client: measure that one
    app = create_app(settings)
else:
    raise SystemExit(
        "gateway_client_app: this revision's create_app() takes no http_client: only "
        "BENCH_CLIENT=httpx (the app's own client, server api-httpx) applies"
    )

try:  # client keys (a50a12c on): a fixed key without limits, as bench_gateway.py's `noauth`
    from techno_os_api.api.security import client_key
except ImportError:
    pass
else:
    from gateway_noauth_app import _fixed_key

    app.dependency_overrides[client_key] = _fixed_key
