"""Wait for the database, then apply the Alembic migrations shipped in this package.

    python -m techno_os_api.migrate            # upgrade to head (what the deploy and tests run)
    python -m techno_os_api.migrate --sql      # print the SQL instead

Same settings as the app (DATABASE_URL or DB_HOST/DB_PORT/DB_USER/DB_PASSWORD/DB_NAME). Waits up
to DB_WAIT_TIMEOUT_SECONDS for the database to accept connections; exits non-zero with the
reason when it does not, or when a migration fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import SQLAlchemyError

from techno_os_api.core.config import Settings, SettingsError, load_settings
from techno_os_api.db.engine import (
    DatabaseUnavailable,
    create_engine,
    describe,
    ping,
)

log = logging.getLogger("techno_os_api.migrate")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "techno_os_api:migrations")
    return config


async def wait_for_database(settings: Settings, deadline_seconds: float) -> None:
    """Poll `SELECT 1` until it answers or the deadline passes (`DatabaseUnavailable`)."""
    engine = create_engine(settings, pooled=False)
    where = f"{engine.url.host}:{engine.url.port or 5432}/{engine.url.database}"
    deadline = time.monotonic() + deadline_seconds
    attempt = 0
    try:
        while True:
            attempt += 1
            try:
                await ping(engine, timeout=settings.db_connect_timeout_seconds)
            except DatabaseUnavailable as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DatabaseUnavailable(
                        f"database {where} not reachable after "
                        f"{deadline_seconds:g}s ({attempt} attempts); last error: {exc}"
                    ) from None
                log.info("waiting for the database (attempt %d): %s", attempt, exc)
                await asyncio.sleep(min(1.0, remaining))
            else:
                log.info("database is up after %d attempt(s)", attempt)
                return
    finally:
        await engine.dispose()


def upgrade(settings: Settings, revision: str = "head", sql: bool = False) -> None:
    if not sql:
        asyncio.run(wait_for_database(settings, settings.db_wait_timeout_seconds))
    command.upgrade(alembic_config(), revision, sql=sql)
    if not sql:
        log.info("migrations applied (target %s)", revision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m techno_os_api.migrate", description=__doc__)
    parser.add_argument("revision", nargs="?", default="head", help="target (default: head)")
    parser.add_argument("--sql", action="store_true", help="print the SQL, touch nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        upgrade(settings, args.revision, sql=args.sql)
    except (SettingsError, DatabaseUnavailable, ValueError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        print(f"migrate: migration failed: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
