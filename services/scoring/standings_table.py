"""The precomputed standings of provisional months: what the ranking page and the creator month
view read, so that a read is an indexed page query, not the scoring of every creator.

`scoring_standings` holds, per provisional month, every creator with a creator-month as
`standings.standings` scored them at the month's last refresh; `scoring_standings_refreshes`
what that was computed from (services/scoring/freshness.py: the version, the fingerprint of
the rules in force, when). A read refreshes a due month first (`refresh_if_due`); the scoring
process refreshes in the background (services/scoring/refresher.py). A refresh also takes the
month's rank snapshot of the day, if it has none yet (services/scoring/leaderboard.py).

A settled month's ranking is read from the settlement; its table (refreshed on demand, never by
the background refresher: its creator-months no longer change) only serves the month view of a
creator the settlement did not rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from types import SimpleNamespace

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import freshness, leaderboard, score, standings
from services.scoring.models import PrecomputedStanding
from shared.db import driver
from shared.program_settings import settings_in_force
from shared.settings import Settings

COLUMNS = [
    "month",
    "creator_id",
    "rank",
    "score",
    "certified",
    "eligible",
    "qualifying_posts",
    "active_days",
    "interactions",
    "quality",
]


_FINGERPRINTS: dict[int, tuple[Settings, str]] = {}


def rules_fingerprint(in_force: Settings) -> str:
    """What the standings of a month are scored with, besides its creator-months. Memoized per
    settings object (`settings_in_force` gives the same object for the same versions)."""
    memo = _FINGERPRINTS.get(id(in_force))
    if memo is not None and memo[0] is in_force:
        return memo[1]
    value = freshness.fingerprint(score.Rules.from_settings(in_force), in_force.program_timezone)
    if len(_FINGERPRINTS) >= 256:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[id(in_force)] = (in_force, value)
    return value


async def fingerprint_of(session: AsyncSession, settings: Settings, month: str) -> str:
    return rules_fingerprint(await settings_in_force(session, settings, month))


def _components(components: score.Components) -> list[str]:
    return [str(getattr(components, name)) for name in standings.COMPONENTS]


def _as_dict(components: score.Components) -> dict[str, str]:
    return dict(zip(standings.COMPONENTS, _components(components), strict=True))


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    month: str,
    *,
    wait: bool,
    now: datetime | None = None,
) -> bool:
    """Recompute the month's table if it is stale (checked again under the month's lock);
    True if it did. Without `wait`, gives up when another refresh holds the lock; with it, this
    process's waiters queue on `freshness.waiting_line`, one at a time in PostgreSQL's."""
    if wait:
        async with freshness.waiting_line(month):
            return await _refresh(sessionmaker, settings, month, wait=True, now=now)
    return await _refresh(sessionmaker, settings, month, wait=False, now=now)


async def _refresh(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    month: str,
    *,
    wait: bool,
    now: datetime | None,
) -> bool:
    async with sessionmaker() as session, session.begin():
        if not await freshness.lock(session, month, wait=wait):
            return False
        await freshness.allow_long_computation(session)
        now = now or datetime.now(UTC)
        in_force = await settings_in_force(session, settings, month)
        fingerprint = rules_fingerprint(in_force)
        # The version is read before the creator-months: a batch committed later moves it again.
        state = await freshness.state(session, month)
        if not state.stale(fingerprint, now):
            return False
        ranked = await standings.standings(session, settings, month)
        await session.execute(delete(PrecomputedStanding).where(PrecomputedStanding.month == month))
        records = [
            (
                month,
                s.creator_id,
                s.rank,
                s.score,
                s.stats.certified,
                s.eligible,
                s.qualifying_posts,
                s.active_days,
                s.interactions,
                s.quality,
            )
            for s in ranked
        ]
        await freshness.copy_rows(session, PrecomputedStanding.__tablename__, COLUMNS, records)
        rules = score.Rules.from_settings(in_force)
        divisors = ranked[0].divisors if ranked else score.Components(*([Decimal(0)] * 4))
        await freshness.record(
            session,
            month,
            state.version,
            fingerprint,
            sum(1 for s in ranked if s.rank),
            divisors=_as_dict(divisors),
            weights=_as_dict(rules.weights),
        )
        await leaderboard.snapshot_from_standings(
            session, month, leaderboard.program_day(now, settings), now
        )
    return True


def must_wait(state: freshness.State, interval: float) -> bool:
    """Whether a reader waits for a refresh in progress rather than serve the table as it is:
    when there is no table yet, or when no staleness is tolerated (an interval of 0: every read
    after a change is exact, what the tests use)."""
    return not state.exists or interval == 0


async def refresh_if_due(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    state: freshness.State,
    now: datetime,
    *,
    in_force: Settings | None = None,
) -> bool:
    """Refresh the month's table first if it is due (a reader that cannot take the lock serves
    the table as it is, but see `must_wait`); True when it tried (the table may have changed).
    `in_force`: the month's settings in force, when the caller has them already."""
    if in_force is None:
        in_force = await settings_in_force(session, settings, state.key)
    fingerprint = rules_fingerprint(in_force)
    interval = settings.standings_refresh_seconds
    if not state.due(fingerprint, now, interval):
        return False
    wait = must_wait(state, interval)
    await freshness.release(session)
    await refresh(sessionmaker, settings, state.key, wait=wait, now=now)
    return True


