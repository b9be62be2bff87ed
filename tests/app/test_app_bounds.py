"""Bounds on every input: request bodies, preferences documents, and errors that never take a
connection (or another client's request) down with them. The server-side memory is measured on
a real `python -m techno_os_api.serve` process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from app_helpers import bearer, chat_body, create_key, subprocess_env
from pgserver import free_port
from techno_os_api.application import create_app
from techno_os_api.core.config import Settings

URL = "/v1/chat/completions"
MIB = 1024 * 1024
# Where the figures of the oversized cases go (docs/benchmarks.md quotes them).
FIGURES = Path(__file__).resolve().parents[2] / "reports" / "bounds_rss.json"


# --- preferences documents ---------------------------------------------------------------------
def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (nested(33), "nested deeper than 32 levels"),
        (nested(10_000), "nested deeper than 32 levels"),  # deeper than Python's own recursion
        ('{"a": "x\\u0000y"}', "NUL character"),
        ('{"a\\u0000": 1}', "NUL character"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": -Infinity}', "-Infinity is not valid JSON"),
        ('{"a": 1e400}', "number out of range"),
        ('{"a": "\\ud800"}', "unpaired surrogate"),
        ('{"a": 1', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
async def test_documents_jsonb_cannot_hold_get_422_naming_the_problem(make_app, raw, problem):
    async with make_app() as client:
        response = await client.http.put(
            "/preferences/frank", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert problem in error["message"]
        assert (await client.http.get("/preferences/frank")).status_code == 404  # nothing stored


async def test_a_document_at_the_depth_limit_round_trips(make_app):
    async with make_app() as client:
        document = json.loads(nested(32))
        assert (await client.http.put("/preferences/gina", json=document)).status_code == 200
        got = await client.http.get("/preferences/gina")
    assert got.json()["preferences"] == document


async def test_a_deep_legacy_row_is_still_readable(make_app, database):
    # Written before the depth limit existed (straight into the table): read back as stored.
    conn = await asyncpg.connect(**database.connect_kwargs)
    try:
        await conn.execute(
            "INSERT INTO user_preferences (user_id, preferences) VALUES ('legacy', $1::jsonb) "
            "ON CONFLICT (user_id) DO UPDATE SET preferences = excluded.preferences",
            nested(300),
        )
    finally:
        await conn.close()
    async with make_app() as client:
        got = await client.http.get("/preferences/legacy")
    assert got.status_code == 200
    assert got.text.count('{"a":') == 300


async def test_preferences_over_64_kib_get_413_before_being_read(make_app):
    async with make_app() as client:
        big = {"blob": "x" * (64 * 1024)}
        response = await client.http.put("/preferences/hana", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
        assert (await client.http.get("/preferences/hana")).status_code == 404


# --- request bodies, on a real server, with its memory measured ---------------------------------
@contextlib.contextmanager
def served_process(database, **env: str) -> Iterator[tuple[str, int]]:
    """`python -m techno_os_api.serve` as the container runs it: (base URL, pid)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "techno_os_api.serve", "--no-migrate"],
        env=subprocess_env(
            **database.env,
            API_HOST="127.0.0.1",
            API_PORT=str(port),
            VERITTA_LLM_ALLOWED_PROVIDERS="fake",
            API_ACCESS_LOG="false",
            **env,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "serve exited"
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(20)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class PeakRSS:
    """Samples a process's RSS every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _record(case: str, **figures: float) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[case] = {k: round(v, 1) for k, v in figures.items()}
    FIGURES.write_text(json.dumps(data, indent=2) + "\n")


_PREFIX = b'{"model": "fake/echo", "messages": [{"role": "user", "content": "'


async def _chunks(total: int, size: int = MIB) -> AsyncIterator[bytes]:
    # A JSON prefix, then filler: what matters is the byte count, not the document.
    yield _PREFIX
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size


async def _upload(base: str, key: str, total: int, declared: bool) -> httpx.Response:
    headers = {**bearer(key), "Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(len(_PREFIX) + total)
    async with httpx.AsyncClient(timeout=60) as http:
        try:
            return await http.post(f"{base}{URL}", content=_chunks(total), headers=headers)
        except httpx.HTTPError as exc:  # the server may close while we still send: fine
            return httpx.Response(599, text=repr(exc))


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_four_100_mib_chat_bodies_get_413_and_memory_stays_flat(database, declared):
    async with _admin(database) as key:
        pass
    with served_process(database) as (base, pid):
        # Warm up, so the baseline includes what a first request loads.
        async with httpx.AsyncClient() as http:
            await http.post(f"{base}{URL}", json=chat_body(), headers=bearer(key))
        before = rss_mib(pid)
        with PeakRSS(pid) as peak:
            responses = await asyncio.gather(
                *(_upload(base, key, 100 * MIB, declared) for _ in range(4))
            )
        statuses = [r.status_code for r in responses]
        # A declared size is refused before anything is read; a streamed one once 8 MiB
        # have arrived (the client may see the close before it finishes sending).
        assert all(s in (413, 599) for s in statuses), statuses
        assert 413 in statuses or not declared
        grown = peak.peak - before
        _record(f"chat_body_4x100MiB_{'declared' if declared else 'chunked'}",
                rss_before_mib=before, rss_peak_mib=peak.peak, grown_mib=grown)  # fmt: skip
        assert grown < 64, f"RSS grew by {grown:.0f} MiB for four refused 100 MiB bodies"
        async with httpx.AsyncClient() as http:  # and it still serves
            ok = await http.post(f"{base}{URL}", json=chat_body(), headers=bearer(key))
        assert ok.status_code == 200


@contextlib.asynccontextmanager
async def _admin(database):
    from techno_os_api.db.api_keys import KeyRepository
    from techno_os_api.db.engine import create_engine

    engine = create_engine(Settings(**database.settings), pooled=False)
    try:
        yield (await create_key(KeyRepository(engine), name="bounds admin"))[1]
    finally:
        await engine.dispose()


# --- an unexpected error leaves the connection usable --------------------------------------------
def _raw_exchange(port: int, requests: list[bytes]) -> list[bytes]:
    """Send requests one after another on ONE connection; the status line of each answer."""
    lines = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for request in requests:
            sock.sendall(request)
            status = reader.readline()
            lines.append(status.strip())
            length = 0
            while (header := reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            reader.read(length)
    return lines


def test_an_unexpected_error_is_one_traceback_and_a_complete_500_on_a_kept_connection(
    database, caplog
):
    settings = Settings(**database.settings, veritta_llm_allowed_providers="fake")
    app = create_app(settings)

    async def explode() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/explode", explode)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        get = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
        with caplog.at_level(logging.ERROR):
            statuses = _raw_exchange(port, [get % b"/explode", get % b"/version", get % b"/ready"])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert statuses == [
        b"HTTP/1.1 500 Internal Server Error",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
    ]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
