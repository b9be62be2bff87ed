"""Every metric object of the service, in one registry per application instance.

Names and labels are the runbook's; do not rename them. Label values come only from the known
provider set and the fixed error types below, never from user input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from techno_os_api.core.errors import LLM_ERROR_LABELS
from techno_os_api.llm.breaker import State

# Resolves the runbook's thresholds (p50 < 2 s, p95 < 10 s, p99 > 20 s) and the 30 s timeout,
# with finer buckets below 2 s for the healthy case.
LATENCY_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)

TOKEN_TYPES: Final = ("prompt", "completion")

# llm_errors_total{error_type}: every kind's label, defined with the kind in core/errors.py.
ERROR_TYPES: Final = LLM_ERROR_LABELS

# api_auth_failures_total{reason}: what was wrong with the presented key, or an address that
# failed too often and is refused for the rest of the minute.
AUTH_FAILURE_REASONS: Final = ("missing", "malformed", "invalid", "expired", "blocked")
# api_requests_refused_total{reason}: a key's own limits.
REFUSAL_REASONS: Final = ("rpm", "tpm", "parallel", "budget", "permission")


class _CircuitStateCollector(Collector):
    """`llm_circuit_state`, read from the breakers at scrape time, so an OPEN circuit whose
    cooldown has elapsed shows HALF_OPEN even before the next call."""

    def __init__(self, states: Callable[[], Mapping[str, State]]) -> None:
        self._states = states

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "llm_circuit_state",
            "Circuit breaker state per provider: 0 CLOSED, 1 OPEN, 2 HALF_OPEN.",
            labels=["provider"],
        )
        for provider, state in sorted(self._states().items()):
            family.add_metric([provider], float(state.value))
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Metrics:
    """The service's registry and the metric objects in it."""

    def __init__(
        self,
        version: str,
        providers: Iterable[str],
        model_labels: Callable[[str], Iterable[str]] = lambda provider: (),
    ) -> None:
        # No `*_created` series: they double the exposition and nothing here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.providers = tuple(providers)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

        self.build_info = Gauge(
            "techno_os_build_info",
            "Build of the running API; the value is always 1.",
            ["version"],
            registry=self.registry,
        )
        self.build_info.labels(version=version).set(1)

        self.latency = Histogram(
            "llm_request_latency_seconds",
            "Duration of LLM provider calls that were sent, successful or not.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "llm_time_to_first_token_seconds",
            "Streams: from sending the request to the provider's first content event "
            "(keep-alives and pings are not content).",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "llm_tokens_total",
            "Tokens reported by the providers, by type (prompt or completion).",
            ["provider", "type"],
            registry=self.registry,
        )
        self.errors = Counter(
            "llm_errors_total",
            "Failed or refused LLM calls, by error type.",
            ["provider", "error_type"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "llm_fallbacks",
            "Calls handed from a failing provider to the next alternative of LLM_FALLBACKS.",
            ["from_provider", "to_provider"],
            registry=self.registry,
        )
        self.cost = Counter(
            "llm_cost_usd",
            "Cost of LLM calls in USD: the providers' reported usage times the price table.",
            ["provider", "model"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "api_auth_failures",
            "Requests refused because of their client key (missing, malformed, unknown or "
            "revoked, expired) or because their address failed too often.",
            ["reason"],
            registry=self.registry,
        )
        self.refused = Counter(
            "api_requests_refused",
            "Requests refused by a client key's own limits or permissions.",
            ["reason"],
            registry=self.registry,
        )
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason=reason)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason=reason)
        # Label children cached per provider: `labels()` is a lock and a dict walk per call.
        self._latency: dict[str, Histogram] = {}
        self._ttft: dict[str, Histogram] = {}
        self._tokens: dict[str, tuple[Counter, Counter]] = {}
        # Series exist from start-up for every provider that may be called, so rates and
        # alerts see zeros rather than absent series.
        for provider in self.providers:
            self.latency.labels(provider=provider)
            self.time_to_first_token.labels(provider=provider)
            for token_type in TOKEN_TYPES:
                self.tokens.labels(provider=provider, type=token_type)
            for error_type in ERROR_TYPES:
                self.errors.labels(provider=provider, error_type=error_type)
            for model in model_labels(provider):
                self.cost.labels(provider=provider, model=model)

    def track_circuit_states(self, states: Callable[[], Mapping[str, State]]) -> None:
        self.registry.register(_CircuitStateCollector(states))

    def observe_call(self, provider: str, seconds: float) -> None:
        child = self._latency.get(provider)
        if child is None:
            child = self._latency[provider] = self.latency.labels(provider=provider)
        child.observe(seconds)

    def observe_first_token(self, provider: str, seconds: float) -> None:
        child = self._ttft.get(provider)
        if child is None:
            child = self._ttft[provider] = self.time_to_first_token.labels(provider=provider)
        child.observe(seconds)

    def count_tokens(self, provider: str, prompt: int, completion: int) -> None:
        children = self._tokens.get(provider)
        if children is None:
            children = self._tokens[provider] = (
                self.tokens.labels(provider=provider, type="prompt"),
                self.tokens.labels(provider=provider, type="completion"),
            )
        children[0].inc(prompt)
        children[1].inc(completion)

    def count_fallback(self, from_provider: str, to_provider: str) -> None:
        self.fallbacks.labels(from_provider=from_provider, to_provider=to_provider).inc()

    def count_cost(self, provider: str, model_label: str, usd: float) -> None:
        self.cost.labels(provider=provider, model=model_label).inc(usd)

    def count_auth_failure(self, reason: str) -> None:
        if reason not in AUTH_FAILURE_REASONS:
            raise ValueError(f"unknown auth failure reason {reason!r}")
        self.auth_failures.labels(reason=reason).inc()

    def count_refusal(self, reason: str) -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        self.refused.labels(reason=reason).inc()

    def count_error(self, provider: str, error_type: str) -> None:
        if error_type not in ERROR_TYPES:
            raise ValueError(f"unknown error_type {error_type!r}")
        self.errors.labels(provider=provider, error_type=error_type).inc()
