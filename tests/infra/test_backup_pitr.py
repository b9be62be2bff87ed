"""Runbook § BACKUP E RESTORE, point in time (`restore_observability.sh --target-time`), and a
corrupted WAL segment in the offsite repository (drills, sandbox only).

- Rows are written one transaction at a time, each with its commit time; the database is
  restored to a whole second between two of them: exactly the earlier rows are back.
- A segment the restore needs is corrupted on the backup host: the restore reports it (the
  segment's name, "corrompido"), no address accepts a connection to a half-restored database at
  any moment, and the previous database serves again.

Both print what a client of the sandbox felt: how long PostgreSQL's port and the API were away.
"""

from __future__ import annotations

import datetime
import secrets
import time
from typing import Any

import pytest

from ._offsite import Observer, Repository, run_restore, sql, switch_wal, wait_archived
from ._support import Target, wait_until


@pytest.fixture
def stack(sandbox) -> tuple[Target, Target, Target]:
    db, backup, api = sandbox.the("db"), sandbox.the("backup"), sandbox.by_role("api")[0]
    for t in (db, backup, api):
        if not t.disposable:
            pytest.fail(f"refusing to run a drill against {t.name}: not disposable")
    api.wait_api_ready()
    return db, backup, api


def _report(capsys: Any, record_property: Any, what: str, **figures: float) -> None:
    for key, value in figures.items():
        record_property(key, round(value, 1))
    with capsys.disabled():
        print(f"\n    {what}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))


def _utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def write_rows(db: Target, table: str, count: int) -> list[tuple[int, float, float]]:
    """`count` rows, one transaction each, ~0.25 s apart: (id, statement start as the database
    saw it, host time once the commit returned)."""
    script = (
        f"for i in $(seq 1 {count}); do "
        f"docker exec {db.cfg('db_container')} psql -X -qAt -v ON_ERROR_STOP=1 "
        f"-U {db.cfg('db_user')} -d {db.cfg('db_name')} "
        f'-c "INSERT INTO {table} (id) VALUES ($i)" >/dev/null || exit 1; '
        'echo "$i $(date +%s.%N)"; sleep 0.2; done'
    )
    acked = {
        int(i): float(at)
        for i, at in (line.split() for line in db.check(script).split("\n") if line)
    }
    started = {
        int(i): float(at)
        for i, at in (
            line.split("|")
            for line in sql(
                db, f"SELECT id, extract(epoch FROM started_at) FROM {table}", db.cfg("db_name")
            ).splitlines()
        )
    }
    return [(i, started[i], acked[i]) for i in sorted(acked)]


def whole_second_between(rows: list[tuple[int, float, float]]) -> tuple[int, int]:
    """(k, S): a whole second S after row k's commit returned and before row k+1 started, away
    from both ends of the run."""
    for (k, _, acked), (_, next_started, _) in zip(rows[3:-3], rows[4:-2], strict=True):
        second = int(acked) + 1
        if acked < second < next_started:
            return k, second
    raise AssertionError(f"no whole second fell between two rows: {rows}")


@pytest.mark.drill
def test_restore_to_a_moment_between_two_commits_brings_back_exactly_the_earlier_rows(
    stack, capsys: Any, record_property: Any
) -> None:
    db, backup, api = stack
    table = f"drill_pitr_{secrets.token_hex(3)}"
    sql(db, f"CREATE TABLE {table} (id int PRIMARY KEY, started_at timestamptz "
        "DEFAULT clock_timestamp())", db.cfg("db_name"))  # fmt: skip
    rows = write_rows(db, table, 24)
    k, second = whole_second_between(rows)
    target = _utc(second)
    # The check can fail: the rows after the target exist until the restore.
    assert int(sql(db, f"SELECT count(*) FROM {table}", db.cfg("db_name"))) == len(rows) > k
    observer = Observer(db, api)
    try:
        restore = run_restore(db, "--target-time", target)
    finally:
        observed = observer.stop()
        api.wait_api_ready(timeout=300)
    assert restore.rc == 0, restore.output[-3000:]
    assert f"o estado de {target} UTC" in restore.output, restore.output[-1500:]
    assert "recovery stopping before commit" in restore.output, restore.output[-1500:]
    back = [
        int(i) for i in sql(db, f"SELECT id FROM {table} ORDER BY id", db.cfg("db_name")).split()
    ]
    assert back == list(range(1, k + 1)), (
        f"restored to {target} (row {k} committed before it, row {k + 1} started after it): "
        f"rows {back}"
    )
    assert len(observed.closed_windows()) == 1, (
        f"PostgreSQL's port opened during the restore: {observed.closed_windows()}"
    )
    sql(db, f"DROP TABLE {table}", db.cfg("db_name"))
    ((closed_from, closed_to),) = observed.closed_windows()
    _report(
        capsys,
        record_property,
        "point-in-time restore",
        restore_script_s=restore.seconds,
        postgres_port_closed_s=closed_to - closed_from,
        api_not_ready_s=observed.api_down_seconds(),
        rows_back=k,
        rows_written=len(rows),
    )
    del backup


@pytest.mark.drill
def test_a_corrupted_wal_segment_stops_the_restore_and_the_previous_database_serves_again(
    stack, capsys: Any, record_property: Any
) -> None:
    db, backup, api = stack
    repo = Repository(backup)
    table = f"drill_corrupt_{secrets.token_hex(3)}"
    sql(db, f"CREATE TABLE {table} (id int PRIMARY KEY)", db.cfg("db_name"))
    segments = []
    for row in (1, 2, 3):
        sql(db, f"INSERT INTO {table} VALUES ({row})", db.cfg("db_name"))
        segments.append(switch_wal(db))
        wait_archived(db, segments[-1])
    time.sleep(1.1)
    target = _utc(time.time() - 0.5)  # a whole second after row 3
    bad = wait_until(lambda: repo.segment_files().get(segments[1]), timeout=60, what="stored")
    saved = f"/root/drill-saved-{segments[1]}"
    backup.check("cp -p %s %s", bad, saved)
    flip = "import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); "
    flip += "b[len(b) // 2] ^= 0xFF; open(p, 'wb').write(b)"
    backup.check("python3 -c %s %s", flip, bad)
    observer = Observer(db, api)
    try:
        restore = run_restore(db, "--target-time", target)
    finally:
        observed = observer.stop()
        backup.check("cp -p %s %s && rm %s", saved, bad, saved)
        api.wait_api_ready(timeout=300)
    assert restore.rc != 0, f"the restore succeeded through a corrupted segment:\n{restore.output}"
    assert "❌ Restore falhou" in restore.output
    assert "corrompido" in restore.output and segments[1] in restore.output, restore.output[-3000:]
    assert "O banco anterior foi recolocado" in restore.output, restore.output[-1500:]
    # The previous database serves: every row, not the first one alone (what replay reached).
    back = sql(db, f"SELECT string_agg(id::text, ',' ORDER BY id) FROM {table}", db.cfg("db_name"))
    assert back == "1,2,3", f"rows served after the failed restore: {back}"
    assert len(observed.closed_windows()) == 1, (
        f"PostgreSQL's port opened during the restore: {observed.closed_windows()}"
    )
    sql(db, f"DROP TABLE {table}", db.cfg("db_name"))
    ((closed_from, closed_to),) = observed.closed_windows()
    _report(
        capsys,
        record_property,
        "corrupted WAL segment",
        failed_restore_script_s=restore.seconds,
        postgres_port_closed_s=closed_to - closed_from,
        api_not_ready_s=observed.api_down_seconds(),
    )
