"""Recommended follows: certified creators ranked by a blend of recent score, activity and
follower growth, with newcomers interleaved (docs/rules.md, "Reward 5").

Inputs are derived state, not raw posts: the creator-days rebuilt by the consumer with the
creator-months a batch touched (`refresh_days`), the creator-months' scores (`standings.standings`,
or the settlement's frozen scores), and the follower-count facts of the window.

- recent = the best of the creator's score this program month and last month, in [0, 1];
- activity = active days in the window / window days, in [0, 1];
- growth = min(1, max(0, ln((F_now + k) / (F_then + k))) / ln(growth_full)), in [0, 1], where
  F_now is the latest count, F_then the latest count at or before the window's first instant
  (00:00 of its first day; else the earliest count in the window), k the damping;
- score = w_score × recent + w_activity × activity + w_growth × growth, 6 decimals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import and_, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import months, standings
from services.scoring.models import (
    CertifiedCreator,
    CreatorDay,
    FollowerCount,
    Post,
    Settlement,
    SettlementEntry,
)
from shared.program_time import month_of
from shared.settings import Settings

PLACES = Decimal("0.000001")


async def refresh_days(
    session: AsyncSession, settings: Settings, creator_months: set[tuple[str, str]]
) -> None:
    """Rebuild the creator-days of the touched creator-months from the facts (settled months
    too: recommendations read activity, not payouts). Only days with a qualifying post are
    kept."""
    pairs = sorted(creator_months)
    if not pairs:
        return
    keys = tuple_(Post.creator_id, Post.month).in_(pairs)
    await session.execute(
        delete(CreatorDay).where(
            tuple_(CreatorDay.creator_id, func.substr(CreatorDay.day, 1, 7)).in_(pairs)
        )
    )
    await session.execute(
        CreatorDay.__table__.insert().from_select(
            ["creator_id", "day", "qualifying_posts"],
            select(Post.creator_id, Post.day, func.count())
            .where(keys, Post.day.is_not(None), months.qualifying(settings))
            .group_by(Post.creator_id, Post.day),
        )
    )


@dataclass(frozen=True)
class Recommendation:
    creator_id: str
    display_name: str | None
    score: Decimal
    recent_score: Decimal
    activity: Decimal
    growth: Decimal
    qualifying_posts: int  # in the window
    active_days: int  # in the window
    followers: int | None  # the latest count known
    followers_before: int | None  # the count growth is measured from
    newcomer: bool


def _previous_month(month: str) -> str:
    year, number = map(int, month.split("-"))
    return f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"


async def _month_scores(
    session: AsyncSession, settings: Settings, month: str, creators: set[str]
) -> dict[str, Decimal]:
    """The candidates' scores in a month: frozen once settled, live before."""
    if await session.get(Settlement, month) is not None:
        rows = await session.execute(
            select(SettlementEntry.creator_id, SettlementEntry.score).where(
                SettlementEntry.month == month, SettlementEntry.creator_id.in_(creators)
            )
        )
        return dict(rows.all())
    return {
        s.creator_id: s.score
        for s in await standings.standings(session, settings, month)
        if s.creator_id in creators
    }


