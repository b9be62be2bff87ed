"""The LLM providers' native wire formats, written once for both provider stand-ins.

Standard library only: it ships next to files/standin/llm_standin.py (the sandbox drills'
stand-in, python3 3.11) and is imported by tests/app/standin.py (the app tests' stand-in).
From a neutral `Answer` (text pieces, tool calls, thinking, refusal, a finish reason in the
provider's own vocabulary, usage) it renders:

    OpenAI chat completions (also xAI, DeepSeek: `dialect`)
        openai_completion() the JSON body;  openai_chunks() / openai_sse() the stream
    Anthropic Messages
        anthropic_message();                anthropic_events() / anthropic_sse()
    Gemini generateContent / streamGenerateContent
        gemini_response();                  gemini_chunks() / gemini_sse() / gemini_json_array()
    Errors in each provider's own body shape
        error_body(), stream_error_frame()

plus the HTTP pieces both stand-ins need: SSE framing and parsing, chunked transfer coding,
gzip and gzip bombs, and serving on an http.server handler (`Connection`, `serve_stream`):
delays, keep-alives, failures after N frames, and noticing when the client leaves
(`Exchange.closed_at`).

docs/provider-wire-formats.md describes every format and cites the provider documents and SDK
type definitions they follow; tests/app/test_standin_wire.py validates what this module
produces against the official SDKs' types.

Usage in `Usage` is neutral and *inclusive*, like OpenAI's: `input_tokens` counts every prompt
token (cached ones too) and `output_tokens` every generated token (reasoning too). Each renderer
converts to its provider's own accounting (Anthropic's `input_tokens` excludes cache reads and
writes; Gemini's `candidatesTokenCount` and xAI's `completion_tokens` exclude reasoning), so a
test can compare the gateway's OpenAI-shaped usage with the neutral numbers directly.
"""

from __future__ import annotations

import contextlib
import functools
import gzip as _gzip
import json
import re
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

# --- formats, dialects and every value of the providers' enums ----------------------------------
OPENAI = "openai"  # OpenAI chat completions wire format (OpenAI, xAI, DeepSeek)
ANTHROPIC = "anthropic"
GEMINI = "gemini"
FORMATS = (OPENAI, ANTHROPIC, GEMINI)
DIALECTS = ("openai", "xai", "deepseek")  # flavours of the OpenAI format

# openai-python types/chat/chat_completion.py (Choice.finish_reason)
OPENAI_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
# api-docs.deepseek.com (create chat completion: choices[].finish_reason)
DEEPSEEK_FINISH_REASONS = (
    "stop",
    "length",
    "content_filter",
    "tool_calls",
    "insufficient_system_resource",
)
# anthropic-sdk-python types/stop_reason.py
ANTHROPIC_STOP_REASONS = (
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
)
# googleapis/python-genai types.py (FinishReason), Gemini API and Vertex AI values together
GEMINI_FINISH_REASONS = (
    "FINISH_REASON_UNSPECIFIED",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "RECITATION",
    "LANGUAGE",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "MALFORMED_FUNCTION_CALL",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_OTHER",
    "NO_IMAGE",
    "IMAGE_RECITATION",
    "UNEXPECTED_TOOL_CALL",
    "TOO_MANY_TOOL_CALLS",
    "MISSING_THOUGHT_SIGNATURE",
    "MALFORMED_RESPONSE",
    "ESCALATION",
    "PUP_LIMITED_DISABLED",
    "CONTINUATION",
    "MODEL_ARMOR",
)
# googleapis/python-genai types.py (BlockedReason): promptFeedback.blockReason
GEMINI_BLOCK_REASONS = (
    "BLOCKED_REASON_UNSPECIFIED",
    "SAFETY",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "IMAGE_SAFETY",
    "MODEL_ARMOR",
    "JAILBREAK",
)

# The OpenAI `finish_reason` docs/provider-wire-formats.md proposes for every native value.
# None: not a finish reason the client should see; the document proposes a provider error.
# Gemini STOP becomes "tool_calls" when the candidate holds functionCall parts.
PROPOSED_OPENAI_FINISH_REASON: dict[str, dict[str, str | None]] = {
    OPENAI: {value: value for value in OPENAI_FINISH_REASONS}
    | {"insufficient_system_resource": None},
    ANTHROPIC: {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "pause_turn": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
    },
    GEMINI: {
        "FINISH_REASON_UNSPECIFIED": "stop",
        "STOP": "stop",
        "OTHER": "stop",
        "NO_IMAGE": "stop",
        "IMAGE_OTHER": "stop",
        "MAX_TOKENS": "length",
        "CONTINUATION": "length",
        "SAFETY": "content_filter",
        "RECITATION": "content_filter",
        "LANGUAGE": "content_filter",
        "BLOCKLIST": "content_filter",
        "PROHIBITED_CONTENT": "content_filter",
        "SPII": "content_filter",
        "IMAGE_SAFETY": "content_filter",
        "IMAGE_PROHIBITED_CONTENT": "content_filter",
        "IMAGE_RECITATION": "content_filter",
        "ESCALATION": "content_filter",
        "PUP_LIMITED_DISABLED": "content_filter",
        "MODEL_ARMOR": "content_filter",
        "MALFORMED_FUNCTION_CALL": None,
        "UNEXPECTED_TOOL_CALL": None,
        "TOO_MANY_TOOL_CALLS": None,
        "MISSING_THOUGHT_SIGNATURE": None,
        "MALFORMED_RESPONSE": None,
    },
}


