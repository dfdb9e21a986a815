"""The event contract: CloudEvents envelopes as ingest accepts them, and as consumers get them.

Ingest validates with `parse_envelope`; the bus carries `BusEvent`; consumers read the typed
`data` models below. A rule about what an event *means* does not belong here.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

Identifier = Annotated[str, Field(min_length=1, max_length=128)]
PostText = Annotated[str, Field(max_length=100_000)]
# Counts fit a PostgreSQL BIGINT (and orjson's 64-bit integers) wherever a consumer keeps them.
MAX_COUNT = 2**63 - 1
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostCreated(_Data):
    creator_id: Identifier
    post_id: Identifier
    text: PostText
    image_count: Count
    kind: Literal["original", "repost", "quote"] = "original"
    reference_post_id: Identifier | None = None


class PostUpdated(_Data):
    creator_id: Identifier
    post_id: Identifier
    text: PostText
    image_count: Count


class PostDeleted(_Data):
    creator_id: Identifier
    post_id: Identifier


class PostModerated(_Data):
    creator_id: Identifier
    post_id: Identifier
    verdict: Literal["approved", "low_quality", "removed"]
    quality_score: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None


class InteractionCreated(_Data):
    creator_id: Identifier
    post_id: Identifier
    actor_id: Identifier
    kind: Literal["like", "comment", "share", "quote"]


class InteractionDeleted(InteractionCreated):
    pass


class FollowersChanged(_Data):
    creator_id: Identifier
    followers: Count


DATA_MODELS: dict[str, type[_Data]] = {
    "post.created": PostCreated,
    "post.updated": PostUpdated,
    "post.deleted": PostDeleted,
    "post.moderated": PostModerated,
    "interaction.created": InteractionCreated,
    "interaction.deleted": InteractionDeleted,
    "creator.followers_changed": FollowersChanged,
}
EVENT_TYPES = tuple(DATA_MODELS)  # what the platform may send to POST /v1/events


class CreatorCertified(_Data):
    """An operator approved the creator's application (appended by the badges service)."""

    creator_id: Identifier
    certified_at: AwareDatetime
    application_id: Identifier
    display_name: Annotated[str, Field(max_length=64)] | None = None


class SettledCreator(_Data):
    creator_id: Identifier
    active: bool  # ≥ the monthly minimum of original quality posts, certified before month end
    payout: Annotated[Decimal, Field(ge=0, decimal_places=2)]  # USDT, "0.00" when not eligible


class MonthSettled(_Data):
    """Scoring settled a month (appended by the scoring service). A month's settlement is one
    or more parts, each listing some of the month's certified creators with activity, so that
    no part is too large for the bus; every part carries the same month, pool and settled_at."""

    month: Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
    part: Annotated[int, Field(ge=1)]
    parts: Annotated[int, Field(ge=1)]
    pool: Annotated[Decimal, Field(ge=0, decimal_places=2)]
    settled_at: AwareDatetime
    creators: list[SettledCreator]


class FeaturedItem(_Data):
    rank: Annotated[int, Field(ge=1)]
    post_id: Identifier
    creator_id: Identifier


class WeekFrozen(_Data):
    """Scoring froze an ISO week's featured posts (appended by the scoring service, once per
    week); each featured post earns `bonus` (USDT) through the badges service."""

    week: Annotated[str, Field(pattern=r"^\d{4}-W(0[1-9]|[1-4]\d|5[0-3])$")]
    frozen_at: AwareDatetime
    bonus: Annotated[Decimal, Field(ge=0, decimal_places=2)]
    items: list[FeaturedItem]


# Events the services append to the log themselves; ingest refuses them from outside.
INTERNAL_DATA_MODELS: dict[str, type[_Data]] = {
    "creator.certified": CreatorCertified,
    "month.settled": MonthSettled,
    "week.frozen": WeekFrozen,
}
# The `creator_id` of events about the whole program (their partition key on Kafka).
PROGRAM_SUBJECT = "program"
INTERNAL_SOURCE = "creator-activity"  # the `source` of the events the services append

