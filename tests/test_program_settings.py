"""Versioned program settings: the environment seeds the first version; an operator changes a
setting from a future month, with who and why; each month settles by the version in force for
it, and the featured bonus of a week is the one in force for the month of its Monday; a
start-up whose environment differs from the version in force warns."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.runtime import Runtime
from shared import program_settings
from shared.program_time import current_month
from tests.conftest import make_settings, running
from tests.system import ADMIN, interaction_created
from tests.test_monthly_program import month_of_posts, post
from tests.test_vouchers import certify

URL = "/v1/admin/program-settings"
CERTIFIED = datetime(2026, 7, 1, tzinfo=UTC)
DEFAULTS = {
    "weight_posts": "0.25",
    "weight_active_days": "0.25",
    "weight_interactions": "0.30",
    "weight_quality": "0.20",
    "min_posts": 3,  # settings_overrides
    "monthly_pool": "1500.00",
    "featured_post_bonus": "10.00",
}


def month_after(month: str, months: int = 1) -> str:
    year, number = map(int, month.split("-"))
    index = year * 12 + number - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


async def versions(system) -> dict:
    response = await system.client.get(URL, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


async def change(system, effective_from: str, settings: dict, reason: str = "a test"):
    body = {"effective_from": effective_from, "settings": settings, "reason": reason}
    return await system.client.post(URL, json=body, headers=ADMIN)


async def add_version(system, effective_from: str, changes: dict, *, now: datetime) -> None:
    """A version made in the past (`now`): how a month already over came to have its own."""
    async with system.runtime.context.sessionmaker() as session, session.begin():
        await program_settings.add_version(
            session,
            system.runtime.settings,
            effective_from=effective_from,
            changes=changes,
            changed_by="ops-lead",
            reason="made before the month began",
            now=now,
        )


async def test_an_operator_changes_a_setting_from_next_month(system):
    seeded = await versions(system)
    [first] = seeded["items"]
    assert first["effective_from"] == "1900-01" and first["changed_by"] == "environment"
    assert first["settings"] == first["changes"] == DEFAULTS
    running_month = current_month(system.runtime.settings.timezone)
    assert seeded["current_month"] == running_month and seeded["in_force"] == DEFAULTS

    following = month_after(running_month)
    reason = "interactions matter more; a bigger pool for the new year"
    made = await change(
        system, following, {"weight_interactions": "0.4", "monthly_pool": "2000"}, reason
    )
    assert made.status_code == 201, made.text
    expected = DEFAULTS | {"weight_interactions": "0.4", "monthly_pool": "2000.00"}
    assert made.json()["settings"] == expected
    assert made.json()["changes"] == {"weight_interactions": "0.4", "monthly_pool": "2000.00"}
    assert made.json()["changed_by"] == "bootstrap-admin"  # the admin key's name

    later = await change(system, month_after(running_month, 3), {"min_posts": 20})
    assert later.status_code == 201, later.text
    listed = await versions(system)
    assert [v["effective_from"] for v in listed["items"]] == [
        "1900-01",
        following,
        month_after(running_month, 3),
    ]
    assert listed["items"][1] == made.json()
    assert listed["items"][1]["reason"] == reason
    assert listed["items"][2]["settings"] == expected | {"min_posts": 20}  # builds on the earlier
    assert listed["in_force"] == DEFAULTS  # the running month keeps its rules

    # what the scoring of each month reads
    async with system.runtime.context.sessionmaker() as session:
        now = await program_settings.settings_in_force(
            session, system.runtime.settings, running_month
        )
        then = await program_settings.settings_in_force(
            session, system.runtime.settings, month_after(running_month, 4)
        )
    assert (now.monthly_pool, now.weight_interactions) == (Decimal("1500.00"), Decimal("0.30"))
    assert (then.monthly_pool, then.weight_interactions, then.monthly_min_quality_posts) == (
        Decimal("2000.00"),
        Decimal("0.4"),
        20,
    )


async def test_a_month_running_or_over_and_bad_settings_are_refused(system):
    running_month = current_month(system.runtime.settings.timezone)
    for month in (running_month, month_after(running_month, -1), "2026-01"):
        refused = await change(system, month, {"monthly_pool": "2000"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "not_a_future_month"

    following = month_after(running_month)
    for settings in (
        {"voucher_amount": "60"},  # the voucher pool is not versioned
        {"program_timezone": "UTC"},  # nor the time zone
        {"qualifying_post_min_chars": 40},  # nor what makes a fact count
        {"weight_posts": "-0.1"},
        {"weight_posts": "abc"},
        {"weight_posts": 0.3},  # decimals are strings in the API
        {"weight_posts": "100.5"},
        {"weight_quality": "0.1234567"},
        {"min_posts": 2.5},
        {"min_posts": "3"},
        {"min_posts": True},
        {"min_posts": -1},
        {"monthly_pool": "100.001"},
        {"featured_post_bonus": "-1"},
        {"min_posts": None},
        {},
    ):
        refused = await change(system, following, settings)
        assert refused.status_code == 422, (settings, refused.text)
        body = refused.json()
        assert body["error"] == "validation_failed" and body["message"] and body["details"]
    for body in (
        {"effective_from": following, "settings": {"min_posts": 3}},  # no reason
        {"effective_from": "2027-13", "settings": {"min_posts": 3}, "reason": "r"},
        {"effective_from": following, "settings": {"min_posts": 3}, "reason": "r", "x": 1},
        {"effective_from": following, "settings": {"min_posts": 3}, "reason": "NUL \u0000"},
    ):
        refused = await system.client.post(URL, json=body, headers=ADMIN)
        assert refused.status_code == 422, (body, refused.text)
    lone_surrogate = b'{"effective_from": "%s", "settings": {"\\ud800": 3}, "reason": "r"}'
    refused = await system.client.post(
        URL,
        content=lone_surrogate % following.encode(),
        headers=ADMIN | {"Content-Type": "application/json"},
    )
    assert refused.status_code == 422, refused.text

    # each value fine, but with the versions recorded no weight would be left in a month
    zeroes = {"weight_posts": "0", "weight_active_days": "0", "weight_interactions": "0"}
    assert (await change(system, month_after(running_month, 2), zeroes)).status_code == 201
    refused = await change(system, following, {"weight_quality": "0"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "weights_all_zero"
    assert month_after(running_month, 2) in refused.json()["message"]
    assert len((await versions(system))["items"]) == 2  # nothing else was recorded
    unauthenticated = await system.client.get(URL)
    assert unauthenticated.status_code == 401


async def test_a_change_made_by_one_process_is_seen_by_the_next_request_of_another(
    system, database_url
):
    following = month_after(current_month(system.runtime.settings.timezone))
    async with running(system.runtime.settings, database_url) as other:
        assert (await versions(other))["items"] == (await versions(system))["items"]
        made = await change(system, following, {"featured_post_bonus": "12.50"})
        assert made.status_code == 201
        assert (await versions(other))["items"][-1] == made.json()
        preview = await other.client.get(f"/v1/admin/months/{following}/preview", headers=ADMIN)
        assert preview.status_code == 200
        settings = await other.client.get(URL, headers=ADMIN)
        assert settings.json()["items"][-1]["settings"]["featured_post_bonus"] == "12.50"


@pytest.fixture
def settings_overrides():
    return {"monthly_min_quality_posts": 3}


@pytest.mark.usefixtures("bus")
async def test_each_month_settles_by_the_version_in_force_for_it(system):
    # Made in mid-September: from October, a bigger pool, 4 posts at least, heavier interactions.
    october = {"monthly_pool": "3000.00", "min_posts": 4, "weight_interactions": "0.50"}
    await add_version(system, "2026-10", october, now=datetime(2026, 9, 15, tzinfo=UTC))
    for creator in ("c-1", "c-2"):
        await certify(system, creator, CERTIFIED)
    september, october_start = datetime(2026, 9, 3, tzinfo=UTC), datetime(2026, 10, 3, tzinfo=UTC)
    events = [
        *month_of_posts("c-1", 3, september, prefix="sep-"),
        *month_of_posts("c-2", 4, september, prefix="sep-"),
        *month_of_posts("c-1", 3, october_start, prefix="oct-"),  # enough for 3, not for 4
        *month_of_posts("c-2", 4, october_start, prefix="oct-"),
    ]
    assert (await system.post_events(events)).status_code == 202
    await system.wait_until_processed()

    live = (await system.client.get("/v1/rankings/2026-10", headers=ADMIN)).json()
    assert {e["creator_id"]: e["eligible"] for e in live["entries"]} == {
        "c-1": False,
        "c-2": True,
    }
    assert live["pool"] == "3000.00"  # the live ranking shows the pool that will be split
    month_view = await system.client.get("/v1/creators/c-1/months/2026-10", headers=ADMIN)
    assert month_view.json()["missing_to_minimum"] == 1  # 3 posts of the 4 now needed

    settled = {}
    for month in ("2026-09", "2026-10"):
        response = await system.client.post(f"/v1/admin/months/{month}/settle", headers=ADMIN)
        assert response.status_code == 200, response.text
        settled[month] = response.json()
        await system.wait_until_processed()
    assert settled["2026-09"]["pool"] == "1500.00"
    assert sum(Decimal(e["payout"]) for e in settled["2026-09"]["entries"]) == Decimal("1500.00")
    assert all(Decimal(e["payout"]) > 0 for e in settled["2026-09"]["entries"])
    assert settled["2026-10"]["pool"] == "3000.00"
    assert {e["creator_id"]: e["payout"] for e in settled["2026-10"]["entries"]} == {
        "c-1": "0.00",
        "c-2": "3000.00",
    }

    # each settlement keeps the settings it used
    recorded = {m: (await system.month("c-2", m))["settings"] for m in settled}
    assert recorded["2026-09"]["monthly_pool"] == "1500.00"
    assert recorded["2026-09"]["monthly_min_quality_posts"] == "3"
    assert recorded["2026-09"]["weight_interactions"] == "0.30"
    assert recorded["2026-10"]["monthly_pool"] == "3000.00"
    assert recorded["2026-10"]["monthly_min_quality_posts"] == "4"
    assert recorded["2026-10"]["weight_interactions"] == "0.50"

    # the badges service hears October's minimum: c-1's October was not an active month
    active = await system.sql(
        "SELECT creator_id, month, active FROM badges_settled_months ORDER BY creator_id, month"
    )
    assert [tuple(r) for r in active] == [
        ("c-1", "2026-09", True),
        ("c-1", "2026-10", False),
        ("c-2", "2026-09", True),
        ("c-2", "2026-10", True),
    ]
    shares = await system.sql(
        "SELECT month, sum(amount) AS paid FROM badges_rewards "
        "WHERE kind = 'monthly_pool_share' GROUP BY month ORDER BY month"
    )
    assert [(r["month"], r["paid"]) for r in shares] == [
        ("2026-09", Decimal("1500.00")),
        ("2026-10", Decimal("3000.00")),
    ]


@pytest.mark.usefixtures("bus")
async def test_the_featured_bonus_is_the_one_in_force_for_the_month_of_the_weeks_monday(system):
    await add_version(
        system, "2026-10", {"featured_post_bonus": "25.00"}, now=datetime(2026, 9, 15, tzinfo=UTC)
    )
    await certify(system, "c-1", CERTIFIED)
    # 2026-W40 runs from Monday 28 September: September's bonus, though its post is October's
    weeks = {
        "2026-W40": datetime(2026, 10, 2, 4, tzinfo=UTC),
        "2026-W42": datetime(2026, 10, 14, 4, tzinfo=UTC),
    }
    events = []
    for week, when in weeks.items():
        events.append(post("c-1", f"p-{week}", when))
        events += [
            interaction_created(
                "c-1", f"p-{week}", f"fan-{n}", time=(when + timedelta(hours=1)).isoformat()
            )
            for n in range(3)
        ]
    assert (await system.post_events(events)).status_code == 202
    await system.wait_until_processed()
    provisional = await system.client.get("/v1/featured/2026-W42", headers=ADMIN)
    assert provisional.json()["bonus"] == "25.00"  # what the freeze will pay

    bonuses = {}
    for week in weeks:
        frozen = await system.client.post(f"/v1/admin/weeks/{week}/freeze", headers=ADMIN)
        assert frozen.status_code == 200, frozen.text
        assert [i["post_id"] for i in frozen.json()["items"]] == [f"p-{week}"]
        bonuses[week] = frozen.json()["bonus"]
        await system.wait_until_processed()  # its week.frozen is an event to apply too
    assert bonuses == {"2026-W40": "10.00", "2026-W42": "25.00"}
    await system.wait_until_processed()
    paid = await system.sql(
        "SELECT amount, causes FROM badges_rewards WHERE kind = 'featured_post_bonus'"
    )
    assert sorted((r["amount"], w) for r in paid for w in weeks if f"week-{w}-" in r["causes"]) == [
        (Decimal("10.00"), "2026-W40"),
        (Decimal("25.00"), "2026-W42"),
    ]


async def test_the_environment_seeds_once_then_a_different_one_is_named_in_a_warning(
    database_url, caplog
):
    first = make_settings("embedded", None)
    runtimes = [Runtime(first, database_url=database_url) for _ in range(2)]
    await asyncio.gather(*(r.connect() for r in runtimes))  # two processes starting at once
    for runtime in runtimes:
        await runtime.close()

    caplog.set_level(logging.WARNING, logger="shared.program_settings")
    async with running(first, database_url) as same:
        assert len((await versions(same))["items"]) == 1
    assert not [r for r in caplog.records if r.name == "shared.program_settings"]

    changed = make_settings("embedded", None, monthly_pool="2000", weight_posts="0.30")
    async with running(changed, database_url) as system:
        listed = await versions(system)
    [warning] = [r for r in caplog.records if r.name == "shared.program_settings"]
    assert warning.levelno == logging.WARNING
    assert warning.settings == ["weight_posts", "monthly_pool"]
    message = warning.getMessage()
    assert "monthly_pool (CREATOR_ACTIVITY_MONTHLY_POOL): environment 2000" in message
    assert "weight_posts (CREATOR_ACTIVITY_WEIGHT_POSTS): environment 0.30" in message
    assert "min_posts" not in message
    # the version in force still governs; the environment only seeded the first one
    assert len(listed["items"]) == 1
    assert listed["in_force"]["monthly_pool"] == "1500.00"
