"""Every error is JSON in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so
the official SDKs raise the matching exception; the kinds, with their statuses, are defined in
`core/errors.py`.

Public bodies never carry a driver's or an exception's text: the log keeps the detail. An
unexpected exception becomes a complete 500 answer on a connection that stays usable (see
`GuardMiddleware`), so one client's failure never breaks a connection the proxy reuses for
another client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from techno_os_api.core import errors as e
from techno_os_api.core.errors import APIError
from techno_os_api.db.engine import DatabaseUnavailable

log = logging.getLogger(__name__)


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(
        error.body(), status_code=error.kind.status, headers=error.response_headers()
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        APIError(
            e.DATABASE_UNAVAILABLE,
            "the database is unavailable; retry shortly",
            retry_after=5,
        )
    )


def _problem(error: Mapping[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    where = ".".join(str(p) for p in loc if p != "body") or "body"
    if loc == ("body",) and error.get("type") in ("model_attributes_type", "dict_type"):
        return "body: must be a JSON object (send Content-Type: application/json)"
    return f"{where}: " + str(error.get("msg", "invalid")).removeprefix("Value error, ")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = [_problem(err) for err in errors]
    details = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")}
        for err in errors
    ]
    first_field = next(
        (".".join(str(p) for p in err.get("loc", ())[1:]) for err in errors if err.get("loc")),
        None,
    )
    return error_response(
        APIError(
            e.INVALID_REQUEST,
            "invalid request: " + "; ".join(problems),
            param=first_field or None,
            extra={"details": details},
        )
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = {404: e.NOT_FOUND, 405: e.METHOD_NOT_ALLOWED, 413: e.REQUEST_TOO_LARGE}.get(
        exc.status_code
    )
    if kind is None:
        kind = e.ErrorKind("http_error", exc.status_code)
    return error_response(APIError(kind, str(exc.detail), headers=exc.headers))


def install(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)


class GuardMiddleware:
    """Bounds the request body by route and turns an unexpected exception into one logged
    traceback and a complete 500 answer.

    Starlette's own last-resort handler re-raises after answering, and uvicorn then closes the
    connection (which a proxy may already be reusing for someone else's request): this one does
    not re-raise. A body larger than its route's limit gets 413 as soon as its Content-Length (or
    its streamed size) shows it, before it is read whole.
    """

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default_limit: int) -> None:
        self.app = app
        # Longest prefix first.
        self._limits = sorted(limits.items(), key=lambda item: len(item[0]), reverse=True)
        self._default = default_limit

    def limit_for(self, path: str) -> int:
        for prefix, limit in self._limits:
            if path.startswith(prefix):
                return limit
        return self._default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _send_error(send, _too_large(limit))
                    return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large(limit).message)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except HTTPException as exc:  # raised by bounded_receive outside a route
            if not started:
                await _send_error(send, APIError(e.REQUEST_TOO_LARGE, str(exc.detail)))
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_error(send, APIError(e.INTERNAL, "internal server error"))


def _too_large(limit: int) -> APIError:
    return APIError(e.REQUEST_TOO_LARGE, f"request body larger than {limit} bytes")


async def _send_error(send: Send, error: APIError) -> None:
    response = error_response(error)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
