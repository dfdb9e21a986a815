"""Queries on scoring's tables."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.models import CreatorMonthActivity


async def add_month_counts(
    session: AsyncSession, counts: Mapping[tuple[str, str], tuple[int, int]]
) -> None:
    """Add (posts, interactions) per (creator, month): one statement for the whole batch."""
    if not counts:
        return
    rows = [
        {"creator_id": creator, "month": month, "posts": posts, "interactions": interactions}
        for (creator, month), (posts, interactions) in counts.items()
    ]
    stmt = insert(CreatorMonthActivity)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["creator_id", "month"],
            set_={
                "posts": CreatorMonthActivity.posts + stmt.excluded.posts,
                "interactions": CreatorMonthActivity.interactions + stmt.excluded.interactions,
            },
        ),
        rows,
    )


async def month_activity(
    session: AsyncSession, creator_id: str, month: str
) -> CreatorMonthActivity | None:
    return await session.scalar(
        select(CreatorMonthActivity).where(
            CreatorMonthActivity.creator_id == creator_id, CreatorMonthActivity.month == month
        )
    )
