"""Applying a batch of events for one consumer group: one transaction, retries, dead letters.

Both buses use it. The bus passes `record_progress`, which writes its own progress marker in
the same transaction as the handler's effects (embedded: the group's log position; Kafka: the
processed event ids) and returns the events still to apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Counter, Histogram
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import log as event_log
from shared.events import BusEvent
from shared.settings import Settings

logger = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Sequence[BusEvent]], Awaitable[None]]
RecordProgress = Callable[[AsyncSession, Sequence[BusEvent]], Awaitable[Sequence[BusEvent]]]

BATCH_SECONDS = Histogram(
    "creator_activity_consumer_batch_seconds", "Time to apply one batch", ["group"]
)
EVENTS_PROCESSED = Counter(
    "creator_activity_consumer_events_total", "Events applied by a consumer group", ["group"]
)
EVENTS_PARKED = Counter(
    "creator_activity_consumer_dead_letters_total", "Events parked as dead letters", ["group"]
)
RETRIES = Counter(
    "creator_activity_consumer_retries_total", "Batches retried after a database error", ["group"]
)

# SQLSTATE classes worth retrying: connection failures, serialisation failures and deadlocks,
# operator intervention (e.g. the server restarting), insufficient resources.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "57", "53")


def is_transient(exc: BaseException) -> bool:
    """A database or network failure that may pass: retry the batch, skip nothing."""
    if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return bool(sqlstate) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    return False


class BatchProcessor:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        group: str,
        handler: Handler,
        settings: Settings,
        stopping: asyncio.Event,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.group = group
        self.handler = handler
        self.settings = settings
        self.stopping = stopping

    async def apply(self, events: Sequence[BusEvent], record_progress: RecordProgress) -> bool:
        """Apply the batch; True once committed, False if stopped before it could be.

        Transient database errors are retried with backoff, for as long as it takes.
        Any other failure falls back to one savepoint per event, and an event that keeps
        failing is parked in `dead_letters`; the others go on.
        """
        delay = self.settings.consumer_retry_initial_ms / 1000
        isolate = False
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                async with self.sessionmaker() as session, session.begin():
                    todo = await record_progress(session, events)
                    if isolate:
                        await self._apply_one_by_one(session, todo)
                    else:
                        await self.handler(session, todo)
                BATCH_SECONDS.labels(self.group).observe(time.perf_counter() - started)
                EVENTS_PROCESSED.labels(self.group).inc(len(todo))
                return True
            except Exception as exc:
                if is_transient(exc):
                    RETRIES.labels(self.group).inc()
                    logger.warning(
                        "database error, batch will be retried",
                        extra={"group": self.group, "retry_in_s": delay, "error": repr(exc)},
                    )
                    await sleep_unless_stopped(self.stopping, delay)
                    delay = min(delay * 2, self.settings.consumer_retry_max_ms / 1000)
                elif not isolate:
                    logger.warning(
                        "batch failed, applying its events one by one",
                        extra={"group": self.group, "error": repr(exc)},
                    )
                    isolate = True
                else:
                    raise
        return False

    async def _apply_one_by_one(self, session: AsyncSession, events: Sequence[BusEvent]) -> None:
        for event in events:
            attempts, error = 0, None
            while attempts < self.settings.consumer_poison_attempts:
                attempts += 1
                try:
                    async with session.begin_nested():
                        await self.handler(session, [event])
                    error = None
                    break
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    error = exc
            if error is not None:
                EVENTS_PARKED.labels(self.group).inc()
                logger.error(
                    "event parked as dead letter",
                    extra={
                        "group": self.group,
                        "event_id": event.id,
                        "seq": event.seq,
                        "error": repr(error),
                    },
                )
                await event_log.park(session, self.group, event, attempts, repr(error))


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        pass
