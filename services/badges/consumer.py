"""The badges consumer group."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.badges import repository
from services.badges.repository import FirstPost
from shared.events import BusEvent
from shared.settings import Settings

GROUP = "badges"


def make_handler(settings: Settings):
    async def handle(session: AsyncSession, events: Sequence[BusEvent]) -> None:
        summaries: dict[str, FirstPost] = {}
        for event in events:
            if event.type != "post.created":
                continue
            summary = summaries.get(event.creator_id)
            if summary is None:
                summaries[event.creator_id] = FirstPost(
                    event.creator_id, event.data["post_id"], event.time, posts=1
                )
                continue
            summary.posts += 1
            if event.time < summary.first_post_at:
                summary.first_post_id, summary.first_post_at = event.data["post_id"], event.time
        await repository.record_posts(session, summaries.values())

    return handle
