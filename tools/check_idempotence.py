"""Redeploy an unchanged tree and fail unless it changes nothing.

    python tools/check_idempotence.py [INVENTORY]

Reads pyinfra's own JSON report (results.totals: `success` counts operations that changed
something), not the text table, and names every operation that changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    inventory = sys.argv[1] if len(sys.argv) > 1 else "inventories/local.py"
    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    started = time.monotonic()
    run = subprocess.run(
        [pyinfra, "-y", "--json", inventory, "deploy.py"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if run.returncode != 0:
        print(run.stdout[-4000:], run.stderr[-4000:], sep="\n", file=sys.stderr)
        print(f"idempotence: the redeploy failed (exit {run.returncode})", file=sys.stderr)
        return 1
    results = json.loads(run.stdout)["results"]
    totals = results["totals"]
    changed = [op["name"] for op in results["operations"] if op["success"]]
    print(
        f"idempotence: redeploy took {elapsed:.1f} s; operations: {totals['hosts']} "
        f"(changed {totals['success']}, unchanged {totals['no_change']}, "
        f"errors {totals['error']})"
    )
    for name in changed:
        print(f"  changed: {name}")
    if totals["success"] or totals["error"]:
        print(
            "idempotence: FAILED: a deploy of an unchanged tree must change nothing",
            file=sys.stderr,
        )
        return 1
    print("idempotence: OK, nothing changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
