"""POST /v1/events."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, status
from pydantic import BaseModel

from services.ingest import http_binding, service
from shared.errors import (
    BadRequest,
    Conflict,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    error_responses,
)
from shared.web import ContextDep, EventsWriter, SessionDep

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
        BadRequest, Unauthorized, Conflict, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
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
async def post_events(
    request: Request, key: EventsWriter, session: SessionDep, context: ContextDep
) -> Accepted:
    """Accept one CloudEvent or a batch. Durable once this answers 202."""
    settings = context.settings
    raw_events = await http_binding.read_submission(request, settings.max_body_bytes)
    events = service.validate(raw_events, key.name, settings.max_batch_events)
    outcomes = await service.accept(session, events)  # committed before the 202 goes out
    service.count_outcomes(outcomes)
    accepted = sum(o.status == "accepted" for o in outcomes)
    return Accepted(
        accepted=accepted,
        duplicates=len(outcomes) - accepted,
        events=[EventStatus(id=o.id, status=o.status) for o in outcomes],
    )
