"""The local VM. Defaults reach the sandbox made by `make sandbox` (tools/sandbox.py); point it at
any SSH-reachable Debian 12 VM (Vagrant, Multipass, ...) with the SANDBOX_* variables."""

import os
from pathlib import Path

_state = Path(__file__).resolve().parent.parent / ".sandbox"

local = [
    (
        os.environ.get("SANDBOX_HOST_NAME", "techno-os-vm"),
        {
            "ssh_hostname": os.environ.get("SANDBOX_SSH_HOST", "127.0.0.1"),
            "ssh_port": int(os.environ.get("SANDBOX_SSH_PORT", "2222")),
            "ssh_user": os.environ.get("SANDBOX_SSH_USER", "root"),
            "ssh_key": os.environ.get("SANDBOX_SSH_KEY", str(_state / "id_ed25519")),
            "ssh_known_hosts_file": str(_state / "known_hosts"),
            "ssh_strict_host_key_checking": "accept-new",
        },
    ),
]
