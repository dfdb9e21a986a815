"""A creator's month, derived from the facts (the standings are in `standings.py`).

`recompute` brings the rows of the creator-months a batch touched up to date, in the batch's
transaction: their kept sums move by what the batch changed (the actor-days of its interactions,
the posts it changed), each change recomputed from the facts, so whatever order the events came
in the same facts give the same rows, and the rows a rebuild from all the facts (`rescore`)
gives (tests/test_scoring_facts.py). A settled month is never recomputed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    CHAR,
    Integer,
    Numeric,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.scoring import facts, score, standings
from services.scoring.facts import ActorDayKey
from services.scoring.models import (
    ActorDay,
    CreatorDay,
    CreatorMonth,
    Interaction,
    Post,
    Settlement,
)
from shared.settings import Settings


def month_bounds(month: str, settings: Settings) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of a program month."""
    year, number = map(int, month.split("-"))
    start = datetime(year, number, 1, tzinfo=settings.timezone)
    following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=settings.timezone)
    return start, following


def settle_after(month: str, settings: Settings) -> datetime:
    return month_bounds(month, settings)[1] + timedelta(hours=settings.settlement_grace_hours)


def is_substantial(settings: Settings):
    """shared.characters.long_or_image_post as a condition on `scoring_posts`."""
    return or_(
        Post.characters >= settings.qualifying_post_min_chars,
        and_(Post.image_count >= 1, Post.characters >= 1),
    )


def qualifying(settings: Settings):
    """An original quality post (PROGRAM.md), as a condition on `scoring_posts`."""
    return and_(
        Post.kind == "original",
        ~Post.deleted,
        or_(Post.verdict.is_(None), Post.verdict.not_in(("removed", "low_quality"))),
        is_substantial(settings),
        Post.duplicate_of.is_(None),
    )


def interaction_weights(settings: Settings) -> dict[str, int]:
    return {
        "like": settings.interaction_weight_like,
        "comment": settings.interaction_weight_comment,
        "share": settings.interaction_weight_share,
        "quote": settings.interaction_weight_quote,
    }


def _weight(settings: Settings):
    return case(
        *((Interaction.kind == kind, w) for kind, w in interaction_weights(settings).items()),
        else_=0,
    )


def counted_interactions(settings: Settings):
    """Interactions that count: not deleted, not the creator's own, on a post that is not
    deleted or removed (a post not known yet counts as neither)."""
    target = aliased(Post)  # its own name: callers correlate with an outer `Post`
    return (
        select(Interaction)
        .outerjoin(target, target.post_id == Interaction.post_id)
        .where(
            ~Interaction.deleted,
            Interaction.actor_id != Interaction.creator_id,
            ~func.coalesce(target.deleted, False),
            func.coalesce(target.verdict, "") != "removed",
        )
    )


KINDS = ("like", "comment", "share", "quote")
ACTOR_DAY_COUNTS = ("likes", "comments", "shares", "quotes")  # ActorDay's columns, by KINDS


def capped_weight(counts, settings: Settings) -> int:
    """What one actor-day adds to the creator's received interactions: its weighted
    interactions, clamped to `interaction_daily_cap_per_actor` (9 + 3 → 10)."""
    weights = interaction_weights(settings)
    pairs = zip(KINDS, ACTOR_DAY_COUNTS, strict=True)
    total = sum(getattr(counts, column) * weights[kind] for kind, column in pairs)
    return min(total, settings.interaction_daily_cap_per_actor)


def post_quality(post: Post, distinct_actors: int, heuristic: score.QualityHeuristic) -> Decimal:
    """A post's content quality: the moderation score, else the heuristic of the settings
    (`score.QualityHeuristic.from_settings`)."""
    return score.post_quality(
        characters=post.characters,
        image_count=post.image_count,
        paragraphs=post.paragraphs,
        distinct_actors=distinct_actors,
        moderation_score=post.quality_score,
        heuristic=heuristic,
    )