_PAGE = """
    SELECT coalesce(v.version, 0) AS version, r.version AS refreshed_version, r.fingerprint,
           r.refreshed_at, r.total, r.divisors, r.weights,
           EXISTS (SELECT FROM scoring_settlements WHERE month = k.key) AS settled,
           s.*, c.display_name, c.creator_id IS NOT NULL AS has_badge,
           before.rank AS rank_before
    FROM (SELECT CAST($1 AS varchar) AS key) AS k
    LEFT JOIN scoring_standings_versions AS v ON v.key = k.key
    LEFT JOIN scoring_standings_refreshes AS r ON r.key = k.key
    LEFT JOIN LATERAL (
        SELECT max(day) AS day FROM scoring_rank_snapshot_days
        WHERE month = k.key AND day < $4
    ) AS previous ON true
    LEFT JOIN scoring_standings AS s
      ON s.month = r.key AND s.rank BETWEEN $2 AND $3
    LEFT JOIN scoring_certified_creators AS c ON c.creator_id = s.creator_id
    LEFT JOIN scoring_rank_snapshots AS before
      ON before.month = k.key AND before.day = previous.day AND before.creator_id = s.creator_id
    ORDER BY s.rank
"""


@dataclass(frozen=True)
class Page:
    state: freshness.State  # the month's version and refresh, read with the page
    settled: bool
    total: int  # ranked creators in the table
    # each ranked row (what a ranking entry shows: rank, creator_id, score, statistics,
    # eligible, payout) with its extras; not a Standing: a page needs no components
    entries: list[tuple[SimpleNamespace, leaderboard.EntryExtras]]


async def page(session: AsyncSession, month: str, limit: int, offset: int, day: str) -> Page:
    """The ranked standings offset+1 .. offset+limit with their leaderboard extras as of `day`,
    the table's total and its freshness state, and whether the month is settled: one
    statement, so all of it is of the same refresh. Ranks are 1..n with no gaps."""
    connection = await driver(session)  # the statement of every ranking read
    records = await connection.fetch(_PAGE, month, offset + 1, offset + limit, day)
    rows = [SimpleNamespace(**record) for record in records]
    first = rows[0]
    state = freshness.State(
        key=month,
        version=first.version,
        refreshed_version=first.refreshed_version,
        fingerprint=first.fingerprint,
        refreshed_at=first.refreshed_at,
        total=first.total,
        divisors=first.divisors,
        weights=first.weights,
    )
    entries = []
    for row in rows:
        if row.creator_id is None:
            continue
        extras = leaderboard.EntryExtras(
            display_name=row.display_name,
            badges=[leaderboard.CERTIFICATION_BADGE] if row.has_badge else [],
            rank_change=None if row.rank_before is None else row.rank_before - row.rank,
        )
        row.payout = None  # until the month is settled
        entries.append((row, extras))
    return Page(state, first.settled, first.total or 0, entries)


_ONE = """
    SELECT coalesce(v.version, 0) AS version, r.version AS refreshed_version, r.fingerprint,
           r.refreshed_at, r.total, r.divisors, r.weights, s.*
    FROM (SELECT CAST($1 AS varchar) AS key) AS k
    LEFT JOIN scoring_standings_versions AS v ON v.key = k.key
    LEFT JOIN scoring_standings_refreshes AS r ON r.key = k.key
    LEFT JOIN scoring_standings AS s ON s.month = r.key AND s.creator_id = $2
"""


async def of_creator(
    session: AsyncSession, month: str, creator_id: str
) -> tuple[freshness.State, standings.Standing | None]:
    """The month's freshness state and the creator's standing in its table (None when the
    table does not have it), in one statement."""
    row = SimpleNamespace(**await (await driver(session)).fetchrow(_ONE, month, creator_id))
    state = freshness.State(
        key=month,
        version=row.version,
        refreshed_version=row.refreshed_version,
        fingerprint=row.fingerprint,
        refreshed_at=row.refreshed_at,
        total=row.total,
        divisors=row.divisors,
        weights=row.weights,
    )
    if row.creator_id is None:
        return state, None
    return state, _standing(row, row.divisors, row.weights)


def _from_dict(values: dict | None) -> score.Components:
    if values is None:
        return score.Components(*([Decimal(0)] * 4))
    return score.Components(*(Decimal(values[name]) for name in standings.COMPONENTS))


def _standing(row, divisors: dict | None, weights: dict | None) -> standings.Standing:
    """A standing from its row; its components computed again from the statistics and the
    month's divisors, as `score.score_month` computed them (the same functions, the same
    decimal context), so `explain()` gives the same strings."""
    stats = score.CreatorStats(
        creator_id=row.creator_id,
        qualifying_posts=row.qualifying_posts,
        active_days=row.active_days,
        interactions=row.interactions,
        quality=row.quality,
        certified=row.certified,
    )
    divisors = _from_dict(divisors)
    with localcontext(score.CONTEXT):
        raw = score._raw_components(stats)
        normalised = score.Components(
            *(
                score._normalise(getattr(raw, name), getattr(divisors, name))
                for name in standings.COMPONENTS
            )
        )
    scored = score.CreatorScore(
        creator_id=row.creator_id,
        certified=row.certified,
        eligible=row.eligible,
        raw=raw,
        normalised=normalised,
        score=row.score,
        rank=row.rank,
    )
    return standings.Standing(stats, scored, divisors, _from_dict(weights))
