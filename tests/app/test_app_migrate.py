"""`python -m techno_os_api.migrate`, as the deploy runs it."""

from __future__ import annotations

import asyncpg
from app_helpers import run_migrate
from pgserver import PASSWORD, USER, free_port


async def test_migration_created_user_preferences(database):
    conn = await asyncpg.connect(
        host="127.0.0.1", port=database.port, user=USER, password=PASSWORD, database="techno_os"
    )
    try:
        columns = {
            row["column_name"]: row["data_type"]
            for row in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'user_preferences'"
            )
        }
        version = await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
    assert columns == {
        "user_id": "character varying",
        "preferences": "jsonb",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
    }
    assert version == "0002"


def test_migrate_is_idempotent(database):
    result = run_migrate(**database.env)
    assert result.returncode == 0, result.stderr


def test_migrate_accepts_database_url(database):
    url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{database.port}/techno_os"
    result = run_migrate(DATABASE_URL=url, DB_HOST="wrong-host.invalid")
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stderr + result.stdout


def test_migrate_gives_up_at_the_deadline_with_the_reason():
    result = run_migrate(
        DB_HOST="127.0.0.1",
        DB_PORT=str(free_port()),
        DB_WAIT_TIMEOUT_SECONDS="1.5",
        DB_PASSWORD="hidden-password",
    )
    assert result.returncode == 1
    assert "not reachable after 1.5s" in result.stderr
    assert "waiting for the database (attempt 1)" in result.stderr
    assert "hidden-password" not in result.stderr


def test_migrate_sql_mode_prints_the_ddl():
    result = run_migrate("--sql")
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE user_preferences" in result.stdout
