"""Provider adapters: a neutral request in, the provider's wire format out and back, usage read
from the provider's own response fields.

Adapters only translate. Timeouts, the breaker, the allowlist and metrics are the gateway's. An
adapter raises `ProviderHTTPError` for a non-2xx answer and `ProviderResponseError` for a body
it cannot read; transport errors and timeouts surface as httpx exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote

from techno_os_api.core.config import KNOWN_PROVIDERS, Settings
from techno_os_api.llm.transport import ProviderResponseError, Transport

# Instructions rather than turns: Anthropic and Gemini take them apart from the conversation.
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})


@dataclass(frozen=True)
class Message:
    role: str  # system | developer | user | assistant
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    model: str  # without the provider prefix
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class Completion:
    content: str
    finish_reason: str  # OpenAI's vocabulary: stop | length | content_filter | tool_calls
    prompt_tokens: int
    completion_tokens: int


class Provider(Protocol):
    name: str
    requires_key: bool

    @property
    def has_key(self) -> bool: ...

    async def complete(self, request: CompletionRequest) -> Completion: ...


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"token count {value!r} is not a non-negative integer")
    return value


# --- fake ----------------------------------------------------------------------------------------
class FakeProvider:
    """In-process and deterministic: echoes the last user message, one token per word."""

    name = "fake"
    requires_key = False
    has_key = False

    async def complete(self, request: CompletionRequest) -> Completion:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = f"echo: {last_user}".split()
        finish_reason = "stop"
        if request.max_tokens is not None and len(words) > request.max_tokens:
            words, finish_reason = words[: request.max_tokens], "length"
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return Completion(" ".join(words), finish_reason, prompt_tokens, len(words))


# --- HTTP providers ------------------------------------------------------------------------------
class _HTTPProvider:
    requires_key = True

    def __init__(self, name: str, transport: Transport, base_url: str, api_key: str | None):
        self.name = name
        self._transport = transport
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self._base_url!r})"

    @property
    def has_key(self) -> bool:
        return bool(self._api_key)

    def _key(self) -> str:
        if not self._api_key:  # the gateway checks first; this is the last line of defence
            raise RuntimeError(f"{self.name} has no API key")
        return self._api_key


class OpenAICompatibleProvider(_HTTPProvider):
    """OpenAI's chat completions wire format (OpenAI, xAI, DeepSeek)."""

    def _role(self, role: str) -> str:
        # "developer" is OpenAI's newer name for "system"; the compatible APIs know "system".
        return "system" if role == "developer" and self.name != "openai" else role

    async def complete(self, request: CompletionRequest) -> Completion:
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": [
                {"role": self._role(m.role), "content": m.content} for m in request.messages
            ],
        }
        if request.max_tokens is not None:
            payload["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        body = await self._transport.post_json(
            self.name,
            f"{self._base_url}/chat/completions",
            payload,
            {"Authorization": f"Bearer {self._key()}"},
        )
        try:
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Completion(
                content=choice["message"].get("content") or "",
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=_count(usage.get("prompt_tokens")),
                completion_tokens=_count(usage.get("completion_tokens")),
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderResponseError(self.name, repr(exc)) from None


_ANTHROPIC_STOP: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider(_HTTPProvider):
    """Anthropic's Messages API: system text apart, `x-api-key`, `anthropic-version`."""

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

    async def complete(self, request: CompletionRequest) -> Completion:
        system = "\n\n".join(m.content for m in request.messages if m.role in _SYSTEM_ROLES)
        payload: dict[str, Any] = {
            "model": request.model,
            # Anthropic requires max_tokens; the gateway's default cap when the call names none.
            "max_tokens": request.max_tokens or self._default_max_tokens,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role not in _SYSTEM_ROLES
            ],
        }
        if system:
            payload["system"] = system
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        body = await self._transport.post_json(
            self.name,
            f"{self._base_url}/v1/messages",
            payload,
            {"x-api-key": self._key(), "anthropic-version": self._version},
        )
        try:
            text = "".join(
                block.get("text", "") for block in body["content"] if block.get("type") == "text"
            )
            usage = body["usage"]
            return Completion(
                content=text,
                finish_reason=_ANTHROPIC_STOP.get(str(body.get("stop_reason")), "stop"),
                prompt_tokens=_count(usage.get("input_tokens")),
                completion_tokens=_count(usage.get("output_tokens")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProviderResponseError(self.name, repr(exc)) from None


_GEMINI_STOP: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}


class GoogleProvider(_HTTPProvider):
    """Gemini `generateContent`. The key travels in the `x-goog-api-key` header, never in the URL,
    so it cannot end up in an access or client log."""

    async def complete(self, request: CompletionRequest) -> Completion:
        model = request.model.removeprefix("models/")
        system = "\n\n".join(m.content for m in request.messages if m.role in _SYSTEM_ROLES)
        payload: dict[str, Any] = {
            "contents": [
                {
                    "role": "model" if m.role == "assistant" else "user",
                    "parts": [{"text": m.content}],
                }
                for m in request.messages
                if m.role not in _SYSTEM_ROLES
            ]
        }
        if system:
            payload["systemInstruction"] = {"parts": [{"text": system}]}
        config: dict[str, Any] = {}
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if config:
            payload["generationConfig"] = config
        body = await self._transport.post_json(
            self.name,
            f"{self._base_url}/v1beta/models/{quote(model, safe='')}:generateContent",
            payload,
            {"x-goog-api-key": self._key()},
        )
        try:
            candidate = body["candidates"][0]
            parts = (candidate.get("content") or {}).get("parts") or []
            usage = body.get("usageMetadata") or {}
            return Completion(
                content="".join(p.get("text", "") for p in parts),
                finish_reason=_GEMINI_STOP.get(str(candidate.get("finishReason")), "stop"),
                prompt_tokens=_count(usage.get("promptTokenCount")),
                completion_tokens=_count(usage.get("candidatesTokenCount")),
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderResponseError(self.name, repr(exc)) from None


def build_providers(settings: Settings, transport: Transport) -> Mapping[str, Provider]:
    """One adapter per known provider, keys and base URLs from the settings."""
    providers: dict[str, Provider] = {"fake": FakeProvider()}
    for name in ("openai", "xai", "deepseek"):
        providers[name] = OpenAICompatibleProvider(
            name, transport, settings.base_url(name), settings.api_key(name)
        )
    providers["anthropic"] = AnthropicProvider(
        "anthropic",
        transport,
        settings.base_url("anthropic"),
        settings.api_key("anthropic"),
        settings.anthropic_version,
        settings.llm_default_max_tokens,
    )
    providers["google"] = GoogleProvider(
        "google", transport, settings.base_url("google"), settings.api_key("google")
    )
    assert set(providers) == set(KNOWN_PROVIDERS)
    return providers
