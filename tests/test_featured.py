"""Weekly featured posts end to end, on both buses: a week of events, the provisional list (the
per-creator cap, only certified creators' original quality posts, self-likes worth nothing,
order and paging), the freeze (too early, behind, twice and at once) and the bonus, once.

The week is 2026-W42 (12–18 October in the program zone, UTC+8); 6 posts are featured here."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.scoring import featured_api
from services.scoring.featured import featured_score, provisional, rebuild, week_of
from services.scoring.score import post_quality
from shared import db
from shared.bus import log as event_log
from shared.events import INTERNAL_SOURCE, PROGRAM_SUBJECT, IncomingEvent
from tests.system import ADMIN, interaction_created, post_created
from tests.test_vouchers import certify

pytestmark = pytest.mark.usefixtures("bus")

WEEK = "2026-W42"
MONDAY = datetime(2026, 10, 12, 0, 0, tzinfo=UTC) - timedelta(hours=8)  # 00:00 in UTC+8
CERTIFIED = datetime(2026, 7, 1, tzinfo=UTC)
_rng = random.Random(42)


@pytest.fixture
def settings_overrides():
    return {"featured_posts_per_week": 6, "featured_max_per_creator": 2}


def text(n: int = 60) -> str:
    """A Chinese text no other post resembles (60 characters, one paragraph)."""
    return "".join(chr(_rng.randrange(0x4E00, 0x9FA5)) for _ in range(n))


def post(creator: str, post_id: str, when: datetime, body: str | None = None) -> dict:
    return post_created(creator, post_id, time=when.isoformat(), text=body or text())


def likes(creator: str, post_id: str, actors, when: datetime, kind: str = "like") -> list[dict]:
    return [
        interaction_created(creator, post_id, actor, kind=kind, time=when.isoformat())
        for actor in actors
    ]


def post_event(type_: str, creator: str, post_id: str, when: datetime, **data) -> dict:
    return {
        "id": f"{type_}-{post_id}-{_rng.random()}",
        "type": type_,
        "time": when.isoformat(),
        "data": {"creator_id": creator, "post_id": post_id, **data},
    }


def quality(distinct_actors: int) -> Decimal:
    """The heuristic quality of the test's posts (60 characters, one paragraph)."""
    return post_quality(
        characters=60,
        image_count=0,
        paragraphs=1,
        distinct_actors=distinct_actors,
        moderation_score=None,
    )


async def featured(system, week: str = WEEK, **params):
    return await system.client.get(f"/v1/featured/{week}", params=params, headers=ADMIN)


async def freeze(system, week: str = WEEK):
    return await system.client.post(f"/v1/admin/weeks/{week}/freeze", headers=ADMIN)


def actors(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n}" for n in range(count)]


