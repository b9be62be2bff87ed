"""Offsite backups (pgBackRest) on the sandbox: the figures of docs/benchmarks.md.

    python bench/bench_backup.py [--inventory inventories/local.py] [--scale 70] [--minutes 3]

1. Backup-host disk at the drills' write rate: the host-loss drill's writer (one row per 0.2 s,
   one transaction each, through one psql session), for --minutes; the repository's archive
   grows by the WAL of those writes plus the heartbeat. Projected to 7 days, with one full
   backup and six differential ones of the same database.
2. A database of about 1 GB (pgbench -i -s 70): a full base backup from the backup host (plain
   `pgbackrest backup`, the nightly's first step) next to `tar -cf - <data dir> | gzip` of the
   same data directory on the db host, in the same run. Goal: the backup's throughput at least
   0.8x tar|gzip's.
3. Restore of that 1 GB database: `restore_observability.sh --yes --latest`, from the API stopped
   to the API ready (and the pgBackRest restore itself). Goal: under 2 minutes.
4. Cleanup: the pgbench tables dropped, and a new full backup so the newest backup is small again.

The host-loss figure (writes lost) comes from tests/infra/test_backup_host_loss.py (see
docs/benchmarks.md). Only on a disposable inventory. Prints every figure; changes the sandbox's
database (pgbench tables, then dropped) and takes backups there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from inventory import InventoryHost, load_inventory, ssh_argv  # noqa: E402

REPO_CONFIG = "/etc/pgbackrest/repo.conf"


def ssh(host: InventoryHost, command: str, timeout: int = 3600) -> str:
    result = subprocess.run(
        ssh_argv(host, command), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"{host.name}: `{command[:200]}` failed: {result.stderr[-1500:]}")
    return result.stdout


def timed(host: InventoryHost, command: str) -> tuple[float, str]:
    started = time.monotonic()
    out = ssh(host, command)
    return time.monotonic() - started, out


class Stack:
    def __init__(self, inventory: str) -> None:
        hosts = load_inventory(inventory)
        self.db = next(h for h in hosts if h.has("db"))
        self.backup = next(h for h in hosts if h.has("backup"))
        for host in (self.db, self.backup):
            if host.data.get("disposable") is not True:
                raise SystemExit(f"{host.name} is not disposable: the benchmark changes it")
        self.container = self.db.data["db_container"]
        self.user = self.db.data["db_user"]
        self.name = self.db.data["db_name"]
        self.stanza = self.backup.data["pgbackrest_stanza"]
        self.repo = self.backup.data["pgbackrest_repo_path"]

    def sql(self, query: str, database: str | None = None) -> str:
        return ssh(
            self.db,
            f"docker exec {self.container} psql -X -qAt -v ON_ERROR_STOP=1 -U {self.user} "
            f'-d {database or self.name} -c "{query}"',
        ).strip()

    def pgbackrest(self, args: str) -> str:
        return ssh(
            self.backup,
            f"runuser -u pgbackrest -- pgbackrest --config={REPO_CONFIG} --stanza={self.stanza} "
            f"{args}",
        )

    def archive_bytes(self) -> int:
        return int(ssh(self.backup, f"du -sb {self.repo}/archive | cut -f1"))

    def switch_and_wait(self) -> None:
        self.sql("SELECT txid_current()", "postgres")
        segment = self.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())", "postgres")
        self.sql("SELECT pg_switch_wal()", "postgres")
        deadline = time.monotonic() + 300
        while (
            self.sql(
                f"SELECT coalesce(last_archived_wal, '') >= '{segment}' FROM pg_stat_archiver",
                "postgres",
            )
            != "t"
        ):
            if time.monotonic() > deadline:
                raise SystemExit(f"{segment} not archived within 300 s")
            time.sleep(1)

    def data_dir(self) -> str:
        volume = self.db.data["db_volume"]
        return ssh(self.db, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").strip()


def disk_at_drill_rate(stack: Stack, minutes: float) -> dict[str, float]:
    """Archive growth while the drill's writer runs (5 single-row transactions a second)."""
    stack.sql("CREATE TABLE IF NOT EXISTS bench_rate (id int PRIMARY KEY, at timestamptz "
              "DEFAULT now(), note text DEFAULT 'the drill writer row')")  # fmt: skip
    stack.switch_and_wait()
    time.sleep(5)  # the sealer and the metrics settle
    before, began = stack.archive_bytes(), time.monotonic()
    process = subprocess.Popen(
        ssh_argv(
            stack.db,
            f"docker exec -i {stack.container} psql -X -qAt -U {stack.user} -d {stack.name}",
        ),
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdin is not None
    written = 0
    while time.monotonic() - began < minutes * 60:
        written += 1
        process.stdin.write(f"INSERT INTO bench_rate (id) VALUES ({written});\n")
        process.stdin.flush()
        time.sleep(0.2)
    process.stdin.close()
    process.wait(timeout=60)
    stack.switch_and_wait()
    elapsed = time.monotonic() - began
    grown = stack.archive_bytes() - before
    # What a differential backup adds for those writes (compressed and encrypted, as stored).
    stack.pgbackrest("--type=diff backup")
    diff = json.loads(stack.pgbackrest("--output=json info"))[0]["backup"][-1]
    stack.sql("DROP TABLE bench_rate")
    return {
        "rows": written,
        "seconds": elapsed,
        "archive_bytes": grown,
        "diff_bytes": diff["info"]["repository"]["delta"],
    }


def report_disk(rate: dict[str, float], per_day: float, small_full: int) -> None:
    """7 days at the measured rate: the WAL, one full backup, six differential ones (the one of
    day d holds d days of writes)."""
    mib = 1024 * 1024
    diff_per_day = rate["diff_bytes"] / rate["seconds"] * 86400
    diffs = sum(day * diff_per_day for day in range(1, 7))
    week = 7 * per_day + small_full + diffs
    print(
        f"drill write rate: {rate['rows'] / rate['seconds']:.1f} rows/s; archive growth "
        f"{rate['archive_bytes'] / mib:.2f} MiB in {rate['seconds']:.0f} s = "
        f"{per_day / mib:.0f} MiB/day of WAL; a diff backup of those writes "
        f"{rate['diff_bytes'] / 1024:.0f} KiB = {diff_per_day / mib:.1f} MiB per day of writes"
    )
    print(f"backup host, 7 days at that rate: WAL {7 * per_day / mib:.0f} MiB + one full backup "
          f"{small_full / mib:.1f} MiB + six differential ones {diffs / mib:.0f} MiB = "
          f"{week / mib:.0f} MiB")  # fmt: skip


def full_backup_vs_tar(stack: Stack) -> dict[str, float]:
    data = stack.data_dir()
    data_bytes = int(ssh(stack.db, f"du -sb {data} | cut -f1"))
    tar_s, _ = timed(stack.db, f"tar -cf - -C {data} . | gzip > /var/tmp/bench-base.tar.gz")
    tar_bytes = int(ssh(stack.db, "stat -c %s /var/tmp/bench-base.tar.gz"))
    ssh(stack.db, "rm -f /var/tmp/bench-base.tar.gz")
    backup_s, _ = timed(
        stack.backup,
        f"runuser -u pgbackrest -- pgbackrest --config={REPO_CONFIG} --stanza={stack.stanza} "
        "--type=full backup",
    )
    newest = json.loads(stack.pgbackrest("--output=json info"))[0]["backup"][-1]
    verify_s, verify = timed(
        stack.backup,
        f"runuser -u pgbackrest -- pgbackrest --config={REPO_CONFIG} --stanza={stack.stanza} "
        "--output=text --verbose verify",
    )
    return {
        "data_dir_bytes": data_bytes,
        "tar_gzip_s": tar_s,
        "tar_gzip_bytes": tar_bytes,
        "backup_s": backup_s,
        "backup_repo_bytes": newest["info"]["repository"]["delta"],
        "database_bytes": newest["info"]["size"],
        "verify_s": verify_s,
        "verify_ok": float("status: ok" in verify),
        "label": newest["label"],
    }


def restore_latest(stack: Stack) -> dict[str, float]:
    script = (
        f"{stack.db.data.get('scripts_dir', '/opt/techno-os/scripts')}/restore_observability.sh"
    )
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    process = subprocess.Popen(
        ssh_argv(stack.db, f"{script} --yes --latest 2>&1"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.monotonic() - started, line.rstrip()))

    reader = threading.Thread(target=read)
    reader.start()
    process.wait()
    reader.join()
    total = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit("restore failed:\n" + "\n".join(line for _, line in lines[-30:]))

    def at(text: str) -> float:
        return next(when for when, line in lines if text in line)

    return {
        "restore_script_s": total,
        "pgbackrest_restore_s": at("Reaplicando o WAL") - at("Restaurando do repositório"),
        "copy_of_the_volume_s": at("esvaziado") - at("Guardando uma cópia"),
        "replay_and_promote_s": at("promovido") - at("Reaplicando o WAL"),
        "start_to_ready_s": at("Serviços saudáveis") - at("Subindo serviços"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default="inventories/local.py")
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70: about 1 GB)")
    parser.add_argument("--minutes", type=float, default=3, help="writer time for the disk rate")
    parser.add_argument("--disk-only", action="store_true", help="only the disk rate (step 1)")
    args = parser.parse_args()
    stack = Stack(args.inventory)
    full_before = json.loads(stack.pgbackrest("--output=json info"))[0]["backup"]

    print(f"1. archive growth at the drills' write rate ({args.minutes:g} min)...", flush=True)
    rate = disk_at_drill_rate(stack, args.minutes)
    per_day = rate["archive_bytes"] / rate["seconds"] * 86400
    small_full = [b for b in full_before if b["type"] == "full"][-1]["info"]["repository"]["delta"]
    print(json.dumps(rate), flush=True)
    if args.disk_only:
        report_disk(rate, per_day, small_full)
        return

    print(f"2. pgbench -i -s {args.scale} ...", flush=True)
    ssh(stack.db, f"docker exec {stack.container} pgbench -i -q -s {args.scale} -U {stack.user} "
        f"{stack.name}")  # fmt: skip
    stack.sql("CHECKPOINT")
    stack.switch_and_wait()
    size = stack.sql(f"SELECT pg_database_size('{stack.name}')")
    backup = full_backup_vs_tar(stack)
    print(json.dumps(backup), flush=True)

    print("3. restore --latest of that database...", flush=True)
    restore = restore_latest(stack)
    rows = stack.sql("SELECT count(*) FROM pgbench_accounts")
    print(json.dumps(restore), flush=True)

    print("4. cleanup: drop the pgbench tables, a new full backup...", flush=True)
    for table in ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers"):
        stack.sql(f"DROP TABLE IF EXISTS {table}")
    stack.switch_and_wait()
    stack.pgbackrest("--type=full backup")

    mib = 1024 * 1024
    ratio = backup["tar_gzip_s"] / backup["backup_s"]
    print("\n=== figures ===")
    report_disk(rate, per_day, small_full)
    print(f"database: {int(size) / mib:.0f} MiB (pg_database_size), data directory "
          f"{backup['data_dir_bytes'] / mib:.0f} MiB")  # fmt: skip
    print(f"tar | gzip: {backup['tar_gzip_s']:.1f} s -> {backup['tar_gzip_bytes'] / mib:.0f} MiB")
    print(f"pgbackrest full backup: {backup['backup_s']:.1f} s -> "
          f"{backup['backup_repo_bytes'] / mib:.0f} MiB in the repository "
          f"(throughput {ratio:.2f}x tar|gzip's; goal >= 0.8x)")  # fmt: skip
    print(f"verify (every set and all WAL): {backup['verify_s']:.1f} s, "
          f"ok={bool(backup['verify_ok'])}")  # fmt: skip
    print(f"restore --latest of that database: {restore['restore_script_s']:.1f} s in all "
          f"(goal < 120 s): pgbackrest restore {restore['pgbackrest_restore_s']:.1f} s, copy of "
          f"the replaced volume {restore['copy_of_the_volume_s']:.1f} s, replay and promotion "
          f"{restore['replay_and_promote_s']:.1f} s, stack start to API ready "
          f"{restore['start_to_ready_s']:.1f} s; pgbench_accounts rows back: {rows}")  # fmt: skip


if __name__ == "__main__":
    main()
