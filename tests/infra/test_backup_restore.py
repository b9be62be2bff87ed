"""Runbook § BACKUP E RESTORE: the backup script's output and files, retention, failures that delete
nothing, the runbook's six restore steps typed as written, restore_observability.sh, and a restore
check without downtime.

Drills (sandbox only) write preferences through the API, back up while writes continue, restore,
and compare every row committed before the backup started. The restore check without downtime is
read-only (safe on production): it restores the latest archive into a throwaway container.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ._support import Target, wait_until

COUNT_TABLES_SQL = (
    "SELECT table_name || '=' || (xpath('/row/c/text()', query_to_xml(format("
    "'SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' "
    "ORDER BY 1"
)
RESTORE_CHECK_PREFIX = "techno-os-restorecheck"


def _plain(text: str) -> str:
    return text.replace("\ufe0f", "")  # emoji presentation selectors do not change the line


def backup_script(t: Target) -> str:
    return f"{t.cfg('scripts_dir')}/backup_observability.sh"


def restore_script(t: Target) -> str:
    return f"{t.cfg('scripts_dir')}/restore_observability.sh"


def host_time(t: Target) -> float:
    return float(t.check("date +%s.%N"))


def table_counts(t: Target, container: str) -> dict[str, int]:
    out = t.check(
        "docker exec %s psql -X -At -U %s -d %s -c %s",
        container,
        t.cfg("db_user"),
        t.cfg("db_name"),
        COUNT_TABLES_SQL,
    )
    return {k: int(v) for k, v in (line.split("=", 1) for line in out.split())}


# --- read-only: restore check without downtime ------------------------------------------------
@pytest.mark.readonly
@pytest.mark.role("db")
def test_latest_archive_restores_into_a_throwaway_container_with_consistent_row_counts(
    target: Target,
) -> None:
    t = target
    latest = f"{t.cfg('backup_dir')}/postgres_latest.tar.gz"
    if t.run("test -e %s", latest).rc != 0:
        pytest.skip("no backup yet (postgres_latest.tar.gz absent)")
    db = t.inspect(t.cfg("db_container"))
    assert db, "the database container does not exist"
    mounts = [m for m in db["Mounts"] if m.get("Name") == t.cfg("db_volume")]
    assert mounts, f"{t.cfg('db_container')} does not mount {t.cfg('db_volume')}"
    mount = mounts[0]
    name = f"{RESTORE_CHECK_PREFIX}-{secrets.token_hex(4)}"
    # Leftovers of an interrupted earlier check (only this check creates these names).
    t.run(
        f"docker ps -aq --filter name=^{RESTORE_CHECK_PREFIX}- | xargs -r docker rm -f; "
        f"docker volume ls -q --filter name=^{RESTORE_CHECK_PREFIX}- | xargs -r docker volume rm"
    )
    try:
        t.check("docker volume create %s", name)
        t.check(
            "docker run --rm --network none --entrypoint sh -v %s:/data -v %s:/backup:ro %s "
            "-c 'cd /data && tar --numeric-owner -xzf /backup/postgres_latest.tar.gz'",
            name,
            t.cfg("backup_dir"),
            db["Config"]["Image"],
        )
        t.check(
            "docker run -d --name %s --network none -v %s:%s %s",
            name,
            name,
            mount["Destination"],
            db["Config"]["Image"],
        )
        wait_until(
            lambda: (
                t.run(
                    "docker exec %s pg_isready -q -U %s -d %s",
                    name,
                    t.cfg("db_user"),
                    t.cfg("db_name"),
                ).rc
                == 0
            ),
            timeout=90,
            what="the restored copy accepts connections",
        )
        restored = table_counts(t, name)
        live = table_counts(t, t.cfg("db_container"))
    finally:
        t.run("docker rm -f %s; docker volume rm %s", name, name)
    assert set(restored) == set(live), f"tables differ: restored {restored}, live {live}"
    assert "user_preferences" in restored
    newer = {k: (restored[k], live[k]) for k in live if restored[k] > live[k]}
    assert not newer, f"the archive holds more rows than the live database: {newer}"


# --- drills ----------------------------------------------------------------------------------
class Preferences:
    """Rows of user_preferences, written and read through the API (of an API host, with the
    drills' client key) as a client would."""

    def __init__(self, t: Target, run: str) -> None:
        self.t = t
        self.run = run

    def content(self, user: str, version: int = 1) -> dict:
        return {"theme": "dark", "user": user, "version": version, "tags": ["a", "ção ✓"]}

    def write(self, label: str, count: int, version: int = 1) -> dict[str, dict]:
        """PUT `count` users; returns user id -> the body GET answered right after."""
        written = {}
        for n in range(count):
            user = f"{self.run}-{label}-{n}"
            response = self.t.api("PUT", f"/preferences/{user}", self.content(user, version))
            assert response.status == 200, f"PUT {user}: {response.status} {response.body}"
            written[user] = self.read(user)
        return written

    def read(self, user: str) -> dict:
        response = self.t.api("GET", f"/preferences/{user}")
        assert response.status == 200, f"GET {user}: {response.status} {response.body}"
        return response.json()

    def assert_restored(self, rows: dict[str, dict]) -> None:
        wrong = {}
        for user, body in rows.items():
            response = self.t.api("GET", f"/preferences/{user}")
            if response.status != 200 or response.json() != body:
                wrong[user] = (response.status, response.body[:200])
        assert not wrong, f"{len(wrong)} of {len(rows)} rows not restored as written: {wrong}"

    def assert_absent(self, users: list[str]) -> None:
        present = [u for u in users if self.t.api("GET", f"/preferences/{u}").status != 404]
        assert not present, f"rows written after the backup survived the restore: {present}"


class Backup:
    """One run of backup_observability.sh and what it printed."""

    def __init__(self, t: Target, env: str = "") -> None:
        self.started = host_time(t)
        result = t.run(f"{env} timeout 600 {shlex.quote(backup_script(t))} 2>&1")
        self.finished = host_time(t)
        self.rc = result.rc
        self.output = _plain(result.stdout)
        match = re.search(r"^✅ Iniciando backup: (\d{8}_\d{6})$", self.output, re.M)
        self.timestamp = match.group(1) if match else None
        self.archive = f"postgres_{self.timestamp}.tar.gz"


@contextmanager
def background_writer(t: Target, run: str) -> Iterator[list]:
    """PUTs (on API host `t`) that keep going (bounded: 5 minutes at most) until the block
    ends; yields a list filled on exit with (user, http status, host time when it returned)."""
    base = f"/tmp/{run}-writer"
    script = (
        "i=0; end=$(( $(date +%s) + 300 )); "
        f'while [ ! -e {base}.stop ] && [ "$(date +%s)" -lt "$end" ]; do i=$((i+1)); '
        f"u={run}-bg-$i; "
        "code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X PUT "
        f"-H 'Content-Type: application/json' -H @{base}.auth "
        '--data-binary "{\\"theme\\": \\"bg\\", \\"user\\": \\"$u\\", \\"seq\\": $i}" '
        f'{t.api_url}/preferences/$u); echo "$u $code $(date +%s.%N)"; done'
    )
    # The key in a 0600 file, not on a command line another user could read.
    t.check("umask 077 && printf 'Authorization: Bearer %%s\\n' %s > %s.auth", t.api_key, base)
    t.check("printf '%%s' %s > %s.sh", script, base)
    t.check(f"setsid nohup sh {base}.sh > {base}.log 2>&1 < /dev/null & echo $! > {base}.pid")
    wait_until(
        lambda: t.run(f"test -s {base}.log").rc == 0, timeout=15, what="background writes started"
    )
    rows: list = []
    try:
        yield rows
    finally:
        t.run(f"touch {base}.stop")
        wait_until(
            lambda: t.run(f"kill -0 $(cat {base}.pid)").rc != 0,
            timeout=15,
            what="background writer stopped",
        )
        for line in t.check(f"cat {base}.log").splitlines():
            user, code, when = line.split()
            rows.append((user, int(code), float(when)))
        t.run(f"rm -f {base}.sh {base}.log {base}.pid {base}.stop {base}.auth")


@pytest.fixture
def db(sandbox) -> Iterator[Target]:
    """The database host of a disposable inventory, its stack left up whatever happens."""
    t = sandbox.the("db")
    if not t.disposable:
        pytest.fail(f"refusing to run a drill against {t.name}: not disposable")
    api = sandbox.by_role("api")[0]
    api.wait_api_ready()
    yield t
    # Whatever happened, leave the stack up (a restore drill may have failed midway).
    if api.api("GET", "/ready", timeout=5).status != 200:
        t.run("cd %s && docker-compose up -d", t.cfg("backend_dir"))
        t.run("docker start %s", t.cfg("api_container"))
        api.wait_api_ready(timeout=300)


@pytest.fixture
def api(sandbox) -> Target:
    return sandbox.by_role("api")[0]


@pytest.fixture
def prefs(api: Target) -> Preferences:
    return Preferences(api, f"drill{int(time.time())}{secrets.token_hex(2)}")


def assert_runbook_output(b: Backup, days: int) -> None:
    expected = [
        rf"✅ Iniciando backup: {b.timestamp}",
        r"📦 Backup PostgreSQL\.\.\.",
        rf"✅ PostgreSQL backup: {re.escape(b.archive)}",
        rf"🗑 Aplicando retenção \({days} dias\)\.\.\.",
        rf"✅ Backup concluído: {b.timestamp}",
    ]
    lines = b.output.splitlines()
    position = 0
    for pattern in expected:
        found = next(
            (i for i in range(position, len(lines)) if re.fullmatch(pattern, lines[i].strip())),
            None,
        )
        assert found is not None, f"runbook line /{pattern}/ missing or out of order:\n{b.output}"
        position = found + 1


def seed_archives(t: Target, directory: str, ages_minutes: list[int]) -> dict[int, str]:
    """Small valid archives named and dated `age` minutes ago; returns age -> file name."""
    now = int(host_time(t))
    names = {}
    t.check("mkdir -p -m 700 %s", directory)
    for age in ages_minutes:
        when = now - age * 60
        name = "postgres_" + t.check("date -d @%s +%%Y%%m%%d_%%H%%M%%S", when).strip() + ".tar.gz"
        t.check(
            "tar -czf %s -C /etc hostname && touch -d @%s %s",
            f"{directory}/{name}",
            when,
            f"{directory}/{name}",
        )
        names[age] = name
    return names


def listing(t: Target, directory: str) -> set[str]:
    return set(t.check("ls -A %s", directory).split())


DAY = 24 * 60


@pytest.mark.drill
def test_retention_deletes_archives_older_than_seven_days_to_the_minute_and_keeps_the_rest(
    db: Target,
) -> None:
    t = db
    days = int(t.cfg("retention_days"))
    directory = f"/tmp/techno-os-drill-retention-{secrets.token_hex(3)}"
    try:
        seeds = seed_archives(t, directory, [8 * DAY, days * DAY + 10, days * DAY - 10, DAY])
        b = Backup(t, f"BACKUP_DIR={shlex.quote(directory)} RETENTION_DAYS={days}")
        assert b.rc == 0, b.output
        assert_runbook_output(b, days)
        files = listing(t, directory)
        assert seeds[8 * DAY] not in files and seeds[days * DAY + 10] not in files, files
        assert {seeds[days * DAY - 10], seeds[DAY], b.archive, "postgres_latest.tar.gz"} <= files
        assert t.check("readlink %s", f"{directory}/postgres_latest.tar.gz").strip() == b.archive
    finally:
        t.run("rm -rf %s", directory)


@pytest.mark.drill
def test_a_backup_with_the_database_stopped_exits_nonzero_and_deletes_nothing(
    db: Target, api: Target
) -> None:
    t = db
    directory = f"/tmp/techno-os-drill-dbdown-{secrets.token_hex(3)}"
    container = t.cfg("db_container")
    try:
        seeds = seed_archives(t, directory, [8 * DAY, DAY])
        t.check("ln -s %s %s", seeds[DAY], f"{directory}/postgres_latest.tar.gz")
        before = listing(t, directory)
        t.check("docker stop %s", container)
        b = Backup(t, f"BACKUP_DIR={shlex.quote(directory)}")
        assert b.rc != 0, f"the backup succeeded with the database stopped:\n{b.output}"
        assert "❌" in b.output, f"no failure line:\n{b.output}"
        assert "✅ Backup concluído" not in b.output
        after = listing(t, directory) - {".backup_observability.lock"}
        assert after == before - {".backup_observability.lock"}, (before, after)
        assert t.check("readlink %s", f"{directory}/postgres_latest.tar.gz").strip() == seeds[DAY]
    finally:
        t.run("docker start %s", container)
        t.wait_container_healthy(container)
        api.wait_api_ready()
        t.run("rm -rf %s", directory)


@pytest.mark.drill
def test_a_backup_into_an_unwritable_directory_exits_nonzero_and_deletes_nothing(
    db: Target,
) -> None:
    t = db
    directory = f"/tmp/techno-os-drill-ro-{secrets.token_hex(3)}"
    try:
        t.check(
            "mkdir -p %s && mount -t tmpfs -o size=16m,mode=0700 tmpfs %s", directory, directory
        )
        seeds = seed_archives(t, directory, [8 * DAY, DAY])
        t.check("mount -o remount,ro %s", directory)
        b = Backup(t, f"BACKUP_DIR={shlex.quote(directory)}")
        assert b.rc != 0, f"the backup succeeded into a read-only directory:\n{b.output}"
        assert "❌" in b.output, f"no failure line:\n{b.output}"
        assert set(seeds.values()) <= listing(t, directory)
    finally:
        t.run("umount %s; rmdir %s", directory, directory)


@pytest.mark.drill
def test_backup_during_writes_then_the_runbook_restore_steps_bring_back_every_committed_row(
    db: Target, api: Target, prefs: Preferences
) -> None:
    t = db
    before = prefs.write("before", 30)
    with background_writer(api, prefs.run) as background:
        wait_until(
            lambda: api.run("test $(wc -l < /tmp/%s-writer.log) -ge 5", prefs.run).rc == 0,
            timeout=30,
            what="background writes under way",
        )
        b = Backup(t)
    assert b.rc == 0, b.output
    assert_runbook_output(b, int(t.cfg("retention_days")))

    # The writes went on during the backup, and those committed before it started are kept.
    ok = [(u, when) for u, code, when in background if code == 200]
    during = [u for u, when in ok if b.started < when < b.finished]
    assert during, f"no write completed during the backup ({len(ok)} writes in all)"
    committed_before = {u: prefs.read(u) for u, when in ok if when < b.started}
    committed_before.update(before)

    # The files: postgres_<ts>.tar.gz (root only), postgres_latest.tar.gz pointing at it.
    directory = t.cfg("backup_dir")
    archive = t.host.file(f"{directory}/{b.archive}")
    assert archive.exists and archive.user == "root" and not archive.mode & 0o077
    latest = t.host.file(f"{directory}/postgres_latest.tar.gz")
    assert latest.is_symlink and latest.linked_to == f"{directory}/{b.archive}"
    t.check("gzip -t %s", archive.path)
    assert "backup_label" in t.check("tar -tzf %s", archive.path).split(), "no backup_label"

    # After the backup: new rows, and a changed row, that the restore must undo.
    later = prefs.write("after", 5)
    changed = next(iter(before))
    api.api("PUT", f"/preferences/{changed}", {"theme": "changed after the backup"})

    backend, volume = t.cfg("backend_dir"), t.cfg("db_volume")
    image = t.inspect(t.cfg("db_container"))["Config"]["Image"]
    try:
        # Passo 1: Parar serviços
        t.check("cd %s && docker-compose down", backend)
        # Passo 2: Remover volume antigo
        t.check("docker volume rm %s", volume)
        # Passo 3: Recriar volume vazio
        t.check("docker volume create %s", volume)
        # Passo 4: Restaurar backup (latest), with an image the host has (the database's own:
        # the base image never reaches the hosts) and numeric owners
        t.check(
            "BACKUP_FILE=%s; docker run --rm --entrypoint sh -v %s:/data -v %s:/backup:ro %s "
            '-c "cd /data && tar --numeric-owner -xzf /backup/$(basename $BACKUP_FILE)"',
            f"{directory}/postgres_latest.tar.gz",
            volume,
            directory,
            image,
        )
        # Passo 5: Subir serviços
        t.check("cd %s && docker-compose up -d", backend)
    finally:
        api.wait_api_ready(timeout=300)
    # Passo 6: Validar restore
    assert json.loads(api.check("curl -s http://localhost:%s/health", api.cfg("api_port"))) == {
        "status": "ok"
    }
    count = t.check(
        'docker exec %s psql -U %s -d %s -c "SELECT COUNT(*) FROM user_preferences;"',
        t.cfg("db_container"),
        t.cfg("db_user"),
        t.cfg("db_name"),
    )
    assert re.search(r"^\s*\d+\s*$", count, re.M), count
    prefs.assert_restored(committed_before)
    prefs.assert_absent(list(later))


@pytest.mark.drill
def test_restore_script_with_yes_restores_the_latest_or_a_chosen_archive(
    db: Target, api: Target, prefs: Preferences
) -> None:
    t = db
    first_rows = prefs.write("first", 10)
    first = Backup(t)
    assert first.rc == 0, first.output
    second_rows = prefs.write("second", 10)
    second = Backup(t)
    assert second.rc == 0, second.output
    later = prefs.write("later", 5)

    try:
        result = t.run("timeout 600 %s --yes 2>&1", restore_script(t))
    finally:
        api.wait_api_ready(timeout=300)
    output = _plain(result.stdout)
    assert result.rc == 0, output
    assert re.search(r"user_preferences: \d+ linhas", output), output
    prefs.assert_restored({**first_rows, **second_rows})
    prefs.assert_absent(list(later))

    try:
        result = t.run("timeout 600 %s --yes %s 2>&1", restore_script(t), first.archive)
    finally:
        api.wait_api_ready(timeout=300)
    assert result.rc == 0, _plain(result.stdout)
    prefs.assert_restored(first_rows)
    prefs.assert_absent(list(second_rows))

    # Leave the newest archive equal to the live database (for the restore check).
    assert Backup(t).rc == 0
