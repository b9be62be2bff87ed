#!/usr/bin/env python3
"""techno-os-pgbr: what the offsite backups need beyond pgBackRest 2.45 itself.

pgBackRest archives the WAL, takes, verifies, expires and restores the backups; this tool only
adds what 2.45 does not do (one line each says why), on the host whose role the settings name:

backup host (settings "role": "backup"):
    seal            root, every few seconds: hand finished WAL to the repository owner, so the
                    db host (through the archive endpoint) can no longer remove or replace it
    layout          root, after stanza-create/-upgrade: open archive/ to the archive endpoint
    backup [--type auto|full|diff|incr]
                    pgbackrest: backup -> verify -> only then "good" -> expire. 2.45's verify
                    always exits 0 and ignores a hole after the newest backup: its output is
                    parsed and the archive is checked for holes and duplicates here
    restore-test [--expect TABLE:ROWS ...]
                    pgbackrest: restore the newest good backup plus every archived segment into
                    a throwaway PostgreSQL as a standby, check that replay reached the newest
                    segment (a plain restore promotes at a hole and reports success), check the
                    tables, promote, throw it away
    nightly         pgbackrest: backup, then restore-test
    metrics         pgbackrest: repository metrics (newest archived segment, newest backups)
    publish         root: install the metrics the pgbackrest jobs wrote into the textfile dir
    info            pgbackrest: `pgbackrest info` of the stanza, for operators
database host ("role": "db"):
    db-metrics      root, every minute: a heartbeat WAL record (so a quiet database still
                    archives a segment every archive_timeout, and the age of the newest archived
                    segment means something) and PostgreSQL's archiver statistics

Settings: /etc/techno-os/pgbr.json (written by the deploy, tasks/pgbackrest.py). Exit status
0 on success, 1 on a failure (the message on stderr names it). Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETTINGS = Path(os.environ.get("TECHNO_OS_PGBR_SETTINGS", "/etc/techno-os/pgbr.json"))
SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
ARCHIVE_FILE = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}(\.[a-z0-9]+)?$")
SEGMENTS_PER_XLOGID = 0x100  # 16 MB segments (PostgreSQL's default, ours)
STALE_TMP_SECONDS = 3600


class Failure(Exception):
    """The job failed; the message says why (nothing was deleted)."""


def say(message: str) -> None:
    print(f"techno-os-pgbr: {message}", file=sys.stderr, flush=True)


def load_settings() -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(SETTINGS.read_text())
    except OSError as exc:
        raise Failure(f"cannot read the settings {SETTINGS}: {exc.strerror}") from None
    return loaded


# --- Prometheus textfiles -------------------------------------------------------------------
def label_text(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


class Textfile:
    """One node-exporter textfile, written whole to a temporary name then renamed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def add(self, name: str, value: float | int, help_: str, kind: str = "gauge", **labels: str):
        if name not in self.seen:
            self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            self.seen.add(name)
        self.lines.append(f"{name}{label_text(labels)} {value}")

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text("\n".join(self.lines) + "\n")
        temporary.chmod(0o644)
        temporary.replace(path)


