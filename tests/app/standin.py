"""A real HTTP server on loopback that stands in for the LLM providers.

It answers in the wire format the path asks for (OpenAI chat completions, Anthropic Messages,
Gemini generateContent), or fails with a chosen status, or hangs; and it records every request it
receives, so a test can prove that a refused call never reached the network.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Behaviour:
    status: int = 200
    delay: float = 0.0  # seconds before answering (a hang when longer than the timeout)
    prompt_tokens: int = 7
    completion_tokens: int = 11
    text: str = "stand-in reply"
    body: Any = None  # answer with exactly this JSON instead of the wire format


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any


def _success_body(path: str, b: Behaviour, model: str) -> dict[str, Any]:
    if path.endswith("/v1/messages"):  # Anthropic Messages
        return {
            "id": "msg_standin",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": b.text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": b.prompt_tokens, "output_tokens": b.completion_tokens},
        }
    if path.endswith(":generateContent"):  # Gemini
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": b.text}]},
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": b.prompt_tokens,
                "candidatesTokenCount": b.completion_tokens,
                "totalTokenCount": b.prompt_tokens + b.completion_tokens,
            },
        }
    return {  # OpenAI chat completions (also xAI, DeepSeek)
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": b.text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": b.completion_tokens,
            "total_tokens": b.prompt_tokens + b.completion_tokens,
        },
    }


@dataclass
class StandIn:
    default: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self.received: list[Received] = []
        self._release = threading.Event()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                standin._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def behave(self, **kwargs: Any) -> None:
        """Answer every following request this way."""
        self.default = Behaviour(**kwargs)

    def script(self, *behaviours: Behaviour) -> None:
        """Answer the next requests this way, in order, then fall back to the default."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        self._release.set()  # ends any hang still in progress
        with self._lock:
            self._release = threading.Event()
            self._script.clear()
            self.received.clear()
        self.default = Behaviour()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.received.append(
                Received(handler.path, {k.lower(): v for k, v in handler.headers.items()}, body)
            )
            behaviour = self._script.popleft() if self._script else self.default
            release = self._release
        if behaviour.delay:
            release.wait(behaviour.delay)
        if behaviour.body is not None:
            payload = behaviour.body
        elif behaviour.status == 200:
            model = body.get("model", "") if isinstance(body, dict) else ""
            payload = _success_body(handler.path.split("?")[0], behaviour, model)
        else:
            payload = {"error": {"message": f"stand-in failure {behaviour.status}"}}
        data = json.dumps(payload).encode()
        try:
            handler.send_response(behaviour.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up (timeout): nothing to answer
            pass
