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

Served precomputed (`served`): the list as of its last refresh, `recommendations_max` long, in
`scoring_recommendations`; a read takes its first `limit` rows. It is refreshed (services/
scoring/freshness.py) when the `recommendations` version moved (any batch that changes
creator-months, creator-days, certifications or follower counts), the rules or the program day
changed, a month it reads was settled, or it is older than `recommendations_max_age_seconds`
(the newcomer flag and the window move with the clock); not within `standings_refresh_seconds`
of the last refresh. `recommend` is the same computation, fresh, on the exact standings.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import CHAR, String, and_, delete, func, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import freshness, months, standings, standings_table
from services.scoring.models import (
    CertifiedCreator,
    CreatorDay,
    FollowerCount,
    Post,
    PrecomputedRecommendation,
    PrecomputedStanding,
    Settlement,
    SettlementEntry,
)
from shared.db import driver
from shared.program_time import month_of
from shared.settings import Settings

PLACES = Decimal("0.000001")


async def refresh_days(
    session: AsyncSession, settings: Settings, creator_months: set[tuple[str, str]]
) -> None:
    """Rebuild the creator-days of these creator-months from the facts: the settled months a
    batch's late events touched (recommendations read activity, not payouts; an open month's
    creator-days move with it, `months.recompute`). Only days with a qualifying post are
    kept."""
    pairs = sorted(creator_months)
    if not pairs:
        return
    remove, fill = _days_statements(settings)
    arrays = {"creators": [c for c, _ in pairs], "months": [m for _, m in pairs]}
    await session.execute(remove, arrays)
    await session.execute(fill, arrays)


# The statements of `refresh_days`, built once per rule: only the creator-months change.
_DAYS_STATEMENTS: dict[tuple, tuple] = {}


def _days_statements(settings: Settings) -> tuple:
    rule = months.counting_rule(settings)
    if rule not in _DAYS_STATEMENTS:
        pairs = months.unnested(creators=("creator_id", String), months=("month", CHAR(7)))
        remove = delete(CreatorDay).where(months.creator_days_of(pairs))
        fill = CreatorDay.__table__.insert().from_select(
            ["creator_id", "day", "qualifying_posts"],
            select(Post.creator_id, Post.day, func.count())
            .join_from(
                pairs,
                Post,
                and_(Post.creator_id == pairs.c.creator_id, Post.month == pairs.c.month),
            )
            .where(Post.day.is_not(None), months.qualifying(settings))
            .group_by(Post.creator_id, Post.day),
        )
        _DAYS_STATEMENTS[rule] = (remove, fill)
    return _DAYS_STATEMENTS[rule]


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


MonthScores = Callable[[AsyncSession, Settings, str], Awaitable[dict[str, Decimal]]]


async def _settled_scores(session: AsyncSession, month: str) -> dict[str, Decimal] | None:
    if await session.get(Settlement, month) is None:
        return None
    rows = await session.execute(
        select(SettlementEntry.creator_id, SettlementEntry.score).where(
            SettlementEntry.month == month
        )
    )
    return dict(rows.all())


async def exact_scores(session: AsyncSession, settings: Settings, month: str):
    """Every creator's score in a month: frozen once settled, the exact standings before."""
    settled = await _settled_scores(session, month)
    if settled is not None:
        return settled
    return {s.creator_id: s.score for s in await standings.standings(session, settings, month)}


async def table_scores(session: AsyncSession, settings: Settings, month: str):
    """Every creator's score in a month: frozen once settled, the precomputed table before."""
    settled = await _settled_scores(session, month)
    if settled is not None:
        return settled
    rows = await session.execute(
        select(PrecomputedStanding.creator_id, PrecomputedStanding.score).where(
            PrecomputedStanding.month == month
        )
    )
    return dict(rows.all())


