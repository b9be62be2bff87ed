"""The local sandbox: `techno-os-vm` holds every role of the stack (edge, db, api), as production
does by default, and `techno-os-backup` is the backup host. `make sandbox` creates both
(tools/sandbox.py, on the Docker network techno-os-sandbox); pyinfra and testinfra reach them
over SSH exactly as they reach production.

Point it at VMs of your own (Vagrant, Multipass...) with SANDBOX_SSH_HOST, SANDBOX_SSH_PORT,
SANDBOX_SSH_USER, SANDBOX_SSH_KEY, SANDBOX_HOST_NAME, SANDBOX_PRIVATE_ADDRESS for the stack host
and the same names with SANDBOX_BACKUP_ for the backup host.
"""

import os
from pathlib import Path

_state = Path(__file__).resolve().parent.parent / ".sandbox"


def _vm(prefix: str, name: str, port: int, address: str) -> tuple[str, dict]:
    env = os.environ.get
    return (
        env(f"{prefix}HOST_NAME", name),
        {
            "ssh_hostname": env(f"{prefix}SSH_HOST", "127.0.0.1"),
            "ssh_port": int(env(f"{prefix}SSH_PORT", str(port))),
            "ssh_user": env(f"{prefix}SSH_USER", "root"),
            "ssh_key": env(f"{prefix}SSH_KEY", str(_state / "id_ed25519")),
            "ssh_known_hosts_file": str(_state / "known_hosts"),
            "ssh_strict_host_key_checking": "accept-new",
            # The address the other hosts reach it on (the sandbox network's, by default).
            "private_address": env(f"{prefix}PRIVATE_ADDRESS", address),
            # Made by tools/sandbox.py (unless SANDBOX_*SSH_HOST points elsewhere).
            "sandbox_vm": env(f"{prefix}SSH_HOST") is None,
        },
    )


_stack = _vm("SANDBOX_", "techno-os-vm", 2222, "10.213.0.10")
_backup = _vm("SANDBOX_BACKUP_", "techno-os-backup", 2223, "10.213.0.11")

# The environment (group_data/local.py), then the roles.
local = [_stack, _backup]
edge = [_stack]
db = [_stack]
api = [_stack]
backup = [_backup]
