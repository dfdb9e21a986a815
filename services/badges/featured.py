"""Reward 5, the featured-post bonus, from `week.frozen` events.

Scoring freezes a week's featured posts once and appends `week.frozen` (services/scoring/
featured.py). For every featured post it lists, the badges group issues one
`featured_post_bonus` reward: the event's `bonus` in USDT, id
`reward_id(featured_post_bonus, creator, week, post)`, causes [the event]. The id makes it once
whatever the redeliveries, replays or repeated freezes.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.badges import rewards
from shared.events import BusEvent, WeekFrozen

BONUS_CURRENCY = "USDT"


async def issue_bonuses(session: AsyncSession, event: BusEvent) -> int:
    """Issue the week's bonuses not issued yet; how many this call issued."""
    frozen = WeekFrozen.model_validate(event.data)
    issued = 0
    if frozen.bonus <= 0:
        return 0
    for item in sorted(frozen.items, key=lambda i: i.rank):
        issued += await rewards.issue(
            session,
            rewards.NewReward(
                id=rewards.reward_id(
                    rewards.FEATURED_POST_BONUS, item.creator_id, frozen.week, item.post_id
                ),
                creator_id=item.creator_id,
                kind=rewards.FEATURED_POST_BONUS,
                issued_at=frozen.frozen_at,
                causes=[rewards.cause_of(event)],
                amount=frozen.bonus,
                currency=BONUS_CURRENCY,
            ),
        )
    return issued
