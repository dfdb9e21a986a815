"""Precomputed standings and recommendations (services/scoring/standings_table.py,
recommendations.py, freshness.py): what the ranking page, the creator month view and the
recommended follows serve equals a fresh computation after a stream of events (both buses);
a stale table is refreshed when its version moves; with a refresh interval a read within it
serves the previous table; readers during a refresh get whole pages; display names backfilled
by migration 0008.

The tests' settings refresh on every read after a change (`standings_refresh_seconds=0`)."""

from __future__ import annotations

import asyncio
import random
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from services.scoring import recommendations, standings, standings_table
from services.scoring.recommendations_api import RecommendedCreator
from shared import db
from shared.migrate import upgrade
from shared.program_time import month_of
from tests.system import ADMIN, interaction_created, post_created
from tests.test_recommendations import LONG_AGO, certify, followers, send

_rng = random.Random(8)


def text(n: int = 60) -> str:
    """A Chinese text no other post resembles."""
    return "".join(chr(_rng.randrange(0x4E00, 0x9FA5)) for _ in range(n))


def post(creator: str, post_id: str, when: datetime) -> dict:
    return post_created(creator, post_id, time=when.isoformat(), text=text())


def like(creator: str, post_id: str, actor: str, when: datetime, kind: str = "like") -> dict:
    return interaction_created(creator, post_id, actor, kind=kind, time=when.isoformat())


def post_event(type_: str, creator: str, post_id: str, when: datetime, **data) -> dict:
    return {
        "id": f"{type_}-{post_id}-{_rng.random()}",
        "type": type_,
        "time": when.isoformat(),
        "data": {"creator_id": creator, "post_id": post_id, **data},
    }


@pytest.fixture
def settings_overrides():
    return {"monthly_min_quality_posts": 3, "recommendation_newcomer_every": 3}


@asynccontextmanager
async def fresh_session(system):
    """A session of the test's own, for the fresh (exact) computations."""
    engine = db.create_engine(system.database_url, system.runtime.settings)
    try:
        async with db.create_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        await engine.dispose()


