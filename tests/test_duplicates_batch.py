"""The near-duplicate index fed in batches (`index_posts`, what the scoring consumer calls) ends
where the rule says, whatever the batches: every post's `duplicate_of` is the earliest earlier
post sharing a band key and similar to it, checked against a brute force over the texts, and
the same as indexing the posts one call at a time; a batch returns exactly the posts whose
`duplicate_of` it changed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import insert

from services.scoring import duplicates
from services.scoring.duplicates import NearDuplicateRule, index_post, index_posts
from services.scoring.models import Post, PostBand
from shared import db
from shared.settings import Settings

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ALPHABET = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工"
ALPHABET += "市场流动性回购储备资产加密货币利率银行创作者广场内容互动"


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture
async def sessionmaker(database_url, settings):
    engine = db.create_engine(database_url, settings)
    yield db.create_sessionmaker(engine)
    await engine.dispose()


def edited(text: str, rng: random.Random, changes: int) -> str:
    chars = list(text)
    for i in rng.sample(range(len(chars)), changes):
        chars[i] = rng.choice(ALPHABET)
    return "".join(chars)


def scenario(seed: int):
    """(posts with their times, first texts, later edits): families of copies of a few random
    texts, unrelated texts, captions, posts at equal times, posts whose time comes later."""
    rng = random.Random(seed)
    bases = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(80, 200))) for _ in range(4)]
    times: dict[str, datetime | None] = {}
    texts: dict[str, str] = {}
    for i in range(40):
        post_id = f"p{rng.randint(0, 9)}{i:02d}"
        times[post_id] = T0 + timedelta(minutes=rng.choice((0, 5, 5, 10, 20, 30, 60, 90)))
        roll = rng.random()
        if roll < 0.6:
            texts[post_id] = edited(rng.choice(bases), rng, rng.choice((1, 2, 4, 8)))
        elif roll < 0.85:
            texts[post_id] = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(60, 150)))
        else:
            texts[post_id] = "看图" + rng.choice(ALPHABET)  # a caption: not compared
    waiting = rng.sample(sorted(times), 5)  # an edit before the creation: no time yet
    edits = []
    for post_id in rng.choices(sorted(times), k=14):  # a post may be edited twice
        roll = rng.random()
        if roll < 0.4:  # an original or a copy rewritten: its copies move, it may stop being one
            text = "".join(rng.choice(ALPHABET) for _ in range(120))
        elif roll < 0.8:  # turned into a copy of another family
            text = edited(rng.choice(bases), rng, 2)
        else:
            text = "短"
        edits.append((post_id, text))
    return times, texts, waiting, edits


async def reset(sessionmaker, times: dict[str, datetime | None], waiting: list[str]) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(PostBand))
        await session.execute(delete(Post))
        await session.execute(
            insert(Post),
            [
                {
                    "post_id": post_id,
                    "creator_id": f"creator-{post_id}",
                    "time": None if post_id in waiting else time,
                    "seq": 1,
                }
                for post_id, time in times.items()
            ],
        )


async def give_times(sessionmaker, times, waiting) -> None:
    async with sessionmaker() as session, session.begin():
        for post_id in waiting:
            await session.execute(
                update(Post).where(Post.post_id == post_id).values(time=times[post_id])
            )


async def state(sessionmaker) -> tuple[dict, dict, dict]:
    async with sessionmaker() as session:
        posts = {
            row.post_id: (row.duplicate_of, row.signature)
            for row in await session.execute(
                select(Post.post_id, Post.duplicate_of, Post.signature)
            )
        }
        bands: dict[str, set[int]] = {}
        for band, post_id in await session.execute(select(PostBand.band, PostBand.post_id)):
            bands.setdefault(post_id, set()).add(band)
    return (
        {p: d for p, (d, _) in posts.items()},
        {p: s for p, (_, s) in posts.items()},
        bands,
    )


def brute_force(rule: NearDuplicateRule, times, texts: dict[str, str]) -> dict[str, str | None]:
    """The rule over the texts: the earliest earlier post (time, then id by code point) that
    shares a band key and is similar."""
    signatures = {p: rule.signature(t) for p, t in texts.items()}
    expected: dict[str, str | None] = {}
    for post, signature in signatures.items():
        expected[post] = None
        if signature is None:
            continue
        keys = set(rule.band_keys(signature))
        earlier = sorted(
            (q for q in signatures if (times[q], q) < (times[post], post)),
            key=lambda q: (times[q], q),
        )
        for other in earlier:
            theirs = signatures[other]
            if theirs is None or not keys & set(rule.band_keys(theirs)):
                continue
            if rule.similar(signature, theirs):
                expected[post] = other
                break
    return expected


def chunks(items: list, rng: random.Random) -> list[list]:
    out = []
    while items:
        size = rng.randint(1, 12)
        out.append(items[:size])
        items = items[size:]
    return out


@pytest.mark.parametrize(
    ("seed", "per_read"),
    [(1, 64), (2, 64), (3, 64), (4, 1)],  # one candidate per read: every post reads on
)
async def test_batches_end_where_one_post_at_a_time_ends_and_where_the_rule_says(
    sessionmaker, settings, seed, per_read, monkeypatch
):
    monkeypatch.setattr(duplicates, "CANDIDATES_PER_READ", per_read)
    rule = NearDuplicateRule.from_settings(settings)
    times, texts, waiting, edits = scenario(seed)
    rng = random.Random(seed)
    order = list(texts.items())
    rng.shuffle(order)

    await reset(sessionmaker, times, waiting)
    for post_id, text in order:
        async with sessionmaker() as session, session.begin():
            await index_post(session, settings, post_id, text)
    await give_times(sessionmaker, times, waiting)
    for post_id in waiting:  # their creations bring the time: the stored signature is indexed
        async with sessionmaker() as session, session.begin():
            await index_post(session, settings, post_id)
    for post_id, text in edits:
        async with sessionmaker() as session, session.begin():
            await index_post(session, settings, post_id, text)
    one_by_one = await state(sessionmaker)

    await reset(sessionmaker, times, waiting)
    first, then = chunks(order, rng), chunks([(p, None) for p in waiting] + edits, rng)
    for number, batch in enumerate(first + then):
        if number == len(first):
            await give_times(sessionmaker, times, waiting)
        before = (await state(sessionmaker))[0]
        async with sessionmaker() as session, session.begin():
            changed = await index_posts(session, settings, batch)
        after = (await state(sessionmaker))[0]
        assert changed == {p for p in after if after[p] != before[p]}
        await assert_origins(sessionmaker)
    batched = await state(sessionmaker)

    assert batched == one_by_one
    final_texts = dict(texts) | dict(edits)
    assert batched[0] == brute_force(rule, times, final_texts)
    assert any(original is not None for original in batched[0].values())


async def test_a_post_created_again_at_another_time_moves_its_band_rows(sessionmaker, settings):
    """The band rows carry their post's time (the candidates are read in that order) and their
    origin: a post whose creation comes again with another time keeps its keys, at the new
    time, and its copy's rows follow its new time as their origin's."""
    text = "".join(random.Random(5).choice(ALPHABET) for _ in range(120))
    await reset(sessionmaker, {"p-1": T0, "p-2": T0 + timedelta(hours=2)}, [])
    async with sessionmaker() as session, session.begin():
        await index_posts(session, settings, [("p-1", text), ("p-2", text)])
        await session.execute(
            update(Post).where(Post.post_id == "p-1").values(time=T0 + timedelta(hours=1))
        )
        await index_posts(session, settings, [("p-1", text)])
    async with sessionmaker() as session:
        times = set(await session.scalars(select(PostBand.time).where(PostBand.post_id == "p-1")))
        origins = set(await session.execute(select(PostBand.origin_time, PostBand.origin_id)))
    assert times == {T0 + timedelta(hours=1)}
    assert origins == {(T0 + timedelta(hours=1), "p-1")}
    assert (await state(sessionmaker))[0] == {"p-1": None, "p-2": "p-1"}
    await assert_origins(sessionmaker)


async def test_a_flood_of_one_text_and_a_copy_older_than_all_of_it(
    sessionmaker, settings, monkeypatch
):
    """Hundreds of posts of one text at one time, arriving in random id order (the benchmark's
    voucher claims, or spam): each points at the first by id, and a post arriving in the middle
    of the flood reads none of its later copies (their original is earlier than it: it cannot
    become theirs). A copy older than all of them, indexed last, becomes the original of every
    one, found by reading on (a few candidates per read here)."""
    monkeypatch.setattr(duplicates, "CANDIDATES_PER_READ", 8)
    rng = random.Random(6)
    text = "".join(rng.choice(ALPHABET) for _ in range(150))
    flood = {f"f-{i:03d}": T0 for i in range(1, 201)}
    times = {**flood, "middle": T0, "oldest": T0 - timedelta(minutes=1)}
    await reset(sessionmaker, times, [])
    ids = sorted(flood)
    order = ids[1:]
    rng.shuffle(order)
    for batch in [ids[:1], *(order[i : i + 25] for i in range(0, len(order), 25))]:
        async with sessionmaker() as session, session.begin():
            await index_posts(session, settings, [(p, text) for p in batch])
        await assert_origins(sessionmaker)
    assert (await state(sessionmaker))[0] == {
        **{p: "f-001" for p in ids[1:]},
        "f-001": None,
        "middle": None,
        "oldest": None,
    }

    async with sessionmaker() as session, session.begin():
        read = later_rows_read(session, monkeypatch)
        assert await index_posts(session, settings, [("middle", text)]) == {"middle"}
    assert read == []
    async with sessionmaker() as session, session.begin():
        read = later_rows_read(session, monkeypatch)
        changed = await index_posts(session, settings, [("oldest", text)])
    assert len(read) == len(flood) + 1  # every copy and "middle", 8 at a time

    assert changed == set(flood) | {"middle"}
    assert (await state(sessionmaker))[0] == {
        **{p: "oldest" for p in [*ids, "middle"]},
        "oldest": None,
    }
    await assert_origins(sessionmaker)


async def test_a_flood_inside_one_batch_reads_none_of_its_own_copies(
    sessionmaker, settings, monkeypatch
):
    """300 posts of one text in one batch (spam in a burst, or a large batch catching up), at
    one time and at spread times, in random order: each points at the first, and the
    later-candidates lookup reads none of the batch's copies (each used to read every copy
    after it: the square of the flood, past the statement timeout at 2,000); in a later batch,
    its copies read their earlier candidates once for all."""
    rng = random.Random(8)
    text = "".join(rng.choice(ALPHABET) for _ in range(150))
    flood = {f"f-{i:03d}": T0 + timedelta(seconds=i % 7) for i in range(300)}
    flood["unrelated"] = T0 - timedelta(minutes=1)  # earlier, shares no text with the flood
    await reset(sessionmaker, flood, [])
    order = list(flood)
    rng.shuffle(order)
    texts = {p: text for p in flood} | {"unrelated": edited(text[::-1], rng, 120)}
    async with sessionmaker() as session, session.begin():
        read = later_rows_read(session, monkeypatch)
        await index_posts(session, settings, [(p, texts[p]) for p in order])
    assert read == []
    first = min((t, p) for p, t in flood.items() if p != "unrelated")[1]
    assert (await state(sessionmaker))[0] == {
        **{p: first for p in flood},
        first: None,
        "unrelated": None,
    }
    await assert_origins(sessionmaker)

    # The flood goes on in a later batch: its copies read the earlier candidates as one post
    # (the first of the batch, then the others, which share its keys and its bound), not each.
    more = {f"g-{i:03d}": T0 + timedelta(minutes=1) for i in range(300)}
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(Post),
            [{"post_id": p, "creator_id": "c", "time": t, "seq": 1} for p, t in more.items()],
        )
    async with sessionmaker() as session, session.begin():
        read = later_rows_read(session, monkeypatch, duplicates._EARLIEST)
        await index_posts(session, settings, [(p, text) for p in sorted(more, reverse=True)])
    assert len(read) <= 2 * duplicates.CANDIDATES_PER_READ
    assert {p: o for p, o in (await state(sessionmaker))[0].items() if p in more} == dict.fromkeys(
        more, first
    )
    await assert_origins(sessionmaker)


def later_rows_read(session, monkeypatch, lookup=None) -> list:
    """The rows the later-candidates lookup (or `lookup`) returns in this session, as it reads
    them."""
    rows: list = []
    execute = session.execute
    lookup = lookup if lookup is not None else duplicates._LATER

    async def counting(statement, *args, **kwargs):
        result = await execute(statement, *args, **kwargs)
        if statement is not lookup:
            return result
        read = result.all()
        rows.extend(read)
        return read

    monkeypatch.setattr(session, "execute", counting)
    return rows


async def assert_origins(sessionmaker) -> None:
    """Every band row's origin is its post's original's time and id, or the post's own."""
    async with sessionmaker() as session:
        wrong = (
            await session.execute(
                sql(
                    "SELECT b.post_id, b.origin_id FROM scoring_post_bands AS b"
                    " JOIN scoring_posts AS p ON p.post_id = b.post_id"
                    " JOIN scoring_posts AS o ON o.post_id = coalesce(p.duplicate_of, p.post_id)"
                    " WHERE (b.origin_time, b.origin_id) IS DISTINCT FROM (o.time, o.post_id)"
                )
            )
        ).all()
    assert wrong == []
