"""The firewall (nftables, every host): SSH, 80/443 on the edge, and exactly the flows between
roles the stack needs. Asserted from both sides: from each host, a flow it must have connects,
and a flow it must not have is refused, on the other hosts' private addresses."""

from __future__ import annotations

import pytest

from ._support import Target

pytestmark = pytest.mark.readonly

# (client role, server role, port setting, what): the flows of the issue, and nothing else.
FLOWS = [
    ("edge", "api", "api_port", "the edge's balancer -> the API front"),
    ("api", "db", "db_port", "the API -> PostgreSQL"),
    ("edge", "any", "node_exporter_port", "Prometheus -> the node exporter"),
    ("db", "backup", "pgbackrest_archive_port", "archive_command -> pgBackRest archive endpoint"),
    ("db", "backup", "pgbackrest_restore_port", "a restore -> pgBackRest restore endpoint"),
    ("backup", "db", "pgbackrest_db_port", "base backups -> the db host's pgBackRest sidecar"),
]
# Ports a service of the stack may listen on: none may be reached by a host not entitled to it.
SERVICE_PORTS = (
    "api_port",
    "db_port",
    "node_exporter_port",
    "pgbackrest_archive_port",
    "pgbackrest_restore_port",
    "pgbackrest_db_port",
)


def connects(client: Target, address: str, port: int) -> bool:
    return probe(client, [(address, port)])[(address, port)]


def probe(client: Target, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], bool]:
    """Try every address:port from `client` at once (2 s each: the hosts share one network,
    where an allowed connection takes milliseconds and a dropped one never answers)."""
    if not pairs:
        return {}
    script = " ".join(
        f"(timeout 2 bash -c '</dev/tcp/{a}/{p}' 2>/dev/null && echo {a}:{p}:open "
        f"|| echo {a}:{p}:closed) &"
        for a, p in pairs
    )
    out = client.check(f"{script} wait")
    result = {}
    for line in out.split():
        address, port, state = line.rsplit(":", 2)
        result[(address, int(port))] = state == "open"
    return result


def entitled(client: Target, server: Target, port_setting: str) -> bool:
    return any(
        port_setting == setting
        and client.has(source)
        and (target_role == "any" or server.has(target_role))
        for source, target_role, setting, _ in FLOWS
    )


@pytest.mark.role("any")
def test_the_firewall_table_is_loaded_with_a_drop_policy(target: Target) -> None:
    rules = target.check("nft list table inet techno_os")
    assert "policy drop" in rules, "the techno_os input chain does not drop by default"
    service = target.host.service("techno-os-firewall")
    assert service.is_enabled, "techno-os-firewall.service is not enabled (rules lost at boot)"


def test_every_flow_between_roles_connects(sandbox) -> None:
    checked = 0
    for source, target_role, setting, what in FLOWS:
        for client in sandbox.by_role(source):
            servers = sandbox.hosts if target_role == "any" else sandbox.by_role(target_role)
            for server in servers:
                if server.name == client.name:
                    continue
                port = int(server.cfg(setting))
                assert connects(client, server.private_address, port), (
                    f"{what}: {client.name} cannot reach {server.name} "
                    f"({server.private_address}:{port})"
                )
                checked += 1
    if len(sandbox.hosts) > 2:
        assert checked, "a multi-host inventory with no flow between hosts"


def test_no_other_host_reaches_a_service_it_is_not_entitled_to(sandbox) -> None:
    leaks = []
    for client in sandbox.hosts:
        allowed = {
            (server.private_address, int(server.cfg(setting)))
            for server in sandbox.hosts
            for setting in SERVICE_PORTS
            if entitled(client, server, setting)
        }
        # Two settings may share a port number on different roles (8432: the backup host's
        # archive endpoint, the db host's sidecar): a pair is forbidden when no flow allows it.
        forbidden = {
            (server.private_address, int(server.cfg(setting))): f"{server.name} {setting}"
            for server in sandbox.hosts
            for setting in SERVICE_PORTS
            if server.name != client.name
            and (server.private_address, int(server.cfg(setting))) not in allowed
        }
        for pair, is_open in probe(client, list(forbidden)).items():
            if is_open:
                leaks.append(f"{client.name} -> {forbidden[pair]} ({pair[0]}:{pair[1]})")
    assert not leaks, f"flows the firewall should refuse: {leaks}"


def test_ssh_is_open_between_hosts_and_the_edge_serves_80_and_443(sandbox) -> None:
    edge = sandbox.the("edge")
    for client in sandbox.hosts:
        if client.name == edge.name:
            continue
        for port in (22, 80, 443):
            assert connects(client, edge.private_address, port), (
                f"{client.name} cannot reach the edge's port {port}"
            )
