"""Exposure: every listening socket is either loopback, SSH, the edge's 80/443, or a service
of a role bound to the host's private address because another host's role needs it (the
firewall, tests/infra/test_firewall.py, then decides who may connect). PostgreSQL is not
published by Docker; the API and Prometheus answer on loopback (the runbook's localhost URLs)."""

from __future__ import annotations

import pytest

from ._support import Target, is_loopback

pytestmark = pytest.mark.readonly


def others_with(sandbox, role: str, t: Target) -> bool:
    return any(h.name != t.name for h in sandbox.by_role(role))


def expected_private_ports(t: Target, sandbox) -> set[int]:
    """What a role serves on the private address: only when a host of the client role is
    another host."""
    ports = set()
    if others_with(sandbox, "edge", t):
        ports.add(int(t.cfg("node_exporter_port")))
        if t.has("api"):
            ports.add(int(t.cfg("api_port")))
            ports.add(int(t.cfg("balancer_metrics_port")))
        if t.has("db"):
            ports.add(int(t.cfg("postgres_exporter_port")))
    if t.has("db") and others_with(sandbox, "api", t):
        ports.add(int(t.cfg("db_port")))
    # pgBackRest: the db host's sidecar for the backup host, the backup host's endpoints
    # (archive, restore) for the db host.
    if t.has("db") and others_with(sandbox, "backup", t):
        ports.add(int(t.cfg("pgbackrest_db_port")))
    if t.has("backup") and others_with(sandbox, "db", t):
        ports.add(int(t.cfg("pgbackrest_archive_port")))
        ports.add(int(t.cfg("pgbackrest_restore_port")))
    return ports


@pytest.mark.role("any")
def test_every_non_loopback_listener_is_ssh_the_edge_or_a_role_flow(
    target: Target, sandbox
) -> None:
    allowed = {22}
    if target.has("edge"):
        allowed |= set(target.data.get("public_ports", [80, 443]))
    private = expected_private_ports(target, sandbox)
    unexpected = []
    for address, port in target.listeners():
        if is_loopback(address) or port in allowed:
            continue
        if port in private and address == target.private_address:
            continue
        unexpected.append((address, port))
    assert not unexpected, f"unexpected listeners on {target.name}: {sorted(set(unexpected))}"


@pytest.mark.role("db")
def test_database_port_is_not_published_by_docker(target: Target) -> None:
    info = target.inspect(target.cfg("db_container"))
    assert info, f"container {target.cfg('db_container')} does not exist"
    assert info["HostConfig"]["NetworkMode"] == "host", "PostgreSQL is not on the host's network"
    assert not (info["HostConfig"].get("PortBindings") or {}), "database ports published"


@pytest.mark.role("api")
def test_the_api_front_and_slots_answer_on_loopback(target: Target) -> None:
    front = [a for a, p in target.listeners() if p == int(target.cfg("api_port"))]
    assert "127.0.0.1" in front, f"the API front does not listen on 127.0.0.1: {front}"
    balancer = [a for a, p in target.listeners() if p == int(target.cfg("api_balancer_port"))]
    if target.has("edge"):
        assert balancer == ["127.0.0.1"], f"the edge's balancer listens on {balancer}"
    for port in target.cfg("api_slot_ports"):
        public = [a for a, p in target.listeners() if p == int(port) and not is_loopback(a)]
        assert not public, f"a release slot (port {port}) listens beyond loopback: {public}"
