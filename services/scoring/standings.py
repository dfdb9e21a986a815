"""A month's standings: every creator with activity, scored and ranked by the settings in force
for that month."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import score
from services.scoring.models import CertifiedCreator, CreatorMonth
from services.scoring.months import month_bounds
from shared.program_settings import settings_in_force
from shared.settings import Settings


async def standings(session: AsyncSession, settings: Settings, month: str):
    """Every creator with activity in the month, scored and ranked by the settings in force."""
    settings = await settings_in_force(session, settings, month)
    _, end = month_bounds(month, settings)
    certified = (
        select(literal(True))
        .where(
            CertifiedCreator.creator_id == CreatorMonth.creator_id,
            CertifiedCreator.certified_at < end,
        )
        .exists()
    )
    rows = await session.execute(select(CreatorMonth, certified).where(CreatorMonth.month == month))
    stats = [
        score.CreatorStats(
            creator_id=row.creator_id,
            qualifying_posts=row.qualifying_posts,
            active_days=row.active_days,
            interactions=row.interactions,
            quality=row.quality,
            certified=is_certified,
        )
        for row, is_certified in rows
    ]
    rules = score.Rules.from_settings(settings)
    month_scores = score.score_month(stats, rules)
    by_creator = {s.creator_id: s for s in stats}
    return [
        Standing(by_creator[c.creator_id], c, month_scores.divisors, rules.weights)
        for c in month_scores.creators
    ]


@dataclass(frozen=True)
class Standing:
    """A creator's place in the month: the statistics and how they scored."""

    stats: score.CreatorStats
    scored: score.CreatorScore
    divisors: score.Components
    weights: score.Components

    @property
    def creator_id(self) -> str:
        return self.stats.creator_id

    @property
    def rank(self) -> int | None:
        return self.scored.rank

    @property
    def score(self) -> Decimal:
        return self.scored.score

    @property
    def eligible(self) -> bool:
        return self.scored.eligible

    # what a ranking entry shows, like a settlement entry
    qualifying_posts = property(lambda self: self.stats.qualifying_posts)
    active_days = property(lambda self: self.stats.active_days)
    interactions = property(lambda self: self.stats.interactions)
    quality = property(lambda self: self.stats.quality)
    payout = None  # until the month is settled

    def explain(self) -> dict[str, dict[str, str]]:
        """The score's components before and after normalisation, the divisors and weights."""
        return {
            name: {field: str(getattr(components, field)) for field in COMPONENTS}
            for name, components in (
                ("raw", self.scored.raw),
                ("divisors", self.divisors),
                ("normalised", self.scored.normalised),
                ("weights", self.weights),
            )
        }


COMPONENTS = ("posts", "active_days", "interactions", "quality")
