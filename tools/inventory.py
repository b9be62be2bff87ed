"""The hosts of a pyinfra inventory, with their groups and merged data, read with pyinfra's own
loader: the sandbox tool, `make api-key`, `make rollback` and the testinfra suites all see the
inventory exactly as the deploy does (host data over group_data/<group>.py over all.py).

The loader runs in a child process: importing pyinfra_cli monkey-patches the interpreter (gevent).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ROLES = ("edge", "db", "api", "backup")

_LOADER = """
import json, sys
from pyinfra.api import Config, State
from pyinfra.api.inventory import Inventory
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

with ctx_state.use(State(Inventory(([], {})), Config())):
    inventory = make_inventory(sys.argv[1], cwd=sys.argv[2])
hosts = [{"name": h.name, "groups": list(h.groups), "data": h.data.dict()} for h in inventory]
as_json = lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o)
json.dump(hosts, sys.stdout, default=as_json)
"""


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: tuple[str, ...]
    data: dict[str, Any]

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(role for role in ROLES if role in self.groups)

    def has(self, role: str) -> bool:
        return role in self.groups


@cache
def load_inventory(path: str) -> tuple[InventoryHost, ...]:
    """The hosts of the inventory file `path` (relative to the repository or absolute)."""
    file = Path(path) if Path(path).is_absolute() else REPO / path
    if not file.is_file():
        raise FileNotFoundError(f"INVENTORY={path}: no such inventory file ({file})")
    loaded = subprocess.run(
        [sys.executable, "-c", _LOADER, str(file), str(REPO)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if loaded.returncode != 0:
        raise RuntimeError(f"INVENTORY={path}: {loaded.stderr.strip()[-1500:]}")
    hosts = tuple(
        InventoryHost(h["name"], tuple(h["groups"]), h["data"]) for h in json.loads(loaded.stdout)
    )
    if not hosts:
        raise ValueError(f"INVENTORY={path} defines no host")
    return hosts


def ssh_argv(host: InventoryHost, *command: str, tty: bool = False) -> list[str]:
    """`ssh` to an inventory host with the inventory's connection data."""
    data = host.data
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if tty:
        argv.append("-t")
    if data.get("ssh_port"):
        argv += ["-p", str(data["ssh_port"])]
    if data.get("ssh_user"):
        argv += ["-l", str(data["ssh_user"])]
    if data.get("ssh_key"):
        key = Path(str(data["ssh_key"])).expanduser()
        argv += ["-i", str(key if key.is_absolute() else REPO / key), "-o", "IdentitiesOnly=yes"]
    known = data.get("ssh_known_hosts_file")
    if known:
        known_path = Path(str(known))
        argv += [
            "-o",
            f"UserKnownHostsFile={known_path if known_path.is_absolute() else REPO / known_path}",
        ]
    strict = data.get("ssh_strict_host_key_checking")
    if strict is not None:
        argv += ["-o", f"StrictHostKeyChecking={ {True: 'yes', False: 'no'}.get(strict, strict) }"]
    argv.append(str(data.get("ssh_hostname") or host.name))
    return [*argv, *command]
