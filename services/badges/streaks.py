"""Reward 3 (consecutive activity) and the pool payouts, from `month.settled` events.

A settlement (appended by scoring, one or more parts) lists creators with `active` (≥ the
monthly minimum of original quality posts, certified before the month ended) and `payout`.
The badges group turns each part into, once whatever the redeliveries or replays:

- the creator's settled month (`badges_settled_months`, active or not): the first part that
  lists a (creator, month) settles it, and a month's settlement never changes: another event
  for it (the same settlement appended again under another id, or a conflicting one) is
  ignored for that creator, payout included;
- a `monthly_pool_share` reward for the payout of every creator-month it settled, when above
  zero (USDT, the payout exactly; id `reward_id(monthly_pool_share, creator, month)`);
- the `merch_gift` rewards the creator's settled months now call for (the rule below).

Every reward's `causes` is the `month.settled` event that issued it.

The rule, pure (`runs`, `gift_months`, `gifts_due`, `current_streak`):

- A **run** is a maximal set of consecutive calendar months, each settled and active. A month
  settled inactive (missed) ends a run; so does a month not settled (yet) for the creator.
- Settled in calendar order, a run of length L has earned a gift at its 3rd, 6th, 9th … month
  (`gift_months`). The gift's id is `reward_id(merch_gift, creator, month)`, its `month` that
  month.
- Months may be settled in any order, so a month settled later may **join two runs** or extend
  one at its start. Gifts already issued stand (never taken back, whatever the positions in the
  longer run), and a run is owed `L // 3` gifts in all: when it holds fewer, the missing ones
  go to its latest 3k-th months without a gift (`gifts_due`). Joining never lowers what is owed
  (`(a + 1 + b) // 3 ≥ a // 3 + b // 3`), so every run always holds exactly `L // 3` gifts:
  the number of gifts never depends on the order months were settled in, and in calendar order
  they fall exactly on the 3k-th months.
- The **current streak** (the creator view): the length of the run ending at the creator's
  latest settled month (0 when that month was missed), and the latest settled active month.

Everything is done under the rewards lock (`rewards.lock`), taken before the settled months
are written: two transactions settling months of one creator cannot both decide on a view that
lacks the other's month.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.badges import rewards
from services.badges.models import Reward, SettledMonth
from shared.events import BusEvent, MonthSettled, SettledCreator

GIFT_EVERY = 3  # every 3rd consecutive active month (PROGRAM.md, reward 3)
POOL_CURRENCY = "USDT"


# --- the rule (pure) -------------------------------------------------------------------------


def month_index(month: str) -> int:
    """A month (YYYY-MM) as a number of months: consecutive months differ by one."""
    year, number = month.split("-")
    return int(year) * 12 + int(number) - 1


def runs(settled: Mapping[str, bool]) -> list[list[str]]:
    """The runs of consecutive settled active months, each in calendar order, earliest first."""
    found: list[list[str]] = []
    previous: int | None = None
    for month in sorted(m for m, active in settled.items() if active):
        index = month_index(month)
        if previous is not None and index == previous + 1:
            found[-1].append(month)
        else:
            found.append([month])
        previous = index
    return found


def _every_third(run: Sequence[str]) -> list[str]:
    return list(run[GIFT_EVERY - 1 :: GIFT_EVERY])


def gift_months(settled: Mapping[str, bool]) -> set[str]:
    """The months that earn a gift when the months are settled in calendar order: the 3rd, 6th,
    9th … month of every run."""
    return {month for run in runs(settled) for month in _every_third(run)}


def gifts_due(settled: Mapping[str, bool], issued: Set[str]) -> set[str]:
    """The gift months to issue now, given the months of the gifts already issued: each run is
    owed `len(run) // 3` gifts; the ones it lacks go to its latest 3k-th months without one."""
    due: set[str] = set()
    for run in runs(settled):
        held = sum(1 for month in run if month in issued)
        candidates = [month for month in _every_third(run) if month not in issued]
        missing = len(run) // GIFT_EVERY - held
        if missing > 0:
            due.update(candidates[-missing:])
    return due


@dataclass(frozen=True)
class Streak:
    consecutive_active_months: int = 0
    last_active_month: str | None = None


def current_streak(settled: Mapping[str, bool]) -> Streak:
    """The run ending at the latest settled month (0 if it was missed or none is settled), and
    the latest settled active month."""
    if not settled:
        return Streak()
    found = runs(settled)
    if not found:
        return Streak()
    latest_run = found[-1]
    consecutive = len(latest_run) if latest_run[-1] == max(settled) else 0
    return Streak(consecutive, latest_run[-1])


# --- the glue: a month.settled part --------------------------------------------------------


async def settle(session: AsyncSession, event: BusEvent) -> None:
    """Apply one part of a month's settlement: the settled months, the pool shares, the gifts.

    A creator's month is settled by the first part that lists it (a creator listed twice in a
    part: the first entry); another event for the same creator and month (the same settlement
    appended again under another id, or a conflicting one) changes nothing, pays nothing."""
    settlement: MonthSettled = event.typed_data()  # type: ignore[assignment]
    listed: dict[str, SettledCreator] = {}
    for creator in settlement.creators:
        listed.setdefault(creator.creator_id, creator)
    if not listed:
        return
    await rewards.lock(session)
    settled_here = await record_months(session, settlement.month, listed.values(), event.seq)
    now = datetime.now(UTC)
    cause = [rewards.cause_of(event)]
    issue = [
        rewards.NewReward(
            id=pool_share_id(creator_id, settlement.month),
            creator_id=creator_id,
            kind=rewards.MONTHLY_POOL_SHARE,
            issued_at=now,
            causes=cause,
            amount=listed[creator_id].payout,
            currency=POOL_CURRENCY,
            month=settlement.month,
        )
        for creator_id in settled_here
        if listed[creator_id].payout > 0
    ]
    creators = [c for c in settled_here if listed[c].active]  # only these can gain a gift
    months = await settled_months(session, creators)
    issued = await gifts_issued(session, creators)
    for creator_id in creators:
        for month in sorted(gifts_due(months.get(creator_id, {}), issued.get(creator_id, set()))):
            issue.append(
                rewards.NewReward(
                    id=gift_id(creator_id, month),
                    creator_id=creator_id,
                    kind=rewards.MERCH_GIFT,
                    issued_at=now,
                    causes=cause,
                    month=month,
                )
            )
    await rewards.issue_many(session, issue)  # one statement, in the order above


def pool_share_id(creator_id: str, month: str) -> str:
    return rewards.reward_id(rewards.MONTHLY_POOL_SHARE, creator_id, month)


def gift_id(creator_id: str, month: str) -> str:
    return rewards.reward_id(rewards.MERCH_GIFT, creator_id, month)


async def record_months(
    session: AsyncSession, month: str, creators: Iterable[SettledCreator], seq: int
) -> list[str]:
    """Record each creator's month as settled by event `seq`, unless already recorded (the
    first settlement stands); the creators whose month `seq` settled, now or when it was
    applied before, sorted."""
    await session.execute(
        insert(SettledMonth).on_conflict_do_nothing(index_elements=["creator_id", "month"]),
        [
            {"creator_id": c.creator_id, "month": month, "active": c.active, "seq": seq}
            for c in creators
        ],
    )
    settled_here = await session.scalars(
        select(SettledMonth.creator_id)
        .where(SettledMonth.month == month, SettledMonth.seq == seq)
        .order_by(SettledMonth.creator_id)
    )
    return list(settled_here)


async def settled_months(
    session: AsyncSession, creator_ids: Iterable[str]
) -> dict[str, dict[str, bool]]:
    """{creator: {month: active}} of every month settled for these creators."""
    found: dict[str, dict[str, bool]] = {}
    ids = list(creator_ids)
    if not ids:
        return found
    rows = await session.execute(
        select(SettledMonth.creator_id, SettledMonth.month, SettledMonth.active).where(
            SettledMonth.creator_id == any_(_ids(ids))
        )
    )
    for creator_id, month, active in rows:
        found.setdefault(creator_id, {})[month] = active
    return found


async def gifts_issued(session: AsyncSession, creator_ids: Iterable[str]) -> dict[str, set[str]]:
    """{creator: months of the merch gifts already issued}."""
    found: dict[str, set[str]] = {}
    ids = list(creator_ids)
    if not ids:
        return found
    rows = await session.execute(
        select(Reward.creator_id, Reward.month).where(
            Reward.kind == rewards.MERCH_GIFT, Reward.creator_id == any_(_ids(ids))
        )
    )
    for creator_id, month in rows:
        found.setdefault(creator_id, set()).add(month)
    return found


def _ids(ids: list[str]):
    """One array parameter, however many creators a part lists."""
    return bindparam("creator_ids", ids, type_=ARRAY(String))


async def streak_of(session: AsyncSession, creator_id: str) -> Streak:
    """The creator view's streak."""
    months = await settled_months(session, [creator_id])
    return current_streak(months.get(creator_id, {}))
