"""files/scripts/backup_observability.sh: the runbook's backup, against a real database."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from script_harness import (
    BACKUP_SCRIPT,
    BASE_IMAGE,
    DB_USER,
    Db,
    docker,
    run,
    run_backup,
    script_env,
    wait_until,
)

ARCHIVE_RE = re.compile(r"^postgres_\d{8}_\d{6}\.tar\.gz$")
DAY = 24 * 3600
METRICS = (
    "techno_os_backup_last_success_timestamp_seconds",
    "techno_os_backup_last_run_timestamp_seconds",
    "techno_os_backup_last_run_success",
    "techno_os_backup_duration_seconds",
    "techno_os_backup_size_bytes",
)
WRITER_APP = "tost-writer"


def backup_env(db: Db, backup_dir: Path, textfile_dir: Path | None = None, **extra: str) -> dict:
    # The directory under test is the cron's (standard) one unless a test says otherwise.
    env = {
        "BACKUP_DIR": str(backup_dir),
        "STANDARD_BACKUP_DIR": str(backup_dir),
        "DB_CONTAINER": db.container,
    }
    env["TEXTFILE_DIR"] = str(textfile_dir) if textfile_dir else str(backup_dir / "no-textfile-dir")
    env.update(extra)
    return env


def archives(backup_dir: Path) -> list[str]:
    return sorted(p.name for p in backup_dir.iterdir() if ARCHIVE_RE.match(p.name))


def leftovers(backup_dir: Path) -> list[str]:
    """Temporary files a run must never leave behind."""
    return [p.name for p in backup_dir.iterdir() if p.name.endswith((".partial", ".new"))]


def read_metrics(textfile_dir: Path) -> dict[str, float]:
    values = {}
    for line in (textfile_dir / "techno_os_backup.prom").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def fake_archive(backup_dir: Path, name: str, age_seconds: float) -> Path:
    path = backup_dir / name
    path.write_bytes(b"old archive " + name.encode())
    age(path, age_seconds)
    return path


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


@pytest.fixture
def textfile_dir(tmp_path: Path) -> Path:
    path = tmp_path / "node-exporter"
    path.mkdir()
    return path


def start_writer(db: Db, user: str = "writer") -> subprocess.Popen:
    """One session inserting and committing a row every couple of milliseconds, until killed."""
    sql = (
        "DO $$ BEGIN LOOP"
        f" INSERT INTO user_preferences (user_id, payload) VALUES ('{user}', md5(random()::text));"
        " COMMIT; PERFORM pg_sleep(0.002); END LOOP; END $$;"
    )
    return subprocess.Popen(
        [
            "docker",
            "exec",
            "-e",
            f"PGAPPNAME={WRITER_APP}",
            db.container,
            "psql",
            "-X",
            "-q",
            "-U",
            DB_USER,
            "-d",
            "techno_os",
            "-c",
            sql,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_writer(db: Db, writer: subprocess.Popen) -> None:
    db.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        f" WHERE application_name = '{WRITER_APP}'"
    )
    writer.wait(timeout=30)


def rows_digest(db: Db, up_to: int) -> str:
    return db.sql(
        "SELECT count(*) || ':' || md5(string_agg(id || '|' || user_id || '|' || payload || '|'"
        f" || created_at, ',' ORDER BY id)) FROM user_preferences WHERE id <= {up_to}",
        timeout=300,
    )


def test_archive_taken_under_writes_restores_every_committed_row(
    db: Db,
    backup_dir: Path,
    textfile_dir: Path,
    prefix: str,
    postgres_image: str,
    record_property,
) -> None:
    bulk = 200_000
    db.sql(
        "INSERT INTO user_preferences (user_id, payload)"
        f" SELECT 'bulk-' || (g % 1000), repeat(md5(g::text), 3) FROM generate_series(1, {bulk}) g",
        timeout=300,
    )
    writer = start_writer(db)
    try:
        wait_until(
            lambda: int(db.sql("SELECT count(*) FROM user_preferences")) > bulk + 100,
            30,
            "the writer to commit rows",
        )
        committed = int(db.sql("SELECT max(id) FROM user_preferences"))
        expected = rows_digest(db, committed)

        started = time.monotonic()
        proc = run_backup(**backup_env(db, backup_dir, textfile_dir))
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, proc.stdout + proc.stderr
        during = int(db.sql("SELECT max(id) FROM user_preferences"))
    finally:
        stop_writer(db, writer)
    assert during > committed + 50, "the writer was not writing while the backup ran"

    (archive,) = archives(backup_dir)
    size = (backup_dir / archive).stat().st_size
    record_property("backup_seconds", round(elapsed, 2))
    record_property("archive_bytes", size)
    print(f"\nbackup of {committed} rows: {elapsed:.2f}s, archive {size / 1e6:.1f} MB")

    # The runbook's restore, step by step, into a fresh volume and a fresh container.
    restored = Db(
        container=f"{prefix}-restored-{uuid.uuid4().hex[:6]}",
        volume=f"{prefix}-restored-{uuid.uuid4().hex[:6]}",
    )
    docker("volume", "create", restored.volume)
    try:
        started = time.monotonic()
        docker(
            "run",
            "--rm",
            "-v",
            f"{restored.volume}:/data",
            "-v",
            f"{backup_dir}:/backup:ro",
            BASE_IMAGE,
            "sh",
            "-c",
            "cd /data && tar xzf /backup/postgres_latest.tar.gz",
        )
        restored.start(password=False)
        print(f"restore (untar + start + recovery): {time.monotonic() - started:.2f}s")

        assert rows_digest(restored, committed) == expected
        # A consistent snapshot of one sequential writer: ids 1..M with no hole, M >= committed.
        count, low, high = map(
            int, restored.sql("SELECT count(*), min(id), max(id) FROM user_preferences").split("|")
        )
        assert (low, count) == (1, high)
        assert high >= committed
        logs = run(["docker", "logs", restored.container]).stderr
        assert "redo done" in logs or "consistent recovery state reached" in logs
    finally:
        restored.remove()
        docker("volume", "rm", "-f", restored.volume, check=False)


def test_successful_run_prints_the_runbook_lines(db: Db, backup_dir: Path) -> None:
    proc = run_backup(**backup_env(db, backup_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = archives(backup_dir)
    ts = archive.removeprefix("postgres_").removesuffix(".tar.gz")
    lines = proc.stdout.splitlines()
    expected = [
        f"✅ Iniciando backup: {ts}",
        "📦 Backup PostgreSQL...",
        f"✅ PostgreSQL backup: {archive}",
        "🗑️ Aplicando retenção (7 dias)...",
        f"✅ Backup concluído: {ts}",
    ]
    assert [line for line in lines if line in expected] == expected
    assert "❌" not in proc.stdout + proc.stderr


def test_archive_is_root_only_and_latest_is_a_relative_symlink(db: Db, backup_dir: Path) -> None:
    backup_dir.chmod(0o755)
    proc = run_backup(**backup_env(db, backup_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = archives(backup_dir)
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    info = (backup_dir / archive).stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    latest = backup_dir / "postgres_latest.tar.gz"
    assert latest.is_symlink()
    assert os.readlink(latest) == archive
    assert leftovers(backup_dir) == []
    listing = run(["tar", "-tzf", latest]).stdout.split()
    assert "backup_label" in listing
    assert any(re.fullmatch(r"pg_wal/[0-9A-F]{24}", name) for name in listing)


def test_retention_deletes_exactly_what_is_older_than_seven_days(db: Db, backup_dir: Path) -> None:
    old = [
        fake_archive(backup_dir, "postgres_20200101_020000.tar.gz", 30 * DAY),
        fake_archive(backup_dir, "postgres_20200102_020000.tar.gz", 7 * DAY + 23 * 3600),
        fake_archive(backup_dir, "postgres_20200103_020000.tar.gz", 7 * DAY + 120),
    ]
    kept = [
        fake_archive(backup_dir, "postgres_20200104_020000.tar.gz", 7 * DAY - 120),
        fake_archive(backup_dir, "postgres_20200105_020000.tar.gz", 1 * DAY),
        fake_archive(backup_dir, "notes_20200101.tar.gz", 30 * DAY),
    ]
    proc = run_backup(**backup_env(db, backup_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in old:
        assert not path.exists(), f"{path.name} should have been deleted"
        assert f"removido: {path.name}" in proc.stdout
    for path in kept:
        assert path.exists(), f"{path.name} should have been kept"
    new = [name for name in archives(backup_dir) if not name.startswith("postgres_2020")]
    assert len(new) == 1
    assert os.readlink(backup_dir / "postgres_latest.tar.gz") == new[0]


def test_retention_days_is_configurable(db: Db, backup_dir: Path) -> None:
    two_days = fake_archive(backup_dir, "postgres_20200101_020000.tar.gz", 2 * DAY + 60)
    half_day = fake_archive(backup_dir, "postgres_20200102_020000.tar.gz", DAY / 2)
    proc = run_backup(**backup_env(db, backup_dir, RETENTION_DAYS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Aplicando retenção (1 dias)" in proc.stdout
    assert not two_days.exists()
    assert half_day.exists()


def _assert_nothing_lost(backup_dir: Path, before: set[str], latest_target: str) -> None:
    assert {p.name for p in backup_dir.iterdir()} - {".backup_observability.lock"} == before
    assert os.readlink(backup_dir / "postgres_latest.tar.gz") == latest_target
    assert leftovers(backup_dir) == []


def _old_state(backup_dir: Path) -> tuple[set[str], str]:
    fake_archive(backup_dir, "postgres_20200101_020000.tar.gz", 30 * DAY)
    fake_archive(backup_dir, "postgres_20200102_020000.tar.gz", 20 * DAY)
    (backup_dir / "postgres_latest.tar.gz").symlink_to("postgres_20200102_020000.tar.gz")
    return {p.name for p in backup_dir.iterdir()}, "postgres_20200102_020000.tar.gz"


def test_stopped_database_fails_and_deletes_nothing(
    postgres_image: str, prefix: str, backup_dir: Path
) -> None:
    stopped = Db(container=f"{prefix}-stopped-{uuid.uuid4().hex[:6]}", volume="unused")
    docker("create", "--name", stopped.container, postgres_image)
    before, target = _old_state(backup_dir)
    try:
        proc = run_backup(**backup_env(stopped, backup_dir))
    finally:
        stopped.remove()
    assert proc.returncode != 0
    assert "❌ Backup falhou" in proc.stdout
    assert "❌ Backup falhou" in proc.stderr
    assert "não está rodando" in proc.stdout
    assert "Backup concluído" not in proc.stdout
    _assert_nothing_lost(backup_dir, before, target)


def test_pg_basebackup_error_fails_and_deletes_nothing(db: Db, backup_dir: Path) -> None:
    before, target = _old_state(backup_dir)
    proc = run_backup(**backup_env(db, backup_dir, DB_USER="no_such_role"))
    assert proc.returncode != 0
    assert "pg_basebackup" in proc.stdout
    _assert_nothing_lost(backup_dir, before, target)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 64 KiB filesystem: a database backup cannot fit."""
    path = tmp_path / "full"
    path.mkdir()
    mount = run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", path], check=False)
    if mount.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here (run as root): {mount.stderr.strip()}")
    try:
        yield path
    finally:
        run(["umount", path], check=False)


