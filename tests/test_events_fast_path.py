"""Ingest's fast path (`_plainly_valid`, no pydantic model per event) answers exactly what the
full validation (`_validate`, the pydantic models) answers: the same event, or it gives up and
the full validation answers with its messages. And the 202 body is the documented model's JSON.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.router import Accepted, EventStatus
from shared import events
from shared.events import (
    DATA_MODELS,
    BusEvent,
    EventLimits,
    IncomingEvent,
    _forbidden_characters,
    _plainly_valid,
    _validate,
    parse_envelope,
)
from tests.system import interaction_created, post_created
from tests.test_hostile_input import envelopes, materialize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_events import Workload  # noqa: E402

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
LIMITS = EventLimits()


def assert_same_answer(raw: Any, limits: EventLimits = LIMITS, now: datetime = NOW) -> Any:
    """parse_envelope (fast path first) answers as the full validation alone does."""
    storable = isinstance(raw, dict) and not _forbidden_characters(raw)
    full = _validate(raw, "key-name", limits, now)
    for claim in {False, storable}:  # `storable` only when it is true, as the binding says
        answer = parse_envelope(raw, "key-name", limits, now=now, storable=claim)
        if isinstance(full, list):
            assert answer == full
            continue
        assert isinstance(answer, IncomingEvent)
        assert answer == full
        # (the order of data's keys is not part of an event: the fast path's come sorted, as
        # its content hash takes them; the same hash below says they were)
        assert answer.time.isoformat() == full.time.isoformat()
        assert answer.content_hash == full.content_hash
        as_bus = BusEvent(seq=0, **{name: getattr(full, name) for name in _FIELDS})
        assert answer.encoded_size == full.encoded_size == len(as_bus.to_json())
    return full


_FIELDS = ("id", "type", "time", "source", "creator_id", "data", "attributes")


def test_the_fast_path_knows_every_field_of_every_event_type():
    assert events._DATA_FIELDS.keys() == DATA_MODELS.keys()
    for event_type, model in DATA_MODELS.items():
        fields = events._DATA_FIELDS[event_type]
        assert [name for name, _, _ in fields] == list(model.model_fields)
        for name, _, default in fields:
            info = model.model_fields[name]
            if default is events._REQUIRED:
                assert info.is_required(), (event_type, name)
            else:
                assert not info.is_required() and info.default == default, (event_type, name)


def test_realistic_events_take_the_fast_path_and_are_the_same_events():
    workload = Workload("fp", 50, 3, datetime(2026, 11, 1, tzinfo=UTC))
    raws = orjson.loads(orjson.dumps(list(workload.events(3000))))
    assert {raw["type"] for raw in raws} >= {"post.created", "interaction.created"}
    for raw in raws:
        assert _plainly_valid(raw, "key-name", LIMITS, NOW) is not None
        assert isinstance(assert_same_answer(raw), IncomingEvent)


def _valid_events() -> list[dict[str, Any]]:
    base = {"id": "e-1", "time": "2026-11-03T10:00:00+08:00", "source": "square"}
    ids = {"creator_id": "c-1", "post_id": "p-1"}
    return [
        {
            **base,
            "type": "post.created",
            "data": {
                **ids,
                "text": "t",
                "image_count": 0,
                "kind": "quote",
                "reference_post_id": "p",
            },
        },
        post_created(event_id="e-2", text=""),
        interaction_created(event_id="e-3"),
        {**base, "type": "interaction.deleted", "data": {**ids, "actor_id": "a", "kind": "quote"}},
        {**base, "type": "post.updated", "data": {**ids, "text": "t", "image_count": 3}},
        {**base, "type": "post.deleted", "data": ids},
        {**base, "type": "post.moderated", "data": {**ids, "verdict": "removed"}},
        {
            **base,
            "type": "post.moderated",
            "data": {**ids, "verdict": "approved", "quality_score": 0.75},
        },
        {**base, "type": "creator.followers_changed", "data": {"creator_id": "c", "followers": 9}},
    ]


# What the full validation refuses or reads otherwise; the fast path must give up on each.
ENVELOPE_VALUES = [
    None,
    "",
    "x" * 256,
    "x" * 257,
    "x" * 2049,
    0,
    1.5,
    True,
    [],
    {},
    "1.0",
    "2.0",
    "application/json",
    "text/plain",
    "application/cloudevents+json; charset=utf-8",
    "post.created",
    "square",
]
TIMES = [
    "2026-11-03T10:00:00Z",
    "2026-11-03T10:00:00.5+08:00",
    "2026-11-03T10:00:00.123456-05:30",
    "2026-11-03t10:00:00z",
    "2026-11-03 10:00:00+00:00",
    "2026-11-03T10:00:00.1234567+00:00",
    "2026-11-03T23:59:60Z",
    "2026-02-29T10:00:00Z",
    "2024-02-29T10:00:00Z",
    "2026-11-03T24:00:00Z",
    "2026-11-03T10:00:00+24:00",
    "2026-11-03T10:00:00+00:60",
    "2026-11-03T10:00:00-00:00",
    "1999-12-31T23:59:59Z",
    "2000-01-01T00:00:00Z",
    "2000-01-01T00:30:00+01:00",
    "2026-11-04T12:00:00Z",  # NOW + 24 h: the latest accepted
    "2026-11-04T12:00:00.000001Z",
    "2026-11-03",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59+00:00",
]
DATA_VALUES = [
    None,
    "",
    "x" * 128,
    "x" * 129,
    "x" * 100_001,
    -1,
    0,
    2**63 - 1,
    2**63,
    True,
    False,
    0.0,
    1,
    1.0,
    0.5,
    -0.0,
    1.0000001,
    float("nan"),
    float("inf"),
    "original",
    "repost",
    "like",
    "approved",
    "low_quality",
    [],
    {"a": 1},
]


@pytest.mark.parametrize("event", _valid_events(), ids=lambda e: e["type"])
def test_every_change_to_a_valid_event_gets_the_full_validations_answer(event):
    assert isinstance(assert_same_answer(event), IncomingEvent)
    names = [*events._ENVELOPE_NAMES, "data_base64", "traceparent", "Bad-Name", "x" * 21]
    for name in names:
        if name == "data":
            continue
        for value in [*ENVELOPE_VALUES, *(TIMES if name == "time" else [])]:
            assert_same_answer({**event, name: value})
        assert_same_answer({k: v for k, v in event.items() if k != name})
    for name in [*event["data"], "kind", "reference_post_id", "quality_score", "extra"]:
        for value in DATA_VALUES:
            assert_same_answer({**event, "data": {**event["data"], name: value}})
        data = {k: v for k, v in event["data"].items() if k != name}
        assert_same_answer({**event, "data": data})
    for data in (None, [], "x", {}):
        assert_same_answer({**event, "data": data})


def test_times_and_sizes_at_the_limits_get_the_same_answer():
    event = post_created(text="字" * 1000)
    for max_bytes in range(3400, 3700, 7):
        assert_same_answer(event, EventLimits(max_bytes=max_bytes))
    for ahead in (timedelta(0), timedelta(hours=1), timedelta(hours=22)):
        limits = EventLimits(max_ahead=ahead, time_min=datetime(2026, 11, 3, 2, tzinfo=UTC))
        for time in TIMES:
            assert_same_answer({**event, "time": time}, limits)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelope=envelopes())
def test_hostile_envelopes_get_the_same_answer(envelope):
    assert_same_answer(materialize(envelope), now=datetime.now(UTC))


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=40),
    creator=st.text(min_size=1, max_size=3),
    offset=st.integers(-23 * 60 - 59, 23 * 60 + 59),
    micro=st.integers(0, 999_999),
    extension=st.one_of(st.none(), st.text(max_size=5), st.integers(), st.floats()),
)
def test_generated_events_get_the_same_answer(text, creator, offset, micro, extension):
    instant = datetime(2026, 11, 3, 1, 2, 3, micro, tzinfo=UTC)
    time = instant.astimezone(timezone(timedelta(minutes=offset))).isoformat()
    event = post_created(creator, text=text, time=time)
    if extension is not None:
        event["ext"] = extension
    assert_same_answer(event)


async def test_the_202_body_is_the_documented_models_json(system):
    batch = [post_created("c-body", event_id=f"body-{i}") for i in range(3)]
    first = await system.post_events(batch)
    again = await system.post_events(batch[1:] + [post_created("c-body", event_id="body-9")])
    for response, outcomes in (
        (first, [("body-0", "accepted"), ("body-1", "accepted"), ("body-2", "accepted")]),
        (again, [("body-1", "duplicate"), ("body-2", "duplicate"), ("body-9", "accepted")]),
    ):
        assert response.status_code == 202
        assert response.headers["content-type"] == "application/json"
        statuses = [EventStatus(id=i, status=s) for i, s in outcomes]
        accepted = sum(s == "accepted" for _, s in outcomes)
        model = Accepted(accepted=accepted, duplicates=3 - accepted, events=statuses)
        assert response.content == model.model_dump_json().encode()


async def test_a_nul_escape_in_a_body_is_still_found(system):
    event = post_created("c-nul", event_id="nul-1", text="a\x00b")
    response = await system.post_events([post_created("c-nul"), event])
    assert response.status_code == 422
    assert {"index": 1, "loc": ["data", "text"], "msg": "must not contain a NUL character"} in (
        response.json()["details"]
    )