async def recompute(
    session: AsyncSession,
    settings: Settings,
    creator_months: Iterable[tuple[str, str]],
    *,
    changed_actor_days: Iterable[ActorDayKey] | None = None,
    changed_posts: Iterable[str] = (),
    touch: bool = True,
) -> list[tuple[str, str]]:
    """Bring the creator-months up to date with the facts, but those of settled months; return
    the (creator, month) pairs that were settled already (late events). Without `touch`, the caller
    moves the months' standings versions itself (`standings.touch`), later in its transaction.

    With `changed_actor_days` (a consumer's batch: every actor-day whose counted interactions
    its facts may have changed, and `changed_posts`, every post whose row it may have changed),
    each month's kept sums move by the difference of those actor-days and posts alone; a month
    without kept sums yet (new, or from before migration 0016) is rebuilt from its posts.
    Without (a rescore), every month is rebuilt from all its facts."""
    keys = None if changed_actor_days is None else set(changed_actor_days)
    pairs = sorted(set(creator_months) | {(c, m) for c, m, _, _ in keys or ()})
    if not pairs:
        return []
    await lock_months(session, {m for _, m in pairs}, shared=True)
    settled = set(
        await session.scalars(
            select(Settlement.month).where(Settlement.month.in_({m for _, m in pairs}))
        )
    )
    late = [(c, m) for c, m in pairs if m in settled]
    open_pairs = [(c, m) for c, m in pairs if m not in settled]
    await lock_creators(session, {c for c, _ in open_pairs})
    keys_of: dict[tuple[str, str], list[ActorDayKey]] = {}
    for key in sorted(keys or ()):
        keys_of.setdefault(key[:2], []).append(key)
    posts = sorted(set(changed_posts))
    # A batch's months in one go: a changed post may move from one of them to another, and is
    # read once. A rebuild of every month in chunks.
    size = RECOMPUTE_CHUNK if keys is None else max(len(open_pairs), 1)
    for start in range(0, len(open_pairs), size):
        chunk = open_pairs[start : start + size]
        chunk_keys = None if keys is None else [k for p in chunk for k in keys_of.get(p, ())]
        await _recompute_many(session, settings, chunk, chunk_keys, posts)
    if touch:  # precomputed standings and recommendations: their versions move
        await standings.touch(session, {m for _, m in pairs if m not in settled})
    return late


# Class of the advisory locks on months: held shared while a batch rebuilds a month's creators,
# exclusively while the month is settled.
MONTH_LOCK_CLASS = 0x6361_0004


async def lock_months(session: AsyncSession, months: Iterable[str], *, shared: bool) -> None:
    """Hold until commit a lock on each month, sorted (no deadlock between batches).

    Without it a batch that read "not settled" just before a settlement committed would rebuild
    the month's creators after it: the settled month's stats would move past what was paid.
    With it the settlement waits for batches in flight (then counts them: it checks that scoring
    is caught up under the lock), and a batch that comes after sees the month settled."""
    keys = sorted(zlib.crc32(m.encode()) - 2**31 for m in set(months))
    if not keys:
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await session.execute(
        text(f"SELECT count({function}(:class, key)) FROM unnest(CAST(:keys AS integer[])) AS key"),
        {"class": MONTH_LOCK_CLASS, "keys": keys},
    )


# Class of the advisory locks on creators while their derived state is rebuilt (the two-int
# form, the creator hashed into one of CREATOR_LOCK_BUCKETS: a rescore of every creator takes a
# bounded number of locks).
CREATOR_LOCK_CLASS = 0x6361_0009
CREATOR_LOCK_BUCKETS = 1024


