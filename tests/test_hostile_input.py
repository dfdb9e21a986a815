"""Hostile input (issue 5): whatever a client sends, ingest answers 202 or a 4xx with the error
shape, never a 5xx, and stores nothing it refused.

Envelopes are generated with hostile strings (NUL, lone surrogates, line and paragraph
separators, bidi marks, over-long ids), numbers (beyond 64 bits, infinite, NaN), nesting (wide and
deeper than any parser allows), times (year 1 to 9999, every offset, malformed) and wrong types.
The same generator drives a pure property of `parse_envelope` and, through the HTTP API, a
property of the whole ingest path (hypothesis runs in a worker thread and awaits each request on
the test's event loop, so failures shrink like any other property).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote_from_bytes

import asyncpg
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.events import FORBIDDEN_CHARACTERS, EnvelopeError, IncomingEvent, parse_envelope
from tests.system import ADMIN, System

LIMITS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(hours=24)

# --- strategies ---------------------------------------------------------------------------------

HOSTILE_CHARACTERS = [
    "\x00",
    "\ud800",  # lone surrogates: not Unicode, not encodable as UTF-8
    "\udfff",
    "\u2028",  # line and paragraph separators: new lines to JavaScript
    "\u2029",
    "\n",
    "\r",
    "\t",
    "\x7f",
    "\x1b",
    "\ufeff",
    "\u202e",  # right-to-left override
    "\ufffd",
    "\U0001f600",
    "%00",
    "\\u0000",
    '"',
    "\\",
    "$",
]
hostile_strings = st.one_of(
    st.text(max_size=12),
    st.lists(st.one_of(st.sampled_from(HOSTILE_CHARACTERS), st.text(max_size=3)), max_size=6).map(
        "".join
    ),
    st.sampled_from(["", " ", "x" * 300, "abc\n", "ABC", "a" * 21]),
)
hostile_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_strings)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(hostile_strings, children, max_size=3)
    ),
    max_leaves=8,
)


class Deep:
    """A list nested `depth` times around a string (encoded by hand: json.dumps would recurse)."""

    def __init__(self, depth: int, leaf: str) -> None:
        self.depth, self.leaf = depth, leaf

    def value(self) -> Any:
        value: Any = self.leaf
        for _ in range(self.depth):
            value = [value]
        return value


deep_values = st.builds(Deep, st.integers(1, 1100), st.sampled_from(["x", "\x00"]))
values = st.one_of(json_values, deep_values)

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def _format_time(instant: datetime, style: int) -> str:
    text = instant.isoformat()
    if style == 1:
        return text.replace("+00:00", "Z")
    if style == 2:
        return text.replace("T", " ")
    if style == 3:
        return text.replace("T", "t")
    return text


any_instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)
plausible_instants = st.datetimes(
    min_value=datetime(1999, 12, 31),
    max_value=datetime.now() + timedelta(days=2),  # naive bounds, aware values
    timezones=offsets,
)
times = st.one_of(
    st.builds(_format_time, st.one_of(plausible_instants, any_instants), st.integers(0, 3)),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00-23:59",
            "9999-12-31T23:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "2000-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999999999Z",
            "2026-11-03T10:00:00Z\n",
            "2026-11-03T10:00:00+99:99",
            "2026-11-03T10:00:00.1234567890123456789Z",
            "2026-13-03T10:00:00Z",
            "2026-11-03T10:00:60Z",
            "2026-11-03",
            "٢٠٢٦-١١-٠٣T10:00:00Z",
        ]
    ),
    hostile_strings,
    scalars,
)

VALID_DATA = {
    "post.created": {
        "creator_id": "c-1",
        "post_id": "p-1",
        "text": "今天聊聊回购市场的流动性压力",
        "image_count": 0,
        "kind": "original",
    },
    "post.updated": {"creator_id": "c-1", "post_id": "p-1", "text": "edited", "image_count": 1},
    "post.deleted": {"creator_id": "c-1", "post_id": "p-1"},
    "post.moderated": {
        "creator_id": "c-1",
        "post_id": "p-1",
        "verdict": "approved",
        "quality_score": 0.5,
    },
    "interaction.created": {
        "creator_id": "c-1",
        "post_id": "p-1",
        "actor_id": "a-1",
        "kind": "like",
    },
    "interaction.deleted": {
        "creator_id": "c-1",
        "post_id": "p-1",
        "actor_id": "a-1",
        "kind": "like",
    },
    "creator.followers_changed": {"creator_id": "c-1", "followers": 10},
}
ATTRIBUTES = ["id", "type", "time", "source", "specversion", "datacontenttype", "dataschema"]
ATTRIBUTES += ["subject", "data"]
extension_names = st.one_of(
    st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True), hostile_strings, st.sampled_from(ATTRIBUTES)
)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event, then up to four hostile changes."""
    event_type = draw(st.sampled_from(sorted(VALID_DATA)))
    event: dict[str, Any] = {
        "id": draw(
            st.text(
                st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
                min_size=1,
                max_size=12,
            )
        ),
        "type": event_type,
        "time": _format_time(draw(plausible_instants), draw(st.integers(0, 3))),
        "source": "square",
        "specversion": "1.0",
        "data": dict(VALID_DATA[event_type]),
    }
    for _ in range(draw(st.integers(0, 4))):
        change = draw(st.sampled_from(["attribute", "data", "extension", "time", "delete"]))
        if change == "attribute":
            event[draw(st.sampled_from(ATTRIBUTES))] = draw(st.one_of(hostile_strings, values))
        elif change == "data" and isinstance(event.get("data"), dict):
            known = sorted(event["data"]) or ["x"]
            field = draw(st.one_of(st.sampled_from(known), hostile_strings))
            event["data"][field] = draw(st.one_of(hostile_strings, values))
        elif change == "extension":
            event[draw(extension_names)] = draw(st.one_of(hostile_strings, values))
        elif change == "time":
            event["time"] = draw(times)
        elif change == "delete" and event:
            del event[draw(st.sampled_from(sorted(event)))]
    return event