async def a_week_of_events(system) -> None:
    for creator in ("c-1", "c-2", "c-3", "c-4", "c-5"):
        await certify(system, creator, CERTIFIED)
    await certify(system, "c-late", datetime(2026, 11, 1, tzinfo=UTC))  # after the week

    day = MONDAY + timedelta(days=1, hours=3)
    original = text()
    events = [
        # c-1: four posts, 6, 5, 4 and 3 distinct likers: only its best two are featured
        post("c-1", "c-1-p1", day, original),
        post("c-1", "c-1-p2", day + timedelta(hours=1)),
        post("c-1", "c-1-p3", day + timedelta(hours=2)),
        post("c-1", "c-1-p4", day + timedelta(hours=3)),
        *likes("c-1", "c-1-p1", actors("a", 5), day + timedelta(hours=4)),
        *likes("c-1", "c-1-p2", actors("a", 4), day + timedelta(hours=4)),
        *likes("c-1", "c-1-p3", actors("a", 3), day + timedelta(hours=4)),
        *likes("c-1", "c-1-p4", actors("a", 6), day + timedelta(hours=4)),
        # c-2: a deleted post, a removed one and a near-duplicate of c-1-p1, each much liked,
        # never appear; its ordinary post with 2 likers does
        post("c-2", "c-2-deleted", day),
        post("c-2", "c-2-removed", day),
        post("c-2", "c-2-copy", day + timedelta(hours=1), original + "。"),
        post("c-2", "c-2-ok", day + timedelta(hours=2)),
        *likes("c-2", "c-2-deleted", actors("b", 10), day + timedelta(hours=3)),
        *likes("c-2", "c-2-removed", actors("b", 10), day + timedelta(hours=3)),
        *likes("c-2", "c-2-copy", actors("b", 10), day + timedelta(hours=3)),
        *likes("c-2", "c-2-ok", actors("b", 2), day + timedelta(hours=3)),
        post_event("post.deleted", "c-2", "c-2-deleted", day + timedelta(days=1)),
        post_event(
            "post.moderated", "c-2", "c-2-removed", day + timedelta(days=1), verdict="removed"
        ),
        # c-3: s1 and s2 have one liker each; s1's author also likes, comments and shares it,
        # which adds nothing; s3 has only its author's interactions: score 0, never featured
        post("c-3", "c-3-s1", day + timedelta(hours=5)),
        post("c-3", "c-3-s2", day + timedelta(hours=6)),
        post("c-3", "c-3-s3", day + timedelta(hours=7)),
        *likes("c-3", "c-3-s1", ["d-1"], day + timedelta(hours=8)),
        *likes("c-3", "c-3-s2", ["d-2"], day + timedelta(hours=8)),
        *[
            interaction_created("c-3", f"c-3-{p}", "c-3", kind=k, time=day.isoformat())
            for p in ("s1", "s3")
            for k in ("like", "comment", "share")
        ],
        # c-4: one actor likes and comments: counted once, at the comment's weight (2)
        post("c-4", "c-4-q1", day + timedelta(hours=9)),
        *likes("c-4", "c-4-q1", ["e-1"], day + timedelta(hours=10)),
        *likes("c-4", "c-4-q1", ["e-1"], day + timedelta(hours=10), kind="comment"),
        # c-4 again, at 00:30 next Monday in UTC+8 (still Sunday in UTC): week 43's
        post("c-4", "c-4-next-week", MONDAY + timedelta(days=7, minutes=30)),
        *likes("c-4", "c-4-next-week", actors("f", 20), MONDAY + timedelta(days=7, hours=1)),
        # c-5: one liker, the latest post: 7th, beyond the 6 featured
        post("c-5", "c-5-late", day + timedelta(days=3)),
        *likes("c-5", "c-5-late", ["g-1"], day + timedelta(days=3, hours=1)),
        # c-x is never certified, c-late only after the week: neither appears
        post("c-x", "c-x-p1", day),
        *likes("c-x", "c-x-p1", actors("h", 20), day + timedelta(hours=1)),
        post("c-late", "c-late-p1", day),
        *likes("c-late", "c-late-p1", actors("h", 20), day + timedelta(hours=1)),
    ]
    # the original first (a near-duplicate is the later post), then any order
    first, rest = events[:4], events[4:]
    _rng.shuffle(rest)
    assert (await system.post_events(first)).status_code == 202
    await system.wait_until_processed()
    for start in range(0, len(rest), 20):
        response = await system.post_events(rest[start : start + 20])
        assert response.status_code == 202, response.text
    await system.wait_until_processed()


EXPECTED = ["c-1-p4", "c-1-p1", "c-2-ok", "c-4-q1", "c-3-s1", "c-3-s2"]


async def test_the_weeks_featured_posts_frozen_once_with_their_bonus(system):
    await a_week_of_events(system)

    response = await featured(system)
    assert response.status_code == 200, response.text
    week = response.json()
    assert week["status"] == "provisional" and week["frozen_at"] is None
    assert week["total"] == 6 and week["bonus"] == "10.00"
    items = week["items"]
    assert [i["post_id"] for i in items] == EXPECTED
    assert [i["rank"] for i in items] == [1, 2, 3, 4, 5, 6]
    scores = [Decimal(i["score"]) for i in items]
    assert scores == sorted(scores, reverse=True)
    # one actor's like and comment count once, at the heavier weight
    assert scores[3] == featured_score(quality(1), 2)
    # the author's own likes, comments and shares lift nothing: s1 ties s2 (earlier post first)
    assert scores[4] == scores[5] == featured_score(quality(1), 1)
    assert scores[0] == featured_score(quality(6), 6)
    creators = [i["creator_id"] for i in items]
    assert max(creators.count(c) for c in creators) == 2  # c-1-p2 (4 likers) is left out

    # rebuilding from the facts (a rule change, a backfill) gives the same list
    async with system.runtime.context.sessionmaker() as session, session.begin():
        assert await rebuild(session, system.runtime.settings, WEEK) >= len(EXPECTED)
        assert await rebuild(session, system.runtime.settings) > 0
    assert (await featured(system)).json() == week

    # paging: `limit` only pages through the six
    pages = [(await featured(system, limit=4, offset=o)).json()["items"] for o in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 2, 0]
    assert pages[0] + pages[1] == items

    # two operators at once, then again: one list, one event
    first, second = await asyncio.gather(freeze(system), freeze(system))
    assert first.status_code == second.status_code == 200, first.text
    assert first.json() == second.json()
    frozen = first.json()
    assert frozen["status"] == "frozen" and frozen["items"] == items
    again = await freeze(system)
    assert again.status_code == 200 and again.json() == frozen
    [row] = await system.sql("SELECT count(*) AS n FROM events WHERE type = 'week.frozen'")
    assert row["n"] == 1

    # later engagement changes nothing frozen
    await system.post_events(likes("c-1", "c-1-p2", actors("z", 30), MONDAY + timedelta(days=2)))
    await system.wait_until_processed()
    after = (await featured(system)).json()
    assert after["status"] == "frozen" and after["items"] == items
    assert after["frozen_at"] == frozen["frozen_at"]

    # the bonus: once per featured post, whatever the repeated freezes
    bonuses = await system.sql(
        "SELECT creator_id, amount, currency, causes FROM badges_rewards "
        "WHERE kind = 'featured_post_bonus' ORDER BY feed_seq"
    )
    assert sorted(b["creator_id"] for b in bonuses) == sorted(creators)
    assert {(b["amount"], b["currency"]) for b in bonuses} == {(Decimal("10.00"), "USDT")}
    assert all(f'"week-{WEEK}-frozen"' in b["causes"] for b in bonuses)
    listed = await system.client.get(
        "/v1/rewards", params={"kind": "featured_post_bonus"}, headers=ADMIN
    )
    assert listed.status_code == 200 and len(listed.json()["items"]) == 6

    # the same week.frozen delivered again (replayed under another id): nothing more is paid
    [stored] = await system.sql("SELECT data FROM events WHERE type = 'week.frozen'")
    async with system.runtime.context.sessionmaker() as session, session.begin():
        replay = IncomingEvent(
            id=f"week-{WEEK}-frozen-replay",
            type="week.frozen",
            time=datetime.now(UTC),
            source=INTERNAL_SOURCE,
            creator_id=PROGRAM_SUBJECT,
            data=json.loads(stored["data"]),
            attributes={},
        )
        assert await event_log.append(session, [replay])
    await system.wait_until_processed()
    [count] = await system.sql(
        "SELECT count(*) AS n FROM badges_rewards WHERE kind = 'featured_post_bonus'"
    )
    assert count["n"] == 6

    # the next week has its own list
    next_week = (await featured(system, "2026-W43")).json()
    assert [i["post_id"] for i in next_week["items"]] == ["c-4-next-week"]


