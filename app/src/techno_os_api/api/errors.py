"""Every error is JSON in OpenAI's shape, `{"error": {"message", "type", ...}}`, so the OpenAI SDK
shows the message; the status says what kind of failure it is."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from techno_os_api.db.engine import DatabaseUnavailable
from techno_os_api.llm.gateway import CircuitOpen, GatewayError, ProviderRejectedError

log = logging.getLogger(__name__)

# GatewayError.error_type -> HTTP status
GATEWAY_STATUS: dict[str, int] = {
    "unknown_provider": 400,
    "not_allowed": 403,
    "missing_api_key": 503,
    "circuit_open": 503,
    "timeout": 504,
    "provider_error": 502,
    "client_error": 502,
}


def error_response(
    status: int,
    message: str,
    error_type: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "code": status, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    extra: dict[str, Any] = {"provider": exc.provider}
    headers = None
    if isinstance(exc, CircuitOpen):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if isinstance(exc, ProviderRejectedError):
        extra["upstream_status"] = exc.upstream_status
    status = GATEWAY_STATUS.get(exc.error_type, 502)
    return error_response(status, exc.message, exc.error_type, headers, **extra)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return error_response(503, f"database unavailable: {exc}", "database_unavailable")


def _problem(error: Mapping[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    where = ".".join(str(p) for p in loc if p != "body") or "body"
    if loc == ("body",) and error.get("type") in ("model_attributes_type", "dict_type"):
        return "body: must be a JSON object (send Content-Type: application/json)"
    return f"{where}: " + str(error.get("msg", "invalid")).removeprefix("Value error, ")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(e) for e in exc.errors()]
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return error_response(
        422, "invalid request: " + "; ".join(problems), "invalid_request_error", details=details
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error_type = "not_found" if exc.status_code == 404 else "http_error"
    return error_response(exc.status_code, str(exc.detail), error_type, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error", "internal_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
