"""Recommended follows."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.scoring import recommendations
from shared.errors import Forbidden, Unauthorized, error_responses
from shared.web import ContextDep, Reader, ReadSessionDep

router = APIRouter(tags=["exposure"])


class RecommendedCreator(BaseModel):
    creator_id: str
    display_name: str | None
    score: Decimal  # the blend, 6 decimals
    recent_score: Decimal  # the best of this and last month's score
    activity: Decimal  # active days in the window / window days
    growth: Decimal  # damped follower growth over the window, in [0, 1]
    qualifying_posts: int  # in the window
    active_days: int  # in the window
    followers: int | None
    followers_before: int | None
    newcomer: bool


class Recommendations(BaseModel):
    items: list[RecommendedCreator]


@router.get(
    "/v1/recommendations/creators",
    response_model=Recommendations,
    responses=error_responses(Unauthorized, Forbidden),
)
async def get_recommended_creators(
    _: Reader,
    session: ReadSessionDep,
    context: ContextDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> Recommendations:
    """Certified creators to recommend following: recent score, activity and follower growth
    blended, newcomers interleaved (docs/rules.md). `limit` defaults to `recommendations_size`
    and is capped at `recommendations_max`. Served from the list precomputed at most
    `standings_refresh_seconds` before a change (docs/rules.md)."""
    settings = context.settings
    size = min(limit or settings.recommendations_size, settings.recommendations_max)
    items = await recommendations.served(session, context.sessionmaker, settings, size)
    return Recommendations(items=[RecommendedCreator(**vars(item)) for item in items])
