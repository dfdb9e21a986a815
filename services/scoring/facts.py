"""Scoring's facts, one upsert per event, keyed by natural keys and resolved by event time.

Any order of the same events gives the same rows: content by the latest edit, the latest
verdict, an interaction's latest state; a deletion that came before its post waits in the row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.models import CertifiedCreator, FollowerCount, Interaction, Post
from shared.characters import count_characters
from shared.events import BusEvent
from shared.settings import Settings


def paragraphs(text: str) -> int:
    return sum(1 for block in text.split("\n") if block.strip())


def _calendar(moment: datetime, settings: Settings) -> tuple[str, str]:
    local = moment.astimezone(settings.timezone)
    return local.strftime("%Y-%m"), local.strftime("%Y-%m-%d")


def _newer(column, moment: datetime):
    return or_(column.is_(None), column <= moment)


async def certified(session: AsyncSession, event: BusEvent) -> None:
    data = event.typed_data()
    await session.execute(
        insert(CertifiedCreator)
        .values(
            creator_id=event.creator_id,
            certified_at=data.certified_at,
            display_name=data.display_name,
        )
        .on_conflict_do_nothing(index_elements=["creator_id"])
    )


async def followers_changed(session: AsyncSession, event: BusEvent) -> None:
    """The square followers at the event's time: history, any arrival order (two counts at one
    instant keep the larger)."""
    statement = insert(FollowerCount).values(
        creator_id=event.creator_id, time=event.time, followers=event.data["followers"]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["creator_id", "time"],
            set_={
                "followers": func.greatest(FollowerCount.followers, statement.excluded.followers)
            },
        )
    )


def _content(text: str, image_count: int) -> dict:
    return {
        "characters": count_characters(text),
        "image_count": image_count,
        "paragraphs": paragraphs(text),
    }


async def post_created(session: AsyncSession, settings: Settings, event: BusEvent) -> bool:
    """Record the post; True when its text is now the latest known (to index it)."""
    data = event.data
    month, day = _calendar(event.time, settings)
    content = _content(data["text"], data["image_count"])
    values = {
        "post_id": data["post_id"],
        "creator_id": event.creator_id,
        "time": event.time,
        "month": month,
        "day": day,
        "kind": data.get("kind", "original"),
        **content,
        "content_time": event.time,
        "seq": event.seq,
    }
    statement = insert(Post).values(values)
    newer = _newer(Post.content_time, event.time)  # an edit that came first keeps its text
    update = {
        "time": event.time,
        "month": month,
        "day": day,
        "kind": values["kind"],
        **{
            name: case((newer, value), else_=getattr(Post, name)) for name, value in content.items()
        },
        "content_time": func.greatest(Post.content_time, event.time),
        "seq": event.seq,
    }
    latest = await session.scalar(
        statement.on_conflict_do_update(index_elements=["post_id"], set_=update).returning(
            Post.content_time == event.time
        )
    )
    return bool(latest)


async def post_updated(session: AsyncSession, event: BusEvent) -> bool:
    """New content, if it is the latest; True when it is (to index it)."""
    data = event.data
    content = _content(data["text"], data["image_count"])
    newer = _newer(Post.content_time, event.time)
    statement = insert(Post).values(
        post_id=data["post_id"],
        creator_id=event.creator_id,
        **content,
        content_time=event.time,
        seq=event.seq,
    )
    latest = await session.scalar(
        statement.on_conflict_do_update(
            index_elements=["post_id"],
            set_={
                **{n: case((newer, v), else_=getattr(Post, n)) for n, v in content.items()},
                "content_time": func.greatest(Post.content_time, event.time),
                "seq": event.seq,
            },
        ).returning(Post.content_time == event.time)
    )
    return bool(latest)


async def post_deleted(session: AsyncSession, event: BusEvent) -> None:
    await session.execute(
        insert(Post)
        .values(
            post_id=event.data["post_id"], creator_id=event.creator_id, deleted=True, seq=event.seq
        )
        .on_conflict_do_update(index_elements=["post_id"], set_={"deleted": True})
    )


async def post_moderated(session: AsyncSession, event: BusEvent) -> None:
    data = event.data
    score = data.get("quality_score")
    values = {"verdict": data["verdict"], "quality_score": score, "verdict_time": event.time}
    newer = _newer(Post.verdict_time, event.time)
    await session.execute(
        insert(Post)
        .values(post_id=data["post_id"], creator_id=event.creator_id, seq=event.seq, **values)
        .on_conflict_do_update(
            index_elements=["post_id"],
            set_={
                "verdict": case((newer, data["verdict"]), else_=Post.verdict),
                "quality_score": case((newer, score), else_=Post.quality_score),
                "verdict_time": func.greatest(Post.verdict_time, event.time),
            },
        )
    )


async def interaction(
    session: AsyncSession, settings: Settings, event: BusEvent, *, deleted: bool
) -> str:
    """An (actor, post, kind) created or deleted, the latest by event time winning; its month.

    A creation sets the interaction's time (and so its day and month); a deletion only its state.
    """
    data = event.data
    month, day = _calendar(event.time, settings)
    newer = _newer(Interaction.state_time, event.time)
    values = {
        "actor_id": data["actor_id"],
        "post_id": data["post_id"],
        "kind": data["kind"],
        "creator_id": event.creator_id,
        "time": event.time,
        "month": month,
        "day": day,
        "deleted": deleted,
        "state_time": event.time,
    }
    update = {
        "deleted": case((newer, deleted), else_=Interaction.deleted),
        "state_time": func.greatest(Interaction.state_time, event.time),
    }
    if not deleted:
        update |= {
            "time": case((newer, event.time), else_=Interaction.time),
            "month": case((newer, month), else_=Interaction.month),
            "day": case((newer, day), else_=Interaction.day),
        }
    return await session.scalar(
        insert(Interaction)
        .values(values)
        .on_conflict_do_update(index_elements=["actor_id", "post_id", "kind"], set_=update)
        .returning(Interaction.month)
    )


async def months_of_post(session: AsyncSession, post_id: str) -> set[tuple[str, str]]:
    """(creator, month) of the post itself and of every interaction on it: what its deletion
    or removal changes."""
    post = await session.execute(
        select(Post.creator_id, Post.month).where(Post.post_id == post_id, Post.month.is_not(None))
    )
    interactions = await session.execute(
        select(Interaction.creator_id, Interaction.month)
        .where(Interaction.post_id == post_id)
        .distinct()
    )
    return {(c, m) for c, m in post} | {(c, m) for c, m in interactions}


async def creator_months_of_posts(
    session: AsyncSession, post_ids: set[str]
) -> set[tuple[str, str]]:
    if not post_ids:
        return set()
    rows = await session.execute(
        select(Post.creator_id, Post.month).where(
            Post.post_id.in_(post_ids), Post.month.is_not(None)
        )
    )
    return {(c, m) for c, m in rows}
