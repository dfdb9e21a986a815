"""The badges consumer group."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.badges import repository
from services.badges.models import CreatorPosts
from shared.events import BusEvent
from shared.settings import Settings

GROUP = "badges"


def make_handler(settings: Settings):
    async def handle(session: AsyncSession, events: Sequence[BusEvent]) -> None:
        summaries: dict[str, CreatorPosts] = {}
        for event in events:
            if event.type != "post.created":
                continue
            summary = summaries.get(event.creator_id)
            if summary is None:
                summaries[event.creator_id] = CreatorPosts(
                    creator_id=event.creator_id,
                    first_post_id=event.data["post_id"],
                    first_post_at=event.time,
                    posts=1,
                )
                continue
            summary.posts += 1
            if event.time < summary.first_post_at:
                summary.first_post_id, summary.first_post_at = event.data["post_id"], event.time
        await repository.record_posts(session, summaries.values())

    return handle
