"""What-if before changing rules: a month's settlement under other settings, changing nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.scoring import preview
from shared import program_settings
from shared.errors import Forbidden, Unauthorized, ValidationFailed, error_responses
from shared.program_time import MONTH
from shared.web import Admin, ContextDep, SessionDep

router = APIRouter(tags=["operations"])

MonthParam = Annotated[str, Path(pattern=MONTH.pattern, examples=["2026-10"])]
WeightParam = Annotated[
    str | None,
    Query(pattern=program_settings.WEIGHT_TEXT, description="0–100, omitted = current"),
]


@router.get(
    "/v1/admin/months/{month}/preview",
    response_model=preview.MonthPreview,
    responses=error_responses(Unauthorized, Forbidden, ValidationFailed),
)
async def preview_month(
    month: MonthParam,
    _: Admin,
    session: SessionDep,
    context: ContextDep,
    weight_posts: WeightParam = None,
    weight_active_days: WeightParam = None,
    weight_interactions: WeightParam = None,
    weight_quality: WeightParam = None,
    min_posts: Annotated[int | None, Query(ge=0, description="omitted = current")] = None,
    monthly_pool: Annotated[
        str | None,
        Query(pattern=program_settings.AMOUNT_TEXT, description="USDT, omitted = current"),
    ] = None,
) -> dict:
    """The settlement the month would get under these settings (omitted = current), beside the
    current one: each certified creator's rank, score and payout under both, and the
    difference. For a settled month, "current" is the settlement as recorded. Changes
    nothing."""
    overrides = {
        "weight_posts": weight_posts,
        "weight_active_days": weight_active_days,
        "weight_interactions": weight_interactions,
        "weight_quality": weight_quality,
        "min_posts": min_posts,
        "monthly_pool": monthly_pool,
    }
    return await preview.preview_month(session, context.settings, month, overrides)
