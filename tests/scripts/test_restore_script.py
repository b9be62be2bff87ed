"""files/scripts/restore_observability.sh: the runbook's restore, automated, on a compose stack.

The stack here is a throwaway compose project holding only the database (the API is the lead's
compose file); the script is told not to wait for an API container or URL.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from script_harness import (
    DB_NAME,
    DB_PASSWORD,
    DB_USER,
    RESTORE_SCRIPT,
    Db,
    docker,
    run,
    run_backup,
    script_env,
)

COMPOSE_FILE = """\
version: "3.8"
services:
  db:
    image: {image}
    container_name: {container}
    environment:
      DB_USER: {user}
      DB_NAME: {name}
      DB_PASSWORD_FILE: /run/db_password
    volumes:
      - postgres_data:/var/lib/postgresql/data
      - ./db_password:/run/db_password:ro
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -q -U {user} -d {name}"]
      interval: 1s
      timeout: 3s
      retries: 30
volumes:
  postgres_data:
"""


@pytest.fixture(scope="module")
def stack(postgres_image: str, prefix: str, tmp_path_factory: pytest.TempPathFactory):
    """A compose project in its own backend dir, up and healthy, with 50 preferences."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (apt-get install -y docker-compose)")
    backend = tmp_path_factory.mktemp("backend")
    project = f"{prefix}-stack"
    db = Db(container=f"{prefix}-stack-db", volume=f"{project}_postgres_data")
    (backend / "db_password").write_text(DB_PASSWORD)
    (backend / "docker-compose.yml").write_text(
        COMPOSE_FILE.format(
            image=postgres_image, container=db.container, user=DB_USER, name=DB_NAME
        )
    )
    env = script_env(COMPOSE_PROJECT_NAME=project)
    run(["docker-compose", "up", "-d"], env=env, cwd=backend, timeout=120)
    db.wait_ready()
    db.sql(
        "CREATE TABLE user_preferences (id bigserial PRIMARY KEY, user_id text NOT NULL,"
        " payload text NOT NULL)"
    )
    db.sql(
        "INSERT INTO user_preferences (user_id, payload)"
        " SELECT 'u' || g, md5(g::text) FROM generate_series(1, 50) g"
    )
    yield backend, project, db
    run(["docker-compose", "down", "-v"], env=env, cwd=backend, check=False, timeout=120)


LABEL_FORMAT = '{{index .Labels "com.docker.compose.project"}}'


def restore_env(backend: Path, project: str, db: Db, backup_dir: Path, **extra: str) -> dict:
    return script_env(
        BACKUP_DIR=str(backup_dir),
        BACKEND_DIR=str(backend),
        COMPOSE_PROJECT_NAME=project,
        DB_CONTAINER=db.container,
        API_CONTAINER="",
        HEALTH_URL="",
        WAIT_TIMEOUT="120",
        **extra,
    )


def running(container: str) -> bool:
    return docker("inspect", "-f", "{{.State.Running}}", container, check=False) == "true"