# --- pgBackRest -----------------------------------------------------------------------------
def pgbackrest(
    s: dict[str, Any], *args: str, config: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = ["pgbackrest", f"--config={config or s['repo_config']}", f"--stanza={s['stanza']}"]
    result = subprocess.run([*argv, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise Failure(
            f"pgbackrest {' '.join(args)} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result


def repo_info(s: dict[str, Any], config: str | None = None) -> dict[str, Any]:
    out = pgbackrest(s, "--output=json", "info", config=config).stdout
    stanzas: list[dict[str, Any]] = json.loads(out)
    if not stanzas:
        raise Failure(f"pgbackrest info lists no stanza {s['stanza']}")
    return stanzas[0]


def segment_number(name: str) -> tuple[int, int]:
    """(timeline, segment number) of a 24-character WAL segment name."""
    match = SEGMENT.match(name)
    if not match:
        raise ValueError(f"not a WAL segment name: {name!r}")
    timeline, log, seg = (int(part, 16) for part in match.groups())
    return timeline, log * SEGMENTS_PER_XLOGID + seg


def lsn_segment(lsn: str) -> int:
    """The segment number an LSN (X/Y) falls in."""
    high, low = lsn.split("/")
    return ((int(high, 16) << 32) + int(low, 16)) >> 24


@dataclass(frozen=True)
class ArchiveScan:
    """What the archive directories hold, read straight from the file names (the repository
    encrypts contents, not names)."""

    segments: dict[str, list[str]]  # archive id -> sorted segment names
    duplicates: list[str]  # segments stored under more than one checksum name
    newest_mtime: float  # of the newest segment file, 0 when there is none

    def gaps(self) -> list[str]:
        """Holes inside each timeline: segments that must exist between two that do."""
        found = []
        for archive_id, names in self.segments.items():
            by_timeline: dict[int, list[int]] = defaultdict(list)
            for name in names:
                timeline, number = segment_number(name)
                by_timeline[timeline].append(number)
            for timeline, numbers in sorted(by_timeline.items()):
                numbers.sort()
                for before, after in zip(numbers, numbers[1:], strict=False):
                    if after - before > 1:
                        found.append(
                            f"{archive_id} timeline {timeline:08X}: "
                            f"{after - before - 1} segment(s) missing after "
                            f"{segment_name(timeline, before)} up to "
                            f"{segment_name(timeline, after)}"
                        )
        return found


def segment_name(timeline: int, number: int) -> str:
    log, seg = divmod(number, SEGMENTS_PER_XLOGID)
    return f"{timeline:08X}{log:08X}{seg:08X}"


def scan_archive(s: dict[str, Any]) -> ArchiveScan:
    root = Path(s["repo_path"]) / "archive" / s["stanza"]
    segments: dict[str, list[str]] = {}
    duplicates: list[str] = []
    newest = 0.0
    if not root.is_dir():
        return ArchiveScan({}, [], 0.0)
    for archive_id in sorted(p for p in root.iterdir() if p.is_dir()):
        names: dict[str, int] = defaultdict(int)
        for sub in archive_id.iterdir():
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                match = ARCHIVE_FILE.match(entry.name)
                if not match:
                    continue
                names[match.group(1)] += 1
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        segments[archive_id.name] = sorted(names)
        duplicates += sorted(name for name, count in names.items() if count > 1)
    return ArchiveScan(segments, duplicates, newest)


def parse_verify(output: str) -> tuple[bool, list[str]]:
    """2.45's `verify --output=text` (its exit status is 0 even when it finds damage): good only
    when the stanza's status line says ok. Returns (good, the lines that say what is wrong)."""
    statuses = re.findall(r"^status: (\S+)", output, flags=re.M)
    problems = [
        line.strip()
        for line in output.splitlines()
        if re.search(r"status: (error|invalid)|missing: [1-9]|invalid: [1-9]|other: [1-9]", line)
    ]
    good = bool(statuses) and all(status == "ok" for status in statuses) and not problems
    if not statuses:
        problems.append("verify printed no status line")
    return good, problems


# --- state of the backup host -----------------------------------------------------------------
class State:
    """The verified backups and the last restore test, in the state directory (pgbackrest)."""

    def __init__(self, s: dict[str, Any]) -> None:
        self.dir = Path(s["state_dir"])
        self.file = self.dir / "state.json"

    def read(self) -> dict[str, Any]:
        if self.file.exists():
            loaded: dict[str, Any] = json.loads(self.file.read_text())
            return loaded
        return {"good": {}, "restore_test": {}}

    def write(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        temporary.replace(self.file)


@contextlib.contextmanager
def one_at_a_time(s: dict[str, Any], what: str) -> Iterator[None]:
    lock_path = Path(s["state_dir"]) / "jobs.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Failure(f"another backup job holds {lock_path}: {what} not started") from None
        yield


def metrics_path(s: dict[str, Any], name: str) -> Path:
    return Path(s["state_dir"]) / "metrics" / name


# --- backup -----------------------------------------------------------------------------------
def choose_type(
    s: dict[str, Any],
    info: dict[str, Any],
    state: dict[str, Any],
    asked: str,
    now: float | None = None,
) -> str:
    """auto: full when no verified full backup is younger than full_every_days, else diff."""
    if asked != "auto":
        return asked
    present = {b["label"]: b for b in info.get("backup", [])}
    newest_good_full = max(
        (
            present[label]["timestamp"]["stop"]
            for label, good in state["good"].items()
            if label in present and good["type"] == "full"
        ),
        default=0,
    )
    age_days = ((time.time() if now is None else now) - newest_good_full) / 86400
    return "full" if age_days >= float(s["full_every_days"]) else "diff"


def backup(s: dict[str, Any], asked: str) -> int:
    started = time.time()
    store = State(s)
    state = store.read()
    report = Textfile()
    good = False
    try:
        with one_at_a_time(s, "backup"):
            info = repo_info(s)
            kind = choose_type(s, info, state, asked)
            before = {b["label"] for b in info.get("backup", [])}
            say(f"{kind} backup of stanza {s['stanza']}")
            pgbackrest(s, f"--type={kind}", "backup")
            info = repo_info(s)
            new = [b for b in info.get("backup", []) if b["label"] not in before]
            if not new:
                raise Failure("pgbackrest backup succeeded but no new backup set is listed")
            made = new[-1]
            if made.get("error"):
                raise Failure(f"backup {made['label']} has page checksum errors (info: error)")
            verified = pgbackrest(s, "--output=text", "--verbose", "verify")
            ok, problems = parse_verify(verified.stdout + verified.stderr)
            scan = scan_archive(s)
            problems += [f"archive hole: {gap}" for gap in scan.gaps()]
            problems += [f"archive duplicate: {name}" for name in scan.duplicates]
            if not ok or problems:
                raise Failure(
                    f"backup {made['label']} is NOT counted as good: verify found\n  "
                    + "\n  ".join(problems)
                )
            state["good"][made["label"]] = {
                "type": made["type"],
                "stop": made["timestamp"]["stop"],
                "verified": int(time.time()),
            }
            good = True
            say(f"backup {made['label']} ({made['type']}) verified: counted as good")
            # Expire only after a verified backup: a bad new backup never pushes a good old one
            # out of the retention window. Retention is this host's own config.
            pgbackrest(s, "expire")
            kept = {b["label"] for b in repo_info(s).get("backup", [])}
            state["good"] = {k: v for k, v in state["good"].items() if k in kept}
            store.write(state)
            report.add(
                "pgbackrest_backup_last_size_bytes",
                made["info"]["repository"]["size"],
                "Bytes the newest good backup set adds to the repository.",
                stanza=s["stanza"],
            )
    except Failure as exc:
        say(str(exc))
    finally:
        write_backup_metrics(s, report, store.read(), good, started)
    return 0 if good else 1


def write_backup_metrics(
    s: dict[str, Any], report: Textfile, state: dict[str, Any], success: bool, started: float
) -> None:
    stanza = s["stanza"]
    report.add(
        "pgbackrest_backup_last_run_timestamp_seconds",
        int(time.time()),
        "Unix time the last backup job ended.",
        stanza=stanza,
    )
    report.add(
        "pgbackrest_backup_last_run_success",
        int(success),
        "1 if the last backup job made a verified backup, 0 if it failed.",
        stanza=stanza,
    )
    report.add(
        "pgbackrest_backup_last_run_duration_seconds",
        round(time.time() - started, 1),
        "Wall time of the last backup job (backup, verify, expire).",
        stanza=stanza,
    )
    if state["good"]:
        label, newest = max(state["good"].items(), key=lambda item: item[1]["stop"])
        report.add(
            "pgbackrest_backup_last_good_timestamp_seconds",
            newest["stop"],
            "Unix time the newest verified (good) offsite base backup ended.",
            stanza=stanza,
        )
        report.add(
            "pgbackrest_backup_last_good_info",
            1,
            "The newest verified offsite base backup (label and type).",
            stanza=stanza,
            label=label,
            type=newest["type"],
        )
    report.write(metrics_path(s, "pgbackrest_backup.prom"))


# --- restore test -----------------------------------------------------------------------------
class Scratch:
    """A throwaway PostgreSQL (the Debian binaries, no cluster service) on a private socket."""

    def __init__(self, s: dict[str, Any]) -> None:
        self.s = s
        self.base = Path(s["restore_test_dir"])
        self.data = self.base / "data"
        self.socket = self.base / "run"
        self.log = self.base / "postgres.log"
        self.bin = Path(s["pg_bin"])

    def clean(self) -> None:
        self.stop()
        for path in (self.data, self.socket, self.base / "spool"):
            shutil.rmtree(path, ignore_errors=True)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                check=False,
            )

    def start(self) -> None:
        config = self.base / "postgresql.conf"
        hba = self.base / "pg_hba.conf"
        hba.write_text("local all all trust\n")
        config.write_text(
            f"data_directory = '{self.data}'\n"
            f"hba_file = '{hba}'\n"
            f"ident_file = '{self.base / 'pg_ident.conf'}'\n"
            "listen_addresses = ''\n"
            f"port = {int(self.s['restore_test_port'])}\n"
            f"unix_socket_directories = '{self.socket}'\n"
            # A test restore must never push into the production stanza.
            "archive_mode = off\n"
            "hot_standby = on\n"
            "shared_buffers = 128MB\n"
            "logging_collector = off\n"
            # A hot standby refuses to run with lower limits than the primary had.
            + "".join(f"{name} = {value}\n" for name, value in self.primary_limits().items())
        )
        (self.base / "pg_ident.conf").touch()
        self.socket.mkdir(mode=0o700, exist_ok=True)
        result = subprocess.run(
            [
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", "300", "-o", f"-c config_file={config}", "start",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise Failure(f"the restored copy did not start: {self.log_tail()}")

    def primary_limits(self) -> dict[str, str]:
        """The settings a hot standby must match, as the restored pg_control recorded them."""
        result = subprocess.run(
            [str(self.bin / "pg_controldata"), str(self.data)],
            capture_output=True,
            text=True,
            check=False,
        )
        names = {
            "max_connections setting": "max_connections",
            "max_worker_processes setting": "max_worker_processes",
            "max_wal_senders setting": "max_wal_senders",
            "max_prepared_xacts setting": "max_prepared_transactions",
            "max_locks_per_xact setting": "max_locks_per_transaction",
        }
        limits = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in names and value.strip().isdigit():
                limits[names[key.strip()]] = value.strip()
        return limits

    def sql(self, query: str, database: str | None = None) -> str:
        result = subprocess.run(
            [
                str(self.bin / "psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket), "-p", str(int(self.s["restore_test_port"])),
                "-U", self.s["db_user"], "-d", database or self.s["db_name"], "-c", query,
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise Failure(f"query failed on the restored copy: {result.stderr.strip()}")
        return result.stdout.strip()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log_tail(self, lines: int = 15) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def parse_expect(values: list[str]) -> dict[str, int]:
    expected = {}
    for value in values:
        table, _, rows = value.rpartition(":")
        if not table or not rows.isdigit():
            raise Failure(f"--expect {value!r}: use TABLE:MINIMUM_ROWS")
        expected[table] = int(rows)
    return expected


def restore_test(s: dict[str, Any], expect: dict[str, int]) -> int:
    started = time.time()
    store = State(s)
    scratch = Scratch(s)
    success = False
    counts: dict[str, int] = {}
    try:
        with one_at_a_time(s, "restore test"):
            counts = run_restore_test(s, store, scratch, expect, started)
            success = True
    except Failure as exc:
        say(f"restore test FAILED: {exc}")
    finally:
        scratch.clean()
        write_restore_test_metrics(s, store.read(), success, started, counts)
    return 0 if success else 1


def run_restore_test(
    s: dict[str, Any], store: State, scratch: Scratch, expect: dict[str, int], started: float
) -> dict[str, int]:
    state = store.read()
    info = repo_info(s, s["restore_test_config"])
    present = {b["label"] for b in info.get("backup", [])}
    good = [label for label in sorted(state["good"]) if label in present]
    if not good:
        raise Failure("no verified backup in the repository to restore")
    label = max(good, key=lambda item: state["good"][item]["stop"])
    archive = info.get("archive") or []
    if not archive or not archive[-1].get("max"):
        raise Failure("no archived WAL in the repository")
    newest = archive[-1]["max"]
    newest_number = segment_number(newest)[1]
    say(f"restoring {label} and the WAL up to {newest} into {scratch.data}")
    scratch.clean()
    scratch.base.mkdir(parents=True, exist_ok=True)
    scratch.data.mkdir(mode=0o700)
    config = s["restore_test_config"]
    # A standby never promotes on its own: a plain restore would promote at a missing or
    # unreadable segment, serve the data before it and report success (2.45, PostgreSQL 15).
    pgbackrest(
        s,
        f"--set={label}",
        "--type=standby",
        f"--recovery-option=restore_command=pgbackrest --config={config} "
        f'--stanza={s["stanza"]} archive-get %f "%p"',
        "restore",
        config=config,
    )
    scratch.start()
    deadline = started + float(s["restore_test_timeout"])
    last, still = "", 0
    while True:
        if not scratch.running():
            raise Failure(f"PostgreSQL stopped during recovery:\n{scratch.log_tail()}")
        lsn = ""
        with contextlib.suppress(Failure):
            lsn = scratch.sql("SELECT pg_last_wal_replay_lsn()", database="postgres")
        if lsn:
            still = still + 1 if lsn == last else 0
            last = lsn
            if lsn_segment(lsn) >= newest_number and still >= 2:
                break
            if still >= 6:
                raise Failure(
                    f"replay stopped at {lsn}, before the newest archived segment {newest}: a "
                    f"segment is missing or unreadable\n{grep_log(scratch)}"
                )
        if time.time() > deadline:
            raise Failure(f"replay not finished after {s['restore_test_timeout']} s (at {lsn})")
        time.sleep(2)
    say(f"replayed to {last} (newest archived segment {newest})")
    counts = check_tables(s, scratch, state, expect)
    if scratch.sql("SELECT pg_promote(true, 120)", database="postgres") != "t":
        raise Failure("the restored copy did not promote")
    scratch.sql(
        "CREATE TEMP TABLE restore_test_probe (i int); INSERT INTO restore_test_probe VALUES (1)"
    )
    state = store.read()
    state["restore_test"] = {
        "label": label,
        "newest_segment": newest,
        "counts": counts,
        "success": int(time.time()),
    }
    store.write(state)
    say(f"OK: {label} + WAL to {last} restored and checked in {time.time() - started:.0f} s")
    return counts


def grep_log(scratch: Scratch) -> str:
    if not scratch.log.exists():
        return ""
    lines = [
        line
        for line in scratch.log.read_text(errors="replace").splitlines()
        if re.search(r"ERROR|FATAL|unable to find|archive-get", line)
    ]
    return "\n".join(lines[-6:])


def check_tables(
    s: dict[str, Any], scratch: Scratch, state: dict[str, Any], expect: dict[str, int]
) -> dict[str, int]:
    minimums = {**s["restore_test_tables"], **expect}
    previous = state.get("restore_test", {}).get("counts", {})
    ratio = float(s["restore_test_min_rows_ratio"])
    counts = {}
    for table, minimum in sorted(minimums.items()):
        exists = scratch.sql(f"SELECT to_regclass('public.{table}') IS NOT NULL")
        if exists != "t":
            raise Failure(f"table {table} is missing from the restored database")
        rows = int(scratch.sql(f'SELECT count(*) FROM public."{table}"'))
        counts[table] = rows
        if rows < minimum:
            raise Failure(f"table {table} has {rows} rows, expected at least {minimum}")
        if table in previous and rows < ratio * previous[table]:
            raise Failure(
                f"table {table} has {rows} rows, less than {ratio:.0%} of the {previous[table]} "
                "the previous restore test found: implausible"
            )
        say(f"table {table}: {rows} rows")
    return counts


def write_restore_test_metrics(
    s: dict[str, Any], state: dict[str, Any], success: bool, started: float, counts: dict[str, int]
) -> None:
    stanza = s["stanza"]
    report = Textfile()
    report.add(
        "pgbackrest_restore_test_success",
        int(success),
        "1 if the last nightly restore test passed, 0 if it failed.",
        stanza=stanza,
    )
    report.add(
        "pgbackrest_restore_test_last_run_timestamp_seconds",
        int(time.time()),
        "Unix time the last restore test ended.",
        stanza=stanza,
    )
    if state.get("restore_test", {}).get("success"):
        report.add(
            "pgbackrest_restore_test_last_success_timestamp_seconds",
            state["restore_test"]["success"],
            "Unix time of the last successful restore test.",
            stanza=stanza,
        )
    report.add(
        "pgbackrest_restore_test_duration_seconds",
        round(time.time() - started, 1),
        "Wall time of the last restore test.",
        stanza=stanza,
    )
    for table, rows in sorted(counts.items()):
        report.add(
            "pgbackrest_restore_test_table_rows",
            rows,
            "Rows of each checked table in the last successful restore test.",
            stanza=stanza,
            table=table,
        )
    report.write(metrics_path(s, "pgbackrest_restore_test.prom"))


# --- repository metrics ---------------------------------------------------------------------
def repo_metrics(s: dict[str, Any]) -> int:
    stanza = s["stanza"]
    report = Textfile()
    scan = scan_archive(s)
    if scan.newest_mtime:
        report.add(
            "pgbackrest_archive_last_segment_timestamp_seconds",
            int(scan.newest_mtime),
            "Unix time the newest WAL segment reached the backup host's repository.",
            stanza=stanza,
        )
    up = 1
    try:
        info = repo_info(s)
        report.add(
            "pgbackrest_repo_status_code",
            info["status"]["code"],
            "pgbackrest info status code of the stanza (0 ok).",
            stanza=stanza,
        )
        newest: dict[str, dict[str, Any]] = {}
        for item in info.get("backup", []):
            newest[item["type"]] = item
        for kind, item in sorted(newest.items()):
            report.add(
                "pgbackrest_backup_last_timestamp_seconds",
                item["timestamp"]["stop"],
                "Unix time the newest backup of each type ended (verified or not).",
                stanza=stanza,
                type=kind,
            )
        report.add(
            "pgbackrest_backup_sets",
            len(info.get("backup", [])),
            "Backup sets kept in the repository.",
            stanza=stanza,
        )
    except (Failure, KeyError, ValueError) as exc:
        say(f"pgbackrest info: {exc}")
        up = 0
    report.add(
        "pgbackrest_info_up",
        up,
        "1 if pgbackrest info could read the repository.",
        stanza=stanza,
    )
    report.add(
        "pgbackrest_repo_size_bytes",
        directory_size(Path(s["repo_path"])),
        "Bytes the repository uses on the backup host.",
        stanza=stanza,
    )
    report.write(metrics_path(s, "pgbackrest_repo.prom"))
    return 0 if up else 1


def directory_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def publish(s: dict[str, Any]) -> int:
    """Copy the pgbackrest jobs' metrics into the root-owned textfile directory."""
    source = Path(s["state_dir"]) / "metrics"
    target = Path(s["textfile_dir"])
    if not target.is_dir():
        say(f"{target} does not exist: metrics not published")
        return 0
    for path in sorted(source.glob("pgbackrest_*.prom")):
        text = path.read_text()
        # Only metric lines of ours: a textfile the node exporter cannot parse would hide them all.
        if any(line and not line.startswith(("#", "pgbackrest_")) for line in text.splitlines()):
            say(f"{path} holds foreign lines: not published")
            continue
        temporary = target / f".{path.name}.publish"
        temporary.write_text(text)
        temporary.chmod(0o644)
        temporary.replace(target / path.name)
    return 0


# --- sealing and layout (root) -----------------------------------------------------------------
class Sealer:
    """For each archive id tree: directories -> owner:walgroup 3770 (setgid + sticky: the archive
    endpoint's user can still create entries but no longer remove or rename others'), files ->
    owner:walgroup 0440. Nothing is followed: the walk uses directory descriptors and every entry
    is opened with O_NOFOLLOW and changed through its descriptor, so a hostile archive user
    cannot swap in a symlink and make root chown something else; files with several links are
    skipped (fs.protected_hardlinks keeps that user from linking others' files)."""

    DIR_MODE, FILE_MODE = 0o3770, 0o440

    def __init__(self, s: dict[str, Any]) -> None:
        self.owner = pwd.getpwnam(s["owner"]).pw_uid
        self.group = grp.getgrnam(s["wal_group"]).gr_gid
        self.sealed = 0
        self.skipped = 0

    def fix(self, fd: int, st: os.stat_result, mode: int) -> None:
        changed = False
        if (st.st_uid, st.st_gid) != (self.owner, self.group):
            os.fchown(fd, self.owner, self.group)
            changed = True
        # After fchown, which may clear setgid.
        if changed or stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
            changed = True
        self.sealed += changed

    def tree(self, top: str) -> None:
        for dirpath, _dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
            self.fix(dirfd, os.fstat(dirfd), self.DIR_MODE)
            for name in filenames:
                self.file(dirpath, name, dirfd)

    def file(self, dirpath: str, name: str, dirfd: int) -> None:
        path = os.path.join(dirpath, name)
        if name.endswith(".pgbackrest.tmp"):
            # A push in progress, or one that failed (a refused overwrite): dropped when stale.
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if time.time() - st.st_mtime > STALE_TMP_SECONDS:
                    os.unlink(name, dir_fd=dirfd)
                    say(f"removed stale {path}")
            return
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
        try:
            fd = os.open(name, flags, dir_fd=dirfd)
        except OSError as exc:  # ELOOP: a symlink; ENOENT: gone since the listing
            say(f"skipped {path}: {exc.strerror}")
            self.skipped += 1
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                say(f"skipped {path}: not a plain single-link file")
                self.skipped += 1
                return
            self.fix(fd, st, self.FILE_MODE)
        finally:
            os.close(fd)


def seal(s: dict[str, Any]) -> int:
    root = Path(s["repo_path"]) / "archive"
    sealer = Sealer(s)
    if root.is_dir():
        for stanza in os.scandir(root):
            if not stanza.is_dir(follow_symlinks=False):
                continue
            for archive_id in os.scandir(stanza.path):
                if archive_id.is_dir(follow_symlinks=False):
                    sealer.tree(archive_id.path)
    scan = scan_archive(s)
    report = Textfile()
    report.add(
        "pgbackrest_seal_last_run_timestamp_seconds",
        int(time.time()),
        "Unix time the sealer last ran.",
        stanza=s["stanza"],
    )
    report.add(
        "pgbackrest_seal_skipped_entries",
        sealer.skipped,
        "Archive entries the sealer refused to touch in its last run (symlinks, hard links).",
        stanza=s["stanza"],
    )
    report.add(
        "pgbackrest_archive_duplicate_segments",
        len(scan.duplicates),
        "WAL segments stored under more than one name (a restore refuses them).",
        stanza=s["stanza"],
    )
    if Path(s["textfile_dir"]).is_dir():
        report.write(Path(s["textfile_dir"]) / "pgbackrest_seal.prom")
    return 0


def layout(s: dict[str, Any]) -> int:
    """archive/ and archive/<stanza>/ traversable by the WAL group, archive.info readable, each
    archive id directory (made by stanza-create/-upgrade's db history) creatable."""
    owner = pwd.getpwnam(s["owner"])
    group = grp.getgrnam(s["wal_group"]).gr_gid
    repo = Path(s["repo_path"])
    stanza_dir = repo / "archive" / s["stanza"]
    if not (stanza_dir / "archive.info").exists():
        raise Failure(f"{stanza_dir}/archive.info is missing: run stanza-create first")
    for path, mode in ((repo, 0o750), (repo / "archive", 0o2750), (stanza_dir, 0o2750)):
        os.chown(path, owner.pw_uid, group)
        os.chmod(path, mode)
    for name in ("archive.info", "archive.info.copy"):
        if (stanza_dir / name).exists():
            os.chown(stanza_dir / name, owner.pw_uid, group)
            os.chmod(stanza_dir / name, 0o640)
    result = subprocess.run(
        ["runuser", "-u", s["owner"], "--", "pgbackrest", f"--config={s['repo_config']}",
         f"--stanza={s['stanza']}", "--output=json", "info"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise Failure(f"pgbackrest info failed: {result.stderr.strip()}")
    for db in json.loads(result.stdout)[0]["db"]:
        archive_id = stanza_dir / f"{db['version']}-{db['id']}"
        archive_id.mkdir(exist_ok=True)
        os.chown(archive_id, owner.pw_uid, group)
        os.chmod(archive_id, Sealer.DIR_MODE)
        say(f"{archive_id} ready for the archive endpoint")
    return 0


# --- database host ------------------------------------------------------------------------------
ARCHIVER_SQL = (
    # A heartbeat: a transaction id, committed (a commit record with its time, no table). A quiet
    # database then still archives a segment every archive_timeout, so the age of the newest
    # archived segment is a liveness signal; and a restore to a time T needs a commit after T in
    # the archive (PostgreSQL 15 refuses to end recovery before the target otherwise).
    "SELECT txid_current();"
    "SELECT archived_count, failed_count, "
    "coalesce(extract(epoch FROM last_archived_time)::bigint, 0), "
    "coalesce(extract(epoch FROM last_failed_time)::bigint, 0), "
    "(SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'), "
    "coalesce((SELECT extract(epoch FROM now() - min(modification))::bigint "
    "FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'), 0) "
    "FROM pg_stat_archiver"
)


def db_psql(s: dict[str, Any], query: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", s["db_container"], "psql", "-X", "-qAt", "-F", " ",
         "-v", "ON_ERROR_STOP=1", "-U", s["db_user"], "-d", "postgres", "-c", query],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def wake_checkpointer_after_a_start(s: dict[str, Any]) -> None:
    """PostgreSQL 15's checkpointer starts while the server is still starting up, sees recovery
    in progress and sleeps a whole checkpoint_timeout (5 min) before it first looks at
    archive_timeout: after every (re)start, WAL would wait up to 5 minutes, not 60 s (measured
    in the host-loss drill). A checkpoint right after each start wakes it."""
    started = db_psql(s, "SELECT pg_postmaster_start_time()")
    if started.returncode != 0:
        return
    state = Path(s["state_dir"]) / "db-state.json"
    known = json.loads(state.read_text()) if state.exists() else {}
    if known.get("postmaster_start") == started.stdout.strip():
        return
    if db_psql(s, "CHECKPOINT").returncode == 0:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"postmaster_start": started.stdout.strip()}) + "\n")
        say("PostgreSQL (re)started: checkpoint requested, archive_timeout is watched again")


def db_metrics(s: dict[str, Any]) -> int:
    report = Textfile()
    wake_checkpointer_after_a_start(s)
    result = db_psql(s, ARCHIVER_SQL)
    lines = result.stdout.split("\n")
    values = next((line.split() for line in lines if len(line.split()) == 6), None)
    up = int(result.returncode == 0 and values is not None)
    if up and values is not None:
        archived, failed, last_ok, last_failed, ready, oldest = (int(v) for v in values)
        for name, value, kind, help_ in (
            ("archived_total", archived, "counter", "WAL files archived (pg_stat_archiver)."),
            ("failed_total", failed, "counter", "Failed archive attempts (pg_stat_archiver)."),
            ("last_archived_timestamp_seconds", last_ok, "gauge", "Unix time of the last WAL "
             "file archived (0: none since the statistics were reset)."),
            ("last_failed_timestamp_seconds", last_failed, "gauge", "Unix time of the last "
             "failed archive attempt (0: none)."),
            ("ready_segments", ready, "gauge", "WAL segments waiting on the db host to be "
             "archived (archive_status/*.ready)."),
            ("oldest_ready_age_seconds", oldest, "gauge", "Age of the oldest WAL segment "
             "waiting to be archived (0: none waits)."),
        ):  # fmt: skip
            report.add(f"pg_wal_archiver_{name}", value, help_, kind)
    else:
        say(f"cannot read pg_stat_archiver in {s['db_container']}: {result.stderr.strip()}")
    report.add("pg_wal_archiver_up", up, "1 if the archiver statistics could be read.")
    if Path(s["textfile_dir"]).is_dir():
        report.write(Path(s["textfile_dir"]) / "pg_wal_archiver.prom")
    return 0 if up else 1


OWNER_COMMANDS = {"backup", "restore-test", "nightly", "metrics", "info"}


# --- command line -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="techno-os-pgbr", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("seal", "layout", "metrics", "publish", "info", "db-metrics", "nightly"):
        commands.add_parser(name)
    backup_parser = commands.add_parser("backup")
    backup_parser.add_argument("--type", default="auto", choices=["auto", "full", "diff", "incr"])
    test_parser = commands.add_parser("restore-test")
    test_parser.add_argument("--expect", action="append", default=[], metavar="TABLE:ROWS")
    args = parser.parse_args(argv)
    try:
        s = load_settings()
        if args.command == "db-metrics":
            return db_metrics(s)
        if s.get("role") != "backup":
            raise Failure(f"`{args.command}` runs on the backup host (settings role: backup)")
        if args.command in OWNER_COMMANDS and os.geteuid() == 0:
            # Run as root, pgBackRest would leave root-owned logs and locks the repository's
            # owner can no longer write: the same command, as the owner.
            argv_ = ["runuser", "-u", s["owner"], "--", sys.argv[0], *(argv or sys.argv[1:])]
            os.execvp("runuser", argv_)
        if args.command == "seal":
            return seal(s)
        if args.command == "layout":
            return layout(s)
        if args.command == "publish":
            return publish(s)
        if args.command == "metrics":
            return repo_metrics(s)
        if args.command == "info":
            result = pgbackrest(s, "info", check=False)
            print(result.stdout, end="")
            print(result.stderr, end="", file=sys.stderr)
            return result.returncode
        if args.command == "backup":
            return backup(s, args.type)
        if args.command == "restore-test":
            return restore_test(s, parse_expect(args.expect))
        if args.command == "nightly":
            backed_up = backup(s, "auto")
            tested = restore_test(s, {})
            repo_metrics(s)
            return backed_up or tested
    except Failure as exc:
        say(str(exc))
        return 1
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
