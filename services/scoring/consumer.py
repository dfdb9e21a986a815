"""The scoring consumer group: turns accepted events into monthly statistics."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import repository
from shared.events import BusEvent
from shared.program_time import month_of
from shared.settings import Settings

GROUP = "scoring"


def make_handler(settings: Settings):
    async def handle(session: AsyncSession, events: Sequence[BusEvent]) -> None:
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for event in events:
            key = (event.creator_id, month_of(event.time, settings.timezone))
            if event.type == "post.created":
                counts[key][0] += 1
            elif event.type == "interaction.created":
                counts[key][1] += 1
        await repository.add_month_counts(
            session, {key: (posts, interactions) for key, (posts, interactions) in counts.items()}
        )

    return handle
