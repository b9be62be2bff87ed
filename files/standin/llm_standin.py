#!/usr/bin/env python3
"""An LLM provider stand-in speaking the providers' wire formats, for the sandbox drills only.

Standard library only (it runs with the API image's python3). One port serves the provider APIs
and a control endpoint that switches its behaviour at run time:

    POST /_control {"mode": "ok" | "fail500" | "fail429" | "hang", "hang_seconds": N,
                    "format_modes": {"openai" | "anthropic" | "gemini": MODE, ...},
                    "stream_fail_after": N | null, "stream_fail_mode": "drop" | "reset" |
                    "error" | "hang", "chunk_delay": S, "first_chunk_delay": S,
                    "reset": true}                       -> the new state
    GET  /_control                                        -> {"mode", "hang_seconds", "requests"}
                                                             and every other field that is not
                                                             at its default; ?all=1: all of them
    POST /v1/chat/completions (or /chat/completions)     OpenAI chat completions
    POST /v1/messages                                     Anthropic Messages
    POST /v1beta/models/M:generateContent                 Gemini (also :streamGenerateContent,
                                                          SSE with ?alt=sse)
         each answers depending on the mode:
        ok       200, a completion with usage in the provider's format
        fail500  500, the provider's error body
        fail429  429, the provider's rate-limit error with Retry-After
        hang     waits hang_seconds, then answers as "ok" (if the caller is still there)
    A wire format named in format_modes answers in its own mode instead (one provider down,
    another up: the fallback drills); {"format_modes": {}} puts them all back on `mode`.
    GET  /health                                          -> {"status": "ok"}

A request with `"stream": true` (OpenAI, Anthropic) or to :streamGenerateContent (Gemini) gets
the provider's event stream, "stand-in reply" one word per chunk (OpenAI: the usage chunk too
with stream_options.include_usage), first_chunk_delay before the first chunk and chunk_delay
before each other. With stream_fail_after N the stream fails after N chunks (SSE events,
[DONE] included) by stream_fail_mode: drop the connection (default), reset it, send the
provider's in-stream error event (Anthropic `event: error` overloaded_error), or hang.

`requests` counts the provider requests received (in every mode), so a drill can tell a call
that reached the provider from one the circuit breaker rejected; `requests_by_format` splits
them by wire format (which provider API was called). `streams` counts the streamed
answers begun; `disconnects` the streams whose client closed the connection before the end, and
`last_disconnect` describes the last one: its path, `chunks_sent`, `seconds_after_last_chunk`
(how long after the last chunk sent the stand-in saw the connection closed; it looks every
20 ms while it waits between chunks) and `seconds_after_request`. `"reset": true` zeroes the
counters and forgets the last disconnect.

The formats come from provider_wire.py, which must sit next to this file (it is shared with the
app tests' stand-in). Without it only the OpenAI answers that do not stream are available.

    python3 llm_standin.py [--host 0.0.0.0] [--port 8080]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import provider_wire as wire  # noqa: E402  (shipped next to this file)
except ImportError:  # pragma: no cover (deployed without it: legacy OpenAI answers only)
    wire = None  # type: ignore[assignment]

MODES = ("ok", "fail500", "fail429", "hang")
FORMATS = ("openai", "anthropic", "gemini")  # provider_wire's OPENAI, ANTHROPIC, GEMINI
STREAM_FAIL_MODES = ("drop", "reset", "error", "hang")
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
COMPLETION_TEXT = "stand-in reply"
# Fields GET /_control shows only when they differ from these (`?all=1` shows them all).
DEFAULTS: dict[str, Any] = {
    "stream_fail_after": None,
    "stream_fail_mode": "drop",
    "chunk_delay": 0.0,
    "first_chunk_delay": 0.0,
    "format_modes": {},
    "requests_by_format": {},
    "streams": 0,
    "disconnects": 0,
    "last_disconnect": None,
}


def _copy(value: Any) -> Any:
    """A snapshot's own copy of a mutable field (the threads keep changing the original)."""
    return dict(value) if isinstance(value, dict) else value


