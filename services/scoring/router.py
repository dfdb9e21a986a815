"""Scoring's read API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from services.scoring import repository
from shared.errors import Forbidden, NotFound, Unauthorized, error_responses
from shared.program_time import MONTH
from shared.web import Reader, SessionDep

router = APIRouter(tags=["scoring"])

MonthParam = Annotated[str, Path(pattern=MONTH.pattern, examples=["2026-11"])]


class CreatorMonth(BaseModel):
    creator_id: str
    month: str
    posts: int
    interactions: int


@router.get(
    "/v1/creators/{creator_id}/months/{month}",
    response_model=CreatorMonth,
    responses=error_responses(Unauthorized, Forbidden, NotFound),
)
async def get_creator_month(
    creator_id: str, month: MonthParam, _: Reader, session: SessionDep
) -> CreatorMonth:
    """A creator's statistics for one program month."""
    activity = await repository.month_activity(session, creator_id, month)
    if activity is None:
        raise NotFound(f"no activity of creator {creator_id!r} in {month}")
    return CreatorMonth(
        creator_id=creator_id,
        month=month,
        posts=activity.posts,
        interactions=activity.interactions,
    )