def test_full_disk_fails_removes_the_partial_file_and_keeps_old_archives(
    db: Db, small_tmpfs: Path
) -> None:
    before, target = _old_state(small_tmpfs)
    proc = run_backup(**backup_env(db, small_tmpfs))
    assert proc.returncode != 0
    assert "disco cheio" in proc.stdout
    _assert_nothing_lost(small_tmpfs, before, target)
    used_kib = int(run(["df", "--output=used", "-k", small_tmpfs]).stdout.split()[-1])
    assert used_kib < 32, "the partial archive was left on the full filesystem"


def test_read_only_target_fails_and_keeps_old_archives(db: Db, small_tmpfs: Path) -> None:
    before, target = _old_state(small_tmpfs)
    run(["mount", "-o", "remount,ro", small_tmpfs])
    proc = run_backup(**backup_env(db, small_tmpfs))
    assert proc.returncode != 0
    assert "❌ Backup falhou" in proc.stdout
    assert {p.name for p in small_tmpfs.iterdir()} == before


def test_overlapping_run_is_refused_by_the_lock(db: Db, backup_dir: Path) -> None:
    lock = backup_dir / ".backup_observability.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.monotonic()
        proc = run_backup(**backup_env(db, backup_dir))
        assert time.monotonic() - started < 10
    assert proc.returncode == 75
    assert "Outro backup já está em andamento" in proc.stdout
    assert archives(backup_dir) == []
    assert leftovers(backup_dir) == []


