"""The runbook's PromQL (files/promql/runbook_queries.yml): parsed and evaluated with promtool.

Honest accounting: every original query of the runbook parses, none is a syntax error.
The wrong ones are semantic errors: they run and answer another question. So

- every query, original and corrected, goes through `promtool check rules` as the
  expression of a throwaway recording rule (and an invalid query is shown to fail it);
- every query is evaluated with `promtool test rules` against the synthetic series below:
  each corrected query gives the right answer, and each original marked semantic_error
  gives the wrong one (no data, one series per provider instead of the overall figure,
  "open" for a circuit closed long ago);
- docs/runbook.md shows exactly the corrected queries.

Synthetic series: one API instance scraped every 15s, counters growing linearly from
t=0, so every rate() over a fully covered window is exact. Per second:

    latency buckets   le=0.5  le=2  le=10  le=20  le=30  +Inf
    openai               50    95     99    100    100   100
    anthropic             0     0     50     96    100   100
    both                 50    95    149    196    200   200

    openai   p50 0.5  p95 2   p99 10        anthropic p50 10  p99 27.5
    both     p99 = 20 + 10 * (198 - 196) / (200 - 196) = 25

    tokens    openai prompt 20/s, completion 10/s; anthropic prompt 4/s, completion 2/s
    errors    openai provider_error 1/s, timeout 2/s, stream_interrupted 1 per scrape;
              5 circuit_open rejections at 2m
    fallback  anthropic -> openai 3 per scrape (60 in 5 minutes)
    first token (openai, per scrape)  le=0.1 0, le=0.5 1200, le=1 1500, +Inf 1500:
              p95 = 0.5 + 0.5 * (1425 - 1200) / (1500 - 1200) = 0.875
    circuit   openai OPEN 2m..2m45s, HALF_OPEN 3m, CLOSED from 3m15s; anthropic CLOSED
    backup    last success at Unix time -3000 (50 minutes before the test starts)
    WAL       newest segment on the backup host at Unix time -30
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from alerts_support import (
    ORIGINAL_RUNBOOK,
    RUNBOOK,
    RUNBOOK_QUERIES,
    Promtool,
    load_yaml,
    output,
)

STATUSES = {"ok", "semantic_error", "syntax_error", "added"}
API = 'job="techno-os-api", instance="127.0.0.1:8000"'
NODE = 'job="node", instance="127.0.0.1:9100"'
BACKUP = 'job="node", instance="backup:9100"'
EVAL = "10m"


def _series() -> list[dict[str, str]]:
    buckets = {
        # provider: {le: increment per 15s scrape}
        "openai": {"0.5": 750, "2": 1425, "10": 1485, "20": 1500, "30": 1500, "+Inf": 1500},
        "anthropic": {"0.5": 0, "2": 0, "10": 750, "20": 1440, "30": 1500, "+Inf": 1500},
    }
    series = []
    for provider, by_le in buckets.items():
        for le, step in by_le.items():
            series.append(
                {
                    "series": f"llm_request_latency_seconds_bucket"
                    f'{{{API}, provider="{provider}", le="{le}"}}',
                    "values": f"0+{step}x80",
                }
            )
        series.append(
            {
                "series": f'llm_request_latency_seconds_count{{{API}, provider="{provider}"}}',
                "values": f"0+{by_le['+Inf']}x80",
            }
        )
    for provider, prompt, completion in (("openai", 300, 150), ("anthropic", 60, 30)):
        for kind, step in (("prompt", prompt), ("completion", completion)):
            series.append(
                {
                    "series": f'llm_tokens_total{{{API}, provider="{provider}", type="{kind}"}}',
                    "values": f"0+{step}x80",
                }
            )
    for error_type, values in (
        ("provider_error", "0+15x80"),
        ("timeout", "0+30x80"),
        ("stream_interrupted", "0+1x80"),
        ("circuit_open", "0x7 5x72"),
    ):
        series.append(
            {
                "series": f"llm_errors_total"
                f'{{{API}, provider="openai", error_type="{error_type}"}}',
                "values": values,
            }
        )
    for le, step in (("0.1", 0), ("0.5", 1200), ("1", 1500), ("+Inf", 1500)):
        series.append(
            {
                "series": "llm_time_to_first_token_seconds_bucket"
                f'{{{API}, provider="openai", le="{le}"}}',
                "values": f"0+{step}x80",
            }
        )
    series += [
        {
            "series": "llm_fallbacks_total"
            f'{{{API}, from_provider="anthropic", to_provider="openai"}}',
            "values": "0+3x80",
        },
        {"series": f'llm_circuit_state{{{API}, provider="openai"}}', "values": "0x7 1x3 2 0x68"},
        {"series": f'llm_circuit_state{{{API}, provider="anthropic"}}', "values": "0x80"},
        # The last good backup ended 50 minutes before t=0 (Unix time -3000).
        {
            "series": f"techno_os_backup_last_success_timestamp_seconds{{{NODE}}}",
            "values": "-3000x80",
        },
        # The newest WAL segment reached the backup host 30 s before t=0.
        {
            "series": "pgbackrest_archive_last_segment_timestamp_seconds"
            f'{{{BACKUP}, stanza="techno-os"}}',
            "values": "-30x80",
        },
    ]
    return series


def samples(*pairs: tuple[str, float], at: str = EVAL) -> dict[str, Any]:
    return {"eval_time": at, "exp_samples": [{"labels": lbl, "value": v} for lbl, v in pairs]}


OPENAI_CIRCUIT_OPEN = f'llm_errors_total{{{API}, provider="openai", error_type="circuit_open"}}'

# What each corrected query must return on the synthetic series (one or more instants).
CORRECTED: dict[str, list[dict[str, Any]]] = {
    "latency_p95_by_provider": [samples(('{provider="openai"}', 2))],
    "latency_p99_overall": [samples(("{}", 25))],
    "latency_p50_by_provider": [
        samples(('{provider="openai"}', 0.5), ('{provider="anthropic"}', 10))
    ],
    "tokens_total_by_provider_type": [
        samples(
            ('{provider="openai", type="prompt"}', 12000),
            ('{provider="openai", type="completion"}', 6000),
            ('{provider="anthropic", type="prompt"}', 2400),
            ('{provider="anthropic", type="completion"}', 1200),
        )
    ],
    "tokens_completion_rate": [
        samples(
            (f'{{{API}, provider="openai", type="completion"}}', 10),
            (f'{{{API}, provider="anthropic", type="completion"}}', 2),
        )
    ],
    "errors_total_by_provider_type": [
        samples(
            ('{provider="openai", error_type="provider_error"}', 600),
            ('{provider="openai", error_type="timeout"}', 1200),
            ('{provider="openai", error_type="stream_interrupted"}', 40),
            ('{provider="openai", error_type="circuit_open"}', 5),
        )
    ],
    "fallbacks_last_5m": [samples(('{from_provider="anthropic", to_provider="openai"}', 60))],
    "stream_interruptions_last_5m": [samples(('{provider="openai"}', 20))],
    "time_to_first_token_p95": [samples(('{provider="openai"}', 0.875))],
    "errors_provider_error_rate": [
        samples((f'{{{API}, provider="openai", error_type="provider_error"}}', 1))
    ],
    "circuit_state_metric": [
        samples(
            (f'llm_circuit_state{{{API}, provider="openai"}}', 0),
            (f'llm_circuit_state{{{API}, provider="anthropic"}}', 0),
        ),
        samples(
            (f'llm_circuit_state{{{API}, provider="openai"}}', 1),
            (f'llm_circuit_state{{{API}, provider="anthropic"}}', 0),
            at="2m30s",
        ),
    ],
    "circuit_open_now": [
        # Closed since 3m15s: nothing is open at 10m.
        samples(),
        samples((f'llm_circuit_state{{{API}, provider="openai"}}', 1), at="2m30s"),
    ],
    "circuit_rejections_last_minute": [
        samples(),
        samples((f'{{{API}, provider="openai", error_type="circuit_open"}}', 5), at="2m30s"),
    ],
    "timeout_rate_1m": [samples((f'{{{API}, provider="openai", error_type="timeout"}}', 2))],
    "provider_error_rate_1m": [
        samples((f'{{{API}, provider="openai", error_type="provider_error"}}', 1))
    ],
    # 10 minutes after t=0, the backup is 1 hour old.
    "backup_age_seconds": [samples((f"{{{NODE}}}", 3600))],
    # 10 minutes after t=0, the newest archived segment is 630 s old.
    "wal_archive_age_seconds": [samples((f'{{{BACKUP}, stanza="techno-os"}}', 630))],
}

# What each original with a semantic error returns instead: the wrong answer.
ORIGINAL_WRONG: dict[str, list[dict[str, Any]]] = {
    # A classic histogram has no series named llm_request_latency_seconds: no data.
    "latency_p95_by_provider": [samples()],
    # One p99 per provider (10 and 27.5), not the overall 25.
    "latency_p99_overall": [
        samples(
            (f'{{{API}, provider="openai"}}', 10),
            (f'{{{API}, provider="anthropic"}}', 27.5),
        )
    ],
    # The number of rejections since start, not a state.
    "circuit_state_metric": [samples((OPENAI_CIRCUIT_OPEN, 5))],
    # Still "open" at 10m, seven minutes after the circuit closed.
    "circuit_open_now": [samples((OPENAI_CIRCUIT_OPEN, 5))],
}


def queries() -> list[dict[str, Any]]:
    return load_yaml(RUNBOOK_QUERIES)["queries"]


def query(query_id: str) -> dict[str, Any]:
    return next(q for q in queries() if q["id"] == query_id)


IDS = [q["id"] for q in queries()]
ORIGINAL_IDS = [q["id"] for q in queries() if q["original"] is not None]


def evaluate(promtool: Promtool, tmp_path: Path, expr: str, checks: list[dict[str, Any]]) -> None:
    """Run `promtool test rules` with `expr` evaluated at each check's instant."""
    test = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": _series(),
                "promql_expr_test": [{"expr": expr, **check} for check in checks],
            }
        ],
    }
    path = tmp_path / "runbook_query_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, allow_unicode=True), encoding="utf-8")
    result = promtool("test", "rules", path)
    assert result.returncode == 0, f"{expr}\n{output(result)}"


