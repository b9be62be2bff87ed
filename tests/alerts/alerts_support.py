"""Paths and helpers shared by the promtool suites in tests/alerts."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ALERTS_DIR = Path(__file__).resolve().parent
REPO = ALERTS_DIR.parents[1]
PROMETHEUS_CONFIG = REPO / "files" / "prometheus.yml"
ALERT_RULES = REPO / "files" / "prometheus" / "alerts.yml"
RUNBOOK_QUERIES = REPO / "files" / "promql" / "runbook_queries.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
# The operators' original runbook, beside the repository (shared/reference).
ORIGINAL_RUNBOOK = REPO.parent / "shared" / "reference" / "RUNBOOK_OBSERVABILIDADE.md"

# files/prometheus.yml `rule_files`: relative to the config's directory, so
# /etc/prometheus/rules/*.yml once deployed to /etc/prometheus/prometheus.yml.
RULE_FILES_GLOB = "rules/*.yml"

Promtool = Callable[..., subprocess.CompletedProcess[str]]


def unit_test_files() -> list[Path]:
    """The `promtool test rules` files: every *.yml directly in tests/alerts."""
    return sorted(ALERTS_DIR.glob("*.yml"))


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def rule_files() -> list[Path]:
    """Every rule file the deploy ships (files/prometheus/*.yml, `rule_files: [rules/*.yml]`)."""
    return sorted(ALERT_RULES.parent.glob("*.yml"))


def alert_rules(path: Path | None = None) -> list[dict[str, Any]]:
    """Every alerting rule of one rule file, or of all of them."""
    return [
        rule
        for rule_file in ([path] if path else rule_files())
        for group in load_yaml(rule_file)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def output(result: subprocess.CompletedProcess[str]) -> str:
    """promtool's exit code, stdout and stderr, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
