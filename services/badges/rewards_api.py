"""Rewards: the list, the cursor feed."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.badges import rewards
from services.badges.schemas import RewardOut
from shared.errors import Forbidden, Unauthorized, ValidationFailed, error_responses
from shared.program_time import MONTH
from shared.web import Reader, ReadSessionDep

router = APIRouter(tags=["badges"])

RewardKind = Literal[rewards.KINDS]  # type: ignore[valid-type]
# The feed's cursor: opaque to clients (today the last feed position served, in decimal).
Cursor = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9]{1,18}$",
        description="`next` of the previous page; omitted: from the first reward",
    ),
]


class RewardPage(BaseModel):
    items: list[RewardOut]
    limit: int
    offset: int
    total: int


class RewardFeed(BaseModel):
    items: list[RewardOut]
    next: str  # poll again with `after=next`; unchanged while nothing new is issued


@router.get(
    "/v1/rewards",
    response_model=RewardPage,
    responses=error_responses(Unauthorized, Forbidden, ValidationFailed),
)
async def list_rewards(
    _: Reader,
    session: ReadSessionDep,
    creator_id: Annotated[str | None, Query(max_length=128)] = None,
    kind: RewardKind | None = None,
    status: Annotated[str | None, Query(max_length=16, examples=["issued"])] = None,
    month: Annotated[str | None, Query(pattern=MONTH.pattern, examples=["2026-11"])] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> RewardPage:
    """Rewards issued, in the order issued, filtered by creator, kind, status and month."""
    page, total = await rewards.find(
        session,
        creator_id=creator_id,
        kind=kind,
        status=status,
        month=month,
        limit=limit,
        offset=offset,
    )
    return RewardPage(
        items=[RewardOut.model_validate(r) for r in page], limit=limit, offset=offset, total=total
    )


@router.get(
    "/v1/rewards/feed",
    response_model=RewardFeed,
    responses=error_responses(Unauthorized, Forbidden, ValidationFailed),
)
async def reward_feed(
    _: Reader,
    session: ReadSessionDep,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RewardFeed:
    """Every reward once, in the order issued, for a wallet or merch system that does not
    read Kafka. Poll again with `after=<next>`: only rewards issued since come back (none:
    empty `items`, the same `next`). Rewards commit in feed order, so a reward committed late
    is never behind a cursor already handed out. Deliveries to a client may repeat (a response
    lost on the way): dedupe by `id`."""
    position = int(after) if after is not None else 0
    page = await rewards.issued_after(session, position, limit)
    return RewardFeed(
        items=[RewardOut.model_validate(r) for r in page],
        next=str(page[-1].feed_seq if page else position),
    )
