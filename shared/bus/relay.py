"""Outboxes and the Kafka relay's position in each, by topic.

An outbox is a table rows are appended to in the same transaction as what they record, each
with a position that commits in order (appends serialised by a transaction-level advisory
lock), so a reader that has seen position N never later finds a committed row below N. The
relay (shared/bus/kafka.py) publishes an outbox to its topic in that order. Two outboxes today:
the event log (ingest's, to the events topic) and the rewards table (badges', to the rewards
topic, services/badges/rewards.py). The relay's positions have their own table: no consumer
group can take their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import BigInteger, DateTime, String, func, select
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

    async def start(self, session: AsyncSession) -> int:
        return await positions.lowest_floor(session)

    async def read(self, session: AsyncSession, after: int, limit: int) -> list[OutboxMessage]:
        return [
            OutboxMessage(e.seq, e.id, e.creator_id.encode(), e.to_json())
            for e in await event_log.read_after(session, after, limit)
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
