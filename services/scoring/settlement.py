"""Settling a month: freeze the ranking and the payouts, once, and tell the badges service.

The month can be settled once it has ended plus `settlement_grace_hours`, and only when scoring
has applied every event accepted before the request. The split is exact (score.split_pool).
Settling twice, or by two operators at once, gives the one settlement: a transaction-level
advisory lock per month, then the stored settlement if there is one. The `month.settled`
events (one or more parts) are appended to the log in the same transaction; the badges service
turns them into pool shares, streaks and gifts. Scoring never writes badges' tables.

The pool, the weights and the minimum are those of the program settings in force for the month
(shared/program_settings.py); the settlement keeps the values it used (`rule_settings`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import freshness, months, score, standings
from services.scoring.models import CertifiedCreator, Settlement, SettlementEntry
from shared.bus import log as event_log
from shared.bus import positions
from shared.errors import Conflict
from shared.events import INTERNAL_SOURCE, PROGRAM_SUBJECT, IncomingEvent, MonthSettled
from shared.program_settings import settings_in_force
from shared.settings import Settings

CENT = Decimal("0.01")

SETTLEMENTS = Counter("creator_activity_settlements_total", "Months settled")


class MonthNotOver(Conflict):
    error = "month_not_over"


class NotCaughtUp(Conflict):
    error = "not_caught_up"


async def ensure_caught_up(session: AsyncSession, group: str) -> None:
    """NotCaughtUp unless the group has applied every event accepted before now: what is
    frozen (a month, a week) must include every event accepted before the request."""
    up_to = await event_log.last_seq(session)
    if await positions.unapplied(session, group, 1, up_to=up_to):
        raise NotCaughtUp(
            "events accepted before this request are not applied yet; try again shortly",
            retry_after=2,
        )


def rule_settings(settings: Settings) -> dict:
    """The settings a settlement is computed with, kept with it."""
    names = (
        "monthly_pool",
        "monthly_min_quality_posts",
        "weight_posts",
        "weight_active_days",
        "weight_interactions",
        "weight_quality",
        *(f"quality_{name}" for name in score.QualityHeuristic.__slots__),
        "qualifying_post_min_chars",
        "near_duplicate_threshold",
        "near_duplicate_min_chars",
        "near_duplicate_shingle_size",
        "near_duplicate_alphabetic_shingle_size",
        "near_duplicate_permutations",
        "near_duplicate_recall_weight",
        "interaction_weight_like",
        "interaction_weight_comment",
        "interaction_weight_share",
        "interaction_weight_quote",
        "interaction_daily_cap_per_actor",
        "settlement_grace_hours",
        "program_timezone",
    )
    return {name: str(getattr(settings, name)) for name in names}


async def settle_month(
    session: AsyncSession, settings: Settings, month: str, settled_by: str, group: str
) -> Settlement:
    now = datetime.now(UTC)
    opens = months.settle_after(month, settings)
    if now < opens:
        raise MonthNotOver(f"{month} can be settled from {opens.isoformat()} (month end + grace)")
    await months.lock_months(session, [month], shared=False)
    settled = await session.get(Settlement, month)
    if settled is not None:
        return settled
    await ensure_caught_up(session, group)

    rules = await settings_in_force(session, settings, month)  # what standings score with too
    ranked = [s for s in await standings.standings(session, settings, month) if s.rank]
    payouts = score.split_pool(
        rules.monthly_pool, {s.creator_id: s.score for s in ranked if s.eligible}
    )
    settlement = Settlement(
        month=month,
        settled_at=now,
        pool=rules.monthly_pool,
        settings=rule_settings(rules),
        settled_by=settled_by,
    )
    session.add(settlement)
    await session.flush()
    # One COPY of plain rows: as ORM objects, the entries of 100,000 creators (each with its
    # score's explanation) took ~730 MB of the serving process (docs/benchmarks.md).
    await freshness.copy_rows(
        session,
        SettlementEntry.__tablename__,
        ENTRY_COLUMNS,
        [
            (
                month,
                s.creator_id,
                s.rank,
                s.score,
                s.stats.qualifying_posts,
                s.stats.active_days,
                s.stats.interactions,
                s.stats.quality,
                s.eligible,
                payouts.get(s.creator_id, Decimal("0.00")),
                json.dumps(s.explain()),
            )
            for s in ranked
        ],
    )
    # Certified creators with no activity had an inactive month: their streaks must hear it.
    _, end = months.month_bounds(month, settings)
    with_entry = {s.creator_id for s in ranked}
    quiet = [
        c
        for c in await session.scalars(
            select(CertifiedCreator.creator_id)
            .where(CertifiedCreator.certified_at < end)
            .order_by(CertifiedCreator.creator_id)
        )
        if c not in with_entry
    ]
    await event_log.append(session, _settled_events(rules, month, now, ranked, payouts, quiet))
    SETTLEMENTS.inc()
    return settlement


ENTRY_COLUMNS = [
    "month",
    "creator_id",
    "rank",
    "score",
    "qualifying_posts",
    "active_days",
    "interactions",
    "quality",
    "eligible",
    "payout",
    "components",
]


def _settled_events(
    settings: Settings,
    month: str,
    now: datetime,
    ranked: list[standings.Standing],
    payouts: dict[str, Decimal],
    quiet: list[str],
) -> list[IncomingEvent]:
    creators = [
        {
            "creator_id": s.creator_id,
            "active": s.stats.qualifying_posts >= settings.monthly_min_quality_posts,
            "payout": payouts.get(s.creator_id, Decimal("0.00")).quantize(CENT),
        }
        for s in ranked
    ] + [{"creator_id": c, "active": False, "payout": Decimal("0.00")} for c in quiet]
    size = settings.settlement_event_creators
    parts = [creators[i : i + size] for i in range(0, len(creators), size)] or [[]]
    events = []
    for number, part in enumerate(parts, start=1):
        data = MonthSettled(
            month=month,
            part=number,
            parts=len(parts),
            pool=settings.monthly_pool.quantize(CENT),
            settled_at=now,
            creators=part,
        ).model_dump(mode="json")
        events.append(
            IncomingEvent(
                id=f"month-{month}-settled-{number}",
                type="month.settled",
                time=now,
                source=INTERNAL_SOURCE,
                creator_id=PROGRAM_SUBJECT,
                data=data,
                attributes={},
            )
        )
    return events


async def entries_of(session: AsyncSession, month: str) -> list[SettlementEntry]:
    return list(
        await session.scalars(
            select(SettlementEntry)
            .where(SettlementEntry.month == month)
            .order_by(SettlementEntry.rank)
        )
    )
