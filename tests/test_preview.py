"""What-if before changing rules, end to end on both buses: the settlement October would get with
a heavier interactions weight or a higher minimum, beside the current one; the current side is
the settlement that settling then gives; a preview writes nothing.

October, minimum 3 qualifying posts (a setting), every post's quality pinned by moderation:

    creator  posts (days)  quality  interactions (weighted)
    c-a      6 (6)         1.0      0
    c-b      3 (3)         0.5      9 (nine fans' likes)
    c-c      3 (3)         0.5      0
    c-d      2 (2)         0.9      0   (below the minimum: ranked, not paid)

Divisors (largest among the eligible a, b, c): posts 6, days 6, ln(1 + interactions) ln 10,
quality 1. Components of b: 0.5, 0.5, 1, 0.5; of c: 0.5, 0.5, 0, 0.5; of a: 1, 1, 0, 1.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.system import ADMIN, interaction_created
from tests.test_monthly_program import event, post
from tests.test_vouchers import certify

OCT = datetime(2026, 10, 5, 4, 0, tzinfo=UTC)  # 12:00 in the program zone
CERTIFIED = datetime(2026, 7, 1, tzinfo=UTC)
D = Decimal


@pytest.fixture
def settings_overrides():
    return {"monthly_min_quality_posts": 3}


async def october(system) -> None:
    for creator in ("c-a", "c-b", "c-c", "c-d"):
        await certify(system, creator, CERTIFIED)
    events = []
    for creator, count, quality in (("c-a", 6, 1.0), ("c-b", 3, 0.5), ("c-c", 3, 0.5)) + (
        ("c-d", 2, 0.9),
    ):
        for n in range(count):
            when = OCT + timedelta(days=n)
            post_id = f"{creator}-p{n}"
            events.append(post(creator, post_id, when))
            events.append(
                event(
                    "post.moderated",
                    when + timedelta(hours=1),
                    creator_id=creator,
                    post_id=post_id,
                    verdict="approved",
                    quality_score=quality,
                )
            )
    fans = OCT + timedelta(hours=2)
    events += [
        interaction_created("c-b", "c-b-p0", f"fan-{n}", time=fans.isoformat()) for n in range(9)
    ]
    response = await system.post_events(events)
    assert response.status_code == 202, response.text
    await system.wait_until_processed()


async def preview(system, month: str = "2026-10", **params):
    return await system.client.get(
        f"/v1/admin/months/{month}/preview", params=params, headers=ADMIN
    )


def by_creator(body: dict, side: str) -> dict[str, tuple]:
    return {
        c["creator_id"]: (c[side]["rank"], D(c[side]["score"]), D(c[side]["payout"]))
        for c in body["creators"]
    }


# Current weights 0.25, 0.25, 0.30, 0.20:
#   a = 0.25 + 0.25 + 0 + 0.20 = 0.70; b = 0.125 + 0.125 + 0.30 + 0.10 = 0.65;
#   c = 0.125 + 0.125 + 0.10 = 0.35; d = 0.25 × 2/6 × 2 + 0.20 × 0.9 = 0.346667 (not eligible).
#   1500 × (0.70, 0.65, 0.35) / 1.70 = 617.647…, 573.529…, 308.823…: floors 617.64, 573.52,
#   308.82 leave 2 cents, to the largest remainders b (.94) and a (.71).
CURRENT = {
    "c-a": (1, D("0.700000"), D("617.65")),
    "c-b": (2, D("0.650000"), D("573.53")),
    "c-c": (3, D("0.350000"), D("308.82")),
    "c-d": (4, D("0.346667"), D("0.00")),
}
# weight_interactions 0.90: b = 0.25 + 0.90 + 0.10 = 1.25, the others unchanged; Σ 2.30.
#   1500 × (0.70, 1.25, 0.35) / 2.30 = 456.521…, 815.217…, 228.260…: the cent left goes to b.
HEAVIER_INTERACTIONS = {
    "c-b": (1, D("1.250000"), D("815.22")),
    "c-a": (2, D("0.700000"), D("456.52")),
    "c-c": (3, D("0.350000"), D("228.26")),
    "c-d": (4, D("0.346667"), D("0.00")),
}


@pytest.mark.usefixtures("bus")
async def test_a_heavier_interactions_weight_beside_the_settlement_it_would_replace(system):
    await october(system)

    response = await preview(system, weight_interactions="0.90")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "provisional" and body["changed"] == ["weight_interactions"]
    assert by_creator(body, "current") == CURRENT
    assert by_creator(body, "preview") == HEAVIER_INTERACTIONS
    assert [c["creator_id"] for c in body["creators"]] == ["c-b", "c-a", "c-c", "c-d"]
    differences = {c["creator_id"]: c["difference"] for c in body["creators"]}
    assert differences == {
        "c-a": {"rank": -1, "payout": "-161.13"},
        "c-b": {"rank": 1, "payout": "241.69"},
        "c-c": {"rank": 0, "payout": "-80.56"},
        "c-d": {"rank": 0, "payout": "0.00"},
    }
    assert body["current"]["settings"]["weight_interactions"] == "0.30"
    assert body["preview"]["settings"] == body["current"]["settings"] | {
        "weight_interactions": "0.90"
    }
    assert body["current"]["paid"] == body["preview"]["paid"] == "1500.00"
    [b] = [c for c in body["creators"] if c["creator_id"] == "c-b"]
    assert (b["qualifying_posts"], b["active_days"], b["interactions"], b["quality"]) == (
        3,
        3,
        9,
        "0.500000",
    )

    # a higher minimum: only c-a is eligible, and the interactions' divisor is then 0
    stricter = (await preview(system, min_posts=4)).json()
    assert {c: p for c, (_, _, p) in by_creator(stricter, "preview").items()} == {
        "c-a": D("1500.00"),
        "c-b": D("0.00"),
        "c-c": D("0.00"),
        "c-d": D("0.00"),
    }
    assert stricter["preview"]["eligible_creators"] == 1
    assert stricter["current"]["eligible_creators"] == 3

    # no weight at all: every score 0, the pool split equally among the eligible
    zero = {"weight_posts": "0", "weight_active_days": "0", "weight_interactions": "0"}
    equal = (await preview(system, **zero, weight_quality="0")).json()
    assert by_creator(equal, "preview") == {
        "c-a": (1, D("0.000000"), D("500.00")),
        "c-b": (2, D("0.000000"), D("500.00")),
        "c-c": (3, D("0.000000"), D("500.00")),
        "c-d": (4, D("0.000000"), D("0.00")),
    }

    # the current side is what settling gives
    settled = await system.client.post("/v1/admin/months/2026-10/settle", headers=ADMIN)
    assert settled.status_code == 200, settled.text
    paid = {
        e["creator_id"]: (e["rank"], D(e["score"]), D(e["payout"]))
        for e in settled.json()["entries"]
    }
    assert paid == CURRENT

    # once settled, "current" is the settlement as recorded; the same facts give the same what-if
    after = (await preview(system, weight_interactions="0.90")).json()
    assert after["status"] == "settled"
    assert by_creator(after, "current") == CURRENT
    assert by_creator(after, "preview") == HEAVIER_INTERACTIONS
    unchanged = (await preview(system)).json()
    assert unchanged["changed"] == []
    assert all(c["difference"] == {"rank": 0, "payout": "0.00"} for c in unchanged["creators"])


async def everything(system) -> dict[str, list[str]]:
    """Every row of every table, as text."""
    tables = await system.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    rows = {}
    for table in (t["tablename"] for t in tables):
        records = await system.sql(f'SELECT * FROM "{table}"')
        rows[table] = sorted(repr(tuple(r)) for r in records)
    return rows


@pytest.mark.usefixtures("bus")
async def test_a_preview_changes_nothing(system):
    await october(system)
    await system.runtime.stop_workers()  # nothing else writes while the tables are compared
    before = await everything(system)
    assert before["scoring_creator_months"]  # the month is there to be previewed
    for params in ({}, {"weight_interactions": "0.90"}, {"min_posts": 0, "monthly_pool": "10"}):
        assert (await preview(system, **params)).status_code == 200
    assert await everything(system) == before

    await system.restart_workers()
    assert (await system.client.post("/v1/admin/months/2026-10/settle", headers=ADMIN)).is_success
    await system.wait_until_processed()
    await system.runtime.stop_workers()
    before = await everything(system)
    assert (await preview(system, weight_quality="0.5", min_posts=2)).status_code == 200
    assert await everything(system) == before


BAD = [
    {"weight_posts": "-0.1"},
    {"weight_quality": "abc"},
    {"weight_interactions": "0.1234567"},  # more than 6 decimals
    {"weight_posts": "101"},
    {"weight_posts": "NaN"},
    {"min_posts": "-1"},
    {"min_posts": "2.5"},
    {"monthly_pool": "10.001"},
    {"monthly_pool": "-1"},
]


async def test_a_bad_setting_is_a_422_and_a_month_without_activity_previews_empty(system):
    for params in BAD:
        response = await preview(system, **params)
        assert response.status_code == 422, (params, response.text)
        body = response.json()
        assert body["error"] == "validation_failed" and body["message"] and body["details"]
    bad_month = await preview(system, month="2026-13")
    assert bad_month.status_code == 422

    empty = await preview(system, month="2026-09", weight_posts="1")
    assert empty.status_code == 200, empty.text
    assert empty.json()["creators"] == [] and empty.json()["preview"]["paid"] == "0.00"
