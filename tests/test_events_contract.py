"""The event contract as pure functions: parsing, validation and what counts as the same event."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from shared.events import BusEvent, IncomingEvent, parse_envelope
from shared.program_time import month_of
from shared.settings import Settings
from tests.system import post_created

texts = st.text(max_size=300)
offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: timedelta(minutes=m))


@given(text=texts, image_count=st.integers(0, 50), offset=offsets)
def test_the_same_event_hashes_the_same_however_it_is_written(text, image_count, offset):
    instant = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
    one = post_created(event_id="e", text=text, image_count=image_count, time=instant.isoformat())
    other = {
        **{k: one[k] for k in reversed(list(one))},
        "time": instant.astimezone(timezone(offset)).isoformat(),
    }
    a, b = parse_envelope(one, "k"), parse_envelope(other, "k")
    assert isinstance(a, IncomingEvent) and isinstance(b, IncomingEvent)
    assert a.content_hash == b.content_hash


@given(first=texts, second=texts)
def test_different_content_hashes_differently(first, second):
    a = parse_envelope(post_created(post_id="p", event_id="e", text=first), "k")
    b = parse_envelope(post_created(post_id="p", event_id="e", text=second), "k")
    assert (a.content_hash == b.content_hash) == (first == second)


def test_every_problem_of_an_event_is_reported_at_once():
    event = post_created()
    event["time"] = "yesterday"
    event["data"]["image_count"] = -2
    event["creator_id"] = "c-1"  # belongs in data
    errors = parse_envelope(event, "k")
    assert sorted(e.loc for e in errors) == [["creator_id"], ["data", "image_count"], ["time"]]


def test_bus_event_survives_the_wire():
    parsed = parse_envelope(post_created(traceparent="00-1"), "k")
    event = BusEvent(seq=7, **asdict(parsed))
    assert BusEvent.from_json(event.to_json()) == event


def test_an_event_belongs_to_the_program_month_of_its_own_time():
    zone = Settings(_env_file=None).timezone  # Asia/Shanghai by default
    assert month_of(datetime(2026, 11, 30, 15, 59, tzinfo=UTC), zone) == "2026-11"
    assert month_of(datetime(2026, 11, 30, 16, 0, tzinfo=UTC), zone) == "2026-12"
