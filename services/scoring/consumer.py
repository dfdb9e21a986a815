"""The scoring consumer group: facts first, then the derived state of what the batch touched.

Each event updates the facts it is about (shared by natural keys, resolved by event time);
then every creator-month the batch touched is rebuilt from the facts, in the same transaction,
and so is the featured score of every post it touched (services/scoring/featured.py).
Events for a settled month are kept as facts and counted, and change nothing paid.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import duplicates, facts, featured, months, recommendations
from shared.events import BusEvent
from shared.program_time import month_of
from shared.settings import Settings

GROUP = "scoring"

LATE_EVENTS = Counter(
    "creator_activity_scoring_late_events_total",
    "Creator-months touched by events after their month was settled (kept, not paid)",
)


def make_handler(settings: Settings):
    zone = settings.timezone

    async def handle(session: AsyncSession, events: Sequence[BusEvent]) -> None:
        touched: set[tuple[str, str]] = set()
        changed_posts: set[str] = set()
        for event in events:
            data = event.data
            kind = event.type
            if kind == "creator.certified":
                await facts.certified(session, event)
            elif kind in ("post.created", "post.updated"):
                latest = await (
                    facts.post_created(session, settings, event)
                    if kind == "post.created"
                    else facts.post_updated(session, event)
                )
                # The latest text is indexed; a creation that comes after its edit indexes the
                # edit's stored signature (its time is only known now).
                changed_posts |= await duplicates.index_post(
                    session, settings, data["post_id"], data["text"] if latest else None
                )
                changed_posts.add(data["post_id"])
            elif kind in ("post.deleted", "post.moderated"):
                if kind == "post.deleted":
                    await facts.post_deleted(session, event)
                else:
                    await facts.post_moderated(session, event)
                touched |= await facts.months_of_post(session, data["post_id"])
            elif kind in ("interaction.created", "interaction.deleted"):
                deleted = kind == "interaction.deleted"
                month = await facts.interaction(session, settings, event, deleted=deleted)
                touched.add((event.creator_id, month))
                touched.add((event.creator_id, month_of(event.time, zone)))
            elif kind == "creator.followers_changed":
                await facts.followers_changed(session, event)
        touched |= await facts.creator_months_of_posts(session, changed_posts)
        late = await months.recompute(session, settings, touched)
        await featured.refresh(session, settings, changed_posts | featured.touched_posts(events))
        await recommendations.refresh_days(session, settings, touched)
        if late:
            LATE_EVENTS.inc(len(late))

    return handle
