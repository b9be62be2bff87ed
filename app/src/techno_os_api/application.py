"""The application factory: builds the services from the settings and wires the routes.

`create_app()` reads the environment; tests pass their own settings, clock, engine or provider
transport
(all real objects). Building the app connects to nothing, so it starts without a database.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from techno_os_api import __version__
from techno_os_api.api import errors
from techno_os_api.api.deps import Services
from techno_os_api.api.main import routers
from techno_os_api.auth.admission import Admitter
from techno_os_api.auth.authenticator import Authenticator
from techno_os_api.core.config import ALLOWLIST_ENV, Settings, load_settings
from techno_os_api.db.api_keys import KeyRepository
from techno_os_api.db.calls import CallDatabase
from techno_os_api.db.engine import create_engine
from techno_os_api.db.preferences import PreferencesRepository
from techno_os_api.llm.breaker import Clock
from techno_os_api.llm.gateway import LLMGateway
from techno_os_api.llm.metrics import Metrics
from techno_os_api.llm.pricing import PriceTable
from techno_os_api.llm.providers import build_providers
from techno_os_api.llm.transport import Redactor, Transport

log = logging.getLogger("techno_os_api")


def _health_start(status: int, body: bytes) -> dict[str, object]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_START = _health_start(200, _HEALTH_BODY)
_DRAINING_BODY = b'{"status":"draining"}'
_DRAINING_START = _health_start(503, _DRAINING_BODY)


class TechnoOSAPI(FastAPI):
    """FastAPI, except that `GET /health` is answered before any middleware or routing.

    Liveness must cost nothing and depend on nothing: Docker's HEALTHCHECK and the runbook poll
    it, and under load it should not queue behind the framework. The route is still declared in
    the router (for the OpenAPI schema) and gives the same body.

    A release being replaced is drained first: once API_DRAIN_FILE exists (techno-os-release
    creates it), /health answers 503 `draining`, so the host's front stops sending it new
    requests while it still serves the ones it has; then it is stopped.
    """

    drain_file: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/health"
            and scope["method"] in ("GET", "HEAD")
        ):
            draining = bool(self.drain_file) and os.path.exists(self.drain_file)
            body = _DRAINING_BODY if draining else _HEALTH_BODY
            await send(_DRAINING_START if draining else _HEALTH_START)
            if scope["method"] == "GET":
                await send({"type": "http.response.body", "body": body})
            else:
                await send({"type": "http.response.body", "body": b""})
            return
        await super().__call__(scope, receive, send)


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    engine: AsyncEngine | None = None,
    transport: Transport | None = None,
) -> Services:
    prices = PriceTable.load(settings.llm_prices_file)
    metrics = Metrics(__version__, settings.veritta_llm_allowed_providers, prices.labels)
    transport = transport or Transport(
        settings.llm_max_response_bytes,
        Redactor(settings.secret_values()),
        connect_timeout=settings.llm_timeout_seconds,
        user_agent=f"techno-os-api/{__version__}",
    )
    providers = build_providers(settings, transport)
    engine = engine or create_engine(settings)
    keys = KeyRepository(engine)
    calls = CallDatabase(settings)
    clocks = {"clock": clock} if clock is not None else {}
    admitter = Admitter(calls, settings, metrics, **clocks)
    gateway = LLMGateway(settings, providers, metrics, prices, admitter, **clocks)
    return Services(
        settings=settings,
        metrics=metrics,
        gateway=gateway,
        engine=engine,
        preferences=PreferencesRepository(engine),
        keys=keys,
        authenticator=Authenticator(calls, settings, metrics, **clocks),
        calls=calls,
        admitter=admitter,
        transport=transport,
    )


def _log_configuration(services: Services) -> None:
    settings = services.settings
    if not settings.veritta_llm_allowed_providers:
        log.warning("%s is unset or empty: every LLM call will be refused", ALLOWLIST_ENV)
    for status in services.gateway.statuses():
        if status.allowed and not status.usable:
            log.warning("provider %s is allowed but has no API key: it is refused", status.name)
    log.info(
        "techno-os-api %s: default provider %s, allowed providers: %s",
        __version__,
        settings.llm_provider,
        ", ".join(settings.veritta_llm_allowed_providers) or "none",
    )


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    engine: AsyncEngine | None = None,
    transport: Transport | None = None,
) -> TechnoOSAPI:
    settings = settings or load_settings()
    services = build_services(settings, clock=clock, engine=engine, transport=transport)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _log_configuration(services)
        services.admitter.start()
        try:
            yield
        finally:
            await services.admitter.stop()
            await services.calls.close()
            await services.transport.close()
            await services.engine.dispose()

    docs = settings.api_docs_enabled
    app = TechnoOSAPI(
        title="Techno OS API",
        version=__version__,
        summary="LLM gateway with a fail-closed allowlist, circuit breakers and metrics",
        lifespan=lifespan,
        # Off unless API_DOCS_ENABLED: the schema tells a stranger every route and parameter.
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        # The service reports through its own Prometheus metrics. FastAPI's OpenTelemetry
        # hooks would otherwise look up the global OTel providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.drain_file = settings.api_drain_file
    app.state.services = services
    errors.install(app)
    app.add_middleware(
        errors.GuardMiddleware,
        limits={
            "/v1/chat/completions": settings.chat_max_body_bytes,
            "/preferences/": settings.preferences_max_body_bytes,
        },
        default_limit=settings.other_max_body_bytes,
    )
    for router in routers:
        app.include_router(router)
    return app
