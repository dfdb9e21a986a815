"""The scoring consumer group: facts first, then the derived state of what the batch touched.

Each event updates the facts it is about (shared by natural keys, resolved by event time);
then every creator-month the batch touched is brought up to date from them (services/scoring/
months.py), in the same transaction, and so is the featured score of every post it touched
(services/scoring/featured.py).
Events for a settled month are kept as facts and counted, and change nothing paid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import duplicates, facts, featured, months, recommendations, standings
from shared.events import BusEvent
from shared.settings import Settings

GROUP = "scoring"

LATE_EVENTS = Counter(
    "creator_activity_scoring_late_events_total",
    "Creator-months touched by events after their month was settled (kept, not paid)",
)


def make_handler(settings: Settings):
    async def handle(session: AsyncSession, events: Sequence[BusEvent]) -> None:
        by_type: dict[str, list[BusEvent]] = defaultdict(list)
        for event in events:
            by_type[event.type].append(event)
        touched: set[tuple[str, str]] = set()
        changed_posts: set[str] = set()
        # Facts first, one statement per table and kind of event (facts do not depend on the
        # order they are applied in: tests/test_scoring_facts.py).
        if certified := by_type["creator.certified"]:
            await facts.certified(session, certified)
            for event in certified:
                # Eligibility changes: its months are rebuilt, so their standings versions move.
                touched |= await standings.months_of_creator(session, event.creator_id)
        await facts.posts_created(session, settings, by_type["post.created"])
        await facts.posts_updated(session, by_type["post.updated"])
        await facts.posts_deleted(session, by_type["post.deleted"])
        await facts.posts_moderated(session, by_type["post.moderated"])
        interactions = by_type["interaction.created"] + by_type["interaction.deleted"]
        interactions.sort(key=lambda e: e.seq)
        actor_days = await facts.interactions(session, settings, interactions)
        changed_posts |= await facts.count_actors(
            session, {e.data["post_id"] for e in interactions + by_type["post.created"]}
        )
        followers_moved = bool(by_type["creator.followers_changed"])
        await facts.followers_changed(session, by_type["creator.followers_changed"])
        # Then the near-duplicate index: each post created or edited, once, with the text of its
        # latest content if this batch brought it; else (an edit of an earlier batch is newer,
        # or came before the creation and waits unindexed) the signature stored with it.
        written = sorted(by_type["post.created"] + by_type["post.updated"], key=lambda e: e.seq)
        latest = await facts.content_times(session, {e.data["post_id"] for e in written})
        texts: dict[str, str | None] = {}
        for event in written:
            post_id = event.data["post_id"]
            if event.time == latest.get(post_id):
                texts[post_id] = event.data["text"]
            else:
                texts.setdefault(post_id, None)
        changed_posts |= await duplicates.index_posts(session, settings, list(texts.items()))
        changed_posts |= set(texts)
        removed = by_type["post.deleted"] + by_type["post.moderated"]
        removed_ids = {e.data["post_id"] for e in removed}
        posts_months, on_posts = await facts.actor_days_of_posts(session, removed_ids)
        changed_posts |= removed_ids
        touched |= posts_months | await facts.creator_months_of_posts(session, changed_posts)
        actor_days |= on_posts
        touched |= {(c, m) for c, m, _, _ in actor_days}
        late = await months.recompute(
            session,
            settings,
            touched,
            changed_actor_days=actor_days,
            changed_posts=changed_posts,
            touch=False,
        )
        await featured.refresh(session, settings, changed_posts | featured.touched_posts(events))
        # the creator-days of open months move with them; a settled month's still follow
        await recommendations.refresh_days(session, settings, set(late))
        if touched or followers_moved:
            # Last: every batch of every scoring process updates these rows, and holds them
            # until its commit; the later the shorter the others queue.
            settled = {month for _, month in late}
            await standings.touch(session, {m for _, m in touched if m not in settled})
        if late:
            LATE_EVENTS.inc(len(late))

    return handle