def test_restore_brings_back_the_backup_and_drops_later_rows(
    stack, tmp_path: Path, record_property
) -> None:
    backend, project, db = stack
    backup_dir = tmp_path / "backups"
    proc = run_backup(
        BACKUP_DIR=str(backup_dir), DB_CONTAINER=db.container, TEXTFILE_DIR=str(tmp_path / "none")
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db.sql("INSERT INTO user_preferences (user_id, payload) VALUES ('after', 'backup')")

    started = time.monotonic()
    proc = run(
        ["bash", RESTORE_SCRIPT, "--yes"],
        check=False,
        timeout=300,
        env=restore_env(backend, project, db, backup_dir),
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record_property("restore_seconds", round(elapsed, 2))
    print(f"\nrestore script (down, volume, untar, up, healthy): {elapsed:.2f}s")

    assert "📊 user_preferences: 50 linhas" in proc.stdout
    assert "✅ Restore concluído" in proc.stdout
    assert db.sql("SELECT count(*) FROM user_preferences WHERE user_id = 'after'") == "0"
    assert db.sql("SELECT count(*) FROM user_preferences") == "50"
    # The volume is compose's own, refilled (a recreated one would lack compose's labels); the
    # copy kept meanwhile is gone once the restored database is healthy.
    assert docker("volume", "inspect", "-f", LABEL_FORMAT, db.volume) == project
    assert "💾 Guardando uma cópia do volume atual" in proc.stdout
    assert docker("volume", "ls", "-q", "--filter", f"name={db.volume}_before_restore_") == ""
    owners = docker(
        "exec", db.container, "find", "/var/lib/postgresql/data", "!", "-user", "postgres"
    )
    assert owners == ""


def test_restore_refuses_without_a_terminal_or_yes(stack, tmp_path: Path) -> None:
    backend, project, db = stack
    backup_dir = tmp_path / "backups"
    assert run_backup(BACKUP_DIR=str(backup_dir), DB_CONTAINER=db.container).returncode == 0
    started_at = docker("inspect", "-f", "{{.State.StartedAt}}", db.container)
    proc = run(
        ["bash", RESTORE_SCRIPT], check=False, env=restore_env(backend, project, db, backup_dir)
    )
    assert proc.returncode != 0
    assert "use --yes" in proc.stdout
    assert running(db.container)
    assert docker("inspect", "-f", "{{.State.StartedAt}}", db.container) == started_at


def test_corrupt_archive_is_rejected_before_anything_stops(stack, tmp_path: Path) -> None:
    backend, project, db = stack
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    good = run_backup(BACKUP_DIR=str(backup_dir), DB_CONTAINER=db.container)
    assert good.returncode == 0
    latest = (backup_dir / "postgres_latest.tar.gz").resolve()
    data = latest.read_bytes()
    (backup_dir / "postgres_20200101_020000.tar.gz").write_bytes(data[: len(data) // 2])
    started_at = docker("inspect", "-f", "{{.State.StartedAt}}", db.container)

    proc = run(
        ["bash", RESTORE_SCRIPT, "--yes", "postgres_20200101_020000.tar.gz"],
        check=False,
        env=restore_env(backend, project, db, backup_dir),
    )
    assert proc.returncode != 0
    assert "❌ Restore falhou" in proc.stdout
    assert "corrompido" in proc.stdout
    assert docker("inspect", "-f", "{{.State.StartedAt}}", db.container) == started_at


def test_archive_without_backup_label_is_rejected(stack, tmp_path: Path) -> None:
    backend, project, db = stack
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    (tmp_path / "PG_VERSION").write_text("15\n")
    run(
        [
            "tar",
            "-C",
            tmp_path,
            "-czf",
            backup_dir / "postgres_20200101_020000.tar.gz",
            "PG_VERSION",
        ]
    )
    proc = run(
        ["bash", RESTORE_SCRIPT, "--yes", "postgres_20200101_020000.tar.gz"],
        check=False,
        env=restore_env(backend, project, db, backup_dir),
    )
    assert proc.returncode != 0
    assert "backup_label ausente" in proc.stdout
    assert running(db.container)


def test_missing_restore_image_is_reported_before_anything_stops(stack, tmp_path: Path) -> None:
    backend, project, db = stack
    backup_dir = tmp_path / "backups"
    assert run_backup(BACKUP_DIR=str(backup_dir), DB_CONTAINER=db.container).returncode == 0
    proc = run(
        ["bash", RESTORE_SCRIPT, "--yes"],
        check=False,
        env=restore_env(backend, project, db, backup_dir, RESTORE_IMAGE="tost/no-such-image:0"),
    )
    assert proc.returncode != 0
    assert "tost/no-such-image:0 não existe" in proc.stdout
    assert running(db.container)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("2026-13-01 00:00:00", "não é uma data válida"),
        ("2026-02-30 12:00:00", "não é uma data válida"),
        ("yesterday", "use 'YYYY-MM-DD HH:MM:SS' (UTC)"),
        ("2026-01-01T00:00:00Z", "use 'YYYY-MM-DD HH:MM:SS' (UTC)"),
        ("2999-01-01 00:00:00", "está no futuro"),
    ],
)
def test_a_bad_target_time_is_refused_before_anything_stops(
    stack, tmp_path: Path, target: str, message: str
) -> None:
    backend, project, db = stack
    started_at = docker("inspect", "-f", "{{.State.StartedAt}}", db.container)
    proc = run(
        ["bash", RESTORE_SCRIPT, "--yes", "--target-time", target],
        check=False,
        env=restore_env(backend, project, db, tmp_path),
    )
    assert proc.returncode != 0
    assert "❌ Restore falhou" in proc.stdout and message in proc.stdout, proc.stdout
    assert docker("inspect", "-f", "{{.State.StartedAt}}", db.container) == started_at


def test_an_unreachable_offsite_repository_is_reported_before_anything_stops(
    stack, tmp_path: Path
) -> None:
    """No pgBackRest config reaches a repository here: --latest must say so and stop nothing."""
    backend, project, db = stack
    conf = tmp_path / "pgbackrest"
    conf.mkdir()
    (conf / "restore.conf").write_text(
        "[global]\nrepo1-host=192.0.2.1\nrepo1-host-type=tls\nio-timeout=2\n"
        "[techno-os]\npg1-path=/var/lib/postgresql/data\n"
    )
    started_at = docker("inspect", "-f", "{{.State.StartedAt}}", db.container)
    proc = run(
        ["bash", RESTORE_SCRIPT, "--yes", "--latest"],
        check=False,
        timeout=180,
        env=restore_env(backend, project, db, tmp_path, PGBACKREST_CONF_DIR=str(conf)),
    )
    assert proc.returncode != 0
    assert "repositório offsite inacessível" in proc.stdout, proc.stdout
    assert "Parando" not in proc.stdout
    assert docker("inspect", "-f", "{{.State.StartedAt}}", db.container) == started_at