def parse_check(
    promtool: Promtool, tmp_path: Path, name: str, expr: str
) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a throwaway rule file whose only rule evaluates `expr`."""
    rule = {"record": f"runbook:{name}", "expr": expr}
    rules = {"groups": [{"name": "runbook", "rules": [rule]}]}
    path = tmp_path / f"{name}.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return promtool("check", "rules", path)


# ------------------------------------------------------------- the file itself


def test_runbook_queries_file_is_well_formed() -> None:
    assert load_yaml(RUNBOOK_QUERIES)["version"] == 1
    assert len(IDS) == len(set(IDS)), "duplicate ids"
    for q in queries():
        assert set(q) >= {"id", "section", "purpose", "original", "corrected", "status", "reason"}
        assert q["status"] in STATUSES, q["id"]
        assert isinstance(q["corrected"], str) and q["corrected"].strip(), q["id"]
        if q["status"] == "ok":
            assert q["corrected"] == q["original"] and q["reason"] is None, q["id"]
        elif q["status"] == "added":
            assert q["original"] is None and q["reason"], q["id"]
        else:
            assert q["original"] and q["corrected"] != q["original"], q["id"]
            assert q["reason"] and "\n" not in q["reason"].strip(), q["id"]


def test_the_known_invalid_queries_are_flagged() -> None:
    flagged = {q["original"]: q for q in queries() if q["status"] != "ok"}
    for original in (
        'histogram_quantile(0.95, llm_request_latency_seconds{provider="openai"})',
        "histogram_quantile(0.99, rate(llm_request_latency_seconds_bucket[5m]))",
        'llm_errors_total{error_type="circuit_open"} > 0',
    ):
        assert flagged[original]["status"] == "semantic_error"
    assert query("tokens_total_by_provider_type")["status"] == "ok"
    assert query("circuit_open_now")["corrected"] == "llm_circuit_state == 1"


def _original_runbook_promql() -> list[str]:
    text = ORIGINAL_RUNBOOK.read_text(encoding="utf-8")
    blocks = re.findall(r"```promql\n(.*?)```", text, flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    # The "Métrica:" line names a selector outside the code blocks.
    inline = re.findall(r"\*\*Métrica:\*\* `([^`]+)`", text)
    return [line for line in lines if line and not line.startswith("#")] + inline


def test_every_query_of_the_original_runbook_is_listed() -> None:
    if not ORIGINAL_RUNBOOK.exists():
        pytest.fail(f"the original runbook is not beside the repository ({ORIGINAL_RUNBOOK})")
    originals = {q["original"] for q in queries()}
    missing = [line for line in _original_runbook_promql() if line not in originals]
    assert missing == []


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("query_id", IDS)
def test_corrected_query_parses(promtool: Promtool, tmp_path: Path, query_id: str) -> None:
    result = parse_check(promtool, tmp_path, query_id, query(query_id)["corrected"])
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("query_id", ORIGINAL_IDS)
def test_original_query_parses_unless_marked_syntax_error(
    promtool: Promtool, tmp_path: Path, query_id: str
) -> None:
    q = query(query_id)
    result = parse_check(promtool, tmp_path, query_id, q["original"])
    if q["status"] == "syntax_error":
        assert result.returncode != 0, output(result)
    else:
        assert result.returncode == 0, output(result)


@pytest.mark.parametrize(
    "expr",
    [
        "histogram_quantile(0.95, sum by (le) (rate(llm_request_latency_seconds_bucket[5m]))",
        'rate(llm_errors_total{error_type="timeout"})',
        "llm_circuit_state === 1",
    ],
)
def test_parse_check_rejects_invalid_promql(promtool: Promtool, tmp_path: Path, expr: str) -> None:
    result = parse_check(promtool, tmp_path, "invalid", expr)
    assert result.returncode != 0, output(result)


# --------------------------------------------------------------- evaluation


def test_every_query_has_an_expected_result() -> None:
    assert set(CORRECTED) == set(IDS)
    semantic = {q["id"] for q in queries() if q["status"] == "semantic_error"}
    assert set(ORIGINAL_WRONG) == semantic


@pytest.mark.parametrize("query_id", IDS)
def test_corrected_query_gives_the_right_answer(
    promtool: Promtool, tmp_path: Path, query_id: str
) -> None:
    evaluate(promtool, tmp_path, query(query_id)["corrected"], CORRECTED[query_id])


@pytest.mark.parametrize("query_id", sorted(ORIGINAL_WRONG))
def test_original_query_gives_a_wrong_answer(
    promtool: Promtool, tmp_path: Path, query_id: str
) -> None:
    wrong = ORIGINAL_WRONG[query_id]
    right = [c for c in CORRECTED[query_id] if c["eval_time"] == EVAL]
    assert wrong != right, "the original's result must differ from the corrected one"
    evaluate(promtool, tmp_path, query(query_id)["original"], wrong)


# ------------------------------------------------------------------ the doc


def _runbook_promql() -> list[str]:
    blocks = re.findall(r"```promql\n(.*?)```", RUNBOOK.read_text(encoding="utf-8"), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_runbook_doc_shows_every_corrected_query() -> None:
    shown = _runbook_promql()
    missing = [q["corrected"] for q in queries() if q["corrected"] not in shown]
    assert missing == []


def test_runbook_doc_shows_no_query_outside_the_checked_list() -> None:
    corrected = {q["corrected"] for q in queries()}
    assert [line for line in _runbook_promql() if line not in corrected] == []
