"""Server-sent events, read incrementally from a provider's stream: the one parser every adapter
uses.

The WHATWG rules that matter here: a line ends with CRLF, LF or CR (a CR at the end of one
network chunk and the LF at the start of the next are one line end); a line starting with `:` is
a comment (DeepSeek's `: keep-alive`); one space after the field's colon is dropped; `data`
lines join with LF; a blank line dispatches the event; an event without data is not dispatched, and
neither is one the body ends in the middle of (a cut stream).
A line or an event larger than `max_event_bytes` is an error, not a memory leak: the stream is
abandoned as unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_EVENT_BYTES: Final = 4 * 1024 * 1024


class SSEError(ValueError):
    """The stream is not readable as server-sent events (a line or event over the bound)."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEParser:
    """Feed it bytes as they arrive; it returns the events they complete."""

    __slots__ = ("_buffer", "_data", "_event", "_limit", "_size", "_skip_lf")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._limit = max_event_bytes
        self._buffer = b""
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF is its pair
        self._event: str | None = None
        self._data: list[str] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        if not chunk:
            return []
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()  # incomplete (b"" when the chunk ended a line)
        if len(self._buffer) > self._limit:
            raise SSEError(f"an event stream line is longer than {self._limit} bytes")
        events: list[SSEEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SSEEvent(self._event, "\n".join(self._data))
            self._event, self._data, self._size = None, [], 0
            return event
        if line[:1] == b":":
            return None
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._size += len(value) + 1
            if self._size > self._limit:
                raise SSEError(f"an event stream event is larger than {self._limit} bytes")
            self._data.append(value.decode("utf-8", errors="replace"))
        elif field == b"event":
            self._event = value.decode("utf-8", errors="replace")
        return None  # id, retry and unknown fields: nothing the gateway uses
