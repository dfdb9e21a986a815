"""Scoring's facts, keyed by natural keys and resolved by event time: one upsert per table and
kind of event for a whole batch (a key met twice in a batch takes one more statement).

Any order of the same events gives the same rows: content by the latest edit, the latest
verdict, an interaction's latest state; a deletion that came before its post waits in the row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, String, and_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.scoring.models import CertifiedCreator, FollowerCount, Interaction, Post
from shared.characters import count_characters
from shared.events import BusEvent
from shared.settings import Settings

# An actor-day: (creator, month, actor, day), the unit the per-actor daily cap clamps
# (`months.capped_weight`).
ActorDayKey = tuple[str, str, str, str]


def paragraphs(text: str) -> int:
    return sum(1 for block in text.split("\n") if block.strip())


def _calendar(moment: datetime, settings: Settings) -> tuple[str, str]:
    local = moment.astimezone(settings.timezone)
    if local.year < 1000:  # strftime does not pad such years
        return local.strftime("%Y-%m"), local.strftime("%Y-%m-%d")
    month = f"{local.year}-{local.month:02d}"  # strftime's "%Y-%m", at a third of the cost
    return month, f"{month}-{local.day:02d}"


def _rounds(rows: list[dict], key: Callable[[dict], tuple]) -> list[list[dict]]:
    """The rows as statements to run one after another: a key at most once per statement (an
    upsert cannot touch a row twice), each key's rows in batch order, so running the rounds is
    running the rows one by one; within a round sorted by key, so concurrent batches lock rows
    in one order (they queue, never deadlock)."""
    rounds: list[list[dict]] = []
    seen: Counter[tuple] = Counter()
    for row in rows:
        index = seen[key(row)]
        seen[key(row)] += 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(row)
    return [sorted(r, key=key) for r in rounds]


def _post_key(row: dict) -> tuple:
    return (row["post_id"],)


def _newer_than_excluded(column, excluded_column):
    return or_(column.is_(None), column <= excluded_column)


async def certified(session: AsyncSession, events: Sequence[BusEvent]) -> None:
    rows = []
    for event in events:
        data = event.typed_data()
        rows.append(
            {
                "creator_id": event.creator_id,
                "certified_at": data.certified_at,
                "display_name": data.display_name,
            }
        )
    for batch in _rounds(rows, lambda r: (r["creator_id"],)):
        await session.execute(
            insert(CertifiedCreator).on_conflict_do_nothing(index_elements=["creator_id"]), batch
        )


async def followers_changed(session: AsyncSession, events: Sequence[BusEvent]) -> None:
    """The square followers at the event's time: history, any arrival order (two counts at one
    instant keep the larger)."""
    rows = [
        {"creator_id": e.creator_id, "time": e.time, "followers": e.data["followers"]}
        for e in events
    ]
    statement = insert(FollowerCount)
    statement = statement.on_conflict_do_update(
        index_elements=["creator_id", "time"],
        set_={"followers": func.greatest(FollowerCount.followers, statement.excluded.followers)},
    )
    for batch in _rounds(rows, lambda r: (r["creator_id"], r["time"])):
        await session.execute(statement, batch)


def _content(text: str, image_count: int) -> dict:
    return {
        "characters": count_characters(text),
        "image_count": image_count,
        "paragraphs": paragraphs(text),
    }


CONTENT = ("characters", "image_count", "paragraphs")


# Statements built once (by name): only the rows change from batch to batch.
_STATEMENTS: dict[str, Any] = {}


def from_arrays(model: Any, names: Sequence[str]) -> Any:
    """INSERT INTO the model's table (names) SELECT unnest(one array per column): one statement
    text whatever the number of rows, so it is compiled and prepared once (the columns not
    named take their defaults)."""
    columns = model.__table__.c
    arrays = [
        func.unnest(bindparam(f"{name}_values", type_=ARRAY(columns[name].type))) for name in names
    ]
    return insert(model.__table__).from_select(list(names), select(*arrays))


def arrays(rows: list[dict], names: Sequence[str]) -> dict[str, list]:
    return {f"{name}_values": [row[name] for row in rows] for name in names}


def row_arrays(rows: Sequence[Row], names: Sequence[str]) -> dict[str, list]:
    """`arrays` of result rows, taken by column (no dict made per row: thousands a batch)."""
    if not rows:
        return {f"{name}_values": [] for name in names}
    columns = dict(zip(rows[0]._fields, zip(*rows, strict=True), strict=True))
    return {f"{name}_values": list(columns[name]) for name in names}


async def _upsert_posts(
    session: AsyncSession, kind: str, rows: list[dict], set_of: Callable[[Any], dict]
) -> None:
    """Upsert post rows round by round (`set_of(excluded)` on a conflict); every row of a kind
    has the same columns."""
    if not rows:
        return
    names = list(rows[0])
    key = f"posts.{kind}"
    if key not in _STATEMENTS:
        statement = from_arrays(Post, names)
        _STATEMENTS[key] = statement.on_conflict_do_update(
            index_elements=["post_id"], set_=set_of(statement.excluded)
        )
    for batch in _rounds(rows, _post_key):
        await session.execute(_STATEMENTS[key], arrays(batch, names))


async def content_times(session: AsyncSession, post_ids: set[str]) -> dict[str, datetime | None]:
    """The time of each post's latest content (the edit or creation it shows)."""
    if not post_ids:
        return {}
    rows = await session.execute(
        select(Post.post_id, Post.content_time).where(Post.post_id.in_(sorted(post_ids)))
    )
    return dict(rows.all())


