"""The servers of bench_http_clients.py: one bare ASGI app, one HTTP client per process.

    BENCH_CLIENT=aiohttp BENCH_PROVIDER_URL=http://127.0.0.1:8081/v1/chat/completions \
        uvicorn http_client_apps:app --app-dir bench

POST (any path) reads the request body as JSON and, for a client variant, posts it as JSON to
BENCH_PROVIDER_URL with that client under an asyncio.timeout, reads the answer as a stream of
decompressed chunks up to a size limit, parses the JSON and returns it re-serialised: what the
gateway's provider transport (app/src/techno_os_api/llm/transport.py) does with httpx. The
`inprocess` variant does the same without any network call: it answers a constant completion.
GET /health answers without the client (readiness). Variants (BENCH_CLIENT):

    inprocess      no client: the baseline
    httpx          httpx.AsyncClient as the gateway builds it today (Limits 100 / 20 keep-alive)
    httpx-tuned    httpx.AsyncClient with every connection kept alive (Limits 100 / 100)
    httpx2         httpx2.AsyncClient (Pydantic's maintained httpx fork), Limits 100 / 100
    aiohttp        aiohttp.ClientSession on a TCPConnector(limit=100), keep-alive 30 s
    aiohttp-tuned  the same, no cookie jar, connect timeout only (the caller's deadline rules)
    httpx-aiohttp  httpx.AsyncClient's API on aiohttp's pool (httpx_aiohttp.HttpxAiohttpClient)

Whether `sniffio` is importable is the interpreter's business (the script sets PYTHONPATH).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

TIMEOUT_S = 30.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # LLM_MAX_RESPONSE_BYTES' default
HEADERS = {"Authorization": "Bearer sk-bench", "User-Agent": "techno-os-api/bench"}
CONSTANT: dict[str, Any] = {
    "id": "chatcmpl-inprocess",
    "object": "chat.completion",
    "created": 1764000000,
    "model": "fake/echo",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello from the benchmark"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9},
}
HEALTH = b'{"status":"ok"}'


async def bounded(chunks: AsyncIterator[bytes]) -> bytes:
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise RuntimeError(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        parts.append(chunk)
    return b"".join(parts)


class InProcess:
    async def start(self) -> None:
        pass

    async def post_json(self, payload: Any) -> Any:
        return CONSTANT

    async def close(self) -> None:
        pass


class Httpx:
    """httpx or httpx2: the same API, so the same code; only the module and the pool differ."""

    def __init__(self, module_name: str, url: str, keepalive: int, aiohttp: bool = False) -> None:
        self.module_name = module_name
        self.url = url
        self.keepalive = keepalive
        self.aiohttp = aiohttp
        self.client: Any = None

    async def start(self) -> None:
        module: Any = __import__(self.module_name)
        factory = module.AsyncClient
        if self.aiohttp:
            from httpx_aiohttp import HttpxAiohttpClient

            factory = HttpxAiohttpClient
        self.client = factory(
            timeout=module.Timeout(TIMEOUT_S),
            limits=module.Limits(max_connections=100, max_keepalive_connections=self.keepalive),
            headers={"User-Agent": HEADERS["User-Agent"]},
        )

    async def post_json(self, payload: Any) -> Any:
        headers = {"Authorization": HEADERS["Authorization"]}
        async with self.client.stream("POST", self.url, json=payload, headers=headers) as response:
            body = await bounded(response.aiter_bytes())
            if response.status_code >= 400:
                raise RuntimeError(f"provider answered HTTP {response.status_code}")
        return json.loads(body)

    async def close(self) -> None:
        await self.client.aclose()


class Aiohttp:
    """Plain: aiohttp's own total timeout and cookie jar. Tuned: no cookie jar (a gateway must not
    carry one provider answer's cookies into the next request) and only a connect timeout, the
    overall deadline being the caller's asyncio.timeout (the gateway already sets one)."""

    def __init__(self, url: str, tuned: bool) -> None:
        self.url = url
        self.tuned = tuned
        self.session: Any = None

    async def start(self) -> None:
        import aiohttp  # the connector needs the running loop: built here, in lifespan startup

        connector = aiohttp.TCPConnector(limit=100, limit_per_host=0, keepalive_timeout=30)
        options: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=TIMEOUT_S)}
        if self.tuned:
            options = {
                "timeout": aiohttp.ClientTimeout(total=None, sock_connect=10),
                "cookie_jar": aiohttp.DummyCookieJar(),
            }
        self.session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": HEADERS["User-Agent"]}, **options
        )

    async def post_json(self, payload: Any) -> Any:
        async with self.session.post(
            self.url, json=payload, headers={"Authorization": HEADERS["Authorization"]}
        ) as response:
            body = await bounded(response.content.iter_any())  # decompressed, as received
            if response.status >= 400:
                raise RuntimeError(f"provider answered HTTP {response.status}")
        return json.loads(body)

    async def close(self) -> None:
        await self.session.close()


def build(variant: str, url: str) -> InProcess | Httpx | Aiohttp:
    if variant == "inprocess":
        return InProcess()
    if variant == "httpx":
        return Httpx("httpx", url, keepalive=20)
    if variant in ("httpx-tuned", "httpx2"):
        return Httpx(variant.removesuffix("-tuned"), url, keepalive=100)
    if variant in ("aiohttp", "aiohttp-tuned"):
        return Aiohttp(url, tuned=variant == "aiohttp-tuned")
    if variant == "httpx-aiohttp":
        return Httpx("httpx", url, keepalive=100, aiohttp=True)
    raise SystemExit(f"http_client_apps: unknown BENCH_CLIENT {variant!r}")


CLIENT = build(
    os.environ.get("BENCH_CLIENT", "inprocess"), os.environ.get("BENCH_PROVIDER_URL", "")
)


async def _send_json(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await CLIENT.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await CLIENT.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] != "POST":
        await _send_json(send, 200, HEALTH)
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    payload = json.loads(b"".join(chunks))
    async with asyncio.timeout(TIMEOUT_S):  # the gateway's overall deadline, for every variant
        answer = await CLIENT.post_json(payload)
    await _send_json(send, 200, json.dumps(answer, separators=(",", ":")).encode())
