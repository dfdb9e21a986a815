"""The "quality certified creators" leaderboard's extras: display names, badges and the rank
change since the previous snapshot day.

A month's ranks are snapshotted at most once per program day: the first read of the live
(provisional) ranking on a day stores every ranked creator's rank as of that read
(`scoring_rank_snapshot_days` is the once-a-day claim, taken in the read's transaction, so two
concurrent first reads store one snapshot). `rank_change` = the rank in the latest snapshot of
an earlier day − the current rank (positive = moved up); null when there is no earlier snapshot
or the creator was not in it. A settled ranking compares with the latest snapshot of a day
before the settlement's day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.models import CertifiedCreator, RankSnapshot, RankSnapshotDay
from shared.settings import Settings

CERTIFICATION_BADGE = "certification"


def program_day(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.timezone).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class EntryExtras:
    display_name: str | None
    badges: list[str]
    rank_change: int | None


async def take_snapshot(
    session: AsyncSession, month: str, day: str, ranks: dict[str, int], taken_at: datetime
) -> bool:
    """Store the month's ranks as of `day`, unless that day has one already; True if stored."""
    claimed = await session.scalar(
        pg_insert(RankSnapshotDay)
        .values(month=month, day=day, taken_at=taken_at)
        .on_conflict_do_nothing(index_elements=["month", "day"])
        .returning(RankSnapshotDay.day)
    )
    if claimed is None:
        return False
    if ranks:
        await session.execute(
            insert(RankSnapshot),
            [{"month": month, "day": day, "creator_id": c, "rank": r} for c, r in ranks.items()],
        )
    return True


async def ranks_before(session: AsyncSession, month: str, day: str) -> dict[str, int] | None:
    """The ranks of the latest snapshot of a day before `day`; None when there is none."""
    previous = await session.scalar(
        select(func.max(RankSnapshotDay.day)).where(
            RankSnapshotDay.month == month, RankSnapshotDay.day < day
        )
    )
    if previous is None:
        return None
    rows = await session.execute(
        select(RankSnapshot.creator_id, RankSnapshot.rank).where(
            RankSnapshot.month == month, RankSnapshot.day == previous
        )
    )
    return dict(rows.all())


async def extras(
    session: AsyncSession,
    month: str,
    ranks: dict[str, int],
    shown: Iterable[str],
    *,
    day: str,
    snapshot: bool,
    now: datetime,
) -> dict[str, EntryExtras]:
    """Display name, badges and rank change of the `shown` creators of a ranking as of `day`;
    with `snapshot`, first stores the day's snapshot of `ranks` (all the ranked creators)."""
    if snapshot:
        await take_snapshot(session, month, day, ranks, now)
    previous = await ranks_before(session, month, day)
    shown = list(shown)
    names = select(CertifiedCreator.creator_id, CertifiedCreator.display_name).where(
        CertifiedCreator.creator_id.in_(shown)
    )
    certified = dict((await session.execute(names)).all())
    result = {}
    for creator_id in shown:
        before = (previous or {}).get(creator_id)
        result[creator_id] = EntryExtras(
            display_name=certified.get(creator_id),
            badges=[CERTIFICATION_BADGE] if creator_id in certified else [],
            rank_change=None if before is None else before - ranks[creator_id],
        )
    return result
