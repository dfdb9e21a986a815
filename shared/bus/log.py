"""The event log: every accepted event, in order, in PostgreSQL.

It is ingest's outbox and the embedded bus itself. Appends are serialised by a transaction-level
advisory lock, so sequence numbers become visible in the order they were assigned: a reader that
has seen `seq` N never later finds a committed row below N (see docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.events import BusEvent, IncomingEvent

# Any constant shared by every appender; 0x6361 = "ca".
APPEND_LOCK_KEY = 0x6361_0001


class Event(Base):
    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), unique=True)
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


class ConsumerPosition(Base):
    """How far a reader of the log has come: an embedded consumer group, or the Kafka relay."""

    __tablename__ = "consumer_positions"

    group_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class PublishedOffset(Base):
    """The next offset of each partition the Kafka relay has published to, from the broker's
    acks: the end of the log as our consumers must reach it (lag = this - committed offset)."""

    __tablename__ = "published_offsets"

    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)


class ProcessedEvent(Base):
    """Events a Kafka consumer group has applied: a redelivery hits the primary key."""

    __tablename__ = "processed_events"

    group_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class DeadLetter(Base):
    """An event that kept failing in a consumer group; parked so the group goes on."""

    __tablename__ = "dead_letters"

    group_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    parked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


async def append(session: AsyncSession, events: Sequence[IncomingEvent]) -> set[str]:
    """Append events not stored yet; return the ids of the ones this call stored.

    Two statements whatever the batch size: the lock and one multi-row insert.
    """
    if not events:
        return set()
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})
    rows = [
        {
            "event_id": e.id,
            "content_hash": e.content_hash,
            "type": e.type,
            "time": e.time,
            "source": e.source,
            "creator_id": e.creator_id,
            "data": e.data,
            "attributes": e.attributes,
        }
        for e in events
    ]
    # Parameters passed apart from the statement: SQLAlchemy renders one multi-row INSERT
    # ("insertmanyvalues", up to 1,000 rows) far faster than from `.values(rows)`.
    stored = await session.scalars(
        insert(Event).on_conflict_do_nothing(index_elements=["event_id"]).returning(Event.event_id),
        rows,
    )
    return set(stored)


async def content_hashes(session: AsyncSession, event_ids: Sequence[str]) -> dict[str, bytes]:
    rows = await session.execute(
        select(Event.event_id, Event.content_hash).where(Event.event_id.in_(event_ids))
    )
    return {event_id: digest for event_id, digest in rows}


async def read_after(session: AsyncSession, position: int, limit: int) -> list[BusEvent]:
    rows = await session.scalars(
        select(Event).where(Event.seq > position).order_by(Event.seq).limit(limit)
    )
    return [row.to_bus_event() for row in rows]


async def read_for(session: AsyncSession, group: str, limit: int) -> list[BusEvent]:
    """The next events after a reader's position, in one query."""
    rows = await session.scalars(
        select(Event).where(Event.seq > _position(group)).order_by(Event.seq).limit(limit)
    )
    return [row.to_bus_event() for row in rows]


def _position(group: str):
    return func.coalesce(
        select(ConsumerPosition.position)
        .where(ConsumerPosition.group_name == group)
        .scalar_subquery(),
        0,
    )


async def lock_position(session: AsyncSession, group: str, *, wait: bool = True) -> int | None:
    """Lock a reader's position row for this transaction; None if another holder has it
    and `wait` is false. One reader per group at a time, whatever the process count."""
    await session.execute(
        insert(ConsumerPosition)
        .values(group_name=group, position=0)
        .on_conflict_do_nothing(index_elements=["group_name"])
    )
    query = select(ConsumerPosition.position).where(ConsumerPosition.group_name == group)
    query = query.with_for_update() if wait else query.with_for_update(skip_locked=True)
    return await session.scalar(query)


async def set_position(session: AsyncSession, group: str, position: int) -> None:
    await session.execute(
        ConsumerPosition.__table__.update()
        .where(ConsumerPosition.group_name == group)
        .values(position=position, updated_at=func.now())
    )


async def events_after(session: AsyncSession, group: str) -> int:
    """How many accepted events a reader of the log has not passed yet."""
    return await session.scalar(
        select(func.count()).select_from(Event).where(Event.seq > _position(group))
    )


async def record_published(session: AsyncSession, topic: str, ends: dict[int, int]) -> None:
    if not ends:
        return
    stmt = insert(PublishedOffset).values(
        [{"topic": topic, "partition": p, "next_offset": o} for p, o in ends.items()]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={
                "next_offset": func.greatest(PublishedOffset.next_offset, stmt.excluded.next_offset)
            },
        )
    )


async def published_offsets(session: AsyncSession, topic: str) -> dict[int, int]:
    rows = await session.execute(
        select(PublishedOffset.partition, PublishedOffset.next_offset).where(
            PublishedOffset.topic == topic
        )
    )
    return {partition: offset for partition, offset in rows}


async def record_processed(
    session: AsyncSession, group: str, events: Sequence[BusEvent]
) -> list[BusEvent]:
    """Record the events as processed by the group; return those not processed before."""
    if not events:
        return []
    new_ids = set(
        await session.scalars(
            insert(ProcessedEvent).on_conflict_do_nothing().returning(ProcessedEvent.event_id),
            [{"group_name": group, "event_id": e.id} for e in events],
        )
    )
    fresh = []
    for e in events:  # a redelivered copy inside the same batch counts once
        if e.id in new_ids:
            new_ids.discard(e.id)
            fresh.append(e)
    return fresh


async def park(
    session: AsyncSession, group: str, event: BusEvent, attempts: int, error: str
) -> None:
    await session.execute(
        insert(DeadLetter)
        .values(
            group_name=group,
            event_id=event.id,
            seq=event.seq,
            type=event.type,
            attempts=attempts,
            error=error[:4000],
        )
        .on_conflict_do_nothing()
    )


async def dead_letter_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(DeadLetter.group_name, func.count()).group_by(DeadLetter.group_name)
    )
    return {group: count for group, count in rows}
