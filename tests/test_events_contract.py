"""The event contract as pure functions: parsing, validation and what counts as the same event."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import (
    MAX_ERRORS_PER_EVENT,
    BusEvent,
    EventLimits,
    IncomingEvent,
    parse_envelope,
)
from shared.program_time import month_of
from shared.settings import Settings
from tests.system import post_created

# Any text an event may hold: everything but NUL and lone surrogates (category Cs).
texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=300)
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


# --- what no event may be (issue 5) -------------------------------------------------------------

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def errors_of(event: dict, limits: EventLimits | None = None) -> list[list]:
    parsed = parse_envelope(event, "k", limits, now=NOW)
    assert isinstance(parsed, list), f"accepted: {parsed}"
    return [e.loc for e in parsed]


def accepted(event: dict, limits: EventLimits | None = None) -> IncomingEvent:
    parsed = parse_envelope(event, "k", limits, now=NOW)
    assert isinstance(parsed, IncomingEvent), parsed
    return parsed


def _set(event: dict, path: tuple, value) -> dict:
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return event


@pytest.mark.parametrize(
    "path",
    [
        ("id",),
        ("source",),
        ("subject",),
        ("dataschema",),
        ("datacontenttype",),
        ("traceparent",),  # an extension's value
        ("data", "creator_id"),
        ("data", "post_id"),
        ("data", "text"),
    ],
    ids=lambda path: ".".join(path),
)
@pytest.mark.parametrize("hostile", ["a\x00b", "\x00", "a\ud800b"], ids=["nul", "lone-nul", "surr"])
def test_no_string_may_hold_a_nul_or_a_lone_surrogate(path, hostile):
    event = post_created(
        subject="s", dataschema="https://x/y", datacontenttype="application/json", traceparent="t"
    )
    assert path in [tuple(loc) for loc in errors_of(_set(event, path, hostile))]


def test_no_name_may_hold_a_nul_at_any_depth():
    event = post_created()
    event["data"]["why\x00"] = {"deeper": [["\x00"]]}
    event["ext\x00"] = "x"
    locs = errors_of(event)
    assert ["ext\x00"] in locs
    assert ["data", "why\x00"] in locs
    assert ["data", "why\x00", "deeper", 0, 0] in locs


def test_deep_nesting_is_an_error_not_a_crash():
    deep: list = ["\x00"]
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    locs = errors_of(post_created(trace=deep))
    assert ["trace"] in locs
    assert any(len(loc) > 5000 for loc in locs)  # the NUL at the bottom, found


def test_errors_of_one_event_are_capped():
    event = post_created(many=["\x00"] * 10_000)
    assert len(errors_of(event)) <= MAX_ERRORS_PER_EVENT


@pytest.mark.parametrize(
    "name", ["abc\n", "abc\r\n", "Abc", "ab-c", "a" * 21, "", "ａｂｃ", "abc\u2028", "١٢٣"]
)
def test_extension_names_must_be_1_to_20_lowercase_ascii_letters_or_digits(name):
    assert [name] in errors_of(post_created(**{name: "x"}))


def test_extension_name_of_20_characters_is_accepted():
    assert accepted(post_created(**{"a1" * 10: "x"})).attributes["a1" * 10] == "x"


@pytest.mark.parametrize(
    "value",
    [2**64, 2**63, -(2**63) - 1, float("inf"), float("nan"), None, [], {"a": 1}]
    # what a JSON integer past 64 bits becomes once parsed (orjson gives a float)
    + [5.8119096602781835e19, -1e19, 1e300],
)
def test_extension_values_are_strings_booleans_or_finite_64_bit_numbers(value):
    assert ["ext"] in errors_of(post_created(ext=value))


@pytest.mark.parametrize("value", ["", "x", True, False, 0, 2**63 - 1, -(2**63), 1.5, -0.0])
def test_extension_values_that_are_kept(value):
    assert accepted(post_created(ext=value)).attributes["ext"] == value


def test_counts_fit_a_bigint():
    assert accepted(post_created(image_count=2**63 - 1)).data["image_count"] == 2**63 - 1
    assert errors_of(post_created(image_count=2**63)) == [["data", "image_count"]]


@pytest.mark.parametrize(
    "content_type",
    ["application/json\n", "application/json\n; x=y", "application/xml", "text/json", "json"],
)
def test_datacontenttype_must_be_json_all_through(content_type):
    assert ["datacontenttype"] in errors_of(post_created(datacontenttype=content_type))


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/cloudevents+json", "Application/JSON; charset=utf-8"],
)
def test_json_content_types_are_accepted(content_type):
    accepted(post_created(datacontenttype=content_type))


@pytest.mark.parametrize(
    "time",
    [
        "0001-01-01T00:00:00+14:00",  # an OverflowError in the content hash, once
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T07:59:59+08:00",
        "9999-12-31T23:00:00Z",
        "9999-12-31T23:59:59-14:00",
        "2026-11-04T12:00:00.000001Z",  # NOW + 24 h + 1 µs
        "2026-11-03T10:00:00Z\n",
        "٢٠٢٦-١١-٠٣T10:00:00Z",  # digits, but not ASCII ones
        "2026-11-03T10:00:00+99:99",
        "2026-02-30T10:00:00Z",
    ],
)
def test_time_must_lie_between_2000_and_24_hours_ahead(time):
    assert errors_of(post_created(time=time)) == [["time"]]


@pytest.mark.parametrize(
    "time", ["2000-01-01T00:00:00Z", "2000-01-01T08:00:00+08:00", "2026-11-04T12:00:00Z"]
)
def test_time_bounds_are_inclusive(time):
    accepted(post_created(time=time))


def test_time_bounds_follow_the_limits():
    limits = EventLimits(time_min=datetime(2026, 1, 1, tzinfo=UTC), max_ahead=timedelta(0))
    assert errors_of(post_created(time="2025-12-31T23:59:59Z"), limits) == [["time"]]
    assert errors_of(post_created(time="2026-11-03T12:00:01Z"), limits) == [["time"]]
    accepted(post_created(time="2026-11-03T12:00:00Z"), limits)


def test_an_event_is_limited_in_bytes_as_compact_json():
    event = post_created(pad="")
    size = accepted(event).encoded_size
    limits = EventLimits(max_bytes=size + 100)
    assert accepted(post_created(pad="x" * 100), limits).encoded_size == size + 100
    parsed = parse_envelope(post_created(pad="x" * 101), "k", limits, now=NOW)
    assert [e.loc for e in parsed] == [[]]
    assert str(size + 101) in parsed[0].msg and str(size + 100) in parsed[0].msg


def test_a_1_2_mb_extension_is_over_the_default_limit():
    assert errors_of(post_created(big="x" * 1_200_000)) == [[]]


def test_the_event_limit_stays_below_the_kafka_request_limit():
    Settings(_env_file=None, max_event_bytes=512 * 1024, kafka_max_request_bytes=1024 * 1024)
    with pytest.raises(ValidationError, match="kafka_max_request_bytes"):
        Settings(_env_file=None, max_event_bytes=1024 * 1024)
    with pytest.raises(ValidationError, match="kafka_max_request_bytes"):
        Settings(_env_file=None, max_event_bytes=512 * 1024, kafka_max_request_bytes=512 * 1024)


def test_event_limits_come_from_the_settings(monkeypatch):
    monkeypatch.setenv("CREATOR_ACTIVITY_EVENT_TIME_MIN", "2020-01-01")
    monkeypatch.setenv("CREATOR_ACTIVITY_EVENT_TIME_MAX_AHEAD_HOURS", "1.5")
    monkeypatch.setenv("CREATOR_ACTIVITY_MAX_EVENT_BYTES", "4096")
    limits = EventLimits.of(Settings(_env_file=None))
    assert limits == EventLimits(
        max_bytes=4096,
        time_min=datetime(2020, 1, 1, tzinfo=UTC),
        max_ahead=timedelta(hours=1.5),
    )
    for name in ("EVENT_TIME_MIN", "EVENT_TIME_MAX_AHEAD_HOURS", "MAX_EVENT_BYTES"):
        monkeypatch.delenv(f"CREATOR_ACTIVITY_{name}")
    assert EventLimits.of(Settings(_env_file=None)) == EventLimits()  # the defaults agree
    naive = Settings(_env_file=None, event_time_min="2000-01-01T00:00:00")
    assert naive.event_time_min == datetime(2000, 1, 1, tzinfo=UTC)  # a naive time is UTC
