"""The offsite backups (pgBackRest) as the suites see them: the repository on the backup host,
read as its owner; the db host's archiver; the runbook's checks (`check_*`, run by the read-only
suite and proven to fail by the drills); and what the drills share (the restore script, an
observer of what a client sees while it runs). Nothing here asserts a drill's expectation."""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from ._support import REPO, Target, parse_exposition, secret, wait_until

TOOL = "/usr/local/sbin/techno-os-pgbr"
REPO_CONFIG = "/etc/pgbackrest/repo.conf"
STATE = "/var/lib/techno-os-pgbr/state.json"
SEGMENT_FILE = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}(\.[a-z0-9]+)?$")
WAL_STALE_SECONDS = 300  # files/prometheus/backups.yml, WalArchiveStale
FRESH_HOURS = 26  # OffsiteBackupStale, RestoreTestStale


def stanza(t: Target) -> str:
    return str(t.data.get("pgbackrest_stanza", "techno-os"))


# --- the backup host -----------------------------------------------------------------------------
class Repository:
    """The backup host's repository, read as the repository owner (pgbackrest)."""

    def __init__(self, t: Target) -> None:
        self.t = t
        self.stanza = stanza(t)
        self.path = str(t.data.get("pgbackrest_repo_path", "/var/lib/pgbackrest"))
        self.archive = f"{self.path}/archive/{self.stanza}"

    def pgbackrest(self, args: str) -> str:
        return self.t.check(
            f"runuser -u pgbackrest -- pgbackrest --config={REPO_CONFIG} "
            f"--stanza={self.stanza} {args}"
        )

    def info(self) -> dict[str, Any]:
        return json.loads(self.pgbackrest("--output=json info"))[0]

    def tool(self, command: str) -> Any:
        """A techno-os-pgbr job as the repository owner, then its metrics published."""
        result = self.t.run(f"runuser -u pgbackrest -- {TOOL} {command}")
        self.t.check(f"{TOOL} publish")
        return result

    def segment_files(self) -> dict[str, str]:
        """WAL segment name -> its file in the repository (one per name when healthy)."""
        out = self.t.check(f"find {self.archive} -mindepth 3 -type f -printf '%p\\n'")
        found = {}
        for path in out.split():
            match = SEGMENT_FILE.match(path.rsplit("/", 1)[-1])
            if match:
                found[match.group(1)] = path
        return found

    def newest_segment_age(self) -> float:
        out = self.t.check(
            f"find {self.archive} -mindepth 3 -type f -name '*-*' -printf '%T@\\n' | sort -n "
            "| tail -n 1; date +%s.%N"
        ).split()
        assert len(out) == 2, f"no WAL segment in {self.archive} on {self.t.name}"
        return float(out[1]) - float(out[0])

    def state(self) -> dict[str, Any]:
        return json.loads(self.t.check("cat %s", STATE))

    def metrics(self) -> dict[str, float]:
        text = self.t.check("cat %s/pgbackrest_*.prom", self.t.cfg("textfile_collector_dir"))
        return {
            sample.name: sample.value
            for sample in parse_exposition(text).samples
            if not sample.name.endswith("_info")
        }


# --- the db host ---------------------------------------------------------------------------------
def sql(t: Target, query: str, database: str = "postgres") -> str:
    return t.check(
        "docker exec %s psql -X -qAt -v ON_ERROR_STOP=1 -U %s -d %s -c %s",
        t.cfg("db_container"),
        t.cfg("db_user"),
        database,
        query,
    ).strip()


def archiver(t: Target) -> dict[str, Any]:
    row = sql(
        t,
        "SELECT coalesce(last_archived_wal, ''), "
        "coalesce(extract(epoch FROM last_archived_time), 0), "
        "coalesce(extract(epoch FROM last_failed_time), 0), failed_count, "
        "(SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') "
        "FROM pg_stat_archiver",
    ).split("|")
    return {
        "last_archived_wal": row[0],
        "last_archived": float(row[1]),
        "last_failed": float(row[2]),
        "failed": int(row[3]),
        "ready": int(row[4]),
    }


