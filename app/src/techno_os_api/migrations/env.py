"""Alembic environment: the app's settings give the database; the async engine runs migrations.

Run through `python -m techno_os_api.migrate`, which waits for the database first.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from techno_os_api.core.config import load_settings
from techno_os_api.db.engine import create_engine, database_url
from techno_os_api.db.tables import metadata

config = context.config
target_metadata = metadata


def run_migrations_offline() -> None:
    """`--sql` mode: print the SQL instead of running it."""
    url = database_url(load_settings()).render_as_string(hide_password=True)
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_engine(load_settings(), pooled=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
