"""What the gateway answers, in OpenAI's format whatever the provider: a `chat.completion` body,
or the `chat.completion.chunk` server-sent events of a stream ending with `data: [DONE]`
(docs/provider-wire-formats.md §2.2, §2.3, §6).

Built as plain JSON, without a validating model: everything in them was validated on the way
in (the request) or read and checked by the adapter (the answer).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Final

from techno_os_api.llm.completion import Completion, Delta
from techno_os_api.llm.usage import Usage

DONE: Final = b"data: [DONE]\n\n"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(completion: Completion, model: str) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": completion.content}
    if completion.refusal is not None:
        message["refusal"] = completion.refusal
    if completion.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in completion.tool_calls
        ]
    body = {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
        "usage": completion.usage.as_openai(),
    }
    return _dumps(body).encode()


class ChunkEncoder:
    """The SSE events of one stream. Every chunk repeats the stream's id, created and model
    (the prefix is built once); with include_usage, each carries `"usage": null` and a last
    chunk with empty `choices` carries the usage."""

    def __init__(self, model: str, include_usage: bool) -> None:
        head = _dumps(
            {
                "id": completion_id(),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
            }
        )
        self._head = b"data: " + head[:-1].encode() + b","
        self._choice = self._head + b'"choices":[{"index":0,"delta":'
        self._tail = b',"logprobs":null,"finish_reason":%s}]' + (
            b',"usage":null}\n\n' if include_usage else b"}\n\n"
        )
        self._null = b"}" + self._tail % b"null"
        self._started = False

    def delta(self, delta: Delta) -> bytes:
        """The chunk of one neutral event (content, refusal, tool call pieces, finish)."""
        if (
            self._started
            and delta.content is not None
            and delta.refusal is None
            and not delta.tool_calls
            and delta.finish_reason is None
        ):  # most chunks: text only, without a dict to build
            return self._choice + b'{"content":' + _dumps(delta.content).encode() + self._null
        out: dict[str, Any] = {}
        if not self._started:
            out["role"] = "assistant"
            self._started = True
        if delta.content is not None:
            out["content"] = delta.content
        if delta.refusal is not None:
            out["refusal"] = delta.refusal
        if delta.tool_calls:
            calls = []
            for fragment in delta.tool_calls:
                call: dict[str, Any] = {"index": fragment.index}
                function: dict[str, Any] = {"arguments": fragment.arguments}
                if fragment.id is not None:
                    call["id"] = fragment.id
                    call["type"] = "function"
                if fragment.name is not None:
                    function["name"] = fragment.name
                call["function"] = function
                calls.append(call)
            out["tool_calls"] = calls
        finish = _dumps(delta.finish_reason).encode() if delta.finish_reason else b"null"
        return self._choice + _dumps(out).encode() + self._tail % finish

    def usage(self, usage: Usage) -> bytes:
        return self._head + b'"choices":[],"usage":' + _dumps(usage.as_openai()).encode() + b"}\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """A failure after the stream started: `data: {"error": {...}}`, then the end (no [DONE]),
    which the OpenAI SDK raises as an APIError."""
    return b"data: " + _dumps(body).encode() + b"\n\n"
