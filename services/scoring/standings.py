"""A month's standings: every creator with activity, scored and ranked by the settings in force
for that month. Computed exactly here (the settlement, a refresh); reads are served from the
precomputed table (`standings_table.py`), whose version `touch` moves in the consumer's batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import months as creator_months  # imports this module: no names from it
from services.scoring import score
from services.scoring.models import CertifiedCreator, CreatorMonth, StandingsVersion
from shared.program_settings import settings_in_force
from shared.settings import Settings


async def standings(session: AsyncSession, settings: Settings, month: str):
    """Every creator with activity in the month, scored and ranked by the settings in force."""
    settings = await settings_in_force(session, settings, month)
    _, end = creator_months.month_bounds(month, settings)
    certified = (
        select(literal(True))
        .where(
            CertifiedCreator.creator_id == CreatorMonth.creator_id,
            CertifiedCreator.certified_at < end,
        )
        .exists()
    )
    # columns, not ORM objects: a month may have 100,000 creators
    rows = await session.execute(
        select(
            CreatorMonth.creator_id,
            CreatorMonth.qualifying_posts,
            CreatorMonth.active_days,
            CreatorMonth.interactions,
            CreatorMonth.quality,
            certified,
        ).where(CreatorMonth.month == month)
    )
    # Seconds of Python at 100,000 creators, in a thread: on the event loop they stalled every
    # other request of the process (a read that refreshed the ranking: the others held their
    # pooled connections meanwhile, and those queued for one answered 503; docs/benchmarks.md).
    return await asyncio.to_thread(_ranked, rows.all(), score.Rules.from_settings(settings))


def _ranked(rows, rules: score.Rules) -> list[Standing]:
    stats = [
        score.CreatorStats(
            creator_id=creator_id,
            qualifying_posts=qualifying_posts,
            active_days=active_days,
            interactions=interactions,
            quality=quality,
            certified=is_certified,
        )
        for creator_id, qualifying_posts, active_days, interactions, quality, is_certified in rows
    ]
    month_scores = score.score_month(stats, rules)
    by_creator = {s.creator_id: s for s in stats}
    return [
        Standing(by_creator[c.creator_id], c, month_scores.divisors, rules.weights)
        for c in month_scores.creators
    ]


RECOMMENDATIONS = "recommendations"  # the version key of the recommendations' inputs


async def touch(session: AsyncSession, months: Iterable[str]) -> None:
    """Bump the version of each month and of the recommendations, in the caller's transaction:
    the precomputed state of a key whose version moved is refreshed on its next read.

    One statement, keys sorted (a month "YYYY-MM" sorts before "recommendations"): batches
    that touch the same keys take the row locks in one order, so they queue, never deadlock.
    A transaction that calls it twice must only add `recommendations` the second time."""
    keys = sorted(set(months)) + [RECOMMENDATIONS]
    statement = insert(StandingsVersion).values([{"key": k, "version": 1} for k in keys])
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["key"], set_={"version": StandingsVersion.version + 1}
        )
    )


async def months_of_creator(session: AsyncSession, creator_id: str) -> set[tuple[str, str]]:
    """The creator's (creator, month) pairs with a creator-month: what a certification changes."""
    rows = await session.scalars(
        select(CreatorMonth.month).where(CreatorMonth.creator_id == creator_id)
    )
    return {(creator_id, month) for month in rows}


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
