"""Weekly featured posts: the provisional list, the freeze."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import consumer, featured
from services.scoring.models import FrozenWeek
from shared.db import driver
from shared.errors import Conflict, Forbidden, Unauthorized, ValidationFailed, error_responses
from shared.money import Money
from shared.program_settings import settings_in_force
from shared.settings import Settings
from shared.web import Admin, ContextDep, Reader, ReadSessionDep, SessionDep

router = APIRouter(tags=["exposure"])

WeekParam = Annotated[str, Path(pattern=featured.WEEK.pattern, examples=["2026-W42"])]


class FeaturedPostOut(BaseModel):
    rank: int
    post_id: str
    creator_id: str
    score: Decimal


class FeaturedWeek(BaseModel):
    week: str
    status: Literal["provisional", "frozen"]
    starts_at: datetime  # Monday 00:00 in the program zone
    ends_at: datetime
    frozen_at: datetime | None = None
    bonus: Money  # the featured-post bonus (USDT) each featured post earns when frozen
    total: int  # how many posts are featured (at most `featured_posts_per_week`)
    limit: int
    offset: int
    items: list[FeaturedPostOut]


def _checked(week: str) -> str:
    try:
        featured.week_start(week)
    except ValueError as error:
        raise ValidationFailed(
            "request is invalid", details=[{"loc": ["path", "week"], "msg": str(error)}]
        ) from None
    return week


def _page(
    week: str,
    context,
    items: list[featured.Featured],
    limit: int,
    offset: int,
    frozen: FrozenWeek | SimpleNamespace | None,  # its frozen_at and bonus
    bonus: Decimal,
) -> FeaturedWeek:
    starts, ends = featured.week_bounds(week, context.settings.timezone)
    return FeaturedWeek(
        week=week,
        status="frozen" if frozen else "provisional",
        starts_at=starts,
        ends_at=ends,
        frozen_at=frozen.frozen_at if frozen else None,
        bonus=frozen.bonus if frozen else bonus,
        total=len(items),
        limit=limit,
        offset=offset,
        items=[
            FeaturedPostOut(rank=i.rank, post_id=i.post_id, creator_id=i.creator_id, score=i.score)
            for i in items[offset : offset + limit]
        ],
    )


_WEEK_IN_ORDER = """
    SELECT f.post_id, f.creator_id, f.score
    FROM scoring_featured_scores AS f
    JOIN scoring_certified_creators AS c ON c.creator_id = f.creator_id AND c.certified_at < $2
    WHERE f.week = $1 AND f.score > 0
    ORDER BY f.score DESC, f.time, f.post_id
    LIMIT $3
"""
_FROZEN = "SELECT frozen_at, bonus FROM scoring_frozen_weeks WHERE week = $1"


async def provisional(
    session: AsyncSession, settings: Settings, week: str
) -> list[featured.Featured]:
    """`featured.provisional` (the same list) without ranking every post of the week: the
    week's rows in list order (score desc from the week's index, then post time and id), a
    chunk at a time, the per-creator cap applied as they come, until the list is full."""
    _, end = featured.week_bounds(week, settings.timezone)
    size, cap = settings.featured_posts_per_week, settings.featured_max_per_creator
    chunk = max(4 * size * cap, 64)
    connection = await driver(session)
    while True:
        rows = await connection.fetch(_WEEK_IN_ORDER, week, end, chunk)
        chosen: list[featured.Featured] = []
        per_creator: dict[str, int] = {}
        for post_id, creator_id, value in rows:
            if len(chosen) == size:
                break
            if per_creator.get(creator_id, 0) < cap:
                per_creator[creator_id] = per_creator.get(creator_id, 0) + 1
                chosen.append(featured.Featured(len(chosen) + 1, post_id, creator_id, value))
        if len(rows) < chunk or len(chosen) == size:
            return chosen
        chunk *= 4


Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]


@router.get(
    "/v1/featured/{week}",
    response_model=FeaturedWeek,
    responses=error_responses(Unauthorized, Forbidden, ValidationFailed),
)
async def get_featured(
    week: WeekParam,
    _: Reader,
    session: ReadSessionDep,
    context: ContextDep,
    limit: Limit = 20,
    offset: Offset = 0,
) -> FeaturedWeek:
    """The ISO week's featured posts (program time zone): provisional while the week runs and
    until frozen, then the frozen list. Order score desc, post time, post id; `limit` and
    `offset` page through the `featured_posts_per_week` posts."""
    week = _checked(week)
    found = await (await driver(session)).fetchrow(_FROZEN, week)
    frozen = SimpleNamespace(**found) if found else None
    items = (
        await featured.frozen(session, week)
        if frozen
        else await provisional(session, context.settings, week)
    )
    # provisional: the bonus the freeze would pay (in force for the month of the week's Monday)
    if frozen:
        bonus = frozen.bonus
    else:
        month = featured.week_start(week).strftime("%Y-%m")
        bonus = (await settings_in_force(session, context.settings, month)).featured_post_bonus
    return _page(week, context, items, limit, offset, frozen, bonus)


@router.post(
    "/v1/admin/weeks/{week}/freeze",
    response_model=FeaturedWeek,
    responses=error_responses(Unauthorized, Forbidden, Conflict, ValidationFailed),
)
async def freeze(
    week: WeekParam,
    key: Admin,
    session: SessionDep,
    context: ContextDep,
    limit: Limit = 500,
) -> FeaturedWeek:
    """Freeze the week's featured posts and issue their bonus. Too early (week + grace not
    over) → 409 `week_not_over`; events accepted but not yet applied by scoring → 409
    `not_caught_up` with Retry-After. Again → the same list."""
    week = _checked(week)
    frozen, items = await featured.freeze_week(
        session, context.settings, week, key.name, consumer.GROUP
    )
    return _page(week, context, items, limit, 0, frozen, frozen.bonus)