# --- the neutral description of an answer -------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    """One call of a client-defined function. `arguments` as a mapping is sent as JSON; as a
    string it is sent exactly as given (a test may send arguments that are not valid JSON)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None  # None: a provider-looking id derived from the position

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"))

    def arguments_object(self) -> Any:
        if not isinstance(self.arguments, str):
            return dict(self.arguments)
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments  # deliberately malformed: passed on as the string


@dataclass(frozen=True)
class Usage:
    """Neutral token counts, inclusive like OpenAI's (see the module docstring)."""

    input_tokens: int = 7  # every prompt token, cache reads and writes included
    output_tokens: int = 11  # every generated token, reasoning included
    cache_read_tokens: int = 0  # prompt tokens served from a cache
    cache_write_tokens: int = 0  # prompt tokens written to a cache (Anthropic)
    reasoning_tokens: int = 0  # generated tokens spent thinking

    def __post_init__(self) -> None:
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cache reads and writes are part of input_tokens")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning tokens are part of output_tokens")

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


TextPieces = str | Sequence[str]


@dataclass(frozen=True)
class Answer:
    """What the model answers, independent of the wire format.

    `text` and `thinking` are either one string (streamed one word at a time) or the exact
    pieces to stream. `finish_reason` is in the vocabulary of the format it is rendered to
    (e.g. "end_turn" for Anthropic, "MAX_TOKENS" for Gemini); None picks the natural one.
    `refusal` is OpenAI's `message.refusal`; Anthropic renders it as stop_reason "refusal"
    with `stop_details`, Gemini as finishReason "SAFETY". `blocked` is Gemini's
    promptFeedback.blockReason (the answer then has no candidates); other formats ignore it.
    """

    text: TextPieces = "stand-in reply"
    tool_calls: Sequence[ToolCall] = ()
    thinking: TextPieces = ()
    refusal: str | None = None
    blocked: str | None = None
    finish_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str = "stand-in-model"
    id: str | None = None
    created: int = 0
    signature: str = "c3RhbmQtaW4tc2lnbmF0dXJl"  # opaque thinking signature (base64)

    @property
    def text_pieces(self) -> list[str]:
        return pieces(self.text)

    @property
    def thinking_pieces(self) -> list[str]:
        return pieces(self.thinking)

    @property
    def full_text(self) -> str:
        return "".join(self.text_pieces)

    @property
    def full_thinking(self) -> str:
        return "".join(self.thinking_pieces)


def pieces(value: TextPieces) -> list[str]:
    """A string cut after each run of whitespace ("a b" -> ["a ", "b"]); a sequence as is."""
    if isinstance(value, str):
        return [p for p in re.findall(r"\S*\s*", value) if p]
    return [str(p) for p in value]


