"""Queries on badges' tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.badges.models import CreatorPosts


@dataclass
class FirstPost:
    """A batch's summary of one creator's posts, before it is merged into the table."""

    creator_id: str
    first_post_id: str
    first_post_at: datetime
    posts: int


async def record_posts(session: AsyncSession, posts: Iterable[FirstPost]) -> None:
    """Merge per-creator post summaries of a batch: earliest first post wins, counts add."""
    rows = [
        {
            "creator_id": p.creator_id,
            "first_post_id": p.first_post_id,
            "first_post_at": p.first_post_at,
            "posts": p.posts,
        }
        for p in posts
    ]
    if not rows:
        return
    stmt = insert(CreatorPosts)
    earlier = stmt.excluded.first_post_at < CreatorPosts.first_post_at
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["creator_id"],
            set_={
                "first_post_id": case(
                    (earlier, stmt.excluded.first_post_id), else_=CreatorPosts.first_post_id
                ),
                "first_post_at": case(
                    (earlier, stmt.excluded.first_post_at), else_=CreatorPosts.first_post_at
                ),
                "posts": CreatorPosts.posts + stmt.excluded.posts,
            },
        ),
        rows,
    )
