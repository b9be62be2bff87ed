"""The database on the per-call path: key lookups, admission and settlement.

These run on every call that needs them, so each is one statement, one round trip, on a plain
asyncpg pool. SQLAlchemy's pool (db/engine.py, for everything else) pings a connection before
each checkout and wraps each statement in BEGIN/COMMIT: four round trips instead of one. A
connection that died with the server is replaced and the statement retried once; anything else
that keeps the database from answering is `DatabaseUnavailable`, as elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from techno_os_api.core.config import Settings
from techno_os_api.db.engine import DatabaseUnavailable, database_url

# A connection the server dropped (restart, idle kill): retried once on a fresh one.
_STALE = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.InterfaceError)
_UNAVAILABLE_CLASSES = ("08", "53", "28", "57", "3D")


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | asyncpg.exceptions.InterfaceError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and sqlstate.startswith(_UNAVAILABLE_CLASSES)


class CallDatabase:
    def __init__(self, settings: Settings) -> None:
        url = database_url(settings)
        self._connect: dict[str, Any] = {
            "host": url.host,
            "port": url.port or 5432,
            "user": url.username,
            "password": url.password,
            "database": url.database,
            "timeout": settings.db_connect_timeout_seconds,
            "server_settings": {"application_name": "techno-os-api"},
        }
        self._size = settings.db_pool_size
        self._timeout = settings.db_connect_timeout_seconds
        self._pool: asyncpg.Pool | None = None
        self._creating = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._creating:
                if self._pool is None:
                    # min_size 0: the service starts, and stays up, without a database.
                    self._pool = await asyncpg.create_pool(
                        min_size=0,
                        max_size=self._size,
                        max_inactive_connection_lifetime=300,
                        **self._connect,
                    )
        return self._pool

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._run(lambda conn: conn.fetchrow(query, *args, timeout=self._timeout))

    async def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        await self._run(lambda conn: conn.executemany(query, batch, timeout=self._timeout * 4))

    async def _run(self, work: Any) -> Any:
        for attempt in (1, 2):
            try:
                pool = await self._get_pool()
                async with pool.acquire(timeout=self._timeout) as conn:
                    return await work(conn)
            except _STALE as exc:
                if attempt == 2:
                    raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
            except Exception as exc:
                if _unavailable(exc):
                    raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
                raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
