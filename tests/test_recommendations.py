"""Reward 5, end to end on both buses: recommended follows (activity in the last 30 days,
follower growth, newcomers interleaved, certified creators only) and the leaderboard's display
names, badges and rank change between daily snapshots.

"The last 30 days" is relative to the server's clock, so events are built from `now`. The
monthly minimum is 3 qualifying posts here (a setting) so a few posts give a score."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.scoring import leaderboard, standings
from shared import db
from tests.system import ADMIN, post_created

pytestmark = pytest.mark.usefixtures("bus")

_rng = random.Random(5)
LONG_AGO = timedelta(days=200)


@pytest.fixture
def settings_overrides():
    return {"monthly_min_quality_posts": 3, "recommendation_newcomer_every": 3}


def text(n: int = 60) -> str:
    """A Chinese text no other post resembles."""
    return "".join(chr(_rng.randrange(0x4E00, 0x9FA5)) for _ in range(n))


def posts(creator: str, moments: list[datetime]) -> list[dict]:
    return [
        post_created(creator, f"{creator}-p{n}-{_rng.random()}", time=m.isoformat(), text=text())
        for n, m in enumerate(moments)
    ]


def followers(creator: str, when: datetime, count: int) -> dict:
    return {
        "id": f"followers-{creator}-{when.isoformat()}",
        "type": "creator.followers_changed",
        "time": when.isoformat(),
        "source": "square",
        "data": {"creator_id": creator, "followers": count},
    }


async def certify(system, creator_id: str, certified_at: datetime, name: str | None = None):
    form = {
        "creator_id": creator_id,
        "display_name": name or f"Name of {creator_id}",
        "platforms": [
            {"platform": "x", "handle": creator_id, "followers": 5000, "verified": False}
        ],
    }
    applied = await system.client.post("/v1/applications", json=form, headers=ADMIN)
    assert applied.status_code == 201, applied.text
    approved = await system.client.post(
        f"/v1/admin/applications/{applied.json()['id']}/approve",
        json={"certified_at": certified_at.isoformat()},
        headers=ADMIN,
    )
    assert approved.status_code == 200, approved.text


async def send(system, events: list[dict]) -> None:
    response = await system.post_events(events)
    assert response.status_code == 202, response.text


async def recommended(system, **params) -> list[dict]:
    response = await system.client.get("/v1/recommendations/creators", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_recommended_follows(system):
    now = datetime.now(UTC)
    recent = [now - timedelta(days=d, minutes=5) for d in (0, 1, 2)]  # three active days
    established = ["r-a", "r-b", "r-ooo", "r-x1", "r-x2", "r-old"]
    for creator in established:
        await certify(system, creator, now - LONG_AGO)
    await certify(system, "r-new", now - timedelta(days=10))  # a newcomer

    events = []
    for creator in ["r-a", "r-b", "r-ooo", "r-x1", "r-x2", "r-uncertified"]:
        events += posts(creator, recent)
    events += posts("r-new", recent[:1])  # one post: the lowest blend
    events += posts("r-old", [now - timedelta(days=d) for d in (31, 35, 40)])  # inactive
    # r-b grows from 1,000 to 3,000 followers; r-a stays; r-ooo grows like r-b, its events
    # arriving newest first (below, in a later batch)
    history = [(now - timedelta(days=40), 1000), (now - timedelta(days=5), 2000)]
    history.append((now - timedelta(hours=1), 3000))
    events += [followers("r-b", when, count) for when, count in history]
    events += [followers("r-a", when, 1000) for when, _ in history]
    events.append(followers("r-x1", now - timedelta(hours=2), 2**63 - 1))  # one count: no growth
    events += [followers("r-uncertified", when, count * 10) for when, count in history]
    events += [followers("r-old", when, count * 10) for when, count in history]
    await send(system, events)
    await send(system, [followers("r-ooo", when, count) for when, count in reversed(history)])
    await system.wait_until_processed()

    items = await recommended(system)
    by_id = {item["creator_id"]: item for item in items}
    # inactive and not certified creators are never recommended, whatever their growth
    assert set(by_id) == {"r-a", "r-b", "r-ooo", "r-x1", "r-x2", "r-new"}
    # follower growth lifts r-b above r-a (same posts, same monthly score)
    a, b, ooo = by_id["r-a"], by_id["r-b"], by_id["r-ooo"]
    assert a["recent_score"] == b["recent_score"] and Decimal(a["recent_score"]) > 0
    assert a["activity"] == b["activity"] == "0.100000"  # 3 of 30 days
    assert Decimal(a["growth"]) == 0 and Decimal(b["growth"]) > 0
    assert Decimal(b["score"]) > Decimal(a["score"])
    assert (b["followers"], b["followers_before"]) == (3000, 1000)
    # the same follower facts in another arrival order give the same result
    assert {k: v for k, v in ooo.items() if k not in ("creator_id", "display_name")} == {
        k: v for k, v in b.items() if k not in ("creator_id", "display_name")
    }
    assert b["display_name"] == "Name of r-b"
    # the diversity rule: a newcomer in every 3 slots; r-new's blend is the lowest but it
    # takes the 3rd slot; the others keep score order (ties by creator id)
    assert all(Decimal(by_id["r-new"]["score"]) < Decimal(i["score"]) for i in items[:2])
    assert [i["creator_id"] for i in items] == ["r-b", "r-ooo", "r-new", "r-a", "r-x1", "r-x2"]
    assert [i["newcomer"] for i in items] == [False, False, True, False, False, False]
    # `limit` pages the list and is capped
    assert [i["creator_id"] for i in await recommended(system, limit=2)] == ["r-b", "r-ooo"]
    assert len(await recommended(system, limit=100_000)) == 6
    bad = await system.client.get("/v1/recommendations/creators?limit=0", headers=ADMIN)
    assert bad.status_code == 422


SEPTEMBER = datetime(2026, 9, 10, 4, 0, tzinfo=UTC)
MONTH = "2026-09"


async def ranking(system) -> dict[str, dict]:
    response = await system.client.get(f"/v1/rankings/{MONTH}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "provisional"
    return {e["creator_id"]: e for e in body["entries"]}


def day_of(moment: datetime, system) -> str:
    return leaderboard.program_day(moment, system.runtime.settings)


async def test_leaderboard_names_badges_and_rank_change(system):
    settings = system.runtime.settings
    for creator in ["l-a", "l-b", "l-c", "l-d"]:
        await certify(system, creator, SEPTEMBER - LONG_AGO, name=f"创作者 {creator}")
    hours = [SEPTEMBER + timedelta(days=n) for n in range(8)]
    await send(
        system,
        posts("l-a", hours[:4])
        + posts("l-b", hours[:3])
        + posts("l-c", hours[:2])
        + posts("l-z", hours),  # never certified: not on the leaderboard
    )
    await system.wait_until_processed()

    first = await ranking(system)  # today's snapshot is the refresher's, not this read's
    assert set(first) == {"l-a", "l-b", "l-c"}
    assert [first[c]["rank"] for c in ("l-a", "l-b", "l-c")] == [1, 2, 3]
    assert first["l-a"]["display_name"] == "创作者 l-a"
    assert all(e["badges"] == ["certification"] for e in first.values())
    assert all(e["rank_change"] is None for e in first.values())  # no earlier snapshot

    # yesterday's snapshot, the day injected: the ranks as they stand now
    now = datetime.now(UTC)
    yesterday = day_of(now - timedelta(days=1), system)
    engine = db.create_engine(system.database_url, settings)
    try:
        async with db.create_sessionmaker(engine)() as session, session.begin():
            ranks = {
                s.creator_id: s.rank
                for s in await standings.standings(session, settings, MONTH)
                if s.rank
            }
            assert await leaderboard.take_snapshot(session, MONTH, yesterday, ranks, now)

        # the facts change: l-c overtakes everyone, l-d joins
        await send(system, posts("l-c", hours[2:8]) + posts("l-d", hours[:1]))
        await system.wait_until_processed()

        async with db.create_sessionmaker(engine)() as session, session.begin():
            # at most once a day: a second snapshot of yesterday changes nothing
            assert not await leaderboard.take_snapshot(session, MONTH, yesterday, {}, now)
    finally:
        await engine.dispose()

    after = await ranking(system)
    assert [after[c]["rank"] for c in ("l-c", "l-a", "l-b", "l-d")] == [1, 2, 3, 4]
    # previous day's rank − current rank (against yesterday, not today's own snapshot)
    assert after["l-c"]["rank_change"] == 2
    assert after["l-a"]["rank_change"] == -1 and after["l-b"]["rank_change"] == -1
    assert after["l-d"]["rank_change"] is None  # not in the previous snapshot
    assert after == await ranking(system)  # the same all day
    today = day_of(now, system)
    rows = await system.sql(
        "SELECT day, count(*) AS n FROM scoring_rank_snapshots WHERE month = $1 GROUP BY day "
        "ORDER BY day",
        MONTH,
    )
    # one snapshot a day (today's taken by the first refresh of the day, whenever it ran)
    assert [r["day"] for r in rows] == [yesterday, today] and rows[0]["n"] == 3


async def test_the_days_snapshot_is_taken_without_a_read(system):
    """The scoring process's background refresher takes a provisional month's rank snapshot
    of the day: no read of the ranking is needed (nor does a read write one)."""
    settings = system.runtime.settings
    for creator in ["n-a", "n-b"]:
        await certify(system, creator, SEPTEMBER - LONG_AGO)
    hours = [SEPTEMBER + timedelta(days=n) for n in range(3)]
    await send(system, posts("n-a", hours) + posts("n-b", hours[:2]))
    await system.wait_until_processed()
    today = day_of(datetime.now(UTC), system)
    query = (
        "SELECT s.creator_id, s.rank FROM scoring_rank_snapshots s "
        "JOIN scoring_rank_snapshot_days d USING (month, day) "
        "WHERE s.month = $1 AND s.day = $2 ORDER BY s.rank"
    )
    rows = []
    for _ in range(300):  # the refresher runs every 0.5 s here: 30 s at most
        rows = await system.sql(query, MONTH, today)
        if rows:
            break
        await asyncio.sleep(0.1)
    # the ranks of the table as the refresher found it (once a day: possibly before the last
    # batch), whole: ranks 1..n of these creators
    assert rows and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["creator_id"] for r in rows} <= {"n-a", "n-b"}
    # and the ranking read then compares with an earlier day only: no change shown today
    assert all(e["rank_change"] is None for e in (await ranking(system)).values())
    ranked = [s for s in await exact_standings(system, settings) if s.rank]
    assert [s.creator_id for s in ranked] == ["n-a", "n-b"]


async def exact_standings(system, settings):
    engine = db.create_engine(system.database_url, settings)
    try:
        async with db.create_sessionmaker(engine)() as session:
            return await standings.standings(session, settings, MONTH)
    finally:
        await engine.dispose()
