"""The operator page's HTML forms: reading a posted form, and turning what an operator typed
into what the services take.

Forms are `application/x-www-form-urlencoded` and small; they are parsed here with the standard
library rather than with a multipart parser the page does not need.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from fastapi import Request
from pydantic import ValidationError

MAX_FORM_BYTES = 16 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


class FormError(ValueError):
    """What the operator typed cannot be used; the message says why, in words for them."""


async def read_form(request: Request) -> dict[str, str]:
    """The posted fields (the last value of a repeated name). A body that is not a small
    urlencoded form gives no fields, so its CSRF check fails."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}


def local_time(value: str, zone: ZoneInfo) -> datetime | None:
    """A `datetime-local` input (`YYYY-MM-DDTHH:MM`, no offset) read in the program time zone;
    None when left empty."""
    value = value.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FormError(f"{value!r} is not a date and time (YYYY-MM-DDTHH:MM)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


def validation_message(exc: ValidationError) -> str:
    """A pydantic error in one line, without pydantic's links."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}".lstrip(": ")
        for error in exc.errors()
    )
