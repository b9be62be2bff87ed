"""Runbook § DIAGNÓSTICO CIRCUIT BREAKER, as a drill against the sandbox's provider stand-in
(container techno-os-llm-standin, compose profile `sandbox`, provider `openai`).

With the runbook's figures (3 failures, 60 s cooldown, 30 s timeout): three failed calls open the
circuit; the next call is rejected at once and Prometheus shows it in
`llm_errors_total{error_type="circuit_open"}` and `llm_circuit_state`; after the cooldown exactly
one trial goes through; a failed trial reopens, a successful one closes;
`docker restart techno-os-api` resets the breaker; a provider that hangs past LLM_TIMEOUT_SECONDS
yields error_type="timeout".

Each test starts from a fresh API process (the runbook's restart), so each stands alone.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator

import pytest

from ._support import Target, wait_until

pytestmark = [pytest.mark.drill, pytest.mark.role("api")]

PROVIDER = "openai"
MODEL = f"{PROVIDER}/gpt-4o-mini"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "circuit breaker drill"}]}
CLOSED, OPEN, HALF_OPEN = 0.0, 1.0, 2.0
SCRAPE_WAIT = 45  # seconds: a 15 s scrape interval, plus a margin


class Drill:
    """The API and the stand-in, seen from an API host; Prometheus, from the edge."""

    def __init__(self, t: Target, edge: Target) -> None:
        self.t = t
        self.edge = edge
        env = t.env_file()
        self.threshold = int(env.get("LLM_CIRCUIT_FAILURE_THRESHOLD", 3))
        self.cooldown = float(env.get("LLM_CIRCUIT_COOLDOWN_SECONDS", 60))
        self.timeout = float(env.get("LLM_TIMEOUT_SECONDS", 30))
        allowed = env.get("VERITTA_LLM_ALLOWED_PROVIDERS", "").split(",")
        assert PROVIDER in allowed, f"{PROVIDER} is not allowed in the sandbox's .env"
        assert t.host.service("techno-os-llm-standin").is_running, (
            "the provider stand-in (techno-os-llm-standin.service) is not running: deploy the "
            "sandbox with group data llm_standin = True"
        )
        self.control_url = f"http://127.0.0.1:{t.cfg('standin_port')}/_control"

    # the stand-in
    def standin(self, mode: str | None = None, **extra: object) -> dict:
        body = dict(extra, **({"mode": mode} if mode else {}))
        response = self.t.http("POST" if body else "GET", self.control_url, body or None)
        assert response.status == 200, f"stand-in control: {response.status} {response.body}"
        return response.json()

    def provider_requests(self) -> int:
        return int(self.standin()["requests"])

    # the API
    def call(self, timeout: float = 15):
        return self.t.api("POST", "/v1/chat/completions", CHAT, timeout=timeout)

    def gauge(self) -> float:
        return self.t.metrics().value("llm_circuit_state", provider=PROVIDER)

    def errors(self, error_type: str) -> float:
        return self.t.metrics().value("llm_errors_total", provider=PROVIDER, error_type=error_type)

    def restart_api(self) -> None:
        """The runbook's manual action: `docker restart techno-os-api`."""
        self.t.check("docker restart %s", self.t.cfg("api_container"))
        self.t.wait_api_healthy()
        assert self.gauge() == CLOSED, "a fresh API process has a circuit that is not CLOSED"

    def open_circuit(self) -> float:
        """`threshold` failed calls (5xx, and a 429 last, passed on as a 429 with its
        Retry-After); returns the host time it opened."""
        self.standin("fail500", reset=True)
        for n in range(self.threshold):
            last = n == self.threshold - 1
            if last:
                self.standin("fail429")
            response = self.call()
            expected = 429 if last else 502
            assert response.status == expected, (
                f"failed provider call {n + 1}: expected {expected}, got {response.status} "
                f"{response.body[:300]}"
            )
        opened = float(self.t.check("date +%s.%N"))
        assert self.provider_requests() == self.threshold
        assert self.gauge() == OPEN, f"{self.threshold} failures did not open the circuit"
        self.standin("fail500")
        return opened

    def wait_half_open(self, opened: float) -> None:
        wait_until(
            lambda: self.gauge() == HALF_OPEN,
            timeout=self.cooldown + 15,
            what="llm_circuit_state becomes HALF_OPEN after the cooldown",
        )
        waited = float(self.t.check("date +%s.%N")) - opened
        assert waited >= self.cooldown - 1, f"HALF_OPEN after {waited:.1f} s, before the cooldown"

    # Prometheus
    def prom_fresh(self, expr: str, since: float, what: str) -> list[dict]:
        """Wait until `expr` has a result scraped after host time `since`."""
        query = f"({expr}) and (timestamp({expr}) > {since:.3f})"
        return wait_until(
            lambda: self.edge.prom_query(query), timeout=SCRAPE_WAIT, what=f"Prometheus: {what}"
        )


@pytest.fixture(scope="module")
def drill(target: Target, sandbox) -> Iterator[Drill]:
    if not target.disposable:
        pytest.fail(f"refusing to run a drill against {target.name}: not disposable")
    d = Drill(target, sandbox.the("edge"))
    yield d
    d.standin("ok", hang_seconds=60, reset=True)
    d.restart_api()  # leave a CLOSED breaker and a log without the drill's errors


@pytest.fixture(autouse=True)
def fresh_api(drill: Drill) -> None:
    drill.standin("ok", hang_seconds=60, reset=True)
    drill.restart_api()


