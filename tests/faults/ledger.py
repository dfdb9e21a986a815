"""What the clients were told: the history a fault scenario is checked against.

An event is in the ledger once ingest answered 202 for it (accepted or duplicate): the system
promised to keep it. Certifications and settlements are in it once their requests succeeded.
Anything the clients saw that the contract forbids (a 500, a 503 without Retry-After, an
unexpected status) is a violation, kept with the request that got it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

EventKey = tuple[str, str]  # (source, id)


@dataclass(frozen=True)
class Certification:
    creator_id: str
    form: dict[str, Any]
    certified_at: str  # RFC 3339


@dataclass(frozen=True)
class Settlement:
    month: str
    answers: tuple[dict[str, Any], ...]  # every 200 answer to the concurrent settle requests
    acked_before: frozenset[EventKey]  # events acknowledged before the first request was sent


@dataclass
class Ledger:
    events: dict[EventKey, dict[str, Any]] = field(default_factory=dict)  # as sent
    acked_at: dict[EventKey, float] = field(default_factory=dict)  # monotonic, first 202
    certifications: dict[str, Certification] = field(default_factory=dict)
    settlements: dict[str, Settlement] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    unavailable: int = 0  # 503 answers (each with Retry-After)
    connection_errors: int = 0  # requests that got no answer (process down, reset)
    duplicates: int = 0  # events answered `duplicate` (a retry whose first try was stored)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def acknowledge(self, events: list[dict[str, Any]], answer: dict[str, Any]) -> None:
        statuses = {e["id"]: e["status"] for e in answer["events"]}
        now = time.monotonic()
        for event in events:
            key = (event["source"], event["id"])
            if statuses.get(event["id"]) not in ("accepted", "duplicate"):
                self.violations.append(f"202 without a status for {key}: {answer}")
                continue
            self.duplicates += statuses[event["id"]] == "duplicate"
            self.events.setdefault(key, event)
            self.acked_at.setdefault(key, now)
        await self._notify()

    async def certified(self, certification: Certification) -> None:
        self.certifications[certification.creator_id] = certification
        await self._notify()

    async def settled(self, settlement: Settlement) -> None:
        self.settlements[settlement.month] = settlement
        await self._notify()

    async def answered_unavailable(self) -> None:
        self.unavailable += 1
        await self._notify()

    def violation(self, text: str) -> None:
        self.violations.append(text)

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def wait_for_events(self, count: int, within: float = 120) -> None:
        """Until at least `count` events are acknowledged (faults are injected by progress,
        not by the clock)."""
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: len(self.events) >= count), within
            )

    async def wait_for_unavailable(self, count: int, within: float = 120) -> None:
        """Until the clients have been answered 503 `count` times in all."""
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: self.unavailable >= count), within
            )
