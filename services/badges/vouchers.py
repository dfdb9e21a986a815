"""The new-creator voucher (PROGRAM.md, reward 1): $50 for a certified creator's first
qualifying post within a calendar month of certification, for the first 100 creators only.

The cap lives in the database: a claim is a conditional `UPDATE … WHERE issued < cap` on the
pool's one row, in the same transaction (a savepoint) as the reward row. Whatever the number of
consumer processes, redeliveries or replays, the pool cannot pass its cap, and a creator cannot
get two (the reward's id is derived from the creator).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, String, func, literal, select, update
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on, insert
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
    """Issue the creator's voucher if it is due now (see `decide_many`); True when it did."""
    return bool(await decide_many(session, settings, [creator_id]))


async def decide_many(
    session: AsyncSession, settings: Settings, creator_ids: Sequence[str]
) -> list[str]:
    """Issue the vouchers due now, in the order the creators are given (first come, first
    served): certified, none issued yet, a qualifying post in the window that is known not to
    be deleted or removed, and the pool not empty. Called with the creators whose facts a batch
    changed; the creators it issued one to.

    Three queries for the whole batch find who is due; each due creator then claims on its own
    (`claim`, the cap's one place). A pool seen full is full for good (`issued` only grows):
    no claim is tried then."""
    ids = list(dict.fromkeys(creator_ids))
    if not ids:
        return []
    certified = {
        row.creator_id: row
        for row in await session.scalars(
            select(CertifiedCreator).where(CertifiedCreator.creator_id.in_(ids))
        )
    }
    if not certified:
        return []
    held = set(
        await session.scalars(
            select(Reward.id).where(Reward.id.in_([voucher_id(c) for c in certified]))
        )
    )
    candidates = [c for c in ids if c in certified and voucher_id(c) not in held]
    if not candidates:
        return []
    pool_row = await session.get(VoucherPool, POOL)
    if pool_row is not None and pool_row.issued >= pool_row.cap:
        return []
    zone = settings.timezone
    windows = {c: window(certified[c].certified_at, zone) for c in candidates}
    # Each candidate's first qualifying post in its own window: one query, DISTINCT ON.
    bounds = (
        select(
            func.unnest(literal(candidates, ARRAY(String))).label("creator_id"),
            func.unnest(literal([windows[c][0] for c in candidates], ARRAY(DateTime(True)))).label(
                "start"
            ),
            func.unnest(literal([windows[c][1] for c in candidates], ARRAY(DateTime(True)))).label(
                "end"
            ),
        )
    ).subquery()
    first_posts = {
        post.creator_id: post
        for post in await session.scalars(
            select(PostFact)
            .join(bounds, bounds.c.creator_id == PostFact.creator_id)
            .where(
                PostFact.original.is_(True),
                PostFact.substantial,
                ~PostFact.deleted,
                ~PostFact.removed,
                PostFact.time >= bounds.c.start,
                PostFact.time < bounds.c.end,
            )
            .order_by(PostFact.creator_id, PostFact.time, PostFact.post_id)
            .ext(distinct_on(PostFact.creator_id))
        )
    }
    issued = []
    for creator_id in candidates:
        post = first_posts.get(creator_id)
        if post is None:
            continue
        causes = [
            {"seq": certified[creator_id].seq, "type": "creator.certified"},
            {
                "seq": post.created_seq,
                "source": post.source,
                "id": post.event_id,
                "type": "post.created",
                "post_id": post.post_id,
            },
        ]
        if await claim(session, settings, creator_id, causes):
            issued.append(creator_id)
    return issued


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
