"""`make api-key ARGS="..."`: the operators' key tool (python -m techno_os_api.keys) in the API
container of the inventory's first API host, over SSH, so nobody types `docker exec` by hand.

    python tools/api_key.py INVENTORY create --user alice --rpm 60
    python tools/api_key.py INVENTORY list | show KEY_ID | revoke KEY_ID

The keys live in the one PostgreSQL every API host shares: any API host would do. Its output
(one JSON document; `create` prints the secret once) and its exit status are the tool's.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from inventory import load_inventory, ssh_argv


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    inventory, args = argv[0], argv[1:]
    api_hosts = [h for h in load_inventory(inventory) if h.has("api")]
    if not api_hosts:
        print(f"api-key: {inventory} has no `api` host", file=sys.stderr)
        return 2
    target = api_hosts[0]
    container = target.data.get("api_container") or "techno-os-api"
    command = f"docker exec {shlex.quote(container)} python -m techno_os_api.keys " + " ".join(
        shlex.quote(a) for a in args
    )
    return subprocess.run(ssh_argv(target, command), check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
