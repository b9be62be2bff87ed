"""Paths and helpers shared by the promtool suites in tests/alerts."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ALERTS_DIR = Path(__file__).resolve().parent
REPO = ALERTS_DIR.parents[1]
PROMETHEUS_TEMPLATE = REPO / "templates" / "prometheus.yml.j2"
RULES_DIR = REPO / "files" / "prometheus"
ALERT_RULES = RULES_DIR / "alerts.yml"
RUNBOOK_QUERIES = REPO / "files" / "promql" / "runbook_queries.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
# The operators' original runbook, beside the repository (shared/reference).
ORIGINAL_RUNBOOK = REPO.parent / "shared" / "reference" / "RUNBOOK_OBSERVABILIDADE.md"

# templates/prometheus.yml.j2 `rule_files`: relative to the config's directory, so
# /etc/prometheus/rules/*.yml once deployed to /etc/prometheus/prometheus.yml.
RULE_FILES_GLOB = "rules/*.yml"
# The host of the single-host layout the rendered config is checked for (inventories/local.py).
HOST_NAME = "techno-os-vm"

Promtool = Callable[..., subprocess.CompletedProcess[str]]


def unit_test_files() -> list[Path]:
    """The `promtool test rules` files: every *.yml directly in tests/alerts."""
    return sorted(ALERTS_DIR.glob("*.yml"))


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def rule_files() -> list[Path]:
    """The rule files the deploy ships (files/prometheus/*.yml, globbed by rule_files)."""
    return sorted(RULES_DIR.glob("*.yml"))


def alert_rules(path: Path | None = None) -> list[dict[str, Any]]:
    """Every alerting rule of one rule file, or of all of them."""
    return [
        rule
        for rules_file in ([path] if path else rule_files())
        for group in load_yaml(rules_file)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def group_defaults() -> dict[str, Any]:
    """group_data/all.py's values: what production runs with unless its group overrides."""
    import runpy

    values = runpy.run_path(str(REPO / "group_data" / "all.py"))
    return {k: v for k, v in values.items() if not k.startswith("_")}


def render_prometheus_config() -> str:
    """templates/prometheus.yml.j2 as the deploy renders it for one host holding every role
    (edge, db, api), with group_data/all.py's values: the production default layout."""
    from types import SimpleNamespace

    import jinja2

    data = group_defaults()
    host = SimpleNamespace(name=HOST_NAME, data=SimpleNamespace(**data))
    domain = data["public_domain"]
    probes = [
        ("blackbox-health", "techno_os_health", f"https://api.{domain}/health"),
        ("blackbox-redirect", "techno_os_https_redirect", f"http://api.{domain}/health"),
    ]
    loopback = "127.0.0.1"
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)  # as pyinfra's
    return environment.from_string(PROMETHEUS_TEMPLATE.read_text(encoding="utf-8")).render(
        host=host,
        api_targets=[{"name": HOST_NAME, "address": f"{loopback}:{data['api_port']}"}],
        node_targets=[
            {
                "name": HOST_NAME,
                "address": f"{loopback}:{data['node_exporter_port']}",
                "roles": "edge,db,api",
            }
        ],
        postgres_targets=[
            {"name": HOST_NAME, "address": f"{loopback}:{data['postgres_exporter_port']}"}
        ],
        haproxy_targets=[
            {"name": HOST_NAME, "address": f"{loopback}:{data['balancer_metrics_port']}"}
        ],
        blackbox_address=data["blackbox_listen_address"],
        probes=[{"job": j, "module": m, "target": u, "url": u} for j, m, u in probes],
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    """promtool's exit code, stdout and stderr, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
