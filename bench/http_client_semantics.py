#!/usr/bin/env python3
"""What each candidate client does in the three situations the gateway must control, against a
small loopback server (no network):

    /tmp/bench-http-clients/venv/bin/python bench/http_client_semantics.py   # after the bench

  cancel    an SSE stream that never ends: the caller reads three lines, then its task is
            cancelled. Reported: how long until the server sees the connection closed.
  bomb      a 32 KiB gzip body that inflates to 32 MiB, read as a stream, stopping after 1 MiB
            of decompressed bytes. Reported: the largest decompressed piece the client handed
            over at once (the memory a size limit cannot prevent) and the bytes counted.
  long line an SSE body whose one line is 4 MiB with no newline, read with the client's line
            API. Reported: the line length it delivered, or the error it raised.

Clients: httpx and httpx2 (`client.stream()` + aiter_lines / aiter_bytes) and aiohttp
(`response.content`: readline / iter_any), each imported if installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib.util
import json
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

INFLATED = 32 * 1024 * 1024
LIMIT = 1024 * 1024
LONG_LINE = 4 * 1024 * 1024
BOMB = gzip.compress(b"a" * INFLATED, compresslevel=9)


class Server:
    """One thread per connection; records when each /sse connection was seen closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed_at: dict[str, float] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            path = request.split(b" ", 2)[1].decode()
            if path.startswith("/sse/"):
                self._sse(conn, path.removeprefix("/sse/"))
            elif path == "/bomb":
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Encoding: gzip\r\nContent-Length: {len(BOMB)}\r\n\r\n"
                )
                conn.sendall(head.encode() + BOMB)
                time.sleep(1)
            elif path == "/longline":
                head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                body = b"data: " + b"x" * LONG_LINE + b"\n\n"
                head += f"Content-Length: {len(body)}\r\n\r\n"
                with contextlib.suppress(OSError):
                    conn.sendall(head.encode() + body)
                time.sleep(1)

    def _sse(self, conn: socket.socket, key: str) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        conn.sendall(head)
        conn.settimeout(0.01)
        n = 0
        while True:
            event = f"data: {json.dumps({'n': n})}\n\n".encode()
            try:
                conn.sendall(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                if not conn.recv(1):
                    break
            except TimeoutError:
                n += 1
                time.sleep(0.04)
                continue
            except OSError:
                break
        self.closed_at[key] = time.monotonic()


# --- one reader per client -------------------------------------------------------------------
def httpx_like(name: str) -> dict[str, Callable[..., Awaitable[Any]]]:
    module: Any = __import__(name)

    async def sse(url: str, seen: asyncio.Event) -> None:
        async with (
            module.AsyncClient(timeout=10) as client,
            client.stream("GET", url) as response,
        ):
            lines = 0
            async for line in response.aiter_lines():
                lines += bool(line)
                if lines == 3:
                    seen.set()

    async def bomb(url: str) -> tuple[int, int, str]:
        async with (
            module.AsyncClient(timeout=10) as client,
            client.stream("GET", url) as response,
        ):
            largest = total = 0
            async for chunk in response.aiter_bytes():
                largest, total = max(largest, len(chunk)), total + len(chunk)
                if total > LIMIT:
                    break
            return largest, total, f"raw bytes read {response.num_bytes_downloaded:,}"

    async def long_line(url: str) -> str:
        async with (
            module.AsyncClient(timeout=10) as client,
            client.stream("GET", url) as response,
        ):
            async for line in response.aiter_lines():
                return f"delivered a {len(line):,}-character line (no limit)"
        return "no line"

    return {"sse": sse, "bomb": bomb, "long_line": long_line}


def aiohttp_readers() -> dict[str, Callable[..., Awaitable[Any]]]:
    import aiohttp

    async def sse(url: str, seen: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            lines = 0
            async for line in response.content:  # readline() with the default bound
                lines += bool(line.strip())
                if lines == 3:
                    seen.set()

    async def bomb(url: str) -> tuple[int, int, str]:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            largest = total = 0
            async for chunk in response.content.iter_any():
                largest, total = max(largest, len(chunk)), total + len(chunk)
                if total > LIMIT:
                    break
            return largest, total, "raw bytes: not exposed (auto_decompress=False to count)"

    async def long_line(url: str) -> str:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            try:
                line = await response.content.readline()
            except Exception as exc:
                return f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:70]}"
            return f"delivered a {len(line):,}-byte line"

    return {"sse": sse, "bomb": bomb, "long_line": long_line}


async def check(
    name: str, readers: dict[str, Callable[..., Awaitable[Any]]], server: Server
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    seen = asyncio.Event()
    task = asyncio.create_task(readers["sse"](f"{base}/sse/{name}", seen))
    await asyncio.wait_for(seen.wait(), 5)
    await asyncio.sleep(0.1)  # the reader is now waiting for the next line
    cancelled = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for _ in range(300):
        if name in server.closed_at:
            break
        await asyncio.sleep(0.01)
    closed = server.closed_at.get(name)
    after = f"{(closed - cancelled) * 1000:.0f} ms" if closed else "not closed within 3 s"
    print(f"{name:8} cancel     upstream connection closed {after} after the cancel")

    largest, total, raw = await readers["bomb"](f"{base}/bomb")
    print(
        f"{name:8} bomb       {len(BOMB):,} gzip bytes -> largest piece {largest:,} bytes, "
        f"stopped after {total:,} decompressed bytes; {raw}"
    )
    print(f"{name:8} long line  {await readers['long_line'](f'{base}/longline')}")


async def main() -> int:
    server = Server()
    for name in ("httpx", "httpx2", "aiohttp"):
        if importlib.util.find_spec(name) is None:
            print(f"{name:8} not installed")
            continue
        readers = aiohttp_readers() if name == "aiohttp" else httpx_like(name)
        await check(name, readers, server)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
