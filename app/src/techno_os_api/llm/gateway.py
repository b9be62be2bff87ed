"""The LLM gateway: decides whether a client's call may go out, sends it to a provider (or its
fallbacks) through that provider's circuit breaker, and records what happened.

The order of the checks is the contract: nothing reaches the network unless the provider is
allowed (VERITTA_LLM_ALLOWED_PROVIDERS), the client key may use it and the model, the call fits
the key's max_tokens cap, the provider has its API key, the key's limits and budget admit the
call, and the provider's breaker gives a permit.

One place decides a call's outcome (`_outcome`): success, a breaker failure, or an error that
says nothing about the provider's health. The breaker and the metrics observe that outcome;
each error kind, with its status and metric label, is defined once in `core/errors.py`. No web
framework here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import httpx

from techno_os_api.auth.admission import Admitter, Ticket
from techno_os_api.auth.keys import ClientKey, model_allowed
from techno_os_api.core import errors as e
from techno_os_api.core.config import ALLOWLIST_ENV, KNOWN_PROVIDERS, Settings
from techno_os_api.core.errors import APIError, Verdict
from techno_os_api.llm.breaker import CircuitBreaker, CircuitOpenError, Clock, Permit, State
from techno_os_api.llm.metrics import Metrics
from techno_os_api.llm.pricing import PriceTable
from techno_os_api.llm.providers import Completion, CompletionRequest, Message, Provider
from techno_os_api.llm.schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
)
from techno_os_api.llm.schemas import Usage as UsageOut
from techno_os_api.llm.transport import ProviderHTTPError, ProviderResponseError
from techno_os_api.llm.usage import Usage, estimate_prompt_tokens

log = logging.getLogger(__name__)

# Outcomes after which the next alternative of LLM_FALLBACKS is tried: the provider is unwell or
# unreachable right now. Never after the client's own error, a bad provider key or a filter.
_FALLS_BACK = frozenset({e.CIRCUIT_OPEN, e.TIMEOUT, e.PROVIDER_ERROR, e.PROVIDER_RATE_LIMITED})


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

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Answer:
    """A completed call: what answered, and what it returned."""

    route: Route
    completion: Completion
    usage: Usage
    fallback: bool


def to_response(answer: Answer, requested_model: str) -> ChatCompletionResponse:
    """OpenAI's chat.completion for an answer. `model` is what the client asked for, or what
    answered when a fallback did."""
    completion = answer.completion
    return ChatCompletionResponse(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=str(answer.route) if answer.fallback else requested_model,
        choices=[
            Choice(
                index=0,
                message=AssistantMessage(content=completion.content),
                finish_reason=completion.finish_reason,
            )
        ],
        usage=UsageOut(
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
            total_tokens=answer.usage.total_tokens,
        ),
    )


class LLMGateway:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        metrics: Metrics,
        prices: PriceTable,
        admitter: Admitter | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._allowed = settings.allowed_providers
        self._allowlist_text = ", ".join(settings.veritta_llm_allowed_providers)
        self._default = settings.llm_provider
        self._timeout = settings.llm_timeout_seconds
        self._deadline = settings.deadline_seconds
        self._default_models = settings.key_default_models
        self._default_max_tokens_cap = settings.key_default_max_tokens
        self._default_max_tokens = settings.llm_default_max_tokens
        self._pool_timeout = settings.llm_pool_timeout_seconds
        self._max_connections = settings.llm_max_connections
        self._fallbacks = {
            source: tuple(self.route(target) for target in targets)
            for source, targets in settings.llm_fallbacks.items()
        }
        self._providers = providers
        self._metrics = metrics
        self._prices = prices
        self._admitter = admitter
        self._breakers = {
            name: CircuitBreaker(
                settings.llm_circuit_failure_threshold,
                settings.llm_circuit_cooldown_seconds,
                clock,
            )
            for name in KNOWN_PROVIDERS
        }
        # The gateway's own connections per provider: a call waits at most LLM_POOL_TIMEOUT_
        # SECONDS for one, and that wait is never blamed on the provider.
        self._slots = {
            name: asyncio.Semaphore(settings.llm_max_connections) for name in KNOWN_PROVIDERS
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
            raise APIError(
                e.UNKNOWN_PROVIDER,
                f"unknown provider {prefix!r} in model {model!r}; known providers: "
                f"{', '.join(KNOWN_PROVIDERS)} (or send a bare model name for the default, "
                f"{self._default!r})",
                param="model",
            )
        if not rest:
            raise APIError(
                e.UNKNOWN_PROVIDER, f"model {model!r} names a provider but no model", param="model"
            )
        return Route(name, rest)

    # --- calling ---------------------------------------------------------------------------
    async def complete(self, body: ChatCompletionRequest, key: ClientKey) -> Answer:
        """Check, admit and run one call; the answer of the first route that succeeds."""
        primary = self.route(body.model)
        self._check_allowed(primary)
        self._check_key(key, primary)
        max_tokens = self._max_tokens(body, key)
        self._check_usable(primary)
        routes = [primary, *self._alternatives(primary, key)]
        if len(routes) == 1:
            self._check_circuit(primary)  # refused at once, before any limit is spent

        # The most the call can use and cost, on whichever route answers (module llm.usage).
        prompt = estimate_prompt_tokens([m.model_dump(exclude_none=True) for m in body.messages])
        completion_bound = max_tokens or self._default_max_tokens
        cost = max(
            self._prices.lookup(r.provider, r.model).price.cost(prompt, completion_bound)
            for r in routes
        )
        ticket = await self._admit(key, prompt + completion_bound, cost)
        sent: list[Route] = []
        try:
            request = CompletionRequest(
                model="",
                messages=tuple(Message(msg.role, msg.text()) for msg in body.messages),
                max_tokens=max_tokens,
                temperature=body.temperature,
            )
            answer = await self._attempts(routes, request, sent)
        except BaseException:
            self._settle(ticket, sent=bool(sent))
            raise
        await self._settle_answer(ticket, answer)
        return answer

    async def _attempts(
        self, routes: list[Route], request: CompletionRequest, sent: list[Route]
    ) -> Answer:
        """Try each route in turn within the overall deadline. `sent` collects the routes whose
        call went out (a failed one may still have been billed)."""
        deadline = time.monotonic() + self._deadline
        for index, route in enumerate(routes):
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise APIError(
                        e.TIMEOUT,
                        f"no answer within the call's deadline of {self._deadline:g}s "
                        "(LLM_DEADLINE_SECONDS)",
                        provider=route.provider,
                    )
                completion, usage = await self._attempt(
                    route, request, min(self._timeout, remaining), sent
                )
            except APIError as exc:
                last = index == len(routes) - 1
                if last or exc.kind not in _FALLS_BACK:
                    raise
                following = routes[index + 1]
                self._metrics.count_fallback(route.provider, following.provider)
                log.warning("%s failed (%s): falling back to %s", route, exc.kind.code, following)
                continue
            return Answer(route, completion, usage, fallback=index > 0)
        raise AssertionError("unreachable: the last route raises or returns")

    async def _attempt(
        self, route: Route, request: CompletionRequest, timeout: float, sent: list[Route]
    ) -> tuple[Completion, Usage]:
        name = route.provider
        provider = self._providers[name]
        slot = self._slots[name]
        try:
            async with asyncio.timeout(self._pool_timeout):
                await slot.acquire()
        except TimeoutError:
            self._metrics.count_error(name, e.OVERLOADED.metric_label or "")
            raise APIError(
                e.OVERLOADED,
                f"all {self._max_connections} of the gateway's connections to {name} are "
                f"busy (LLM_MAX_CONNECTIONS); retry shortly",
                provider=name,
                retry_after=1,
            ) from None
        try:
            permit = self._permit(name)
            started = time.perf_counter()
            sent.append(route)
            try:
                async with asyncio.timeout(timeout):
                    completion = await provider.complete(
                        CompletionRequest(
                            route.model, request.messages, request.max_tokens, request.temperature
                        )
                    )
            except BaseException as exc:
                error = self._outcome(route, permit, started, exc, timeout)
                if error is None:
                    raise
                raise error from None
            usage = Usage(completion.prompt_tokens, completion.completion_tokens)
            self._breakers[name].record_success(permit)
            self._metrics.observe_call(name, time.perf_counter() - started)
            self._metrics.count_tokens(name, usage.prompt_tokens, usage.completion_tokens)
            return completion, usage
        finally:
            slot.release()

    def _outcome(
        self, route: Route, permit: Permit, started: float, exc: BaseException, timeout: float
    ) -> APIError | None:
        """The one place a failed call is classified: the error the client gets, and what the
        breaker and the metrics learn. None: not the provider's doing (cancelled, a bug)."""
        name = route.provider
        breaker = self._breakers[name]
        error = self._classify(route, exc, timeout)
        if error is None:
            breaker.release(permit)  # the client went away, or a bug: no verdict
            return None
        self._metrics.observe_call(name, time.perf_counter() - started)
        self._metrics.count_error(name, error.kind.metric_label or "")
        if error.kind.verdict is Verdict.FAILURE:
            breaker.record_failure(permit, hold_open_for=error.retry_after or 0.0)
            log.warning(
                "%s call failed (%s); circuit %s after %d consecutive failure(s)",
                name,
                error.kind.code,
                breaker.state.name,
                breaker.snapshot().consecutive_failures,
            )
        elif error.kind.verdict is Verdict.HEALTHY:
            breaker.record_success(permit)
        else:
            breaker.release(permit)
            log.warning("%s refused the call: %s", name, error.message)
        return error

    def _classify(self, route: Route, exc: BaseException, timeout: float) -> APIError | None:
        name = route.provider
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return APIError(
                e.TIMEOUT,
                f"{name} did not answer within {timeout:g}s (LLM_TIMEOUT_SECONDS)",
                provider=name,
            )
        if isinstance(exc, ProviderHTTPError):
            status = exc.status_code
            if status == 429:
                return APIError(
                    e.PROVIDER_RATE_LIMITED,
                    f"{name} is rate limiting the gateway's account: {exc.message}",
                    provider=name,
                    retry_after=exc.retry_after,
                    extra={"upstream_status": status},
                )
            if status in (401, 403):
                return APIError(
                    e.PROVIDER_AUTH_ERROR,
                    f"{name} refused the gateway's credentials (HTTP {status}): operators, "
                    f"check {name.upper()}_API_KEY and the provider account. Provider said: "
                    f"{exc.message}",
                    provider=name,
                    extra={"upstream_status": status},
                )
            if 400 <= status < 500 and status not in (408, 409):
                return APIError(
                    e.CLIENT_ERROR,
                    f"{name} rejected the request: {exc.message}",
                    provider=name,
                    extra={"upstream_status": status},
                )
            return APIError(
                e.PROVIDER_ERROR,
                f"{name} failed: HTTP {status}: {exc.message}",
                provider=name,
                extra={"upstream_status": status},
            )
        if isinstance(exc, httpx.HTTPError | ProviderResponseError | OSError):
            detail = str(exc) or type(exc).__name__
            return APIError(e.PROVIDER_ERROR, f"{name} call failed: {detail}", provider=name)
        return None

    # --- the checks ------------------------------------------------------------------------
    def _check_allowed(self, route: Route) -> None:
        if route.provider in self._allowed:
            return
        self._metrics.count_error(route.provider, e.NOT_ALLOWED.metric_label or "")
        allowlist = (
            f"it allows only: {self._allowlist_text}"
            if self._allowed
            else "it is unset or empty, so no provider is allowed"
        )
        raise APIError(
            e.NOT_ALLOWED,
            f"provider {route.provider!r} is not allowed by {ALLOWLIST_ENV} ({allowlist})",
            provider=route.provider,
            param="model",
        )

    def _check_key(self, key: ClientKey, route: Route) -> None:
        if not key.may_use_provider(route.provider):
            self._metrics.count_refusal("permission")
            raise APIError(
                e.PERMISSION_DENIED,
                f"this key may not use provider {route.provider!r} "
                f"(it may use: {', '.join(key.providers or ())})",
                provider=route.provider,
                param="model",
            )
        models = key.models if key.models is not None else self._default_models
        if not model_allowed(models, route.provider, route.model):
            self._metrics.count_refusal("permission")
            raise APIError(
                e.PERMISSION_DENIED,
                f"this key may not use model {str(route)!r} (it may use: {', '.join(models)})",
                provider=route.provider,
                param="model",
            )

    def _max_tokens(self, body: ChatCompletionRequest, key: ClientKey) -> int | None:
        """The call's max_tokens: the client's, within the key's cap; else the cap."""
        cap = key.max_tokens or self._default_max_tokens_cap
        asked = body.token_limit
        if asked is not None and cap is not None and asked > cap:
            self._metrics.count_refusal("permission")
            raise APIError(
                e.MAX_TOKENS_EXCEEDED,
                f"max_tokens {asked} is above this key's cap of {cap} tokens per call",
                param="max_tokens",
            )
        if asked is not None:
            return asked
        if cap is not None:
            return cap
        # A reservation needs a bound: the gateway sends its default cap.
        if key.tpm is not None or key.budget_usd is not None:
            return self._default_max_tokens
        return None

    def _check_usable(self, route: Route) -> None:
        provider = self._providers[route.provider]
        if provider.requires_key and not provider.has_key:
            self._metrics.count_error(route.provider, e.MISSING_API_KEY.metric_label or "")
            raise APIError(
                e.MISSING_API_KEY,
                f"provider {route.provider!r} is allowed but {route.provider.upper()}_API_KEY "
                "is not set; it is not called without a key",
                provider=route.provider,
            )

    def _usable(self, route: Route) -> bool:
        provider = self._providers[route.provider]
        return route.provider in self._allowed and (provider.has_key or not provider.requires_key)

    def _alternatives(self, primary: Route, key: ClientKey) -> list[Route]:
        """LLM_FALLBACKS of the primary that this key may use, in order."""
        models = key.models if key.models is not None else self._default_models
        return [
            route
            for route in self._fallbacks.get(primary.provider, ())
            if self._usable(route)
            and key.may_use_provider(route.provider)
            and model_allowed(models, route.provider, route.model)
        ]

    def _check_circuit(self, route: Route) -> None:
        snapshot = self._breakers[route.provider].snapshot()
        if snapshot.state is State.OPEN:
            self._permit(route.provider)  # raises circuit_open, counted

    def _permit(self, name: str) -> Permit:
        try:
            return self._breakers[name].acquire()
        except CircuitOpenError as exc:
            self._metrics.count_error(name, e.CIRCUIT_OPEN.metric_label or "")
            raise APIError(
                e.CIRCUIT_OPEN,
                f"circuit for {name!r} is {exc.state.name}: calls are refused until the "
                f"cooldown ends and a trial call succeeds (retry after {exc.retry_after:g}s)",
                provider=name,
                retry_after=exc.retry_after,
            ) from None

    # --- admission ---------------------------------------------------------------------------
    async def _admit(self, key: ClientKey, tokens: int, cost: Decimal) -> Ticket | None:
        if self._admitter is None:
            return None
        return await self._admitter.admit(key, tokens, cost)

    def _settle(self, ticket: Ticket | None, *, sent: bool) -> None:
        """A call that failed or was cancelled: one that was sent may have been billed, so it
        keeps its reservation's (conservative) cost, since nothing better is known."""
        if ticket is not None and self._admitter is not None:
            cost = ticket.cost if sent else Decimal(0)
            self._admitter.settle(ticket, 0, 0, cost, sent=sent)

    async def _settle_answer(self, ticket: Ticket | None, answer: Answer) -> None:
        priced = self._prices.lookup(answer.route.provider, answer.route.model)
        usage = answer.usage
        cost = priced.price.cost(usage.prompt_tokens, usage.completion_tokens)
        self._metrics.count_cost(answer.route.provider, priced.label, float(cost))
        if ticket is not None and self._admitter is not None:
            await self._admitter.settle_now(
                ticket, usage.prompt_tokens, usage.completion_tokens, cost, sent=True
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
