"""Dead letters: events one consumer group could not apply, parked so the group goes on.

Parked events are kept by log position. `replay` puts them back through their group's handler
on either bus: it applies the event from the log directly, so no processed marker can swallow
it, and it removes the row in the same transaction. An undecodable Kafka message keeps its
payload; it can be replayed when its log position could be read from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus import log as event_log
from shared.bus.base import Handler
from shared.db import Base
from shared.events import BusEvent

logger = logging.getLogger(__name__)


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("group_name", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str | None] = mapped_column(String(256))
    event_id: Mapped[str | None] = mapped_column(String(256))
    type: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    payload: Mapped[str | None] = mapped_column(Text)  # an undecodable message, as received
    parked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


async def park(
    session: AsyncSession, group: str, event: BusEvent, attempts: int, error: str
) -> None:
    await session.execute(
        insert(DeadLetter)
        .values(
            group_name=group,
            seq=event.seq,
            source=event.source,
            event_id=event.id,
            type=event.type,
            attempts=attempts,
            error=error[:4000],
        )
        .on_conflict_do_nothing(index_elements=["group_name", "seq"])
    )


async def park_undecodable(session: AsyncSession, group: str, payload: bytes, error: str) -> None:
    """A message the group cannot read. Its log position is kept when the payload shows it."""
    try:
        seq = orjson.loads(payload).get("seq")
        seq = seq if isinstance(seq, int) else None
    except (orjson.JSONDecodeError, AttributeError):
        seq = None
    statement = insert(DeadLetter).values(
        group_name=group,
        seq=seq,
        attempts=1,
        error=error[:4000],
        payload=payload.decode("utf-8", "replace")[:100_000],
    )
    await session.execute(statement.on_conflict_do_nothing(index_elements=["group_name", "seq"]))


async def counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(DeadLetter.group_name, func.count()).group_by(DeadLetter.group_name)
    )
    return {group: count for group, count in rows}


async def listing(session: AsyncSession, group: str | None = None) -> list[DeadLetter]:
    query = select(DeadLetter).order_by(DeadLetter.group_name, DeadLetter.seq, DeadLetter.id)
    if group:
        query = query.where(DeadLetter.group_name == group)
    return list(await session.scalars(query))


@dataclass
class ReplayReport:
    applied: int = 0
    failed: int = 0
    not_replayable: int = 0


async def replay(
    sessionmaker: async_sessionmaker[AsyncSession],
    group: str,
    handler: Handler,
    *,
    event_id: str | None = None,
    source: str | None = None,
) -> ReplayReport:
    """Apply a group's parked events again, each in its own transaction: applied ones leave
    the table, failing ones stay with their new error and attempt count."""
    report = ReplayReport()
    async with sessionmaker() as session:
        query = select(DeadLetter.id).where(DeadLetter.group_name == group)
        if event_id is not None:
            query = query.where(DeadLetter.event_id == event_id)
        if source is not None:
            query = query.where(DeadLetter.source == source)
        ids = list(await session.scalars(query.order_by(DeadLetter.seq)))
    for row_id in ids:
        async with sessionmaker() as session, session.begin():
            letter = await session.scalar(
                select(DeadLetter).where(DeadLetter.id == row_id).with_for_update(skip_locked=True)
            )
            if letter is None:  # replayed meanwhile by someone else
                continue
            events = await event_log.read_at(session, [letter.seq]) if letter.seq else []
            if not events:
                report.not_replayable += 1
                continue
            try:
                async with session.begin_nested():
                    await handler(session, events)
            except Exception as exc:
                letter.attempts += 1
                letter.error = repr(exc)[:4000]
                report.failed += 1
                logger.warning(
                    "dead letter failed again",
                    extra={"group": group, "seq": letter.seq, "error": repr(exc)},
                )
                continue
            await session.delete(letter)
            report.applied += 1
    return report
