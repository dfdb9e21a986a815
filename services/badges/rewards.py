"""Issuing rewards: once each, in an order every reader can follow without missing one.

Only the badges service writes rewards. A reward's id is derived from what it is for (kind,
creator, month or post), so a redelivered or replayed cause finds it already there. Inserts
take a transaction-level advisory lock first: rewards then commit in `feed_seq` order, and a
reader that has seen `feed_seq` N never later finds a committed reward below N (the event log
keeps the same guarantee without a lock, shared/bus/log.py `LogEnd`: rewards are few, the lock
costs nothing here). The table is the outbox of the rewards topic and the cursor feed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.badges.models import Reward
from shared.bus import dead_letters
from shared.bus.relay import OutboxMessage
from shared.events import BusEvent
from shared.settings import Settings

REWARDS_LOCK_KEY = 0x6361_0003
_IDS = uuid.UUID("5d6c1f7e-3f57-4c1b-9d0c-6a7c1e2b9f10")  # namespace of reward ids

NEW_CREATOR_VOUCHER = "new_creator_voucher"
MONTHLY_POOL_SHARE = "monthly_pool_share"
MERCH_GIFT = "merch_gift"
PROMOTION_SLOT = "promotion_slot"
FEATURED_POST_BONUS = "featured_post_bonus"
KINDS = (NEW_CREATOR_VOUCHER, MONTHLY_POOL_SHARE, MERCH_GIFT, PROMOTION_SLOT, FEATURED_POST_BONUS)


def reward_id(kind: str, creator_id: str, *what: str) -> str:
    """The same reward for the same thing always has the same id."""
    return str(uuid.uuid5(_IDS, "\x1f".join((kind, creator_id, *what))))


def cause_of(event: BusEvent) -> dict[str, Any]:
    """What to record of an event that earned a reward ("why was this paid?")."""
    return {"seq": event.seq, "source": event.source, "id": event.id, "type": event.type}


@dataclass(frozen=True)
class NewReward:
    id: str
    creator_id: str
    kind: str
    issued_at: datetime
    causes: list[dict[str, Any]] = field(default_factory=list)
    amount: Decimal | None = None
    currency: str | None = None
    month: str | None = None


async def lock(session: AsyncSession) -> None:
    """Serialise reward inserts until this transaction ends (see the module's docstring)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REWARDS_LOCK_KEY})


async def issue(session: AsyncSession, reward: NewReward) -> bool:
    """Insert the reward unless it exists; True when this call issued it."""
    await lock(session)
    issued = await session.scalar(
        insert(Reward)
        .values(
            id=reward.id,
            creator_id=reward.creator_id,
            kind=reward.kind,
            amount=reward.amount,
            currency=reward.currency,
            month=reward.month,
            status="issued",
            issued_at=reward.issued_at,
            causes=reward.causes,
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(Reward.id)
    )
    return issued is not None


async def issue_many(session: AsyncSession, new: Sequence[NewReward]) -> set[str]:
    """Insert the rewards that do not exist yet, in the order given, in one statement per
    thousand; the ids this call issued."""
    if not new:
        return set()
    await lock(session)
    issued: set[str] = set()
    rows = [
        {
            "id": r.id,
            "creator_id": r.creator_id,
            "kind": r.kind,
            "amount": r.amount,
            "currency": r.currency,
            "month": r.month,
            "status": "issued",
            "issued_at": r.issued_at,
            "causes": r.causes,
        }
        for r in new
    ]
    statement = insert(Reward).on_conflict_do_nothing(index_elements=["id"]).returning(Reward.id)
    for start in range(0, len(rows), 1000):
        issued |= set(await session.scalars(statement, rows[start : start + 1000]))
    return issued


# --- reading: the list, the cursor feed, the rewards topic's outbox ------------------------------

REWARDS_RELAY = "rewards-relay"  # the group a reward the broker refuses for good is parked under
MESSAGE_VERSION = 1


async def get(session: AsyncSession, id: str) -> Reward | None:
    return await session.get(Reward, id)


async def find(
    session: AsyncSession,
    *,
    creator_id: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    month: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Reward], int]:
    """One page of the rewards matching every filter given, in the order issued; and how many
    match in all."""
    conditions = [
        column == value
        for column, value in (
            (Reward.creator_id, creator_id),
            (Reward.kind, kind),
            (Reward.status, status),
            (Reward.month, month),
        )
        if value is not None
    ]
    total = await session.scalar(select(func.count()).select_from(Reward).where(*conditions))
    page = await session.scalars(
        select(Reward).where(*conditions).order_by(Reward.feed_seq).limit(limit).offset(offset)
    )
    return list(page), total


async def issued_after(session: AsyncSession, feed_seq: int, limit: int) -> list[Reward]:
    """The rewards issued after a feed position, in the order issued. Inserts commit in
    `feed_seq` order (`lock`), so what this does not return yet can only come later."""
    rows = await session.scalars(
        select(Reward).where(Reward.feed_seq > feed_seq).order_by(Reward.feed_seq).limit(limit)
    )
    return list(rows)


def to_message(reward: Reward) -> bytes:
    """The reward as the rewards topic carries it; readers dedupe by `id`."""
    return orjson.dumps(
        {
            "v": MESSAGE_VERSION,
            "id": reward.id,
            "creator_id": reward.creator_id,
            "kind": reward.kind,
            "amount": None if reward.amount is None else f"{reward.amount:.2f}",
            "currency": reward.currency,
            "month": reward.month,
            "status": reward.status,
            "issued_at": reward.issued_at.isoformat(),
            "causes": reward.causes,
        }
    )


class RewardsOutbox:
    """The rewards table as the outbox of the rewards topic (shared/bus/relay.py): every reward
    from the first, keyed by creator. A reward the broker refuses for good is parked with its
    message under "rewards-relay" (the feed still serves it)."""

    dead_letter_group = REWARDS_RELAY

    def __init__(self, topic: str) -> None:
        self.topic = topic

    async def start(self, session: AsyncSession) -> int:
        return 0

    async def find_end(self, session: AsyncSession) -> None:
        return None  # the rewards lock: positions commit in order, every committed one is final

    async def read(self, session: AsyncSession, after: int, limit: int) -> list[OutboxMessage]:
        return [
            OutboxMessage(r.feed_seq, r.id, r.creator_id.encode(), to_message(r))
            for r in await issued_after(session, after, limit)
        ]

    async def park(self, session: AsyncSession, message: OutboxMessage, error: str) -> None:
        await dead_letters.park_undecodable(session, self.dead_letter_group, message.value, error)


def outbox(settings: Settings) -> RewardsOutbox:
    return RewardsOutbox(settings.kafka_rewards_topic)
