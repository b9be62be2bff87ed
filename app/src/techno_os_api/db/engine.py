"""The database engine: one pooled asyncpg engine per application, built from the settings.

The pool pings a connection before handing it out (`pool_pre_ping`), so after a PostgreSQL
restart stale connections are replaced instead of failing requests; connecting is bounded by
DB_CONNECT_TIMEOUT_SECONDS so a database that is down answers 503 quickly rather than hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import URL, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from techno_os_api.core.config import Settings


class DatabaseUnavailable(Exception):
    """The database could not be reached or could not answer; the message says why."""


def database_url(settings: Settings) -> URL:
    """DATABASE_URL when set (any postgres:// spelling), else one built from DB_*."""
    if settings.database_url is not None:
        url = make_url(settings.database_url.get_secret_value())
        if url.get_backend_name() not in ("postgresql", "postgres"):
            raise ValueError(f"DATABASE_URL must be a postgresql:// URL, not {url.drivername}")
        return url.set(drivername="postgresql+asyncpg")
    return URL.create(
        "postgresql+asyncpg",
        username=settings.db_user,
        password=settings.db_password.get_secret_value() or None,
        host=settings.db_host,
        port=settings.db_port,
        database=settings.db_name,
    )


def create_engine(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    """The engine; creating it does not connect (the service starts without a database)."""
    connect_args = {
        "timeout": settings.db_connect_timeout_seconds,
        "command_timeout": 30,
        "server_settings": {"application_name": "techno-os-api"},
    }
    if not pooled:
        return create_async_engine(
            database_url(settings), poolclass=NullPool, connect_args=connect_args
        )
    return create_async_engine(
        database_url(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_connect_timeout_seconds,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def describe(exc: BaseException) -> str:
    """A one-line reason, without SQL, parameters or credentials."""
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [""])[0][:200]
    name = type(cause).__name__
    return f"{name}: {first_line}" if first_line else name


# SQLSTATE classes that mean "the database cannot serve now", not "this statement is wrong":
# connection exceptions, too many connections, authentication, operator intervention (shutdown,
# starting up), a missing database.
_UNAVAILABLE_SQLSTATES = ("08", "53", "28", "57", "3D")


def is_unavailability(exc: BaseException) -> bool:
    """True for a failure to reach or use the database at all; False for an error in a statement
    or its data (those are bugs or bad input, and must not pass for an outage)."""
    if isinstance(exc, TimeoutError | OSError | PoolTimeoutError | OperationalError):
        return True
    if isinstance(exc, InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return not sqlstate or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    return False


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction; a failure to reach the database becomes
    `DatabaseUnavailable`. Other database errors propagate as they are."""
    try:
        async with engine.begin() as conn:
            yield conn
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        if is_unavailability(exc):
            raise DatabaseUnavailable(describe(exc)) from exc
        raise


async def ping(engine: AsyncEngine, timeout: float) -> None:
    """`SELECT 1` within `timeout` seconds, or `DatabaseUnavailable`."""
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError:
        raise DatabaseUnavailable(f"no answer within {timeout:g}s") from None
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseUnavailable(describe(exc)) from exc
