"""What every adapter shares: the Provider protocol, the refusal of what a provider cannot do,
and reading the numbers and bodies providers send.

An adapter only translates: `prepare` turns the validated OpenAI request into the provider's
request (or refuses it with `Refused`, before anything is sent), `complete` and `stream` send it
and translate the answer to the neutral `Completion` / `Delta`s. Timeouts, the breaker, the
allowlist and the metrics are the gateway's. Adapters raise the transport's errors
(`ProviderHTTPError` for a non-2xx answer or an in-stream error, `ProviderResponseError` for an
unreadable body, `ProviderConnectionError`), and `ModelFailure` when the model produced nothing
usable.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from techno_os_api.llm.completion import Completion, Delta
from techno_os_api.llm.schemas import ChatCompletionRequest, ToolCallIn
from techno_os_api.llm.transport import ProviderError, ProviderResponseError, Transport, Upstream

log = logging.getLogger("techno_os_api.llm.provider")

# Instructions rather than turns: Anthropic and Gemini take them apart from the conversation.
SYSTEM_ROLES: Final = frozenset({"system", "developer"})
# Parameters every adapter handles: the gateway itself reads `stream` and `stream_options`;
# `n` is checked by `check_parameters` (one choice).
ALWAYS_HANDLED: Final = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n"}
)


class Refused(ValueError):
    """The request asks for something this provider cannot do (or sends it something it cannot
    read): a 400 naming the parameter and the provider, before anything is sent."""

    def __init__(self, provider: str, param: str, detail: str) -> None:
        self.provider = provider
        self.param = param
        super().__init__(f"{param}: {detail} (provider {provider})")


class ModelFailure(ProviderError):
    """The provider answered, but its model produced nothing usable (e.g. Gemini's
    MALFORMED_FUNCTION_CALL)."""

    def __init__(self, provider: str, reason: str) -> None:
        self.provider = provider
        self.reason = reason
        super().__init__(f"{provider}'s model produced no usable answer ({reason})")


class Provider(Protocol):
    name: str
    requires_key: bool

    @property
    def has_key(self) -> bool: ...

    def prepare(
        self, request: ChatCompletionRequest, model: str, max_tokens: int | None
    ) -> Any: ...

    async def complete(self, prepared: Any) -> Completion: ...

    def stream(self, prepared: Any) -> AsyncGenerator[Delta, None]: ...


def check_parameters(provider: str, request: ChatCompletionRequest, handled: Iterable[str]) -> None:
    """Refuse every parameter the adapter does not translate, by name."""
    handled = ALWAYS_HANDLED.union(handled)
    for param in request.parameters():
        if param not in handled:
            known = param in ChatCompletionRequest.model_fields
            raise Refused(
                provider,
                param,
                "not supported by this provider" if known else "unknown parameter",
            )
    if request.n is not None and request.n > 1:
        raise Refused(provider, "n", "the gateway answers with one choice; send n=1 or omit it")
    for index, message in enumerate(request.messages):
        for field in message.model_extra or {}:
            if (message.model_extra or {})[field] is not None:
                raise Refused(provider, f"messages[{index}].{field}", "unknown message field")


def count(provider: str, value: Any) -> int:
    """A token count from a provider's answer: absent is 0, anything but a non-negative integer
    is an unreadable answer."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderResponseError(
            provider, f"token count {value!r} is not a non-negative integer"
        )
    return value


def optional_count(provider: str, value: Any) -> int | None:
    return None if value is None else count(provider, value)


def text_or_none(provider: str, value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ProviderResponseError(provider, f"{what} is {type(value).__name__}, not text")


def as_object(provider: str, value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ProviderResponseError(provider, f"{what} is {type(value).__name__}, not an object")


def as_list(provider: str, value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise ProviderResponseError(provider, f"{what} is {type(value).__name__}, not a list")


def parse_json(provider: str, data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ProviderResponseError(provider, "a stream event is not JSON") from None


_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)


@dataclass(frozen=True)
class InlineImage:
    media_type: str
    data: str  # base64


def inline_image(provider: str, param: str, url: str) -> InlineImage | None:
    """A `data:` URL's media type and base64 data; None for any other URL."""
    if not url.startswith("data:"):
        return None
    match = _DATA_URL.match(url)
    if match is None:
        raise Refused(provider, param, "a data URL must be data:<media type>;base64,<data>")
    data = match.group(2)
    try:
        base64.b64decode(data[:4096] + "=" * (-len(data[:4096]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(provider, param, "the data URL's data is not base64") from None
    return InlineImage(match.group(1).lower(), data)


def arguments_object(provider: str, param: str, call: ToolCallIn) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic and Gemini carry (OpenAI: JSON text)."""
    try:
        value = json.loads(call.function.arguments or "{}")
    except ValueError:
        raise Refused(provider, param, "tool call arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise Refused(provider, param, "tool call arguments must be a JSON object")
    return value


def unknown_finish(provider: str, native: Any) -> str:
    log.warning("%s sent an unknown finish reason %r: answered as stop", provider, native)
    return "stop"


class HTTPProvider:
    requires_key = True

    def __init__(self, name: str, transport: Transport, base_url: str, api_key: str | None):
        self.name = name
        self._transport = transport
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        # One stream event at most this large (and never more than the whole answer may be).
        self._max_event_bytes = min(transport.max_response_bytes, 4 * 1024 * 1024)
        self._all_headers: dict[str, str] | None = None

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self._base_url!r})"

    @property
    def has_key(self) -> bool:
        return bool(self._api_key)

    def _auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        """Every header of a request, built once."""
        if self._all_headers is None:
            self._all_headers = Transport.headers(self._auth_headers())
        return self._all_headers

    def _key(self) -> str:
        if not self._api_key:  # the gateway checks first; this is the last line of defence
            raise RuntimeError(f"{self.name} has no API key")
        return self._api_key

    async def _open_stream(
        self, url: str, payload: dict[str, Any], headers: dict[str, str]
    ) -> Upstream:
        """Send a streaming request; a non-2xx answer is raised (body read, connection
        returned) before anything is streamed."""
        upstream = await self._transport.open(self.name, url, payload, headers)
        if upstream.status >= 400:
            try:
                raise await self._transport.http_error(upstream)
            finally:
                self._transport.finish(upstream, complete=True)
        return upstream
