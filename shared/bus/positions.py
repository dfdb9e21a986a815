"""How far each consumer group has come in the event log, on either bus.

A group's progress is a **floor** and a set of **markers** above it:
- every event at or below the floor has been applied by the group (or parked);
- above the floor, a marker (group, seq) says that event was applied.
The embedded bus reads the log in order, so it only moves the floor. Kafka delivers partitions
in parallel and redelivers after crashes, so its consumers write markers in the same
transaction as their effects, and the floor catches up behind them (`advance_floor`), pruning
the markers it passes: the set stays as small as the out-of-order window.

Because both buses keep the same state, a database can switch bus in either direction, and a
group can catch up from the log (`apply_unapplied`) while Kafka still delivers: whichever
copy of an event comes first is applied, every later copy is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus.log import Event
from shared.db import Base
from shared.events import BusEvent


class ConsumerPosition(Base):
    """A consumer group's floor in the log."""

    __tablename__ = "consumer_positions"

    group_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ProcessedEvent(Base):
    """An event a group applied above its floor: a second copy hits the primary key."""

    __tablename__ = "processed_events"

    group_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)


def floor_of(group: str):
    """The group's floor as a scalar subquery (0 for a group that never ran)."""
    return func.coalesce(
        select(ConsumerPosition.position)
        .where(ConsumerPosition.group_name == group)
        .scalar_subquery(),
        0,
    )


async def lock_floor(
    session: AsyncSession, group: str, *, shared: bool = False, skip_locked: bool = False
) -> int | None:
    """Read the group's floor and lock its row for this transaction: exclusively to move it,
    shared to write markers (so the floor cannot pass a marker being written). None when
    `skip_locked` and another transaction holds it."""
    await session.execute(
        insert(ConsumerPosition)
        .values(group_name=group, position=0)
        .on_conflict_do_nothing(index_elements=["group_name"])
    )
    query = select(ConsumerPosition.position).where(ConsumerPosition.group_name == group)
    query = query.with_for_update(read=shared, skip_locked=skip_locked)
    return await session.scalar(query)


async def _set_floor(session: AsyncSession, group: str, position: int) -> None:
    await session.execute(
        ConsumerPosition.__table__.update()
        .where(ConsumerPosition.group_name == group)
        .values(position=position, updated_at=func.now())
    )


async def take_in_order(
    session: AsyncSession, group: str, events: Sequence[BusEvent]
) -> list[BusEvent]:
    """The embedded bus's progress: the events of a contiguous stretch of the log not applied
    yet. Moves the floor to the stretch's end and drops the markers it passes (left by a
    Kafka period or a catch-up), skipping the events they name."""
    floor = await lock_floor(session, group)
    todo = [e for e in events if e.seq > floor]
    if not todo:
        return []
    passed = set(
        await session.scalars(
            delete(ProcessedEvent)
            .where(ProcessedEvent.group_name == group, ProcessedEvent.seq <= todo[-1].seq)
            .returning(ProcessedEvent.seq)
        )
    )
    await _set_floor(session, group, todo[-1].seq)
    return [e for e in todo if e.seq not in passed]


async def take_any_order(
    session: AsyncSession, group: str, events: Sequence[BusEvent]
) -> list[BusEvent]:
    """Kafka's progress (and a catch-up from the log): mark the events as applied; return
    those neither below the floor nor marked before (a copy within the batch counts once)."""
    floor = await lock_floor(session, group, shared=True)
    candidates = {e.seq: e for e in events if e.seq > floor}
    if not candidates:
        return []
    fresh = set(
        await session.scalars(
            insert(ProcessedEvent).on_conflict_do_nothing().returning(ProcessedEvent.seq),
            [{"group_name": group, "seq": seq} for seq in sorted(candidates)],
        )
    )
    return [candidates[seq] for seq in sorted(fresh)]


def _unapplied(group: str, after: int):
    marked = exists().where(ProcessedEvent.group_name == group, ProcessedEvent.seq == Event.seq)
    return select(Event).where(Event.seq > after, ~marked).order_by(Event.seq)


async def advance_floor(session: AsyncSession, group: str, *, up_to: int) -> int | None:
    """Raise the floor to just below the first event the group has not applied, never past
    `up_to`, the log's stable end (shared/bus/log.py `LogEnd`): above it a `seq` not seen yet
    may still commit, and the floor would pass it. Prune the markers below the new floor.
    None when another transaction is moving it."""
    floor = await lock_floor(session, group, skip_locked=True)
    if floor is None:
        return None
    first_gap = await session.scalar(
        _unapplied(group, floor).where(Event.seq <= up_to).with_only_columns(Event.seq).limit(1)
    )
    if first_gap is None:
        top = await session.scalar(
            select(func.max(ProcessedEvent.seq)).where(ProcessedEvent.group_name == group)
        )
        new_floor = max(floor, min(top or 0, up_to))
    else:
        new_floor = first_gap - 1
    if new_floor > floor:
        await session.execute(
            delete(ProcessedEvent).where(
                ProcessedEvent.group_name == group, ProcessedEvent.seq <= new_floor
            )
        )
        await _set_floor(session, group, new_floor)
    return new_floor


async def unapplied(
    session: AsyncSession, group: str, limit: int, *, up_to: int | None = None
) -> list[BusEvent]:
    """The first events of the log that the group has not applied. One statement, the floor
    read in it: read apart, the floor keeper could move the floor and prune the markers below
    it in between, and the events between the two floors would look unapplied (a settle or
    freeze answered `not_caught_up` with the lag at 0)."""
    query = _unapplied(group, floor_of(group))
    if up_to is not None:
        query = query.where(Event.seq <= up_to)
    return [row.to_bus_event() for row in await session.scalars(query.limit(limit))]


async def lag(session: AsyncSession, group: str) -> int:
    """Accepted events the group has not applied: those above its floor, less the marked."""
    floor = floor_of(group)
    above = select(func.count()).select_from(Event).where(Event.seq > floor).scalar_subquery()
    marked = (
        select(func.count())
        .select_from(ProcessedEvent)
        .where(ProcessedEvent.group_name == group, ProcessedEvent.seq > floor)
        .scalar_subquery()
    )
    return await session.scalar(select(above - marked))


async def marker_count(session: AsyncSession, group: str) -> int:
    return await session.scalar(
        select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.group_name == group)
    )


async def lowest_floor(session: AsyncSession) -> int:
    """The floor of the group furthest behind (0 if none ran): where a relay that has never
    run must start for every group to get every event it has not applied."""
    return await session.scalar(select(func.coalesce(func.min(ConsumerPosition.position), 0)))
