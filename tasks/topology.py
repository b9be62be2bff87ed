"""Who holds which role, and how the hosts reach one another: read from the inventory's groups
(`edge`, `db`, `api`, `backup`) and each host's `private_address`.

One host may hold several roles (the default production layout holds edge, db and api on one):
roles on the same host talk over loopback; roles on different hosts over the private addresses,
which the firewall (tasks/firewall.py) opens only between the roles that need each flow.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyinfra import host, inventory
from pyinfra.api import DeployError
from pyinfra.api.host import Host
from pyinfra.operations import server

ROLES = ("edge", "db", "api", "backup")
LOOPBACK = "127.0.0.1"


def _members(role: str) -> list[Host]:
    return list(inventory.get_group(role, []))


def hosts_with(role: str) -> list[Host]:
    return _members(role)


def has(role: str, target: Host | None = None) -> bool:
    target = target or host
    return any(member.name == target.name for member in _members(role))


def the(role: str) -> Host:
    """The one host of a role that has exactly one (checked by `check`)."""
    members = _members(role)
    if len(members) != 1:
        raise DeployError(f"the inventory needs exactly one `{role}` host, it has {len(members)}")
    return members[0]


def private_address(target: Host) -> str:
    address = target.data.get("private_address")
    return str(address) if address else LOOPBACK


def address_from(target: Host, source: Host | None = None) -> str:
    """How `source` (default: the current host) reaches `target`: loopback on the same host."""
    source = source or host
    return LOOPBACK if target.name == source.name else private_address(target)


def listen_addresses(*, serves_other_hosts: bool) -> list[str]:
    """Loopback, plus the private address when another host must reach this service."""
    addresses = [LOOPBACK]
    own = private_address(host)
    if serves_other_hosts and own != LOOPBACK:
        addresses.append(own)
    return addresses


def serves_others(role_of_clients: str) -> bool:
    """True when some host of `role_of_clients` is not the current host."""
    return any(member.name != host.name for member in _members(role_of_clients))


@dataclass(frozen=True)
class Flow:
    """One connection the stack needs: from the hosts of a role to a port of this host."""

    port: int
    clients: tuple[str, ...]  # addresses allowed to connect
    what: str


def _check_reaches_the_database() -> None:
    """An API host must reach the db host (its SSH port, always open): checked from the API
    host itself, before anything changes."""
    db = the("db")
    if not has("api") or db.name == host.name:
        return
    from tasks.facts import TcpReachable

    address = private_address(db)
    if not host.get_fact(TcpReachable, address=address, port=22):
        raise DeployError(
            f"{host.name}: this API host cannot reach the db host {db.name} at {address} "
            "(TCP 22 did not answer within 3 s): check its `private_address` and the network"
        )


def check() -> None:
    """The roles: exactly one edge, db and backup host, at least one api host; every host that
    talks to another has a private address (an IP)."""
    for role in ("edge", "db", "backup"):
        count = len(_members(role))
        if count != 1:
            raise DeployError(
                f"the inventory has {count} `{role}` host(s): it needs exactly one "
                f"(inventory groups: {', '.join(ROLES)})"
            )
    if not _members("api"):
        raise DeployError("the inventory has no `api` host: it needs at least one")
    if the("backup").name == the("db").name:
        raise DeployError(
            f"{host.name}: the `backup` host is the `db` host; backups must live on another host"
        )
    if not any(has(role) for role in ROLES):
        raise DeployError(f"{host.name} holds no role ({', '.join(ROLES)}): remove it or add one")
    _check_reaches_the_database()
    distinct = {member.name for role in ROLES for member in _members(role)}
    if len(distinct) > 1:
        for name in sorted(distinct):
            target = inventory.get_host(name)
            address = target.data.get("private_address")
            try:
                parsed = ipaddress.ip_address(str(address))
            except ValueError:
                raise DeployError(
                    f"{name}: host data `private_address` = {address!r} must be the IP address "
                    "the other hosts reach it on (several hosts share the stack)"
                ) from None
            if parsed.is_loopback:
                raise DeployError(f"{name}: `private_address` {address} is a loopback address")


def every_host_reaches(stage: str) -> None:
    """A point of deploy.py that every host passes together. pyinfra orders operations within
    each host only; across hosts an operation runs once its own host's earlier ones are done, so
    the API host's release could run before the database host's password rotation written
    above it. This operation is generated by every host at the same line, which makes it one
    node after all of their earlier operations; it runs nothing (always skipped)."""
    server.shell(name=f"Every host: {stage}", commands=["true"], _if=lambda: False)
