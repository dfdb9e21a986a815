"""The Kafka relay's position in the event log, by topic (its own table: no consumer group can
take its name). The relay publishing loop is in shared/bus/kafka.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus import positions
from shared.db import Base


class RelayPosition(Base):
    __tablename__ = "relay_positions"

    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


async def claim(session: AsyncSession, topic: str) -> int | None:
    """Lock the relay's position for this transaction; None while another relay holds it.

    A relay that never ran on this topic starts at the lowest consumer floor: what every
    group applied already (on the embedded bus, before a switch to Kafka) is not sent again.
    """
    start = await positions.lowest_floor(session)
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
    """The last log position the relay has published to the topic (0 if none)."""
    position = await session.scalar(
        select(RelayPosition.position).where(RelayPosition.topic == topic)
    )
    return position or 0
