"""The new-creator voucher pool and the promotion slots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, status
from prometheus_client import Gauge
from pydantic import BaseModel
from sqlalchemy import select

from services.badges import rewards, vouchers
from services.badges.models import Application
from services.badges.schemas import Money, RewardOut
from shared.errors import Conflict, Forbidden, Unauthorized, error_responses
from shared.program_time import MONTH, current_month
from shared.web import Admin, Context, ContextDep, Reader, ReadSessionDep, SessionDep

router = APIRouter(tags=["badges"])

MonthParam = Annotated[str, Path(pattern=MONTH.pattern, examples=["2026-12"])]

# The pool as the database holds it, read at each scrape of /metrics (runtime.py,
# `Service.metrics`): right in every process serving this API, restarts included.
VOUCHERS_ISSUED = Gauge("creator_activity_vouchers_issued", "New-creator vouchers issued")
VOUCHERS_CAP = Gauge("creator_activity_vouchers_cap", "New-creator vouchers the pool holds")


async def refresh_voucher_gauges(context: Context) -> None:
    async with context.sessionmaker() as session:
        cap, issued = await vouchers.pool(session, context.settings)
    VOUCHERS_CAP.set(cap)
    VOUCHERS_ISSUED.set(issued)


class VoucherPool(BaseModel):
    cap: int
    issued: int
    remaining: int
    amount: Money


@router.get(
    "/v1/programs/new-creator-vouchers",
    response_model=VoucherPool,
    responses=error_responses(Unauthorized, Forbidden),
)
async def voucher_pool(_: Reader, session: ReadSessionDep, context: ContextDep) -> VoucherPool:
    """The $50 new-creator vouchers: how many the pool holds, how many are issued."""
    cap, issued = await vouchers.pool(session, context.settings)
    return VoucherPool(
        cap=cap, issued=issued, remaining=cap - issued, amount=context.settings.voucher_amount
    )


@router.post(
    "/v1/admin/creators/{creator_id}/promotion-slots/{month}",
    status_code=status.HTTP_201_CREATED,
    response_model=RewardOut,
    responses=error_responses(Unauthorized, Forbidden, Conflict),
)
async def use_promotion_slot(
    creator_id: str, month: MonthParam, key: Admin, session: SessionDep, context: ContextDep
) -> RewardOut:
    """Use the creator's priority promotion slot of a month: the current program month or a
    later one. One per certified creator per month; unused slots do not carry over."""
    now = datetime.now(UTC)
    if month < current_month(context.settings.timezone, now):
        raise Conflict(f"{month} is over: slots do not carry over")
    certified = await session.scalar(
        select(Application.certified_at).where(
            Application.creator_id == creator_id, Application.status == "approved"
        )
    )
    if certified is None:
        raise Conflict(f"creator {creator_id!r} is not certified")
    slot = rewards.NewReward(
        id=rewards.reward_id(rewards.PROMOTION_SLOT, creator_id, month),
        creator_id=creator_id,
        kind=rewards.PROMOTION_SLOT,
        issued_at=now,
        month=month,
        causes=[{"type": "admin_request", "by": key.name, "at": now.isoformat()}],
    )
    if not await rewards.issue(session, slot):
        raise Conflict(f"creator {creator_id!r} has used the promotion slot of {month}")
    return RewardOut.model_validate(await rewards.get(session, slot.id))