def switch_wal(t: Target) -> str:
    """Close the current segment (after a commit, so it holds one); returns its name."""
    sql(t, "SELECT txid_current()")
    segment = sql(t, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    sql(t, "SELECT pg_switch_wal()")
    return segment


def wait_archived(t: Target, segment: str, timeout: float = 120) -> float:
    """Seconds until the db host reports `segment` archived (pg_stat_archiver)."""
    started = time.monotonic()
    wait_until(
        lambda: archiver(t)["last_archived_wal"] >= segment,
        timeout=timeout,
        interval=0.5,
        what=f"{t.name}: WAL segment {segment} archived",
    )
    return time.monotonic() - started


# --- the runbook's checks -------------------------------------------------------------------------
def check_wal_reaches_the_backup_host(backup: Target) -> None:
    age = Repository(backup).newest_segment_age()
    assert age < WAL_STALE_SECONDS, (
        f"the newest WAL segment on {backup.name} arrived {age:.0f} s ago "
        f"(alert WalArchiveStale above {WAL_STALE_SECONDS} s)"
    )


def check_archiving_succeeds(db: Target) -> None:
    stats = archiver(db)
    assert stats["last_failed"] <= stats["last_archived"], (
        f"{db.name}: the newest archive attempt failed (pg_stat_archiver: {stats})"
    )


def check_newest_verified_backup_is_fresh(backup: Target) -> None:
    repo = Repository(backup)
    good = repo.state()["good"]
    present = {b["label"] for b in repo.info()["backup"]}
    verified = [v["stop"] for label, v in good.items() if label in present]
    assert verified, f"{backup.name}: no verified backup in the repository"
    age_hours = (time.time() - max(verified)) / 3600
    assert age_hours < FRESH_HOURS, f"the newest verified backup is {age_hours:.1f} h old"


def check_restore_test_passed_recently(backup: Target) -> None:
    metrics = Repository(backup).metrics()
    assert metrics.get("pgbackrest_restore_test_success") == 1, (
        f"{backup.name}: the last restore test failed: {metrics}"
    )
    age_hours = (
        time.time() - metrics["pgbackrest_restore_test_last_success_timestamp_seconds"]
    ) / 3600
    assert age_hours < FRESH_HOURS, f"the last good restore test is {age_hours:.1f} h old"


# --- Prometheus ----------------------------------------------------------------------------------
def firing(edge: Target, alert: str) -> bool:
    return bool(edge.prom_query(f'ALERTS{{alertname="{alert}", alertstate="firing"}}'))


# --- the restore script --------------------------------------------------------------------------
@dataclass
class Restore:
    rc: int
    output: str
    seconds: float


def run_restore(db: Target, *args: str, timeout: int = 900) -> Restore:
    script = f"{db.cfg('scripts_dir')}/restore_observability.sh"
    started = time.monotonic()
    result = db.run(
        f"timeout {timeout} {shlex.quote(script)} --yes "
        + " ".join(shlex.quote(a) for a in args)
        + " 2>&1"
    )
    return Restore(result.rc, result.stdout.replace("\ufe0f", ""), time.monotonic() - started)


# --- what a client sees while a restore runs -----------------------------------------------------
OBSERVER = r"""
import socket, sys, time, urllib.request
addresses, api, out, stop = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
log = open(out, "a", buffering=1)
deadline = time.time() + 1200
import os
while not os.path.exists(stop) and time.time() < deadline:
    now = time.time()
    states = []
    for address in addresses:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect((address, 5432)); states.append("open")
        except OSError:
            states.append("closed")
        finally:
            s.close()
    try:
        with urllib.request.urlopen(api + "/ready", timeout=2) as r:
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except OSError:
        code = 0
    log.write(f"{now:.3f} {' '.join(states)} {code}\n")
    time.sleep(0.25)
"""


@dataclass
class Observation:
    """Samples (time, PostgreSQL's TCP port open on each address, API /ready status)."""

    samples: list[tuple[float, list[bool], int]] = field(default_factory=list)

    def closed_windows(self) -> list[tuple[float, float]]:
        """Stretches during which no address accepted a TCP connection to PostgreSQL."""
        windows, start = [], None
        for when, ports, _ in self.samples:
            if not any(ports) and start is None:
                start = when
            elif any(ports) and start is not None:
                windows.append((start, when))
                start = None
        if start is not None:
            windows.append((start, self.samples[-1][0]))
        return windows

    def api_down_seconds(self) -> float:
        bad = [when for when, _, code in self.samples if code != 200]
        return (max(bad) - min(bad)) if bad else 0.0


class Observer:
    """Every 0.25 s on the db host: can a client open PostgreSQL's port (loopback and the
    private address), and does the API's /ready answer 200?"""

    def __init__(self, db: Target, api: Target) -> None:
        self.db = db
        self.base = f"/tmp/drill-observer-{secrets.token_hex(4)}"
        addresses = sorted({"127.0.0.1", db.private_address})
        db.check("printf '%%s' %s > %s.py", OBSERVER, self.base)
        db.check(
            f"setsid nohup python3 {self.base}.py %s %s {self.base}.log {self.base}.stop "
            f"> /dev/null 2>&1 < /dev/null &",
            ",".join(addresses),
            api.api_url
            if api.name == db.name
            else f"http://{api.private_address}:{api.cfg('api_port')}",
        )
        wait_until(
            lambda: db.run(f"test -s {self.base}.log").rc == 0, timeout=15, what="observer up"
        )

    def stop(self) -> Observation:
        self.db.run(f"touch {self.base}.stop; sleep 0.6")
        observed = Observation()
        for line in self.db.check(f"cat {self.base}.log").splitlines():
            parts = line.split()
            observed.samples.append(
                (float(parts[0]), [p == "open" for p in parts[1:-1]], int(parts[-1]))
            )
        self.db.run(f"rm -f {self.base}.py {self.base}.log {self.base}.stop")
        return observed


# --- the sandbox ---------------------------------------------------------------------------------
def sandbox_tool(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """tools/sandbox.py with this environment (SANDBOX_* name the VMs of this inventory)."""
    import os
    import sys

    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "sandbox.py"), *args],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cipher_pass(t: Target) -> str | None:
    return secret(t.data, t.groups, "PGBACKREST_CIPHER_PASS")