async def get(system, path: str, **params) -> dict:
    response = await system.client.get(path, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def entry_of(standing) -> tuple:
    return (
        standing.rank,
        standing.creator_id,
        standing.score,
        standing.qualifying_posts,
        standing.active_days,
        standing.interactions,
        standing.quality,
        standing.eligible,
    )


def served_entry(entry: dict) -> tuple:
    return (
        entry["rank"],
        entry["creator_id"],
        Decimal(entry["score"]),
        entry["qualifying_posts"],
        entry["active_days"],
        entry["interactions"],
        Decimal(entry["quality"]),
        entry["eligible"],
    )


async def assert_served_is_fresh(system, months: set[str]) -> None:
    """Ranking pages, every creator's month view and the recommendations, as served, equal the
    exact computation on the facts as they are now."""
    settings = system.runtime.settings
    async with fresh_session(system) as session:
        exact = {m: await standings.standings(session, settings, m) for m in months}
        now = datetime.now(UTC)
        fresh = await recommendations.recommend(
            session, settings, settings.recommendations_max, now
        )
    for month, every in exact.items():
        ranked = sorted((s for s in every if s.rank), key=lambda s: s.rank)
        body = await get(system, f"/v1/rankings/{month}", limit=500)
        assert body["total"] == len(ranked)
        assert [served_entry(e) for e in body["entries"]] == [entry_of(s) for s in ranked]
        # pages of two: the same entries, split
        second = await get(system, f"/v1/rankings/{month}", limit=2, offset=2)
        assert [served_entry(e) for e in second["entries"]] == [entry_of(s) for s in ranked[2:4]]
        for s in every:  # ranked or not (never certified)
            view = await system.month(s.creator_id, month)
            assert Decimal(view["score"]) == s.score
            assert view["rank"] == s.rank
            assert view["eligible"] == s.eligible and view["certified"] == s.stats.certified
            assert view["components"] == s.explain()
            assert view["qualifying_posts"] == s.qualifying_posts
            assert view["interactions"] == s.interactions
    served = (await get(system, "/v1/recommendations/creators", limit=100))["items"]
    assert served == [RecommendedCreator(**vars(r)).model_dump(mode="json") for r in fresh]


async def test_served_standings_equal_a_fresh_computation(system, bus):
    now = datetime.now(UTC)
    for creator in ["s-a", "s-b", "s-c", "s-d"]:
        await certify(system, creator, now - LONG_AGO)
    await certify(system, "s-new", now - timedelta(days=5))  # a newcomer
    earlier = now - timedelta(days=33)  # last month (or the one before): its own ranking
    days = [now - timedelta(days=d, hours=1) for d in range(4)]
    months = {month_of(m, system.runtime.settings.timezone) for m in [earlier, *days]}

    # wave 1: posts, this month and earlier
    wave = []
    for creator, count in [("s-a", 4), ("s-b", 3), ("s-c", 2), ("s-u", 4), ("s-new", 1)]:
        wave += [post(creator, f"{creator}-p{n}", days[n % 4]) for n in range(count)]
    wave += [post("s-d", f"s-d-old{n}", earlier + timedelta(hours=n)) for n in range(3)]
    await send(system, wave)
    await system.wait_until_processed()
    await assert_served_is_fresh(system, months)

    # wave 2: interactions (some self-likes), followers, a late certification of s-u
    wave = [like("s-b", "s-b-p0", f"fan-{n}", days[0]) for n in range(6)]
    wave += [
        like("s-c", "s-c-p1", "fan-1", days[0], kind="share"),
        like("s-a", "s-a-p0", "s-a", days[0]),
    ]
    wave += [followers("s-b", now - timedelta(days=20), 1000), followers("s-b", now, 4000)]
    await send(system, wave)
    await certify(system, "s-u", now - LONG_AGO)
    await system.wait_until_processed()
    await assert_served_is_fresh(system, months)

    # wave 3: a deletion, a removal, an interaction withdrawn, more posts
    wave = [
        post_event("post.deleted", "s-a", "s-a-p1", days[0]),
        post_event("post.moderated", "s-b", "s-b-p1", days[0], verdict="removed"),
        {**like("s-b", "s-b-p0", "fan-0", days[0]), "type": "interaction.deleted", "id": "w-0"},
        post("s-c", "s-c-p9", days[3]),
        post("s-new", "s-new-p9", days[2]),
    ]
    await send(system, wave)
    await system.wait_until_processed()
    await assert_served_is_fresh(system, months)


async def state_of(system, key: str):
    [row] = await system.sql(
        "SELECT v.version, r.version AS refreshed, r.refreshed_at "
        "FROM scoring_standings_versions v LEFT JOIN scoring_standings_refreshes r USING (key) "
        "WHERE v.key = $1",
        key,
    )
    return row


async def test_a_stale_table_is_refreshed_when_its_version_moves(system):
    now = datetime.now(UTC)
    month = month_of(now, system.runtime.settings.timezone)
    await certify(system, "v-a", now - LONG_AGO)
    await send(system, [post("v-a", f"v-a-p{n}", now - timedelta(hours=n + 1)) for n in range(3)])
    await system.wait_until_processed()
    first = await get(system, f"/v1/rankings/{month}")
    assert [e["creator_id"] for e in first["entries"]] == ["v-a"]
    before = await state_of(system, month)
    assert before["refreshed"] == before["version"]  # the table is of the current version

    await certify(system, "v-b", now - LONG_AGO)
    await send(system, [post("v-b", f"v-b-p{n}", now - timedelta(hours=n + 1)) for n in range(4)])
    await system.wait_until_processed()
    moved = await state_of(system, month)
    assert moved["version"] > before["version"]  # the batch moved it, in its transaction
    after = await get(system, f"/v1/rankings/{month}")
    assert [e["creator_id"] for e in after["entries"]] == ["v-b", "v-a"]
    assert (await state_of(system, month))["refreshed"] >= moved["version"]


async def interval_over(system) -> None:
    """As if every table had been refreshed two hours ago (the interval is one)."""
    await system.sql(
        "UPDATE scoring_standings_refreshes SET refreshed_at = refreshed_at - interval '2 hours'"
    )


class TestWithARefreshInterval:
    @pytest.fixture
    def settings_overrides(self):
        # The background refresher pauses as long: after its first pass it stays out of the way.
        return {"monthly_min_quality_posts": 3, "standings_refresh_seconds": 3600}

    async def test_a_read_within_the_interval_serves_the_previous_table(self, system):
        now = datetime.now(UTC)
        month = month_of(now, system.runtime.settings.timezone)
        for creator in ["i-a", "i-b"]:
            await certify(system, creator, now - LONG_AGO)
        await send(
            system, [post("i-a", f"i-a-p{n}", now - timedelta(hours=n + 1)) for n in range(3)]
        )
        await system.wait_until_processed()
        await interval_over(system)  # since the background refresher's first pass
        first = await get(system, f"/v1/rankings/{month}")
        assert [e["creator_id"] for e in first["entries"]] == ["i-a"]
        listed = await get(system, "/v1/recommendations/creators")

        await send(
            system, [post("i-b", f"i-b-p{n}", now - timedelta(hours=n + 1)) for n in range(5)]
        )
        await system.wait_until_processed()
        # within the interval: the previous table, though the version moved
        assert await get(system, f"/v1/rankings/{month}") == first
        assert await get(system, "/v1/recommendations/creators") == listed

        # the interval is over (the refresh made an hour ago): the next read refreshes
        await interval_over(system)
        after = await get(system, f"/v1/rankings/{month}")
        assert [e["creator_id"] for e in after["entries"]] == ["i-b", "i-a"]
        recommended = await get(system, "/v1/recommendations/creators")
        assert {i["creator_id"] for i in recommended["items"]} == {"i-a", "i-b"}


async def test_readers_during_refreshes_get_whole_pages(system):
    """Each round rewrites every creator-month of the month (the order reverses) and refreshes
    the table while readers page through it: every page is one round's ranking, whole."""
    settings = system.runtime.settings
    month = "2026-06"
    creators = [f"w-{n:03d}" for n in range(150)]
    await system.sql(
        "INSERT INTO scoring_certified_creators (creator_id, certified_at) "
        "SELECT unnest($1::text[]), '2026-01-01T00:00:00Z'",
        creators,
    )

    async def round_(number: int) -> dict[str, int]:
        """The month's creator-months for this round, its version moved; the exact ranks."""
        posts = [3 + (n if number % 2 else len(creators) - n) for n in range(len(creators))]
        await system.sql(
            "INSERT INTO scoring_creator_months AS m "
            "(creator_id, month, posts, qualifying_posts, active_days, interactions, quality) "
            "SELECT c, $2, p, p, 1, $3, 0.5 FROM unnest($1::text[], $4::int[]) AS t(c, p) "
            "ON CONFLICT (creator_id, month) DO UPDATE SET "
            "qualifying_posts = excluded.qualifying_posts, interactions = excluded.interactions",
            creators,
            month,
            number,
            posts,
        )
        async with fresh_session(system) as session:
            await standings.touch(session, [month])
            exact = await standings.standings(session, settings, month)
        return {s.creator_id: s.rank for s in exact}

    rounds = [await round_(0)]
    stop = asyncio.Event()
    pages: list[dict] = []

    async def reader() -> None:
        while not stop.is_set():
            pages.append(await get(system, f"/v1/rankings/{month}", limit=500))

    async def refresher() -> None:
        sessionmaker = system.runtime.context.sessionmaker
        for number in range(1, 5):
            rounds.append(await round_(number))
            # (a reader, or the background refresher, may have refreshed it first)
            await standings_table.refresh(sessionmaker, settings, month, wait=True)
            await asyncio.sleep(0.05)
        stop.set()

    await asyncio.gather(refresher(), *(reader() for _ in range(6)))
    assert len(pages) > 10
    seen = set()
    for page in pages:
        assert page["total"] == len(creators)
        ranks = {e["creator_id"]: e["rank"] for e in page["entries"]}
        assert sorted(ranks.values()) == list(range(1, len(creators) + 1))
        matching = [n for n, exact in enumerate(rounds) if exact == ranks]
        assert matching, "a page that is no round's ranking"
        seen.add(matching[0] % 2)
    assert seen == {0, 1}  # both orders were served along the way


async def test_migration_0008_backfills_display_names(empty_database):
    """Creators certified before 0006 get the display name of their approved application."""
    await asyncio.to_thread(upgrade, empty_database, "0007")
    connection = await asyncpg.connect(empty_database.replace("+asyncpg", ""))
    try:
        await connection.execute(
            "INSERT INTO scoring_certified_creators (creator_id, certified_at, display_name) "
            "VALUES ('old-1', '2026-01-01Z', NULL), ('old-2', '2026-01-01Z', NULL), "
            "('new-1', '2026-01-01Z', 'Kept')"
        )
        applications = [
            ("old-1", "老创作者", "approved"),
            ("old-1", "Rejected name", "rejected"),
            ("old-2", None, "approved"),
            ("new-1", "Other", "approved"),
        ]
        for number, (creator, name, status) in enumerate(applications):
            await connection.execute(
                "INSERT INTO badges_applications (id, creator_id, display_name, form, status, "
                "eligible, basis, reasons, thresholds) "
                "VALUES ($1, $2, $3, '{}', $4, true, '{}', '{}', '{}')",
                f"app-{number}",
                creator,
                name,
                status,
            )
        await asyncio.to_thread(upgrade, empty_database, "0008")
        rows = await connection.fetch(
            "SELECT creator_id, display_name FROM scoring_certified_creators ORDER BY creator_id"
        )
    finally:
        await connection.close()
    assert [tuple(r) for r in rows] == [("new-1", "Kept"), ("old-1", "老创作者"), ("old-2", None)]
