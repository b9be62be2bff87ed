"""Every kind of error the API can answer, defined once: its HTTP status, the string that goes in
the body's `error.type` and `error.code`, and, for LLM calls, its `llm_errors_total` label and
what it means for the provider's circuit breaker.

The gateway core, the key checks and the routes raise `APIError(kind, message)`; one handler in
the API layer turns it into OpenAI's error shape, `{"error": {"message", "type", "param",
"code"}}`, so the official SDKs raise the matching exception (401 AuthenticationError, 403
PermissionDeniedError, 429 RateLimitError, ...). No web framework here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final


class Verdict(enum.Enum):
    """What an LLM call's outcome says about the provider's health (the breaker's input)."""

    HEALTHY = "healthy"  # the provider answered (a content filter is an answer too)
    FAILURE = "failure"  # the provider is unwell: counts towards opening its circuit
    NONE = "none"  # says nothing about the provider (refused before sending, client's fault...)


@dataclass(frozen=True)
class ErrorKind:
    code: str  # `error.type` and `error.code` of the body
    status: int
    # `llm_errors_total{error_type}` when the error concerns an LLM provider, else None.
    metric_label: str | None = None
    verdict: Verdict = Verdict.NONE
    # Whether a client should retry at all (`x-should-retry`, read by the official SDKs).
    retryable: bool | None = None


def _kinds(*kinds: ErrorKind) -> dict[str, ErrorKind]:
    return {kind.code: kind for kind in kinds}


# --- requests --------------------------------------------------------------------------------
INVALID_REQUEST: Final = ErrorKind("invalid_request_error", 422, retryable=False)
UNSUPPORTED_PARAMETER: Final = ErrorKind("unsupported_parameter", 400, retryable=False)
REQUEST_TOO_LARGE: Final = ErrorKind("request_too_large", 413, retryable=False)
NOT_FOUND: Final = ErrorKind("not_found", 404, retryable=False)
METHOD_NOT_ALLOWED: Final = ErrorKind("method_not_allowed", 405, retryable=False)
INTERNAL: Final = ErrorKind("internal_error", 500)

# --- clients: keys, permissions, limits --------------------------------------------------------
INVALID_API_KEY: Final = ErrorKind("invalid_api_key", 401, retryable=False)
PERMISSION_DENIED: Final = ErrorKind("permission_denied", 403, retryable=False)
RATE_LIMITED: Final = ErrorKind("rate_limit_exceeded", 429)
INSUFFICIENT_QUOTA: Final = ErrorKind("insufficient_quota", 429, retryable=False)
MAX_TOKENS_EXCEEDED: Final = ErrorKind("max_tokens_exceeded", 400, retryable=False)
AUTH_UNAVAILABLE: Final = ErrorKind("auth_unavailable", 503)
DATABASE_UNAVAILABLE: Final = ErrorKind("database_unavailable", 503)

# --- LLM calls ---------------------------------------------------------------------------------
UNKNOWN_PROVIDER: Final = ErrorKind("unknown_provider", 400, retryable=False)
NOT_ALLOWED: Final = ErrorKind("not_allowed", 403, "not_allowed", retryable=False)
MISSING_API_KEY: Final = ErrorKind("missing_api_key", 503, "missing_api_key", retryable=False)
CIRCUIT_OPEN: Final = ErrorKind("circuit_open", 503, "circuit_open")
# The gateway's own connection pool to the provider is full: its load, not the provider's health.
OVERLOADED: Final = ErrorKind("overloaded", 503, "overloaded")
TIMEOUT: Final = ErrorKind("timeout", 504, "timeout", Verdict.FAILURE)
# 5xx, connection errors, an unreadable or oversized answer.
PROVIDER_ERROR: Final = ErrorKind("provider_error", 502, "provider_error", Verdict.FAILURE)
# The provider's 429: its Retry-After goes to the client, and its circuit stays open that long.
PROVIDER_RATE_LIMITED: Final = ErrorKind(
    "provider_rate_limited", 429, "rate_limited", Verdict.FAILURE
)
# The provider's 400/404/422: the client's own request was refused; the provider is fine.
CLIENT_ERROR: Final = ErrorKind("client_error", 400, "client_error", retryable=False)
# The provider's 401/403 (and 402, billing): the operator's provider key or account is at fault;
# retrying cannot help.
PROVIDER_AUTH_ERROR: Final = ErrorKind(
    "provider_auth_error", 502, "provider_auth_error", retryable=False
)
# The provider answered, but its model produced nothing usable (Gemini MALFORMED_FUNCTION_CALL,
# UNEXPECTED_TOOL_CALL, ...): the provider is up, so the breaker counts it as healthy.
MODEL_ERROR: Final = ErrorKind("model_error", 502, "model_error", Verdict.HEALTHY)
# A stream that failed after its first chunk: reported in-band, as a final SSE error event.
STREAM_INTERRUPTED: Final = ErrorKind(
    "stream_interrupted", 502, "stream_interrupted", Verdict.FAILURE
)

KINDS: Final[Mapping[str, ErrorKind]] = _kinds(
    INVALID_REQUEST,
    UNSUPPORTED_PARAMETER,
    REQUEST_TOO_LARGE,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    INTERNAL,
    INVALID_API_KEY,
    PERMISSION_DENIED,
    RATE_LIMITED,
    INSUFFICIENT_QUOTA,
    MAX_TOKENS_EXCEEDED,
    AUTH_UNAVAILABLE,
    DATABASE_UNAVAILABLE,
    UNKNOWN_PROVIDER,
    NOT_ALLOWED,
    MISSING_API_KEY,
    CIRCUIT_OPEN,
    OVERLOADED,
    TIMEOUT,
    PROVIDER_ERROR,
    PROVIDER_RATE_LIMITED,
    CLIENT_ERROR,
    PROVIDER_AUTH_ERROR,
    MODEL_ERROR,
    STREAM_INTERRUPTED,
)

# Every value `llm_errors_total{error_type}` can take, in a stable order.
LLM_ERROR_LABELS: Final[tuple[str, ...]] = tuple(
    kind.metric_label for kind in KINDS.values() if kind.metric_label is not None
)


class APIError(Exception):
    """An answer other than success. `retry_after` (seconds) becomes a Retry-After header."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.provider = provider
        self.param = param
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """OpenAI's error object: `code` is a string, `param` the offending field or null."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.kind.code,
            "param": self.param,
            "code": self.kind.code,
        }
        if self.provider is not None:
            error["provider"] = self.provider
        error.update(self.extra)
        return {"error": error}

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, int(-(-self.retry_after // 1))))
        if self.kind.retryable is not None:
            headers["x-should-retry"] = "true" if self.kind.retryable else "false"
        return headers
