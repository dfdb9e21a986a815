"""A creator's month, derived from the facts (the standings are in `standings.py`).

`recompute` rebuilds the rows of the creator-months a batch touched, from the facts alone, in
the batch's transaction: whatever order the events came in, the same facts give the same rows.
A settled month is never recomputed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import CHAR, String, and_, bindparam, case, delete, func, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.scoring import facts, score, standings
from services.scoring.facts import ActorDayKey
from services.scoring.models import ActorDay, CreatorMonth, Interaction, Post, Settlement
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
    touch: bool = True,
) -> list[tuple[str, str]]:
    """Rebuild the creator-months from the facts, but those of settled months; return the
    (creator, month) pairs that were settled already (late events). Without `touch`, the caller
    moves the months' standings versions itself (`standings.touch`), later in its transaction.

    The received interactions: with `changed_actor_days` (a consumer's batch: every actor-day
    whose counted interactions its facts may have changed), each month's kept total moves by
    the difference of those actor-days alone; without (a rescore), the months' actor-days are
    rebuilt from all their interactions."""
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
    for start in range(0, len(open_pairs), RECOMPUTE_CHUNK):
        chunk = open_pairs[start : start + RECOMPUTE_CHUNK]
        chunk_keys = None if keys is None else [k for p in chunk for k in keys_of.get(p, ())]
        await _recompute_many(session, settings, chunk, chunk_keys)
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


# Creator-months rebuilt per statement: a few queries for all of them, whatever the count
# (bounded so that a rescore of every month stays under PostgreSQL's bind parameter limit).
RECOMPUTE_CHUNK = 2000


async def _recompute_many(
    session: AsyncSession,
    settings: Settings,
    pairs: list[tuple[str, str]],
    changed: list[ActorDayKey] | None,
) -> None:
    """Rebuild these creator-months from the facts: a few queries and one upsert, keys sorted
    (two batches touching the same creator-months lock them in one order)."""
    statements = _recompute_statements(settings)
    keys = {"creators": [c for c, _ in pairs], "months": [m for _, m in pairs]}
    posts = dict.fromkeys(pairs, 0)
    quality_posts: dict[tuple[str, str], list] = {pair: [] for pair in pairs}
    for row in await session.execute(statements.posts_of, keys):
        pair = (row.creator_id, row.month)
        posts[pair] += 1
        if row.qualifies:
            quality_posts[pair].append(row)
    received = await _received(session, settings, statements, pairs, changed)

    values = []
    heuristic = score.QualityHeuristic.from_settings(settings)
    for creator_id, month in pairs:
        found = quality_posts[(creator_id, month)]
        qualities = [post_quality(row, row.distinct_actors or 0, heuristic) for row in found]
        quality = (sum(qualities, Decimal(0)) / len(qualities)) if qualities else Decimal(0)
        values.append(
            {
                "creator_id": creator_id,
                "month": month,
                "posts": posts[(creator_id, month)],
                "qualifying_posts": len(found),
                "active_days": len({row.day for row in found}),
                "interactions": received[(creator_id, month)],
                "quality": quality.quantize(score.SIX_PLACES),
            }
        )
    await session.execute(statements.upsert, facts.arrays(values, UPSERTED))


async def _received(
    session: AsyncSession,
    settings: Settings,
    statements: _Statements,
    pairs: list[tuple[str, str]],
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
        for creator_id, month, total in await session.execute(statements.totals_of, by_pairs):
            received[(creator_id, month)] = total
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
        rows = sorted(now, key=lambda r: (r.creator_id, r.month, r.actor_id, r.day))
        await session.execute(
            statements.insert_actor_days,
            facts.arrays([r._asdict() for r in rows], ACTOR_DAY_COLUMNS),
        )
    return received


ACTOR_DAY_COLUMNS = ("creator_id", "month", "actor_id", "day", *ACTOR_DAY_COUNTS)


UPSERTED = (
    "creator_id",
    "month",
    "posts",
    "qualifying_posts",
    "active_days",
    "interactions",
    "quality",
)

# The statements of `_recompute_many`, built once per rule (the settings they depend on): only
# the creator-months and actor-days change from batch to batch, passed as arrays.
_STATEMENTS: dict[tuple, _Statements] = {}


class _Statements(NamedTuple):
    posts_of: Any  # every post of the pairs, the qualifying ones with their distinct actors
    counted_of_pairs: Any  # the counted interactions of the pairs, by actor-day and kind
    counted_of_keys: Any  # the same, of the actor-days
    kept_of_keys: Any  # the kept actor-days
    totals_of: Any  # the kept received interactions of the pairs
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


def _build_recompute_statements(settings: Settings) -> _Statements:
    pairs = unnested(creators=("creator_id", String), months=("month", CHAR(7)))
    keys = unnested(
        creators=("creator_id", String),
        months=("month", CHAR(7)),
        actors=("actor_id", String),
        days=("day", CHAR(10)),
    )
    quality = qualifying(settings)
    # Every post of the creator-months (counted), the qualifying ones with what their quality
    # needs (their distinct actors: those of counted interactions, as the post counts).
    posts_of = (
        select(
            Post.creator_id,
            Post.month,
            Post.day,
            Post.characters,
            Post.image_count,
            Post.paragraphs,
            Post.quality_score,
            quality.label("qualifies"),
            Post.actors.label("distinct_actors"),
        )
        .join_from(
            pairs, Post, and_(Post.creator_id == pairs.c.creator_id, Post.month == pairs.c.month)
        )
        .where(Post.kind.is_not(None), ~Post.deleted)
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
    return _Statements(
        posts_of=posts_of,
        counted_of_pairs=counted.join(pairs, in_pairs).group_by(*by_actor_day),
        counted_of_keys=counted.join(keys, in_keys).group_by(*by_actor_day),
        kept_of_keys=select(*ActorDay.__table__.c).join(keys, key_of_actor_day),
        totals_of=select(
            CreatorMonth.creator_id, CreatorMonth.month, CreatorMonth.interactions
        ).join(
            pairs,
            and_(
                CreatorMonth.creator_id == pairs.c.creator_id, CreatorMonth.month == pairs.c.month
            ),
        ),
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