submissions = st.one_of(envelopes(), st.lists(envelopes(), min_size=1, max_size=3))


def materialize(value: Any) -> Any:
    """The JSON value itself (Deep expanded), for the pure property."""
    if isinstance(value, Deep):
        return value.value()
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


def encode(document: Any, ascii_only: bool) -> bytes:
    """JSON as a client would send it; NaN and surrogates included (the server must cope)."""
    deep: list[Deep] = []

    def placeholder(value: Any) -> Any:
        if isinstance(value, Deep):
            deep.append(value)
            return f"@@deep{len(deep) - 1}@@"
        raise TypeError(value)

    try:
        text = json.dumps(document, ensure_ascii=ascii_only, default=placeholder)
        body = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: only escaped JSON can carry it
        deep.clear()
        text = json.dumps(document, ensure_ascii=True, default=placeholder)
        body = text.encode()
    for index, value in enumerate(deep):
        nested = "[" * value.depth + json.dumps(value.leaf) + "]" * value.depth
        body = body.replace(f'"@@deep{index}@@"'.encode(), nested.encode(), 1)
    return body


# --- the pure property --------------------------------------------------------------------------


def _strings_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings_of(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings_of(v)]
    return []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelope=envelopes())
def test_parse_envelope_answers_every_envelope_with_a_sound_event_or_errors(envelope):
    now = datetime.now(UTC)
    parsed = parse_envelope(materialize(envelope), "key-name", now=now)
    if isinstance(parsed, list):
        assert parsed and all(isinstance(e, EnvelopeError) and e.msg for e in parsed)
        assert all(isinstance(e.loc, list) for e in parsed)
        return
    assert isinstance(parsed, IncomingEvent)
    # everything the log and the bus will need of it works, and holds nothing forbidden
    assert parsed.content_hash and parsed.encoded_size <= 512 * 1024
    document = [parsed.id, parsed.type, parsed.source, parsed.data, parsed.attributes]
    assert not any(FORBIDDEN_CHARACTERS.search(s) for s in _strings_of(document))
    assert orjson.loads(orjson.dumps(document)) == document
    assert LIMITS_MIN <= parsed.time <= now + MAX_AHEAD
    assert parsed.time.astimezone(UTC)  # no OverflowError


# --- the same through the HTTP API --------------------------------------------------------------


