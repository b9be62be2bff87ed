"""OpenAI's chat completions wire format, spoken by OpenAI, xAI and DeepSeek (each with its own
dialect; docs/provider-wire-formats.md §2).

Requests go out as the client sent them, parameter by parameter, except what a dialect lacks
(refused by name) or names differently:

- `developer` messages are `system` for xAI and DeepSeek; `max_completion_tokens` goes to OpenAI
  as such, to the others as `max_tokens`.
- DeepSeek takes no images, `seed`, `user`, `parallel_tool_calls` or `json_schema` output
  (only `json_object`); xAI no `reasoning_effort`; only OpenAI takes `reasoning_effort`.
- Streams always ask for the usage (`stream_options.include_usage`), whether or not the client
  did: the metrics and the budget count it.

Answers: xAI's `completion_tokens` leave out the reasoning tokens (added back here); DeepSeek's
cache hits are `prompt_cache_hit_tokens`; `function_call` is `tool_calls`; DeepSeek's
`insufficient_system_resource` is not a finish reason but a provider failure (503).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Final

from techno_os_api.llm.completion import (
    CONTENT_FILTER,
    LENGTH,
    STOP,
    THINKING,
    TOOL_CALLS,
    Completion,
    Delta,
    ToolCall,
    ToolCallFragment,
)
from techno_os_api.llm.providers.base import (
    HTTPProvider,
    Refused,
    as_list,
    as_object,
    check_parameters,
    count,
    optional_count,
    parse_json,
    text_or_none,
    unknown_finish,
)
from techno_os_api.llm.schemas import ChatCompletionRequest, ChatMessage, ImagePart
from techno_os_api.llm.transport import (
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderResponseError,
)
from techno_os_api.llm.usage import Usage

_COMMON: Final = frozenset(
    {
        "temperature",
        "top_p",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tools",
        "tool_choice",
    }
)
HANDLED: Final = {
    "openai": _COMMON | {"seed", "user", "parallel_tool_calls", "reasoning_effort"},
    "xai": _COMMON | {"seed", "user", "parallel_tool_calls"},
    "deepseek": _COMMON,
}
_FINISH: Final = {
    "stop": STOP,
    "length": LENGTH,
    "tool_calls": TOOL_CALLS,
    "function_call": TOOL_CALLS,
    "content_filter": CONTENT_FILTER,
}
# DeepSeek: "the request is interrupted due to insufficient resource of the inference system".
_CAPACITY_FAILURE: Final = "insufficient_system_resource"
# OpenAI error types/codes inside a stream, by the HTTP status they stand for.
_STREAM_ERROR_STATUS: Final = {
    "invalid_request_error": 400,
    "rate_limit_exceeded": 429,
    "requests": 429,
    "tokens": 429,
    "insufficient_quota": 429,
    "server_error": 500,
}


@dataclass(frozen=True)
class OpenAICall:
    payload: dict[str, Any]


class OpenAICompatibleProvider(HTTPProvider):
    """OpenAI's chat completions wire format (OpenAI, xAI, DeepSeek)."""

    # --- the request -----------------------------------------------------------------------
    def prepare(
        self, request: ChatCompletionRequest, model: str, max_tokens: int | None
    ) -> OpenAICall:
        check_parameters(self.name, request, HANDLED[self.name])
        payload: dict[str, Any] = {
            "model": model,
            "messages": [self._message(i, m) for i, m in enumerate(request.messages)],
        }
        if max_tokens is not None:
            wants_new_name = request.max_tokens is None and request.max_completion_tokens
            key = (
                "max_completion_tokens"
                if self.name == "openai" and wants_new_name
                else "max_tokens"
            )
            payload[key] = max_tokens
        for name in (
            "temperature",
            "top_p",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "user",
            "parallel_tool_calls",
            "reasoning_effort",
        ):
            value = getattr(request, name)
            if value is not None:
                payload[name] = value
        if request.response_format is not None:
            if self.name == "deepseek" and request.response_format.type == "json_schema":
                raise Refused(
                    self.name,
                    "response_format",
                    "JSON schema output is not offered; use {'type': 'json_object'} and "
                    "describe the schema in the prompt",
                )
            payload["response_format"] = request.response_format.model_dump(
                by_alias=True, exclude_none=True
            )
        if request.tools is not None:
            payload["tools"] = [tool.model_dump(exclude_none=True) for tool in request.tools]
        if request.tool_choice is not None:
            choice = request.tool_choice
            payload["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
        return OpenAICall(payload)

    def _message(self, index: int, message: ChatMessage) -> dict[str, Any]:
        role = message.role
        if role == "developer" and self.name != "openai":
            role = "system"  # OpenAI's newer name; the compatible APIs know "system"
        out: dict[str, Any] = {"role": role}
        content = message.content
        if isinstance(content, list):
            if self.name == "deepseek" and any(isinstance(p, ImagePart) for p in content):
                raise Refused(self.name, f"messages[{index}].content", "images are not accepted")
            out["content"] = [part.model_dump(exclude_none=True) for part in content]
        else:
            out["content"] = content
        if message.name is not None:
            out["name"] = message.name
        if message.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        if message.tool_call_id is not None:
            out["tool_call_id"] = message.tool_call_id
        if message.refusal is not None:
            if self.name == "openai":
                out["refusal"] = message.refusal
            elif not content:
                out["content"] = message.refusal  # an earlier refusal, as what was said
        return out

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key()}"}

    # --- a whole answer ----------------------------------------------------------------------
    async def complete(self, prepared: OpenAICall) -> Completion:
        body = await self._transport.post_json(
            self.name, f"{self._base_url}/chat/completions", prepared.payload, self._headers()
        )
        return self._completion(body)

    def _completion(self, body: dict[str, Any]) -> Completion:
        name = self.name
        choices = as_list(name, body.get("choices"), "choices")
        if not choices:
            raise ProviderResponseError(name, "the answer has no choices")
        choice = as_object(name, choices[0], "choices[0]")
        message = as_object(name, choice.get("message"), "message")
        native = choice.get("finish_reason")
        calls = tuple(
            self._tool_call(i, call)
            for i, call in enumerate(as_list(name, message.get("tool_calls"), "tool_calls"))
        )
        return Completion(
            content=text_or_none(name, message.get("content"), "message.content"),
            refusal=text_or_none(name, message.get("refusal"), "message.refusal"),
            tool_calls=calls,
            finish_reason=self._finish(native),
            usage=self._usage(body.get("usage")),
            native_finish_reason=native if isinstance(native, str) else None,
        )

    def _tool_call(self, index: int, value: Any) -> ToolCall:
        call = as_object(self.name, value, f"tool_calls[{index}]")
        function = as_object(self.name, call.get("function"), f"tool_calls[{index}].function")
        return ToolCall(
            id=text_or_none(self.name, call.get("id"), "tool call id") or f"call_{index}",
            name=text_or_none(self.name, function.get("name"), "tool call name") or "",
            arguments=text_or_none(self.name, function.get("arguments"), "arguments") or "",
        )

    def _finish(self, native: Any) -> str:
        if native == _CAPACITY_FAILURE:
            raise ProviderHTTPError(
                self.name, 503, "the answer was interrupted: insufficient system resource"
            )
        mapped = _FINISH.get(native) if isinstance(native, str) else None
        return mapped or unknown_finish(self.name, native)

    def _usage(self, value: Any) -> Usage:
        name = self.name
        if value is None:
            return Usage()
        usage = as_object(name, value, "usage")
        prompt = count(name, usage.get("prompt_tokens"))
        completion = count(name, usage.get("completion_tokens"))
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        cached = cache_write = reasoning = None
        if isinstance(prompt_details, dict):
            cached = optional_count(name, prompt_details.get("cached_tokens"))
            cache_write = optional_count(name, prompt_details.get("cache_write_tokens"))
        if "prompt_cache_hit_tokens" in usage:  # DeepSeek
            cached = count(name, usage.get("prompt_cache_hit_tokens"))
        if isinstance(completion_details, dict):
            reasoning = optional_count(name, completion_details.get("reasoning_tokens"))
        if name == "xai" and reasoning:
            completion += reasoning  # xAI counts reasoning apart from completion_tokens
        return Usage(prompt, completion, cached, cache_write, reasoning)

    # --- a stream ----------------------------------------------------------------------------
    async def stream(self, prepared: OpenAICall) -> AsyncGenerator[Delta, None]:
        payload = {**prepared.payload, "stream": True, "stream_options": {"include_usage": True}}
        upstream = await self._open_stream(
            f"{self._base_url}/chat/completions", payload, self._headers()
        )
        complete = False
        calls: dict[int, int] = {}  # the provider's tool call index -> ours
        try:
            async for event in upstream.events(self._max_event_bytes):
                if event.data == "[DONE]":
                    complete = True
                    return
                chunk = as_object(self.name, parse_json(self.name, event.data), "chunk")
                if "error" in chunk:
                    raise self._stream_error(chunk)
                delta = self._delta(chunk, calls)
                if delta is not None:
                    yield delta
            raise ProviderConnectionError(self.name, "the stream ended before [DONE]")
        finally:
            self._transport.finish(upstream, complete=complete)

    def _delta(self, chunk: dict[str, Any], calls: dict[int, int]) -> Delta | None:
        name = self.name
        usage = self._usage(chunk["usage"]) if chunk.get("usage") is not None else None
        choices = as_list(name, chunk.get("choices"), "choices")
        if not choices:
            return Delta(usage=usage) if usage is not None else None
        choice = as_object(name, choices[0], "choices[0]")
        delta = as_object(name, choice.get("delta") or {}, "delta")
        content = text_or_none(name, delta.get("content"), "delta.content") or None
        refusal = text_or_none(name, delta.get("refusal"), "delta.refusal") or None
        fragments = []
        for value in as_list(name, delta.get("tool_calls"), "delta.tool_calls"):
            piece = as_object(name, value, "delta.tool_calls[]")
            function = as_object(name, piece.get("function") or {}, "tool call function")
            native_index = piece.get("index", 0)
            index = calls.setdefault(native_index, len(calls))
            fragments.append(
                ToolCallFragment(
                    index=index,
                    id=text_or_none(name, piece.get("id"), "tool call id"),
                    name=text_or_none(name, function.get("name"), "tool call name"),
                    arguments=text_or_none(name, function.get("arguments"), "arguments") or "",
                )
            )
        native = choice.get("finish_reason")
        finish = self._finish(native) if native is not None else None
        if not (content or refusal or fragments or finish or usage):
            # xAI/DeepSeek reasoning: alive, not shown; the role chunk, an empty delta: nothing
            return THINKING if delta.get("reasoning_content") else None
        return Delta(content, refusal, tuple(fragments), finish, usage)

    def _stream_error(self, chunk: dict[str, Any]) -> ProviderHTTPError:
        error = chunk.get("error")
        status = 500
        if isinstance(error, dict):
            code = error.get("code")
            if isinstance(code, int) and 400 <= code < 600:
                status = code
            else:
                for key in (code, error.get("type")):
                    if isinstance(key, str) and key in _STREAM_ERROR_STATUS:
                        status = _STREAM_ERROR_STATUS[key]
                        break
        return self._transport.stream_error(self.name, status, chunk)