def _content_update(excluded) -> dict:
    newer = _newer_than_excluded(Post.content_time, excluded.content_time)
    return {
        **{name: case((newer, excluded[name]), else_=getattr(Post, name)) for name in CONTENT},
        "content_time": func.greatest(Post.content_time, excluded.content_time),
        "seq": excluded.seq,
    }


async def posts_created(
    session: AsyncSession, settings: Settings, events: Sequence[BusEvent]
) -> None:
    """Record the posts. An edit that came first keeps its text."""
    rows = []
    for event in events:
        data = event.data
        month, day = _calendar(event.time, settings)
        rows.append(
            {
                "post_id": data["post_id"],
                "creator_id": event.creator_id,
                "time": event.time,
                "month": month,
                "day": day,
                "kind": data.get("kind", "original"),
                **_content(data["text"], data["image_count"]),
                "content_time": event.time,
                "seq": event.seq,
                "deleted": False,
            }
        )

    def set_of(excluded) -> dict:
        return {
            "time": excluded.time,
            "month": excluded.month,
            "day": excluded.day,
            "kind": excluded.kind,
            **_content_update(excluded),
        }

    await _upsert_posts(session, "created", rows, set_of)


async def posts_updated(session: AsyncSession, events: Sequence[BusEvent]) -> None:
    """New content, where it is the latest."""
    rows = [
        {
            "post_id": e.data["post_id"],
            "creator_id": e.creator_id,
            **_content(e.data["text"], e.data["image_count"]),
            "content_time": e.time,
            "seq": e.seq,
            "deleted": False,
        }
        for e in events
    ]
    await _upsert_posts(session, "updated", rows, _content_update)


async def posts_deleted(session: AsyncSession, events: Sequence[BusEvent]) -> None:
    rows = [
        {"post_id": e.data["post_id"], "creator_id": e.creator_id, "deleted": True, "seq": e.seq}
        for e in events
    ]
    await _upsert_posts(session, "deleted", rows, lambda excluded: {"deleted": True})


async def posts_moderated(session: AsyncSession, events: Sequence[BusEvent]) -> None:
    rows = [
        {
            "post_id": e.data["post_id"],
            "creator_id": e.creator_id,
            "seq": e.seq,
            "verdict": e.data["verdict"],
            "quality_score": e.data.get("quality_score"),
            "verdict_time": e.time,
            "deleted": False,
        }
        for e in events
    ]

    def set_of(excluded) -> dict:
        newer = _newer_than_excluded(Post.verdict_time, excluded.verdict_time)
        return {
            "verdict": case((newer, excluded.verdict), else_=Post.verdict),
            "quality_score": case((newer, excluded.quality_score), else_=Post.quality_score),
            "verdict_time": func.greatest(Post.verdict_time, excluded.verdict_time),
        }

    await _upsert_posts(session, "moderated", rows, set_of)


async def interactions(
    session: AsyncSession, settings: Settings, events: Sequence[BusEvent]
) -> set[ActorDayKey]:
    """Each (actor, post, kind) created or deleted, the latest by event time winning; the
    actor-day (creator, month, actor, day) of every interaction it changed, before and after the
    change (a newer creation moves an interaction to its own day, perhaps another month).

    A creation sets the interaction's time (and so its day and month); a deletion only its
    state."""
    rows = []
    for event in events:
        data = event.data
        month, day = _calendar(event.time, settings)
        rows.append(
            {
                "actor_id": data["actor_id"],
                "post_id": data["post_id"],
                "kind": data["kind"],
                "creator_id": event.creator_id,
                "time": event.time,
                "month": month,
                "day": day,
                "deleted": event.type == "interaction.deleted",
                "state_time": event.time,
            }
        )
    changed: set[ActorDayKey] = set()
    if not rows:
        return changed
    if "interactions" not in _STATEMENTS:
        _STATEMENTS["interactions"] = _upsert_interactions()
        _STATEMENTS["interactions.before"] = _actor_days_of_interactions()
    for batch in _rounds(rows, _interaction_key):
        values = arrays(batch, INTERACTION_COLUMNS)
        for statement in ("interactions.before", "interactions"):
            changed |= {tuple(row) for row in await session.execute(_STATEMENTS[statement], values)}
    return changed


