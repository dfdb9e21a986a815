"""The monthly program end to end, on both buses: facts in any order, qualifying posts,
interactions, scores, the live ranking, an exact settlement, late events, the streak gift.

The minimum is 3 qualifying posts here (a setting) so a month needs few events."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.system import ADMIN, interaction_created, post_created, run_cli
from tests.test_vouchers import certify

pytestmark = pytest.mark.usefixtures("bus")

OCT = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)
CERTIFIED = datetime(2026, 7, 1, tzinfo=UTC)
_rng = random.Random(7)


def text(n: int = 60) -> str:
    """A Chinese text no other post resembles."""
    return "".join(chr(_rng.randrange(0x4E00, 0x9FA5)) for _ in range(n))


def post(creator: str, post_id: str, when: datetime, body: str | None = None, **fields):
    return post_created(creator, post_id, time=when.isoformat(), text=body or text(), **fields)


def event(type_: str, when: datetime, **data) -> dict:
    return {
        "id": f"{type_}-{data.get('post_id')}-{data.get('actor_id', '')}-{_rng.random()}",
        "type": type_,
        "time": when.isoformat(),
        "data": data,
    }


@pytest.fixture
def settings_overrides():
    return {"monthly_min_quality_posts": 3}


def month_of_posts(creator: str, count: int, start: datetime, prefix: str = "") -> list[dict]:
    return [
        post(creator, f"{prefix}{creator}-p{n}", start + timedelta(days=n)) for n in range(count)
    ]


async def month_view(system, creator: str, month: str, **headers) -> dict:
    response = await system.client.get(
        f"/v1/creators/{creator}/months/{month}", headers=ADMIN | headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def late_events(system) -> float:
    metrics = (await system.client.get("/metrics")).text
    name = "creator_activity_scoring_late_events_total "
    [line] = [m for m in metrics.splitlines() if m.startswith(name)]
    return float(line.split()[-1])


async def settle(system, month: str):
    return await system.client.post(f"/v1/admin/months/{month}/settle", headers=ADMIN)


FILLERS = {f"f-{n:02d}": n % 6 for n in range(30)}  # 0 to 5 posts each: ~50 creators in all


async def test_a_month_from_events_to_an_exact_settlement_and_a_gift(system):
    eligible = [f"c-{n:02d}" for n in range(10)]
    for creator in [*eligible, "c-10", "c-11", "c-17", "c-18", "c-19", *FILLERS]:
        await certify(system, creator, CERTIFIED)
    await certify(system, "c-15", datetime(2026, 11, 10, tzinfo=UTC))  # after October ended

    events = []
    for creator in eligible:
        events += month_of_posts(creator, 4, OCT)
    events += month_of_posts("c-10", 2, OCT)  # two short of the minimum
    fillers = FILLERS
    for creator, count in fillers.items():
        events += month_of_posts(creator, count, OCT + timedelta(hours=2))
    events += month_of_posts("c-15", 4, OCT)  # certified after the month: not ranked
    events += month_of_posts("c-16", 4, OCT)  # never certified: shown, not ranked
    # c-17 copies c-00's posts with small edits: near-duplicates, nothing qualifies
    originals = {e["data"]["post_id"]: e["data"]["text"] for e in events[:4]}
    for n, body in enumerate(originals.values()):
        edited = body[:30] + "，" + body[30:50] + "的" + body[51:] + "。"  # one character
        events.append(post("c-17", f"c-17-p{n}", OCT + timedelta(days=n, hours=5), edited))
    # c-18's copy is processed first; c-19's original (earlier by event time) arrives after it
    shared_text = text(80)
    events.append(post("c-18", "c-18-copy", OCT + timedelta(hours=3), shared_text + "。"))
    # c-01: a deletion that arrives before its post; c-02: removed and low quality verdicts
    events.append(event("post.deleted", OCT, creator_id="c-01", post_id="c-01-p3"))
    events.append(
        event(
            "post.moderated",
            OCT + timedelta(days=9),
            creator_id="c-02",
            post_id="c-02-p0",
            verdict="removed",
        )
    )
    # c-03: a repost does not count; c-04: too short and an image post with a little text
    events += [
        post("c-03", "c-03-repost", OCT, kind="repost"),
        post("c-04", "c-04-short", OCT, body="字" * 49),
        post("c-04", "c-04-image", OCT, body="看图", image_count=1),
        # 00:30 on 1 November in UTC+8 is still October in UTC: November for the program
        post("c-05", "c-05-november", datetime(2026, 10, 31, 16, 30, tzinfo=UTC)),
    ]
    # Interactions on c-00: a repeated like counts once, a self-like zero, 4 shares by one
    # actor on one day are capped (12 → 10), a comment then its removal counts zero.
    day = OCT + timedelta(days=1, hours=1)
    events += [
        interaction_created("c-00", "c-00-p0", "a-1", time=day.isoformat()),
        interaction_created("c-00", "c-00-p0", "a-1", time=day.isoformat()),
        interaction_created("c-00", "c-00-p0", "c-00", time=day.isoformat()),
        *[
            interaction_created("c-00", f"c-00-p{n}", "a-2", kind="share", time=day.isoformat())
            for n in range(4)
        ],
        interaction_created("c-00", "c-00-p1", "a-3", kind="comment", time=day.isoformat()),
        event(
            "interaction.deleted",
            day + timedelta(minutes=5),
            creator_id="c-00",
            post_id="c-00-p1",
            actor_id="a-3",
            kind="comment",
        ),
    ]
    _rng.shuffle(events)  # arrival order must not matter
    for start in range(0, len(events), 25):
        response = await system.post_events(events[start : start + 25])
        assert response.status_code == 202, response.text
    await system.post_events([post("c-19", "c-19-original", OCT + timedelta(hours=1), shared_text)])
    await system.wait_until_processed()

    views = {
        c: await month_view(system, c, "2026-10")
        for c in [*eligible, "c-10", "c-15", "c-16", "c-17", "c-18", "c-19"]
    }
    assert views["c-00"]["interactions"] == 11
    assert views["c-01"]["qualifying_posts"] == 3  # p3 deleted before it arrived
    assert views["c-02"]["qualifying_posts"] == 3  # p0 removed
    assert views["c-03"]["qualifying_posts"] == 4  # the repost is not counted
    assert views["c-04"]["qualifying_posts"] == 5  # 4 + the image post; not the short one
    assert views["c-05"]["qualifying_posts"] == 4  # its 1 November post is November's
    assert views["c-17"]["qualifying_posts"] == 0
    assert {r["code"] for p in views["c-17"]["non_qualifying_posts"] for r in p["reasons"]} == {
        "near_duplicate"
    }
    assert views["c-18"]["qualifying_posts"] == 0 and views["c-19"]["qualifying_posts"] == 1
    assert views["c-10"]["missing_to_minimum"] == 1 and not views["c-10"]["eligible"]
    assert not views["c-15"]["certified"] and views["c-15"]["rank"] is None
    assert not views["c-16"]["eligible"] and views["c-16"]["rank"] is None
    zh = await month_view(system, "c-04", "2026-10", **{"Accept-Language": "zh-CN"})
    [short] = [p for p in zh["non_qualifying_posts"] if p["post_id"] == "c-04-short"]
    assert short["reasons"][0]["code"] == "too_short" and "49" in short["reasons"][0]["message"]

    live = (await system.client.get("/v1/rankings/2026-10", headers=ADMIN)).json()
    assert live["status"] == "provisional"
    ranked = [e["creator_id"] for e in live["entries"]]
    active_fillers = {c for c, n in FILLERS.items() if n}
    assert set(ranked) == {*eligible, "c-10", "c-17", "c-18", "c-19", *active_fillers}
    assert [e["rank"] for e in live["entries"]] == list(range(1, len(ranked) + 1))
    scores = [Decimal(e["score"]) for e in live["entries"]]
    assert scores == sorted(scores, reverse=True)
    assert all(e["payout"] is None for e in live["entries"])

    # settle: exact split among the eligible, idempotent
    first = await settle(system, "2026-10")
    assert first.status_code == 200, first.text
    settled = first.json()
    payouts = {e["creator_id"]: Decimal(e["payout"]) for e in settled["entries"]}
    assert sum(payouts.values()) == Decimal("1500.00")
    eligible_fillers = {c for c, n in FILLERS.items() if n >= 3}
    assert {c for c, p in payouts.items() if p > 0} == {*eligible, *eligible_fillers}
    assert all(payouts[c] == Decimal("0.00") for c in ("c-10", "c-17", "c-18", "c-19"))
    again = await settle(system, "2026-10")
    assert again.json() == settled
    # each creator's month, settled, shows what it showed live: its score and how it was made
    for creator in ("c-00", "c-04", "c-10"):
        frozen = await month_view(system, creator, "2026-10")
        assert frozen["components"] and frozen["components"] == views[creator]["components"]
        live_view = views[creator]
        assert (frozen["score"], frozen["rank"]) == (live_view["score"], live_view["rank"])
    assert (await system.client.get("/v1/rankings/2026-10", headers=ADMIN)).json()[
        "entries"
    ] == settled["entries"]

    # a late event for the settled month is kept and changes nothing paid
    late_before = await late_events(system)
    await system.post_events(month_of_posts("c-10", 3, OCT + timedelta(days=15), prefix="late-"))
    await system.wait_until_processed()
    assert (await month_view(system, "c-10", "2026-10"))["payout"] == "0.00"
    assert (await settle(system, "2026-10")).json() == settled
    assert await late_events(system) == late_before + 1  # c-10's October, touched late

    # the badges service pays the shares once and, after three active months settled out of
    # order, gives c-00 its merch gift
    for month, start in (
        ("2026-08", datetime(2026, 8, 3, tzinfo=UTC)),
        ("2026-09", datetime(2026, 9, 3, tzinfo=UTC)),
    ):
        await system.post_events(month_of_posts("c-00", 3, start, prefix=month))
    await system.wait_until_processed()
    for month in ("2026-08", "2026-09"):
        assert (await settle(system, month)).status_code == 200
        await system.wait_until_processed()  # its own month.settled is an event to apply too
    await system.wait_until_processed()
    shares = await system.sql(
        "SELECT creator_id, month, amount FROM badges_rewards WHERE kind = 'monthly_pool_share'"
    )
    october = {r["creator_id"]: r["amount"] for r in shares if r["month"] == "2026-10"}
    assert october == {c: p for c, p in payouts.items() if p > 0}
    assert {r["month"] for r in shares if r["creator_id"] == "c-00"} == {
        "2026-08",
        "2026-09",
        "2026-10",
    }
    gifts = await system.sql(
        "SELECT creator_id, month FROM badges_rewards WHERE kind = 'merch_gift'"
    )
    assert [tuple(g) for g in gifts] == [("c-00", "2026-10")]
    quiet = await system.sql(
        "SELECT active FROM badges_settled_months WHERE creator_id = 'c-11' AND month = '2026-10'"
    )
    assert [r["active"] for r in quiet] == [False]  # certified, no activity: an inactive month
    creator = (await system.client.get("/v1/creators/c-00", headers=ADMIN)).json()
    assert creator["streak"] == {"consecutive_active_months": 3, "last_active_month": "2026-10"}


async def test_settling_too_early_or_behind_is_a_409(system):
    current = datetime.now(UTC).astimezone(system.runtime.settings.timezone).strftime("%Y-%m")
    early = await settle(system, current)
    assert early.status_code == 409 and early.json()["error"] == "month_not_over"

    await system.runtime.stop_workers()  # accepted, not applied
    await system.post_events([post("c-1", "c-1-p0", OCT)])
    behind = await settle(system, "2026-10")
    assert behind.status_code == 409 and behind.json()["error"] == "not_caught_up"
    assert behind.headers["Retry-After"]
    await system.restart_workers()
    await system.wait_until_processed()
    first, second = await asyncio.gather(settle(system, "2026-10"), settle(system, "2026-10"))
    assert first.status_code == second.status_code == 200  # two operators at once: one result
    assert first.json() == second.json()
    [row] = await system.sql("SELECT count(*) AS n FROM events WHERE type = 'month.settled'")
    assert row["n"] == 1


async def test_rescore_rebuilds_provisional_months_after_a_rule_change(system):
    await certify(system, "c-1", CERTIFIED)
    await system.post_events(month_of_posts("c-1", 3, OCT))
    await system.post_events(month_of_posts("c-1", 2, datetime(2026, 9, 3, tzinfo=UTC)))
    await system.wait_until_processed()
    assert (await settle(system, "2026-09")).status_code == 200
    await system.wait_until_processed()
    september = await month_view(system, "c-1", "2026-09")

    stricter = {"CREATOR_ACTIVITY_QUALIFYING_POST_MIN_CHARS": "100"}  # every text has 60
    code, output = await run_cli(system.database_url, "rescore", **stricter)
    assert code == 0 and "creator-months rebuilt" in output, output
    assert (await month_view(system, "c-1", "2026-10"))["qualifying_posts"] == 0
    assert await month_view(system, "c-1", "2026-09") == september  # settled: never recomputed
