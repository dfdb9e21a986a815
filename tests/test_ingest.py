"""POST /v1/events: the contract of API.md, on the real database."""

from __future__ import annotations

import asyncio
from datetime import datetime

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
        {"index": 1, "id": "evt-1", "msg": "id already used with different content"}
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