def test_two_simultaneous_runs_produce_one_archive_and_one_refusal(
    db: Db, backup_dir: Path
) -> None:
    env = script_env(**backup_env(db, backup_dir))
    procs = [
        subprocess.Popen(
            ["bash", str(BACKUP_SCRIPT)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    codes = sorted(p.wait(timeout=120) for p in procs)
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert codes == [0, 75]
    assert len(archives(backup_dir)) == 1


def test_metrics_after_success_then_after_failure(
    db: Db, backup_dir: Path, textfile_dir: Path, postgres_image: str, prefix: str
) -> None:
    before = time.time()
    proc = run_backup(**backup_env(db, backup_dir, textfile_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prom = textfile_dir / "techno_os_backup.prom"
    text = prom.read_text()
    for name in METRICS:
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} gauge" in text
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    ok = read_metrics(textfile_dir)
    (archive,) = archives(backup_dir)
    assert ok["techno_os_backup_last_run_success"] == 1
    assert before - 1 <= ok["techno_os_backup_last_success_timestamp_seconds"] <= time.time() + 1
    assert (
        ok["techno_os_backup_last_run_timestamp_seconds"]
        == ok["techno_os_backup_last_success_timestamp_seconds"]
    )
    assert ok["techno_os_backup_size_bytes"] == (backup_dir / archive).stat().st_size
    assert 0 < ok["techno_os_backup_duration_seconds"] < 120

    time.sleep(1.1)
    missing = Db(container=f"{prefix}-absent-{uuid.uuid4().hex[:6]}", volume="unused")
    proc = run_backup(**backup_env(missing, backup_dir, textfile_dir))
    assert proc.returncode != 0
    failed = read_metrics(textfile_dir)
    assert failed["techno_os_backup_last_run_success"] == 0
    assert (
        failed["techno_os_backup_last_success_timestamp_seconds"]
        == ok["techno_os_backup_last_success_timestamp_seconds"]
    )
    assert (
        failed["techno_os_backup_last_run_timestamp_seconds"]
        > ok["techno_os_backup_last_run_timestamp_seconds"]
    )
    assert failed["techno_os_backup_size_bytes"] == ok["techno_os_backup_size_bytes"]
    assert [p.name for p in textfile_dir.iterdir()] == ["techno_os_backup.prom"]


def test_first_run_failure_writes_no_success_timestamp(
    prefix: str, backup_dir: Path, textfile_dir: Path
) -> None:
    missing = Db(container=f"{prefix}-absent-{uuid.uuid4().hex[:6]}", volume="unused")
    proc = run_backup(**backup_env(missing, backup_dir, textfile_dir))
    assert proc.returncode != 0
    values = read_metrics(textfile_dir)
    assert values["techno_os_backup_last_run_success"] == 0
    assert "techno_os_backup_last_success_timestamp_seconds" not in values


def test_missing_textfile_dir_is_skipped_with_a_note(db: Db, backup_dir: Path) -> None:
    proc = run_backup(**backup_env(db, backup_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "métricas do backup não foram escritas" in proc.stdout


GOOD = "techno_os_backup_last_good_timestamp_seconds"


def last_good(values: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in values.items() if name.startswith(GOOD + "{")}


def test_a_run_into_another_directory_keeps_the_standard_metrics_and_says_where_it_went(
    db: Db, backup_dir: Path, textfile_dir: Path, tmp_path: Path
) -> None:
    """The runbook's `BACKUP_DIR=/mnt/backups` example: the nightly checks and alerts judge the
    cron's directory, so a manual copy elsewhere must not make it look fresh."""
    proc = run_backup(**backup_env(db, backup_dir, textfile_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    standard = read_metrics(textfile_dir)
    assert last_good(standard) == {
        f'{GOOD}{{directory="{backup_dir.resolve()}",standard="true"}}': standard[
            "techno_os_backup_last_success_timestamp_seconds"
        ]
    }

    time.sleep(1.1)
    other = tmp_path / "mnt-backups"
    proc = run_backup(**backup_env(db, other, textfile_dir, STANDARD_BACKUP_DIR=str(backup_dir)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Diretório não padrão" in proc.stdout
    assert re.search(r"^✅ PostgreSQL backup: postgres_\d{8}_\d{6}\.tar\.gz$", proc.stdout, re.M)
    assert len(archives(other)) == 1 and len(archives(backup_dir)) == 1
    after = read_metrics(textfile_dir)
    assert {name: after[name] for name in METRICS} == {name: standard[name] for name in METRICS}
    ((where, when),) = last_good(after).items()
    assert where == f'{GOOD}{{directory="{other.resolve()}",standard="false"}}'
    assert when > standard["techno_os_backup_last_success_timestamp_seconds"]


def test_a_manual_run_elsewhere_before_any_nightly_one_leaves_the_standard_directory_stale(
    db: Db, backup_dir: Path, textfile_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "mnt-backups"
    proc = run_backup(**backup_env(db, other, textfile_dir, STANDARD_BACKUP_DIR=str(backup_dir)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    values = read_metrics(textfile_dir)
    # BackupStale fires on the absent success timestamp: the standard directory holds nothing.
    assert not set(METRICS) & set(values), values
    assert list(last_good(values)) == [f'{GOOD}{{directory="{other.resolve()}",standard="false"}}']
