"""The event contract: CloudEvents envelopes as ingest accepts them, and as consumers get them.

Ingest validates with `parse_envelope`; the bus carries `BusEvent`; consumers read the typed
`data` models below. A rule about what an event *means* does not belong here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
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
)

Identifier = Annotated[str, Field(min_length=1, max_length=128)]
PostText = Annotated[str, Field(max_length=100_000)]
Count = Annotated[StrictInt, Field(ge=0)]


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
EVENT_TYPES = tuple(DATA_MODELS)

# CloudEvents context attributes we accept besides id/type/time/source/data.
OPTIONAL_ATTRIBUTES = ("specversion", "datacontenttype", "dataschema", "subject")
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
JSON_CONTENT_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json(?:\s*;.*)?$", re.IGNORECASE)


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str) or not RFC3339.match(value):
        raise ValueError("time must be an RFC 3339 timestamp with an offset")
    return _aware_datetime.validate_python(value)


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


_extension_value = TypeAdapter(str | bool | int | float)


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

    @cached_property
    def content_hash(self) -> bytes:
        """Same content = same attributes and data after parsing: key order, whitespace and
        the offset a time is written in do not matter."""
        return hashlib.sha256(
            orjson.dumps(
                [
                    self.id,
                    self.type,
                    self.time.astimezone(UTC).isoformat(),
                    self.source,
                    self.data,
                    self.attributes,
                ],
                option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z,
            )
        ).digest()


def parse_envelope(raw: Any, default_source: str) -> IncomingEvent | list[EnvelopeError]:
    """Validate one structured-mode CloudEvent; return the event or every error found."""
    if not isinstance(raw, dict):
        return [EnvelopeError([], "an event must be a JSON object")]
    errors: list[EnvelopeError] = []
    try:
        envelope = _Envelope.model_validate(raw)
    except ValidationError as exc:
        errors.extend(EnvelopeError(list(e["loc"]), e["msg"]) for e in exc.errors())
        envelope = None

    extensions: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _Envelope.model_fields:
            continue
        if name == "data_base64":
            errors.append(EnvelopeError([name], "binary data is not accepted; send JSON data"))
        elif not EXTENSION_NAME.match(name):
            errors.append(EnvelopeError([name], "unknown attribute"))
        else:
            try:
                extensions[name] = _extension_value.validate_python(value, strict=True)
            except ValidationError:
                errors.append(
                    EnvelopeError(
                        [name], "an extension attribute must be a string, number or boolean"
                    )
                )

    content_type = raw.get("datacontenttype")
    if isinstance(content_type, str) and not JSON_CONTENT_TYPE.match(content_type):
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
        return errors or [EnvelopeError([], "invalid event")]

    attributes = {
        name: getattr(envelope, name)
        for name in OPTIONAL_ATTRIBUTES
        if getattr(envelope, name) is not None
    }
    attributes.update(extensions)
    data_dict = parsed_data.model_dump(exclude_none=True)
    return IncomingEvent(
        id=envelope.id,
        type=envelope.type,
        time=envelope.time,
        source=envelope.source or default_source,
        creator_id=data_dict["creator_id"],
        data=data_dict,
        attributes=attributes,
    )


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
        doc = orjson.loads(raw)
        doc["time"] = datetime.fromisoformat(doc["time"])
        return cls(**doc)

    def typed_data(self) -> _Data:
        return DATA_MODELS[self.type].model_validate(self.data)
