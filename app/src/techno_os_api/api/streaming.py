"""A server-sent events response that notices a client leaving while it waits.

Starlette's StreamingResponse listens for `http.disconnect` only on ASGI specs before 2.4; after
that it relies on a failed `send`, which never comes while the stream waits for its next
upstream event (and uvicorn drops sends to a closed connection without an error). This one
watches `receive()` for the whole response: the moment the client disconnects, the pump is
cancelled and `close()` runs, which cancels the upstream request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class EventStreamResponse(Response):
    """A Response only so that the framework passes it through; it has no body of its own."""

    media_type = "text/event-stream; charset=utf-8"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
        headers: Mapping[str, str],
    ) -> None:
        self.background: BackgroundTask | None = None
        self.status_code = 200
        self._events = events
        self._close = close
        self.raw_headers = [  # noqa: RUF012 (Response's attribute)
            (b"content-type", self.media_type.encode()),
            # Every event as it comes: no cache, and no buffering in a proxy that honours it.
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
            outcomes = await asyncio.gather(pump, gone, return_exceptions=True)
            await self._close()  # whatever happened: the upstream request ends here
        for outcome in outcomes:  # a bug in the pump: raised (and logged by the guard)
            if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
                raise outcome

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async for event in self._events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