def json_pieces(text: str, size: int = 12) -> list[str]:
    """Tool-call arguments cut into fixed-size fragments, as providers stream them."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _tool_id(fmt: str, call: ToolCall, index: int) -> str:
    if call.id is not None:
        return call.id
    prefix = {OPENAI: "call_standin", ANTHROPIC: "toolu_standin"}.get(fmt, "standin")
    return f"{prefix}_{index}"


# --- OpenAI chat completions (OpenAI, xAI, DeepSeek) --------------------------------------------
def openai_usage(usage: Usage, dialect: str = "openai") -> dict[str, Any]:
    """`usage` of a chat completion. xAI counts reasoning apart from `completion_tokens`;
    DeepSeek adds `prompt_cache_hit_tokens` / `prompt_cache_miss_tokens`."""
    completion = usage.output_tokens
    if dialect == "xai":
        completion -= usage.reasoning_tokens  # xAI: total = prompt + completion + reasoning
    body: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": completion,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if usage.cache_write_tokens and dialect == "openai":
        body["prompt_tokens_details"]["cache_write_tokens"] = usage.cache_write_tokens
    if dialect == "deepseek":
        body["prompt_cache_hit_tokens"] = usage.cache_read_tokens
        body["prompt_cache_miss_tokens"] = usage.input_tokens - usage.cache_read_tokens
        body["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if dialect == "xai":
        body["prompt_tokens_details"]["text_tokens"] = usage.input_tokens
        body["prompt_tokens_details"]["image_tokens"] = 0
        body["num_sources_used"] = 0
    return body


def _openai_finish(answer: Answer) -> str:
    if answer.finish_reason is not None:
        return answer.finish_reason
    return "tool_calls" if answer.tool_calls else "stop"


def openai_completion(answer: Answer, dialect: str = "openai") -> dict[str, Any]:
    """A `chat.completion` object (openai-python types/chat/chat_completion.py)."""
    text = answer.full_text
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if answer.refusal is not None or (answer.tool_calls and not text) else text,
    }
    if dialect == "openai":
        message["refusal"] = answer.refusal
        message["annotations"] = []
    elif answer.refusal is not None:
        message["refusal"] = answer.refusal
    if answer.thinking_pieces and dialect in ("xai", "deepseek"):
        message["reasoning_content"] = answer.full_thinking
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": _tool_id(OPENAI, call, i),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for i, call in enumerate(answer.tool_calls)
        ]
    return {
        "id": answer.id or "chatcmpl-standin",
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _openai_finish(answer),
            }
        ],
        "usage": openai_usage(answer.usage, dialect),
        "system_fingerprint": "fp_standin",
    }


def openai_chunks(
    answer: Answer,
    dialect: str = "openai",
    *,
    include_usage: bool = False,
    obfuscation: bool = False,
) -> list[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a stream, in order: the role, the reasoning
    (xAI/DeepSeek `reasoning_content`), the text, the refusal, each tool call (id and name
    first, then argument fragments), an empty delta with the finish reason and, with
    `include_usage`, a last chunk with `choices: []` and the usage (the others carry
    `"usage": null`). `[DONE]` is framing: see openai_sse()."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": answer.id or "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "system_fingerprint": "fp_standin",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        if obfuscation:
            body["obfuscation"] = "StAnDiN"
        return body

    role: dict[str, Any] = {"role": "assistant", "content": ""}
    if dialect == "openai":
        role["refusal"] = None
    chunks = [chunk(role)]
    if dialect in ("xai", "deepseek"):
        chunks += [chunk({"reasoning_content": p}) for p in answer.thinking_pieces]
    chunks += [chunk({"content": p}) for p in answer.text_pieces]
    if answer.refusal is not None:
        chunks += [chunk({"refusal": p}) for p in pieces(answer.refusal)]
    for i, call in enumerate(answer.tool_calls):
        head = {"index": i, "id": _tool_id(OPENAI, call, i), "type": "function"}
        chunks.append(
            chunk({"tool_calls": [head | {"function": {"name": call.name, "arguments": ""}}]})
        )
        chunks += [
            chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]})
            for fragment in json_pieces(call.arguments_json())
        ]
    chunks.append(chunk({}, _openai_finish(answer)))
    if include_usage:
        last = chunk({})
        last["choices"] = []
        last["usage"] = openai_usage(answer.usage, dialect)
        chunks.append(last)
    return chunks


OPENAI_DONE = b"data: [DONE]\n\n"


def openai_sse(
    answer: Answer,
    dialect: str = "openai",
    *,
    include_usage: bool = False,
    obfuscation: bool = False,
) -> list[bytes]:
    """The stream's SSE frames: `data: {chunk}` each, then `data: [DONE]`."""
    chunks = openai_chunks(answer, dialect, include_usage=include_usage, obfuscation=obfuscation)
    return [sse_frame(c) for c in chunks] + [OPENAI_DONE]


# --- Anthropic Messages -------------------------------------------------------------------------
def anthropic_usage(usage: Usage, *, output_tokens: int | None = None) -> dict[str, Any]:
    """`usage` of a Message: `input_tokens` excludes the cache reads and writes."""
    body: dict[str, Any] = {
        "input_tokens": usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }
    if usage.reasoning_tokens:
        body["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return body


def _anthropic_stop(answer: Answer) -> tuple[str, str | None, dict[str, Any] | None]:
    reason = answer.finish_reason
    if reason is None:
        reason = (
            "refusal"
            if answer.refusal is not None
            else "tool_use"
            if answer.tool_calls
            else "end_turn"
        )
    sequence = answer.stop_sequence
    if reason == "stop_sequence" and sequence is None:
        sequence = "STOP"
    details = None
    if reason == "refusal":
        details = {"type": "refusal", "category": None, "explanation": answer.refusal}
    return reason, sequence, details


def _anthropic_blocks(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.thinking_pieces:
        blocks.append(
            {"type": "thinking", "thinking": answer.full_thinking, "signature": answer.signature}
        )
    if answer.full_text or not answer.tool_calls:
        blocks.append({"type": "text", "text": answer.full_text})
    for i, call in enumerate(answer.tool_calls):
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(ANTHROPIC, call, i),
                "name": call.name,
                "input": call.arguments_object(),
            }
        )
    return blocks


def anthropic_message(answer: Answer) -> dict[str, Any]:
    """A Message (anthropic-sdk-python types/message.py)."""
    reason, sequence, details = _anthropic_stop(answer)
    body: dict[str, Any] = {
        "id": answer.id or "msg_standin",
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": _anthropic_blocks(answer),
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(answer.usage),
    }
    if details is not None:
        body["stop_details"] = details
    return body


