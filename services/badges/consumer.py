"""The badges consumer group: certification badges, new-creator vouchers, and what a month's
settlement earns (pool shares, merch gifts: services/badges/streaks.py), and the bonus of a
frozen week's featured posts (services/badges/featured.py).

Facts first, then decisions: each event updates what is known of a creator or a post (keyed by
their natural keys, resolved by event time, so arrival order does not matter); then every
creator the batch touched is looked at again by the voucher rule. A post that arrived before
the certification counts when the certification is processed.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import case, func, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.badges import featured, repository, streaks, vouchers
from services.badges.models import Badge, CertifiedCreator, PostFact
from services.badges.repository import FirstPost
from shared.events import BusEvent
from shared.settings import Settings

GROUP = "badges"
CERTIFICATION_BADGE = "certification"


def make_handler(settings: Settings):
    min_chars = settings.qualifying_post_min_chars

    async def handle(session: AsyncSession, events: Sequence[BusEvent]) -> None:
        touched: dict[str, None] = {}  # creators to look at again, in the order first touched
        first_posts: dict[str, FirstPost] = {}
        for event in events:
            data = event.data
            if event.type == "creator.certified":
                await _certify(session, event)
            elif event.type == "post.created":
                substantial = vouchers.is_substantial(data["text"], data["image_count"], min_chars)
                await _post_created(session, event, substantial)
                _first_post(first_posts, event)
            elif event.type == "post.updated":
                substantial = vouchers.is_substantial(data["text"], data["image_count"], min_chars)
                await _post_edited(session, event, substantial)
            elif event.type == "post.deleted":
                await _post_fact(session, event, {"deleted": True})
            elif event.type == "post.moderated":
                await _post_moderated(session, event, data["verdict"] == "removed")
            elif event.type == "month.settled":
                await streaks.settle(session, event)  # about many creators, none of the above
                continue
            elif event.type == "week.frozen":
                await featured.issue_bonuses(session, event)  # the featured-post bonuses
                continue
            else:
                continue
            touched[event.creator_id] = None
        await repository.record_posts(session, first_posts.values())
        for creator_id in touched:
            await vouchers.decide(session, settings, creator_id)

    return handle


async def _certify(session: AsyncSession, event: BusEvent) -> None:
    """The certification and its badge, once each whatever the redeliveries."""
    certified_at = event.typed_data().certified_at
    await session.execute(
        insert(CertifiedCreator)
        .values(creator_id=event.creator_id, certified_at=certified_at, seq=event.seq)
        .on_conflict_do_nothing(index_elements=["creator_id"])
    )
    await session.execute(
        insert(Badge)
        .values(
            creator_id=event.creator_id,
            kind=CERTIFICATION_BADGE,
            awarded_at=certified_at,
            seq=event.seq,
        )
        .on_conflict_do_nothing(index_elements=["creator_id", "kind"])
    )


async def _post_fact(session: AsyncSession, event: BusEvent, values: dict, set_=None) -> None:
    """Create the post's row with these values, or update it (with `set_`, or the values)."""
    statement = insert(PostFact).values(
        post_id=event.data["post_id"], creator_id=event.creator_id, **values
    )
    await session.execute(
        statement.on_conflict_do_update(index_elements=["post_id"], set_=set_ or values)
    )


def _newer_content(event: BusEvent):
    return or_(PostFact.content_time.is_(None), PostFact.content_time <= event.time)


async def _post_created(session: AsyncSession, event: BusEvent, substantial: bool) -> None:
    values = {
        "time": event.time,
        "original": event.data["kind"] == "original",
        "substantial": substantial,
        "content_time": event.time,
        "created_seq": event.seq,
        "source": event.source,
        "event_id": event.id,
    }
    newer = _newer_content(event)  # an edit that came first keeps its text
    set_ = values | {
        "substantial": case((newer, substantial), else_=PostFact.substantial),
        "content_time": func.greatest(PostFact.content_time, event.time),
    }
    await _post_fact(session, event, values, set_)


async def _post_edited(session: AsyncSession, event: BusEvent, substantial: bool) -> None:
    newer = _newer_content(event)
    await _post_fact(
        session,
        event,
        {"substantial": substantial, "content_time": event.time},
        {
            "substantial": case((newer, substantial), else_=PostFact.substantial),
            "content_time": func.greatest(PostFact.content_time, event.time),
        },
    )


async def _post_moderated(session: AsyncSession, event: BusEvent, removed: bool) -> None:
    newer = or_(PostFact.verdict_time.is_(None), PostFact.verdict_time <= event.time)
    await _post_fact(
        session,
        event,
        {"removed": removed, "verdict_time": event.time},
        {
            "removed": case((newer, removed), else_=PostFact.removed),
            "verdict_time": func.greatest(PostFact.verdict_time, event.time),
        },
    )


def _first_post(first_posts: dict[str, FirstPost], event: BusEvent) -> None:
    summary = first_posts.get(event.creator_id)
    if summary is None:
        first_posts[event.creator_id] = FirstPost(
            event.creator_id, event.data["post_id"], event.time, posts=1
        )
        return
    summary.posts += 1
    if event.time < summary.first_post_at:
        summary.first_post_id, summary.first_post_at = event.data["post_id"], event.time
