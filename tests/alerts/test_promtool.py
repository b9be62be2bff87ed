"""promtool checks of the Prometheus config, the alert rules and their unit tests.

- `promtool check config` on files/prometheus.yml copied as is into a temporary copy of
  the deployed layout (prometheus.yml + rules/alerts.yml), so `rule_files` finds the rules;
- `promtool check rules files/prometheus/alerts.yml`;
- `promtool test rules tests/alerts/*.yml`;
- and the proofs that each check can fail: a broken rule file fails `check rules` and
  `check config`, and a rule changed at the edge of its threshold or `for` fails the
  unit tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alerts_support import (
    ALERT_RULES,
    PROMETHEUS_CONFIG,
    RULE_FILES_GLOB,
    Promtool,
    alert_rules,
    load_yaml,
    output,
    unit_test_files,
)


def config_layout(tmp_path: Path, rules_text: str) -> Path:
    """The deployed layout in tmp_path: prometheus.yml exactly as shipped, rules/alerts.yml."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "alerts.yml").write_text(rules_text, encoding="utf-8")
    config = tmp_path / "prometheus.yml"
    shutil.copy(PROMETHEUS_CONFIG, config)
    return config


# --------------------------------------------------------------- the config


def test_prometheus_config_has_the_contract_jobs_targets_and_intervals() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    # Relative to the config: /etc/prometheus/rules/*.yml when deployed.
    assert config["rule_files"] == [RULE_FILES_GLOB]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "techno-os-api", "node"}
    targets = {
        name: [target for static in job["static_configs"] for target in static["targets"]]
        for name, job in jobs.items()
    }
    assert targets == {
        "prometheus": ["127.0.0.1:9090"],
        "techno-os-api": ["127.0.0.1:8000"],
        "node": ["127.0.0.1:9100"],
    }
    assert jobs["techno-os-api"]["metrics_path"] == "/metrics"
    alertmanagers = config["alerting"]["alertmanagers"]
    assert [t for am in alertmanagers for s in am["static_configs"] for t in s["targets"]] == [
        "127.0.0.1:9093"
    ]


def test_prometheus_config_with_the_alert_rules_passes_promtool_check_config(
    promtool: Promtool, tmp_path: Path
) -> None:
    config = config_layout(tmp_path, ALERT_RULES.read_text(encoding="utf-8"))
    result = promtool("check", "config", config)
    assert result.returncode == 0, output(result)
    # The rule file was found through rule_files and checked with the config.
    assert f"Checking {tmp_path}/rules/alerts.yml" in result.stdout, output(result)
    assert f"SUCCESS: {len(alert_rules(ALERT_RULES))} rules found" in result.stdout, output(result)


def test_promtool_check_config_fails_when_a_rule_file_is_broken(
    promtool: Promtool, tmp_path: Path
) -> None:
    broken = ALERT_RULES.read_text(encoding="utf-8").replace(
        'up{job="techno-os-api"} == 0 or', 'up{job="techno-os-api" == 0 or', 1
    )
    result = promtool("check", "config", config_layout(tmp_path, broken))
    assert result.returncode != 0, output(result)


# ---------------------------------------------------------------- the rules


def test_alert_rules_pass_promtool_check_rules(promtool: Promtool) -> None:
    result = promtool("check", "rules", ALERT_RULES)
    assert result.returncode == 0, output(result)
    assert f"SUCCESS: {len(alert_rules(ALERT_RULES))} rules found" in result.stdout, output(result)


BROKEN_RULES = {
    "unbalanced braces in expr": (
        'up{job="techno-os-api"} == 0 or',
        'up{job="techno-os-api" == 0 or',
    ),
    "unknown function": ("histogram_quantile(0.95,", "histogram_quantil(0.95,"),
    "range vector where an instant vector is expected": (
        "llm_circuit_state) > 0",
        "llm_circuit_state[5m]) > 0",
    ),
    "invalid for duration": ("for: 2m", "for: two minutes"),
    "broken annotation template": (
        "{{ $labels.provider }} acima de 10 s",
        "{{ $labels.provider } acima de 10 s",
    ),
    "rule without expr": (
        "      - alert: BackupFailed\n"
        "        # The flag stays 0 until the next successful run: no `for` needed.\n"
        "        expr: techno_os_backup_last_run_success == 0\n",
        "      - alert: BackupFailed\n",
    ),
}


@pytest.mark.parametrize("breakage", BROKEN_RULES, ids=list(BROKEN_RULES))
def test_promtool_check_rules_fails_on_a_broken_rule_file(
    promtool: Promtool, tmp_path: Path, breakage: str
) -> None:
    old, new = BROKEN_RULES[breakage]
    text = ALERT_RULES.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the breakage {breakage!r} no longer matches alerts.yml"
    broken = tmp_path / "alerts.yml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    result = promtool("check", "rules", broken)
    assert result.returncode != 0, output(result)


# ----------------------------------------------------------- the unit tests


