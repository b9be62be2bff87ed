"""The Debian base image and the PostgreSQL 15 image built from files/images."""

from __future__ import annotations

import time
import uuid

from script_harness import (
    BASE_SCRIPT,
    DB_NAME,
    DB_PASSWORD,
    DB_USER,
    Db,
    docker,
    run,
    wait_until,
)


def test_base_image_build_is_a_noop_when_the_tag_exists(base_image: str) -> None:
    before = docker("image", "inspect", "-f", "{{.Id}}", base_image)
    started = time.monotonic()
    proc = run(["bash", BASE_SCRIPT, base_image])
    assert time.monotonic() - started < 10
    assert "nothing to do" in proc.stderr
    assert docker("image", "inspect", "-f", "{{.Id}}", base_image) == before


def test_base_image_is_debian_bookworm_with_clean_apt_lists(base_image: str) -> None:
    out = docker(
        "run",
        "--rm",
        base_image,
        "sh",
        "-c",
        ". /etc/os-release && echo $VERSION_CODENAME"
        " && ls /var/lib/apt/lists | grep -vc '^partial$' || true",
    )
    codename, lists = out.split()
    assert codename == "bookworm"
    assert lists == "0"


def test_pg_isready_reports_accepting_connections(db: Db) -> None:
    out = docker("exec", db.container, "pg_isready", "-U", DB_USER, "-d", DB_NAME)
    assert out.endswith("accepting connections")


def test_server_runs_as_postgres_as_pid_1(db: Db) -> None:
    status = docker("exec", db.container, "cat", "/proc/1/status")
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Name"].strip() == "postgres"
    assert fields["Uid"].split()[0] != "0"
    assert db.sql("SHOW data_directory") == "/var/lib/postgresql/data"


def test_db_user_is_a_superuser_owning_the_database_with_a_scram_password(db: Db) -> None:
    row = db.sql(
        "SELECT r.rolsuper, pg_get_userbyid(d.datdba), a.rolpassword LIKE 'SCRAM-SHA-256$%'"
        f" FROM pg_roles r, pg_database d, pg_authid a WHERE r.rolname = '{DB_USER}'"
        f" AND a.rolname = '{DB_USER}' AND d.datname = '{DB_NAME}'"
    )
    assert row == f"t|{DB_USER}|t"


def test_network_clients_need_the_password(db: Db, postgres_image: str) -> None:
    ip = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", db.container)
    base = ["run", "--rm", "-e", "PGCONNECT_TIMEOUT=5"]
    query = ["psql", "-X", "-At", "-h", ip, "-U", DB_USER, "-d", DB_NAME, "-c", "SELECT 42"]
    good = docker(*base, "-e", f"PGPASSWORD={DB_PASSWORD}", postgres_image, *query)
    assert good == "42"
    bad = run(["docker", *base, "-e", "PGPASSWORD=wrong", postgres_image, *query], check=False)
    assert bad.returncode != 0
    assert "password authentication failed" in bad.stderr


def test_first_start_without_password_fails_clearly(postgres_image: str, prefix: str) -> None:
    name = f"{prefix}-nopw-{uuid.uuid4().hex[:6]}"
    proc = run(["docker", "run", "--name", name, postgres_image], check=False, timeout=60)
    docker("rm", "-f", "-v", name, check=False)
    assert proc.returncode != 0
    assert "DB_PASSWORD is not set" in proc.stderr


def test_password_never_reaches_the_logs(db: Db) -> None:
    logs = run(["docker", "logs", db.container])
    assert DB_PASSWORD not in logs.stdout + logs.stderr
    assert "cluster initialised" in logs.stderr


def test_docker_stop_shuts_the_server_down_cleanly(postgres_image: str, prefix: str) -> None:
    tag = uuid.uuid4().hex[:6]
    database = Db(container=f"{prefix}-stop-{tag}", volume=f"{prefix}-stop-{tag}")
    database.start()
    try:
        started = time.monotonic()
        docker("stop", database.container)
        assert time.monotonic() - started < 8, "docker stop waited for the kill timeout"
        assert docker("inspect", "-f", "{{.State.ExitCode}}", database.container) == "0"
        logs = run(["docker", "logs", database.container]).stderr
        assert "database system is shut down" in logs
        # Restart on the same volume: no re-initialisation, no recovery needed.
        docker("start", database.container)
        database.wait_ready()
        logs = run(["docker", "logs", database.container]).stderr
        assert logs.count("initialising a new cluster") == 1
    finally:
        database.remove()
        docker("volume", "rm", "-f", database.volume, check=False)


def test_restored_files_owned_by_another_uid_are_taken_over(
    postgres_image: str, prefix: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    database = Db(container=f"{prefix}-own-{tag}", volume=f"{prefix}-own-{tag}")
    database.start()
    try:
        docker("stop", database.container)
        # As if a restore had written the files with the host's uid for postgres.
        docker(
            "run",
            "--rm",
            "-v",
            f"{database.volume}:/data",
            postgres_image,
            "chown",
            "-R",
            "1234:1234",
            "/data",
        )
        docker("start", database.container)
        database.wait_ready()
        wait_until(
            lambda: (
                docker(
                    "exec",
                    database.container,
                    "find",
                    "/var/lib/postgresql/data",
                    "!",
                    "-user",
                    "postgres",
                )
                == ""
            ),
            10,
            "ownership fixed",
        )
        mode = docker("exec", database.container, "stat", "-c", "%a", "/var/lib/postgresql/data")
        assert mode == "700"
    finally:
        database.remove()
        docker("volume", "rm", "-f", database.volume, check=False)
