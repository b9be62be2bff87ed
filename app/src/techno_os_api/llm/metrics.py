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

# error_type values. The first three are the runbook's.
TIMEOUT: Final = "timeout"  # no answer within LLM_TIMEOUT_SECONDS (trips the breaker)
PROVIDER_ERROR: Final = "provider_error"  # 5xx, 429, connection error, bad body (trips)
CIRCUIT_OPEN: Final = "circuit_open"  # rejected by an OPEN / busy HALF_OPEN breaker
CLIENT_ERROR: Final = "client_error"  # provider's other 4xx: bad request, bad key (no trip)
NOT_ALLOWED: Final = "not_allowed"  # provider outside the allowlist (never called)
MISSING_API_KEY: Final = "missing_api_key"  # allowed provider without its key (never called)
ERROR_TYPES: Final = (
    TIMEOUT,
    PROVIDER_ERROR,
    CIRCUIT_OPEN,
    CLIENT_ERROR,
    NOT_ALLOWED,
    MISSING_API_KEY,
)


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

    def __init__(self, version: str, providers: Iterable[str]) -> None:
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
        # Label children cached per provider: `labels()` is a lock and a dict walk per call.
        self._latency: dict[str, Histogram] = {}
        self._tokens: dict[str, tuple[Counter, Counter]] = {}
        # Series exist from start-up for every provider that may be called, so rates and
        # alerts see zeros rather than absent series.
        for provider in self.providers:
            self.latency.labels(provider=provider)
            for token_type in TOKEN_TYPES:
                self.tokens.labels(provider=provider, type=token_type)
            for error_type in ERROR_TYPES:
                self.errors.labels(provider=provider, error_type=error_type)

    def track_circuit_states(self, states: Callable[[], Mapping[str, State]]) -> None:
        self.registry.register(_CircuitStateCollector(states))

    def observe_call(self, provider: str, seconds: float) -> None:
        child = self._latency.get(provider)
        if child is None:
            child = self._latency[provider] = self.latency.labels(provider=provider)
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

    def count_error(self, provider: str, error_type: str) -> None:
        if error_type not in ERROR_TYPES:
            raise ValueError(f"unknown error_type {error_type!r}")
        self.errors.labels(provider=provider, error_type=error_type).inc()