async def lock_creators(session: AsyncSession, creator_ids: Iterable[str]) -> None:
    """Hold until commit a lock on each creator whose derived state this transaction rebuilds,
    taken in one statement, sorted (no deadlock between two batches).

    Two consumer processes (Kafka, several partitions) may rebuild one creator's state at once:
    the facts of a creator arrive on its own partition, but a near-duplicate of its post, found
    by another creator's batch, makes that batch rebuild it too. Without the lock, the one whose
    reads missed the other's facts (not committed yet) could commit last and write stale
    counts. With it, the second waits for the first's commit and then reads its facts
    (READ COMMITTED: each statement sees what is committed when it starts)."""
    buckets = sorted({zlib.crc32(c.encode()) % CREATOR_LOCK_BUCKETS for c in creator_ids})
    if not buckets:
        return
    await session.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(:class, bucket))"
            " FROM unnest(CAST(:buckets AS integer[])) AS bucket"
        ),
        {"class": CREATOR_LOCK_CLASS, "buckets": buckets},
    )


# Creator-months rebuilt per round of statements by a rescore (its memory stays bounded).
RECOMPUTE_CHUNK = 2000


async def _recompute_many(
    session: AsyncSession,
    settings: Settings,
    pairs: list[tuple[str, str]],
    changed: list[ActorDayKey] | None,
    changed_posts: list[str],
) -> None:
    """Bring these creator-months up to date: a few queries and one upsert, keys sorted (two
    batches touching the same creator-months lock them in one order)."""
    statements = _recompute_statements(settings)
    by_pairs = {"creators": [c for c, _ in pairs], "months": [m for _, m in pairs]}
    kept = {
        (row.creator_id, row.month): row
        for row in await session.execute(statements.kept_months, by_pairs)
    }
    sums = await _posts_side(
        session, settings, statements, pairs, kept if changed is not None else {}, changed_posts
    )
    received = await _received(session, settings, statements, pairs, kept, changed)
    active_days = dict.fromkeys(pairs, 0)
    for creator_id, month, days in await session.execute(statements.active_days_of, by_pairs):
        active_days[(creator_id, month)] = days
    values = []
    for pair in pairs:
        posts, qualifying_posts, quality_sum = sums[pair]
        quality = quality_sum / qualifying_posts if qualifying_posts else Decimal(0)
        values.append(
            {
                "creator_id": pair[0],
                "month": pair[1],
                "posts": posts,
                "qualifying_posts": qualifying_posts,
                "active_days": active_days[pair],
                "interactions": received[pair],
                "quality": quality.quantize(score.SIX_PLACES),
                "quality_sum": quality_sum,
            }
        )
    await session.execute(statements.upsert, facts.arrays(values, UPSERTED))


def _counted(row, heuristic: score.QualityHeuristic) -> tuple:
    """What a post adds to its creator-month: (month counted in, day, quality), the last two
    while it qualifies (else None), the first while it counts (else None)."""
    if row.kind is None or row.deleted or row.month is None:
        return (None, None, None)
    if not row.qualifies:
        return (row.month, None, None)
    return (row.month, row.day, post_quality(row, row.actors, heuristic))


