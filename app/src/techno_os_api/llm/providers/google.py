"""Gemini `generateContent` / `streamGenerateContent?alt=sse` (docs/provider-wire-formats.md §4).
The key travels in the `x-goog-api-key` header, never in the URL, so it cannot end up in an
access or client log.

Request mapping from OpenAI's:

- system/developer messages -> `systemInstruction` parts; user/assistant -> `user`/`model`
  turns, each text part a part; `image_url` with a `data:` URL -> `inlineData` (an https URL is
  refused: the Gemini API takes no general URLs); assistant `tool_calls` -> `functionCall` parts
  (arguments parsed); `tool` messages -> `functionResponse` parts of one user turn, the function
  name found from the earlier call's id (`{"output": <content>}`).
- `generationConfig`: `maxOutputTokens`, `temperature`, `topP`, `stopSequences`, `seed`,
  `presencePenalty`, `frequencyPenalty`; `response_format` json_object -> `responseMimeType:
  application/json`, json_schema -> plus `responseJsonSchema`.
- `tools` -> `functionDeclarations` (`parametersJsonSchema`); `tool_choice` none/auto/required/
  named -> NONE/AUTO/ANY/ANY + allowedFunctionNames; strict tools with auto -> VALIDATED.
- Refused: `user`, message `name`, `parallel_tool_calls: false` (no switch), `detail` other than
  auto, `reasoning_effort`, `n` > 1.

Answer: a blocked prompt (no candidates, `promptFeedback.blockReason`) is an empty answer with
`content_filter`; STOP with function calls is `tool_calls`; the model-failure reasons
(MALFORMED_FUNCTION_CALL, ...) are a `ModelFailure` when nothing usable came, else `stop`.
Usage: completion tokens add `thoughtsTokenCount`; the stream's last `usageMetadata` counts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

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
    ModelFailure,
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
from techno_os_api.llm.transport import ProviderConnectionError
from techno_os_api.llm.usage import Usage

HANDLED: Final = frozenset(
    {"temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"}
    | {"response_format", "tools", "tool_choice", "parallel_tool_calls"}
)
# Every value of google-genai's FinishReason; None: the model failed (see the docstring).
FINISH_REASONS: Final[dict[str, str | None]] = {
    "FINISH_REASON_UNSPECIFIED": STOP,
    "STOP": STOP,
    "OTHER": STOP,
    "NO_IMAGE": STOP,
    "IMAGE_OTHER": STOP,
    "MAX_TOKENS": LENGTH,
    "CONTINUATION": LENGTH,
    "SAFETY": CONTENT_FILTER,
    "RECITATION": CONTENT_FILTER,
    "LANGUAGE": CONTENT_FILTER,
    "BLOCKLIST": CONTENT_FILTER,
    "PROHIBITED_CONTENT": CONTENT_FILTER,
    "SPII": CONTENT_FILTER,
    "IMAGE_SAFETY": CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": CONTENT_FILTER,
    "IMAGE_RECITATION": CONTENT_FILTER,
    "ESCALATION": CONTENT_FILTER,
    "PUP_LIMITED_DISABLED": CONTENT_FILTER,
    "MODEL_ARMOR": CONTENT_FILTER,
    "MALFORMED_FUNCTION_CALL": None,
    "UNEXPECTED_TOOL_CALL": None,
    "TOO_MANY_TOOL_CALLS": None,
    "MISSING_THOUGHT_SIGNATURE": None,
    "MALFORMED_RESPONSE": None,
}


@dataclass(frozen=True)
class GeminiCall:
    model: str
    payload: dict[str, Any]


def _call_id() -> str:
    # Gemini's calls carry no id: made up here, unique, so a later tool message maps back.
    return f"call_{uuid.uuid4().hex[:24]}"


class GoogleProvider(HTTPProvider):
    # --- the request -------------------------------------------------------------------------
    def prepare(
        self, request: ChatCompletionRequest, model: str, max_tokens: int | None
    ) -> GeminiCall:
        check_parameters(self.name, request, HANDLED)
        if request.parallel_tool_calls is False:
            raise Refused(self.name, "parallel_tool_calls", "cannot be switched off here")
        payload: dict[str, Any] = {"contents": self._contents(request.messages)}
        system = [
            {"text": part.text}
            for m in request.messages
            if m.role in SYSTEM_ROLES
            for part in m.parts()
            if isinstance(part, TextPart)
        ]
        if system:
            payload["systemInstruction"] = {"parts": system}
        config: dict[str, Any] = {}
        for name, key in (
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("seed", "seed"),
            ("presence_penalty", "presencePenalty"),
            ("frequency_penalty", "frequencyPenalty"),
        ):
            value = getattr(request, name)
            if value is not None:
                config[key] = value
        if max_tokens is not None:
            config["maxOutputTokens"] = max_tokens
        if request.stop is not None:
            config["stopSequences"] = request.stop_sequences
        response_format = request.response_format
        if response_format is not None and response_format.type != "text":
            config["responseMimeType"] = "application/json"
            if response_format.json_schema is not None:
                config["responseJsonSchema"] = response_format.json_schema.json_schema or {}
        if config:
            payload["generationConfig"] = config
        if request.tools:
            declarations = []
            for tool in request.tools:
                declaration: dict[str, Any] = {"name": tool.function.name}
                if tool.function.description is not None:
                    declaration["description"] = tool.function.description
                if tool.function.parameters is not None:
                    declaration["parametersJsonSchema"] = tool.function.parameters
                declarations.append(declaration)
            payload["tools"] = [{"functionDeclarations": declarations}]
        calling = self._calling_config(request)
        if calling is not None:
            payload["toolConfig"] = {"functionCallingConfig": calling}
        return GeminiCall(model.removeprefix("models/"), payload)

    @staticmethod
    def _calling_config(request: ChatCompletionRequest) -> dict[str, Any] | None:
        choice = request.tool_choice
        strict = any(tool.function.strict for tool in request.tools or ())
        if choice == "none":
            return {"mode": "NONE"}
        if choice == "required":
            return {"mode": "ANY"}
        if choice is not None and not isinstance(choice, str):
            return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
        if strict:  # calls checked against their schema, as OpenAI's strict promises
            return {"mode": "VALIDATED"}
        return {"mode": "AUTO"} if choice == "auto" else None

    def _contents(self, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        names: dict[str, str] = {}  # tool call id -> function name, from earlier turns
        contents: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if message.name is not None:
                raise Refused(self.name, f"{where}.name", "message names are not supported")
            if message.role in SYSTEM_ROLES:
                continue
            if message.role == "tool":
                call_id = message.tool_call_id or ""
                if call_id not in names:
                    raise Refused(
                        self.name,
                        f"{where}.tool_call_id",
                        f"{call_id!r} answers no tool call of an earlier assistant message",
                    )
                part = {
                    "functionResponse": {
                        "name": names[call_id],
                        "response": {"output": message.text()},
                    }
                }
                previous = contents[-1] if contents else None
                if (
                    previous
                    and previous["role"] == "user"
                    and "functionResponse" in previous["parts"][0]
                ):
                    previous["parts"].append(part)
                else:
                    contents.append({"role": "user", "parts": [part]})
                continue
            parts = [self._part(f"{where}.content[{j}]", p) for j, p in enumerate(message.parts())]
            if message.role == "assistant":
                parts = [p for p in parts if p.get("text") != ""]
                if message.refusal is not None and not parts:
                    parts = [{"text": message.refusal}]
                for j, call in enumerate(message.tool_calls or ()):
                    names[call.id] = call.function.name
                    args = arguments_object(
                        self.name, f"{where}.tool_calls[{j}].function.arguments", call
                    )
                    parts.append({"functionCall": {"name": call.function.name, "args": args}})
                contents.append({"role": "model", "parts": parts})
            else:
                contents.append({"role": "user", "parts": parts})
        return contents

    def _part(self, param: str, part: TextPart | ImagePart) -> dict[str, Any]:
        if isinstance(part, TextPart):
            return {"text": part.text}
        if part.image_url.detail not in (None, "auto"):
            raise Refused(self.name, f"{param}.image_url.detail", "only 'auto' is supported")
        inline = inline_image(self.name, f"{param}.image_url.url", part.image_url.url)
        if inline is None:
            raise Refused(
                self.name,
                f"{param}.image_url.url",
                "only data: URLs (base64); the Gemini API does not fetch image URLs",
            )
        return {"inlineData": {"mimeType": inline.media_type, "data": inline.data}}

    def _auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._key()}

    def _url(self, call: GeminiCall, method: str) -> str:
        return f"{self._base_url}/v1beta/models/{quote(call.model, safe='')}:{method}"

    # --- a whole answer ------------------------------------------------------------------------
    async def complete(self, prepared: GeminiCall) -> Completion:
        body = await self._transport.post_json(
            self.name, self._url(prepared, "generateContent"), prepared.payload, self._headers()
        )
        name = self.name
        usage = self._usage(body.get("usageMetadata"))
        candidates = as_list(name, body.get("candidates"), "candidates")
        if not candidates:
            return self._blocked(body, usage)
        candidate = as_object(name, candidates[0], "candidates[0]")
        texts, calls = self._parts(candidate)
        native = candidate.get("finishReason")
        finish = self._finish(native, bool(texts or calls), bool(calls))
        return Completion(
            content="".join(texts) if texts or not calls else None,
            finish_reason=finish,
            usage=usage,
            tool_calls=tuple(
                ToolCall(call_id or _call_id(), fn, args) for call_id, fn, args in calls
            ),
            native_finish_reason=native if isinstance(native, str) else None,
        )

    def _blocked(self, body: dict[str, Any], usage: Usage) -> Completion:
        feedback = body.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if reason is None:
            raise ModelFailure(self.name, "no candidates and no block reason")
        return Completion(
            content="",
            finish_reason=CONTENT_FILTER,
            usage=usage,
            native_finish_reason=f"blocked: {reason}",
        )

    def _parts(
        self, candidate: dict[str, Any]
    ) -> tuple[list[str], list[tuple[str | None, str, str]]]:
        name = self.name
        content = as_object(name, candidate.get("content") or {}, "candidate content")
        texts: list[str] = []
        calls: list[tuple[str | None, str, str]] = []
        for part in as_list(name, content.get("parts"), "parts"):
            part = as_object(name, part, "part")
            if "functionCall" in part:
                call = as_object(name, part["functionCall"], "functionCall")
                calls.append(
                    (
                        text_or_none(name, call.get("id"), "functionCall id"),
                        text_or_none(name, call.get("name"), "functionCall name") or "",
                        json.dumps(call.get("args") or {}, ensure_ascii=False),
                    )
                )
            elif "text" in part and not part.get("thought"):
                texts.append(text_or_none(name, part["text"], "text") or "")
        return texts, calls

    @staticmethod
    def _thinks(candidate: dict[str, Any]) -> bool:
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        return isinstance(parts, list) and any(
            isinstance(p, dict) and p.get("thought") for p in parts
        )

    def _finish(self, native: Any, usable: bool, calls: bool) -> str:
        if not isinstance(native, str) or native not in FINISH_REASONS:
            return unknown_finish(self.name, native)
        mapped = FINISH_REASONS[native]
        if mapped is None:
            if not usable:
                raise ModelFailure(self.name, native)
            return STOP
        if mapped == STOP and calls:
            return TOOL_CALLS
        return mapped

    def _usage(self, value: Any) -> Usage:
        name = self.name
        if value is None:
            return Usage()
        usage = as_object(name, value, "usageMetadata")
        thoughts = optional_count(name, usage.get("thoughtsTokenCount"))
        return Usage(
            prompt_tokens=count(name, usage.get("promptTokenCount"))
            + count(name, usage.get("toolUsePromptTokenCount")),
            completion_tokens=count(name, usage.get("candidatesTokenCount")) + (thoughts or 0),
            cached_tokens=optional_count(name, usage.get("cachedContentTokenCount")),
            reasoning_tokens=thoughts,
        )

    # --- a stream --------------------------------------------------------------------------------
    async def stream(self, prepared: GeminiCall) -> AsyncGenerator[Delta, None]:
        name = self.name
        upstream = await self._open_stream(
            self._url(prepared, "streamGenerateContent") + "?alt=sse",
            prepared.payload,
            self._headers(),
        )
        complete = False
        usage = Usage()
        native: Any = None
        usable = calls = 0
        try:
            async for event in upstream.events(self._max_event_bytes):
                chunk = as_object(name, parse_json(name, event.data), "chunk")
                if "error" in chunk:
                    error = chunk["error"]
                    code = error.get("code") if isinstance(error, dict) else None
                    status = code if isinstance(code, int) and 400 <= code < 600 else 500
                    raise self._transport.stream_error(name, status, chunk)
                if chunk.get("usageMetadata") is not None:
                    usage = self._usage(chunk["usageMetadata"])
                candidates = as_list(name, chunk.get("candidates"), "candidates")
                if not candidates:
                    blocked = self._blocked(chunk, usage)
                    yield Delta(finish_reason=blocked.finish_reason, usage=usage)
                    native = blocked.native_finish_reason
                    continue
                candidate = as_object(name, candidates[0], "candidates[0]")
                texts, found = self._parts(candidate)
                text = "".join(texts)
                fragments = tuple(
                    ToolCallFragment(calls + i, args, id=call_id or _call_id(), name=fn)
                    for i, (call_id, fn, args) in enumerate(found)
                )
                calls += len(found)
                usable += len(text) + len(found)
                if text or fragments:
                    yield Delta(content=text or None, tool_calls=fragments)
                elif self._thinks(candidate):
                    yield THINKING
                if candidate.get("finishReason") is not None:
                    native = candidate["finishReason"]
            if native is None:
                raise ProviderConnectionError(name, "the stream ended without a finish reason")
            complete = True
            if isinstance(native, str) and native.startswith("blocked: "):
                return
            yield Delta(finish_reason=self._finish(native, bool(usable), bool(calls)), usage=usage)
        finally:
            self._transport.finish(upstream, complete=complete)
