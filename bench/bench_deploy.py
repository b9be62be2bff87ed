"""Deploy wall time: a fresh deploy (bare sandbox -> healthy stack) and a no-op redeploy.

    python bench/bench_deploy.py            destroys and recreates the sandbox (make down/up)
    python bench/bench_deploy.py --no-fresh times only the no-op redeploy of the current sandbox

Prints the total of each and the time per task (the @deploy functions of tasks/), taken from the
moment pyinfra starts each operation, so the slow step is visible.
Goals: no-op redeploy < 15 s, fresh deploy < 6 min.
"""

from __future__ import annotations

import argparse
import re
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
    parser.add_argument("--inventory", default="inventories/local.py")
    args = parser.parse_args()
    if not args.no_fresh:
        subprocess.run([str(BIN / "python"), "tools/sandbox.py", "down"], cwd=REPO, check=True)
        subprocess.run([str(BIN / "python"), "tools/sandbox.py", "up"], cwd=REPO, check=True)
        total, per_task = timed_deploy(args.inventory)
        report("fresh deploy (bare sandbox -> healthy stack)", total, per_task, 360)
    total, per_task = timed_deploy(args.inventory)
    report("no-op redeploy", total, per_task, 15)


if __name__ == "__main__":
    main()
