"""Anthropic's Messages API (docs/provider-wire-formats.md §3), `x-api-key` and
`anthropic-version`.

Request mapping from OpenAI's:

- system/developer messages -> `system` (one string message stays a string; otherwise one text
  block per part); text parts stay separate blocks; `image_url` -> an image block (a `data:` URL
  of jpeg/png/gif/webp as base64, an https URL as a url source); `detail` other than auto and
  message `name` are refused (no equivalent).
- assistant `tool_calls` -> `tool_use` blocks (arguments parsed: not a JSON object is a 400);
  `tool` messages -> `tool_result` blocks of one user turn.
- `max_tokens` is required: the client's, else LLM_DEFAULT_MAX_TOKENS. `temperature` 0-1 (above
  is refused, not clamped: it would change the answer's character), `top_p`, `stop` ->
  `stop_sequences`, `user` -> `metadata.user_id`, `tools` (parameters -> input_schema),
  `tool_choice` none/auto/required/named -> none/auto/any/tool, `parallel_tool_calls: false` ->
  `disable_parallel_tool_use`, `response_format` json_schema -> `output_config.format`.
  Refused: `json_object` (Anthropic has no schema-less JSON mode), `seed`, the penalties,
  `reasoning_effort`, `n` > 1.

Answer: `input_tokens` excludes the cache, so prompt tokens are input + cache writes + cache
reads; stop reasons by meaning (refusal -> content_filter, its explanation as `refusal`).
"""

from __future__ import annotations

import json
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
    SYSTEM_ROLES,
    HTTPProvider,
    Refused,
    arguments_object,
    as_list,
    as_object,
    check_parameters,
    count,
    inline_image,
    optional_count,
    parse_json,
    text_or_none,
    unknown_finish,
)
from techno_os_api.llm.schemas import ChatCompletionRequest, ChatMessage, ImagePart, TextPart
from techno_os_api.llm.transport import ProviderConnectionError, Transport
from techno_os_api.llm.usage import Usage

HANDLED: Final = frozenset(
    {"temperature", "top_p", "stop", "user", "response_format", "tools", "tool_choice"}
    | {"parallel_tool_calls"}
)
# Every value of anthropic-sdk-python's StopReason.
STOP_REASONS: Final = {
    "end_turn": STOP,
    "stop_sequence": STOP,
    "pause_turn": STOP,  # only server tools pause; the gateway offers none
    "max_tokens": LENGTH,
    "model_context_window_exceeded": LENGTH,
    "tool_use": TOOL_CALLS,
    "refusal": CONTENT_FILTER,
}
_IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Anthropic's error types, by the HTTP status they stand for (an `error` event in a stream).
_ERROR_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


@dataclass(frozen=True)
class AnthropicCall:
    payload: dict[str, Any]


