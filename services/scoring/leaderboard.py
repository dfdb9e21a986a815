"""The "quality certified creators" leaderboard's extras: display names, badges and the rank
change since the previous snapshot day.

A month's ranks are snapshotted at most once per program day, by the refresher of the
precomputed standings (services/scoring/standings_table.py): the first refresh of a provisional
month on a day, or the background refresher's first pass of the day, stores every ranked
creator's rank in the month's table (`scoring_rank_snapshot_days` is the once-a-day claim, so
two refreshers store one snapshot). A read never writes.

`rank_change` = the rank in the latest snapshot of an earlier day − the current rank (positive =
moved up); null when there is no earlier snapshot or the creator was not in it. A settled
ranking compares with the latest snapshot of a day before the settlement's day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, text
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


async def snapshot_from_standings(
    session: AsyncSession, month: str, day: str, taken_at: datetime
) -> bool:
    """Store the ranks of the month's precomputed table as of `day`, unless that day has a
    snapshot already; True if stored. One INSERT … SELECT."""
    claimed = await session.scalar(
        pg_insert(RankSnapshotDay)
        .values(month=month, day=day, taken_at=taken_at)
        .on_conflict_do_nothing(index_elements=["month", "day"])
        .returning(RankSnapshotDay.day)
    )
    if claimed is None:
        return False
    await session.execute(
        text(
            "INSERT INTO scoring_rank_snapshots (month, day, creator_id, rank) "
            "SELECT month, :day, creator_id, rank FROM scoring_standings "
            "WHERE month = :month AND rank IS NOT NULL"
        ),
        {"month": month, "day": day},
    )
    return True


async def ranks_before(
    session: AsyncSession, month: str, day: str, creators: list[str]
) -> dict[str, int] | None:
    """The `creators`' ranks in the latest snapshot of a day before `day`; None when there is
    no such snapshot."""
    previous = await session.scalar(
        select(func.max(RankSnapshotDay.day)).where(
            RankSnapshotDay.month == month, RankSnapshotDay.day < day
        )
    )
    if previous is None:
        return None
    rows = await session.execute(
        select(RankSnapshot.creator_id, RankSnapshot.rank).where(
            RankSnapshot.month == month,
            RankSnapshot.day == previous,
            RankSnapshot.creator_id.in_(creators),
        )
    )
    return dict(rows.all())


async def extras(
    session: AsyncSession, month: str, ranks: dict[str, int], *, day: str
) -> dict[str, EntryExtras]:
    """Display name, badges and rank change as of `day` of the creators of a page of a ranking
    (`ranks`: their current ranks)."""
    shown = list(ranks)
    previous = await ranks_before(session, month, day, shown)
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
