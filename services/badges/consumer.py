"""The badges consumer group: certification badges, new-creator vouchers, and what a month's
settlement earns (pool shares, merch gifts: services/badges/streaks.py), and the bonus of a
frozen week's featured posts (services/badges/featured.py).

Facts first, then decisions: each event updates what is known of a creator or a post (keyed by
their natural keys, resolved by event time, so arrival order does not matter); then every
creator the batch touched is looked at again by the voucher rule. A post that arrived before
the certification counts when the certification is processed.
"""

from __future__ import annotations

from collections import defaultdict
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
        by_type: dict[str, list[BusEvent]] = defaultdict(list)
        # Creators to look at again, in the order of their last event in the batch (vouchers are
        # first come, first served): by their first event, a creator whose post came before its
        # certification went ahead of creators certified before it, depending on where the
        # batch began (test_upgrade's clean run, when its certifications shared a batch).
        touched: dict[str, None] = {}
        first_posts: dict[str, FirstPost] = {}
        for event in events:
            by_type[event.type].append(event)
            if event.type in FACTS:
                touched.pop(event.creator_id, None)
                touched[event.creator_id] = None
            if event.type == "post.created":
                _first_post(first_posts, event)
        # Facts: one statement per table and kind of event (resolved by event time, so the
        # order they are applied in does not matter).
        await _certify(session, by_type["creator.certified"])
        await _posts_created(session, by_type["post.created"], min_chars)
        await _posts_edited(session, by_type["post.updated"], min_chars)
        await _posts_deleted(session, by_type["post.deleted"])
        await _posts_moderated(session, by_type["post.moderated"])
        # About many creators, none of the above: in log order.
        for event in events:
            if event.type == "month.settled":
                await streaks.settle(session, event)
            elif event.type == "week.frozen":
                await featured.issue_bonuses(session, event)  # the featured-post bonuses
        await repository.record_posts(session, first_posts.values())
        await vouchers.decide_many(session, settings, list(touched))

    return handle


# The events about one creator's certification or posts: the voucher rule looks at it again.
FACTS = ("creator.certified", "post.created", "post.updated", "post.deleted", "post.moderated")


def _rounds(rows: list[dict], key) -> list[list[dict]]:
    """The rows as statements to run one after another: a key at most once per statement (an
    upsert cannot touch a row twice), each key's rows in batch order; within a statement
    sorted by key, so concurrent batches lock rows in one order."""
    rounds: list[list[dict]] = []
    seen: dict[tuple, int] = {}
    for row in rows:
        index = seen.get(key(row), 0)
        seen[key(row)] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(row)
    return [sorted(r, key=key) for r in rounds]


async def _certify(session: AsyncSession, events: Sequence[BusEvent]) -> None:
    """The certifications and their badges, once each whatever the redeliveries (the first
    event of a creator wins, as one by one)."""
    if not events:
        return
    creators, badges = [], []
    for event in events:
        certified_at = event.typed_data().certified_at
        creators.append(
            {"creator_id": event.creator_id, "certified_at": certified_at, "seq": event.seq}
        )
        badges.append(
            {
                "creator_id": event.creator_id,
                "kind": CERTIFICATION_BADGE,
                "awarded_at": certified_at,
                "seq": event.seq,
            }
        )
    for rows in _rounds(creators, lambda r: (r["creator_id"],)):
        await session.execute(
            insert(CertifiedCreator).on_conflict_do_nothing(index_elements=["creator_id"]), rows
        )
    for rows in _rounds(badges, lambda r: (r["creator_id"], r["kind"])):
        await session.execute(
            insert(Badge).on_conflict_do_nothing(index_elements=["creator_id", "kind"]), rows
        )


async def _upsert_posts(session: AsyncSession, rows: list[dict], set_of) -> None:
    """Create each post's row with its values, or update it (`set_of(excluded)`)."""
    for batch in _rounds(rows, lambda r: (r["post_id"],)):
        statement = insert(PostFact)
        statement = statement.on_conflict_do_update(
            index_elements=["post_id"], set_=set_of(statement.excluded)
        )
        await session.execute(statement, batch)


def _newer_content(excluded):
    return or_(PostFact.content_time.is_(None), PostFact.content_time <= excluded.content_time)


def _substantial(event: BusEvent, min_chars: int) -> bool:
    return vouchers.is_substantial(event.data["text"], event.data["image_count"], min_chars)


async def _posts_created(session: AsyncSession, events: Sequence[BusEvent], min_chars: int):
    rows = [
        {
            "post_id": e.data["post_id"],
            "creator_id": e.creator_id,
            "time": e.time,
            "original": e.data["kind"] == "original",
            "substantial": _substantial(e, min_chars),
            "content_time": e.time,
            "created_seq": e.seq,
            "source": e.source,
            "event_id": e.id,
        }
        for e in events
    ]

    def set_of(excluded) -> dict:  # an edit that came first keeps its text
        return {
            "time": excluded.time,
            "original": excluded.original,
            "substantial": case(
                (_newer_content(excluded), excluded.substantial), else_=PostFact.substantial
            ),
            "content_time": func.greatest(PostFact.content_time, excluded.content_time),
            "created_seq": excluded.created_seq,
            "source": excluded.source,
            "event_id": excluded.event_id,
        }

    await _upsert_posts(session, rows, set_of)


async def _posts_edited(session: AsyncSession, events: Sequence[BusEvent], min_chars: int):
    rows = [
        {
            "post_id": e.data["post_id"],
            "creator_id": e.creator_id,
            "substantial": _substantial(e, min_chars),
            "content_time": e.time,
        }
        for e in events
    ]

    def set_of(excluded) -> dict:
        return {
            "substantial": case(
                (_newer_content(excluded), excluded.substantial), else_=PostFact.substantial
            ),
            "content_time": func.greatest(PostFact.content_time, excluded.content_time),
        }

    await _upsert_posts(session, rows, set_of)


async def _posts_deleted(session: AsyncSession, events: Sequence[BusEvent]) -> None:
    rows = [
        {"post_id": e.data["post_id"], "creator_id": e.creator_id, "deleted": True} for e in events
    ]
    await _upsert_posts(session, rows, lambda excluded: {"deleted": True})


async def _posts_moderated(session: AsyncSession, events: Sequence[BusEvent]) -> None:
    rows = [
        {
            "post_id": e.data["post_id"],
            "creator_id": e.creator_id,
            "removed": e.data["verdict"] == "removed",
            "verdict_time": e.time,
        }
        for e in events
    ]

    def set_of(excluded) -> dict:
        newer = or_(PostFact.verdict_time.is_(None), PostFact.verdict_time <= excluded.verdict_time)
        return {
            "removed": case((newer, excluded.removed), else_=PostFact.removed),
            "verdict_time": func.greatest(PostFact.verdict_time, excluded.verdict_time),
        }

    await _upsert_posts(session, rows, set_of)


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
