"""Fixtures for the app tests: a real PostgreSQL migrated by `python -m techno_os_api.migrate`,
a loopback provider stand-in, and apps built with test settings and a driven clock.

Nothing is mocked: the app talks to the stand-in over HTTP and to PostgreSQL over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from app_helpers import (
    APP_ENV_VARS,
    REMOTE_PROVIDERS,
    AppClient,
    FakeClock,
    bearer,
    create_key,
    parse_metrics,
    run_migrate,
)
from pgserver import PostgresServer
from standin import StandIn
from techno_os_api.application import create_app
from techno_os_api.core.config import Settings
from techno_os_api.db.api_keys import KeyRepository
from techno_os_api.db.engine import DatabaseUnavailable, create_engine


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in APP_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.init()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def database(postgres: PostgresServer) -> PostgresServer:
    """The test PostgreSQL with the migrations applied."""
    result = run_migrate(**postgres.env)
    assert result.returncode == 0, result.stderr
    return postgres


@pytest.fixture(scope="session")
def _standin_server() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


@pytest.fixture
def standin(_standin_server: StandIn) -> Iterator[StandIn]:
    _standin_server.reset()
    yield _standin_server
    _standin_server.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


AppFactory = Callable[..., AbstractAsyncContextManager[AppClient]]


@pytest.fixture
def make_app(database: PostgresServer, standin: StandIn, clock: FakeClock) -> AppFactory:
    """`async with make_app(veritta_llm_allowed_providers="fake,openai", ...) as client:` builds
    an app whose remote providers all point at the stand-in, with the test clock and database
    (override any setting by keyword; `clock=None` for the real clock), and runs its lifespan."""

    @asynccontextmanager
    async def factory(clock_: Any = clock, **overrides: Any) -> AsyncIterator[AppClient]:
        values: dict[str, Any] = {
            **database.settings,
            "db_connect_timeout_seconds": 2,
            **{f"{p}_base_url": standin.url for p in REMOTE_PROVIDERS},
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings, clock=clock_)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http,
        ):
            secret = ""
            # Some tests point the app at a database that is down on purpose: no key then.
            with contextlib.suppress(DatabaseUnavailable):
                _, secret = await create_key(app.state.services.keys, name="make_app admin")
                http.headers.update(bearer(secret))
            yield AppClient(app, http, secret)

    return factory


async def _admin_key(settings: Settings) -> str:
    engine = create_engine(settings, pooled=False)
    try:
        return (await create_key(KeyRepository(engine), name="served admin"))[1]
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Served:
    url: str  # the /v1 base URL
    key: str  # an admin client key
    app: Any = None

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = httpx.get(f"{self.root}/metrics", headers=bearer(self.key))
        assert response.status_code == 200
        return parse_metrics(response.text)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))


ServeFactory = Callable[..., contextlib.AbstractContextManager[Served]]


@pytest.fixture
def serve_app(database: PostgresServer, standin: StandIn) -> ServeFactory:
    """`with serve_app(veritta_llm_allowed_providers="openai", ...) as served:` runs the app
    under a real uvicorn on a free loopback port (remote providers at the stand-in, every
    provider key set, real clock); `served.url` and `served.key` are for the official SDK."""

    @contextlib.contextmanager
    def factory(**overrides: Any) -> Iterator[Served]:
        values: dict[str, Any] = {
            **database.settings,
            **{f"{p}_base_url": standin.url for p in REMOTE_PROVIDERS},
            **{f"{p}_api_key": f"key-{p}" for p in REMOTE_PROVIDERS},
            "api_access_log": False,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        secret = asyncio.run(_admin_key(settings))
        try:
            yield Served(f"http://127.0.0.1:{port}/v1", secret, app)
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()

    return factory


@pytest.fixture
def served(serve_app: ServeFactory, standin: StandIn) -> Iterator[Served]:
    """The app under a real uvicorn on a free loopback port, and an admin key for it."""
    with serve_app(
        veritta_llm_allowed_providers="fake,openai",
        openai_api_key="sk-upstream",
        openai_base_url=standin.url,
    ) as served:
        yield served
