"""The new-creator voucher (PROGRAM.md, reward 1): $50 for a certified creator's first
qualifying post within a calendar month of certification, for the first 100 creators only.

The cap lives in the database: a claim is a conditional `UPDATE … WHERE issued < cap` on the
pool's one row, in the same transaction (a savepoint) as the reward row. Whatever the number of
consumer processes, redeliveries or replays, the pool cannot pass its cap, and a creator cannot
get two (the reward's id is derived from the creator).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.badges import rewards
from services.badges.models import CertifiedCreator, PostFact, Reward, VoucherPool
from shared.characters import count_characters, long_or_image_post
from shared.program_time import add_calendar_month
from shared.settings import Settings

POOL = 1  # the pool's row


def is_substantial(text: str, image_count: int, min_chars: int) -> bool:
    """Long enough (≥ min_chars characters) or an image post (an image and some text)."""
    return long_or_image_post(count_characters(text), image_count, min_chars)


def window(certified_at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """`[certified_at, certified_at + 1 calendar month)`, the month added in the program zone."""
    return certified_at, add_calendar_month(certified_at, zone)


def voucher_id(creator_id: str) -> str:
    return rewards.reward_id(rewards.NEW_CREATOR_VOUCHER, creator_id)


class _PoolEmpty(Exception):
    pass


async def decide(session: AsyncSession, settings: Settings, creator_id: str) -> bool:
    """Issue the creator's voucher if it is due now: certified, none issued yet, a qualifying
    post in the window that is known not to be deleted or removed, and the pool not empty.
    Called whenever something the rule depends on changed; True when it issued one."""
    certified = await session.get(CertifiedCreator, creator_id)
    if certified is None or await session.get(Reward, voucher_id(creator_id)) is not None:
        return False
    start, end = window(certified.certified_at, settings.timezone)
    post = await session.scalar(
        select(PostFact)
        .where(
            PostFact.creator_id == creator_id,
            PostFact.original.is_(True),
            PostFact.substantial,
            ~PostFact.deleted,
            ~PostFact.removed,
            PostFact.time >= start,
            PostFact.time < end,
        )
        .order_by(PostFact.time, PostFact.post_id)
        .limit(1)
    )
    if post is None:
        return False
    causes = [
        {"seq": certified.seq, "type": "creator.certified"},
        {
            "seq": post.created_seq,
            "source": post.source,
            "id": post.event_id,
            "type": "post.created",
            "post_id": post.post_id,
        },
    ]
    return await claim(session, settings, creator_id, causes)


async def claim(
    session: AsyncSession, settings: Settings, creator_id: str, causes: list[dict]
) -> bool:
    """Take one voucher from the pool for the creator; False if it has one or none is left."""
    await session.execute(
        insert(VoucherPool)
        .values(id=POOL, cap=settings.voucher_cap, issued=0)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    voucher = rewards.NewReward(
        id=voucher_id(creator_id),
        creator_id=creator_id,
        kind=rewards.NEW_CREATOR_VOUCHER,
        issued_at=datetime.now(UTC),
        causes=causes,
        amount=settings.voucher_amount,
        currency="USD",
    )
    try:
        async with session.begin_nested():
            if not await rewards.issue(session, voucher):
                return False
            taken = await session.scalar(
                update(VoucherPool)
                .where(VoucherPool.id == POOL, VoucherPool.issued < VoucherPool.cap)
                .values(issued=VoucherPool.issued + 1)
                .returning(VoucherPool.issued)
            )
            if taken is None:
                raise _PoolEmpty  # undoes the reward row with the savepoint
    except _PoolEmpty:
        return False
    return True


async def pool(session: AsyncSession, settings: Settings) -> tuple[int, int]:
    """(cap, issued)."""
    row = await session.get(VoucherPool, POOL)
    return (row.cap, row.issued) if row else (settings.voucher_cap, 0)