# CloudEvents context attributes we accept besides id/type/time/source/data.
OPTIONAL_ATTRIBUTES = ("specversion", "datacontenttype", "dataschema", "subject")
# Use these with `fullmatch` only: `$` also matches before a trailing newline, and `\d`, `\w`
# and `\s` match far more than ASCII without re.ASCII.
EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
JSON_CONTENT_TYPE = re.compile(
    r"application/(?:[\w.+-]+\+)?json(?:[ \t]*;[^\x00-\x1f\x7f]*)?", re.IGNORECASE | re.ASCII
)
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
# No string anywhere in an event may hold a NUL (PostgreSQL text and jsonb refuse it) or a lone
# surrogate (not Unicode: it cannot be encoded as UTF-8).
FORBIDDEN_CHARACTERS = re.compile(r"[\x00\ud800-\udfff]")


def storable(value: str) -> str:
    """A validator: PostgreSQL text and jsonb refuse NUL and lone surrogates; a 422 instead."""
    if FORBIDDEN_CHARACTERS.search(value):
        raise ValueError("must not contain a NUL character or a lone surrogate")
    return value


# A free-text field stripped of whitespace must keep a character: the schema says so with this
# pattern (Python's own whitespace, spelled out, so every regex engine reads it the same way).
NOT_BLANK = (
    "[^\t\n\u000b\u000c\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a"
    "\u2028\u2029\u202f\u205f\u3000]"
)


MAX_ERRORS_PER_EVENT = 50


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError("time must be an RFC 3339 timestamp with an offset")
    try:
        return _aware_datetime.validate_python(value)
    except ValidationError:
        raise ValueError("time is not a valid RFC 3339 date and time") from None


_aware_datetime = TypeAdapter(AwareDatetime)
RFC3339Time = Annotated[datetime, BeforeValidator(_rfc3339)]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    time: RFC3339Time
    source: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    specversion: Literal["1.0"] | None = None
    datacontenttype: str | None = None
    dataschema: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    subject: Annotated[str, Field(max_length=256)] | None = None
    data: dict[str, Any]

    @field_validator("time")
    @classmethod
    def _time_within_bounds(cls, value: datetime, info: ValidationInfo) -> datetime:
        context = info.context or {}
        limits: EventLimits = context.get("limits") or EventLimits()
        now: datetime = context.get("now") or datetime.now(UTC)
        if value < limits.time_min:
            raise ValueError(f"time must not be before {limits.time_min.isoformat()}")
        if value > now + limits.max_ahead:
            hours = limits.max_ahead / timedelta(hours=1)
            raise ValueError(f"time must not be more than {hours:g} h after the server's clock")
        return value


def _is_extension_value(value: Any) -> bool:
    """A string, a boolean, a 64-bit integer or a finite float: what JSON, the log and the bus
    all carry unchanged."""
    if isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if not isinstance(value, float) or not math.isfinite(value):
        return False
    # a JSON integer past 64 bits reaches us as a float (orjson): integral is still integer
    return not value.is_integer() or -(2**63) <= value < 2**63


@dataclass(frozen=True)
class EventLimits:
    """What one event may be, beyond its shape (settings `max_event_bytes`, `event_time_min`,
    `event_time_max_ahead_hours`)."""

    max_bytes: int = 512 * 1024
    time_min: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_ahead: timedelta = timedelta(hours=24)

    @classmethod
    def of(cls, settings: Any) -> EventLimits:
        """From a `shared.settings.Settings`."""
        return cls(
            max_bytes=settings.max_event_bytes,
            time_min=settings.event_time_min,
            max_ahead=timedelta(hours=settings.event_time_max_ahead_hours),
        )


class _computed_once:
    """`functools.cached_property` without the lock Python 3.11 takes on each first access
    (two per event on the ingest path): the value goes into the instance's `__dict__`, which
    then wins over this non-data descriptor."""

    def __init__(self, compute: Any) -> None:
        self.compute = compute
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


@dataclass(frozen=True)
class EnvelopeError:
    loc: list[str | int]
    msg: str


