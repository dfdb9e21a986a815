"""What-if: the settlement a month would get under other settings, beside the current one.

The same facts, scored twice by the same rules (`score.score_month`, `score.split_pool`):

- A month not settled: the facts are its creator-months as they stand; "current" is what
  settling now would give (the standings and the pool split by the settings in force).
- A settled month: the facts are the settlement's entries (the statistics it froze); "current"
  is the settlement as recorded, and the settings it recorded are the defaults of the preview.

Omitted settings keep their current value. Only certified creators (those ranked) are listed;
the others never rank nor share the pool under any setting. Nothing is written: not even the
leaderboard's daily snapshot.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import score, standings
from services.scoring.models import Settlement
from services.scoring.settlement import entries_of
from shared import program_settings
from shared.money import Money
from shared.settings import Settings

# The preview's settings: the four weights, the minimum, the pool (API names).
NAMES = (*program_settings.WEIGHTS, "min_posts", "monthly_pool")
# Where a settlement recorded them (services/scoring/settlement.py, rule_settings).
_RECORDED = {name: program_settings.VERSIONED[name] for name in NAMES}


class Outcome(BaseModel):
    """A creator's place under one set of settings."""

    rank: int
    score: Decimal
    eligible: bool
    payout: Money


class Difference(BaseModel):
    rank: int  # current rank − preview rank: positive = moves up
    payout: Money  # preview − current


class CreatorPreview(BaseModel):
    creator_id: str
    # the facts, the same under both
    qualifying_posts: int
    active_days: int
    interactions: int
    quality: Decimal
    current: Outcome
    preview: Outcome
    difference: Difference


class Side(BaseModel):
    settings: dict[str, Any]  # NAMES → value (decimals as text)
    eligible_creators: int
    paid: Money  # Σ payouts: the pool, or 0.00 when no one is eligible


class MonthPreview(BaseModel):
    month: str
    status: Literal["provisional", "settled"]
    changed: list[str]  # the settings whose preview value differs from the current one
    current: Side
    preview: Side
    creators: list[CreatorPreview]  # by preview rank


async def preview_month(
    session: AsyncSession, settings: Settings, month: str, overrides: dict
) -> dict:
    """The preview of `month` (YYYY-MM) with `overrides` (NAMES → values, as a client sent them;
    omitted or None = current) as the API's JSON body. ValidationFailed (422) for an unknown
    name or a bad value. Weights all 0 are a fair question: every score 0, the pool split
    equally (`score.split_pool`)."""
    changes = program_settings.parse(
        {name: value for name, value in overrides.items() if value is not None}, NAMES
    )
    settled = await session.get(Settlement, month)
    if settled is not None:
        stats, current_values, current = await _as_settled(session, settled)
    else:
        stats, current_values, current = await _as_it_stands(session, settings, month)
    preview_values = current_values | changes
    preview = _outcomes(stats, preview_values)

    rows = []
    for stat in stats:
        now, then = current[stat.creator_id], preview[stat.creator_id]
        rows.append(
            CreatorPreview(
                creator_id=stat.creator_id,
                qualifying_posts=stat.qualifying_posts,
                active_days=stat.active_days,
                interactions=stat.interactions,
                quality=stat.quality,
                current=now,
                preview=then,
                difference=Difference(rank=now.rank - then.rank, payout=then.payout - now.payout),
            )
        )
    rows.sort(key=lambda row: row.preview.rank)
    return MonthPreview(
        month=month,
        status="settled" if settled is not None else "provisional",
        changed=[n for n in NAMES if preview_values[n] != current_values[n]],
        current=_side(current_values, current),
        preview=_side(preview_values, preview),
        creators=rows,
    ).model_dump(mode="json")


async def _as_it_stands(session: AsyncSession, settings: Settings, month: str):
    in_force = await program_settings.settings_in_force(session, settings, month)
    values = {name: program_settings.values_of(in_force)[name] for name in NAMES}
    ranked = [s for s in await standings.standings(session, settings, month) if s.rank]
    payouts = score.split_pool(
        values["monthly_pool"], {s.creator_id: s.score for s in ranked if s.eligible}
    )
    current = {
        s.creator_id: Outcome(
            rank=s.rank,
            score=s.score,
            eligible=s.eligible,
            payout=payouts.get(s.creator_id, Decimal("0.00")),
        )
        for s in ranked
    }
    return [s.stats for s in ranked], values, current


async def _as_settled(session: AsyncSession, settled: Settlement):
    recorded = {name: settled.settings[field] for name, field in _RECORDED.items()}
    values = program_settings.parse(recorded, NAMES)
    values["monthly_pool"] = settled.pool
    entries = await entries_of(session, settled.month)
    stats = [
        score.CreatorStats(
            creator_id=e.creator_id,
            qualifying_posts=e.qualifying_posts,
            active_days=e.active_days,
            interactions=e.interactions,
            quality=e.quality,
            certified=True,  # a settlement's entries are the ranked, certified creators
        )
        for e in entries
    ]
    current = {
        e.creator_id: Outcome(rank=e.rank, score=e.score, eligible=e.eligible, payout=e.payout)
        for e in entries
    }
    return stats, values, current


def _outcomes(stats: list[score.CreatorStats], values: dict) -> dict[str, Outcome]:
    rules = score.Rules(
        weight_posts=values["weight_posts"],
        weight_active_days=values["weight_active_days"],
        weight_interactions=values["weight_interactions"],
        weight_quality=values["weight_quality"],
        min_posts=values["min_posts"],
    )
    scored = score.score_month(stats, rules)
    payouts = score.split_pool(values["monthly_pool"], scored.eligible_scores())
    return {
        c.creator_id: Outcome(
            rank=c.rank,
            score=c.score,
            eligible=c.eligible,
            payout=payouts.get(c.creator_id, Decimal("0.00")),
        )
        for c in scored.creators
    }


def _side(values: dict, outcomes: dict[str, Outcome]) -> Side:
    return Side(
        settings=program_settings.to_json(values),
        eligible_creators=sum(o.eligible for o in outcomes.values()),
        paid=sum((o.payout for o in outcomes.values()), Decimal("0.00")),
    )
