#!/usr/bin/env python3
"""An LLM provider stand-in speaking the OpenAI wire format, for the drills of the sandbox only.

Standard library only (it runs with the API image's python3). One port serves both the provider
API and a control endpoint that switches its behaviour at run time:

    POST /_control {"mode": "ok" | "fail500" | "fail429" | "hang", "hang_seconds": N,
                    "reset": true}                       -> the new state
    GET  /_control                                        -> {"mode", "hang_seconds", "requests"}
    POST /v1/chat/completions (or /chat/completions)     -> depends on the mode:
        ok       200, a chat completion with `usage`
        fail500  500, an OpenAI-style error body
        fail429  429, an OpenAI-style rate-limit error with Retry-After
        hang     waits hang_seconds, then answers as "ok" (if the caller is still there)
    GET  /health                                          -> {"status": "ok"}

`requests` counts chat-completion requests received (in every mode), so a drill can tell a call
that reached the provider from one the circuit breaker rejected. `"reset": true` zeroes it.

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

MODES = ("ok", "fail500", "fail429", "hang")
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
COMPLETION_TEXT = "stand-in reply"


class Control:
    """The switchable behaviour, shared by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.mode = "ok"
        self.hang_seconds = 60.0
        self.requests = 0

    def snapshot(self) -> dict:
        with self._lock:
            return {"mode": self.mode, "hang_seconds": self.hang_seconds, "requests": self.requests}

    def update(self, body: dict) -> dict:
        mode = body.get("mode")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        hang = body.get("hang_seconds")
        if hang is not None and (not isinstance(hang, (int, float)) or hang < 0):
            raise ValueError("hang_seconds must be a number >= 0")
        with self._lock:
            if mode is not None:
                self.mode = mode
            if hang is not None:
                self.hang_seconds = float(hang)
            if body.get("reset"):
                self.requests = 0
        return self.snapshot()

    def count_request(self) -> tuple[str, float]:
        with self._lock:
            self.requests += 1
            return self.mode, self.hang_seconds


def count_tokens(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
    return max(words, 1)


def completion(model: str, prompt_tokens: int) -> dict:
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


class Handler(BaseHTTPRequestHandler):
    server_version = "llm-standin/1"
    protocol_version = "HTTP/1.1"
    control: Control  # set on the class by make_server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        status = args[1] if len(args) > 1 else ""
        sys.stderr.write(f"llm-standin {self.command} {self.path} {status}\n")

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
        if self.path == "/_control":
            self._send(200, self.control.snapshot())
        elif self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
        else:
            self._send(404, error(f"no route {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._body()
        except ValueError as exc:
            self._send(400, error(f"invalid JSON body: {exc}", "invalid_request_error"))
            return
        if self.path == "/_control":
            try:
                self._send(200, self.control.update(body))
            except ValueError as exc:
                self._send(400, {"error": str(exc)})
        elif self.path in CHAT_PATHS:
            self._chat(body)
        else:
            self._send(404, error(f"no route {self.path}", "invalid_request_error"))

    def _chat(self, body: dict) -> None:
        mode, hang_seconds = self.control.count_request()
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self._send(401, error("missing API key", "invalid_request_error", "invalid_api_key"))
            return
        if mode == "fail500":
            self._send(500, error("stand-in: injected server error", "server_error"))
            return
        if mode == "fail429":
            self._send(
                429,
                error("stand-in: injected rate limit", "rate_limit_exceeded", "rate_limit"),
                {"Retry-After": "1"},
            )
            return
        if mode == "hang":
            time.sleep(hang_seconds)
        model = body.get("model") if isinstance(body.get("model"), str) else "gpt-4o-mini"
        self._send(200, completion(model, count_tokens(body.get("messages"))))


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
