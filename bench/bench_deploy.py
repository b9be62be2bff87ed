"""Deploy wall time: a fresh deploy (bare sandbox -> healthy stack) and no-op redeploys, per
inventory, and the cluster's no-op redeploy next to the single host's.

    python bench/bench_deploy.py                                  the local sandbox, recreated
    python bench/bench_deploy.py --no-fresh --rounds 3 \
        --inventory inventories/local.py --inventory inventories/cluster.py

Prints the total of each and the time per task (the @deploy functions of tasks/), taken from the
moment pyinfra starts each operation, so the slow step is visible; with several inventories, the
median no-op of each against the first's. Goals: no-op redeploy < 15 s, fresh deploy < 6 min,
the cluster's no-op at most 1.5x the single host's (pyinfra works on the hosts in parallel).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OPERATION = re.compile(r"^--> Starting operation: (?P<task>[^|]+?) \| ")


def timed_deploy(inventory: str) -> tuple[float, OrderedDict[str, float]]:
    """Run the deploy, streaming its log; attribute the time between operations to tasks."""
    per_task: OrderedDict[str, float] = OrderedDict()
    started = last = time.monotonic()
    current = "connect and plan (facts)"
    with subprocess.Popen(
        [str(BIN / "pyinfra"), "-y", inventory, "deploy.py"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            match = OPERATION.match(line)
            if match:
                now = time.monotonic()
                per_task[current] = per_task.get(current, 0.0) + now - last
                current, last = match["task"].strip(), now
        proc.wait()
    end = time.monotonic()
    per_task[current] = per_task.get(current, 0.0) + end - last
    if proc.returncode != 0:
        raise SystemExit(f"deploy failed (exit {proc.returncode}): run `make deploy` to see why")
    return end - started, per_task


def report(title: str, total: float, per_task: OrderedDict[str, float], goal: float) -> None:
    verdict = "meets" if total < goal else "MISSES"
    print(f"\n{title}: {total:.1f} s ({verdict} the goal of {goal:.0f} s)")
    for task, seconds in per_task.items():
        print(f"  {seconds:7.1f} s  {task}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh deploy")
    parser.add_argument("--inventory", action="append", help="default: inventories/local.py")
    parser.add_argument("--rounds", type=int, default=1, help="no-op redeploys per inventory")
    args = parser.parse_args()
    inventories = args.inventory or ["inventories/local.py"]
    medians: dict[str, float] = {}
    for inventory in inventories:
        if not args.no_fresh:
            sandbox = [str(BIN / "python"), "tools/sandbox.py"]
            subprocess.run([*sandbox, "down", inventory], cwd=REPO, check=True)
            subprocess.run([*sandbox, "up", inventory], cwd=REPO, check=True)
            total, per_task = timed_deploy(inventory)
            report(f"{inventory}: fresh deploy (bare VMs -> healthy stack)", total, per_task, 360)
        noops = []
        for round_ in range(1, args.rounds + 1):
            total, per_task = timed_deploy(inventory)
            report(f"{inventory}: no-op redeploy, round {round_}", total, per_task, 15)
            noops.append(total)
        medians[inventory] = statistics.median(noops)
    if len(inventories) > 1:
        base = inventories[0]
        print(f"\nno-op redeploy, median of {args.rounds}:")
        for inventory, median in medians.items():
            ratio = median / medians[base]
            print(f"  {median:6.1f} s  {ratio:4.2f}x  {inventory}")


if __name__ == "__main__":
    main()
