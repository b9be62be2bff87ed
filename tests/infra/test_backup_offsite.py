"""Runbook § BACKUP E RESTORE, offsite copies (pgBackRest): WAL reaches the backup host every
few minutes, base backups are verified and fresh, the nightly restore test passes, everything
stored there is encrypted and out of the db host's reach.

Drills (sandbox): the db host's identity cannot remove or replace sealed WAL; a missing segment
fails the verification and the restore test (and both pass once it is back); the backup host
unreachable: the database keeps serving, WAL waits on the db host, WalArchivingFailing fires,
archiving catches up when it is back and the restore test finds every committed row.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from typing import Any

import pytest

from ._offsite import (
    Repository,
    archiver,
    check_archiving_succeeds,
    check_newest_verified_backup_is_fresh,
    check_restore_test_passed_recently,
    check_wal_reaches_the_backup_host,
    cipher_pass,
    firing,
    sandbox_tool,
    sql,
    stanza,
    switch_wal,
    wait_archived,
)
from ._support import Target, wait_until


# --- read-only ------------------------------------------------------------------------------------
@pytest.mark.readonly
@pytest.mark.role("db")
def test_archive_command_pushes_every_segment_to_pgbackrest_within_a_minute(target: Target) -> None:
    settings = dict(
        line.split("|", 1)
        for line in sql(
            target,
            "SELECT name || '|' || setting FROM pg_settings WHERE name IN "
            "('archive_mode', 'archive_command', 'archive_timeout', 'wal_level')",
        ).splitlines()
    )
    assert settings["archive_mode"] == "on"
    assert settings["wal_level"] == "replica"
    assert settings["archive_command"] == f"pgbackrest --stanza={stanza(target)} archive-push %p"
    assert int(settings["archive_timeout"]) == 60, settings


@pytest.mark.readonly
@pytest.mark.role("db")
def test_the_newest_archive_attempt_succeeded(target: Target) -> None:
    check_archiving_succeeds(target)


@pytest.mark.readonly
@pytest.mark.role("backup")
def test_wal_reached_the_backup_host_in_the_last_five_minutes(target: Target) -> None:
    check_wal_reaches_the_backup_host(target)


@pytest.mark.readonly
@pytest.mark.role("backup")
def test_the_newest_verified_offsite_backup_is_younger_than_26_hours(target: Target) -> None:
    check_newest_verified_backup_is_fresh(target)


@pytest.mark.readonly
@pytest.mark.role("backup")
def test_the_nightly_restore_test_passed_in_the_last_26_hours(target: Target) -> None:
    check_restore_test_passed_recently(target)


@pytest.mark.readonly
@pytest.mark.role("backup")
def test_every_file_stored_on_the_backup_host_is_encrypted(target: Target) -> None:
    repo = Repository(target)
    script = (
        "import os, sys\n"
        "plain, total = [], 0\n"
        "for d, _, names in os.walk(sys.argv[1]):\n"
        "    for n in names:\n"
        "        total += 1\n"
        "        with open(os.path.join(d, n), 'rb') as f:\n"
        "            if f.read(8) != b'Salted__': plain.append(os.path.join(d, n))\n"
        "print(total); print('\\n'.join(plain[:20]))\n"
    )
    out = target.check("python3 -c %s %s", script, repo.path).split()
    total, plain = int(out[0]), out[1:]
    assert total > 0, f"no file in {repo.path}"
    assert not plain, f"{len(plain)} file(s) of the repository are not encrypted: {plain}"


@pytest.mark.readonly
@pytest.mark.role("backup")
def test_sealed_wal_belongs_to_the_repository_owner_and_is_read_only(target: Target) -> None:
    repo = Repository(target)
    # Older than a minute: the sealer (every few seconds) has been over them.
    # Inside each archive id directory (archive.info beside them is the owner's, 0640, in a
    # directory the endpoint cannot write to).
    out = target.check(
        f"find {repo.archive} -mindepth 2 ! -mmin -1 "
        r"\( -type f ! -name '*.pgbackrest.tmp' -printf 'f %u:%g %m %p\n' \) -o "
        r"\( -type d -printf 'd %u:%g %m %p\n' \)"
    )
    wrong = [
        line
        for line in out.splitlines()
        if (line.startswith("f ") and " pgbackrest:pgwal 440 " not in line)
        or (line.startswith("d ") and " pgbackrest:pgwal 3770 " not in line)
    ]
    assert out.strip(), f"nothing sealed in {repo.archive} yet"
    assert not wrong, f"WAL the db host could still remove or rewrite: {wrong[:10]}"


@pytest.mark.readonly
@pytest.mark.role("backup")
def test_the_endpoints_and_the_backup_timers_run(target: Target) -> None:
    for unit in (
        "pgbackrest-archive-server.service",
        "pgbackrest-restore-server.service",
        "techno-os-pgbr-seal.timer",
        "techno-os-pgbr-metrics.timer",
        "techno-os-pgbr-nightly.timer",
    ):
        service = target.host.service(unit)
        assert service.is_running and service.is_enabled, f"{unit} is not enabled and running"


@pytest.mark.readonly
@pytest.mark.role("db")
def test_the_repository_passphrase_is_nowhere_on_the_db_host(target: Target) -> None:
    """Searched on the host through stdin (never on a command line), file names only."""
    passphrase = cipher_pass(target)
    if not passphrase:
        pytest.fail("PGBACKREST_CIPHER_PASS is unknown here (environment or secrets file)")
    from inventory import ssh_argv  # tools/, on sys.path through _support

    inventory_host = next(h for h in _inventory() if h.name == target.name)
    result = subprocess.run(
        ssh_argv(
            inventory_host,
            "grep -rlF -f /dev/stdin /etc /opt /root /var/spool /var/log /var/lib/docker/volumes "
            "2>/dev/null; true",
        ),
        input=passphrase + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "", f"the passphrase is in: {result.stdout.split()[:10]}"


def _inventory() -> Any:
    from ._support import load_inventory

    return load_inventory()


# --- drills ---------------------------------------------------------------------------------------
def _guard(*targets: Target) -> None:
    for t in targets:
        if not t.disposable:
            pytest.fail(f"refusing to run a drill against {t.name}: not disposable")


def _report(capsys: Any, record_property: Any, what: str, **figures: float) -> None:
    for key, value in figures.items():
        record_property(key, round(value, 1))
    with capsys.disabled():
        print(f"\n    {what}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))


@pytest.mark.drill
def test_the_db_hosts_identity_cannot_remove_or_replace_sealed_wal(sandbox) -> None:
    db, backup = sandbox.the("db"), sandbox.the("backup")
    _guard(db, backup)
    repo = Repository(backup)
    name = switch_wal(db)
    wait_archived(db, name)
    path = wait_until(lambda: repo.segment_files().get(name), timeout=60, what=f"{name} stored")
    wait_until(
        lambda: backup.check("stat -c %%U:%%a %s", path).strip() == "pgbackrest:440",
        timeout=60,
        what=f"{name} sealed",
    )
    before = backup.check("sha1sum %s", path)
    as_archiver = "runuser -u pgarchive -- sh -c %s"
    folder = path.rsplit("/", 1)[0]
    # The method sees write access where it exists: pgarchive removes a file it just made.
    probe = f"{folder}/drill-probe-{secrets.token_hex(3)}"
    assert backup.run(as_archiver, f"touch {probe} && rm {probe}").rc == 0, (
        "pgarchive cannot even create and remove its own file: the probe proves nothing"
    )
    for what, command in (
        ("remove", f"rm -f {path}"),
        ("overwrite", f"echo x > {path}"),
        ("rename", f"mv {path} {path}.x"),
        ("replace by rename", f"echo x > {folder}/evil && mv -f {folder}/evil {path}"),
        ("chmod", f"chmod 0666 {path}"),
    ):
        result = backup.run(as_archiver, command)
        assert result.rc != 0, f"pgarchive could {what} sealed WAL {path}"
    backup.run(as_archiver, f"rm -f {folder}/evil")
    # Through the protocol, with the db host's client certificate (inside its container).
    in_db = f"docker exec -u postgres {db.cfg('db_container')} pgbackrest --stanza={stanza(db)} "
    relative = path.split(f"{repo.path}/", 1)[1]
    for what, command in (
        ("read backup.info", f"repo-get backup/{stanza(db)}/backup.info"),
        ("expire backups", "expire"),
    ):
        result = db.run(in_db + command)
        assert result.rc != 0, f"the db host could {what}: {result.stdout[-300:]}"
    # stanza-delete wants the stanza stopped first; a compromised host would do both.
    container = f"docker exec -u postgres {db.cfg('db_container')} sh -c %s"
    pgbr = f"pgbackrest --stanza={stanza(db)}"
    deleted = db.run(
        container, f"{pgbr} stop; {pgbr} --force stanza-delete; rc=$?; {pgbr} start; exit $rc"
    )
    assert deleted.rc != 0, f"the db host could delete the stanza: {deleted.stdout[-300:]}"
    overwrite = db.run(f"echo x | {in_db.replace('exec -u', 'exec -i -u')} repo-put {relative}")
    assert overwrite.rc != 0, "the db host could overwrite sealed WAL through the endpoint"
    assert backup.check("sha1sum %s", path) == before, f"{path} changed"


@pytest.mark.drill
def test_a_missing_wal_segment_fails_verification_and_the_restore_test_until_it_is_back(
    sandbox, capsys: Any, record_property: Any
) -> None:
    db, backup = sandbox.the("db"), sandbox.the("backup")
    _guard(db, backup)
    repo = Repository(backup)
    table = f"drill_missing_{secrets.token_hex(3)}"
    sql(db, f"CREATE TABLE {table} (id int PRIMARY KEY)", db.cfg("db_name"))
    segments = []
    for row in (1, 2, 3):
        sql(db, f"INSERT INTO {table} VALUES ({row})", db.cfg("db_name"))
        segments.append(switch_wal(db))
        wait_archived(db, segments[-1])
    middle = wait_until(lambda: repo.segment_files().get(segments[1]), timeout=60, what="stored")
    saved = f"/root/drill-saved-{segments[1]}"
    backup.check("mv %s %s", middle, saved)
    try:
        started = time.monotonic()
        verified = repo.tool("backup --type=incr")
        assert verified.rc != 0, "a backup counted as good with a WAL segment missing"
        assert "archive hole" in verified.stderr, verified.stderr[-1500:]
        assert "1 segment(s) missing" in verified.stderr, verified.stderr[-1500:]
        assert repo.metrics()["pgbackrest_backup_last_run_success"] == 0
        tested = repo.tool("restore-test")
        assert tested.rc != 0, "the restore test passed with a WAL segment missing"
        assert "before the newest archived segment" in tested.stderr, tested.stderr[-1500:]
        assert repo.metrics()["pgbackrest_restore_test_success"] == 0
        detected = time.monotonic() - started
    finally:
        backup.check("mv %s %s", saved, middle)
    started = time.monotonic()
    assert repo.tool("backup --type=incr").rc == 0, "the backup still fails with the segment back"
    passed = repo.tool(f"restore-test --expect {table}:3")
    assert passed.rc == 0, passed.stderr[-1500:]
    check_restore_test_passed_recently(backup)
    sql(db, f"DROP TABLE {table}", db.cfg("db_name"))
    _report(
        capsys,
        record_property,
        "missing WAL segment",
        detected_by_verify_and_restore_test_s=detected,
        good_again_s=time.monotonic() - started,
    )


@pytest.mark.drill
def test_backup_host_unreachable_the_database_serves_the_alert_fires_nothing_is_lost(
    sandbox, capsys: Any, record_property: Any
) -> None:
    db, backup, edge = sandbox.the("db"), sandbox.the("backup"), sandbox.the("edge")
    _guard(db, backup)
    check_archiving_succeeds(db)
    table = f"drill_outage_{secrets.token_hex(3)}"
    sql(db, f"CREATE TABLE {table} (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
        db.cfg("db_name"))  # fmt: skip
    wait_archived(db, switch_wal(db))
    stopped = sandbox_tool("stop", backup.name)
    assert stopped.returncode == 0, stopped.stderr
    down_at = time.monotonic()
    slowest = 0.0
    try:
        # The database keeps serving: batches of writes, a closed segment after each.
        for _ in range(6):
            began = time.monotonic()
            sql(db, f"INSERT INTO {table} (at) SELECT now() FROM generate_series(1, 500)",
                db.cfg("db_name"))  # fmt: skip
            slowest = max(slowest, time.monotonic() - began)
            switch_wal(db)
        # The check the read-only suite runs fails now (the drill proves it can).
        wait_until(
            lambda: archiver(db)["last_failed"] > archiver(db)["last_archived"],
            timeout=120,
            what="the db host sees its archive attempts fail",
        )
        with pytest.raises(AssertionError):
            check_archiving_succeeds(db)
        waiting = archiver(db)["ready"]
        assert waiting > 0, "no WAL waits on the db host while the backup host is away"
        wait_until(
            lambda: firing(edge, "WalArchivingFailing"),
            timeout=300,
            interval=2,
            what="WalArchivingFailing firing in Prometheus (ALERTS)",
        )
        fired = time.monotonic() - down_at
        committed = int(sql(db, f"SELECT count(*) FROM {table}", db.cfg("db_name")))
    finally:
        started = sandbox_tool("start", backup.name)
    assert started.returncode == 0, started.stderr
    back_at = time.monotonic()
    wait_until(
        lambda: backup.run("systemctl is-active --quiet pgbackrest-archive-server").rc == 0,
        timeout=180,
        what="the archive endpoint back",
    )
    last = switch_wal(db)
    wait_archived(db, last, timeout=300)
    caught_up = time.monotonic() - back_at
    check_archiving_succeeds(db)
    # Nothing lost: the newest verified backup plus every archived segment holds every row.
    tested = Repository(backup).tool(f"restore-test --expect {table}:{committed}")
    assert tested.rc == 0, tested.stderr[-1500:]
    wait_until(
        lambda: not firing(edge, "WalArchivingFailing"),
        timeout=180,
        interval=2,
        what="WalArchivingFailing resolved",
    )
    sql(db, f"DROP TABLE {table}", db.cfg("db_name"))
    _report(
        capsys,
        record_property,
        "backup host unreachable",
        slowest_write_batch_s=slowest,
        stop_to_alert_firing_s=fired,
        wal_segments_waiting=waiting,
        back_to_caught_up_s=caught_up,
        rows_committed_during_outage=committed,
    )
