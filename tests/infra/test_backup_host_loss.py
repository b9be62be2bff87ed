"""Runbook § BACKUP E RESTORE, a lost database host (drill, sandbox only).

Rows are written continuously from this machine and each commit's acknowledgement is timed
here; then the db VM and its volumes are destroyed at once (tools/sandbox.py destroy), a fresh
VM is created, the deploy runs on it, and `restore_observability.sh --latest` brings the data
back from the backup host. Every row acknowledged before the newest archived segment must be
back, with no hole; the rows lost are counted and timed (goal: at most 2 minutes of writes).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from typing import Any

import pytest

from ._offsite import Repository, check_archiving_succeeds, run_restore, sandbox_tool, sql
from ._support import REPO, Target, inventory_path, parse_env_file, wait_until

LOSS_GOAL_SECONDS = 120
WRITE_SECONDS = 30  # after the first segment with the drill's rows is archived


class Writer:
    """One psql session on the db host, fed from here: a row per 0.2 s, each acknowledged row
    timed on this machine when its result comes back (it has committed then)."""

    def __init__(self, db: Target, table: str) -> None:
        from inventory import ssh_argv  # tools/, on sys.path through _support

        host = next(h for h in _inventory() if h.name == db.name)
        self.table = table
        self.acked: list[tuple[int, float]] = []
        self.sent = 0
        self.process = subprocess.Popen(
            ssh_argv(
                host,
                f"docker exec -i {db.cfg('db_container')} psql -X -qAt -U {db.cfg('db_user')} "
                f"-d {db.cfg('db_name')}",
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.stopped = threading.Event()
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        n = 0
        assert self.process.stdin is not None
        while not self.stopped.is_set():
            n += 1
            try:
                self.process.stdin.write(f"INSERT INTO {self.table} VALUES ({n}) RETURNING id;\n")
                self.process.stdin.flush()
                self.sent = n
            except (BrokenPipeError, OSError):
                return
            time.sleep(0.2)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip().isdigit():
                self.acked.append((int(line), time.time()))

    def stop(self) -> None:
        self.stopped.set()
        self.process.kill()
        self.process.wait(timeout=30)


def _inventory() -> Any:
    from ._support import load_inventory

    return load_inventory()


def _deploy(limit: str) -> subprocess.CompletedProcess[str]:
    """The deploy of the fresh host (its output kept in reports/, for the figures)."""
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "pyinfra"), "-y", "--limit", limit, inventory_path(),
         "deploy.py"],
        cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=1500,
        check=False,
    )  # fmt: skip
    reports = REPO / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "host-loss-deploy.log").write_text(result.stdout + result.stderr)
    return result


def _secrets_file(t: Target) -> Any:
    from ._support import DEFAULTS, ROLES

    group = next(g for g in t.groups if g not in (*ROLES, "all"))
    return REPO / str(t.data.get("secrets_file") or DEFAULTS["secrets_file"]).format(group=group)


@pytest.mark.drill
def test_a_lost_db_host_is_rebuilt_and_restored_losing_at_most_two_minutes_of_writes(
    sandbox, capsys: Any, record_property: Any
) -> None:
    db, backup = sandbox.the("db"), sandbox.the("backup")
    for t in (db, backup):
        if not t.disposable:
            pytest.fail(f"refusing to run a drill against {t.name}: not disposable")
    if not db.data.get("sandbox_vm"):
        pytest.fail(f"{db.name} is not a sandbox VM: the drill destroys it")
    table = f"drill_loss_{secrets.token_hex(3)}"
    sql(db, f"CREATE TABLE {table} (id int PRIMARY KEY)", db.cfg("db_name"))
    # The restored database holds the drills' client key from before the loss; the deploy of
    # the fresh host makes another one in the secrets file: the old one is put back after.
    secrets_file = _secrets_file(db)
    keys_before = parse_env_file(secrets_file.read_text())
    writer = Writer(db, table)
    wait_until(lambda: len(writer.acked) >= 10, timeout=30, what="rows acknowledged")
    # Some of the drill's rows must have reached the backup host before the loss, or the drill
    # measures nothing: a segment holding them is archived within archive_timeout (60 s).
    first_ack = writer.acked[0][1]
    wait_until(
        lambda: float(
            sql(db, "SELECT coalesce(extract(epoch FROM last_archived_time), 0) "
                "FROM pg_stat_archiver")
        ) > first_ack,
        timeout=LOSS_GOAL_SECONDS,
        interval=1,
        what="a segment with the drill's rows archived",
    )  # fmt: skip
    time.sleep(WRITE_SECONDS)
    destroyed = sandbox_tool("destroy", db.name)
    lost_at = time.time()
    writer.stop()
    assert destroyed.returncode == 0, destroyed.stderr
    acked = list(writer.acked)
    assert acked, "no row was acknowledged"

    began = time.monotonic()
    created = sandbox_tool("up", inventory_path())
    assert created.returncode == 0, created.stderr[-2000:]
    vm_up = time.monotonic() - began
    deployed = _deploy(db.name)
    assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-4000:]
    deploy_s = time.monotonic() - began - vm_up

    fresh = db  # the same name and address: a new machine behind them
    restore = run_restore(fresh, "--latest")
    assert restore.rc == 0, restore.output[-3000:]
    # The database is the old one again, with the old key: so must the secrets file be, even
    # if a check below fails (the drills after this one use that key).
    _put_back(secrets_file, keys_before, ("SANDBOX_API_KEY", "SANDBOX_API_KEY_ID"))
    rebuilt_s = time.monotonic() - began

    back = [
        int(i)
        for i in sql(fresh, f"SELECT id FROM {table} ORDER BY id", fresh.cfg("db_name")).split()
    ]
    acked_ids = [i for i, _ in acked]
    assert back, "no row of the drill came back"
    assert back == list(range(1, back[-1] + 1)), f"a hole in the restored rows: {back}"
    assert back[-1] <= writer.sent, "rows that were never sent came back"
    when = dict(acked)
    last_back = min(back[-1], acked_ids[-1])
    lost_rows = len([i for i in acked_ids if i > back[-1]])
    lost_seconds = when[acked_ids[-1]] - when[last_back] if lost_rows else 0.0
    assert lost_seconds <= LOSS_GOAL_SECONDS, (
        f"{lost_rows} acknowledged rows lost, {lost_seconds:.1f} s of writes "
        f"(goal {LOSS_GOAL_SECONDS} s)"
    )
    # The rebuilt host archives again (a new timeline).
    wait_until(
        lambda: (
            (check_archiving_succeeds(fresh) or True)
            and int(sql(fresh, "SELECT archived_count FROM pg_stat_archiver")) > 0
        ),
        timeout=180,
        what="the rebuilt host archiving WAL",
    )
    assert Repository(backup).info()["status"]["code"] == 0
    sql(fresh, f"DROP TABLE {table}", fresh.cfg("db_name"))
    for key, value in {
        "rows_acknowledged": len(acked_ids),
        "rows_lost": lost_rows,
        "seconds_of_writes_lost": lost_seconds,
        "vm_recreated_s": vm_up,
        "deploy_s": deploy_s,
        "restore_script_s": restore.seconds,
        "loss_to_restored_s": time.time() - lost_at,
        "rebuild_total_s": rebuilt_s,
    }.items():
        record_property(key, round(value, 1))
    with capsys.disabled():
        print(
            f"\n    host loss: {len(acked_ids)} rows acknowledged, {lost_rows} lost "
            f"({lost_seconds:.1f} s of writes); VM {vm_up:.0f} s, deploy {deploy_s:.0f} s, "
            f"restore {restore.seconds:.0f} s"
        )


def _put_back(path: Any, before: dict[str, str], keys: tuple[str, ...]) -> None:
    lines = [
        line
        for line in path.read_text().splitlines()
        if not any(line.startswith(f"{key}=") for key in keys)
    ]
    lines += [f"{key}={before[key]}" for key in keys if key in before]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
