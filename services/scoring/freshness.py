"""When precomputed state is refreshed: the policy every read and the background refresher share.

A key (a month's standings, or `recommendations`) has a version, bumped by the consumer batch
that changes its inputs (`standings.touch`), and a refresh row: the version, a fingerprint of
the rules (settings in force) it was computed with, and when. The state is **stale** when the
version moved or the fingerprint differs (or, given a `max_age`, it is older than that); a
stale state is **due** for a refresh unless it is younger than `standings_refresh_seconds`.

A refresh runs in a transaction of its own under a transaction-level advisory lock per key:
one refresher at a time; a reader that cannot take the lock serves the table as it is (a
reader finding no table at all waits for it: one reader per process at a time, its own
connection back in the pool meanwhile). The table is replaced within that transaction,
so a reader sees the old rows or the new ones, never a mix.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring.models import StandingsRefresh
from shared.db import driver

LOCK_CLASS = 0x6361_0008
# How long a refresh may sit idle in its transaction, and a reader wait for one in progress.
REFRESH_IDLE_LIMIT = "10min"


@dataclass(frozen=True)
class State:
    key: str
    version: int  # the key's current version (0: never touched)
    refreshed_version: int | None  # what the table was computed from (None: no table yet)
    fingerprint: str | None
    refreshed_at: datetime | None
    total: int | None
    divisors: dict | None
    weights: dict | None

    @property
    def exists(self) -> bool:
        return self.refreshed_at is not None

    def stale(self, fingerprint: str, now: datetime, max_age: float | None = None) -> bool:
        if not self.exists:
            return True
        if self.refreshed_version != self.version or self.fingerprint != fingerprint:
            return True
        return max_age is not None and self.age(now) >= max_age

    def due(
        self, fingerprint: str, now: datetime, interval: float, max_age: float | None = None
    ) -> bool:
        """Stale, and not refreshed within the last `interval` seconds."""
        if not self.stale(fingerprint, now, max_age):
            return False
        return not self.exists or self.age(now) >= interval

    def age(self, now: datetime) -> float:
        return (now - self.refreshed_at).total_seconds()


_STATE = """
    SELECT coalesce(v.version, 0) AS version, r.version AS refreshed_version, r.fingerprint,
           r.refreshed_at, r.total, r.divisors, r.weights
    FROM (SELECT CAST($1 AS varchar) AS key) AS k
    LEFT JOIN scoring_standings_versions AS v ON v.key = k.key
    LEFT JOIN scoring_standings_refreshes AS r ON r.key = k.key
"""


async def state(session: AsyncSession, key: str) -> State:
    """The key's version and refresh row, read in one statement (on the driver: every read
    of a precomputed list starts with it)."""
    row = await (await driver(session)).fetchrow(_STATE, key)
    return State(key=key, **row)


async def release(session: AsyncSession) -> None:
    """Hand a read's connection back to the pool before it refreshes a key, which takes a
    session of its own (the session takes a connection again at its next statement). A reader
    waiting for a refresh held two connections, and the readers waiting for one refresh
    together took a process's whole pool: 503s at 32 concurrent ranking reads.

    Only a request's read session (`shared.web.get_read_session`: autocommit, no transaction to
    keep) is released; a caller's transaction (the operator page's) keeps its connection, as the
    caller expects of it."""
    if _autocommit(session):
        await session.commit()  # no COMMIT is sent in autocommit; the connection goes back


def _autocommit(session: AsyncSession) -> bool:
    bind = session.bind
    return bind is not None and bind.get_execution_options().get("isolation_level") == (
        "AUTOCOMMIT"
    )


# The readers of one process that wait for a key's refresh queue here, not each on a pooled
# connection in PostgreSQL's lock queue: (the event loop, its lock) by key.
_WAITING: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}


def waiting_line(key: str) -> asyncio.Lock:
    """This process's lock for the readers waiting for `key`'s refresh."""
    loop = asyncio.get_running_loop()
    held = _WAITING.get(key)
    if held is None or held[0] is not loop:  # a lock belongs to one event loop
        held = _WAITING[key] = (loop, asyncio.Lock())
    return held[1]


async def lock(session: AsyncSession, key: str, *, wait: bool) -> bool:
    """The key's refresh lock for the rest of the transaction; without `wait`, False when
    another transaction holds it."""
    params = {"class": LOCK_CLASS, "key": zlib.crc32(key.encode()) - 2**31}
    if wait:
        # as long as the refresh in progress takes, not the connection's `lock_timeout`
        await session.execute(text(f"SET LOCAL lock_timeout = '{REFRESH_IDLE_LIMIT}'"))
        await session.execute(text("SELECT pg_advisory_xact_lock(:class, :key)"), params)
        return True
    return bool(
        await session.scalar(text("SELECT pg_try_advisory_xact_lock(:class, :key)"), params)
    )


async def held_elsewhere(
    sessionmaker: async_sessionmaker[AsyncSession], keys: Iterable[str]
) -> bool:
    """Whether another transaction holds one of these keys' refresh locks now."""
    async with sessionmaker() as session, session.begin():
        for key in keys:
            if not await lock(session, key, wait=False):
                return True
    return False


async def allow_long_computation(session: AsyncSession) -> None:
    """The refresh's transaction sits idle while Python scores a large month, then writes it
    (seconds at 100,000 creators, more on a busy machine): not a hung transaction, so the
    connection's `idle_in_transaction_session_timeout` and `statement_timeout` are lifted to
    `REFRESH_IDLE_LIMIT` for it."""
    for name in ("idle_in_transaction_session_timeout", "statement_timeout"):
        await session.execute(text(f"SET LOCAL {name} = '{REFRESH_IDLE_LIMIT}'"))


async def record(
    session: AsyncSession,
    key: str,
    version: int,
    fingerprint: str,
    total: int,
    *,
    divisors: dict | None = None,
    weights: dict | None = None,
) -> None:
    values = {
        "version": version,
        "fingerprint": fingerprint,
        "refreshed_at": datetime.now(UTC),
        "total": total,
        "divisors": divisors,
        "weights": weights,
    }
    await session.execute(
        insert(StandingsRefresh)
        .values(key=key, **values)
        .on_conflict_do_update(index_elements=["key"], set_=values)
    )


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


async def copy_rows(session: AsyncSession, table: str, columns: list[str], records) -> None:
    """Write rows with one COPY on the session's connection, in its transaction."""
    await (await driver(session)).copy_records_to_table(table, records=records, columns=columns)
