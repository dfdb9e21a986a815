"""A creator's month, derived from the facts (the standings are in `standings.py`).

`recompute` rebuilds the rows of the creator-months a batch touched, from the facts alone, in
the batch's transaction: whatever order the events came in, the same facts give the same rows.
A settled month is never recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.scoring import score
from services.scoring.models import CreatorMonth, Interaction, Post, Settlement
from shared.settings import Settings


def month_bounds(month: str, settings: Settings) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of a program month."""
    year, number = map(int, month.split("-"))
    start = datetime(year, number, 1, tzinfo=settings.timezone)
    following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=settings.timezone)
    return start, following


def settle_after(month: str, settings: Settings) -> datetime:
    return month_bounds(month, settings)[1] + timedelta(hours=settings.settlement_grace_hours)


def is_substantial(settings: Settings):
    """shared.characters.long_or_image_post as a condition on `scoring_posts`."""
    return or_(
        Post.characters >= settings.qualifying_post_min_chars,
        and_(Post.image_count >= 1, Post.characters >= 1),
    )


def qualifying(settings: Settings):
    """An original quality post (PROGRAM.md), as a condition on `scoring_posts`."""
    return and_(
        Post.kind == "original",
        ~Post.deleted,
        or_(Post.verdict.is_(None), Post.verdict.not_in(("removed", "low_quality"))),
        is_substantial(settings),
        Post.duplicate_of.is_(None),
    )


def _weight(settings: Settings):
    return case(
        (Interaction.kind == "like", settings.interaction_weight_like),
        (Interaction.kind == "comment", settings.interaction_weight_comment),
        (Interaction.kind == "share", settings.interaction_weight_share),
        else_=settings.interaction_weight_quote,
    )


def counted_interactions(settings: Settings):
    """Interactions that count: not deleted, not the creator's own, on a post that is not
    deleted or removed (a post not known yet counts as neither)."""
    target = aliased(Post)  # its own name: callers correlate with an outer `Post`
    return (
        select(Interaction)
        .outerjoin(target, target.post_id == Interaction.post_id)
        .where(
            ~Interaction.deleted,
            Interaction.actor_id != Interaction.creator_id,
            ~func.coalesce(target.deleted, False),
            func.coalesce(target.verdict, "") != "removed",
        )
    )


async def received_interactions(
    session: AsyncSession, settings: Settings, creator_id: str, month: str
) -> int:
    """Weighted interactions received in the month; one actor's weight for one creator and day
    capped at `interaction_daily_cap_per_actor` (the excess clamped: 9 + 3 → 10)."""
    per_actor_day = (
        counted_interactions(settings)
        .where(Interaction.creator_id == creator_id, Interaction.month == month)
        .with_only_columns(func.sum(_weight(settings)).label("weight"))
        .group_by(Interaction.actor_id, Interaction.day)
        .subquery()
    )
    cap = settings.interaction_daily_cap_per_actor
    total = await session.scalar(
        select(func.coalesce(func.sum(func.least(per_actor_day.c.weight, cap)), 0))
    )
    return int(total)


def post_quality(post: Post, distinct_actors: int, settings: Settings) -> Decimal:
    """A post's content quality: the moderation score, else the heuristic of the settings."""
    return score.post_quality(
        characters=post.characters,
        image_count=post.image_count,
        paragraphs=post.paragraphs,
        distinct_actors=distinct_actors,
        moderation_score=post.quality_score,
        heuristic=score.QualityHeuristic.from_settings(settings),
    )


async def qualifying_posts(
    session: AsyncSession, settings: Settings, creator_id: str, month: str
) -> list[tuple[Post, int]]:
    """The creator's original quality posts of the month, each with its distinct actors."""
    actors = (
        counted_interactions(settings)
        .where(Interaction.post_id == Post.post_id)
        .with_only_columns(func.count(func.distinct(Interaction.actor_id)))
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Post, actors)
        .where(Post.creator_id == creator_id, Post.month == month, qualifying(settings))
        .order_by(Post.time, Post.post_id)
    )
    return [(post, distinct or 0) for post, distinct in rows]


async def recompute(
    session: AsyncSession, settings: Settings, creator_months: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Rebuild the creator-months from the facts, but those of settled months; return the
    (creator, month) pairs that were settled already (late events)."""
    pairs = sorted(set(creator_months))
    if not pairs:
        return []
    settled = set(
        await session.scalars(
            select(Settlement.month).where(Settlement.month.in_({m for _, m in pairs}))
        )
    )
    late = [(c, m) for c, m in pairs if m in settled]
    for creator_id, month in pairs:
        if month in settled:
            continue
        await _recompute_one(session, settings, creator_id, month)
    return late


async def _recompute_one(
    session: AsyncSession, settings: Settings, creator_id: str, month: str
) -> None:
    posts = await session.scalar(
        select(func.count()).where(
            Post.creator_id == creator_id,
            Post.month == month,
            Post.kind.is_not(None),
            ~Post.deleted,
        )
    )
    quality_posts = await qualifying_posts(session, settings, creator_id, month)
    qualities = [post_quality(post, distinct, settings) for post, distinct in quality_posts]
    quality = (sum(qualities, Decimal(0)) / len(qualities)) if qualities else Decimal(0)
    values = {
        "posts": posts,
        "qualifying_posts": len(quality_posts),
        "active_days": len({post.day for post, _ in quality_posts}),
        "interactions": await received_interactions(session, settings, creator_id, month),
        "quality": quality.quantize(score.SIX_PLACES),
    }
    await session.execute(
        insert(CreatorMonth)
        .values(creator_id=creator_id, month=month, **values)
        .on_conflict_do_update(
            index_elements=["creator_id", "month"], set_=values | {"updated_at": func.now()}
        )
    )


async def provisional_creator_months(
    session: AsyncSession, month: str | None = None
) -> set[tuple[str, str]]:
    """Every (creator, month) with facts, in months not settled (or in one month)."""
    pairs: set[tuple[str, str]] = set()
    for table in (Post, Interaction):
        query = select(table.creator_id, table.month).where(table.month.is_not(None)).distinct()
        if month is not None:
            query = query.where(table.month == month)
        pairs |= {(c, m) for c, m in await session.execute(query)}
    settled = set(await session.scalars(select(Settlement.month)))
    return {(c, m) for c, m in pairs if m not in settled}