def anthropic_events(answer: Answer, *, ping: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) pairs of a Messages stream: message_start (empty content,
    stop_reason null, input usage and output_tokens 1), for each content block
    content_block_start / content_block_delta... / content_block_stop (thinking:
    thinking_delta then signature_delta; text: text_delta; tool_use: input_json_delta
    fragments, the first one empty), a ping after the first block starts, message_delta (the
    stop reason and the cumulative usage), message_stop."""
    reason, sequence, details = _anthropic_stop(answer)
    start: dict[str, Any] = {
        "id": answer.id or "msg_standin",
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": anthropic_usage(answer.usage, output_tokens=1),
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]

    def block(index: int, content: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": content},
            )
        )
        if ping and index == 0:
            events.append(("ping", {"type": "ping"}))
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))

    index = 0
    if answer.thinking_pieces:
        deltas = [{"type": "thinking_delta", "thinking": p} for p in answer.thinking_pieces]
        deltas.append({"type": "signature_delta", "signature": answer.signature})
        block(index, {"type": "thinking", "thinking": "", "signature": ""}, deltas)
        index += 1
    if answer.full_text or not answer.tool_calls:
        text_deltas = [{"type": "text_delta", "text": p} for p in answer.text_pieces]
        block(index, {"type": "text", "text": ""}, text_deltas)
        index += 1
    for i, call in enumerate(answer.tool_calls):
        fragments = [""] + json_pieces(call.arguments_json())
        block(
            index,
            {
                "type": "tool_use",
                "id": _tool_id(ANTHROPIC, call, i),
                "name": call.name,
                "input": {},
            },
            [{"type": "input_json_delta", "partial_json": f} for f in fragments],
        )
        index += 1
    delta: dict[str, Any] = {"stop_reason": reason, "stop_sequence": sequence}
    if details is not None:
        delta["stop_details"] = details
    usage = anthropic_usage(answer.usage)
    usage.pop("service_tier")
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def anthropic_sse(answer: Answer, *, ping: bool = True) -> list[bytes]:
    return [sse_frame(data, event) for event, data in anthropic_events(answer, ping=ping)]


# --- Gemini generateContent / streamGenerateContent ---------------------------------------------
def gemini_usage(usage: Usage, *, final: bool = True) -> dict[str, Any]:
    """`usageMetadata`: candidatesTokenCount excludes thoughtsTokenCount; promptTokenCount
    includes cachedContentTokenCount. Before the last chunk only the prompt is counted."""
    body: dict[str, Any] = {"promptTokenCount": usage.input_tokens}
    if usage.cache_read_tokens:
        body["cachedContentTokenCount"] = usage.cache_read_tokens
    if final:
        body["candidatesTokenCount"] = usage.output_tokens - usage.reasoning_tokens
        if usage.reasoning_tokens:
            body["thoughtsTokenCount"] = usage.reasoning_tokens
        body["totalTokenCount"] = usage.total_tokens
    else:
        body["totalTokenCount"] = usage.input_tokens
    body["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.input_tokens}]
    return body


def _gemini_finish(answer: Answer) -> str:
    if answer.finish_reason is not None:
        return answer.finish_reason
    return "SAFETY" if answer.refusal is not None else "STOP"


def _gemini_call(call: ToolCall) -> dict[str, Any]:
    body: dict[str, Any] = {"name": call.name, "args": call.arguments_object()}
    if call.id is not None:
        body["id"] = call.id
    return body


def _gemini_envelope(answer: Answer, candidates: list[dict[str, Any]] | None, usage: dict) -> dict:
    body: dict[str, Any] = {}
    if candidates is not None:
        body["candidates"] = candidates
    body["usageMetadata"] = usage
    body["modelVersion"] = answer.model
    body["responseId"] = answer.id or "standin-response"
    return body


def _gemini_blocked(answer: Answer) -> dict[str, Any]:
    body = _gemini_envelope(answer, None, gemini_usage(answer.usage, final=False))
    body["promptFeedback"] = {
        "blockReason": answer.blocked,
        "safetyRatings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}
        ],
    }
    return body


def gemini_response(answer: Answer) -> dict[str, Any]:
    """A GenerateContentResponse (googleapis/python-genai types.py), camelCase as on the wire.
    A blocked prompt has no `candidates`, only promptFeedback.blockReason."""
    if answer.blocked is not None:
        return _gemini_blocked(answer)
    parts: list[dict[str, Any]] = []
    if answer.thinking_pieces:
        parts.append({"text": answer.full_thinking, "thought": True})
    if answer.full_text:
        parts.append({"text": answer.full_text})
    for i, call in enumerate(answer.tool_calls):
        part: dict[str, Any] = {"functionCall": _gemini_call(call)}
        if i == 0 and answer.thinking_pieces:
            part["thoughtSignature"] = answer.signature
        parts.append(part)
    candidate: dict[str, Any] = {"finishReason": _gemini_finish(answer), "index": 0}
    if parts:
        candidate = {"content": {"parts": parts, "role": "model"}} | candidate
    return _gemini_envelope(answer, [candidate], gemini_usage(answer.usage))


def gemini_chunks(answer: Answer) -> list[dict[str, Any]]:
    """The GenerateContentResponse chunks of a stream: one per thought piece and text piece
    (each `parts` holds only the new piece), the function calls whole in one chunk, the
    finishReason on the last chunk. usageMetadata is on every chunk: the prompt count only
    until the last chunk, which has the complete counts. A blocked prompt is one chunk."""
    if answer.blocked is not None:
        return [_gemini_blocked(answer)]
    parts: list[list[dict[str, Any]]] = [
        [{"text": p, "thought": True}] for p in answer.thinking_pieces
    ]
    parts += [[{"text": p}] for p in answer.text_pieces]
    if answer.tool_calls:
        calls: list[dict[str, Any]] = [
            {"functionCall": _gemini_call(call)} for call in answer.tool_calls
        ]
        if answer.thinking_pieces:
            calls[0]["thoughtSignature"] = answer.signature
        parts.append(calls)
    if not parts:
        parts = [[{"text": ""}]]
    chunks = []
    for n, chunk_parts in enumerate(parts):
        last = n == len(parts) - 1
        candidate: dict[str, Any] = {"content": {"parts": chunk_parts, "role": "model"}}
        if last:
            candidate["finishReason"] = _gemini_finish(answer)
        candidate["index"] = 0
        usage = gemini_usage(answer.usage, final=last)
        chunks.append(_gemini_envelope(answer, [candidate], usage))
    return chunks


def gemini_sse(answer: Answer, *, eol: str = "\r\n") -> list[bytes]:
    """`alt=sse` frames: `data: {chunk}` and a blank line each, no [DONE]: the stream ends with
    the body. `eol` "\\r\\n" is what the stand-in defaults to (see the document: unsure)."""
    return [sse_frame(c, eol=eol) for c in gemini_chunks(answer)]


def gemini_json_array(answer: Answer) -> list[bytes]:
    """streamGenerateContent without alt=sse: one JSON array, written one element at a time."""
    return json_array_frames(gemini_chunks(answer))


def json_array_frames(items: Sequence[Any]) -> list[bytes]:
    """A JSON array cut into one frame per element: `[e0`, `,\r\ne1`, ..., the last with `]`."""
    frames = [(b",\r\n" if i else b"[") + json.dumps(item).encode() for i, item in enumerate(items)]
    frames[-1] += b"]"
    return frames


# --- errors, in each provider's body shape ------------------------------------------------------
# (type, code) of OpenAI error bodies by HTTP status; DeepSeek uses the same envelope.
OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}
# xAI answers {"code": <a gRPC-style status text>, "error": <message>} (error is a string).
XAI_CODES: dict[int, str] = {
    400: "Client specified an invalid argument",
    401: "Request does not have valid authentication credentials",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    422: "Client specified an invalid argument",
    429: "Some resource has been exhausted",
    500: "Internal error",
    503: "The service is currently unavailable",
}
# anthropic-sdk-python types/shared/error_type.py, and the errors page (413 request_too_large).
ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# google.rpc.Code names Google APIs put in error.status, by HTTP status.
GEMINI_STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def default_error_type(fmt: str, status: int, dialect: str = "openai") -> str:
    if fmt == ANTHROPIC:
        return ANTHROPIC_ERRORS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
    if fmt == GEMINI:
        return GEMINI_STATUSES.get(status, "UNAVAILABLE" if status >= 500 else "INVALID_ARGUMENT")
    if dialect == "xai":
        return XAI_CODES.get(status, "Internal error" if status >= 500 else XAI_CODES[400])
    return OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )[0]


def error_body(
    fmt: str,
    status: int,
    message: str | None = None,
    *,
    dialect: str = "openai",
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> dict[str, Any]:
    """A provider's error body for `status`: OpenAI/DeepSeek {"error": {message, type, param,
    code}}, xAI {"code", "error"}, Anthropic {"type": "error", "error": {type, message},
    "request_id"}, Gemini {"error": {code, message, status[, details]}} (a 429 with
    `retry_after` carries a google.rpc.RetryInfo detail)."""
    message = message if message is not None else f"stand-in failure {status}"
    kind = error_type or default_error_type(fmt, status, dialect)
    if fmt == ANTHROPIC:
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_standin",
        }
    if fmt == GEMINI:
        error: dict[str, Any] = {"code": status, "message": message, "status": kind}
        if retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after:g}s",
                }
            ]
        return {"error": error}
    if dialect == "xai":
        return {"code": kind, "error": message}
    default_code = OPENAI_ERRORS.get(status, ("", None))[1]
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def stream_error_frame(
    fmt: str,
    status: int = 529,
    message: str | None = None,
    *,
    dialect: str = "openai",
    error_type: str | None = None,
) -> bytes:
    """An error sent inside a stream that had started with 200: Anthropic `event: error` with
    {"type": "error", "error": {...}}; OpenAI and Gemini a `data:` line holding the error
    body (what openai-python and google-genai check for)."""
    if fmt == ANTHROPIC:
        kind = error_type or default_error_type(ANTHROPIC, status)
        message = message if message is not None else "Overloaded"
        return sse_frame({"type": "error", "error": {"type": kind, "message": message}}, "error")
    if fmt == GEMINI:
        gemini_status = status if status < 600 and status != 529 else 503
        body = error_body(GEMINI, gemini_status, message, error_type=error_type)
        return sse_frame(body, eol="\r\n")
    openai_status = 500 if status == 529 else status
    return sse_frame(
        error_body(OPENAI, openai_status, message, dialect=dialect, error_type=error_type)
    )


def models_list(fmt: str, models: Sequence[str]) -> dict[str, Any]:
    """GET /models in each format."""
    if fmt == ANTHROPIC:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in models
        ]
        first, last = (models[0], models[-1]) if models else (None, None)
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}
    if fmt == GEMINI:
        return {"models": [{"name": f"models/{m}", "displayName": m} for m in models]}
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "stand-in"} for m in models
        ],
    }


# --- requests: which format, which model, streaming or not --------------------------------------
def format_of(path: str, headers: Mapping[str, str] | None = None) -> str:
    """The wire format a request asks for: Anthropic for /v1/messages (or any request with an
    `anthropic-version` header), Gemini for /v1beta/... and :generateContent paths, else
    OpenAI's."""
    path = path.split("?", 1)[0]
    lowered = {k.lower() for k in headers} if headers else set()
    if path.endswith("/v1/messages") or "anthropic-version" in lowered:
        return ANTHROPIC
    if path.endswith((":generateContent", ":streamGenerateContent")) or "/v1beta/" in path:
        return GEMINI
    return OPENAI


