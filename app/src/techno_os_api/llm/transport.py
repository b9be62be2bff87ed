"""The provider adapters' one way to the network: a JSON POST whose answer is read only up to a
size limit, and the provider errors that come back from it.

- An answer is counted as it is decompressed, so neither a huge body nor a small gzip that
  inflates to gigabytes can fill the memory: past LLM_MAX_RESPONSE_BYTES the call fails as a
  provider error.
- Nothing a provider sends reaches a client verbatim: a failed call keeps only the provider's
  error message field, bounded and with every configured secret redacted (a provider or a proxy
  in between may echo the request's headers, the provider key among them); the whole body goes
  to the log, redacted too.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx

log = logging.getLogger("techno_os_api.llm.provider")

MESSAGE_LIMIT: Final = 500
LOG_BODY_LIMIT: Final = 4000
REDACTED: Final = "[redacted]"


class ProviderError(Exception):
    """The provider answered, but not with a usable completion."""


class ProviderHTTPError(ProviderError):
    """A non-2xx answer. `message` is the provider's own error message, redacted and bounded;
    `retry_after` the seconds its Retry-After asked for, if any."""

    def __init__(
        self, provider: str, status_code: int, message: str, retry_after: float | None = None
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{provider} answered HTTP {status_code}: {message}")


class ProviderResponseError(ProviderError):
    """A body the gateway cannot use: too large, not JSON, or not the provider's shape."""

    def __init__(self, provider: str, detail: str) -> None:
        self.provider = provider
        super().__init__(f"{provider} returned an answer the gateway cannot read: {detail}")


class Redactor:
    """Removes every configured secret from text a provider sent."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or `retry-after-ms`."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class Transport:
    def __init__(
        self, client: httpx.AsyncClient, max_response_bytes: int, redact: Redactor
    ) -> None:
        self._client = client
        self._limit = max_response_bytes
        self.redact = redact

    async def post_json(
        self, provider: str, url: str, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """POST `payload`; the decoded JSON object of a 2xx answer, else `ProviderHTTPError`
        (or `ProviderResponseError` for an unusable body)."""
        answer = await self._post(provider, url, payload, headers)
        if answer.status >= 400:
            raise self.http_error(provider, answer)
        try:
            body = json.loads(answer.body)
        except ValueError:
            raise ProviderResponseError(provider, "the answer is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderResponseError(provider, "the answer is not a JSON object")
        return body

    async def _post(
        self, provider: str, url: str, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Answer:
        async with self._client.stream("POST", url, json=payload, headers=headers) as response:
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._limit:
                    raise ProviderResponseError(
                        provider,
                        f"the answer is larger than {self._limit} bytes (LLM_MAX_RESPONSE_BYTES)",
                    )
                chunks.append(chunk)
            return Answer(response.status_code, response.headers, b"".join(chunks))

    def http_error(self, provider: str, answer: Answer) -> ProviderHTTPError:
        text = answer.body.decode("utf-8", errors="replace")
        log.warning(
            "%s answered HTTP %d: %s",
            provider,
            answer.status,
            self.redact(text[:LOG_BODY_LIMIT]),
        )
        return ProviderHTTPError(
            provider,
            answer.status,
            self.redact(_error_message(text))[:MESSAGE_LIMIT] or f"HTTP {answer.status}",
            retry_after_seconds(answer.headers),
        )


def _error_message(text: str) -> str:
    """The provider's error message field (OpenAI, Anthropic and Gemini all nest it under
    `error.message`), or a fixed phrase: never the raw body."""
    try:
        body = json.loads(text)
    except ValueError:
        return "the provider's error body is not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return "the provider's error body has no message"