async def _posts_side(
    session: AsyncSession,
    settings: Settings,
    statements: _Statements,
    pairs: list[tuple[str, str]],
    kept: dict[tuple[str, str], Any],
    changed_posts: list[str],
) -> dict[tuple[str, str], list]:
    """[posts, qualifying posts, quality sum] of each creator-month, the posts' counted columns
    and the creator-days brought up to date.

    A month with kept sums (in `kept`, its quality sum not None) moves by what each changed post
    adds now minus what it added as last counted; any other is rebuilt from all its posts. The
    sums equal a rebuild because a post's counted columns are written with every change of what
    it adds, in the transaction that moves the sums."""
    heuristic = score.QualityHeuristic.from_settings(settings)
    moving = {p for p in pairs if p in kept and kept[p].quality_sum is not None}
    rebuilt = [p for p in pairs if p not in moving]
    sums = {p: [0, 0, Decimal(0)] for p in rebuilt}
    for p in moving:
        sums[p] = [kept[p].posts, kept[p].qualifying_posts, kept[p].quality_sum]
    counted: dict[str, tuple] = {}  # post → what it adds now, where that changed
    days: dict[tuple[str, str], int] = {}  # (creator, day) → change of its qualifying posts
    if rebuilt:
        arrays = {"creators": [c for c, _ in rebuilt], "months": [m for _, m in rebuilt]}
        await session.execute(statements.delete_days_of_pairs, arrays)
        for row in await session.execute(statements.posts_of, arrays):
            now = _counted(row, heuristic)
            _add(sums, days, row.creator_id, now, 1)
            if now != (row.counted_month, row.counted_day, row.counted_quality):
                counted[row.post_id] = now
    if moving and changed_posts:
        for row in await session.execute(statements.changed_posts_of, {"ids": changed_posts}):
            before = (row.counted_month, row.counted_day, row.counted_quality)
            now = _counted(row, heuristic)
            if now == before:
                continue
            # the sums of a month rebuilt above have it already (by the month it is in now)
            if (row.creator_id, before[0]) in moving:
                _add(sums, days, row.creator_id, before, -1)
            if (row.creator_id, now[0]) in moving:
                _add(sums, days, row.creator_id, now, 1)
            counted[row.post_id] = now
    if counted:
        ids = sorted(counted)
        await session.execute(
            statements.set_counted,
            {
                "ids": ids,
                "counted_months": [counted[i][0] for i in ids],
                "counted_days": [counted[i][1] for i in ids],
                "counted_qualities": [counted[i][2] for i in ids],
            },
        )
    if days := {key: n for key, n in days.items() if n}:
        keys = sorted(days)
        arrays = {
            "creators": [c for c, _ in keys],
            "days": [d for _, d in keys],
            "changes": [days[k] for k in keys],
        }
        await session.execute(statements.add_days, arrays)
        await session.execute(statements.delete_empty_days, arrays)
    return sums


def _add(sums: dict, days: dict, creator_id: str, counted: tuple, sign: int) -> None:
    month, day, quality = counted
    if month is None or (creator_id, month) not in sums:
        return
    total = sums[(creator_id, month)]
    total[0] += sign
    if day is not None:
        total[1] += sign
        total[2] += sign * quality
        days[(creator_id, day)] = days.get((creator_id, day), 0) + sign


async def _received(
    session: AsyncSession,
    settings: Settings,
    statements: _Statements,
    pairs: list[tuple[str, str]],
    kept: dict[tuple[str, str], Any],
    changed: list[ActorDayKey] | None,
) -> dict[tuple[str, str], int]:
    """The received interactions of each creator-month, its actor-days brought up to date.

    A month's kept total is the sum of its actor-days' capped weights (the migration that made
    the table filled both, and they are written together since): so the total plus, for each
    changed actor-day, its capped weight now minus before is the sum over the facts. A month
    without a row has no actor-days yet (they are written with their month's row)."""
    by_pairs = {"creators": [c for c, _ in pairs], "months": [m for _, m in pairs]}
    received = dict.fromkeys(pairs, 0)
    before: list = []
    now: list = []
    if changed is None:
        await session.execute(statements.delete_of_pairs, by_pairs)
        now = (await session.execute(statements.counted_of_pairs, by_pairs)).all()
    else:
        for pair, row in kept.items():
            received[pair] = row.interactions
        if changed:
            by_keys = {
                "creators": [k[0] for k in changed],
                "months": [k[1] for k in changed],
                "actors": [k[2] for k in changed],
                "days": [k[3] for k in changed],
            }
            before = (await session.execute(statements.kept_of_keys, by_keys)).all()
            now = (await session.execute(statements.counted_of_keys, by_keys)).all()
            await session.execute(statements.delete_of_keys, by_keys)
    for row in before:
        received[(row.creator_id, row.month)] -= capped_weight(row, settings)
    for row in now:
        received[(row.creator_id, row.month)] += capped_weight(row, settings)
    if now:
        rows = sorted(now, key=_ACTOR_DAY_KEY)
        await session.execute(
            statements.insert_actor_days, facts.row_arrays(rows, ACTOR_DAY_COLUMNS)
        )
    return received


ACTOR_DAY_COLUMNS = ("creator_id", "month", "actor_id", "day", *ACTOR_DAY_COUNTS)
_ACTOR_DAY_KEY = attrgetter("creator_id", "month", "actor_id", "day")  # of the counted rows


