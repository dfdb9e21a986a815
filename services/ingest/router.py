"""POST /v1/events."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, status
from pydantic import BaseModel

from services.ingest import http_binding, service
from shared.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
    error_responses,
)
from shared.events import EventLimits
from shared.web import ContextDep, EventsWriter, transaction

router = APIRouter(tags=["ingest"])


class EventStatus(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"]


class Accepted(BaseModel):
    accepted: int
    duplicates: int
    events: list[EventStatus]


@router.post(
    "/v1/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=error_responses(
        BadRequest,
        Unauthorized,
        Forbidden,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        RateLimited,
        Unavailable,
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media: {
                    "schema": {"type": "object" if media == http_binding.STRUCTURED else "array"}
                }
                for media in (http_binding.JSON, http_binding.STRUCTURED, http_binding.BATCH)
            },
        }
    },
)
async def post_events(request: Request, key: EventsWriter, context: ContextDep) -> Accepted:
    """Accept one CloudEvent or a batch. Durable once this answers 202."""
    settings = context.settings
    # The body is read and validated before any pooled connection is taken: a client that
    # trickles its body holds no connection (the key was checked on a short session of its own).
    raw_events = await http_binding.read_submission(request, settings.max_body_bytes)
    events = service.validate(
        raw_events, key.name, settings.max_batch_events, EventLimits.of(settings)
    )
    async with transaction(context) as session:  # committed before the 202 goes out
        outcomes = await service.accept(session, events)
    service.count_outcomes(outcomes)
    accepted = sum(o.status == "accepted" for o in outcomes)
    return Accepted(
        accepted=accepted,
        duplicates=len(outcomes) - accepted,
        events=[EventStatus(id=o.id, status=o.status) for o in outcomes],
    )