class AnthropicProvider(HTTPProvider):
    def __init__(
        self,
        name: str,
        transport: Transport,
        base_url: str,
        api_key: str | None,
        version: str,
        default_max_tokens: int,
    ) -> None:
        super().__init__(name, transport, base_url, api_key)
        self._version = version
        self._default_max_tokens = default_max_tokens

    # --- the request -------------------------------------------------------------------------
    def prepare(
        self, request: ChatCompletionRequest, model: str, max_tokens: int | None
    ) -> AnthropicCall:
        check_parameters(self.name, request, HANDLED)
        system, messages = self._conversation(request.messages)
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens or self._default_max_tokens,
            "messages": messages,
        }
        if system:
            payload["system"] = system
        if request.temperature is not None:
            if request.temperature > 1:
                raise Refused(self.name, "temperature", "must be between 0 and 1 here")
            payload["temperature"] = request.temperature
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if request.stop is not None:
            payload["stop_sequences"] = request.stop_sequences
        if request.user is not None:
            payload["metadata"] = {"user_id": request.user}
        if request.tools is not None:
            payload["tools"] = [self._tool(tool.function) for tool in request.tools]
        choice = self._tool_choice(request)
        if choice is not None:
            payload["tool_choice"] = choice
        if request.response_format is not None and request.response_format.type != "text":
            schema = request.response_format.json_schema
            if schema is None:
                raise Refused(
                    self.name,
                    "response_format",
                    "there is no schema-less JSON mode; send a json_schema",
                )
            payload["output_config"] = {
                "format": {"type": "json_schema", "schema": schema.json_schema or {}}
            }
        return AnthropicCall(payload)

    def _conversation(
        self, messages: list[ChatMessage]
    ) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
        system_messages = [m for m in messages if m.role in SYSTEM_ROLES]
        system: str | list[dict[str, Any]] = ""
        if len(system_messages) == 1 and isinstance(system_messages[0].content, str):
            system = system_messages[0].content
        elif system_messages:
            system = [
                {"type": "text", "text": part.text}
                for m in system_messages
                for part in m.parts()
                if isinstance(part, TextPart)
            ]
        turns: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if message.name is not None:
                raise Refused(self.name, f"{where}.name", "message names are not supported")
            if message.role in SYSTEM_ROLES:
                continue
            if message.role == "tool":
                block = {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": self._blocks(where, message)
                    if isinstance(message.content, list)
                    else message.text(),
                }
                previous = turns[-1] if turns else None
                if previous and previous["role"] == "user" and previous.get("tool_results"):
                    previous["content"].append(block)
                else:
                    turns.append({"role": "user", "content": [block], "tool_results": True})
                continue
            if message.role == "assistant":
                blocks = self._blocks(where, message)
                if message.refusal is not None and not blocks:
                    blocks = [{"type": "text", "text": message.refusal}]
                for j, call in enumerate(message.tool_calls or ()):
                    blocks.append(
                        {
                            "type": "tool_use",
                            "id": call.id,
                            "name": call.function.name,
                            "input": arguments_object(
                                self.name, f"{where}.tool_calls[{j}].function.arguments", call
                            ),
                        }
                    )
                turns.append({"role": "assistant", "content": blocks})
                continue
            content: Any = message.content
            if isinstance(content, list):
                content = self._blocks(where, message)
            turns.append({"role": "user", "content": content})
        for turn in turns:
            turn.pop("tool_results", None)
        return system, turns

    def _blocks(self, where: str, message: ChatMessage) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        for j, part in enumerate(message.parts()):
            if isinstance(part, TextPart):
                if part.text or message.role != "assistant":
                    blocks.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                blocks.append(self._image(f"{where}.content[{j}]", part))
        return blocks

    def _image(self, param: str, part: ImagePart) -> dict[str, Any]:
        if part.image_url.detail not in (None, "auto"):
            raise Refused(self.name, f"{param}.image_url.detail", "only 'auto' is supported")
        url = part.image_url.url
        inline = inline_image(self.name, f"{param}.image_url.url", url)
        if inline is not None:
            if inline.media_type not in _IMAGE_TYPES:
                raise Refused(
                    self.name,
                    f"{param}.image_url.url",
                    f"images must be JPEG, PNG, GIF or WebP, not {inline.media_type}",
                )
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": inline.media_type, "data": inline.data},
            }
        if not url.startswith("https://"):
            raise Refused(self.name, f"{param}.image_url.url", "an https:// or data: URL")
        return {"type": "image", "source": {"type": "url", "url": url}}

    @staticmethod
    def _tool(function: Any) -> dict[str, Any]:
        tool: dict[str, Any] = {
            "name": function.name,
            "input_schema": function.parameters or {"type": "object", "properties": {}},
        }
        if function.description is not None:
            tool["description"] = function.description
        if function.strict is not None:
            tool["strict"] = function.strict
        return tool

    @staticmethod
    def _tool_choice(request: ChatCompletionRequest) -> dict[str, Any] | None:
        choice = request.tool_choice
        parallel_off = request.parallel_tool_calls is False
        if choice is None and not parallel_off:
            return None
        if choice == "none":
            return {"type": "none"}
        if choice is None or choice == "auto":
            out: dict[str, Any] = {"type": "auto"}
        elif choice == "required":
            out = {"type": "any"}
        else:
            assert not isinstance(choice, str)
            out = {"type": "tool", "name": choice.function.name}
        if parallel_off:
            out["disable_parallel_tool_use"] = True
        return out

    def _auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self._key(), "anthropic-version": self._version}

    # --- a whole answer ------------------------------------------------------------------------
    async def complete(self, prepared: AnthropicCall) -> Completion:
        body = await self._transport.post_json(
            self.name, f"{self._base_url}/v1/messages", prepared.payload, self._headers()
        )
        name = self.name
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in as_list(name, body.get("content"), "content"):
            block = as_object(name, block, "content block")
            if block.get("type") == "text":
                texts.append(text_or_none(name, block.get("text"), "text") or "")
            elif block.get("type") == "tool_use":
                calls.append(
                    ToolCall(
                        id=text_or_none(name, block.get("id"), "tool_use id") or "",
                        name=text_or_none(name, block.get("name"), "tool_use name") or "",
                        arguments=json.dumps(block.get("input") or {}, ensure_ascii=False),
                    )
                )
        native = body.get("stop_reason")
        finish = self._finish(native)
        refusal = self._refusal(body.get("stop_details")) if native == "refusal" else None
        usage = self._usage(as_object(name, body.get("usage"), "usage"))
        return Completion(
            content="".join(texts) if texts or not calls else None,
            finish_reason=finish,
            usage=usage,
            refusal=refusal,
            tool_calls=tuple(calls),
            native_finish_reason=native if isinstance(native, str) else None,
        )

    def _finish(self, native: Any) -> str:
        mapped = STOP_REASONS.get(native) if isinstance(native, str) else None
        return mapped or unknown_finish(self.name, native)

    def _refusal(self, details: Any) -> str | None:
        if isinstance(details, dict):
            return text_or_none(self.name, details.get("explanation"), "stop_details")
        return None

    def _usage(self, usage: dict[str, Any]) -> Usage:
        name = self.name
        written = count(name, usage.get("cache_creation_input_tokens"))
        read = count(name, usage.get("cache_read_input_tokens"))
        details = usage.get("output_tokens_details")
        thinking = None
        if isinstance(details, dict):
            thinking = optional_count(name, details.get("thinking_tokens"))
        return Usage(
            prompt_tokens=count(name, usage.get("input_tokens")) + written + read,
            completion_tokens=count(name, usage.get("output_tokens")),
            cached_tokens=read,
            cache_write_tokens=written,
            reasoning_tokens=thinking,
        )

    # --- a stream ------------------------------------------------------------------------------
    async def stream(self, prepared: AnthropicCall) -> AsyncGenerator[Delta, None]:
        name = self.name
        upstream = await self._open_stream(
            f"{self._base_url}/v1/messages", {**prepared.payload, "stream": True}, self._headers()
        )
        complete = False
        usage: dict[str, Any] = {}
        tool_index: dict[int, int] = {}  # content block index -> our tool call index
        native: Any = None
        refusal: str | None = None
        try:
            async for event in upstream.events(self._max_event_bytes):
                data = as_object(name, parse_json(name, event.data), "event")
                kind = data.get("type", event.event)
                if kind == "content_block_delta":
                    delta = as_object(name, data.get("delta"), "delta")
                    if delta.get("type") == "text_delta":
                        text = text_or_none(name, delta.get("text"), "text_delta")
                        if text:
                            yield Delta(content=text)
                    elif delta.get("type") == "input_json_delta":
                        piece = text_or_none(name, delta.get("partial_json"), "input_json")
                        index = tool_index.get(data.get("index", -1))
                        if piece and index is not None:
                            yield Delta(tool_calls=(ToolCallFragment(index, piece),))
                    elif delta.get("type") in ("thinking_delta", "signature_delta"):
                        yield THINKING
                elif kind == "content_block_start":
                    block = as_object(name, data.get("content_block"), "content_block")
                    if block.get("type") == "tool_use":
                        index = tool_index[data.get("index", -1)] = len(tool_index)
                        fragment = ToolCallFragment(
                            index,
                            "",
                            id=text_or_none(name, block.get("id"), "tool_use id"),
                            name=text_or_none(name, block.get("name"), "tool_use name"),
                        )
                        yield Delta(tool_calls=(fragment,))
                elif kind == "message_start":
                    message = as_object(name, data.get("message"), "message")
                    usage.update(as_object(name, message.get("usage") or {}, "usage"))
                elif kind == "message_delta":
                    delta = as_object(name, data.get("delta") or {}, "delta")
                    native = delta.get("stop_reason", native)
                    if native == "refusal":
                        refusal = self._refusal(delta.get("stop_details"))
                    # Cumulative counts: each field from the last event that has it.
                    usage.update(as_object(name, data.get("usage") or {}, "usage"))
                elif kind == "message_stop":
                    if refusal:
                        yield Delta(refusal=refusal)
                    yield Delta(finish_reason=self._finish(native), usage=self._usage(usage))
                    complete = True
                    return
                elif kind == "error":
                    error = data.get("error")
                    error_type = error.get("type") if isinstance(error, dict) else None
                    status = _ERROR_STATUS.get(str(error_type), 500)
                    raise self._transport.stream_error(name, status, data)
                # ping, content_block_stop, thinking and unknown events: nothing to say
            raise ProviderConnectionError(name, "the stream ended before message_stop")
        finally:
            self._transport.finish(upstream, complete=complete)
