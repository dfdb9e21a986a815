"""Accepting events: validate the whole submission, then store it atomically and idempotently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bus import log as event_log
from shared.errors import Conflict, PayloadTooLarge, ValidationFailed
from shared.events import IncomingEvent, parse_envelope

EVENTS = Counter(
    "creator_activity_ingest_events_total",
    "Events received, by outcome",
    ["outcome"],  # accepted, duplicate, rejected
)


@dataclass(frozen=True)
class Outcome:
    id: str
    status: Literal["accepted", "duplicate"]


def validate(raw_events: list[Any], default_source: str, max_events: int) -> list[IncomingEvent]:
    """Every event valid, or ValidationFailed listing every problem of the submission."""
    if len(raw_events) > max_events:
        raise PayloadTooLarge(f"a batch holds at most {max_events} events")
    if not raw_events:
        raise ValidationFailed(
            "the batch is empty", details=[{"index": 0, "loc": [], "msg": "empty batch"}]
        )
    events, details = [], []
    for index, raw in enumerate(raw_events):
        parsed = parse_envelope(raw, default_source)
        if isinstance(parsed, list):
            details.extend({"index": index, "loc": e.loc, "msg": e.msg} for e in parsed)
        else:
            events.append(parsed)
    if details:
        EVENTS.labels("rejected").inc(len(raw_events))
        raise ValidationFailed("invalid events; nothing of the batch was accepted", details=details)
    return events


async def accept(session: AsyncSession, events: list[IncomingEvent]) -> list[Outcome]:
    """Store the new events. A re-sent event (same id, same content) is a duplicate; an id
    already used with other content fails the whole batch (the caller's transaction rolls back).
    """
    first_by_id: dict[str, IncomingEvent] = {}
    conflicts = []
    for index, event in enumerate(events):
        first = first_by_id.setdefault(event.id, event)
        if first is not event and first.content_hash != event.content_hash:
            conflicts.append({"index": index, "id": event.id, "msg": "same id twice in the batch"})
    if conflicts:
        EVENTS.labels("rejected").inc(len(events))
        raise Conflict("event ids reused with different content", details=conflicts)

    stored = await event_log.append(session, list(first_by_id.values()))
    earlier = [event_id for event_id in first_by_id if event_id not in stored]
    if earlier:
        known = await event_log.content_hashes(session, earlier)
        conflicts = [
            {"index": index, "id": e.id, "msg": "id already used with different content"}
            for index, e in enumerate(events)
            if e.id in known and known[e.id] != e.content_hash
        ]
        if conflicts:
            EVENTS.labels("rejected").inc(len(events))
            raise Conflict("event ids reused with different content", details=conflicts)

    outcomes, seen = [], set()
    for event in events:
        fresh = event.id in stored and event.id not in seen
        seen.add(event.id)
        outcomes.append(Outcome(event.id, "accepted" if fresh else "duplicate"))
    return outcomes


def count_outcomes(outcomes: list[Outcome]) -> None:
    for status in ("accepted", "duplicate"):
        EVENTS.labels(status).inc(sum(o.status == status for o in outcomes))
