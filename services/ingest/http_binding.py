"""CloudEvents over HTTP: structured, batch and binary mode, turned into raw event objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from fastapi import Request

from shared.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from shared.events import JSON_CONTENT_TYPE
from shared.web import is_depth_error, nesting_exceeds, read_limited, too_deep

JSON = "application/json"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@dataclass(frozen=True)
class Submission:
    events: list[Any]  # the raw, unvalidated event objects: one, or a batch
    # No string in them holds a NUL or a lone surrogate (`parse_envelope` need not search):
    # orjson refuses lone surrogates and raw control characters, so a NUL can only come from a
    # `\u0000` escape (absent here) or a binary-mode header.
    storable: bool


async def read_submission(request: Request, max_bytes: int) -> Submission:
    """The events of a request: one, or a batch."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    binary_mode = "ce-id" in request.headers and media_type not in (STRUCTURED, BATCH)
    if binary_mode:
        # SDKs leave Content-Type out when the event has no datacontenttype: data is JSON here.
        if media_type and not JSON_CONTENT_TYPE.fullmatch(media_type):
            raise UnsupportedMediaType("binary-mode data must be JSON")
    elif media_type not in (JSON, STRUCTURED, BATCH):
        raise UnsupportedMediaType(f"content type must be one of {JSON}, {STRUCTURED}, {BATCH}")
    body = await read_limited(request.stream(), request.headers.get("content-length"), max_bytes)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if is_depth_error(exc):
            raise too_deep() from None
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    # Parsed in C first (the body is capped): a level-by-level walk, no recursion anywhere.
    if nesting_exceeds(document):
        raise too_deep()

    if binary_mode:
        return Submission([_from_binary_mode(request, document)], storable=False)
    storable = b"\\u0000" not in body
    if media_type == BATCH or (media_type == JSON and isinstance(document, list)):
        if not isinstance(document, list):
            raise BadRequest("a batch must be a JSON array of events")
        return Submission(document, storable)
    if not isinstance(document, dict):
        raise BadRequest("an event must be a JSON object")
    return Submission([document], storable)


def _from_binary_mode(request: Request, data: Any) -> dict[str, Any]:
    """Binary mode: the attributes are `ce-*` headers (percent-encoded UTF-8), the body is `data`.

    Content-Type is not kept as datacontenttype: data is JSON either way, and a structured
    retry of the same event then has the same content. The attributes are then validated like
    any structured event's (a NUL, `%00`, is refused there)."""
    event: dict[str, Any] = {}
    problems = []
    for name, value in request.headers.items():
        if not name.startswith("ce-") or len(name) <= 3:
            continue
        attribute = name[3:]
        decoded = _header_value(value)
        if attribute in event:
            problems.append({"index": 0, "loc": [attribute], "msg": f"{name} sent twice"})
        elif decoded is None:
            problems.append(
                {"index": 0, "loc": [attribute], "msg": f"{name} is not percent-encoded UTF-8"}
            )
        else:
            event[attribute] = decoded
    if problems:
        raise ValidationFailed("invalid binary-mode attributes", details=problems)
    event["data"] = data
    return event


def _header_value(value: str) -> str | None:
    """A `ce-*` header value, percent-decoded as UTF-8 (None when it is not UTF-8).

    The server hands header bytes over as Latin-1; back to bytes, so that UTF-8 sent raw
    (not percent-encoded) still decodes to what the client meant."""
    try:
        return unquote_to_bytes(value.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
