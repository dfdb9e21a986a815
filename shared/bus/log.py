"""The event log: every accepted event, in order, in PostgreSQL.

It is ingest's outbox and the embedded bus itself. Appends are serialised by a transaction-level
advisory lock, so sequence numbers become visible in the order they were assigned: a reader that
has seen `seq` N never later finds a committed row below N (see docs/decisions.md).
An event is identified by `source` + `id`, as CloudEvents 1.0 says; everywhere else an accepted
event is keyed by its position in the log, `seq`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
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
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, driver
from shared.events import BusEvent, IncomingEvent

# Any constant shared by every appender; 0x6361 = "ca".
APPEND_LOCK_KEY = 0x6361_0001

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

    Two statements whatever the batch size: the lock and one `INSERT … SELECT FROM unnest(…)`.
    """
    if not events:
        return set()
    # Through the session: it opens the transaction the insert below joins.
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})
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


async def content_hashes(session: AsyncSession, keys: Sequence[EventKey]) -> dict[EventKey, bytes]:
    rows = await session.execute(
        select(Event.source, Event.event_id, Event.content_hash).where(
            tuple_(Event.source, Event.event_id).in_(list(keys))
        )
    )
    return {(source, event_id): digest for source, event_id, digest in rows}


async def read_after(
    session: AsyncSession,
    position: int | ColumnElement[int],
    limit: int,
    *,
    up_to: int | None = None,
) -> list[BusEvent]:
    """The events after a position (a number, or a reader's position as a subquery, which
    makes a poll one query), in log order."""
    query = select(Event).where(Event.seq > position)
    if up_to is not None:
        query = query.where(Event.seq <= up_to)
    rows = await session.scalars(query.order_by(Event.seq).limit(limit))
    return [row.to_bus_event() for row in rows]


async def read_at(session: AsyncSession, seqs: Sequence[int]) -> list[BusEvent]:
    rows = await session.scalars(select(Event).where(Event.seq.in_(seqs)).order_by(Event.seq))
    return [row.to_bus_event() for row in rows]


async def last_seq(session: AsyncSession) -> int:
    return await session.scalar(select(func.coalesce(func.max(Event.seq), 0)))
