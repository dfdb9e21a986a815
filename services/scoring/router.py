"""Scoring's read API and the settlement."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import BaseModel
from sqlalchemy import func, select

from services.scoring import (
    consumer,
    explain,
    freshness,
    leaderboard,
    settlement,
    standings,
    standings_table,
)
from services.scoring.models import Settlement, SettlementEntry
from shared.db import driver
from shared.errors import Conflict, Forbidden, NotFound, Unauthorized, error_responses
from shared.language import preferred_language
from shared.money import Money
from shared.program_settings import settings_in_force
from shared.program_time import MONTH
from shared.web import Admin, ContextDep, Reader, ReadSessionDep, SessionDep

router = APIRouter(tags=["scoring"])

MonthParam = Annotated[str, Path(pattern=MONTH.pattern, examples=["2026-11"])]
AcceptLanguage = Annotated[str | None, Header()]


class NonQualifyingPost(BaseModel):
    post_id: str
    time: datetime | None
    reasons: list[dict[str, str]]  # {"code", "message"}


class CreatorMonthOut(BaseModel):
    creator_id: str
    month: str
    status: Literal["provisional", "settled"]
    posts: int
    qualifying_posts: int
    missing_to_minimum: int
    active_days: int
    interactions: int
    quality: Decimal
    score: Decimal
    rank: int | None
    certified: bool
    eligible: bool
    payout: Money | None
    components: dict[str, Any]
    non_qualifying_posts: list[NonQualifyingPost]
    settings: dict[str, str] | None  # those the settlement used, once settled


class RankingEntry(BaseModel):
    rank: int
    creator_id: str
    score: Decimal
    qualifying_posts: int
    active_days: int
    interactions: int
    quality: Decimal
    eligible: bool
    payout: Money | None
    display_name: str | None = None  # from the certified application
    badges: list[str] = []  # "certification" for a certified creator
    rank_change: int | None = None  # previous snapshot day's rank − this rank; null: none


_ENTRY_FIELDS = (
    "rank",
    "creator_id",
    "score",
    "qualifying_posts",
    "active_days",
    "interactions",
    "quality",
    "eligible",
    "payout",
)


def _entry(standing, extras) -> RankingEntry:
    """A ranking entry from a live standing or a settlement entry (both carry these fields)."""
    return RankingEntry(
        **{name: getattr(standing, name) for name in _ENTRY_FIELDS},
        **vars(extras[standing.creator_id]),
    )


class Ranking(BaseModel):
    month: str
    status: Literal["provisional", "settled"]
    pool: Money
    settled_at: datetime | None = None
    total: int
    limit: int
    offset: int
    entries: list[RankingEntry]


_CREATOR_MONTH = """
    SELECT m.posts, m.qualifying_posts, m.active_days, m.interactions, m.quality,
           s.settings  -- those the settlement used; null: not settled
    FROM scoring_creator_months AS m
    LEFT JOIN scoring_settlements AS s ON s.month = m.month
    WHERE m.creator_id = $1 AND m.month = $2
"""
# what explain.reasons and explain.message read of a post
_POSTS_OF_MONTH = """
    SELECT post_id, time, kind, deleted, verdict, characters, image_count, duplicate_of
    FROM scoring_posts
    WHERE creator_id = $1 AND month = $2 AND kind IS NOT NULL
    ORDER BY time, post_id