def test_alert_unit_tests_pass_promtool_test_rules(promtool: Promtool) -> None:
    files = unit_test_files()
    assert files, "no promtool unit test files in tests/alerts"
    result = promtool("test", "rules", *files)
    assert result.returncode == 0, output(result)


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    tested: set[str] = set()
    for path in unit_test_files():
        for group in load_yaml(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                tested.add(case["alertname"])
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert tested <= names, f"unit tests name alerts that do not exist: {tested - names}"
    assert names - firing == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


# Each mutation moves one rule across the edge that the unit tests pin down; the named
# unit test file must then fail. (old, new, unit test file)
MUTATIONS = {
    "APIDown for 1m -> 45s": ("        for: 1m\n", "        for: 45s\n", "api.yml"),
    "APIDown without absent()": (
        'up{job="techno-os-api"} == 0 or absent(up{job="techno-os-api"})',
        'up{job="techno-os-api"} == 0',
        "api.yml",
    ),
    "APIDown severity warning": (
        'absent(up{job="techno-os-api"})\n        for: 1m\n        labels:\n'
        "          severity: critical",
        'absent(up{job="techno-os-api"})\n        for: 1m\n        labels:\n'
        "          severity: warning",
        "api.yml",
    ),
    "p95 > 10 -> >= 10": ("\n          ) > 10\n", "\n          ) >= 10\n", "llm.yml"),
    "p95 > 10 -> > 10.2": ("\n          ) > 10\n", "\n          ) > 10.2\n", "llm.yml"),
    "p95 without sum by (le, provider)": (
        "histogram_quantile(0.95,\n"
        "            sum by (le, provider) (rate(llm_request_latency_seconds_bucket[5m]))\n",
        "histogram_quantile(0.95,\n            rate(llm_request_latency_seconds_bucket[5m])\n",
        "llm.yml",
    ),
    "p99 > 20 -> >= 20": ("\n          ) > 20\n", "\n          ) >= 20\n", "llm.yml"),
    "p99 > 20 -> > 20.7": ("\n          ) > 20\n", "\n          ) > 20.7\n", "llm.yml"),
    "error ratio > 0.2 -> >= 0.2": ("          ) > 0.2\n", "          ) >= 0.2\n", "llm.yml"),
    "error ratio without the zero-denominator guard": (
        "(sum by (provider) (rate(llm_request_latency_seconds_count[5m])) > 0)",
        "sum by (provider) (rate(llm_request_latency_seconds_count[5m]))",
        "llm.yml",
    ),
    "error ratio counting circuit_open": (
        'error_type=~"provider_error|timeout"',
        'error_type=~"provider_error|timeout|circuit_open"',
        "llm.yml",
    ),
    "circuit OPEN only (== 1)": (
        "max by (provider) (llm_circuit_state) > 0",
        "max by (provider) (llm_circuit_state) == 1",
        "llm.yml",
    ),
    "circuit for 2m -> 1m45s": ("        for: 2m\n", "        for: 1m45s\n", "llm.yml"),
    "backup stale > 26h -> >= 26h": ("> 26 * 3600", ">= 26 * 3600", "backup.yml"),
    "backup stale without absent()": (
        "\n          or absent(techno_os_backup_last_success_timestamp_seconds)",
        "",
        "backup.yml",
    ),
    "rule evaluation failures over [10m]": (
        "increase(prometheus_rule_evaluation_failures_total[5m])",
        "increase(prometheus_rule_evaluation_failures_total[10m])",
        "prometheus_self.yml",
    ),
    "textfile error for 5m -> 4m45s": (
        "node_textfile_scrape_error == 1\n        for: 5m\n",
        "node_textfile_scrape_error == 1\n        for: 4m45s\n",
        "prometheus_self.yml",
    ),
    "runbook anchor typo": (
        "runbook_url: docs/runbook.md#backupfailed",
        "runbook_url: docs/runbook.md#backup-failed",
        "backup.yml",
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=list(MUTATIONS))
def test_unit_tests_fail_when_a_rule_crosses_its_edge(
    promtool: Promtool, tmp_path: Path, mutation: str
) -> None:
    old, new, unit_test = MUTATIONS[mutation]
    text = ALERT_RULES.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the mutation {mutation!r} no longer matches alerts.yml"
    # Same relative layout as the repository: tests/alerts/x.yml -> ../../files/prometheus/.
    rules = tmp_path / "files" / "prometheus" / "alerts.yml"
    rules.parent.mkdir(parents=True)
    rules.write_text(text.replace(old, new), encoding="utf-8")
    # The mutant is a valid rule file: the unit tests, not the parser, must catch it.
    checked = promtool("check", "rules", rules)
    assert checked.returncode == 0, output(checked)
    (tmp_path / "tests" / "alerts").mkdir(parents=True)
    test_file = tmp_path / "tests" / "alerts" / unit_test
    shutil.copy(ALERT_RULES.parents[2] / "tests" / "alerts" / unit_test, test_file)
    result = promtool("test", "rules", test_file)
    assert result.returncode != 0, f"{unit_test} did not notice: {mutation}\n{output(result)}"
