"""A small HTTP/1.1 client for the provider calls: keep-alive connections per host, one request
at a time on each, responses parsed by httptools (the parser uvicorn serves with).

Why not a general client: the gateway's hot path is one JSON POST per call, and measured side
by side (bench/bench_transport.py, against an nginx stand-in, in one process) aiohttp spends
0.2-0.4 ms of CPU per request where this spends 0.09-0.16 (bench/streaming_results.md); httpx
spends more than aiohttp (bench/bench_http_clients.py). What it does is what the gateway needs
and no more: POST with a body of known length, responses with Content-Length, chunked or
read-until-close bodies, TLS (the system's CA store), reading paused while the reader is
behind, and a connection closed at once when a response is left unfinished. No redirects,
proxies, cookies or retries.

Everything raised here is an `OSError` (the connection failed or was cut), a `TimeoutError`
(connecting took too long) or an `HTTPProtocolError` (the peer does not speak HTTP/1.1).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

# Reading pauses when this much of a body waits for its reader, and resumes below the low mark.
_HIGH_WATER: Final = 256 * 1024
_LOW_WATER: Final = 64 * 1024


class HTTPProtocolError(Exception):
    """The peer's answer is not HTTP/1.1 the parser can read."""


@dataclass(frozen=True)
class Target:
    """Where a URL's requests go: its pool key, Host header and request path."""

    scheme: str
    host: str
    port: int
    host_header: str
    path: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@functools.lru_cache(maxsize=512)
def target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host_header = parts.hostname if port == default else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        host_header = f"[{parts.hostname}]" + ("" if port == default else f":{port}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, host_header, path)


class Connection(asyncio.Protocol):
    """One keep-alive connection. `send()` a request, then `headers()`, then `piece()` until
    it returns b"". `reusable` once the response was read to its end."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.closed = False
        self.idle_since = 0.0
        self.status = 0
        self.headers: dict[str, str] = {}
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._headers_done = False
        self._complete = False
        self._until_close = False
        self._keep_alive = False
        self._error: BaseException | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes nobody asked for: the connection is not reusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._error = HTTPProtocolError(f"unreadable HTTP answer: {exc}")
            self.close()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._headers_done and self._until_close and not self._complete:
            self._complete = True  # a body without length ends with the connection
        elif self._parser is not None and not self._complete and self._error is None:
            self._error = ConnectionResetError(
                "the connection closed before the answer was complete" + (f": {exc}" if exc else "")
            )
        self._wake()

    # --- httptools callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim answer: the real one follows
            self.headers = {}
            return
        self._headers_done = True
        self._keep_alive = self._parser.should_keep_alive()  # (read here: not after the body)
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self._until_close = "content-length" not in self.headers and not chunked
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._headers_done:
            self._complete = True
            self._wake()

    # --- the client's side --------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    def send(self, head: bytes, body: bytes) -> None:
        if not self.open:
            raise ConnectionResetError("the connection is closed")
        self._parser = httptools.HttpResponseParser(self)
        self.status, self.headers = 0, {}
        self._headers_done = self._complete = self._until_close = self._keep_alive = False
        self._error = None
        transport = cast(asyncio.Transport, self._transport)
        transport.write(head + body)

    async def response_headers(self) -> None:
        while not self._headers_done:
            self._check()
            await self._wait()

    async def piece(self) -> bytes:
        """The next piece of the body, b"" at its end."""
        while True:
            if self._pieces:
                piece = self._pieces.popleft()
                self._buffered -= len(piece)
                if self._paused and self._buffered < _LOW_WATER and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
                return piece
            if self._complete:
                return b""
            self._check()
            await self._wait()

    @property
    def reusable(self) -> bool:
        return self._complete and not self.closed and not self._pieces and self._keep_alive

    def close(self) -> None:
        """Close at once: the peer sees the request end (an unfinished answer is dropped)."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self.closed:
            raise ConnectionResetError("the connection closed before the answer was complete")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Pool:
    """Idle keep-alive connections per (scheme, host, port). A connection is used by one
    request at a time; how many run at once is the caller's to bound."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        keepalive_seconds: float = 15.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive_seconds
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._tls = tls  # None: the system's CA store, made on first use

    async def connection(self, where: Target) -> Connection:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(where.key)
        now = loop.time()
        while idle:
            connection = idle.pop()
            if connection.open and now - connection.idle_since < self._keepalive:
                return connection
            connection.close()
        tls = None
        if where.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        async with asyncio.timeout(self._connect_timeout):
            _, connection = await loop.create_connection(
                lambda: Connection(where.key),
                where.host,
                where.port,
                ssl=tls,
                server_hostname=where.host if tls else None,
            )
        return connection

    def release(self, connection: Connection) -> None:
        """Back to the pool when its answer was read to the end and it may be kept; else
        closed."""
        if not connection.reusable:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.key, []).append(connection)

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