def gemini_model(path: str) -> str:
    match = re.search(r"/models/([^/:?]+)", path)
    return unquote(match.group(1)) if match else ""


def wants_stream(path: str, body: Any) -> bool:
    """Gemini streams on `:streamGenerateContent`; the others on `"stream": true`."""
    if format_of(path) == GEMINI:
        return ":streamGenerateContent" in path.split("?", 1)[0]
    return isinstance(body, dict) and body.get("stream") is True


def wants_sse(path: str) -> bool:
    """Gemini sends SSE only with `alt=sse`; without it the stream is a JSON array."""
    query = path.split("?", 1)[1] if "?" in path else ""
    return format_of(path) != GEMINI or "alt=sse" in query.split("&")


def stream_options(body: Any) -> dict[str, bool]:
    """OpenAI `stream_options`: include_usage (default false), include_obfuscation (true)."""
    options = body.get("stream_options") if isinstance(body, dict) else None
    options = options if isinstance(options, dict) else {}
    return {
        "include_usage": options.get("include_usage") is True,
        "include_obfuscation": options.get("include_obfuscation") is not False,
    }


# --- HTTP pieces --------------------------------------------------------------------------------
SSE_CONTENT_TYPE = "text/event-stream"


def sse_frame(data: Any, event: str | None = None, *, eol: str = "\n") -> bytes:
    """One server-sent event: `event: <name>` (optional), `data: <json>`, a blank line."""
    text = data if isinstance(data, str) else json.dumps(data)
    lines = ([f"event: {event}"] if event else []) + [f"data: {line}" for line in text.split("\n")]
    return (eol.join(lines) + eol + eol).encode()


