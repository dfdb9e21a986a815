"""POST /v1/events."""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel

from services.ingest import http_binding, service
from shared.errors import (
    BadRequest,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
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


_EVENT = {"$ref": "#/components/schemas/Event"}  # shared/events.py event_json_schemas
_BATCH = {"$ref": "#/components/schemas/EventBatch"}
REQUEST_BODY = {
    "required": True,
    "description": "One CloudEvent (structured mode) or a batch, as JSON of at most "
    "`max_body_bytes` (5 MiB). `application/json` takes either. Binary mode is accepted "
    "too: the attributes in `ce-*` headers (percent-encoded UTF-8: `ce-id`, `ce-type`, "
    "`ce-time`, `ce-source`, `ce-specversion`, `ce-subject`, extensions), the body is `data` "
    "(JSON, with or without a JSON Content-Type).",
    "content": {
        http_binding.JSON: {"schema": {"oneOf": [_EVENT, _BATCH]}},
        http_binding.STRUCTURED: {"schema": _EVENT},
        http_binding.BATCH: {"schema": _BATCH},
    },
}


@router.post(
    "/v1/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=error_responses(BadRequest, Conflict, PayloadTooLarge, UnsupportedMediaType),
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def post_events(request: Request, key: EventsWriter, context: ContextDep) -> Response:
    """Accept one CloudEvent or a batch, all or nothing. Durable once this answers 202; a
    re-sent event (same `source` and `id`, same content) is a `duplicate`. 422: an invalid
    event (`details`: `{index, loc, msg}` each); 409: a `source` + `id` already used with other
    content; 413: the body over `max_body_bytes` or a batch over `max_batch_events`."""
    settings = context.settings
    # The body is read and validated before any pooled connection is taken: a client that
    # trickles its body holds no connection (the key was checked on a short session of its own).
    submission = await http_binding.read_submission(request, settings.max_body_bytes)
    events = service.validate(
        submission.events,
        key.name,
        settings.max_batch_events,
        EventLimits.of(settings),
        storable=submission.storable,
    )
    async with transaction(context) as session:  # committed before the 202 goes out
        outcomes = await service.accept(session, events)
    service.count_outcomes(outcomes)
    accepted = sum(o.status == "accepted" for o in outcomes)
    # `Accepted` as JSON, written by orjson without a model per event (the same bytes as
    # pydantic's; the decorator's response_model documents it).
    body = {
        "accepted": accepted,
        "duplicates": len(outcomes) - accepted,
        "events": [{"id": o.id, "status": o.status} for o in outcomes],
    }
    return Response(orjson.dumps(body), status.HTTP_202_ACCEPTED, media_type=http_binding.JSON)
