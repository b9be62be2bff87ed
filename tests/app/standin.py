"""A real HTTP/1.1 server on loopback that stands in for the LLM providers.

It answers in the wire format the request asks for (OpenAI chat completions on any other path,
Anthropic Messages on /v1/messages, Gemini on .../models/M:generateContent and
:streamGenerateContent), streamed when the request asks for a stream (`"stream": true`, or
Gemini's streamGenerateContent: SSE with `alt=sse`, else a JSON array), or fails with a status
in the provider's own error shape, or hangs, or breaks the connection mid-stream. It records
every request, and for each one how the exchange went on the wire (`Received.exchange`): frames
sent, and when the stand-in saw the client close the connection before the answer was complete.

The formats come from files/standin/provider_wire.py, shared with the sandbox drills'
stand-in; docs/provider-wire-formats.md describes them.

    standin.behave(text=("Hel", "lo"), chunk_delay=0.2)        # every following request
    standin.script(Behaviour(status=529), Behaviour())          # the next ones, in order
    standin.received[0].exchange.wait_closed(1.0)              # the client went away?
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "files" / "standin"))
import provider_wire as wire  # noqa: E402  (lives with the sandbox stand-in it is shared with)

ToolCall = wire.ToolCall
FAIL_MODES = wire.FAIL_MODES


@dataclass(frozen=True)
class Behaviour:
    """How the stand-in answers one request. Every field has a harmless default.

    Answer content (rendered in the format of the request's path):
      text               one string (streamed a word at a time) or the exact stream pieces
      tool_calls         ToolCall(name, arguments, id=None), ... (finish reason tool_calls /
                         tool_use / STOP follows unless finish_reason says otherwise)
      thinking           reasoning text: Anthropic thinking block, Gemini thought parts,
                         xAI/DeepSeek reasoning_content (OpenAI proper shows none)
      refusal            OpenAI message.refusal; Anthropic stop_reason refusal; Gemini SAFETY
      blocked            Gemini promptFeedback.blockReason: an answer without candidates
      finish_reason      in the provider's own vocabulary ("end_turn", "MAX_TOKENS",
                         "insufficient_system_resource", ...); None: the natural one
      stop_sequence      Anthropic's stop_sequence value
      prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens
                         neutral usage, inclusive like OpenAI's (see provider_wire.Usage):
                         the stand-in converts to each provider's own accounting
      dialect            "openai" | "xai" | "deepseek": flavour of the OpenAI format
      model              None: the request's model
    Timing and streaming:
      delay              seconds before the status line (a hang when longer than the
                         client's timeout; stops early when the client goes away)
      stream             None: as the request asks; True/False to force
      first_chunk_delay  seconds between the headers and the first frame (time to first token)
      chunk_delay        seconds between frames
      keepalive_interval while waiting in a stream, send the provider's keep-alive (SSE
                         comment `: keep-alive`, Anthropic `ping`) this often; 0: never
      fail_after         after this many frames (all of them when more), fail by `fail_mode`:
                           drop  close the connection (FIN) without ending the body
                           reset close it with a TCP reset
                           error send the provider's in-stream error (fail_status,
                                 error_type, error_message), then end the body properly
                           hang  send nothing more until the client leaves (idle timeout)
      frames             exact stream frames (bytes) to send instead of the rendered ones
    HTTP:
      status             >= 400: the provider's error body for the request's format
      headers            extra response headers (e.g. {"Retry-After": "7"})
      retry_after        sets Retry-After (and Gemini's RetryInfo detail on errors)
      body               answer with exactly this JSON (any status)
      raw                answer with exactly these bytes (any status), `content_type`
      gzip               gzip the answer (Content-Encoding: gzip), streams included
      mutate             called with each rendered JSON body or stream event's data (dict);
                         returns what to send instead (unexpected types, missing fields...)
      error_message, error_type, error_code
                         override the error body's message / provider type / OpenAI code
      echo_headers       error bodies repeat the request's headers (secrets included), in
                         the message and in a top-level "request_headers" object
    """

    status: int = 200
    delay: float = 0.0  # seconds before answering (a hang when longer than the timeout)
    prompt_tokens: int = 7
    completion_tokens: int = 11
    text: str | tuple[str, ...] = "stand-in reply"
    body: Any = None  # answer with exactly this JSON instead of the wire format
    tool_calls: tuple[wire.ToolCall, ...] = ()
    thinking: str | tuple[str, ...] = ()
    refusal: str | None = None
    blocked: str | None = None
    finish_reason: str | None = None
    stop_sequence: str | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    dialect: str = "openai"
    model: str | None = None
    stream: bool | None = None
    first_chunk_delay: float = 0.0
    chunk_delay: float = 0.0
    keepalive_interval: float = 0.0
    fail_after: int | None = None
    fail_mode: str = "drop"
    fail_status: int = 529
    frames: tuple[bytes, ...] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    raw: bytes | None = None
    content_type: str | None = None
    gzip: bool = False
    mutate: Callable[[Any], Any] | None = None
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    echo_headers: bool = False

    def __post_init__(self) -> None:
        self.usage()  # refuses inconsistent counts here, not in the server's thread
        if self.fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {FAIL_MODES}")
        if self.dialect not in wire.DIALECTS:
            raise ValueError(f"dialect must be one of {wire.DIALECTS}")

    def usage(self) -> wire.Usage:
        return wire.Usage(
            input_tokens=self.prompt_tokens,
            output_tokens=self.completion_tokens,
            cache_read_tokens=self.cached_tokens,
            cache_write_tokens=self.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )

    def answer(self, model: str) -> wire.Answer:
        return wire.Answer(
            text=self.text,
            tool_calls=tuple(self.tool_calls),
            thinking=self.thinking,
            refusal=self.refusal,
            blocked=self.blocked,
            finish_reason=self.finish_reason,
            stop_sequence=self.stop_sequence,
            usage=self.usage(),
            model=self.model if self.model is not None else model,
        )

    @classmethod
    def gzip_bomb(cls, inflated_size: int, **kwargs: Any) -> Behaviour:
        """A 200 whose gzip-encoded body inflates to `inflated_size` bytes of valid JSON
        (an object padded with whitespace) from about 1/1000 of that on the wire."""
        bomb = wire.gzip_bomb(inflated_size, prefix=b'{"choices": [', suffix=b"]}")
        headers = {"Content-Encoding": "gzip", **kwargs.pop("headers", {})}
        return cls(raw=bomb, headers=headers, **kwargs)

    @classmethod
    def huge(cls, size: int, piece: int = 1 << 16, **kwargs: Any) -> Behaviour:
        """An answer whose text is `size` characters, in pieces of `piece` when streamed."""
        text = tuple("x" * min(piece, size - i) for i in range(0, size, piece))
        return cls(text=text, **kwargs)


Exchange = wire.Exchange  # how a request went on the wire; see provider_wire.Exchange


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    method: str = "POST"
    exchange: Exchange = field(default_factory=Exchange, compare=False)


def _default_header(headers: dict[str, str], name: str, value: str) -> None:
    if name.lower() not in {key.lower() for key in headers}:
        headers[name] = value


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
            protocol_version = "HTTP/1.1"  # keep-alive; streams use chunked transfer coding

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                standin._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                standin._handle(self)

            def handle(self) -> None:
                with contextlib.suppress(OSError, ValueError):  # a client that went away
                    super().handle()

            def finish(self) -> None:
                with contextlib.suppress(OSError, ValueError):
                    super().finish()

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

    def wait_count(self, n: int, timeout: float = 2.0) -> bool:
        """Wait until at least `n` requests have arrived."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def exchange(self, index: int = -1) -> Exchange:
        with self._lock:
            return self.received[index].exchange

    # --- serving ---------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = wire.read_body(handler)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in handler.headers.items()}
        received = Received(handler.path, headers, body, handler.command)
        with self._lock:
            self.received.append(received)
            behaviour = self._script.popleft() if self._script else self.default
            release = self._release
        conn = wire.Connection(handler, received.exchange, release)
        try:
            self._answer(conn, behaviour, received)
        except wire.ClientGone:
            pass
        except Exception:  # a bug here: say so in the test's captured output
            traceback.print_exc()
            handler.close_connection = True
        finally:
            received.exchange.end()

    def _answer(self, conn: wire.Connection, b: Behaviour, request: Received) -> None:
        fmt = wire.format_of(request.path, request.headers)
        if b.delay:
            conn.wait(b.delay)
        headers = dict(b.headers)
        if b.retry_after is not None:
            _default_header(headers, "Retry-After", f"{b.retry_after:g}")
        if b.raw is not None:
            _default_header(headers, "Content-Type", b.content_type or "application/json")
            conn.send(b.status, b.raw, headers, b.gzip)
            return
        if b.body is not None:
            self._send_json(conn, b, b.body, headers)
            return
        if b.status >= 400:
            self._send_json(conn, b, self._error(fmt, b, request), headers)
            return
        if request.method == "GET":
            self._send_json(conn, b, wire.models_list(fmt, [b.model or "stand-in-model"]), headers)
            return
        body = request.body if isinstance(request.body, dict) else {}
        model = wire.gemini_model(request.path) if fmt == wire.GEMINI else body.get("model")
        answer = b.answer(model if isinstance(model, str) else "")
        stream = b.stream if b.stream is not None else wire.wants_stream(request.path, body)
        if not stream:
            rendered = {
                wire.OPENAI: lambda: wire.openai_completion(answer, b.dialect),
                wire.ANTHROPIC: lambda: wire.anthropic_message(answer),
                wire.GEMINI: lambda: wire.gemini_response(answer),
            }[fmt]()
            self._send_json(conn, b, rendered, headers)
            return
        sse = wire.wants_sse(request.path)
        frames = list(b.frames) if b.frames is not None else self._frames(fmt, b, answer, request)
        content_type = wire.SSE_CONTENT_TYPE if sse else "application/json"
        _default_header(headers, "Content-Type", b.content_type or content_type)
        self._stream(conn, b, fmt, frames, headers)

    def _send_json(
        self, conn: wire.Connection, b: Behaviour, payload: Any, headers: dict[str, str]
    ) -> None:
        if b.mutate is not None:
            payload = b.mutate(payload)
        _default_header(headers, "Content-Type", b.content_type or "application/json")
        conn.send(b.status, json.dumps(payload).encode(), headers, b.gzip)

    def _error(self, fmt: str, b: Behaviour, request: Received) -> dict[str, Any]:
        message = b.error_message
        if b.echo_headers:
            echoed = json.dumps(request.headers)
            message = f"{message or f'stand-in failure {b.status}'}; request headers: {echoed}"
        body = wire.error_body(
            fmt,
            b.status,
            message,
            dialect=b.dialect,
            error_type=b.error_type,
            code=b.error_code,
            retry_after=b.retry_after if b.status == 429 else None,
        )
        if b.echo_headers:
            body["request_headers"] = dict(request.headers)
        return body

    def _frames(self, fmt: str, b: Behaviour, answer: wire.Answer, request: Received) -> list:
        mutate = b.mutate or (lambda data: data)
        if fmt == wire.ANTHROPIC:
            return [
                wire.sse_frame(mutate(data), event) for event, data in wire.anthropic_events(answer)
            ]
        if fmt == wire.GEMINI:
            chunks = [mutate(c) for c in wire.gemini_chunks(answer)]
            if not wire.wants_sse(request.path):  # one JSON array, an element per frame
                frames = [
                    (b"," if i else b"[") + json.dumps(c).encode() for i, c in enumerate(chunks)
                ]
                frames[-1] += b"]"
                return frames
            return [wire.sse_frame(c, eol="\r\n") for c in chunks]
        options = wire.stream_options(request.body)
        chunks = wire.openai_chunks(
            answer,
            b.dialect,
            include_usage=options["include_usage"],
            obfuscation=b.dialect == "openai" and options["include_obfuscation"],
        )
        return [wire.sse_frame(mutate(c)) for c in chunks] + [wire.OPENAI_DONE]

    def _stream(
        self,
        conn: wire.Connection,
        b: Behaviour,
        fmt: str,
        frames: list[bytes],
        headers: dict[str, str],
    ) -> None:
        error = wire.stream_error_frame(
            fmt, b.fail_status, b.error_message, dialect=b.dialect, error_type=b.error_type
        )
        wire.serve_stream(
            conn,
            frames,
            status=b.status,
            headers=headers,
            gzip=b.gzip,
            first_chunk_delay=b.first_chunk_delay,
            chunk_delay=b.chunk_delay,
            keepalive=wire.keepalive_frame(fmt) if b.keepalive_interval > 0 else None,
            keepalive_interval=b.keepalive_interval,
            fail_after=b.fail_after,
            fail_mode=b.fail_mode,
            error_frame=error,
        )
