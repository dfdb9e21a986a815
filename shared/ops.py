"""Operations endpoints every service serves: health, readiness, metrics, consumer lag."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from shared.bus import dead_letters
from shared.bus.processor import HALTED
from shared.errors import Forbidden, Unauthorized, Unavailable, error_responses
from shared.web import Admin, Context, ContextDep, SessionDep

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])

LAG = Gauge("creator_activity_consumer_lag", "Accepted events not yet processed", ["group"])
DEAD_LETTERS = Gauge(
    "creator_activity_dead_letters", "Events parked in dead_letters now, by group", ["group"]
)


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


async def _database_answers(context: Context) -> None:
    async with context.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _bus_answers(context: Context) -> None:
    await context.bus.check()


# What /readyz checks, by the name it reports when down.
READINESS_CHECKS: dict[str, Callable[[Context], Awaitable[None]]] = {
    "database": _database_answers,
    "bus": _bus_answers,
}


@router.get("/readyz", responses=error_responses(Unavailable))
async def readyz(context: ContextDep) -> dict[str, str]:
    """The database and the bus are reachable. A 503 names what is down; why goes to the log."""
    down = []
    for name, check in READINESS_CHECKS.items():
        try:
            await asyncio.wait_for(check(context), context.settings.readyz_timeout_s)
        except Exception as exc:
            logger.warning("not ready", extra={"component": name, "error": repr(exc)[:500]})
            down.append(name)
    # A halted group of this process: every event fails alike, nothing is applied.
    down.extend(f"consumer group {group} (halted)" for group in sorted(HALTED))
    if down:
        raise Unavailable(
            f"not ready: {', '.join(down)} unavailable",
            details=[{"component": name, "status": "down"} for name in down],
            retry_after=context.settings.unavailable_retry_after_s,
        )
    return {"status": "ready", "bus": context.bus.kind}


class LagCache:
    """The consumer lag, computed at most once every `lag_cache_seconds` (the embedded bus
    counts the backlog to get it): frequent scrapes cost the database nothing more."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = asyncio.Lock()
        self._lags: dict[str, int] | None = None
        self._at = 0.0

    async def get(self, context: Context) -> dict[str, int]:
        async with self._lock:  # concurrent scrapes share one computation
            max_age = context.settings.lag_cache_seconds
            if self._lags is None or self.clock() - self._at >= max_age:
                self._lags = await context.bus.lag(context.groups)
                self._at = self.clock()
            return self._lags


def _lag_cache(request: Request) -> LagCache:
    state = request.app.state
    if getattr(state, "lag_cache", None) is None:
        state.lag_cache = LagCache()
    return state.lag_cache


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, context: ContextDep) -> Response:
    """Prometheus text format. The lag gauge is at most `lag_cache_seconds` old."""
    try:
        for group, lag in (await _lag_cache(request).get(context)).items():
            LAG.labels(group).set(lag)
    except Exception as exc:  # metrics must still be served when the bus is away
        logger.warning("cannot compute consumer lag", extra={"error": repr(exc)})
    # Read at each scrape: what is parked now (a replay removes it), and the services' gauges
    # (runtime.py, `Service.metrics`).
    refreshers = [_refresh_dead_letters, *getattr(request.app.state, "metrics_refreshers", ())]
    for refresh in refreshers:
        try:
            await refresh(context)
        except Exception as exc:  # the database is away: the other metrics are still served
            logger.warning(
                "cannot refresh a metric", extra={"metric": refresh.__name__, "error": repr(exc)}
            )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _refresh_dead_letters(context: Context) -> None:
    async with context.sessionmaker() as session:
        parked = await dead_letters.counts(session)
    DEAD_LETTERS.clear()  # a group whose letters were all replayed is back to 0 (no await here)
    for group in {*context.groups, *parked}:
        DEAD_LETTERS.labels(group).set(parked.get(group, 0))


@router.get(
    "/v1/admin/consumers",
    response_model=Consumers,
    responses=error_responses(Unauthorized, Forbidden),
)
async def consumers(context: ContextDep, _: Admin, session: SessionDep) -> Consumers:
    """Lag per consumer group: 0 for every group = every accepted event fully processed."""
    lags = await context.bus.lag(context.groups)
    parked = await dead_letters.counts(session)
    return Consumers(
        bus=context.bus.kind,
        groups=[
            GroupLag(name=g, lag=lags[g], dead_letters=parked.get(g, 0)) for g in context.groups
        ],
    )
