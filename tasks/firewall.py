"""Every host: an nftables firewall that lets in SSH, 80/443 on the edge, and exactly the flows
between roles that the stack needs; nothing else.

The rules live in their own table (`inet techno_os`), replaced atomically on each change and
loaded at boot by techno-os-firewall.service: Docker's own tables are left alone (the stack's
containers use the host's network, so no published port bypasses these rules).
"""

from __future__ import annotations

import ipaddress

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from tasks import topology
from tasks.services import ConfigFile, checked_config, keep_service

RULES = "/etc/techno-os/nftables.nft"
UNIT = "/etc/systemd/system/techno-os-firewall.service"


def check() -> None:
    from tasks.common import fail

    allowed = host.data.ssh_allowed_from
    if not isinstance(allowed, list) or not allowed:
        raise fail("group data `ssh_allowed_from` must list the networks SSH is allowed from")
    for network in allowed:
        try:
            ipaddress.ip_network(network, strict=False)
        except (TypeError, ValueError):
            raise fail(f"group data `ssh_allowed_from`: {network!r} is not a network") from None


def _addresses(role: str) -> list[str]:
    """The private addresses of the `role` hosts other than this one."""
    return sorted(
        {
            topology.private_address(member)
            for member in topology.hosts_with(role)
            if member.name != host.name
        }
    )


def flows() -> list[topology.Flow]:
    """What other hosts may open on this host, by role (loopback is always open)."""
    data = host.data
    found: list[topology.Flow] = []

    def allow(port: int, clients: list[str], what: str) -> None:
        if clients:
            found.append(topology.Flow(port, tuple(clients), what))

    edge = _addresses("edge")
    allow(data.node_exporter_port, edge, "node exporter <- Prometheus (edge)")
    if topology.has("api"):
        allow(data.api_port, edge, "API front <- the edge's balancer")
        allow(data.balancer_metrics_port, edge, "HAProxy metrics <- Prometheus (edge)")
    if topology.has("db"):
        allow(data.db_port, _addresses("api"), "PostgreSQL <- API hosts")
        allow(data.postgres_exporter_port, edge, "postgres exporter <- Prometheus (edge)")
        allow(data.pgbackrest_db_port, _addresses("backup"), "pgBackRest sidecar <- backup host")
    if topology.has("backup"):
        db = _addresses("db")
        allow(data.pgbackrest_archive_port, db, "pgBackRest archive endpoint <- db host")
        allow(data.pgbackrest_restore_port, db, "pgBackRest restore endpoint <- db host")
    return found


def _split(networks: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    v4 = [n for n in networks if ipaddress.ip_network(n, strict=False).version == 4]
    v6 = [n for n in networks if ipaddress.ip_network(n, strict=False).version == 6]
    return v4, v6


@deploy("Firewall (nftables): SSH, the edge's 80/443, the flows between roles")
def firewall() -> None:
    apt.packages(name="Install nftables", packages=["nftables"], no_recommends=True)
    ssh_v4, ssh_v6 = _split(host.data.ssh_allowed_from)
    rules = [
        {"port": 22, "v4": ssh_v4, "v6": ssh_v6, "what": "SSH"},
        *(
            {"port": flow.port, "v4": _split(flow.clients)[0], "v6": _split(flow.clients)[1],
             "what": flow.what}
            for flow in flows()
        ),
    ]  # fmt: skip
    installed = checked_config(
        "firewall",
        [
            ConfigFile(
                RULES,
                template="templates/nftables.nft.j2",
                mode="0600",
                data={"rules": rules, "public": topology.has("edge")},
            )
        ],
        check=f"nft -c -f {{staged:{RULES}}}",
        what="the firewall rules (nft -c)",
    )
    unit = files.template(
        name="Unit techno-os-firewall.service (loads the rules at boot)",
        src="templates/techno-os-firewall.service.j2",
        dest=UNIT,
        mode="0644",
        rules=RULES,
    )
    systemd.daemon_reload(name="Reload systemd units", _if=unit.did_change)
    keep_service("techno-os-firewall", config_installed=installed)