async def _followers(
    session: AsyncSession, creators: set[str], since: datetime, now: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """(latest count at or before now, the count growth is measured from) per creator."""

    async def one(condition, order) -> dict[str, int]:
        rows = await session.execute(
            select(FollowerCount.creator_id, FollowerCount.followers)
            .where(FollowerCount.creator_id.in_(creators), condition)
            .order_by(FollowerCount.creator_id, order)
            .ext(distinct_on(FollowerCount.creator_id))
        )
        return dict(rows.all())

    latest = await one(FollowerCount.time <= now, FollowerCount.time.desc())
    before = await one(FollowerCount.time <= since, FollowerCount.time.desc())
    first = await one(
        and_(FollowerCount.time > since, FollowerCount.time <= now), FollowerCount.time.asc()
    )
    return latest, first | before


def growth_part(latest: int | None, before: int | None, settings: Settings) -> Decimal:
    """Relative growth, log-damped: ln((now + k) / (then + k)), 0 when it fell or is unknown,
    full marks at a damped ratio of `recommendation_growth_full`."""
    if latest is None or before is None:
        return Decimal(0)
    k = settings.recommendation_followers_damping
    ratio = math.log((latest + k) / (before + k)) / math.log(settings.recommendation_growth_full)
    return Decimal(str(min(1.0, max(0.0, ratio)))).quantize(PLACES, ROUND_HALF_EVEN)


def interleave_newcomers(ranked: list[Recommendation], every: int, limit: int):
    """At least one newcomer in every `every` consecutive slots while newcomers remain: a slot
    that would close a run of `every` slots without one goes to the best remaining newcomer;
    every other slot to the best remaining creator. Each group keeps its own order."""
    remaining = list(ranked)
    chosen: list[Recommendation] = []
    while remaining and len(chosen) < limit:
        recent = chosen[len(chosen) - (every - 1) :] if every > 1 else []
        due = len(chosen) >= every - 1 and not any(r.newcomer for r in recent)
        pick = next((r for r in remaining if r.newcomer), None) if due else None
        pick = pick or remaining[0]
        remaining.remove(pick)
        chosen.append(pick)
    return chosen


async def recommend(
    session: AsyncSession, settings: Settings, limit: int, now: datetime
) -> list[Recommendation]:
    """The recommended creators as of `now` (the server's clock; days in the program zone)."""
    zone = settings.timezone
    local = now.astimezone(zone)
    window = settings.recommendation_window_days
    start = (local - timedelta(days=window - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day, today = start.strftime("%Y-%m-%d"), local.strftime("%Y-%m-%d")
    newcomer_since = now - timedelta(days=settings.recommendation_newcomer_days)

    active_day = func.count().label("active_days")
    rows = (
        await session.execute(
            select(
                CertifiedCreator.creator_id,
                CertifiedCreator.display_name,
                CertifiedCreator.certified_at,
                func.sum(CreatorDay.qualifying_posts).label("qualifying_posts"),
                active_day,
            )
            .join(CreatorDay, CreatorDay.creator_id == CertifiedCreator.creator_id)
            .where(
                CertifiedCreator.certified_at <= now,
                CreatorDay.day >= first_day,
                CreatorDay.day <= today,
                CreatorDay.qualifying_posts > 0,
            )
            .group_by(CertifiedCreator.creator_id)
        )
    ).all()
    if not rows:
        return []
    creators = {row.creator_id for row in rows}
    month = month_of(now, zone)
    this_month = await _month_scores(session, settings, month, creators)
    last_month = await _month_scores(session, settings, _previous_month(month), creators)
    latest, before = await _followers(session, creators, start, now)

    weights = (
        settings.recommendation_weight_score,
        settings.recommendation_weight_activity,
        settings.recommendation_weight_growth,
    )
    ranked = []
    for row in rows:
        recent = max(this_month.get(row.creator_id, Decimal(0)), last_month.get(row.creator_id, 0))
        activity = (Decimal(min(row.active_days, window)) / window).quantize(PLACES)
        growth = growth_part(latest.get(row.creator_id), before.get(row.creator_id), settings)
        parts = (Decimal(recent), activity, growth)
        score = sum((w * p for w, p in zip(weights, parts, strict=True)), Decimal(0))
        ranked.append(
            Recommendation(
                creator_id=row.creator_id,
                display_name=row.display_name,
                score=score.quantize(PLACES, ROUND_HALF_EVEN),
                recent_score=Decimal(recent).quantize(PLACES),
                activity=activity,
                growth=growth,
                qualifying_posts=int(row.qualifying_posts),
                active_days=int(row.active_days),
                followers=latest.get(row.creator_id),
                followers_before=before.get(row.creator_id),
                newcomer=row.certified_at > newcomer_since,
            )
        )
    ranked.sort(key=lambda r: (-r.score, r.creator_id))
    return interleave_newcomers(ranked, settings.recommendation_newcomer_every, limit)