def test_the_sandbox_uses_the_runbook_breaker_figures(drill: Drill) -> None:
    assert (drill.threshold, drill.cooldown, drill.timeout) == (3, 60.0, 30.0)


def test_three_failures_open_the_circuit_and_the_next_call_is_rejected_at_once(
    drill: Drill,
) -> None:
    drill.open_circuit()
    failures = drill.errors("provider_error") + drill.errors("rate_limited")
    assert failures == drill.threshold

    rejected_at = float(drill.t.check("date +%s.%N"))
    response = drill.call()
    assert response.status == 503, f"expected 503 circuit open, got {response.status}"
    assert response.seconds < 2, f"the rejection took {response.seconds:.1f} s"
    assert int(response.headers.get("retry-after", "0")) >= 1, response.headers
    assert drill.provider_requests() == drill.threshold, "a rejected call reached the provider"
    assert drill.errors("circuit_open") == 1
    assert drill.gauge() == OPEN

    drill.prom_fresh(
        f'llm_errors_total{{provider="{PROVIDER}",error_type="circuit_open"}} > 0',
        rejected_at,
        "circuit_open errors counted",
    )
    # The runbook's own query now lists the provider.
    runbook = drill.edge.prom_query('llm_errors_total{error_type="circuit_open"} > 0')
    assert PROVIDER in {r["metric"]["provider"] for r in runbook}
    drill.prom_fresh(
        f'llm_circuit_state{{provider="{PROVIDER}"}} == 1', rejected_at, "circuit state OPEN"
    )


def test_after_the_cooldown_a_failed_trial_reopens_the_circuit(drill: Drill) -> None:
    opened = drill.open_circuit()
    assert drill.call().status == 503  # still OPEN before the cooldown
    drill.wait_half_open(opened)

    trial = drill.call()
    assert trial.status == 502, f"the trial should reach the failing provider: {trial.status}"
    assert drill.provider_requests() == drill.threshold + 1, "the trial did not reach the provider"
    assert drill.gauge() == OPEN, "a failed trial did not reopen the circuit"

    again = drill.call()
    assert again.status == 503
    assert drill.provider_requests() == drill.threshold + 1
    retry_after = int(again.headers.get("retry-after", "0"))
    assert retry_after >= drill.cooldown - 5, f"reopened for {retry_after} s, not a full cooldown"


def test_after_the_cooldown_one_trial_goes_through_and_its_success_closes_the_circuit(
    drill: Drill,
) -> None:
    opened = drill.open_circuit()
    drill.wait_half_open(opened)
    # The provider is healthy again but slow: three callers race for the single trial.
    drill.standin("hang", hang_seconds=3)
    curl = (
        "curl -s -o /dev/null -w '%{http_code}\\n' -m 30 -X POST "
        f"-H 'Authorization: Bearer {drill.t.api_key}' "
        "-H 'Content-Type: application/json' --data-binary "
        + shlex.quote(json.dumps(CHAT))
        + " "
        + shlex.quote(drill.t.api_url + "/v1/chat/completions")
    )
    statuses = sorted(drill.t.check(f"for i in 1 2 3; do {curl} & done; wait").split())
    assert statuses == ["200", "503", "503"], f"concurrent callers in HALF_OPEN got {statuses}"
    assert drill.provider_requests() == drill.threshold + 1, "more than one trial went through"
    assert drill.gauge() == CLOSED, "a successful trial did not close the circuit"

    closed_at = float(drill.t.check("date +%s.%N"))
    drill.standin("ok")
    response = drill.call()
    assert response.status == 200, response.body[:300]
    assert response.json()["usage"]["total_tokens"] > 0
    metrics = drill.t.metrics()
    assert metrics.value("llm_tokens_total", provider=PROVIDER, type="completion") > 0
    drill.prom_fresh(
        f'llm_circuit_state{{provider="{PROVIDER}"}} == 0', closed_at, "circuit state CLOSED"
    )


def test_docker_restart_of_the_api_resets_an_open_circuit(drill: Drill) -> None:
    drill.open_circuit()
    assert drill.call().status == 503
    drill.standin("ok")

    drill.restart_api()  # `docker restart techno-os-api`, then CLOSED
    restarted_at = float(drill.t.check("date +%s.%N"))
    response = drill.call()
    assert response.status == 200, f"after the restart: {response.status} {response.body[:300]}"
    drill.prom_fresh(
        f'llm_circuit_state{{provider="{PROVIDER}"}} == 0', restarted_at, "circuit state CLOSED"
    )


def test_a_provider_hanging_past_the_timeout_yields_error_type_timeout(drill: Drill) -> None:
    drill.standin("hang", hang_seconds=drill.timeout + 15)
    started = time.monotonic()
    response = drill.call(timeout=drill.timeout + 30)
    elapsed = time.monotonic() - started
    assert response.status == 504, f"expected 504 timeout, got {response.status}"
    assert drill.timeout - 1 <= elapsed <= drill.timeout + 5, f"answered after {elapsed:.1f} s"
    assert drill.errors("timeout") == 1
    assert drill.gauge() == CLOSED, "one timeout must not open the circuit"
    timed_out = float(drill.t.check("date +%s.%N"))
    drill.prom_fresh(
        f'llm_errors_total{{provider="{PROVIDER}",error_type="timeout"}} > 0',
        timed_out - 1,
        "timeout errors counted",
    )
