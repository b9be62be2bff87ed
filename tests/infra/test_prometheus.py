"""Runbook § VERIFICAÇÃO DE HEALTH › Prometheus (Standalone): healthy, valid config, targets up,
a systemd service on loopback only."""

from __future__ import annotations

import pytest

from ._support import Target, is_loopback, wait_until

pytestmark = pytest.mark.readonly

# Jobs of templates/prometheus.yml.j2 whose targets the runbook relies on.
EXPECTED_JOBS = {
    "prometheus",
    "techno-os-api",
    "node",
    "alertmanager",
    "postgres",
    "blackbox",
    "blackbox-health",
    "blackbox-redirect",
}


def prometheus_port(t: Target) -> int:
    return int(str(t.cfg("prometheus_listen_address")).rsplit(":", 1)[1])


def check_prometheus_healthy(t: Target) -> None:
    # The runbook's command: curl -s http://localhost:9090/-/healthy
    out = t.run("curl -s -m 5 %s", f"http://localhost:{prometheus_port(t)}/-/healthy")
    assert out.rc == 0, f"curl /-/healthy failed (rc {out.rc}): Prometheus is not answering"
    assert out.stdout.strip() == "Prometheus Server is Healthy.", f"/-/healthy: {out.stdout!r}"


def check_promtool_config(t: Target) -> None:
    out = t.run("promtool check config %s", t.cfg("prometheus_config"))
    assert out.rc == 0, f"promtool check config failed: {(out.stdout + out.stderr).strip()}"


def check_every_target_up(t: Target, hosts: list[str] | None = None) -> None:
    def scraped() -> list[dict] | None:
        active = t.prom("/api/v1/targets", state="active")["activeTargets"]
        return active if all(x["health"] != "unknown" for x in active) else None

    active = wait_until(scraped, timeout=40, what="every target scraped at least once")
    jobs = {x["labels"]["job"] for x in active}
    assert jobs >= EXPECTED_JOBS, f"Prometheus lacks job(s) {EXPECTED_JOBS - jobs}"
    down = [
        f"{x['labels']['job']} {x['scrapeUrl']}: {x['lastError']}"
        for x in active
        if x["health"] != "up"
    ]
    assert not down, f"target(s) down: {down}"
    if hosts is not None:  # every host of the inventory has its node exporter scraped
        nodes = {x["labels"]["instance"] for x in active if x["labels"]["job"] == "node"}
        assert nodes == set(hosts), f"node exporters scraped {sorted(nodes)}, hosts {hosts}"


def check_service_enabled_and_running(t: Target) -> None:
    service = t.host.service("prometheus")
    assert service.is_enabled, "prometheus.service is not enabled"
    assert service.is_running, "prometheus.service is not running"


def check_listens_on_loopback_only(t: Target, port: int, what: str) -> None:
    addresses = [a for a, p in t.listeners() if p == port]
    assert addresses, f"nothing listens on port {port} ({what})"
    public = [a for a in addresses if not is_loopback(a)]
    assert not public, f"{what} listens on non-loopback address(es) {public} port {port}"


@pytest.mark.role("edge")
def test_healthy_endpoint_says_prometheus_server_is_healthy(target: Target) -> None:
    check_prometheus_healthy(target)


@pytest.mark.role("edge")
def test_promtool_check_config_passes_on_the_deployed_config(target: Target) -> None:
    check_promtool_config(target)


@pytest.mark.role("edge")
def test_every_scrape_target_is_up_and_every_host_is_scraped(target: Target, sandbox) -> None:
    check_every_target_up(target, [t.name for t in sandbox.hosts])


@pytest.mark.role("edge")
def test_prometheus_service_is_enabled_and_running(target: Target) -> None:
    check_service_enabled_and_running(target)


@pytest.mark.role("edge")
def test_prometheus_listens_on_loopback_only(target: Target) -> None:
    check_listens_on_loopback_only(target, prometheus_port(target), "Prometheus")
