"""Runbook § MÉTRICAS LLM (F9.9-B): the API exposes the runbook's metrics with the runbook's
labels, Prometheus has scraped them, and every PromQL query of the runbook (in its corrected form
where the original is invalid) is evaluated by the live Prometheus without error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._support import REPO, Target, wait_until

pytestmark = pytest.mark.readonly

RUNBOOK_ERROR_TYPES = {"timeout", "provider_error", "circuit_open"}

# family -> (type, label names of its samples, minus `le` on histogram buckets)
FAMILIES = {
    "llm_request_latency_seconds": ("histogram", {"provider"}),
    "llm_tokens_total": ("counter", {"provider", "type"}),
    "llm_errors_total": ("counter", {"provider", "error_type"}),
    "llm_circuit_state": ("gauge", {"provider"}),
}
# One series per family that Prometheus must hold after a scrape of the API.
SCRAPED_SERIES = [
    "llm_request_latency_seconds_bucket",
    "llm_tokens_total",
    "llm_errors_total",
    "llm_circuit_state",
    "techno_os_build_info",
]


# --- the runbook's PromQL ---------------------------------------------------------------------
@dataclass(frozen=True)
class RunbookQuery:
    name: str
    original: str
    corrected: str | None

    @property
    def expr(self) -> str:
        return self.corrected or self.original


# Used when files/promql/runbook_queries.* is absent: the runbook's queries, in its order.
BUILTIN_QUERIES = [
    RunbookQuery(
        "p95_latency_openai",
        'histogram_quantile(0.95, llm_request_latency_seconds{provider="openai"})',
        "histogram_quantile(0.95, sum by (le) "
        '(rate(llm_request_latency_seconds_bucket{provider="openai"}[5m])))',
    ),
    RunbookQuery(
        "p99_latency_overall",
        "histogram_quantile(0.99, rate(llm_request_latency_seconds_bucket[5m]))",
        "histogram_quantile(0.99, sum by (le) (rate(llm_request_latency_seconds_bucket[5m])))",
    ),
    RunbookQuery("tokens_by_provider_and_type", "sum(llm_tokens_total) by (provider, type)", None),
    RunbookQuery("completion_token_rate", 'rate(llm_tokens_total{type="completion"}[5m])', None),
    RunbookQuery("errors_by_type", "sum(llm_errors_total) by (provider, error_type)", None),
    RunbookQuery(
        "provider_error_rate_5m", 'rate(llm_errors_total{error_type="provider_error"}[5m])', None
    ),
    RunbookQuery(
        "circuit_open_now",
        'llm_errors_total{error_type="circuit_open"} > 0',
        "llm_circuit_state == 1",
    ),
    RunbookQuery("timeout_rate_1m", 'rate(llm_errors_total{error_type="timeout"}[1m])', None),
    RunbookQuery(
        "provider_error_rate_1m", 'rate(llm_errors_total{error_type="provider_error"}[1m])', None
    ),
]


def _entries(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, dict):
        for key in ("queries", "runbook_queries", "items"):
            if key in document:
                return _entries(document[key])
        # {name: {original:..., corrected:...}} or {name: "expr"}
        return [
            {"name": k, **(v if isinstance(v, dict) else {"original": v})}
            for k, v in document.items()
        ]
    return [e if isinstance(e, dict) else {"original": e} for e in document]


def load_runbook_queries() -> list[RunbookQuery]:
    """files/promql/runbook_queries.{yml,yaml,json,py} when present, else BUILTIN_QUERIES."""
    folder = REPO / "files" / "promql"
    for suffix in ("yml", "yaml", "json", "py"):
        path = folder / f"runbook_queries.{suffix}"
        if path.is_file():
            return _parse_query_file(path)
    return BUILTIN_QUERIES


def _parse_query_file(path: Path) -> list[RunbookQuery]:
    if path.suffix == ".json":
        document = json.loads(path.read_text())
    elif path.suffix == ".py":
        namespace: dict[str, Any] = {}
        exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102
        document = next(
            namespace[k] for k in ("QUERIES", "RUNBOOK_QUERIES", "queries") if k in namespace
        )
    else:
        import yaml

        document = yaml.safe_load(path.read_text())
    out = []
    for number, entry in enumerate(_entries(document), 1):
        original = next(
            (entry[k] for k in ("original", "runbook", "query", "expr") if entry.get(k)), None
        )
        corrected = next(
            (entry[k] for k in ("corrected", "fixed", "correct", "replacement") if entry.get(k)),
            None,
        )
        if not original and not corrected:
            continue
        name = str(entry.get("name") or entry.get("id") or entry.get("title") or f"q{number}")
        out.append(RunbookQuery(name, str(original or corrected), corrected and str(corrected)))
    assert out, f"{path} holds no query"
    return out


RUNBOOK_QUERIES = load_runbook_queries()


# --- checks -------------------------------------------------------------------------------
def check_llm_metrics_exposed(t: Target) -> None:
    exposition = t.metrics()
    known = set(t.known_providers)
    for family, (kind, labels) in FAMILIES.items():
        assert exposition.types.get(family) == kind, (
            f"/metrics declares {family} as {exposition.types.get(family)!r}, expected {kind}"
        )
        samples = exposition.family(family)
        assert samples, f"/metrics has no sample of {family}"
        for s in samples:
            names = set(s.labels) - ({"le"} if s.name.endswith("_bucket") else set())
            assert names == labels, f"{s.name}{s.labels}: labels {names}, expected {labels}"
            assert s.labels["provider"] in known, f"{s.name}: unknown provider {s.labels}"
    types = {s.labels["type"] for s in exposition.family("llm_tokens_total")}
    assert types <= {"prompt", "completion"}, f"llm_tokens_total types {types}"
    errors = {s.labels["error_type"] for s in exposition.family("llm_errors_total")}
    assert errors >= RUNBOOK_ERROR_TYPES, f"llm_errors_total lacks {RUNBOOK_ERROR_TYPES - errors}"
    states = {s.value for s in exposition.family("llm_circuit_state")}
    assert states <= {0.0, 1.0, 2.0}, f"llm_circuit_state values {states}"


def check_prometheus_scraped_llm_metrics(t: Target) -> None:
    job = '{job="techno-os-api"}'
    for series in SCRAPED_SERIES:
        found = wait_until(
            lambda s=series: t.prom_query(f"count({s}{job})"),
            timeout=40,
            what=f"Prometheus holds {series} from job techno-os-api",
        )
        assert float(found[0]["value"][1]) > 0


@pytest.mark.role("api")
def test_metrics_endpoint_exposes_the_four_llm_metrics_with_the_runbook_labels(
    target: Target,
) -> None:
    check_llm_metrics_exposed(target)


@pytest.mark.role("edge")
def test_prometheus_has_scraped_the_llm_metrics_from_the_api(target: Target) -> None:
    check_prometheus_scraped_llm_metrics(target)


@pytest.mark.role("edge")
def test_build_info_in_prometheus_matches_the_running_version(target: Target, sandbox) -> None:
    versions = {
        api.name: api.api("GET", "/version", key=None).json()["version"]
        for api in sandbox.by_role("api")
    }
    result = wait_until(
        lambda: target.prom_query('techno_os_build_info{job="techno-os-api"}'),
        timeout=40,
        what="techno_os_build_info scraped",
    )
    scraped = {r["metric"]["instance"]: r["metric"]["version"] for r in result}
    assert scraped == versions


@pytest.mark.role("edge")
@pytest.mark.parametrize("query", RUNBOOK_QUERIES, ids=[q.name for q in RUNBOOK_QUERIES])
def test_runbook_promql_query_evaluates_without_error(target: Target, query: RunbookQuery) -> None:
    answer = target.prom_query_raw(query.expr)
    assert answer.get("status") == "success", (
        f"{query.expr!r} (runbook: {query.original!r}): {answer.get('errorType')}: "
        f"{answer.get('error')}"
    )
    assert not answer.get("warnings"), f"{query.expr!r}: warnings {answer['warnings']}"