async def _followers(
    session: AsyncSession, creators, since: datetime, now: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """(latest count at or before now, the count growth is measured from) per creator of the
    `creators` subquery (no list of ids: there may be 100,000)."""

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
        return Decimal(0).quantize(PLACES)  # 6 decimals, like every part
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


def _window(settings: Settings, now: datetime) -> tuple[datetime, str, str]:
    local = now.astimezone(settings.timezone)
    window = settings.recommendation_window_days
    start = (local - timedelta(days=window - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start.strftime("%Y-%m-%d"), local.strftime("%Y-%m-%d")


async def recommend(
    session: AsyncSession,
    settings: Settings,
    limit: int,
    now: datetime,
    scores: MonthScores = exact_scores,
) -> list[Recommendation]:
    """The recommended creators as of `now` (the server's clock; days in the program zone)."""
    zone = settings.timezone
    window = settings.recommendation_window_days
    start, first_day, today = _window(settings, now)
    newcomer_since = now - timedelta(days=settings.recommendation_newcomer_days)

    active_day = func.count().label("active_days")
    active = (
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
    rows = (await session.execute(active)).all()
    if not rows:
        return []
    month = month_of(now, zone)
    this_month = await scores(session, settings, month)
    last_month = await scores(session, settings, _previous_month(month))
    active_ids = active.with_only_columns(CertifiedCreator.creator_id)
    latest, before = await _followers(session, active_ids, start, now)

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


# --- precomputed ---------------------------------------------------------------------------------

KEY = standings.RECOMMENDATIONS
COLUMNS = [
    "position",
    "creator_id",
    "display_name",
    "score",
    "recent_score",
    "activity",
    "growth",
    "qualifying_posts",
    "active_days",
    "followers",
    "followers_before",
    "newcomer",
]
_SETTINGS = (
    "recommendations_max",
    "recommendation_weight_score",
    "recommendation_weight_activity",
    "recommendation_weight_growth",
    "recommendation_window_days",
    "recommendation_followers_damping",
    "recommendation_growth_full",
    "recommendation_newcomer_days",
    "recommendation_newcomer_every",
    "program_timezone",
)


async def fingerprint(session: AsyncSession, settings: Settings, now: datetime) -> str:
    """What the list depends on besides the `recommendations` version: its settings, the
    program day (the window), and for the two months it reads, the rules in force and
    whether they are settled."""
    month = month_of(now, settings.timezone)
    read = (month, _previous_month(month))
    connection = await driver(session)  # on every read of the list
    settled = {
        row["month"]
        for row in await connection.fetch(
            "SELECT month FROM scoring_settlements WHERE month = ANY($1::varchar[])", list(read)
        )
    }
    rules = [await standings_table.fingerprint_of(session, settings, m) for m in read]
    return freshness.fingerprint(
        tuple(getattr(settings, name) for name in _SETTINGS),
        _window(settings, now)[2],
        tuple((m, m in settled, r) for m, r in zip(read, rules, strict=True)),
    )


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    wait: bool,
    now: datetime | None = None,
) -> bool:
    """Recompute the stored list if it is stale (checked again under its lock); True if it did.
    The months it reads are refreshed first when stale. Without `wait`, nothing waits for a
    lock: while another refresh holds one of the months, the list is left for a later pass (it
    would be computed from the table being replaced)."""
    now = now or datetime.now(UTC)
    month = month_of(now, settings.timezone)
    read = (month, _previous_month(month))
    for key in read:
        await standings_table.refresh(sessionmaker, settings, key, wait=wait, now=now)
    if not wait and await freshness.held_elsewhere(sessionmaker, read):
        return False
    if wait:
        async with freshness.waiting_line(KEY):
            return await _refresh(sessionmaker, settings, wait=True, now=now)
    return await _refresh(sessionmaker, settings, wait=False, now=now)


async def _refresh(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, *, wait: bool, now: datetime
) -> bool:
    async with sessionmaker() as session, session.begin():
        if not await freshness.lock(session, KEY, wait=wait):
            return False
        await freshness.allow_long_computation(session)
        fingerprint_now = await fingerprint(session, settings, now)
        state = await freshness.state(session, KEY)
        if not state.stale(fingerprint_now, now, settings.recommendations_max_age_seconds):
            return False
        items = await recommend(
            session, settings, settings.recommendations_max, now, scores=table_scores
        )
        await session.execute(delete(PrecomputedRecommendation))
        records = [
            (position, *(getattr(item, name) for name in COLUMNS[1:]))
            for position, item in enumerate(items, start=1)
        ]
        await freshness.copy_rows(
            session, PrecomputedRecommendation.__tablename__, COLUMNS, records
        )
        await freshness.record(session, KEY, state.version, fingerprint_now, len(items))
    return True


_FIRST = f"SELECT {', '.join(COLUMNS)} FROM scoring_recommendations ORDER BY position LIMIT $1"


async def served(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    limit: int,
) -> list[Recommendation]:
    """The first `limit` of the stored list, refreshed first if due."""
    now = datetime.now(UTC)
    state = await freshness.state(session, KEY)
    due = state.due(
        await fingerprint(session, settings, now),
        now,
        settings.standings_refresh_seconds,
        settings.recommendations_max_age_seconds,
    )
    if due:
        wait = standings_table.must_wait(state, settings.standings_refresh_seconds)
        await freshness.release(session)
        await refresh(sessionmaker, settings, wait=wait, now=now)
    rows = await (await driver(session)).fetch(_FIRST, limit)
    return [Recommendation(**{name: row[name] for name in COLUMNS[1:]}) for row in rows]
