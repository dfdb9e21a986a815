"""The background refresher of the scoring process: keeps the precomputed standings of the
provisional months and the recommended follows fresh after batches, so that reads rarely pay
for a refresh, and takes each provisional month's rank snapshot of the day.

Every `standings_refresh_seconds` (at least `MIN_PAUSE_S`) it refreshes each stale key, waiting
for no lock (a reader refreshing the same key is doing the work already). A pass that took long
(a month of many creators while events stream in) is followed by a pause `PAUSE_PER_PASS_TIME`
times as long: it shares the process (and its event loop) with the scoring consumer, and
refreshing every 2 s halved the consumer's rate in the benchmark's end-to-end run.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import freshness, leaderboard, recommendations, standings_table
from services.scoring.models import Settlement, StandingsRefresh, StandingsVersion
from shared.bus.processor import sleep_unless_stopped
from shared.settings import Settings
from shared.web import Context

logger = logging.getLogger(__name__)

MIN_PAUSE_S = 0.5
PAUSE_PER_PASS_TIME = 4  # the refresher takes at most a fifth of the process's time


async def provisional_months(session: AsyncSession) -> list[str]:
    """Months with a version or a table, not settled."""
    keys = set(await session.scalars(select(StandingsVersion.key)))
    keys |= set(await session.scalars(select(StandingsRefresh.key)))
    settled = set(await session.scalars(select(Settlement.month)))
    return sorted(k for k in keys if k != recommendations.KEY and k not in settled)


async def refresh_once(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """One pass: every stale provisional month, the recommendations, today's snapshots; the
    number of keys refreshed."""
    now = datetime.now(UTC)
    refreshed = 0
    async with sessionmaker() as session:
        stale = []
        for month in await provisional_months(session):
            fingerprint = await standings_table.fingerprint_of(session, settings, month)
            state = await freshness.state(session, month)
            if state.due(fingerprint, now, 0):
                stale.append(month)
            elif state.exists:  # a quiet month still gets the day's snapshot
                await leaderboard.snapshot_from_standings(
                    session, month, leaderboard.program_day(now, settings), now
                )
        await session.commit()
    for month in stale:
        refreshed += await standings_table.refresh(sessionmaker, settings, month, wait=False)
    async with sessionmaker() as session:
        state = await freshness.state(session, recommendations.KEY)
        due = state.due(
            await recommendations.fingerprint(session, settings, now),
            now,
            0,
            settings.recommendations_max_age_seconds,
        )
    if due:
        refreshed += await recommendations.refresh(sessionmaker, settings, wait=False, now=now)
    return refreshed


async def run(context: Context) -> None:
    """Until the bus stops: a pass, then a pause."""
    settings = context.settings
    stopping = context.bus.stopping
    pause = max(settings.standings_refresh_seconds, MIN_PAUSE_S)
    while not stopping.is_set():
        started = time.monotonic()
        try:
            await refresh_once(context.sessionmaker, settings)
        except Exception:
            logger.exception("standings refresh failed; next pass as usual")
        took = time.monotonic() - started
        await sleep_unless_stopped(stopping, max(pause, PAUSE_PER_PASS_TIME * took))
