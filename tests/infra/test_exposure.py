"""Exposure (runbook: API on localhost:8000, Prometheus on localhost:9090, PostgreSQL reached only
through `docker exec`): the database port is not published; the API and Prometheus listen on
loopback only; nothing but SSH listens on a public address."""

from __future__ import annotations

import pytest

from ._support import Target, is_loopback
from .test_prometheus import check_listens_on_loopback_only, prometheus_port

pytestmark = pytest.mark.readonly

POSTGRES_PORT = 5432


def check_db_port_not_published(t: Target) -> None:
    info = t.inspect(t.cfg("db_container"))
    assert info, f"container {t.cfg('db_container')} does not exist"
    bindings = info["HostConfig"].get("PortBindings") or {}
    published = {port: b for port, b in (info["NetworkSettings"].get("Ports") or {}).items() if b}
    assert not bindings and not published, f"database ports published: {bindings or published}"
    assert not [a for a, p in t.listeners() if p == POSTGRES_PORT], (
        f"something listens on port {POSTGRES_PORT} on the host"
    )


def check_api_published_on_loopback_only(t: Target) -> None:
    info = t.inspect(t.cfg("api_container"))
    assert info, f"container {t.cfg('api_container')} does not exist"
    bindings = [b for bs in (info["HostConfig"].get("PortBindings") or {}).values() for b in bs]
    assert bindings, "the API container publishes no port"
    public = [b for b in bindings if not b.get("HostIp") or not is_loopback(b["HostIp"])]
    assert not public, f"the API container publishes on non-loopback addresses: {public}"
    check_listens_on_loopback_only(t, int(t.cfg("api_port")), "the API")


def test_database_port_is_not_published(target: Target) -> None:
    check_db_port_not_published(target)


def test_api_is_published_and_listens_on_loopback_only(target: Target) -> None:
    check_api_published_on_loopback_only(target)


def test_prometheus_listens_on_loopback_only(target: Target) -> None:
    check_listens_on_loopback_only(target, prometheus_port(target), "Prometheus")


def test_nothing_but_ssh_listens_on_a_public_address(target: Target) -> None:
    allowed = {22, *target.data.get("public_ports", [])}
    if target.data.get("ssh_port"):
        allowed.add(int(target.data["ssh_port"]))
    public = sorted(
        {(a, p) for a, p in target.listeners() if not is_loopback(a) and p not in allowed}
    )
    assert not public, f"listening on public addresses: {public}"