@dataclass(frozen=True)
class IncomingEvent:
    """A validated event, ready to store."""

    id: str
    type: str
    time: datetime
    source: str
    creator_id: str
    data: dict[str, Any]
    attributes: dict[str, Any]  # specversion, datacontenttype, dataschema, subject, extensions

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the event (CloudEvents 1.0): its source and its id."""
        return (self.source, self.id)

    @_computed_once
    def encoded_size(self) -> int:
        """Bytes of the event as compact JSON, as the bus carries it (`BusEvent.to_json`, with
        `seq` 0)."""
        # The same values as an array: the same bytes but for the object's member names, a
        # constant. No BusEvent built per event (CPU of the ingest path, docs/benchmarks.md).
        values = (self.id, self.type, self.time.isoformat(), self.source, self.creator_id)
        return _BUS_NAMES_BYTES + len(orjson.dumps((*values, self.data, self.attributes)))

    @_computed_once
    def content_hash(self) -> bytes:
        """Same content = same attributes and data after parsing: key order, whitespace and
        the offset a time is written in do not matter."""
        return hashlib.sha256(self._content_json()).digest()

    def _content_json(self) -> bytes:
        """What `content_hash` hashes."""
        return orjson.dumps(
            self._content(self.data, self.attributes),
            option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z,
        )

    def _content(self, data: dict[str, Any], attributes: dict[str, Any]) -> list[Any]:
        """The hashed document; `data` and `attributes` have their keys sorted by orjson or,
        in `_plainly_valid`, by the caller."""
        return [
            self.id,
            self.type,
            self.time.astimezone(UTC).isoformat(),
            self.source,
            data,
            attributes,
        ]


def _forbidden_characters(event: dict[str, Any]) -> list[EnvelopeError]:
    """Strings (names included, at any depth) holding a NUL or a lone surrogate; the first
    MAX_ERRORS_PER_EVENT of them.

    Depth first with one iterator per level: a JSON document may nest deeper than Python's
    recursion limit, and memory stays proportional to the depth, not to the width."""
    errors: list[EnvelopeError] = []
    stack: list[tuple[list[str | int], Iterator[tuple[str | int, Any]]]] = [
        ([], iter(event.items()))
    ]
    while stack:
        loc, entries = stack[-1]
        for key, value in entries:
            if isinstance(key, str) and FORBIDDEN_CHARACTERS.search(key):
                errors.append(EnvelopeError([*loc, key], "a name " + _forbidden_message(key)))
            if isinstance(value, str) and FORBIDDEN_CHARACTERS.search(value):
                errors.append(EnvelopeError([*loc, key], _forbidden_message(value)))
            if len(errors) >= MAX_ERRORS_PER_EVENT:
                return errors
            if isinstance(value, dict):
                stack.append(([*loc, key], iter(value.items())))
                break
            if isinstance(value, list):
                stack.append(([*loc, key], enumerate(value)))
                break
        else:
            stack.pop()
    return errors


def _forbidden_message(value: str) -> str:
    if "\x00" in value:
        return "must not contain a NUL character"
    return "must be valid Unicode (a lone surrogate is not)"


def parse_envelope(
    raw: Any,
    default_source: str,
    limits: EventLimits | None = None,
    *,
    now: datetime | None = None,
    storable: bool = False,
) -> IncomingEvent | list[EnvelopeError]:
    """Validate one structured-mode CloudEvent; return the event or every error found.

    `now` is the server's clock (the latest `time` accepted is relative to it). `storable`:
    the caller knows that no string in `raw` holds a NUL or a lone surrogate (JSON parsed by
    orjson from a body without a `\\u0000` escape), so they are not searched again."""
    limits = limits or EventLimits()
    now = now or datetime.now(UTC)
    if isinstance(raw, dict) and (storable or not _forbidden_characters(raw)):
        event = _plainly_valid(raw, default_source, limits, now)
        if event is not None:
            return event
    return _validate(raw, default_source, limits, now)


def _validate(
    raw: Any, default_source: str, limits: EventLimits, now: datetime
) -> IncomingEvent | list[EnvelopeError]:
    """parse_envelope with the pydantic models: every error, with its message."""
    if not isinstance(raw, dict):
        return [EnvelopeError([], "an event must be a JSON object")]
    context = {"limits": limits, "now": now}
    errors = _forbidden_characters(raw)
    try:
        envelope = _Envelope.model_validate(raw, context=context)
    except ValidationError as exc:
        errors.extend(EnvelopeError(list(e["loc"]), e["msg"]) for e in exc.errors())
        envelope = None

    extensions: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _Envelope.model_fields:
            continue
        if name == "data_base64":
            errors.append(EnvelopeError([name], "binary data is not accepted; send JSON data"))
        elif not EXTENSION_NAME.fullmatch(name):
            errors.append(EnvelopeError([name], "unknown attribute"))
        elif _is_extension_value(value):
            extensions[name] = value
        else:
            errors.append(
                EnvelopeError(
                    [name],
                    "an extension attribute must be a string, a boolean or a finite number "
                    "(integers within 64 bits)",
                )
            )

    content_type = raw.get("datacontenttype")
    if isinstance(content_type, str) and not JSON_CONTENT_TYPE.fullmatch(content_type):
        errors.append(EnvelopeError(["datacontenttype"], "data must be JSON"))

    data_model = DATA_MODELS.get(raw.get("type")) if isinstance(raw.get("type"), str) else None
    data = raw.get("data")
    parsed_data: _Data | None = None
    if data_model is not None and isinstance(data, dict):
        try:
            parsed_data = data_model.model_validate(data)
        except ValidationError as exc:
            errors.extend(EnvelopeError(["data", *e["loc"]], e["msg"]) for e in exc.errors())

    if errors or envelope is None or parsed_data is None:
        return errors[:MAX_ERRORS_PER_EVENT] or [EnvelopeError([], "invalid event")]

    attributes = {
        name: getattr(envelope, name)
        for name in OPTIONAL_ATTRIBUTES
        if getattr(envelope, name) is not None
    }
    attributes.update(extensions)
    data_dict = parsed_data.model_dump(exclude_none=True)
    event = IncomingEvent(
        id=envelope.id,
        type=envelope.type,
        time=envelope.time,
        source=envelope.source or default_source,
        creator_id=data_dict["creator_id"],
        data=data_dict,
        attributes=attributes,
    )
    if event.encoded_size > limits.max_bytes:
        return [
            EnvelopeError(
                [],
                f"the event is {event.encoded_size} bytes as JSON, over the limit of "
                f"{limits.max_bytes} bytes",
            )
        ]
    return event


# --- the common case without pydantic -----------------------------------------------------------
# Building two pydantic models per event was most of ingest's CPU (docs/benchmarks.md, "CPU per
# event of the ingest path"). `_plainly_valid` accepts what `_validate` accepts in the usual
# shapes, with plain checks, and gives up (None) on anything else: `_validate` then answers,
# with its messages. tests/test_events_fast_path.py holds the two together.


def _identifier(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 128


def _post_text(value: Any) -> bool:
    return type(value) is str and len(value) <= 100_000


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT  # not a bool (StrictInt)


def _one_of(*choices: str) -> Any:
    def check(value: Any) -> bool:
        return type(value) is str and value in choices

    return check


def _quality_score(value: Any) -> bool:
    return type(value) is float and 0 <= value <= 1  # NaN fails both; an int: pydantic's say


_REQUIRED = object()
# Per type, each field of its data model in declaration order (the order `model_dump` writes):
# (name, check, default: _REQUIRED, or the value when absent; a None value is left out).
_DATA_FIELDS: dict[str, tuple[tuple[str, Any, Any], ...]] = {
    "post.created": (
        ("creator_id", _identifier, _REQUIRED),
        ("post_id", _identifier, _REQUIRED),
        ("text", _post_text, _REQUIRED),
        ("image_count", _count, _REQUIRED),
        ("kind", _one_of("original", "repost", "quote"), "original"),
        ("reference_post_id", _identifier, None),
    ),
    "post.updated": (
        ("creator_id", _identifier, _REQUIRED),
        ("post_id", _identifier, _REQUIRED),
        ("text", _post_text, _REQUIRED),
        ("image_count", _count, _REQUIRED),
    ),
    "post.deleted": (
        ("creator_id", _identifier, _REQUIRED),
        ("post_id", _identifier, _REQUIRED),
    ),
    "post.moderated": (
        ("creator_id", _identifier, _REQUIRED),
        ("post_id", _identifier, _REQUIRED),
        ("verdict", _one_of("approved", "low_quality", "removed"), _REQUIRED),
        ("quality_score", _quality_score, None),
    ),
    "interaction.created": (
        ("creator_id", _identifier, _REQUIRED),
        ("post_id", _identifier, _REQUIRED),
        ("actor_id", _identifier, _REQUIRED),
        ("kind", _one_of("like", "comment", "share", "quote"), _REQUIRED),
    ),
    "creator.followers_changed": (
        ("creator_id", _identifier, _REQUIRED),
        ("followers", _count, _REQUIRED),
    ),
}
_DATA_FIELDS["interaction.deleted"] = _DATA_FIELDS["interaction.created"]
# The same, by name: the fast path's data comes out with its keys sorted, as the content hash
# takes them (a dict's order is not part of an event: the log stores JSONB).
_DATA_FIELDS_BY_NAME = {kind: tuple(sorted(fields)) for kind, fields in _DATA_FIELDS.items()}
_ENVELOPE_NAMES = frozenset(_Envelope.model_fields)
# RFC3339 in its usual spelling, each field within its range: `datetime.fromisoformat` reads
# these as pydantic does (tests/test_events_fast_path.py), several times faster, and its
# `timezone` makes the comparisons, `astimezone` and asyncpg's encoding cheaper than pydantic's
# `TzInfo`. Anything else (`t`, `z`, a space, more digits, a leap second) takes `_validate`.
_PLAIN_TIME = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


def _plain_data(event_type: Any, data: Any) -> dict[str, Any] | None:
    """`model_dump(exclude_none=True)` of the type's data model, keys sorted, when the data is
    plainly valid; None otherwise (or for a type ingest does not take)."""
    fields = _DATA_FIELDS_BY_NAME.get(event_type) if type(event_type) is str else None
    if fields is None or type(data) is not dict:
        return None
    dumped: dict[str, Any] = {}
    found = 0
    for name, check, default in fields:
        if name in data:
            found += 1
            value = data[name]
            if value is None and default is None:
                continue
            if not check(value):
                return None
        elif default is _REQUIRED:
            return None
        elif default is None:
            continue
        else:
            value = default
        dumped[name] = value
    return dumped if found == len(data) else None  # else a name the model forbids


def _sorted(flat: dict[str, Any]) -> dict[str, Any]:
    return {name: flat[name] for name in sorted(flat)}


def _optional_string(value: Any, shortest: int, longest: int) -> bool:
    return value is None or (type(value) is str and shortest <= len(value) <= longest)


def _plainly_valid(
    raw: dict[str, Any], default_source: str, limits: EventLimits, now: datetime
) -> IncomingEvent | None:
    """The event `_validate` would return, when `raw` is plainly valid and its strings are
    known storable; None when anything is unusual."""
    event_id = raw.get("id")
    time = raw.get("time")
    source = raw.get("source")
    if not (
        type(event_id) is str
        and 0 < len(event_id) <= 256
        and type(time) is str
        and _PLAIN_TIME.fullmatch(time)
        and _optional_string(source, 1, 256)
    ):
        return None
    data = _plain_data(raw.get("type"), raw.get("data"))
    if data is None:
        return None
    try:
        when = datetime.fromisoformat(time)  # `_rfc3339`'s instant, with a faster tzinfo
    except ValueError:  # a day the month does not have
        return None
    if when < limits.time_min or when > now + limits.max_ahead:
        return None

    attributes: dict[str, Any] = {}  # filled in the order of their names, as hashed
    content_type = raw.get("datacontenttype")
    if content_type is not None:
        if type(content_type) is not str or not JSON_CONTENT_TYPE.fullmatch(content_type):
            return None
        attributes["datacontenttype"] = content_type
    dataschema = raw.get("dataschema")
    subject = raw.get("subject")
    if not (_optional_string(dataschema, 1, 2048) and _optional_string(subject, 0, 256)):
        return None
    if dataschema is not None:
        attributes["dataschema"] = dataschema
    specversion = raw.get("specversion")
    if specversion is not None:
        if specversion != "1.0" or type(specversion) is not str:
            return None
        attributes["specversion"] = specversion
    if subject is not None:
        attributes["subject"] = subject
    named = len(attributes)
    for name, value in raw.items():
        if name in _ENVELOPE_NAMES:
            continue
        if (
            name == "data_base64"
            or not EXTENSION_NAME.fullmatch(name)
            or not _is_extension_value(value)
        ):
            return None
        attributes[name] = value
    if len(attributes) > named:  # extensions (rare): sorted in among the others
        attributes = _sorted(attributes)

    event = IncomingEvent(
        id=event_id,
        type=raw["type"],
        time=when,
        source=source or default_source,
        creator_id=data["creator_id"],
        data=data,
        attributes=attributes,
    )
    # Its hash and its size from one serialization. The bus's JSON holds the same values plus
    # `creator_id` and the member names; its time, in the event's own offset, is as long as
    # the hash's in UTC (`±HH:MM` both: RFC3339 offsets are whole minutes); sorted keys are as
    # long as unsorted ones. The keys are in order by construction (above) rather than sorted by
    # orjson's OPT_SORT_KEYS, which turns each non-ASCII string to UTF-8 the slow way (5 times
    # the cost of the dump): the objects are flat and their names ASCII, so the bytes are the
    # same.
    content = orjson.dumps(event._content(data, attributes))
    size = _BUS_NAMES_BYTES + len(content) + 1 + len(orjson.dumps(event.creator_id))
    if size > limits.max_bytes:
        return None
    event.__dict__["encoded_size"] = size  # what the _computed_once properties would compute
    event.__dict__["content_hash"] = hashlib.sha256(content).digest()
    return event


# --- the envelope as JSON Schema (the OpenAPI document of POST /v1/events) ----------------------
# What `parse_envelope` checks, said in JSON Schema 2020-12 so that clients and fuzzers can build
# valid events; tests/test_openapi.py holds the two together in both directions. What JSON Schema
# cannot say is in `description` and `x-` keywords: the time bounds (relative to the server's
# clock), the size of one event, and that no string may hold a NUL (the OpenAPI document adds a
# pattern for that to every string, shared/openapi.py).

# JSON_CONTENT_TYPE, spelled out for ECMA-262 regular expressions (no flags: case by hand).
JSON_CONTENT_TYPE_SCHEMA_PATTERN = (
    r"^[Aa][Pp][Pp][Ll][Ii][Cc][Aa][Tt][Ii][Oo][Nn]/(?:[A-Za-z0-9_.+-]+\+)?[Jj][Ss][Oo][Nn]"
    r"(?:[ \t]*;[^\x00-\x1f\x7f]*)?$"
)
EXTENSION_NAME_SCHEMA_PATTERN = f"^{EXTENSION_NAME.pattern}$"
_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def event_json_schemas(
    limits: EventLimits, max_batch_events: int, ref: str = "#/components/schemas/"
) -> dict[str, dict[str, Any]]:
    """Named JSON Schemas: `Event` (one of the event types, by `type`), `EventBatch`, and for
    each type its envelope (`PostCreatedEvent`, …) and its data (`PostCreatedData`, …)."""
    hours = limits.max_ahead / timedelta(hours=1)
    time_schema = {
        "type": "string",
        "format": "date-time",
        "pattern": f"^{RFC3339.pattern}$",
        "description": "RFC 3339 with an offset; between "
        f"{limits.time_min.isoformat()} and {hours:g} h after the server's clock, both "
        "inclusive (settings `event_time_min`, `event_time_max_ahead_hours`)",
        "x-earliest": limits.time_min.isoformat(),
        "x-latest-after-now": f"PT{hours:g}H",
        "examples": ["2026-11-03T10:00:00+08:00"],
    }
    envelope_properties: dict[str, Any] = {
        "id": {"type": "string", "minLength": 1, "maxLength": 256},
        "time": time_schema,
        "source": _nullable(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "description": "default: the name of the API key; `source` + `id` identify an "
                "event (CloudEvents 1.0)",
            }
        ),
        "specversion": _nullable({"type": "string", "const": "1.0"}),
        "datacontenttype": _nullable(
            {
                "type": "string",
                "pattern": JSON_CONTENT_TYPE_SCHEMA_PATTERN,
                "description": "data is JSON, always",
            }
        ),
        "dataschema": _nullable({"type": "string", "minLength": 1, "maxLength": 2048}),
        "subject": _nullable({"type": "string", "maxLength": 256}),
    }
    extension_value = {
        "description": "an extension attribute (CloudEvents): a string, a boolean, an integer "
        "within 64 bits (signed) or a finite non-integral number",
        "anyOf": [
            {"type": "string"},
            {"type": "boolean"},
            _INT64,
            {"type": "number", "not": {"type": "integer"}},
        ],
    }
    schemas: dict[str, dict[str, Any]] = {}
    mapping = {}
    for event_type, model in DATA_MODELS.items():
        name = model.__name__
        data = model.model_json_schema(ref_template=ref + "{model}")
        data.pop("title", None)
        for field_schema in data["properties"].values():
            field_schema.pop("title", None)
        schemas[f"{name}Data"] = data
        schemas[f"{name}Event"] = {
            "type": "object",
            "description": f"A `{event_type}` event (CloudEvents 1.0, structured mode); at "
            f"most {limits.max_bytes} bytes as compact JSON (setting `max_event_bytes`).",
            "required": ["id", "type", "time", "data"],
            "properties": {
                **envelope_properties,
                "type": {"type": "string", "const": event_type},
                "data": {"$ref": f"{ref}{name}Data"},
            },
            "propertyNames": {"pattern": EXTENSION_NAME_SCHEMA_PATTERN},
            "additionalProperties": extension_value,
            "x-max-bytes": limits.max_bytes,
        }
        mapping[event_type] = f"{ref}{name}Event"
    schemas["Event"] = {
        "description": "One event: its `type` says the shape of its `data`.",
        "oneOf": [{"$ref": target} for target in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    schemas["EventBatch"] = {
        "type": "array",
        "description": f"1 to {max_batch_events} events (setting `max_batch_events`; more is a "
        "413, none a 422), accepted all or none.",
        "items": {"$ref": f"{ref}Event"},
        "minItems": 1,
        "maxItems": max_batch_events,
    }
    return schemas


# Version of the bus message layout (`v`). Readers accept any version that carries the fields
# they need; bump it when the layout changes, and only ever add fields.
BUS_SCHEMA_VERSION = 1
_BUS_FIELDS: dict[str, type | tuple[type, ...]] = {
    "seq": int,
    "id": str,
    "type": str,
    "time": str,
    "source": str,
    "creator_id": str,
    "data": dict,
}


@dataclass(frozen=True)
class BusEvent:
    """An accepted event as the bus delivers it to a consumer group.

    `seq` is its position in the event log: global, increasing, assigned at acceptance.
    """

    seq: int
    id: str
    type: str
    time: datetime
    source: str
    creator_id: str
    data: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "v": BUS_SCHEMA_VERSION,
                "seq": self.seq,
                "id": self.id,
                "type": self.type,
                "time": self.time.isoformat(),
                "source": self.source,
                "creator_id": self.creator_id,
                "data": self.data,
                "attributes": self.attributes,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> BusEvent:
        """Read a bus message of this schema version or another: fields this release does not
        know are ignored (a newer producer during a rolling deploy); a message without what
        this release needs raises, and the consumer parks it."""
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("a bus message must be a JSON object")
        wrong = [name for name, kind in _BUS_FIELDS.items() if not isinstance(doc.get(name), kind)]
        if wrong:
            raise ValueError(f"bus message without a valid {', '.join(wrong)}")
        time = datetime.fromisoformat(doc["time"])
        if time.tzinfo is None:
            raise ValueError("bus message time has no offset")
        return cls(
            seq=doc["seq"],
            id=doc["id"],
            type=doc["type"],
            time=time,
            source=doc["source"],
            creator_id=doc["creator_id"],
            data=doc["data"],
            attributes=doc.get("attributes") or {},
        )

    def typed_data(self) -> _Data:
        return (DATA_MODELS | INTERNAL_DATA_MODELS)[self.type].model_validate(self.data)


def _bus_names_bytes() -> int:
    """What `BusEvent.to_json` (seq 0) adds to its values written as a JSON array."""
    time = datetime(2000, 1, 1, tzinfo=UTC)
    as_object = BusEvent(seq=0, id="", type="", time=time, source="", creator_id="", data={})
    values = ("", "", time.isoformat(), "", "", {}, {})
    return len(as_object.to_json()) - len(orjson.dumps(values))


_BUS_NAMES_BYTES = _bus_names_bytes()