def sse_comment(text: str = "keep-alive", *, eol: str = "\n") -> bytes:
    """An SSE comment line (DeepSeek's `: keep-alive` while a request waits)."""
    return f": {text}{eol}{eol}".encode()


@dataclass(frozen=True)
class SSEEvent:
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(raw: bytes | str) -> list[SSEEvent]:
    """Parse an event stream per the WHATWG rules that matter here: lines end with \\r\\n, \\n
    or \\r; `:` starts a comment; one space after the colon is dropped; data lines join with
    \\n; a blank line dispatches; an event without data is not dispatched."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    events: list[SSEEvent] = []
    name: str | None = None
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if data:
                events.append(SSEEvent(name, "\n".join(data)))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    if data:
        events.append(SSEEvent(name, "\n".join(data)))
    return events


def chunked(data: bytes) -> bytes:
    """One chunk of HTTP/1.1 chunked transfer coding (empty data is not allowed: it ends)."""
    return f"{len(data):X}\r\n".encode() + data + b"\r\n"


CHUNKED_END = b"0\r\n\r\n"


def peer_closed(sock: socket.socket, timeout: float = 0.0) -> bool | None:
    """Whether the peer closed its end, waiting up to `timeout` for news: True closed (EOF or
    reset), False still open and silent, None it sent bytes we have not read (cannot tell)."""
    try:
        readable, _, _ = select.select([sock], [], [], timeout)
        if not readable:
            return False
        return True if sock.recv(1, socket.MSG_PEEK) == b"" else None
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):
        return True


def gzip_bytes(data: bytes) -> bytes:
    return _gzip.compress(data, mtime=0)


@functools.lru_cache(maxsize=8)
def gzip_bomb(
    inflated_size: int, *, fill: bytes = b" ", prefix: bytes = b"", suffix: bytes = b""
) -> bytes:
    """A small gzip member that inflates to `prefix + fill * n + suffix`, `inflated_size`
    bytes in all (the defaults make a valid JSON body when prefix/suffix make one: JSON allows
    any amount of whitespace). 1 GiB costs about 1 MiB compressed and well under a second to
    build: one full-flushed deflate block of 1 MiB is repeated instead of compressed again."""
    block_size = 1 << 20
    fill_size = inflated_size - len(prefix) - len(suffix)
    if fill_size < 0 or not fill:
        raise ValueError("inflated_size must hold the prefix and suffix")
    block = (fill * (block_size // len(fill) + 1))[:block_size]
    blocks, rest = divmod(fill_size, block_size)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)]
    one = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = one.compress(block) + one.flush(zlib.Z_FULL_FLUSH)  # history-free: repeatable
    out.append(repeated * blocks)
    out.append(compressor.compress(block[:rest] + suffix) + compressor.flush(zlib.Z_FINISH))
    crc = zlib.crc32(prefix)
    for _ in range(blocks):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(block[:rest] + suffix, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + (inflated_size & 0xFFFFFFFF).to_bytes(4, "little")
    return header + b"".join(out) + trailer


# --- serving an answer on an http.server handler ------------------------------------------------
FAIL_MODES = ("drop", "reset", "error", "hang")
POLL_SECONDS = 0.02  # between looks at the client's socket while waiting


class ClientGone(Exception):
    """The client closed the connection before the answer was complete."""


@dataclass
class Exchange:
    """How one request went on the wire, filled in while it runs. Times are time.monotonic().

    closed_at is set when the stand-in saw the client close the connection before the answer
    was complete: a write failed, or its socket reached EOF (or was reset) while the stand-in
    was waiting (a delay, a slow chunk, a hang), which it looks at every POLL_SECONDS."""

    started_at: float = field(default_factory=time.monotonic)
    streamed: bool = False
    status: int | None = None
    frames_sent: int = 0
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    finished_at: float | None = None  # the whole answer (every frame of a stream) was sent
    failed_at: float | None = None  # the stand-in broke the exchange on purpose
    closed_at: float | None = None  # the client left before the end
    _closed: threading.Event = field(default_factory=threading.Event, repr=False)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def client_closed(self) -> bool:
        return self.closed_at is not None

    def wait_closed(self, timeout: float = 2.0) -> float | None:
        """Wait until the stand-in sees the client close; its time.monotonic(), or None."""
        self._closed.wait(timeout)
        return self.closed_at

    def wait_ended(self, timeout: float = 5.0) -> bool:
        """Wait until the stand-in is done with this request (answered, failed or left)."""
        return self._ended.wait(timeout)

    def end(self) -> None:
        self._ended.set()


def read_body(handler: Any) -> bytes:
    """The request body of an http.server handler (Content-Length or chunked)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        data = b""
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            data += handler.rfile.read(size)
            handler.rfile.readline()
        handler.rfile.readline()
        return data
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class Connection:
    """One request's connection on an http.server BaseHTTPRequestHandler (HTTP/1.1): waits
    that notice the client leaving, frame writes (chunked, optionally gzip-encoded), and the
    deliberate breaks. Raises ClientGone as soon as the client is seen gone."""

    def __init__(self, handler: Any, exchange: Exchange, release: threading.Event | None = None):
        self.handler = handler
        self.sock: socket.socket = handler.connection
        self.exchange = exchange
        self.release = release or threading.Event()
        self._gzip: Any = None
        self._chunked = False

    def mark_closed(self) -> None:
        ex = self.exchange
        if ex.closed_at is None and ex.finished_at is None:
            ex.closed_at = time.monotonic()
            ex._closed.set()
        self.handler.close_connection = True

    def gone(self, timeout: float = 0.0) -> bool:
        if self.exchange.closed_at is not None:
            return True
        state = peer_closed(self.sock, timeout)
        if state is True:
            self.mark_closed()
            return True
        if state is None and timeout:  # unread bytes from the client: cannot tell, just wait
            time.sleep(timeout)
        return False

    def wait(self, seconds: float, keepalive: bytes | None = None, interval: float = 0.0) -> None:
        """Wait `seconds` (less if `release` is set), sending `keepalive` every `interval`
        seconds when given; raise ClientGone if the client leaves meanwhile."""
        now = time.monotonic()
        deadline = now + seconds
        next_keepalive = now + interval if keepalive and interval > 0 else float("inf")
        while not self.release.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            if now >= next_keepalive:
                self.write(keepalive or b"", frame=False)
                next_keepalive += interval
            if self.gone(min(deadline, next_keepalive, now + POLL_SECONDS) - now):
                raise ClientGone

    def write(self, data: bytes, *, frame: bool = True) -> None:
        if self.gone():
            raise ClientGone
        if self._gzip is not None:
            data = self._gzip.compress(data) + self._gzip.flush(zlib.Z_SYNC_FLUSH)
        try:
            self.handler.wfile.write(chunked(data) if self._chunked and data else data)
            self.handler.wfile.flush()
        except (OSError, ValueError):
            self.mark_closed()
            raise ClientGone from None
        if frame:
            ex = self.exchange
            ex.frames_sent += 1
            ex.last_frame_at = time.monotonic()
            ex.first_frame_at = ex.first_frame_at or ex.last_frame_at

    def head(self, status: int, headers: Mapping[str, str]) -> None:
        self.exchange.status = status
        try:
            self.handler.send_response(status)
            for key, value in headers.items():
                self.handler.send_header(key, value)
            self.handler.end_headers()
        except (OSError, ValueError):
            self.mark_closed()
            raise ClientGone from None

    def send(self, status: int, data: bytes, headers: Mapping[str, str], gzip: bool = False):
        """A whole body with Content-Length (gzip-encoded when asked)."""
        headers = dict(headers)
        if gzip:
            data = gzip_bytes(data)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Length"] = str(len(data))
        self.head(status, headers)
        self.write(data, frame=False)
        self.exchange.finished_at = time.monotonic()

    def start_stream(self, status: int, headers: Mapping[str, str], gzip: bool = False) -> None:
        headers = dict(headers)
        if gzip:
            headers["Content-Encoding"] = "gzip"
            self._gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
        headers["Transfer-Encoding"] = "chunked"
        headers.setdefault("Cache-Control", "no-cache")
        self.exchange.streamed = True
        self.head(status, headers)
        self._chunked = True

    def end_stream(self) -> None:
        if self._gzip is not None:
            tail, self._gzip = self._gzip.flush(zlib.Z_FINISH), None
            self.write(tail, frame=False)
        self._chunked = False
        self.write(CHUNKED_END, frame=False)
        self.exchange.finished_at = self.exchange.finished_at or time.monotonic()

    def drop(self) -> None:
        """Close the connection (FIN) without ending the body."""
        self.exchange.failed_at = time.monotonic()
        self.handler.close_connection = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def reset(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0)."""
        self.exchange.failed_at = time.monotonic()
        self.handler.close_connection = True
        with contextlib.suppress(OSError, ValueError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.handler.rfile.close()
            self.handler.wfile.close()
            self.sock.close()  # the last reference: the socket closes now, with a reset

    def hang(self, seconds: float = 3600.0) -> None:
        """Send nothing more until the client leaves (or `release`)."""
        self.exchange.failed_at = time.monotonic()
        self.handler.close_connection = True
        self.wait(seconds)


def keepalive_frame(fmt: str) -> bytes:
    """What a provider sends while it has nothing to say: Anthropic a `ping` event, the others
    (DeepSeek documents it) an SSE comment."""
    return sse_frame({"type": "ping"}, "ping") if fmt == ANTHROPIC else sse_comment("keep-alive")


def serve_stream(
    conn: Connection,
    frames: Sequence[bytes],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    gzip: bool = False,
    first_chunk_delay: float = 0.0,
    chunk_delay: float = 0.0,
    keepalive: bytes | None = None,
    keepalive_interval: float = 0.0,
    fail_after: int | None = None,
    fail_mode: str = "drop",
    error_frame: bytes | None = None,
) -> None:
    """Send `frames` as a chunked body, one chunk each: `first_chunk_delay` before the first,
    `chunk_delay` before each other. With `fail_after`, stop after that many frames (all of
    them when fewer) and fail by `fail_mode`: drop (FIN, body unfinished), reset (TCP reset),
    error (send `error_frame`, then end the body properly), hang (until the client leaves).
    Raises ClientGone when the client leaves first."""
    if fail_mode not in FAIL_MODES:
        raise ValueError(f"fail_mode must be one of {FAIL_MODES}")
    conn.start_stream(status, headers or {}, gzip)
    for i, frame in enumerate(frames):
        if fail_after is not None and i >= fail_after:
            break
        conn.wait(first_chunk_delay if i == 0 else chunk_delay, keepalive, keepalive_interval)
        conn.write(frame)
    else:
        if fail_after is None:
            # Every frame is out: a client that stops reading now (openai-python closes at
            # [DONE], before the chunked body's end) has not left early.
            conn.exchange.finished_at = time.monotonic()
            conn.end_stream()
            return
    if fail_mode == "error":
        conn.wait(chunk_delay, keepalive, keepalive_interval)
        conn.write(error_frame or b"")
        conn.exchange.failed_at = time.monotonic()
        conn.end_stream()
    elif fail_mode == "reset":
        conn.reset()
    elif fail_mode == "hang":
        conn.hang()
    else:
        conn.drop()
