"""Outboxes and the Kafka relay's position in each, by topic.

An outbox is a table rows are appended to in the same transaction as what they record, each
with a position, read only as far as no row can still commit below what was read: a reader
that has seen position N never later finds a committed row below N. The relay
(shared/bus/kafka.py) publishes an outbox to its topic in that order. Two outboxes today: the
event log (ingest's, to the events topic; appends run concurrently and the relay reads up to
the log's stable end, shared/bus/log.py `LogEnd`) and the rewards table (badges', to the
rewards topic, services/badges/rewards.py; its appends are serialised by a transaction-level
advisory lock, so its positions commit in order). The relay's positions have their own table:
no consumer group can take their names.

The relays also keep the highest offset the broker acked in each partition of their topics
(`relay_offsets`): every publish happens under the position's lock, so that table is the
topic's history as the broker told it, shared by every process and kept across restarts. An
ack at or below it means the partition started again: the broker lost what was published
(shared/bus/kafka.py publishes the outbox again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import BigInteger, DateTime, Integer, String, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus import dead_letters, positions
from shared.bus import log as event_log
from shared.db import Base

EVENTS_RELAY = "relay"  # the group the events relay's dead letters are kept under


class RelayPosition(Base):
    __tablename__ = "relay_positions"

    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class RelayOffset(Base):
    """The highest offset the broker acked to the relays in a partition of a topic."""

    __tablename__ = "relay_offsets"

    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    acked_offset: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True)
class OutboxMessage:
    """One row of an outbox, ready for the broker."""

    position: int  # in the outbox's order
    id: str  # what readers dedupe by (and what logs name)
    key: bytes  # the partition key
    value: bytes


class Outbox(Protocol):
    topic: str  # where the relay publishes it
    dead_letter_group: str  # the group a message the broker refuses for good is parked under

    async def start(self, session: AsyncSession) -> int:
        """Where a relay that never ran on this topic starts (it publishes what is after)."""

    async def find_end(self, session: AsyncSession) -> None:
        """How far `read` may go in this transaction: called first in each of the relay's
        transactions, before it writes."""

    async def read(self, session: AsyncSession, after: int, limit: int) -> list[OutboxMessage]:
        """The messages after a position, in order."""

    async def park(self, session: AsyncSession, message: OutboxMessage, error: str) -> None:
        """Keep for the record a message the broker will never take."""


class EventLogOutbox:
    """The event log, to the events topic. A relay that never ran starts at the lowest
    consumer floor: what every group applied already (on the embedded bus, before a switch to
    Kafka) is not sent again. A refused event is parked under "relay"; the groups apply it
    from the log."""

    dead_letter_group = EVENTS_RELAY

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.end = event_log.LogEnd(EVENTS_RELAY)

    async def start(self, session: AsyncSession) -> int:
        return await positions.lowest_floor(session)

    async def find_end(self, session: AsyncSession) -> None:
        await self.end.advance(session)

    async def read(self, session: AsyncSession, after: int, limit: int) -> list[OutboxMessage]:
        """Up to the log's stable end, so the relay's position never passes a row that may
        still commit."""
        return [
            OutboxMessage(e.seq, e.id, e.creator_id.encode(), e.to_json())
            for e in await event_log.read_after(session, after, limit, up_to=self.end.stable)
        ]

    async def park(self, session: AsyncSession, message: OutboxMessage, error: str) -> None:
        for event in await event_log.read_at(session, [message.position]):
            await dead_letters.park(session, self.dead_letter_group, event, 1, error)


async def claim(session: AsyncSession, topic: str, start: int = 0) -> int | None:
    """Lock the relay's position in the topic's outbox for this transaction; None while
    another relay holds it. A relay that never ran on the topic starts at `start`."""
    await session.execute(
        insert(RelayPosition)
        .values(topic=topic, position=start)
        .on_conflict_do_nothing(index_elements=["topic"])
    )
    return await session.scalar(
        select(RelayPosition.position)
        .where(RelayPosition.topic == topic)
        .with_for_update(skip_locked=True)
    )


async def move(session: AsyncSession, topic: str, position: int) -> None:
    await session.execute(
        RelayPosition.__table__.update()
        .where(RelayPosition.topic == topic)
        .values(position=position, updated_at=func.now())
    )


async def published_up_to(session: AsyncSession, topic: str) -> int:
    """The last outbox position the relay has published to the topic (0 if none)."""
    position = await session.scalar(
        select(RelayPosition.position).where(RelayPosition.topic == topic)
    )
    return position or 0


async def acked_offsets(session: AsyncSession, topic: str) -> dict[int, int]:
    """Partition -> the highest offset the broker acked to the relays in it."""
    rows = await session.execute(
        select(RelayOffset.partition, RelayOffset.acked_offset).where(RelayOffset.topic == topic)
    )
    return {partition: offset for partition, offset in rows}


async def note_acks(session: AsyncSession, topic: str, acks: dict[int, range]) -> bool:
    """Record the offsets a batch was acked at (partition -> lowest to highest), with the
    position's lock held. True if the topic started again: an offset at or below one acked
    before (nothing is recorded then: the caller starts the outbox again, `start_again`)."""
    before = await acked_offsets(session, topic)
    if any(offsets.start <= before.get(p, -1) for p, offsets in acks.items()):
        return True
    if acks:
        upsert = insert(RelayOffset).values(
            [{"topic": topic, "partition": p, "acked_offset": o.stop - 1} for p, o in acks.items()]
        )
        await session.execute(
            upsert.on_conflict_do_update(
                index_elements=["topic", "partition"],
                set_={
                    "acked_offset": func.greatest(
                        RelayOffset.acked_offset, upsert.excluded.acked_offset
                    )
                },
            )
        )
    return False


async def start_again(session: AsyncSession, topic: str, start: int) -> None:
    """The broker lost the topic: its outbox again from `start`, its offsets forgotten (kept,
    every ack on the new broker would look like one more loss: the outbox again, forever)."""
    await move(session, topic, start)
    await session.execute(delete(RelayOffset).where(RelayOffset.topic == topic))
    await session.execute(delete(RelayOffset).where(RelayOffset.topic == topic))