UPSERTED = (
    "creator_id",
    "month",
    "posts",
    "qualifying_posts",
    "active_days",
    "interactions",
    "quality",
    "quality_sum",
)

# The statements of `_recompute_many`, built once per rule (the settings they depend on): only
# the creator-months and actor-days change from batch to batch, passed as arrays.
_STATEMENTS: dict[tuple, _Statements] = {}


class _Statements(NamedTuple):
    kept_months: Any  # the creator-months' kept rows
    posts_of: Any  # every post of the pairs, with what it adds and what it added
    changed_posts_of: Any  # the same, of posts by id
    set_counted: Any  # the posts' counted columns
    delete_days_of_pairs: Any  # the creator-days of the pairs
    add_days: Any  # changes of creator-days' qualifying posts
    delete_empty_days: Any  # creator-days left without a qualifying post
    active_days_of: Any  # the pairs' creator-days, counted
    counted_of_pairs: Any  # the counted interactions of the pairs, by actor-day and kind
    counted_of_keys: Any  # the same, of the actor-days
    kept_of_keys: Any  # the kept actor-days
    delete_of_pairs: Any
    delete_of_keys: Any
    insert_actor_days: Any
    upsert: Any  # the creator-months


def counting_rule(settings: Settings) -> tuple:
    """The settings the counting statements depend on: what makes a post qualify by length,
    and what each kind of interaction weighs (the key of the statements built once)."""
    return (
        settings.qualifying_post_min_chars,
        settings.interaction_weight_like,
        settings.interaction_weight_comment,
        settings.interaction_weight_share,
        settings.interaction_weight_quote,
    )


def _recompute_statements(settings: Settings) -> _Statements:
    rule = counting_rule(settings)
    if rule not in _STATEMENTS:
        _STATEMENTS[rule] = _build_recompute_statements(settings)
    return _STATEMENTS[rule]


def unnested(**arrays: Any) -> Any:
    """A subquery of parallel arrays bound by name, one row per index."""
    return select(
        *(
            func.unnest(bindparam(name, type_=ARRAY(kind))).label(label)
            for name, (label, kind) in arrays.items()
        )
    ).subquery()


def creator_days_of(pairs: Any) -> Any:
    """The condition "a creator-day of one of `pairs`" (a subquery of creator_id, month): its
    creator, a day of its month (the primary key's range)."""
    first, last = (cast(pairs.c.month + day, CHAR(10)) for day in ("-01", "-31"))
    return and_(CreatorDay.creator_id == pairs.c.creator_id, CreatorDay.day.between(first, last))


