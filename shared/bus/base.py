"""The bus interface: what services need from the embedded event log and from Kafka alike."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import BusEvent

if TYPE_CHECKING:
    from shared.bus.relay import Outbox

# A consumer group's rules: apply these events inside the session's transaction (flush only).
Handler = Callable[[AsyncSession, Sequence[BusEvent]], Awaitable[None]]


class Bus(Protocol):
    kind: str  # "embedded" or "kafka"
    stopping: asyncio.Event  # set by stop(); every loop watches it

    async def start(self) -> None:
        """Connect; create what is missing (Kafka topics)."""

    def stop(self) -> None:
        """Ask every loop to finish its current batch and return."""

    async def close(self) -> None:
        """Disconnect, once the loops have returned."""

    async def consume(self, group: str, handler: Handler) -> None:
        """Deliver every accepted event to `handler` in batches, until stopped. Delivery may
        repeat (Kafka: at least once); each event is applied once per group all the same,
        because the group's progress commits with the handler's effects."""

    async def relay(self) -> None:
        """Move accepted events from the log to the broker, until stopped (no-op if embedded)."""

    async def relay_outbox(self, outbox: Outbox) -> None:
        """Publish an outbox (shared/bus/relay.py) to its topic, at least once and in order,
        until stopped. Embedded: returns at once (there is no topic; readers poll the table)."""

    async def lag(self, groups: tuple[str, ...]) -> dict[str, int]:
        """Accepted events not yet applied, per group; 0 = all caught up."""

    async def check(self) -> None:
        """Raise if the bus is unreachable."""