async def test_freezing_too_early_or_behind_is_a_409_and_a_bad_week_a_422(system):
    current = week_of(datetime.now(UTC), system.runtime.settings.timezone)
    early = await freeze(system, current)
    assert early.status_code == 409 and early.json()["error"] == "week_not_over"
    assert (await featured(system, current)).json()["status"] == "provisional"

    for bad in ("2026-42", "2026-W54", "2026-W00", "2027-W53", "2026-w42", "x"):
        for response in (await featured(system, bad), await freeze(system, bad)):
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["error"] == "validation_failed"
    assert (await featured(system, "2026-W53")).status_code == 200  # 2026 has 53 weeks

    await system.runtime.stop_workers()  # accepted, not applied
    await system.post_events([post("c-1", "c-1-p0", MONDAY + timedelta(hours=1))])
    behind = await freeze(system)
    assert behind.status_code == 409 and behind.json()["error"] == "not_caught_up"
    assert behind.headers["Retry-After"]
    await system.restart_workers()
    await system.wait_until_processed()
    empty = await freeze(system)  # c-1 is not certified: nothing featured, nothing to pay
    assert empty.status_code == 200 and empty.json()["items"] == []
    await system.wait_until_processed()
    rows = await system.sql("SELECT id FROM badges_rewards WHERE kind = 'featured_post_bonus'")
    assert rows == []


@pytest.mark.parametrize("bus", ["embedded"])  # no events: the read path only
async def test_the_served_list_equals_the_whole_weeks_ranking(system):
    """The provisional list is read down the week's score index a chunk at a time: with many
    posts and ties at every score, it is the list ranking all the week's rows gives."""
    creators = [f"t-{n:02d}" for n in range(40)] + ["t-uncertified"]
    await system.sql(
        "INSERT INTO scoring_certified_creators (creator_id, certified_at) "
        "SELECT unnest($1::text[]), '2026-07-01Z'",
        creators[:-1],
    )
    scores = ["3.000000", "2.500000", "2.500000", "1.000000", "0"]  # ties at every score
    # 600 posts, each creator's in turn (the uncertified one's too)
    await system.sql(
        "INSERT INTO scoring_featured_scores "
        "(post_id, creator_id, week, time, quality, engagement, score) "
        "SELECT 'tp-' || n, ($1::text[])[1 + n % 41], $2, "
        "$3::timestamptz + n * interval '1 minute', 0.5, 1, ($4::text[])[1 + n % 5]::numeric "
        "FROM generate_series(0, 599) AS n",
        creators,
        WEEK,
        MONDAY,
        scores,
    )
    settings = system.runtime.settings
    for size, cap in [(6, 2), (100, 3), (1000, 1)]:
        tuned = settings.model_copy(
            update={"featured_posts_per_week": size, "featured_max_per_creator": cap}
        )
        engine = db.create_engine(system.database_url, tuned)
        try:
            async with db.create_sessionmaker(engine)() as session:
                exact = await provisional(session, tuned, WEEK)
                served = await featured_api.provisional(session, tuned, WEEK)
        finally:
            await engine.dispose()
        assert served == exact
        assert len(exact) == min(size, 40 * cap)  # the cap and the size both bind somewhere
        assert "t-uncertified" not in {f.creator_id for f in served}
