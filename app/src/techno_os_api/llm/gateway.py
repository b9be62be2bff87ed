"""The LLM gateway: decides whether a client's call may go out, sends it to a provider (or its
fallbacks) through that provider's circuit breaker, whole or streamed, and records what
happened.

The order of the checks is the contract: nothing reaches the network unless the provider is
allowed (VERITTA_LLM_ALLOWED_PROVIDERS), the client key may use it and the model, the call fits
the key's max_tokens cap, the provider has its API key, its adapter can translate every
parameter of the request (else a 400 naming the parameter and the provider), the key's limits
and budget admit the call, and the provider's breaker gives a permit.

One place decides a call's outcome (`_outcome`): success, a breaker failure, a client error, a
content filter (an answer, so a success), or an interrupted stream. The breaker and the metrics
observe that outcome; each error kind, with its status and metric label, is defined once in
`core/errors.py`. No web framework here.

Streams: the provider's stream is opened and its first content event awaited (within the
attempt's timeout, keep-alives not counting) before anything is answered, so a failure before
it is an ordinary failure, with its status code and the fallbacks. After it, `ChatStream` hands
out the events with LLM_STREAM_IDLE_TIMEOUT_SECONDS between them; a failure then is
`stream_interrupted`, a breaker failure, reported in-band by the route. The provider's
connection slot, breaker permit and the call's budget reservation are held until the stream
ends, and settled with the usage the provider streamed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

from techno_os_api.auth.admission import Admitter, Ticket
from techno_os_api.auth.keys import ClientKey, model_allowed
from techno_os_api.core import errors as e
from techno_os_api.core.config import ALLOWLIST_ENV, KNOWN_PROVIDERS, Settings
from techno_os_api.core.errors import APIError, Verdict
from techno_os_api.llm.breaker import CircuitBreaker, CircuitOpenError, Clock, Permit, State
from techno_os_api.llm.completion import Completion, Delta
from techno_os_api.llm.metrics import Metrics
from techno_os_api.llm.pricing import PriceTable
from techno_os_api.llm.providers import ModelFailure, Provider, Refused
from techno_os_api.llm.schemas import ChatCompletionRequest
from techno_os_api.llm.transport import (
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderResponseError,
)
from techno_os_api.llm.usage import Usage, estimate_prompt_tokens

log = logging.getLogger(__name__)

# Outcomes after which the next alternative of LLM_FALLBACKS is tried: the provider is unwell or
# unreachable right now. Never after the client's own error, a bad provider key or a filter.
_FALLS_BACK = frozenset({e.CIRCUIT_OPEN, e.TIMEOUT, e.PROVIDER_ERROR, e.PROVIDER_RATE_LIMITED})

T = TypeVar("T")


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
    fallback: bool

    @property
    def usage(self) -> Usage:
        return self.completion.usage


@dataclass
class _Call:
    """One admitted call: each route it may take with the provider request prepared for it, the
    budget ticket, and the routes it was sent to (a failed one may still have been billed)."""

    routes: list[tuple[Route, Any]]
    ticket: Ticket | None
    sent: list[Route] = field(default_factory=list)


class _IdleTimer:
    """LLM_STREAM_IDLE_TIMEOUT_SECONDS for a whole stream with one timer: each wait moves its
    deadline (a float, not a new timer per event), and the timer cancels the waiting task
    only once the deadline has really passed, the way `asyncio.timeout` does."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._deadline = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._waiting: asyncio.Task[Any] | None = None
        self.expired = False

    def start(self) -> None:
        self._deadline = self._loop.time() + self._seconds
        self._waiting = asyncio.current_task()
        if self._handle is None:
            self._handle = self._loop.call_at(self._deadline, self._check)

    def stop(self) -> None:
        self._waiting = None

    def close(self) -> None:
        self._waiting = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def timed_out(self) -> bool:
        """After a CancelledError while waiting: whether it was this timer's (and only it)."""
        task = asyncio.current_task()
        return self.expired and task is not None and task.uncancel() == 0

    def _check(self) -> None:
        self._handle = None
        if self._waiting is None:
            return  # re-armed by the next wait
        if self._loop.time() >= self._deadline:
            self.expired = True
            self._waiting.cancel()
        else:
            self._handle = self._loop.call_at(self._deadline, self._check)


