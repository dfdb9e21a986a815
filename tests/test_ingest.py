"""POST /v1/events: the contract of API.md, on the real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from tests.system import ADMIN, post_created


async def stored_ids(system) -> list[str]:
    return [r["event_id"] for r in await system.sql("SELECT event_id FROM events ORDER BY seq")]


async def test_single_event_is_accepted_and_stored_with_its_attributes(system):
    event = post_created("c-42", "p-1", event_id="evt-1", traceparent="00-abc-01", subject="p-1")
    response = await system.post_events(event)

    assert response.status_code == 202
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "events": [{"id": "evt-1", "status": "accepted"}],
    }
    [row] = await system.sql("SELECT source, creator_id, data, attributes FROM events")
    assert row["source"] == "square"
    assert row["creator_id"] == "c-42"
    assert orjson.loads(row["attributes"]) == {
        "specversion": "1.0",
        "subject": "p-1",
        "traceparent": "00-abc-01",
    }
    assert orjson.loads(row["data"])["kind"] == "original"


async def test_source_defaults_to_the_key_name(system):
    event = post_created()
    del event["source"]
    assert (await system.post_events(event)).status_code == 202
    [row] = await system.sql("SELECT source FROM events")
    assert row["source"] == "bootstrap-admin"


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/cloudevents-batch+json", "application/json; charset=utf-8"],
)
async def test_batch_content_types(system, content_type):
    batch = [post_created(), post_created()]
    response = await system.client.post(
        "/v1/events",
        content=orjson.dumps(batch),
        headers={**ADMIN, "Content-Type": content_type},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2


async def test_structured_mode_from_the_cloudevents_sdk(system):
    event = CloudEvent(
        attributes={
            "id": "sdk-1",
            "type": "post.deleted",
            "source": "square",
            "specversion": "1.0",
            "time": datetime.fromisoformat("2026-11-03T10:00:00+08:00"),
        },
        data={"creator_id": "c-1", "post_id": "p-1"},
    )
    message = ce_http.to_structured_event(event)
    response = await system.client.post(
        "/v1/events", content=message.body, headers={**ADMIN, **message.headers}
    )
    assert response.status_code == 202, response.text
    assert await stored_ids(system) == ["sdk-1"]


async def test_binary_mode_from_the_cloudevents_sdk(system):
    event = CloudEvent(
        attributes={
            "id": "sdk-2",
            "type": "interaction.created",
            "source": "square app",  # percent-encoded in the header
            "specversion": "1.0",
            "time": datetime.fromisoformat("2026-11-03T10:00:00+08:00"),
            "traceparent": "00-xyz-01",
        },
        data={"creator_id": "c-1", "post_id": "p-1", "actor_id": "a-1", "kind": "like"},
    )
    message = ce_http.to_binary_event(event)
    assert "content-type" not in message.headers  # the SDK sends none; it must still work
    response = await system.client.post(
        "/v1/events", content=message.body, headers={**ADMIN, **message.headers}
    )
    assert response.status_code == 202, response.text
    [row] = await system.sql("SELECT event_id, source, attributes FROM events")
    assert (row["event_id"], row["source"]) == ("sdk-2", "square app")
    assert orjson.loads(row["attributes"])["traceparent"] == "00-xyz-01"

    # the same event again in structured mode is a duplicate, not a conflict
    again = ce_http.to_structured_event(event)
    response = await system.client.post(
        "/v1/events", content=again.body, headers={**ADMIN, **again.headers}
    )
    assert response.json()["events"] == [{"id": "sdk-2", "status": "duplicate"}]


async def test_resent_event_is_a_duplicate_and_stored_once(system):
    event = post_created(event_id="evt-7")
    await system.post_events(event)
    # same content, other key order and another way of writing the same instant
    reordered = {**{k: event[k] for k in reversed(list(event))}, "time": "2026-11-03T02:00:00Z"}
    response = await system.post_events([reordered, post_created(event_id="evt-8")])

    assert response.status_code == 202
    assert response.json() == {
        "accepted": 1,
        "duplicates": 1,
        "events": [
            {"id": "evt-7", "status": "duplicate"},
            {"id": "evt-8", "status": "accepted"},
        ],
    }
    assert await stored_ids(system) == ["evt-7", "evt-8"]


async def test_same_event_twice_in_one_batch_counts_once(system):
    event = post_created(event_id="evt-9")
    response = await system.post_events([event, event])
    assert [e["status"] for e in response.json()["events"]] == ["accepted", "duplicate"]
    assert await stored_ids(system) == ["evt-9"]


async def test_id_reused_with_other_content_is_409_and_nothing_is_accepted(system):
    await system.post_events(post_created(event_id="evt-1", text="first version " * 5))
    changed = post_created(event_id="evt-1", text="second version " * 5)
    response = await system.post_events([post_created(event_id="evt-2"), changed])

    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert response.json()["details"] == [
        {
            "index": 1,
            "id": "evt-1",
            "source": "square",
            "msg": "source and id already used with different content",
        }
    ]
    assert await stored_ids(system) == ["evt-1"]  # evt-2 was rolled back with the batch


async def test_id_twice_in_one_batch_with_other_content_is_409(system):
    response = await system.post_events(
        [
            post_created(event_id="evt-3", text="a" * 60),
            post_created(event_id="evt-3", text="b" * 60),
        ]
    )
    assert response.status_code == 409
    assert await stored_ids(system) == []


async def test_the_same_event_sent_concurrently_is_stored_once(system):
    event = post_created(event_id="evt-race")
    responses = await asyncio.gather(*(system.post_events(event) for _ in range(12)))
    statuses = sorted(r.json()["events"][0]["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 11
    assert await stored_ids(system) == ["evt-race"]


def _hours_from_now(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def _without(event: dict, *path: str) -> dict:
    target = event
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return event


INVALID = [
    ("missing id", lambda e: _without(e, "id"), ["id"]),
    ("missing time", lambda e: _without(e, "time"), ["time"]),
    ("missing data", lambda e: _without(e, "data"), ["data"]),
    ("unknown type", lambda e: {**e, "type": "post.liked"}, ["type"]),
    ("time without offset", lambda e: {**e, "time": "2026-11-03T10:00:00"}, ["time"]),
    ("time as a number", lambda e: {**e, "time": 1762135200}, ["time"]),
    ("specversion 0.3", lambda e: {**e, "specversion": "0.3"}, ["specversion"]),
    ("unknown top-level field", lambda e: {**e, "creator_id": "c-1"}, ["creator_id"]),
    ("extension name too long", lambda e: {**e, "a" * 21: "x"}, ["a" * 21]),
    ("extension of an object", lambda e: {**e, "trace": {"a": 1}}, ["trace"]),
    ("base64 data", lambda e: {**e, "data_base64": "AA=="}, ["data_base64"]),
    ("xml data", lambda e: {**e, "datacontenttype": "application/xml"}, ["datacontenttype"]),
    ("unknown data field", lambda e: {**e, "data": {**e["data"], "likes": 3}}, ["data", "likes"]),
    (
        "negative image count",
        lambda e: {**e, "data": {**e["data"], "image_count": -1}},
        ["data", "image_count"],
    ),
    (
        "image count as text",
        lambda e: {**e, "data": {**e["data"], "image_count": "2"}},
        ["data", "image_count"],
    ),
    (
        "unknown post kind",
        lambda e: {**e, "data": {**e["data"], "kind": "story"}},
        ["data", "kind"],
    ),
    (
        "missing creator",
        lambda e: {**e, "data": _without(dict(e["data"]), "creator_id")},
        ["data", "creator_id"],
    ),
    # issue 5: each of these was a 500, a dropped connection or a 202
    ("NUL in id", lambda e: {**e, "id": "evt\x00"}, ["id"]),
    ("NUL in subject", lambda e: {**e, "subject": "p\x00"}, ["subject"]),
    ("NUL in source", lambda e: {**e, "source": "sq\x00"}, ["source"]),
    ("NUL in an extension value", lambda e: {**e, "traceparent": "00\x00"}, ["traceparent"]),
    ("NUL in an extension name", lambda e: {**e, "trace\x00": "00"}, ["trace\x00"]),
    (
        "NUL in data.creator_id",
        lambda e: {**e, "data": {**e["data"], "creator_id": "c\x00"}},
        ["data", "creator_id"],
    ),
    (
        "NUL in data.text",
        lambda e: {**e, "data": {**e["data"], "text": "hello\x00world"}},
        ["data", "text"],
    ),
    ("time in year 1 at +14:00", lambda e: {**e, "time": "0001-01-01T00:00:00+14:00"}, ["time"]),
    ("time before 2000", lambda e: {**e, "time": "1999-12-31T23:59:59Z"}, ["time"]),
    ("time in year 9999", lambda e: {**e, "time": "9999-12-31T23:00:00Z"}, ["time"]),
    ("time over 24 h ahead", lambda e: {**e, "time": _hours_from_now(25)}, ["time"]),
    ("extension name ending in a newline", lambda e: {**e, "abc\n": "x"}, ["abc\n"]),
    ("extension integer beyond 64 bits", lambda e: {**e, "big": 2**63}, ["big"]),
    (
        "datacontenttype ending in a newline",
        lambda e: {**e, "datacontenttype": "application/json\n"},
        ["datacontenttype"],
    ),
    ("1.2 MB extension", lambda e: {**e, "big": "x" * 1_200_000}, []),
]


@pytest.mark.parametrize(("case", "mutate", "loc"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_event_is_422_with_its_location(system, case, mutate, loc):
    response = await system.post_events([post_created(), mutate(post_created())])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    assert {"index": 1, "loc": loc} in [
        {"index": d["index"], "loc": d["loc"]} for d in body["details"]
    ]
    assert all(d["msg"] for d in body["details"])
    assert await stored_ids(system) == []


async def test_other_event_types_validate_their_data(system):
    ok = [
        {
            "id": "m-1",
            "type": "post.moderated",
            "time": "2026-11-03T10:00:00Z",
            "data": {
                "creator_id": "c",
                "post_id": "p",
                "verdict": "approved",
                "quality_score": 0.8,
            },
        },
        {
            "id": "f-1",
            "type": "creator.followers_changed",
            "time": "2026-11-03T10:00:00Z",
            "data": {"creator_id": "c", "followers": 1200},
        },
        {
            "id": "u-1",
            "type": "post.updated",
            "time": "2026-11-03T10:00:00Z",
            "data": {"creator_id": "c", "post_id": "p", "text": "edited", "image_count": 1},
        },
    ]
    assert (await system.post_events(ok)).status_code == 202
    bad = {
        "id": "m-2",
        "type": "post.moderated",
        "time": "2026-11-03T10:00:00Z",
        "data": {"creator_id": "c", "post_id": "p", "verdict": "approved", "quality_score": 1.5},
    }
    response = await system.post_events(bad)
    assert response.status_code == 422
    assert response.json()["details"][0]["loc"] == ["data", "quality_score"]


async def test_malformed_json_is_400(system):
    response = await system.client.post(
        "/v1/events", content=b'{"id": "x",', headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_request"


async def test_json_that_is_not_an_event_is_400(system):
    response = await system.client.post(
        "/v1/events", content=b'"hello"', headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 400


async def test_other_content_type_is_415(system):
    response = await system.client.post(
        "/v1/events", content=b"id=1", headers={**ADMIN, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


async def test_batch_over_1000_events_is_413(system):
    response = await system.post_events([post_created(text="x") for _ in range(1001)])
    assert response.status_code == 413
    assert await stored_ids(system) == []


async def test_a_batch_of_1000_events_is_accepted(system):
    response = await system.post_events([post_created() for _ in range(1000)])
    assert response.status_code == 202
    assert response.json()["accepted"] == 1000


class TestLargeBatches:
    @pytest.fixture
    def settings_overrides(self):
        return {"max_batch_events": 12_000, "max_body_bytes": 64 * 1024 * 1024}

    async def test_a_large_batch_sent_again_is_all_duplicates(self, system):
        # The stored events of a re-sent batch are looked up by their keys: 12,000 of them in one
        # statement once overflowed PostgreSQL's stack (a row `IN` list nests one level per key).
        batch = [post_created(text="x") for _ in range(12_000)]
        assert (await system.post_events(batch)).json()["accepted"] == 12_000
        response = await system.post_events(batch)
        assert response.status_code == 202, response.text
        assert response.json()["duplicates"] == 12_000


async def test_empty_batch_is_422(system):
    assert (await system.post_events([])).status_code == 422


class TestBodyLimit:
    @pytest.fixture
    def settings_overrides(self):
        return {"max_body_bytes": 2048}

    async def test_body_over_the_limit_is_413(self, system):
        response = await system.post_events([post_created() for _ in range(10)])
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
        assert await stored_ids(system) == []

    async def test_streamed_body_without_length_is_limited_too(self, system):
        async def chunks():
            body = orjson.dumps([post_created() for _ in range(10)])
            for i in range(0, len(body), 500):
                yield body[i : i + 500]

        response = await system.client.post(
            "/v1/events", content=chunks(), headers={**ADMIN, "Content-Type": "application/json"}
        )
        assert response.status_code == 413


async def test_an_event_up_to_24_hours_ahead_is_accepted(system):
    response = await system.post_events(post_created(time=_hours_from_now(23.9)))
    assert response.status_code == 202, response.text


async def test_an_event_over_the_size_limit_is_named_by_its_index(system):
    big = post_created(big="x" * 1_200_000)  # was a 202, then stalled the Kafka relay
    response = await system.post_events([post_created(), post_created(), big])
    assert response.status_code == 422, response.text
    [detail] = response.json()["details"]
    assert (detail["index"], detail["loc"]) == (2, [])
    assert "524288" in detail["msg"]
    assert await stored_ids(system) == []


class TestEventLimitsFromSettings:
    @pytest.fixture
    def settings_overrides(self):
        return {
            "max_event_bytes": 2048,
            "event_time_min": "2026-11-01T00:00:00+08:00",
            "event_time_max_ahead_hours": 0,
        }

    async def test_the_size_limit_is_a_setting(self, system):
        assert (await system.post_events(post_created(pad="x" * 1200))).status_code == 202
        response = await system.post_events(post_created(pad="x" * 2048))
        assert response.status_code == 422
        assert response.json()["details"][0]["loc"] == []

    async def test_the_time_bounds_are_settings(self, system):
        early = post_created(time="2026-10-31T23:59:59+08:00")
        ahead = post_created(time=_hours_from_now(0.1))
        response = await system.post_events([post_created(), early, ahead])
        assert response.status_code == 422
        assert [(d["index"], d["loc"]) for d in response.json()["details"]] == [
            (1, ["time"]),
            (2, ["time"]),
        ]
        assert await stored_ids(system) == []
        assert (await system.post_events(post_created(time=_hours_from_now(-0.1)))).is_success


BINARY_HEADERS = {
    "ce-id": "bin-1",
    "ce-type": "post.deleted",
    "ce-source": "square",
    "ce-specversion": "1.0",
    "ce-time": "2026-11-03T10:00:00Z",
    "content-type": "application/json",
}
BINARY_BODY = orjson.dumps({"creator_id": "c-1", "post_id": "p-1"})


@pytest.mark.parametrize(
    ("header", "value", "loc"),
    [
        ("ce-subject", "p%00", ["subject"]),
        ("ce-id", "%00", ["id"]),
        ("ce-source", "sq%00uare", ["source"]),
        ("ce-traceparent", "00%00", ["traceparent"]),
        ("ce-id", "%FF", ["id"]),  # not UTF-8
        ("ce-subject", "%ED%A0%80", ["subject"]),  # an encoded surrogate: not UTF-8 either
        ("ce-time", "9999-12-31T23:00:00Z", ["time"]),
        ("ce-time", "0001-01-01T00:00:00+14:00", ["time"]),
    ],
)
async def test_binary_mode_attributes_follow_the_same_rules(system, header, value, loc):
    headers = {**ADMIN, **BINARY_HEADERS, header: value}
    response = await system.client.post("/v1/events", content=BINARY_BODY, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_failed"
    assert {"index": 0, "loc": loc} in [
        {"index": d["index"], "loc": d["loc"]} for d in response.json()["details"]
    ]
    assert await stored_ids(system) == []


async def test_binary_mode_attribute_sent_twice_is_422(system):
    headers = [*ADMIN.items(), *BINARY_HEADERS.items(), ("ce-id", "bin-2")]
    response = await system.client.post("/v1/events", content=BINARY_BODY, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["loc"] == ["id"]
    assert await stored_ids(system) == []


async def test_binary_mode_header_in_raw_utf_8_is_read_as_utf_8(system):
    headers = {**ADMIN, **BINARY_HEADERS, "ce-source": "广场".encode()}
    response = await system.client.post("/v1/events", content=BINARY_BODY, headers=headers)
    assert response.status_code == 202, response.text
    [row] = await system.sql("SELECT source FROM events")
    assert row["source"] == "广场"
