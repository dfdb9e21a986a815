"""Accepting events: validate the whole submission, then store it atomically and idempotently."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bus import log as event_log
from shared.bus.log import EventKey
from shared.errors import Conflict, PayloadTooLarge, ValidationFailed
from shared.events import EventLimits, IncomingEvent, parse_envelope

EVENTS = Counter(
    "creator_activity_ingest_events_total",
    "Events received, by outcome",
    ["outcome"],  # accepted, duplicate, rejected
)


# A 422 lists at most this many problems: a hostile batch must not make a huge answer.
MAX_ERROR_DETAILS = 1000


class Outcome(NamedTuple):  # a tuple: one per event, cheaper to make than a dataclass
    id: str
    status: Literal["accepted", "duplicate"]


def validate(
    raw_events: list[Any],
    default_source: str,
    max_events: int,
    limits: EventLimits | None = None,
    *,
    storable: bool = False,
) -> list[IncomingEvent]:
    """Every event valid, or ValidationFailed listing the problems of the submission (the first
    MAX_ERROR_DETAILS of them). `storable`: no string holds a NUL or a lone surrogate (see
    `parse_envelope`)."""
    if len(raw_events) > max_events:
        raise PayloadTooLarge(f"a batch holds at most {max_events} events")
    if not raw_events:
        raise ValidationFailed(
            "the batch is empty", details=[{"index": 0, "loc": [], "msg": "empty batch"}]
        )
    limits = limits or EventLimits()
    now = datetime.now(UTC)
    events, details = [], []
    for index, raw in enumerate(raw_events):
        parsed = parse_envelope(raw, default_source, limits, now=now, storable=storable)
        if isinstance(parsed, list):
            details.extend({"index": index, "loc": e.loc, "msg": e.msg} for e in parsed)
        else:
            events.append(parsed)
    if details:
        EVENTS.labels("rejected").inc(len(raw_events))
        message = "invalid events; nothing of the batch was accepted"
        if len(details) > MAX_ERROR_DETAILS:
            message += f" ({len(details)} problems, the first {MAX_ERROR_DETAILS} listed)"
        raise ValidationFailed(message, details=details[:MAX_ERROR_DETAILS])
    return events


async def accept(session: AsyncSession, events: list[IncomingEvent]) -> list[Outcome]:
    """Store the new events. An event is identified by `source` + `id` (CloudEvents 1.0): a
    re-sent event with the same content is a duplicate; the same identity with other content
    fails the whole batch (the caller's transaction rolls back).
    """
    first_by_key: dict[EventKey, IncomingEvent] = {}
    conflicts = []
    for index, event in enumerate(events):
        first = first_by_key.setdefault(event.key, event)
        if first is not event and first.content_hash != event.content_hash:
            conflicts.append(_conflict(index, event, "same source and id twice in the batch"))
    if conflicts:
        EVENTS.labels("rejected").inc(len(events))
        raise Conflict("event ids reused with different content", details=conflicts)

    stored = await event_log.append(session, list(first_by_key.values()))
    earlier = [key for key in first_by_key if key not in stored]
    if earlier:
        known = await event_log.content_hashes(session, earlier)
        conflicts = [
            _conflict(index, e, "source and id already used with different content")
            for index, e in enumerate(events)
            if e.key in known and known[e.key] != e.content_hash
        ]
        if conflicts:
            EVENTS.labels("rejected").inc(len(events))
            raise Conflict("event ids reused with different content", details=conflicts)

    outcomes, seen = [], set()
    for event in events:
        fresh = event.key in stored and event.key not in seen
        seen.add(event.key)
        outcomes.append(Outcome(event.id, "accepted" if fresh else "duplicate"))
    return outcomes


def _conflict(index: int, event: IncomingEvent, msg: str) -> dict[str, Any]:
    return {"index": index, "id": event.id, "source": event.source, "msg": msg}


def count_outcomes(outcomes: list[Outcome]) -> None:
    for status in ("accepted", "duplicate"):
        EVENTS.labels(status).inc(sum(o.status == status for o in outcomes))
