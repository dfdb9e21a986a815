"""Operations endpoints every service serves: health, readiness, metrics, consumer lag."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from shared.bus import log as event_log
from shared.errors import AppError, Forbidden, Unauthorized, error_responses
from shared.web import Admin, ContextDep, SessionDep

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])

LAG = Gauge("creator_activity_consumer_lag", "Accepted events not yet processed", ["group"])


class Unavailable(AppError):
    status_code, error = 503, "unavailable"


class GroupLag(BaseModel):
    name: str
    lag: int
    dead_letters: int


class Consumers(BaseModel):
    bus: str
    groups: list[GroupLag]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(Unavailable))
async def readyz(context: ContextDep) -> dict[str, str]:
    """The database and the bus are reachable."""
    try:
        async with context.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise Unavailable(f"database unreachable: {exc!r}") from exc
    try:
        await context.bus.check()
    except Exception as exc:
        raise Unavailable(f"bus unreachable: {exc!r}") from exc
    return {"status": "ready", "bus": context.bus.kind}


@router.get("/metrics", response_class=Response)
async def metrics(context: ContextDep) -> Response:
    """Prometheus text format."""
    try:
        for group, lag in (await context.bus.lag(context.groups)).items():
            LAG.labels(group).set(lag)
    except Exception as exc:  # metrics must still be served when the bus is away
        logger.warning("cannot compute consumer lag", extra={"error": repr(exc)})
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/admin/consumers",
    response_model=Consumers,
    responses=error_responses(Unauthorized, Forbidden),
)
async def consumers(context: ContextDep, session: SessionDep, _: Admin) -> Consumers:
    """Lag per consumer group: 0 for every group = every accepted event fully processed."""
    lags = await context.bus.lag(context.groups)
    parked = await event_log.dead_letter_counts(session)
    return Consumers(
        bus=context.bus.kind,
        groups=[
            GroupLag(name=g, lag=lags[g], dead_letters=parked.get(g, 0)) for g in context.groups
        ],
    )