def _build_recompute_statements(settings: Settings) -> _Statements:
    pairs = unnested(creators=("creator_id", String), months=("month", CHAR(7)))
    keys = unnested(
        creators=("creator_id", String),
        months=("month", CHAR(7)),
        actors=("actor_id", String),
        days=("day", CHAR(10)),
    )
    post_columns = (
        Post.post_id,
        Post.creator_id,
        Post.month,
        Post.day,
        Post.kind,
        Post.deleted,
        Post.characters,
        Post.image_count,
        Post.paragraphs,
        Post.quality_score,
        Post.actors,
        Post.counted_month,
        Post.counted_day,
        Post.counted_quality,
        qualifying(settings).label("qualifies"),
    )
    posts_of = select(*post_columns).join_from(
        pairs, Post, and_(Post.creator_id == pairs.c.creator_id, Post.month == pairs.c.month)
    )
    changed_posts_of = select(*post_columns).where(
        Post.post_id == func.any(bindparam("ids", type_=ARRAY(String)))
    )
    counted = unnested(
        ids=("post_id", String),
        counted_months=("counted_month", CHAR(7)),
        counted_days=("counted_day", CHAR(10)),
        counted_qualities=("counted_quality", Numeric(7, 6)),
    )
    set_counted = (
        update(Post)
        .where(Post.post_id == counted.c.post_id)
        .values(
            counted_month=counted.c.counted_month,
            counted_day=counted.c.counted_day,
            counted_quality=counted.c.counted_quality,
        )
    )
    day_in_pairs = creator_days_of(pairs)
    changes = unnested(
        creators=("creator_id", String), days=("day", CHAR(10)), changes=("change", Integer)
    )
    added = insert(CreatorDay.__table__).from_select(
        ["creator_id", "day", "qualifying_posts"],
        select(changes.c.creator_id, changes.c.day, changes.c.change),
    )
    add_days = added.on_conflict_do_update(
        index_elements=["creator_id", "day"],
        set_={"qualifying_posts": CreatorDay.qualifying_posts + added.excluded.qualifying_posts},
    )
    delete_empty_days = delete(CreatorDay).where(
        CreatorDay.creator_id == changes.c.creator_id,
        CreatorDay.day == changes.c.day,
        CreatorDay.qualifying_posts <= 0,
    )
    by_actor_day = (
        Interaction.creator_id,
        Interaction.month,
        Interaction.actor_id,
        Interaction.day,
    )
    counted = counted_interactions(settings).with_only_columns(
        *by_actor_day,
        *(
            func.count().filter(Interaction.kind == kind).label(column)
            for kind, column in zip(KINDS, ACTOR_DAY_COUNTS, strict=True)
        ),
    )
    in_pairs = and_(
        Interaction.creator_id == pairs.c.creator_id, Interaction.month == pairs.c.month
    )
    in_keys = and_(
        *(
            getattr(Interaction, name) == keys.c[name]
            for name in ("creator_id", "month", "actor_id", "day")
        )
    )
    key_of_actor_day = and_(
        *(
            getattr(ActorDay, name) == keys.c[name]
            for name in ("creator_id", "month", "actor_id", "day")
        )
    )
    pair_of_actor_day = and_(
        ActorDay.creator_id == pairs.c.creator_id, ActorDay.month == pairs.c.month
    )
    statement = facts.from_arrays(CreatorMonth, UPSERTED)
    excluded = statement.excluded
    month_in_pairs = and_(
        CreatorMonth.creator_id == pairs.c.creator_id, CreatorMonth.month == pairs.c.month
    )
    return _Statements(
        kept_months=select(*CreatorMonth.__table__.c).join(pairs, month_in_pairs),
        posts_of=posts_of,
        changed_posts_of=changed_posts_of,
        set_counted=set_counted,
        delete_days_of_pairs=delete(CreatorDay).where(day_in_pairs),
        add_days=add_days,
        delete_empty_days=delete_empty_days,
        active_days_of=select(pairs.c.creator_id, pairs.c.month, func.count())
        .join(CreatorDay, day_in_pairs)
        .group_by(pairs.c.creator_id, pairs.c.month),
        counted_of_pairs=counted.join(pairs, in_pairs).group_by(*by_actor_day),
        counted_of_keys=counted.join(keys, in_keys).group_by(*by_actor_day),
        kept_of_keys=select(*ActorDay.__table__.c).join(keys, key_of_actor_day),
        delete_of_pairs=delete(ActorDay).where(pair_of_actor_day),
        delete_of_keys=delete(ActorDay).where(key_of_actor_day),
        insert_actor_days=facts.from_arrays(ActorDay, ACTOR_DAY_COLUMNS),
        upsert=statement.on_conflict_do_update(
            index_elements=["creator_id", "month"],
            set_={name: excluded[name] for name in UPSERTED[2:]} | {"updated_at": func.now()},
        ),
    )


async def provisional_creator_months(
    session: AsyncSession, month: str | None = None
) -> set[tuple[str, str]]:
    """Every (creator, month) with facts, in months not settled (or in one month)."""
    pairs: set[tuple[str, str]] = set()
    for table in (Post, Interaction):
        query = select(table.creator_id, table.month).where(table.month.is_not(None)).distinct()
        if month is not None:
            query = query.where(table.month == month)
        pairs |= {(c, m) for c, m in await session.execute(query)}
    settled = set(await session.scalars(select(Settlement.month)))
    return {(c, m) for c, m in pairs if m not in settled}
