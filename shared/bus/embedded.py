"""The embedded bus: consumer groups read the event log table directly, in order, up to its
stable end (shared/bus/log.py: `LogEnd`).

A group's floor is written in the same transaction as its effects, so every event is applied
exactly once per group, whatever crashes or restarts happen.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import log as event_log
from shared.bus import positions
from shared.bus.base import Handler
from shared.bus.processor import BatchProcessor, sleep_unless_stopped
from shared.bus.relay import Outbox
from shared.settings import Settings

logger = logging.getLogger(__name__)


class EmbeddedBus:
    kind = "embedded"

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        self.stopping.clear()

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        return None

    async def consume(self, group: str, handler: Handler) -> None:
        processor = BatchProcessor(self.sessionmaker, group, handler, self.settings, self.stopping)
        poll = self.settings.consumer_poll_interval_ms / 1000
        end = event_log.LogEnd(group)
        logger.info("consumer started", extra={"group": group, "bus": self.kind})
        while not self.stopping.is_set():
            try:
                async with self.sessionmaker() as session:
                    up_to = await end.advance(session)
                    events = await event_log.read_after(
                        session,
                        positions.floor_of(group),
                        self.settings.batch_size(group),
                        up_to=up_to,
                    )
            except Exception as exc:  # the database is away: wait and try again
                logger.warning(
                    "cannot read the event log", extra={"group": group, "error": repr(exc)}
                )
                events = []
            if not events:
                await sleep_unless_stopped(self.stopping, poll)
                continue
            # Locked for the transaction: another process of the same group waits, then
            # skips what this one applied.
            await processor.apply(events, processor.take_in_order)
        logger.info("consumer stopped", extra={"group": group, "bus": self.kind})

    async def relay(self) -> None:
        return None

    async def relay_outbox(self, outbox: Outbox) -> None:
        return None  # no topic: the outbox's readers poll its table (e.g. the rewards feed)

    async def lag(self, groups: tuple[str, ...]) -> dict[str, int]:
        async with self.sessionmaker() as session:
            return {group: await positions.lag(session, group) for group in groups}

    async def check(self) -> None:
        return None
