"""Load balancing (HAProxy): on the edge, the balancer behind Caddy's api. site sees every API
host up; on each API host, the front sees exactly one release slot up (the live one). Both run
a config HAProxy itself accepts, and export their metrics for Prometheus."""

from __future__ import annotations

import pytest

from ._support import Target, parse_exposition

pytestmark = pytest.mark.readonly


def balancer_metrics(t: Target):
    port = int(t.cfg("balancer_metrics_port"))
    return parse_exposition(t.check("curl -sS -m 10 http://127.0.0.1:%s/metrics", port))


def servers_up(t: Target, proxy: str) -> dict[str, float]:
    return {
        sample.labels["server"]: sample.value
        for sample in balancer_metrics(t).family("haproxy_server_status")
        if sample.labels.get("proxy") == proxy and sample.labels.get("state") == "UP"
    }


@pytest.mark.role("edge", "api")
def test_haproxy_is_enabled_running_and_accepts_its_config(target: Target) -> None:
    service = target.host.service("haproxy")
    assert service.is_enabled and service.is_running, "haproxy.service is not enabled and running"
    result = target.run("haproxy -c -q -f /etc/haproxy/haproxy.cfg")
    assert result.rc == 0, f"haproxy -c: {(result.stdout + result.stderr).strip()[-800:]}"


@pytest.mark.role("edge")
def test_the_edge_balancer_has_every_api_host_up(target: Target, sandbox) -> None:
    up = servers_up(target, "api_hosts")
    expected = {api.name for api in sandbox.by_role("api")}
    assert set(up) == expected, f"the balancer's servers {sorted(up)}, inventory {expected}"
    down = sorted(name for name, value in up.items() if value != 1)
    assert not down, f"API hosts out of the edge's rotation: {down}"


@pytest.mark.role("edge")
def test_the_api_answers_through_the_edge_balancer(target: Target) -> None:
    port = int(target.cfg("api_balancer_port"))
    response = target.http("GET", f"http://127.0.0.1:{port}/health")
    assert response.status == 200, f"/health through the balancer: {response.status}"
    assert response.json() == {"status": "ok"}


@pytest.mark.role("api")
def test_the_front_sends_to_exactly_one_live_slot(target: Target) -> None:
    up = servers_up(target, "api_slots")
    assert len(up) == len(target.cfg("api_slot_ports")), f"the front's slots: {up}"
    live = [name for name, value in up.items() if value == 1]
    assert len(live) == 1, f"slots up in the front: {live or 'none'} (expected the live release)"