def _seconds(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number >= 0")
    return float(value)


class Control:
    """The switchable behaviour and the counters, shared by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.mode = "ok"
        self.hang_seconds = 60.0
        self.requests = 0
        self.stream_fail_after: int | None = None
        self.stream_fail_mode = "drop"
        self.chunk_delay = 0.0
        self.first_chunk_delay = 0.0
        self.format_modes: dict[str, str] = {}
        self.requests_by_format: dict[str, int] = {}
        self.streams = 0
        self.disconnects = 0
        self.last_disconnect: dict[str, Any] | None = None

    def snapshot(self, full: bool = False) -> dict:
        with self._lock:
            state = {
                "mode": self.mode,
                "hang_seconds": self.hang_seconds,
                "requests": self.requests,
            }
            extra = {name: _copy(getattr(self, name)) for name in DEFAULTS}
        if not full:
            extra = {k: v for k, v in extra.items() if v != DEFAULTS[k]}
        return state | extra

    def update(self, body: dict) -> dict:
        mode = body.get("mode")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        hang = _seconds(body, "hang_seconds")
        chunk_delay = _seconds(body, "chunk_delay")
        first_chunk_delay = _seconds(body, "first_chunk_delay")
        fail_after = body.get("stream_fail_after")
        if fail_after is not None and (
            isinstance(fail_after, bool) or not isinstance(fail_after, int) or fail_after < 0
        ):
            raise ValueError("stream_fail_after must be an integer >= 0, or null")
        fail_mode = body.get("stream_fail_mode")
        if fail_mode is not None and fail_mode not in STREAM_FAIL_MODES:
            raise ValueError(f"stream_fail_mode must be one of {', '.join(STREAM_FAIL_MODES)}")
        format_modes = body.get("format_modes")
        if format_modes is not None and (
            not isinstance(format_modes, dict)
            or not set(format_modes) <= set(FORMATS)
            or not set(format_modes.values()) <= set(MODES)
        ):
            raise ValueError(
                f"format_modes must map wire formats ({', '.join(FORMATS)}) to modes "
                f"({', '.join(MODES)})"
            )
        with self._lock:
            if mode is not None:
                self.mode = mode
            if hang is not None:
                self.hang_seconds = hang
            if chunk_delay is not None:
                self.chunk_delay = chunk_delay
            if first_chunk_delay is not None:
                self.first_chunk_delay = first_chunk_delay
            if "stream_fail_after" in body:
                self.stream_fail_after = fail_after
            if fail_mode is not None:
                self.stream_fail_mode = fail_mode
            if format_modes is not None:
                self.format_modes = dict(format_modes)
            if body.get("reset"):
                self.requests = 0
                self.requests_by_format = {}
                self.streams = 0
                self.disconnects = 0
                self.last_disconnect = None
        return self.snapshot()

    def count_request(self, fmt: str) -> tuple[str, float]:
        with self._lock:
            self.requests += 1
            self.requests_by_format[fmt] = self.requests_by_format.get(fmt, 0) + 1
            return self.format_modes.get(fmt, self.mode), self.hang_seconds

    def stream_settings(self) -> dict[str, Any]:
        with self._lock:
            self.streams += 1
            return {
                "fail_after": self.stream_fail_after,
                "fail_mode": self.stream_fail_mode,
                "chunk_delay": self.chunk_delay,
                "first_chunk_delay": self.first_chunk_delay,
            }

    def record_disconnect(self, path: str, exchange: Any) -> None:
        closed = exchange.closed_at
        last = exchange.last_frame_at or exchange.started_at
        with self._lock:
            self.disconnects += 1
            self.last_disconnect = {
                "path": path,
                "chunks_sent": exchange.frames_sent,
                "seconds_after_last_chunk": round(closed - last, 3),
                "seconds_after_request": round(closed - exchange.started_at, 3),
                "at": round(time.time(), 3),
            }


def count_tokens(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        parts = message.get("parts") if isinstance(message, dict) else None  # Gemini contents
        for part in parts if isinstance(parts, list) else []:
            text = part.get("text") if isinstance(part, dict) else None
            words += len(text.split()) if isinstance(text, str) else 0
    return max(words, 1)


def completion(model: str, prompt_tokens: int) -> dict:
    """The OpenAI answer when provider_wire.py is not deployed."""
    completion_tokens = len(COMPLETION_TEXT.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": COMPLETION_TEXT},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _error_body(fmt: str, status: int, message: str, code: str | None = None) -> dict:
    if wire is None:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(
            status, "server_error"
        )
        return error(message, kind, code)
    if fmt == "openai" and status == 429:
        return wire.error_body(fmt, status, message, error_type="rate_limit_exceeded", code=code)
    return wire.error_body(
        fmt, status, message, code=code, retry_after=1 if status == 429 else None
    )


class Handler(BaseHTTPRequestHandler):
    server_version = "llm-standin/1"
    protocol_version = "HTTP/1.1"
    control: Control  # set on the class by make_server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        status = args[1] if len(args) > 1 else ""
        sys.stderr.write(f"llm-standin {self.command} {self.path} {status}\n")

    def handle(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # a caller that went away
            super().handle()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up (a timeout drill): nothing to answer

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/_control":
            full = parse_qs(url.query).get("all", ["0"])[0] not in ("", "0", "false")
            self._send(200, self.control.snapshot(full=full))
        elif url.path == "/health":
            self._send(200, {"status": "ok"})
        elif url.path in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
        elif wire is not None and url.path in ("/v1beta/models",):
            self._send(200, wire.models_list(wire.GEMINI, ["gemini-2.0-flash"]))
        else:
            self._send(404, error(f"no route {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._body()
        except ValueError as exc:
            self._send(400, error(f"invalid JSON body: {exc}", "invalid_request_error"))
            return
        path = urlsplit(self.path).path
        if path == "/_control":
            try:
                self._send(200, self.control.update(body))
            except ValueError as exc:
                self._send(400, {"error": str(exc)})
        elif path in CHAT_PATHS:
            self._llm("openai", body)
        elif wire is not None and path == "/v1/messages":
            self._llm(wire.ANTHROPIC, body)
        elif wire is not None and path.endswith((":generateContent", ":streamGenerateContent")):
            self._llm(wire.GEMINI, body)
        else:
            self._send(404, error(f"no route {self.path}", "invalid_request_error"))

    def _authorized(self, fmt: str) -> bool:
        if self.headers.get("Authorization", "").startswith("Bearer "):
            return True
        if fmt == "anthropic":
            return bool(self.headers.get("x-api-key"))
        if fmt == "gemini":
            return bool(self.headers.get("x-goog-api-key")) or "key=" in urlsplit(self.path).query
        return False

    def _llm(self, fmt: str, body: dict) -> None:
        mode, hang_seconds = self.control.count_request(fmt)
        if not self._authorized(fmt):
            self._send(401, _error_body(fmt, 401, "missing API key", "invalid_api_key"))
            return
        stream = wire is not None and wire.wants_stream(self.path, body)
        if wire is None and body.get("stream") is True:
            message = "stand-in: streaming needs provider_wire.py next to llm_standin.py"
            self._send(501, error(message, "server_error"))
            return
        if mode == "fail500":
            self._send(500, _error_body(fmt, 500, "stand-in: injected server error"))
            return
        if mode == "fail429":
            message = "stand-in: injected rate limit"
            self._send(429, _error_body(fmt, 429, message, "rate_limit"), {"Retry-After": "1"})
            return
        if wire is None:
            if mode == "hang":
                time.sleep(hang_seconds)
            model = body.get("model") if isinstance(body.get("model"), str) else "gpt-4o-mini"
            self._send(200, completion(model, count_tokens(body.get("messages"))))
            return
        exchange = wire.Exchange()
        conn = wire.Connection(self, exchange)
        try:
            if mode == "hang":
                conn.wait(hang_seconds)
            self._answer(fmt, body, conn, stream)
        except wire.ClientGone:
            pass
        finally:
            exchange.end()
            if stream and exchange.streamed and exchange.closed_at is not None:
                self.control.record_disconnect(urlsplit(self.path).path, exchange)

    def _answer(self, fmt: str, body: dict, conn: Any, stream: bool) -> None:
        requested = body.get("model")
        if fmt == wire.GEMINI:
            model = wire.gemini_model(self.path) or "gemini-2.0-flash"
            prompt_tokens = count_tokens(body.get("contents"))
        else:
            model = requested if isinstance(requested, str) else "gpt-4o-mini"
            prompt_tokens = count_tokens(body.get("messages"))
        usage = wire.Usage(prompt_tokens, len(COMPLETION_TEXT.split()))
        answer = wire.Answer(
            text=COMPLETION_TEXT,
            usage=usage,
            model=model,
            id={wire.ANTHROPIC: "msg_", wire.OPENAI: "chatcmpl-"}.get(fmt, "")
            + uuid.uuid4().hex[:24],
            created=int(time.time()),
        )
        if not stream:
            rendered = {
                wire.OPENAI: lambda: wire.openai_completion(answer),
                wire.ANTHROPIC: lambda: wire.anthropic_message(answer),
                wire.GEMINI: lambda: wire.gemini_response(answer),
            }[fmt]()
            conn.send(200, json.dumps(rendered).encode(), {"Content-Type": "application/json"})
            return
        if fmt == wire.ANTHROPIC:
            frames = wire.anthropic_sse(answer)
        elif fmt == wire.GEMINI and wire.wants_sse(self.path):
            frames = wire.gemini_sse(answer)
        elif fmt == wire.GEMINI:
            frames = wire.gemini_json_array(answer)
        else:
            include_usage = wire.stream_options(body)["include_usage"]
            frames = wire.openai_sse(answer, include_usage=include_usage)
        settings = self.control.stream_settings()
        content_type = wire.SSE_CONTENT_TYPE if wire.wants_sse(self.path) else "application/json"
        wire.serve_stream(
            conn,
            frames,
            headers={"Content-Type": content_type},
            first_chunk_delay=settings["first_chunk_delay"],
            chunk_delay=settings["chunk_delay"],
            fail_after=settings["fail_after"],
            fail_mode=settings["fail_mode"],
            error_frame=wire.stream_error_frame(fmt, 529, "stand-in: injected stream failure"),
        )


def make_server(host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"control": Control()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)
    # PID 1 in its container: stop promptly on `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write(f"llm-standin listening on {args.host}:{args.port}\n")
    sys.stderr.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
