"""The event log: every accepted event, in order, in PostgreSQL.

It is ingest's outbox and the embedded bus itself. Appends run concurrently, so their `seq`s
may commit out of order (11 visible while 10 is not yet). Readers that rely on the order read
only up to the log's **stable end** (`LogEnd`): every `seq` at or below it belongs to a
transaction that has finished, so a row there that is not visible now never will be, and a
reader that has passed N never later finds a committed row below N (see docs/decisions.md).
An event is identified by `source` + `id`, as CloudEvents 1.0 says; everywhere else an accepted
event is keyed by its position in the log, `seq`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime

import orjson
from prometheus_client import Gauge
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Identity,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, driver
from shared.events import BusEvent, IncomingEvent

EventKey = tuple[str, str]  # (source, id)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256))
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    type: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(256))
    creator_id: Mapped[str] = mapped_column(String(128), index=True)
    data: Mapped[dict] = mapped_column(JSONB)
    attributes: Mapped[dict] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    def to_bus_event(self) -> BusEvent:
        return BusEvent(
            seq=self.seq,
            id=self.event_id,
            type=self.type,
            time=self.time,
            source=self.source,
            creator_id=self.creator_id,
            data=self.data,
            attributes=self.attributes,
        )


# One statement whatever the batch size: a column of values per parameter, the rows numbered
# in the order given. What the benchmark's bare limit measures (docs/benchmarks.md).
APPEND = (
    "INSERT INTO events (event_id, content_hash, type, time, source, creator_id, data,"
    " attributes) SELECT * FROM unnest($1::varchar[], $2::bytea[], $3::varchar[],"
    " $4::timestamptz[], $5::varchar[], $6::varchar[], $7::jsonb[], $8::jsonb[])"
    " ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id"
)


async def append(session: AsyncSession, events: Sequence[IncomingEvent]) -> set[EventKey]:
    """Append events not stored yet; return the (source, id) of the ones this call stored.

    Two statements whatever the batch size: the transaction's id, then one
    `INSERT … SELECT FROM unnest(…)`.
    """
    if not events:
        return set()
    # Through the session: it opens the transaction the insert below joins. The transaction
    # takes its id before it draws a `seq` (an insert alone would draw first): what the
    # log's stable end relies on (`LogEnd`). Appends do not wait for each other.
    await session.execute(TAKE_XID)
    # The insert on the driver's connection (the same one, in the same transaction): the rows
    # go as eight arrays, with no per-row work in SQLAlchemy.
    stored = await (await driver(session)).fetch(
        APPEND,
        [e.id for e in events],
        [e.content_hash for e in events],
        [e.type for e in events],
        [e.time for e in events],
        [e.source for e in events],
        [e.creator_id for e in events],
        [orjson.dumps(e.data).decode() for e in events],
        [orjson.dumps(e.attributes).decode() for e in events],
    )
    return {(row["source"], row["event_id"]) for row in stored}


# --- the log's stable end ---------------------------------------------------------------------

TAKE_XID = text("SELECT pg_current_xact_id()")

# Every transaction id below this one has finished (committed or rolled back): the oldest id
# still running in the whole cluster, this transaction's own aside. Not the snapshot's xmax
# alone: xmax is one past the last id to *finish*, and ids at or above it may be running.
_OLDEST_RUNNING = (
    "least(pg_snapshot_xmax(s), (SELECT min(x) FROM pg_snapshot_xip(s) AS x))::text::bigint"
    " FROM pg_current_snapshot() AS s"
)
# The last `seq` drawn (committed or not: a sequence is not transactional; 0 before the
# first), whether this transaction has an id already, and the oldest running id.
_LOOK = text(
    "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')::regclass),"
    " 0), pg_current_xact_id_if_assigned() IS NOT NULL, " + _OLDEST_RUNNING
)
# This transaction takes its id, and the oldest running id.
_TAKE_XID_AND_LOOK = text("SELECT pg_current_xact_id()::text::bigint, " + _OLDEST_RUNNING)

STABLE_END = Gauge(
    "creator_activity_log_stable_end",
    "The event log's stable end as a reader last saw it: every seq at or below it is final",
    ["reader"],
)
LAST_DRAWN = Gauge(
    "creator_activity_log_last_drawn",
    "The last seq drawn when the reader last looked; above its stable end, the seqs of"
    " transactions still running (or older ones still running anywhere in the cluster)",
    ["reader"],
)


MAX_PENDING = 1_000  # (L, X) pairs a reader keeps while a long transaction holds its end


class LogEnd:
    """One reader's view of the log's stable end: every `seq` at or below `stable` belongs to
    a transaction that has finished, so a row there not visible now never will be.

    An append takes its transaction id (xid) before it draws a `seq` (`append`). A reader
    reads the last `seq` drawn, L, then takes an xid, X, in a later statement: every
    transaction that drew a `seq` up to L had its xid before, so below X. Once no transaction
    below X is running, everything up to L is final. The (L, X) pairs wait here from one look
    to the next, so looking never waits; a pair is usually final at once, or at the next look
    (when the appends in flight have committed).
    """

    def __init__(self, reader: str) -> None:
        self.reader = reader  # for the gauges
        self.stable = 0
        self._pending: deque[tuple[int, int]] = deque()  # (L, X), both increasing

    async def advance(self, session: AsyncSession) -> int:
        """Move the stable end as far as it goes now and return it. Must run before the
        transaction writes (its xid must be taken after L is read), once per transaction."""
        drawn, has_xid, oldest_running = (await session.execute(_LOOK)).one()
        if has_xid:
            raise RuntimeError("the log's stable end is read before the transaction writes")
        self._settle(oldest_running)
        if drawn > (self._pending[-1][0] if self._pending else self.stable):
            xid, oldest_running = (await session.execute(_TAKE_XID_AND_LOOK)).one()
            if len(self._pending) >= MAX_PENDING:
                # A long transaction holds the end: the newest pair takes the place of the
                # last one kept (it covers it and settles no sooner), so memory stays bounded.
                self._pending.pop()
            self._pending.append((drawn, xid))
            self._settle(oldest_running)
        STABLE_END.labels(self.reader).set(self.stable)
        LAST_DRAWN.labels(self.reader).set(drawn)
        return self.stable

    def _settle(self, oldest_running: int) -> None:
        """Every xid below `oldest_running` has finished: the pairs whose X is at or below it
        are final."""
        while self._pending and self._pending[0][1] <= oldest_running:
            self.stable = self._pending.popleft()[0]


# Joined with the keys as two arrays: a row `IN` list nests one expression per key in
# PostgreSQL's parser and overflows its stack at a few thousand (a large `max_batch_events`).
_CONTENT_HASHES = (
    "SELECT e.source, e.event_id, e.content_hash FROM events AS e"
    " JOIN unnest($1::varchar[], $2::varchar[]) AS k (source, event_id)"
    " ON e.source = k.source AND e.event_id = k.event_id"
)


async def content_hashes(session: AsyncSession, keys: Sequence[EventKey]) -> dict[EventKey, bytes]:
    rows = await (await driver(session)).fetch(
        _CONTENT_HASHES, [source for source, _ in keys], [event_id for _, event_id in keys]
    )
    return {(row["source"], row["event_id"]): row["content_hash"] for row in rows}


async def read_after(
    session: AsyncSession, position: int | ColumnElement[int], limit: int, *, up_to: int
) -> list[BusEvent]:
    """The events after a position (a number, or a reader's position as a subquery, which
    makes a poll one query) up to a stable end (`LogEnd`), in log order."""
    query = select(Event).where(Event.seq > position, Event.seq <= up_to)
    rows = await session.scalars(query.order_by(Event.seq).limit(limit))
    return [row.to_bus_event() for row in rows]


async def read_at(session: AsyncSession, seqs: Sequence[int]) -> list[BusEvent]:
    rows = await session.scalars(select(Event).where(Event.seq.in_(seqs)).order_by(Event.seq))
    return [row.to_bus_event() for row in rows]


async def last_seq(session: AsyncSession) -> int:
    """The highest committed `seq`: every event accepted before this call is at or below it
    (a lower one may still commit later: not a stable end)."""
    return await session.scalar(select(func.coalesce(func.max(Event.seq), 0)))
