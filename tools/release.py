"""`make rollback`: put the previous release back on every API host of the inventory, one host
at a time, without dropping a request (techno-os-release rollback on each).

    python tools/release.py INVENTORY rollback
    python tools/release.py INVENTORY status

Stops at the first host where it fails (that host keeps serving its current release). After a
rollback, `make deploy` of the same tree would release the newer version again: roll forward
with a fix, or deploy the older tree.
"""

from __future__ import annotations

import subprocess
import sys

from inventory import load_inventory, ssh_argv


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("rollback", "status"):
        print(__doc__, file=sys.stderr)
        return 2
    inventory, action = argv
    api_hosts = [h for h in load_inventory(inventory) if h.has("api")]
    if not api_hosts:
        print(f"release: {inventory} has no `api` host", file=sys.stderr)
        return 2
    for target in api_hosts:
        print(f"release: {target.name}: {action}", flush=True)
        result = subprocess.run(
            ssh_argv(target, f"/usr/local/bin/techno-os-release {action}"), check=False
        )
        if result.returncode != 0:
            print(f"release: {action} failed on {target.name}; stopping here", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
