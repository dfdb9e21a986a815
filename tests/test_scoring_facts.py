"""Scoring's derived state depends on the events, not on their arrival order: every permutation
of the same events (deletion before creation, copy before original, an edit before its post,
an unlike before the like) gives the same creator-months, actor-days and near-duplicate
verdicts; and what the batches kept up to date one by one equals a rebuild from all the facts.

Each permutation is applied in its own namespace of one database (ids prefixed, texts moved to
another block of CJK characters, so no two namespaces resemble each other)."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scoring import consumer as scoring
from services.scoring import months
from shared import db
from shared.events import BusEvent
from shared.migrate import upgrade
from tests.conftest import make_settings
from tests.test_bus_delivery import eventually  # noqa: F401  (a shared helper module)

BASE = datetime(2026, 10, 12, 10, 0, tzinfo=UTC)
_rng = random.Random(11)
TEXTS = ["".join(chr(0x4E00 + _rng.randrange(0, 400)) for _ in range(70)) for _ in range(6)]


def _event(type_: str, minutes: float, **data) -> tuple[str, float, dict]:
    return (type_, minutes, data)


def _edit(text: str) -> str:
    return text[:35] + "。" + text[35:60] + text[61:] + "，"  # one character gone, punctuation


# (type, minutes after BASE, data) with ids and texts to be put in a namespace
EVENTS = [
    _event("post.created", 0, creator_id="c-1", post_id="p1", text=TEXTS[0], image_count=0),
    _event("post.created", 5, creator_id="c-1", post_id="p2", text=TEXTS[1], image_count=0),
    _event("post.updated", 60, creator_id="c-1", post_id="p2", text="短", image_count=0),
    _event("post.created", 10, creator_id="c-1", post_id="p3", text=TEXTS[2], image_count=0),
    _event("post.deleted", 90, creator_id="c-1", post_id="p3"),
    _event(
        "post.created",
        15,
        creator_id="c-1",
        post_id="p4",
        text=TEXTS[3],
        image_count=0,
        kind="repost",
    ),
    _event(
        "post.created", 20, creator_id="c-2", post_id="p5", text=_edit(TEXTS[0]), image_count=0
    ),  # a copy of p1, later than it
    _event("post.created", 30, creator_id="c-3", post_id="p6", text=TEXTS[4], image_count=0),
    _event(
        "post.created", 40, creator_id="c-2", post_id="p7", text=_edit(TEXTS[4]), image_count=0
    ),  # a copy of p6
    _event("post.moderated", 100, creator_id="c-3", post_id="p6", verdict="removed"),
    _event(
        "post.moderated", 200, creator_id="c-3", post_id="p6", verdict="approved", quality_score=0.9
    ),
    _event("post.created", 1440, creator_id="c-1", post_id="p8", text=TEXTS[5], image_count=1),
    _event("interaction.created", 120, creator_id="c-1", post_id="p1", actor_id="a1", kind="like"),
    _event(
        "interaction.created", 121, creator_id="c-1", post_id="p1", actor_id="a1", kind="like"
    ),  # the same like again
    _event(
        "interaction.created", 122, creator_id="c-1", post_id="p1", actor_id="c-1", kind="like"
    ),  # the creator's own
    _event(
        "interaction.created", 123, creator_id="c-1", post_id="p1", actor_id="a2", kind="comment"
    ),
    _event(
        "interaction.deleted", 130, creator_id="c-1", post_id="p1", actor_id="a2", kind="comment"
    ),
    _event(
        "interaction.created", 124, creator_id="c-1", post_id="p3", actor_id="a3", kind="share"
    ),  # on a deleted post
    _event("interaction.created", 125, creator_id="c-1", post_id="p8", actor_id="a4", kind="share"),
    _event("interaction.created", 130, creator_id="c-1", post_id="p8", actor_id="a7", kind="like"),
    _event("interaction.deleted", 140, creator_id="c-1", post_id="p8", actor_id="a7", kind="like"),
    _event(
        "interaction.created", 1500, creator_id="c-1", post_id="p8", actor_id="a7", kind="like"
    ),  # liked again the next day: counts on that day
    _event("interaction.created", 125, creator_id="c-1", post_id="p1", actor_id="a8", kind="like"),
    _event(
        "interaction.created", 43200, creator_id="c-1", post_id="p1", actor_id="a8", kind="like"
    ),  # the same like again a month later: it moves to November
    *[
        _event("interaction.created", 126, creator_id="c-3", post_id="p6", actor_id="a5", kind=kind)
        for kind in ("like", "comment", "share", "quote")
    ],  # 9 → capped? no
    *[
        _event(
            "interaction.created",
            127 + n,
            creator_id="c-2",
            post_id=f"p{5 + 2 * (n % 2)}",
            actor_id="a6",
            kind="share",
        )
        for n in range(2)
    ],
    _event("interaction.created", 128, creator_id="c-2", post_id="p5", actor_id="a6", kind="quote"),
    _event(
        "interaction.created", 129, creator_id="c-2", post_id="p5", actor_id="a6", kind="comment"
    ),  # a6 gives c-2 3 + 3 + 3 + 2 = 11 in a day: clamped to 10
]


def namespaced(number: int, order: list[int]) -> list[BusEvent]:
    shift = 1000 * (number + 1)

    def move(value: str) -> str:
        return "".join(chr(ord(c) + shift) if "\u4e00" <= c <= "\u9fff" else c for c in value)

    events = []
    for seq, index in enumerate(order, start=1):
        type_, minutes, data = EVENTS[index]
        data = dict(data)
        for key in ("creator_id", "post_id", "actor_id"):
            if key in data:
                data[key] = f"n{number}-{data[key]}"
        if "text" in data:
            data["text"] = move(data["text"])
        if type_ == "post.created":
            data.setdefault("kind", "original")
        events.append(
            BusEvent(
                seq=seq,
                id=f"n{number}-e{index}-{seq}",
                type=type_,
                time=BASE + timedelta(minutes=minutes),
                source="test",
                creator_id=data["creator_id"],
                data=data,
            )
        )
    return events


async def derived(system, number: int) -> tuple:
    prefix = f"n{number}-"
    months = await system.sql(
        "SELECT creator_id, month, posts, qualifying_posts, active_days, interactions, quality "
        "FROM scoring_creator_months WHERE creator_id LIKE $1 ORDER BY creator_id, month",
        prefix + "%",
    )
    actor_days = await system.sql(
        "SELECT creator_id, month, actor_id, day, likes, comments, shares, quotes"
        " FROM scoring_actor_days WHERE creator_id LIKE $1 ORDER BY 1, 2, 3, 4",
        prefix + "%",
    )
    posts = await system.sql(
        "SELECT post_id, duplicate_of, actors, counted_month, counted_day, counted_quality"
        " FROM scoring_posts WHERE post_id LIKE $1 ORDER BY post_id",
        prefix + "%",
    )
    days = await system.sql(
        "SELECT creator_id, day, qualifying_posts FROM scoring_creator_days"
        " WHERE creator_id LIKE $1 ORDER BY 1, 2",
        prefix + "%",
    )
    strip = lambda v: v.removeprefix(prefix) if isinstance(v, str) else v  # noqa: E731
    return (
        [tuple(strip(v) for v in row) for row in months],
        [tuple(strip(v) for v in row) for row in posts],
        [tuple(strip(v) for v in row) for row in actor_days],
        [tuple(strip(v) for v in row) for row in days],
    )


@pytest.fixture
def system_services():
    return ("ingest",)  # the test applies scoring's handler itself


async def test_every_arrival_order_gives_the_same_state(system):
    handler = scoring.make_handler(system.runtime.settings)
    sessionmaker = system.runtime.context.sessionmaker
    namespaces = itertools.count()
    results = []

    async def apply(order: list[int]) -> tuple:
        number = next(namespaces)
        for event in namespaced(number, order):  # one event per batch, as late events come
            async with sessionmaker() as session, session.begin():
                await handler(session, [event])
        batch_by_batch = await derived(system, number)
        # what the batches kept up to date equals a rebuild from all the facts (a rescore)
        async with sessionmaker() as session, session.begin():
            pairs = {(c, m) for c, m, *_ in batch_by_batch[0]}
            await months.recompute(
                session, system.runtime.settings, {(f"n{number}-{c}", m) for c, m in pairs}
            )
        assert await derived(system, number) == batch_by_batch, order
        return batch_by_batch

    canonical = await apply(list(range(len(EVENTS))))
    creator_months, posts, actor_days, days = canonical
    by_month = {(row[0], row[1]): row for row in creator_months}
    # p3 deleted, p4 a repost, p2 cut short by its later edit: p1 and p8 qualify, on two days;
    # a1 likes p1 once (1), a4 shares p8 (3), a7 likes p8 again the next day (1); the share on
    # deleted p3, the removed comment and a8's like, moved to November by its repetition: 0
    assert by_month[("c-1", "2026-10")][2:6] == (4, 2, 2, 5)
    assert by_month[("c-1", "2026-11")][2:6] == (0, 0, 0, 1)
    assert [row[2:] for row in actor_days if row[0] == "c-1" and row[2] in ("a7", "a8")] == [
        ("a7", "2026-10-13", 1, 0, 0, 0),
        ("a8", "2026-11-11", 1, 0, 0, 0),
    ]
    by_creator = {row[0]: row for row in creator_months if row[1] == "2026-10"}
    assert by_creator["c-2"][3] == 0 and by_creator["c-2"][5] == 10  # copies; clamped 11 → 10
    assert by_creator["c-3"][3:6] == (1, 1, 9)  # p6 reinstated by the later verdict
    assert days == [("c-1", "2026-10-12", 1), ("c-1", "2026-10-13", 1), ("c-3", "2026-10-12", 1)]
    assert {p: (original, actors) for p, original, actors, *_ in posts} == {
        "p1": (None, 2),  # a1 and a8; a2's comment deleted, the author's own like not counted
        "p2": (None, 0),
        "p3": (None, 1),  # deleted: the share still on it is not counted, its actor is
        "p4": (None, 0),
        "p5": ("p1", 1),
        "p6": (None, 1),
        "p7": ("p6", 1),
        "p8": (None, 2),  # a4 and a7
    }

    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.permutations(range(len(EVENTS))))
    def orders(order):
        results.append(list(order))

    orders()
    for order in results:
        assert await apply(order) == canonical, order


async def test_migrations_0014_to_0016_keep_what_the_code_before_kept(empty_database):
    """A database from before the kept sums: the migrations fill the actor-days by the counting
    rule and each post's distinct actors; the first batch that touches a month rebuilds its
    posts' side (no quality sum yet) and moves its received interactions by the actor-day it
    changed; all equal to what `rescore` rebuilds from the facts."""
    await asyncio.to_thread(upgrade, empty_database, "0013")
    connection = await asyncpg.connect(empty_database.replace("+asyncpg", ""))
    try:
        posts = [("p1", False, None), ("p2", True, None), ("p3", False, "removed")]
        await connection.executemany(
            "INSERT INTO scoring_posts (post_id, creator_id, month, day, kind, characters,"
            " image_count, paragraphs, deleted, verdict, seq)"
            " VALUES ($1, 'c', '2026-10', '2026-10-12', 'original', 80, 0, 1, $2, $3, 1)",
            posts,
        )
        interactions = [  # actor, post, kind, day, deleted
            ("a1", "p1", "like", "2026-10-12", False),
            ("a1", "p1", "share", "2026-10-12", False),
            ("a1", "p1", "quote", "2026-10-13", False),
            ("a2", "p1", "comment", "2026-10-12", True),  # deleted
            ("c", "p1", "share", "2026-10-12", False),  # the creator's own
            ("a3", "p2", "like", "2026-10-12", False),  # on a deleted post
            ("a3", "p3", "like", "2026-10-12", False),  # on a removed post
            ("a4", "p9", "comment", "2026-10-14", False),  # on a post not known yet
        ]
        await connection.executemany(
            "INSERT INTO scoring_interactions (actor_id, post_id, kind, creator_id, time, month,"
            " day, deleted, state_time) VALUES ($1, $2, $3, 'c', now(), '2026-10', $4, $5, now())",
            interactions,
        )
        # the month as the code before kept it: its received interactions right (the others
        # made wrong here, to see that the first batch after rebuilds them from the posts)
        await connection.execute(
            "INSERT INTO scoring_creator_months (creator_id, month, posts, qualifying_posts,"
            " active_days, interactions, quality) VALUES ('c', '2026-10', 99, 99, 99, $1, 0.5)",
            1 + 3 + 3 + 2,
        )
        await asyncio.to_thread(upgrade, empty_database, "head")
        query = "SELECT actor_id, day, likes, comments, shares, quotes FROM scoring_actor_days"
        migrated = sorted(tuple(r) for r in await connection.fetch(query))
        assert migrated == [
            ("a1", "2026-10-12", 1, 0, 1, 0),
            ("a1", "2026-10-13", 0, 0, 0, 1),
            ("a4", "2026-10-14", 0, 1, 0, 0),
        ]
        settings = make_settings("embedded", None)
        engine = db.create_engine(empty_database, settings)
        sessionmaker = db.create_sessionmaker(engine)
        stats = (
            "SELECT posts, qualifying_posts, active_days, interactions, quality_sum"
            " FROM scoring_creator_months WHERE creator_id = 'c'"
        )
        try:
            like = BusEvent(
                seq=1,
                id="e1",
                type="interaction.created",
                time=datetime(2026, 10, 12, 5, tzinfo=UTC),
                source="test",
                creator_id="c",
                data={"creator_id": "c", "post_id": "p1", "actor_id": "a5", "kind": "like"},
            )
            async with sessionmaker() as session, session.begin():
                await scoring.make_handler(settings)(session, [like])
            # p1 and p3 count (p2 is deleted), p1 qualifies (p3 is removed); a5's like adds 1
            after_batch = tuple(await connection.fetchrow(stats))
            assert after_batch[:4] == (2, 1, 1, 1 + 3 + 3 + 2 + 1)
            async with sessionmaker() as session, session.begin():
                await months.recompute(session, settings, {("c", "2026-10")})
        finally:
            await engine.dispose()
        assert tuple(await connection.fetchrow(stats)) == after_batch
        migrated.append(("a5", "2026-10-12", 1, 0, 0, 0))
        assert sorted(tuple(r) for r in await connection.fetch(query)) == sorted(migrated)
        actors = "SELECT post_id, actors FROM scoring_posts ORDER BY post_id"
        assert [tuple(r) for r in await connection.fetch(actors)] == [
            ("p1", 2),  # a1 and a5; a2's comment deleted, the author's own share not counted
            ("p2", 1),  # a3 (the post deleted: not read while it does not count)
            ("p3", 1),
        ]
    finally:
        await connection.close()