"""


@router.get(
    "/v1/creators/{creator_id}/months/{month}",
    response_model=CreatorMonthOut,
    responses=error_responses(Unauthorized, Forbidden, NotFound),
)
async def get_creator_month(
    creator_id: str,
    month: MonthParam,
    _: Reader,
    session: ReadSessionDep,
    context: ContextDep,
    response: Response,
    accept_language: AcceptLanguage = None,
) -> CreatorMonthOut:
    """A creator's month: its statistics, score, rank and, once settled, payout; and why each
    post that does not qualify does not (what an operator reads to answer a complaint)."""
    settings = context.settings
    language = preferred_language(accept_language)
    response.headers["Content-Language"] = language
    found = await (await driver(session)).fetchrow(_CREATOR_MONTH, creator_id, month)
    if found is None:
        raise NotFound(f"no activity of creator {creator_id!r} in {month}")
    row = SimpleNamespace(**found)
    settled = row.settings is not None
    entry = await session.get(SettlementEntry, (month, creator_id)) if settled else None
    # the frozen entry once settled; else (or not ranked) the precomputed standing
    in_force = await settings_in_force(session, settings, month)
    standing = (
        None
        if entry is not None
        else await _live_standing(session, context, creator_id, month, in_force)
    )
    certified = entry is not None or bool(standing and standing.stats.certified)
    # a driver taken again: waiting for a refresh above may have released the connection
    posts = await (await driver(session)).fetch(_POSTS_OF_MONTH, creator_id, month)
    non_qualifying = []
    for post in map(lambda record: SimpleNamespace(**record), posts):
        codes = explain.reasons(post, settings)
        if codes:
            non_qualifying.append(
                NonQualifyingPost(
                    post_id=post.post_id,
                    time=post.time,
                    reasons=[
                        {"code": c, "message": explain.message(c, language, post, settings)}
                        for c in codes
                    ],
                )
            )
    minimum = in_force.monthly_min_quality_posts
    frozen = entry is not None
    # provisional: the statistics the score was computed from (the table's, after its refresh)
    stats = standing.stats if standing is not None else row
    return CreatorMonthOut(
        creator_id=creator_id,
        month=month,
        status="settled" if settled else "provisional",
        posts=row.posts,
        qualifying_posts=entry.qualifying_posts if frozen else stats.qualifying_posts,
        missing_to_minimum=max(0, minimum - stats.qualifying_posts),
        active_days=entry.active_days if frozen else stats.active_days,
        interactions=entry.interactions if frozen else stats.interactions,
        quality=entry.quality if frozen else stats.quality,
        score=entry.score if frozen else (standing.score if standing else Decimal(0)),
        rank=entry.rank if frozen else (standing.rank if standing else None),
        certified=certified,
        eligible=entry.eligible if frozen else bool(standing and standing.eligible),
        payout=(entry.payout if frozen else Decimal("0.00")) if settled else None,
        components=entry.components if frozen else (standing.explain() if standing else {}),
        non_qualifying_posts=non_qualifying,
        settings=row.settings,
    )


@router.get(
    "/v1/rankings/{month}",
    response_model=Ranking,
    responses=error_responses(Unauthorized, Forbidden),
)
async def get_ranking(
    month: MonthParam,
    _: Reader,
    session: ReadSessionDep,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    # ranks are PostgreSQL integers: offset + limit must fit one (2**31 - 1 was a 500)
    offset: Annotated[int, Query(ge=0, le=2**31 - 1 - 500)] = 0,
) -> Ranking:
    """The month's ranking of certified creators: live while provisional, frozen once settled.
    Order score desc, then creator id."""
    settings = context.settings
    now = datetime.now(UTC)
    day = leaderboard.program_day(now, settings)
    found = await standings_table.page(session, month, limit, offset, day)
    if found.settled:
        settled = await session.get(Settlement, month)
        return await _settled_ranking(session, settings, settled, limit, offset)
    in_force = await settings_in_force(session, settings, month)
    if await standings_table.refresh_if_due(
        session, context.sessionmaker, settings, found.state, now, in_force=in_force
    ):
        found = await standings_table.page(session, month, limit, offset, day)
    return Ranking(
        month=month,
        status="provisional",
        pool=in_force.monthly_pool,
        total=found.total,
        limit=limit,
        offset=offset,
        entries=[
            RankingEntry(**{n: getattr(s, n) for n in _ENTRY_FIELDS}, **vars(extras))
            for s, extras in found.entries
        ],
    )


async def _live_standing(session, context, creator_id: str, month: str, in_force):
    """The creator's standing in the month's precomputed table, refreshed first if due. A
    creator-month newer than the table (within the refresh interval) refreshes it, waiting for
    the lock; failing that (a refresh elsewhere still running), the exact standings."""
    settings = context.settings
    state, standing = await standings_table.of_creator(session, month, creator_id)
    now = datetime.now(UTC)
    if await standings_table.refresh_if_due(
        session, context.sessionmaker, settings, state, now, in_force=in_force
    ):
        _, standing = await standings_table.of_creator(session, month, creator_id)
    if standing is None:
        await freshness.release(session)
        await standings_table.refresh(context.sessionmaker, settings, month, wait=True)
        _, standing = await standings_table.of_creator(session, month, creator_id)
    if standing is None:
        by_creator = {s.creator_id: s for s in await standings.standings(session, settings, month)}
        standing = by_creator.get(creator_id)
    return standing


async def _settled_ranking(
    session, settings, settled: Settlement, limit: int, offset: int
) -> Ranking:
    month = settled.month
    total = await session.scalar(select(func.count()).where(SettlementEntry.month == month))
    page = list(
        await session.scalars(
            select(SettlementEntry)
            .where(
                SettlementEntry.month == month,
                SettlementEntry.rank.between(offset + 1, offset + limit),
            )
            .order_by(SettlementEntry.rank)
        )
    )
    extras = await leaderboard.extras(
        session,
        month,
        {e.creator_id: e.rank for e in page},
        day=leaderboard.program_day(settled.settled_at, settings),
    )
    return Ranking(
        month=month,
        status="settled",
        pool=settled.pool,
        settled_at=settled.settled_at,
        total=total,
        limit=limit,
        offset=offset,
        entries=[_entry(e, extras) for e in page],
    )


@router.post(
    "/v1/admin/months/{month}/settle",
    response_model=Ranking,
    responses=error_responses(Unauthorized, Forbidden, Conflict),
)
async def settle(
    month: MonthParam,
    key: Admin,
    session: SessionDep,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 100_000,
) -> Ranking:
    """Freeze the month's ranking and payouts and issue the rewards. Too early (month + grace
    not over) → 409; events accepted but not yet applied by scoring → 409 `not_caught_up` with
    Retry-After. Again → the same settlement."""
    settled = await settlement.settle_month(
        session, context.settings, month, key.name, consumer.GROUP
    )
    return await _settled_ranking(session, context.settings, settled, limit, 0)
