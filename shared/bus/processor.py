"""Applying a batch of events for one consumer group: one transaction, retries, dead letters.

Both buses use it. The bus passes `record_progress` (see shared/bus/positions.py), which
writes the group's progress in the same transaction as the handler's effects and returns the
events still to apply.

Three kinds of failure, three answers:
- transient (the database is away, a deadlock, a statement timeout, a full disk): retry the
  batch with backoff, for as long as it takes;
- systemic (code ahead of its schema, a permission error, a handler that fails on every
  event): the group halts: nothing is parked, the alarm is raised (log, metric, /readyz), and
  the batch is retried later;
- an event that fails alone, while the events around it apply: poison, parked in
  `dead_letters` so the group goes on. A statement timeout is transient for a batch (applied
  again one event at a time) but poison for an event that times out alone on every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import dead_letters, positions
from shared.bus.base import Handler
from shared.events import BusEvent
from shared.settings import Settings

logger = logging.getLogger(__name__)

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
HALTED_GAUGE = Gauge(
    "creator_activity_consumer_halted",
    "1 while a consumer group is halted by a failure that is not one event's",
    ["group"],
)

# Groups of this process that are halted, and why: read by /readyz.
HALTED: dict[str, str] = {}

# SQLSTATE classes worth retrying: connection failures, serialisation failures and deadlocks,
# operator intervention (e.g. the server restarting), insufficient resources.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "57", "53", "55P03")
# query_canceled: the statement timeout (or a cancel request).
STATEMENT_TIMEOUT = "57014"
# The schema or the grants do not match the code (undefined table or column, insufficient
# privilege, ...), the server refuses us, or a read-only server: every event would fail alike.
_SYSTEMIC_SQLSTATE_PREFIXES = ("42", "28", "3D", "3F", "25006")


class GroupHalted(Exception):
    """A failure of the group, not of one event: roll back, park nothing, retry later."""


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_transient(exc: BaseException) -> bool:
    """A database or network failure that may pass: retry the batch, skip nothing."""
    if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return True
        sqlstate = _sqlstate(exc)
        return bool(sqlstate) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    return False


def is_systemic(exc: BaseException) -> bool:
    sqlstate = _sqlstate(exc)
    return bool(sqlstate) and sqlstate.startswith(_SYSTEMIC_SQLSTATE_PREFIXES)


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
        self.failures_in_a_row = 0  # events that failed alone, with no success between them

    async def apply(self, events: Sequence[BusEvent], record_progress: RecordProgress) -> bool:
        """Apply the batch; True once committed, False if stopped before it could be.

        Transient database errors are retried with backoff, for as long as it takes.
        Any other failure falls back to one savepoint per event, and an event that keeps
        failing while others apply is parked in `dead_letters`; the others go on. A failure
        that is the group's, not one event's, halts the group until it passes.
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
                if todo and not isolate:
                    self.failures_in_a_row = 0
                self._resume()
                return True
            except Exception as exc:
                if isinstance(exc, GroupHalted) or is_systemic(exc):
                    halt_for = self.settings.consumer_halt_retry_ms / 1000
                    self._halt(exc, halt_for)
                    await sleep_unless_stopped(self.stopping, halt_for)
                    isolate = False
                elif is_transient(exc):
                    if _sqlstate(exc) == STATEMENT_TIMEOUT and not isolate:
                        # A statement over the whole batch took too long (one whose cost grows
                        # with the batch: a flood of identical posts). The same batch would
                        # time out forever; its events one by one make progress, and one that
                        # times out alone, every time, is poison (below).
                        logger.warning(
                            "a statement of the batch timed out, applying its events one by one",
                            extra={"group": self.group, "error": repr(exc)},
                        )
                        isolate = True
                        continue
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

    async def catch_up(self, *, up_to: int) -> int:
        """Apply, straight from the log, every event up to `up_to` that the group has not
        applied (a replay: idempotent, whatever else delivers the same events meanwhile)."""
        applied = 0
        while not self.stopping.is_set():
            async with self.sessionmaker() as session:
                events = await positions.unapplied(
                    session, self.group, self.settings.batch_size(self.group), up_to=up_to
                )
            if not events or not await self.apply(events, self.take_any_order):
                break
            applied += len(events)
        return applied

    # The two ways a group records its progress (shared/bus/positions.py).
    async def take_in_order(
        self, session: AsyncSession, events: Sequence[BusEvent]
    ) -> Sequence[BusEvent]:
        return await positions.take_in_order(session, self.group, events)

    async def take_any_order(
        self, session: AsyncSession, events: Sequence[BusEvent]
    ) -> Sequence[BusEvent]:
        return await positions.take_any_order(session, self.group, events)

    def _halt(self, exc: BaseException, retry_in_s: float) -> None:
        reason = str(exc) if isinstance(exc, GroupHalted) else repr(exc)
        if self.group not in HALTED:
            logger.error(
                "consumer group halted: every event fails; nothing is parked, retrying",
                extra={"group": self.group, "error": reason, "retry_in_s": retry_in_s},
            )
        HALTED[self.group] = reason
        HALTED_GAUGE.labels(self.group).set(1)

    def _resume(self) -> None:
        if HALTED.pop(self.group, None) is not None:
            logger.warning("consumer group resumed", extra={"group": self.group})
            HALTED_GAUGE.labels(self.group).set(0)

    async def _apply_one_by_one(self, session: AsyncSession, events: Sequence[BusEvent]) -> None:
        parked = []
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
                    timed_out = _sqlstate(exc) == STATEMENT_TIMEOUT
                    if is_systemic(exc) or (is_transient(exc) and not timed_out):
                        raise
                    error = exc
            if error is None:
                self.failures_in_a_row = 0
                continue
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.settings.consumer_halt_after_failures or (
                len(events) > 1 and len(parked) + 1 == len(events)
            ):
                raise GroupHalted(f"{self.failures_in_a_row} events in a row failed: {error!r}")
            parked.append((event, attempts, error))
        for event, attempts, error in parked:
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
            await dead_letters.park(session, self.group, event, attempts, repr(error))


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        pass