class Checker:
    """Posts a submission and checks the answer and the `events` table."""

    def __init__(self, system: System, connection: asyncpg.Connection) -> None:
        self.system, self.connection = system, connection
        self.statuses: dict[int, int] = {}

    async def post(self, body: bytes, headers: dict[str, str]) -> None:
        before = await self.connection.fetchval("SELECT coalesce(max(seq), 0) FROM events")
        response = await self.system.client.post(
            "/v1/events", content=body, headers={**ADMIN, **headers}
        )
        status = response.status_code
        self.statuses[status] = self.statuses.get(status, 0) + 1
        assert status < 500, response.text
        stored = await self.connection.fetch(
            "SELECT event_id, time, data::text, attributes::text FROM events WHERE seq > $1",
            before,
        )
        if status == 202:
            assert len(stored) == response.json()["accepted"]
            now = datetime.now(UTC)
            for row in stored:
                assert LIMITS_MIN <= row["time"] <= now + MAX_AHEAD, row
                stored_strings = _strings_of(
                    [orjson.loads(row["data"]), orjson.loads(row["attributes"])]
                )
                assert not any(FORBIDDEN_CHARACTERS.search(s) for s in stored_strings), row
            return
        assert 400 <= status < 500
        assert stored == [], f"refused with {status} but stored: {stored}"
        error = response.json()
        assert isinstance(error["error"], str) and isinstance(error["message"], str), error
        if status == 422 and error["error"] == "validation_failed":
            assert error["details"], error
            for detail in error["details"]:
                assert set(detail) == {"index", "loc", "msg"}, detail
                assert isinstance(detail["index"], int) and isinstance(detail["loc"], list)
                assert isinstance(detail["msg"], str) and detail["msg"]


def run_in_thread(
    loop: asyncio.AbstractEventLoop,
) -> Callable[[Coroutine[Any, Any, None]], None]:
    def run(coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    return run


async def checker_for(system: System) -> tuple[Checker, asyncpg.Connection]:
    connection = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    return Checker(system, connection), connection


CONTENT_TYPES = [
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
]


async def test_hostile_submissions_are_accepted_soundly_or_refused_with_the_error_shape(system):
    checker, connection = await checker_for(system)
    run = run_in_thread(asyncio.get_running_loop())

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        submission=submissions,
        content_type=st.sampled_from(CONTENT_TYPES),
        ascii_only=st.booleans(),
    )
    def property_(submission, content_type, ascii_only):
        body = encode(submission, ascii_only)
        run(checker.post(body, {"Content-Type": content_type}))

    try:
        await asyncio.to_thread(property_)
    finally:
        await connection.close()
    # the generator reaches every outcome: accepted, malformed JSON, invalid events
    assert {202, 400, 422} <= set(checker.statuses), checker.statuses


percent_encoded = st.one_of(
    st.binary(max_size=12).map(lambda raw: quote_from_bytes(raw, safe="")),
    hostile_strings.map(lambda s: quote_from_bytes(s.encode("utf-8", "surrogatepass"), safe="")),
    st.sampled_from(["%00", "a%00b", "%FF", "%ED%A0%80", "%C0%80", "%", "%zz", "abc%0A"]),
)


async def test_hostile_binary_mode_headers_are_refused_with_the_error_shape(system):
    checker, connection = await checker_for(system)
    run = run_in_thread(asyncio.get_running_loop())
    binary_ids = itertools.count()

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        attribute=st.sampled_from(
            ["id", "source", "subject", "time", "type", "traceparent", "dataschema", "specversion"]
        ),
        value=percent_encoded,
        base_time=plausible_instants,
    )
    def property_(attribute, value, base_time):
        headers = {
            "ce-id": f"bin-{next(binary_ids)}",
            "ce-type": "post.deleted",
            "ce-source": "square",
            "ce-specversion": "1.0",
            "ce-time": base_time.isoformat(),
            "Content-Type": "application/json",
        }
        headers[f"ce-{attribute}"] = value
        body = orjson.dumps({"creator_id": "c-1", "post_id": "p-1"})
        run(checker.post(body, headers))

    try:
        await asyncio.to_thread(property_)
    finally:
        await connection.close()
    assert 422 in checker.statuses, checker.statuses