INTERACTION_COLUMNS = (
    "actor_id",
    "post_id",
    "kind",
    "creator_id",
    "time",
    "month",
    "day",
    "deleted",
    "state_time",
)


def _upsert_interactions() -> Any:
    statement = from_arrays(Interaction, INTERACTION_COLUMNS)
    excluded = statement.excluded
    newer = _newer_than_excluded(Interaction.state_time, excluded.state_time)
    created_and_newer = and_(newer, ~excluded.deleted)
    return statement.on_conflict_do_update(
        index_elements=["actor_id", "post_id", "kind"],
        set_={
            "deleted": case((newer, excluded.deleted), else_=Interaction.deleted),
            "state_time": func.greatest(Interaction.state_time, excluded.state_time),
            "time": case((created_and_newer, excluded.time), else_=Interaction.time),
            "month": case((created_and_newer, excluded.month), else_=Interaction.month),
            "day": case((created_and_newer, excluded.day), else_=Interaction.day),
        },
    ).returning(*ACTOR_DAY)


# An interaction's actor-day: months.ActorDayKey's columns.
ACTOR_DAY = (Interaction.creator_id, Interaction.month, Interaction.actor_id, Interaction.day)


def _actor_days_of_interactions() -> Any:
    """The actor-days of the interactions (keys as `INTERACTION_COLUMNS` arrays) as they are."""
    names = ("actor_id", "post_id", "kind")
    columns = Interaction.__table__.c
    keys = select(
        *(
            func.unnest(bindparam(f"{name}_values", type_=ARRAY(columns[name].type))).label(name)
            for name in names
        )
    ).subquery()
    return select(*ACTOR_DAY).join(
        keys, and_(*(getattr(Interaction, name) == keys.c[name] for name in names))
    )


def _interaction_key(row: dict) -> tuple:
    return (row["actor_id"], row["post_id"], row["kind"])


async def count_actors(session: AsyncSession, post_ids: set[str]) -> set[str]:
    """Count again the distinct actors of these posts (those with interactions in the batch, and
    those created in it, whose interactions may have come first); the posts whose count moved.
    A post not known yet has no row to count in: its creation counts it."""
    if not post_ids:
        return set()
    if "actors" not in _STATEMENTS:
        other = aliased(Interaction)
        counted = (
            select(func.count(func.distinct(other.actor_id)))
            .where(other.post_id == Post.post_id, ~other.deleted)
            .where(other.actor_id != other.creator_id)
            .scalar_subquery()
        )
        _STATEMENTS["actors"] = (
            update(Post)
            .where(Post.post_id == func.any(bindparam("ids", type_=ARRAY(String))))
            .where(Post.actors != counted)
            .values(actors=counted)
            .returning(Post.post_id)
        )
    return set(await session.scalars(_STATEMENTS["actors"], {"ids": sorted(post_ids)}))


async def actor_days_of_posts(
    session: AsyncSession, post_ids: set[str]
) -> tuple[set[tuple[str, str]], set[ActorDayKey]]:
    """(creator, month) of the posts themselves, and the actor-day of every interaction on them:
    what their deletion or removal changes."""
    if not post_ids:
        return set(), set()
    ids = sorted(post_ids)
    posts = await session.execute(
        select(Post.creator_id, Post.month).where(Post.post_id.in_(ids), Post.month.is_not(None))
    )
    interactions = await session.execute(
        select(*ACTOR_DAY).where(Interaction.post_id.in_(ids)).distinct()
    )
    return {(c, m) for c, m in posts}, {tuple(row) for row in interactions}


async def creator_months_of_posts(
    session: AsyncSession, post_ids: set[str]
) -> set[tuple[str, str]]:
    """(creator, month) of the posts, and of the month each was last counted in (a post created
    again at another time moves)."""
    if not post_ids:
        return set()
    rows = await session.execute(
        select(Post.creator_id, Post.month, Post.counted_month).where(Post.post_id.in_(post_ids))
    )
    return {(c, m) for c, *months in rows for m in months if m is not None}
