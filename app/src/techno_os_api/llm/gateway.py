"""The LLM gateway: routes a request to a provider through the allowlist, the key check, the
provider's circuit breaker and the timeout, and records the outcome in the metrics.

The order of the checks is the contract: nothing reaches the network unless the provider is
allowed, has its key, and its breaker gives a permit. No web framework here; the API layer maps
`GatewayError.error_type` to an HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from techno_os_api.core.config import ALLOWLIST_ENV, KNOWN_PROVIDERS, Settings
from techno_os_api.llm import metrics as m
from techno_os_api.llm.breaker import CircuitBreaker, CircuitOpenError, Clock, Permit, State
from techno_os_api.llm.providers import (
    Completion,
    CompletionRequest,
    Message,
    Provider,
    ProviderHTTPError,
    ProviderResponseError,
)
from techno_os_api.llm.schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    Usage,
)

log = logging.getLogger(__name__)


# --- errors --------------------------------------------------------------------------------------
class GatewayError(Exception):
    """A call that did not produce a completion. `error_type` names the kind (the API layer maps
    it to a status); `provider` is a known provider name or None."""

    error_type = "gateway_error"

    def __init__(self, message: str, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider


class UnknownProviderError(GatewayError):
    error_type = "unknown_provider"


class ProviderNotAllowedError(GatewayError):
    error_type = m.NOT_ALLOWED


class MissingApiKeyError(GatewayError):
    error_type = m.MISSING_API_KEY


class CircuitOpen(GatewayError):
    error_type = m.CIRCUIT_OPEN

    def __init__(self, message: str, provider: str, retry_after: float) -> None:
        super().__init__(message, provider)
        self.retry_after = retry_after


class ProviderTimeoutError(GatewayError):
    error_type = m.TIMEOUT


class ProviderFailedError(GatewayError):
    error_type = m.PROVIDER_ERROR


class ProviderRejectedError(GatewayError):
    """The provider refused this request (4xx other than 429): not a sign of ill health."""

    error_type = m.CLIENT_ERROR

    def __init__(self, message: str, provider: str, upstream_status: int) -> None:
        super().__init__(message, provider)
        self.upstream_status = upstream_status


# --- status --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProviderStatus:
    name: str
    allowed: bool
    requires_api_key: bool
    api_key_present: bool
    circuit_state: str
    consecutive_failures: int
    seconds_until_half_open: float

    @property
    def usable(self) -> bool:
        return self.allowed and (self.api_key_present or not self.requires_api_key)


@dataclass(frozen=True)
class Route:
    provider: str
    model: str


# --- gateway -------------------------------------------------------------------------------------
class LLMGateway:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        metrics: m.Metrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self._allowed = settings.allowed_providers
        self._allowlist_text = ", ".join(settings.veritta_llm_allowed_providers)
        self._default = settings.llm_provider
        self._timeout = settings.llm_timeout_seconds
        self._providers = providers
        self._metrics = metrics
        self._breakers = {
            name: CircuitBreaker(
                settings.llm_circuit_failure_threshold,
                settings.llm_circuit_cooldown_seconds,
                clock,
            )
            for name in KNOWN_PROVIDERS
        }
        metrics.track_circuit_states(self.circuit_states)

    # --- routing ---------------------------------------------------------------------------
    def route(self, model: str) -> Route:
        """`provider/model` goes to that provider; a bare model to LLM_PROVIDER."""
        prefix, slash, rest = model.partition("/")
        if not slash:
            return Route(self._default, model)
        name = prefix.strip().lower()
        if name not in KNOWN_PROVIDERS:
            raise UnknownProviderError(
                f"unknown provider {prefix!r} in model {model!r}; known providers: "
                f"{', '.join(KNOWN_PROVIDERS)} (or send a bare model name for the default, "
                f"{self._default!r})"
            )
        if not rest:
            raise UnknownProviderError(f"model {model!r} names a provider but no model")
        return Route(name, rest)

    # --- calling ---------------------------------------------------------------------------
    async def chat(self, body: ChatCompletionRequest) -> ChatCompletionResponse:
        route = self.route(body.model)
        request = CompletionRequest(
            model=route.model,
            messages=tuple(Message(msg.role, msg.text()) for msg in body.messages),
            max_tokens=body.token_limit,
            temperature=body.temperature,
        )
        completion = await self.complete(route.provider, request)
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=body.model,
            choices=[
                Choice(
                    index=0,
                    message=AssistantMessage(content=completion.content),
                    finish_reason=completion.finish_reason,
                )
            ],
            usage=Usage(
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                total_tokens=completion.prompt_tokens + completion.completion_tokens,
            ),
        )

    async def complete(self, name: str, request: CompletionRequest) -> Completion:
        provider = self._admit(name)
        permit = self._permit(name)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                completion = await provider.complete(request)
        except (TimeoutError, httpx.TimeoutException):
            self._failed(name, permit, started, m.TIMEOUT)
            raise ProviderTimeoutError(
                f"{name} did not answer within {self._timeout:g}s (LLM_TIMEOUT_SECONDS)", name
            ) from None
        except ProviderHTTPError as exc:
            if exc.trips_breaker:
                self._failed(name, permit, started, m.PROVIDER_ERROR)
                raise ProviderFailedError(str(exc), name) from None
            self._breakers[name].release(permit)
            self._metrics.observe_call(name, time.perf_counter() - started)
            self._metrics.count_error(name, m.CLIENT_ERROR)
            log.warning("%s rejected the request: HTTP %s", name, exc.status_code)
            raise ProviderRejectedError(
                f"{exc} (a request or configuration problem; the circuit is not affected)",
                name,
                exc.status_code,
            ) from None
        except (httpx.HTTPError, ProviderResponseError) as exc:
            self._failed(name, permit, started, m.PROVIDER_ERROR)
            detail = str(exc) or type(exc).__name__
            raise ProviderFailedError(f"{name} call failed: {detail}", name) from None
        except BaseException:
            # Cancelled (client went away) or a bug: no verdict on the provider's health.
            self._breakers[name].release(permit)
            raise
        self._breakers[name].record_success(permit)
        self._metrics.observe_call(name, time.perf_counter() - started)
        self._metrics.count_tokens(name, completion.prompt_tokens, completion.completion_tokens)
        return completion

    def _admit(self, name: str) -> Provider:
        """The allowlist, then the key: refusals here never touch the network."""
        if name not in self._allowed:
            self._metrics.count_error(name, m.NOT_ALLOWED)
            allowlist = (
                f"it allows only: {self._allowlist_text}"
                if self._allowed
                else "it is unset or empty, so no provider is allowed"
            )
            raise ProviderNotAllowedError(
                f"provider {name!r} is not allowed by {ALLOWLIST_ENV} ({allowlist})", name
            )
        provider = self._providers[name]
        if provider.requires_key and not provider.has_key:
            self._metrics.count_error(name, m.MISSING_API_KEY)
            raise MissingApiKeyError(
                f"provider {name!r} is allowed but {name.upper()}_API_KEY is not set; "
                "it is not called without a key",
                name,
            )
        return provider

    def _permit(self, name: str) -> Permit:
        try:
            return self._breakers[name].acquire()
        except CircuitOpenError as exc:
            self._metrics.count_error(name, m.CIRCUIT_OPEN)
            raise CircuitOpen(
                f"circuit for {name!r} is {exc.state.name}: calls are refused until the "
                f"cooldown ends and a trial call succeeds (retry after {exc.retry_after:g}s)",
                name,
                exc.retry_after,
            ) from None

    def _failed(self, name: str, permit: Permit, started: float, error_type: str) -> None:
        breaker = self._breakers[name]
        breaker.record_failure(permit)
        self._metrics.observe_call(name, time.perf_counter() - started)
        self._metrics.count_error(name, error_type)
        log.warning(
            "%s call failed (%s); circuit %s after %d consecutive failure(s)",
            name,
            error_type,
            breaker.state.name,
            breaker.snapshot().consecutive_failures,
        )

    # --- status ----------------------------------------------------------------------------
    def circuit_states(self) -> dict[str, State]:
        """Breaker state of every allowed provider (the `llm_circuit_state` series)."""
        return {
            name: self._breakers[name].state for name in KNOWN_PROVIDERS if name in self._allowed
        }

    def breaker(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def statuses(self) -> list[ProviderStatus]:
        result = []
        for name in KNOWN_PROVIDERS:
            provider = self._providers[name]
            snap = self._breakers[name].snapshot()
            result.append(
                ProviderStatus(
                    name=name,
                    allowed=name in self._allowed,
                    requires_api_key=provider.requires_key,
                    api_key_present=provider.has_key,
                    circuit_state=snap.state.name,
                    consecutive_failures=snap.consecutive_failures,
                    seconds_until_half_open=round(snap.seconds_until_half_open, 3),
                )
            )
        return result

    @property
    def default_provider(self) -> str:
        return self._default

    @property
    def timeout_seconds(self) -> float:
        return self._timeout
