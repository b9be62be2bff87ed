"""The nightly verification's result, written onto each verified host for Prometheus.

`make verify` runs the read-only suite with `--record-verification`; at the end of the run each
host that had checks gets `techno_os_verification.prom` in its node exporter's textfile
directory (written atomically, as the backup script writes its metrics):

    techno_os_verification_last_run_timestamp_seconds      when this run ended
    techno_os_verification_last_run_checks                 checks run on (or about) this host
    techno_os_verification_last_run_failed_checks          of which failed
    techno_os_verification_last_success_timestamp_seconds  the last run with none failed
                                                           (kept from the file by a failed run)

A check belongs to the host it ran on (its `target`); a check across hosts (the `sandbox`
fixture) belongs to every host. The alerts VerificationFailed and VerificationStale
(files/prometheus/monitoring.yml) read these. Nothing secret goes into the file: counts and
times only.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

FILE_NAME = "techno_os_verification.prom"
PREFIX = "techno_os_verification_"


@dataclass
class HostResult:
    checks: int = 0
    failed: int = 0


def tally(outcomes: dict[str, str], owners: dict[str, str | None]) -> dict[str, HostResult]:
    """Checks and failures per host name: `outcomes` nodeid -> passed|failed|skipped, `owners`
    nodeid -> the host the check ran on (None: every host that had checks)."""
    results: dict[str, HostResult] = {}
    shared = HostResult()
    for nodeid, outcome in outcomes.items():
        if outcome == "skipped":
            continue
        owner = owners.get(nodeid)
        result = results.setdefault(owner, HostResult()) if owner else shared
        result.checks += 1
        result.failed += outcome == "failed"
    for result in results.values():
        result.checks += shared.checks
        result.failed += shared.failed
    return results


def previous_success(text: str) -> float | None:
    match = re.search(rf"^{PREFIX}last_success_timestamp_seconds (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def render(result: HostResult, now: float, last_success: float | None) -> str:
    if result.failed == 0:
        last_success = now
    lines = [
        f"# HELP {PREFIX}last_run_timestamp_seconds End of the last `make verify` run (Unix).",
        f"# TYPE {PREFIX}last_run_timestamp_seconds gauge",
        f"{PREFIX}last_run_timestamp_seconds {now:.0f}",
        f"# HELP {PREFIX}last_run_checks Checks of the last run on or about this host.",
        f"# TYPE {PREFIX}last_run_checks gauge",
        f"{PREFIX}last_run_checks {result.checks}",
        f"# HELP {PREFIX}last_run_failed_checks Checks of the last run that failed.",
        f"# TYPE {PREFIX}last_run_failed_checks gauge",
        f"{PREFIX}last_run_failed_checks {result.failed}",
    ]
    if last_success is not None:
        lines += [
            f"# HELP {PREFIX}last_success_timestamp_seconds End of the last run without a "
            "failed check (Unix).",
            f"# TYPE {PREFIX}last_success_timestamp_seconds gauge",
            f"{PREFIX}last_success_timestamp_seconds {last_success:.0f}",
        ]
    return "\n".join(lines) + "\n"


def record(targets: Iterable, results: dict[str, HostResult]) -> list[str]:
    """Write each host's file; returns one line per host for the terminal summary."""
    said = []
    now = time.time()
    for target in targets:
        result = results.get(target.name)
        if result is None or result.checks == 0:
            continue
        directory = str(target.cfg("textfile_collector_dir"))
        path = f"{directory}/{FILE_NAME}"
        old = target.run("cat %s", path)
        text = render(result, now, previous_success(old.stdout if old.rc == 0 else ""))
        encoded = base64.b64encode(text.encode()).decode()
        # Atomic for the collector: it reads *.prom only, and rename replaces in one step.
        written = target.run(
            "echo %s | base64 -d > %s && chmod 0644 %s && mv -f %s %s",
            encoded,
            f"{directory}/.{FILE_NAME}.tmp",
            f"{directory}/.{FILE_NAME}.tmp",
            f"{directory}/.{FILE_NAME}.tmp",
            path,
        )
        state = "ok" if written.rc == 0 else f"NOT WRITTEN ({written.stderr.strip()[:200]})"
        said.append(
            f"  {target.name}: {result.checks} checks, {result.failed} failed -> {path} {state}"
        )
    return said