class ChatStream:
    """A stream whose first content event has arrived. `next()` gives the events in order,
    then None; a failure raises `APIError(stream_interrupted)`, already counted. `aclose()`
    ends it early (the client left): the upstream request is cancelled, no breaker verdict."""

    def __init__(
        self,
        gateway: LLMGateway,
        call: _Call,
        route: Route,
        events: AsyncGenerator[Delta, None],
        first: Delta,
        permit: Permit,
        started: float,
        fallback: bool,
    ) -> None:
        self.route = route
        self.fallback = fallback
        self.usage: Usage | None = first.usage
        self._gateway = gateway
        self._call = call
        self._events = events
        self._first: Delta | None = first
        self._permit = permit
        self._started = started
        self._ended = False
        self._idle = _IdleTimer(gateway.idle_timeout_seconds)

    async def next(self) -> Delta | None:
        if self._ended:
            return None
        if self._first is not None:
            delta, self._first = self._first, None
            return delta
        idle = self._idle
        idle.start()
        try:
            delta = await anext(self._events)
        except StopAsyncIteration:
            self._end()
            await self._gateway._stream_ended(self._call, self.route, self._permit,
                                              self._started, self.usage)  # fmt: skip
            return None
        except asyncio.CancelledError:
            if not idle.timed_out():
                raise
            self._fail(TimeoutError())
        except Exception as exc:
            self._fail(exc)
        finally:
            idle.stop()
        if delta.usage is not None:
            self.usage = delta.usage
        return delta

    def _end(self) -> None:
        self._ended = True
        self._idle.close()

    def _fail(self, exc: BaseException) -> NoReturn:
        self._end()
        error = self._gateway._stream_failed(self._call, self.route, self._permit,
                                             self._started, exc)  # fmt: skip
        if error is None:
            raise exc
        raise error from None

    async def aclose(self) -> None:
        if self._ended:
            return
        self._end()
        try:
            await self._events.aclose()  # closes the provider's connection
        finally:
            self._gateway._stream_abandoned(self._call, self.route, self._permit)


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
        self.idle_timeout_seconds = settings.llm_stream_idle_timeout_seconds
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
        # SECONDS for one, and that wait is never blamed on the provider. A stream holds its
        # slot until it ends.
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
        call = await self._admit_call(body, key)
        try:
            answer = await self._try_routes(call, self._attempt)
        except BaseException:
            self._settle(call.ticket, sent=bool(call.sent))
            raise
        await self._settle_usage(call.ticket, answer.route, answer.usage)
        return answer

    async def stream(self, body: ChatCompletionRequest, key: ClientKey) -> ChatStream:
        """Check, admit and open a streamed call: the stream of the first route whose first
        content event arrives. The caller must drain it or `aclose()` it."""
        call = await self._admit_call(body, key)
        try:
            return await self._try_routes(call, self._open_stream)
        except BaseException:
            self._settle(call.ticket, sent=bool(call.sent))
            raise

    async def _admit_call(self, body: ChatCompletionRequest, key: ClientKey) -> _Call:
        primary = self.route(body.model)
        self._check_allowed(primary)
        self._check_key(key, primary)
        max_tokens = self._max_tokens(body, key)
        self._check_usable(primary)
        routes = [(primary, self._prepare(primary, body, max_tokens))]
        for route in self._alternatives(primary, key):
            try:
                routes.append((route, self._prepare(route, body, max_tokens)))
            except APIError as exc:  # it cannot take this request: not an alternative for it
                log.info("fallback %s skipped for this call: %s", route, exc.message)
        if len(routes) == 1:
            self._check_circuit(primary)  # refused at once, before any limit is spent

        # The most the call can use and cost, on whichever route answers (module llm.usage).
        prompt = estimate_prompt_tokens(
            [m.model_dump(exclude_none=True) for m in body.messages],
            [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
            body.response_format.model_dump(by_alias=True) if body.response_format else None,
        )
        completion_bound = max_tokens or self._default_max_tokens
        cost = max(
            self._prices.lookup(r.provider, r.model).price.cost(prompt, completion_bound)
            for r, _ in routes
        )
        ticket = await self._admit(key, prompt + completion_bound, cost)
        return _Call(routes, ticket)

    def _prepare(self, route: Route, body: ChatCompletionRequest, max_tokens: int | None) -> Any:
        try:
            return self._providers[route.provider].prepare(body, route.model, max_tokens)
        except Refused as exc:
            raise APIError(
                e.UNSUPPORTED_PARAMETER, str(exc), provider=route.provider, param=exc.param
            ) from None

    async def _try_routes(
        self, call: _Call, attempt: Callable[[_Call, Route, Any, float, bool], Awaitable[T]]
    ) -> T:
        """Try each route in turn within the overall deadline."""
        deadline = time.monotonic() + self._deadline
        for index, (route, prepared) in enumerate(call.routes):
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise APIError(
                        e.TIMEOUT,
                        f"no answer within the call's deadline of {self._deadline:g}s "
                        "(LLM_DEADLINE_SECONDS)",
                        provider=route.provider,
                    )
                return await attempt(
                    call, route, prepared, min(self._timeout, remaining), index > 0
                )
            except APIError as exc:
                last = index == len(call.routes) - 1
                if last or exc.kind not in _FALLS_BACK:
                    raise
                following = call.routes[index + 1][0]
                self._metrics.count_fallback(route.provider, following.provider)
                log.warning("%s failed (%s): falling back to %s", route, exc.kind.code, following)
        raise AssertionError("unreachable: the last route raises or returns")

    async def _take_slot(self, name: str) -> asyncio.Semaphore:
        slot = self._slots[name]
        if not slot.locked():
            await slot.acquire()  # free: no wait, no timer
            return slot
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
        return slot

    async def _attempt(
        self, call: _Call, route: Route, prepared: Any, timeout: float, fallback: bool
    ) -> Answer:
        name = route.provider
        slot = await self._take_slot(name)
        try:
            permit = self._permit(name)
            started = time.perf_counter()
            call.sent.append(route)
            try:
                async with asyncio.timeout(timeout):
                    completion = await self._providers[name].complete(prepared)
            except BaseException as exc:
                error = self._outcome(route, permit, started, exc, timeout)
                if error is None:
                    raise
                raise error from None
            self._succeeded(route, permit, started, completion.usage)
            return Answer(route, completion, fallback)
        finally:
            slot.release()

    async def _open_stream(
        self, call: _Call, route: Route, prepared: Any, timeout: float, fallback: bool
    ) -> ChatStream:
        name = route.provider
        slot = await self._take_slot(name)
        try:
            permit = self._permit(name)
        except BaseException:
            slot.release()
            raise
        started = time.perf_counter()
        call.sent.append(route)
        events = self._providers[name].stream(prepared)
        try:
            async with asyncio.timeout(timeout):
                first = await anext(events)
        except BaseException as exc:
            slot.release()
            await events.aclose()
            if isinstance(exc, StopAsyncIteration):
                exc = ProviderResponseError(name, "the stream ended without an answer")
            error = self._outcome(route, permit, started, exc, timeout)
            if error is None:
                raise
            raise error from None
        self._metrics.observe_first_token(name, time.perf_counter() - started)
        return ChatStream(self, call, route, events, first, permit, started, fallback)

    # --- a stream's end ----------------------------------------------------------------------
    async def _stream_ended(
        self, call: _Call, route: Route, permit: Permit, started: float, usage: Usage | None
    ) -> None:
        self._slots[route.provider].release()
        self._succeeded(route, permit, started, usage or Usage())
        if usage is None:
            log.warning("%s's stream ended without usage: its reservation is charged", route)
            self._settle(call.ticket, sent=True)
            return
        await self._settle_usage(call.ticket, route, usage)

    def _stream_failed(
        self, call: _Call, route: Route, permit: Permit, started: float, exc: BaseException
    ) -> APIError | None:
        self._slots[route.provider].release()
        self._settle(call.ticket, sent=True)
        return self._outcome(route, permit, started, exc, self.idle_timeout_seconds, streamed=True)

    def _stream_abandoned(self, call: _Call, route: Route, permit: Permit) -> None:
        """The client went away mid-stream: says nothing about the provider."""
        self._slots[route.provider].release()
        self._breakers[route.provider].release(permit)
        self._settle(call.ticket, sent=True)

    # --- outcomes ----------------------------------------------------------------------------
    def _succeeded(self, route: Route, permit: Permit, started: float, usage: Usage) -> None:
        name = route.provider
        self._breakers[name].record_success(permit)
        self._metrics.observe_call(name, time.perf_counter() - started)
        self._metrics.count_tokens(name, usage.prompt_tokens, usage.completion_tokens)

    def _outcome(
        self,
        route: Route,
        permit: Permit,
        started: float,
        exc: BaseException,
        timeout: float,
        *,
        streamed: bool = False,
    ) -> APIError | None:
        """The one place a failed call is classified: the error the client gets, and what the
        breaker and the metrics learn. None: not the provider's doing (cancelled, a bug).
        `streamed`: the failure came after the first streamed event, so whatever it was, the
        stream was interrupted."""
        name = route.provider
        breaker = self._breakers[name]
        error = self._classify(route, exc, timeout, streamed)
        if error is None:
            breaker.release(permit)  # the client went away, or a bug: no verdict
            return None
        if streamed:
            error = APIError(
                e.STREAM_INTERRUPTED,
                f"the stream from {name} was interrupted: {error.message}",
                provider=name,
                retry_after=error.retry_after,
            )
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
            log.warning("%s answered without a usable completion: %s", name, error.message)
        else:
            breaker.release(permit)
            log.warning("%s refused the call: %s", name, error.message)
        return error

    def _classify(
        self, route: Route, exc: BaseException, timeout: float, streamed: bool
    ) -> APIError | None:
        name = route.provider
        if isinstance(exc, TimeoutError):
            if streamed:
                detail = f"no event for {timeout:g}s (LLM_STREAM_IDLE_TIMEOUT_SECONDS)"
            else:
                detail = f"did not answer within {timeout:g}s (LLM_TIMEOUT_SECONDS)"
            return APIError(e.TIMEOUT, f"{name} {detail}", provider=name)
        if isinstance(exc, ProviderHTTPError):
            status = exc.status_code
            upstream = {"upstream_status": status}
            if status == 429:
                return APIError(
                    e.PROVIDER_RATE_LIMITED,
                    f"{name} is rate limiting the gateway's account: {exc.message}",
                    provider=name,
                    retry_after=exc.retry_after,
                    extra=upstream,
                )
            if exc.auth:
                return APIError(
                    e.PROVIDER_AUTH_ERROR,
                    f"{name} refused the gateway's credentials (HTTP {status}): operators, "
                    f"check {name.upper()}_API_KEY and the provider account. Provider said: "
                    f"{exc.message}",
                    provider=name,
                    extra=upstream,
                )
            if 400 <= status < 500 and status not in (408, 409):
                return APIError(
                    e.CLIENT_ERROR,
                    f"{name} rejected the request: {exc.message}",
                    provider=name,
                    extra=upstream,
                )
            return APIError(
                e.PROVIDER_ERROR,
                f"{name} failed: HTTP {status}: {exc.message}",
                provider=name,
                retry_after=exc.retry_after,
                extra=upstream,
            )
        if isinstance(exc, ModelFailure):
            return APIError(e.MODEL_ERROR, str(exc), provider=name)
        if isinstance(exc, ProviderConnectionError | ProviderResponseError | OSError):
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

    async def _settle_usage(self, ticket: Ticket | None, route: Route, usage: Usage) -> None:
        priced = self._prices.lookup(route.provider, route.model)
        cost = priced.price.cost(usage.prompt_tokens, usage.completion_tokens)
        self._metrics.count_cost(route.provider, priced.label, float(cost))
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
