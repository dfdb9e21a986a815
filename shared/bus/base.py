"""The bus interface: what services need from the embedded event log and from Kafka alike."""

from __future__ import annotations

import asyncio
from typing import Protocol

from shared.bus.processor import Handler


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
        """Deliver every accepted event to `handler` once per group, in batches, until stopped."""

    async def relay(self) -> None:
        """Move accepted events from the log to the broker, until stopped (no-op if embedded)."""

    async def lag(self, groups: tuple[str, ...]) -> dict[str, int]:
        """Accepted events not yet fully processed, per group; 0 = all caught up."""

    async def check(self) -> None:
        """Raise if the bus is unreachable."""
