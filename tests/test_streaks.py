"""Reward 3 (merch gifts for consecutive active months) and the pool payouts, from `month.settled`.

The rule alone (services/badges/streaks.py), with hypothesis; then end to end on both buses:
settlements appended to the event log as scoring appends them, the badges group turning them
into rewards and streaks once, whatever the order, the redeliveries and the replays.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.badges import rewards
from services.badges.streaks import (
    Streak,
    current_streak,
    gift_months,
    gifts_due,
    month_index,
    runs,
)
from shared.bus import log
from shared.events import (
    INTERNAL_SOURCE,
    PROGRAM_SUBJECT,
    IncomingEvent,
    MonthSettled,
    SettledCreator,
)
from tests.system import ADMIN
from tests.test_vouchers import certify

# --- the rule --------------------------------------------------------------------------------


def month(index: int) -> str:
    """The month `index` months after 2025-01."""
    year, number = divmod(2025 * 12 + index, 12)
    return f"{year:04d}-{number + 1:02d}"


def settled(*pattern: str, start: int = 0) -> dict[str, bool]:
    """Months from `start` on: "A" active, "m" missed (settled inactive), "." not settled."""
    return {month(start + i): flag == "A" for i, flag in enumerate("".join(pattern)) if flag != "."}


def in_order(months: list[tuple[str, bool]]) -> set[str]:
    """Settle the months one by one in this order; every gift issued along the way."""
    state: dict[str, bool] = {}
    issued: set[str] = set()
    for m, active in months:
        state.setdefault(m, active)  # a month's settlement never changes
        issued |= gifts_due(state, issued)
    return issued


def owed(state: dict[str, bool]) -> int:
    return sum(len(run) // 3 for run in runs(state))


def streak_at(state: dict[str, bool], m: str) -> int:
    """Consecutive settled active months ending at `m`, counted back one by one."""
    n, start = 0, month_index(m) - month_index(month(0))
    while state.get(month(start - n)):
        n += 1
    return n


# Up to 18 months from 2025-01 (across a new year), dense enough for long runs and joins.
SETTLED = st.dictionaries(st.integers(min_value=0, max_value=17).map(month), st.booleans())
THOROUGH = settings(max_examples=400, deadline=None)


def test_months_are_consecutive_across_years():
    assert month_index("2026-01") - month_index("2025-12") == 1
    assert runs({"2025-12": True, "2026-01": True, "2025-11": True}) == [
        ["2025-11", "2025-12", "2026-01"]
    ]


def test_a_gift_at_every_third_consecutive_active_month():
    state = settled("AAAAAAA")
    assert gift_months(state) == {month(2), month(5)}
    assert in_order(sorted(state.items())) == {month(2), month(5)}


def test_a_missed_month_resets_and_an_unsettled_month_breaks_until_settled():
    assert gift_months(settled("AAmAAA")) == {month(5)}
    assert gift_months(settled("AA.AA")) == set()
    assert gift_months(settled("AAAAA")) == {month(2)}  # the gap settled active: one run


def test_the_merge_gifts_already_issued_stand_and_a_run_holds_len_over_3():
    # Jan–Mar (gift Mar) and May–Jul (gift Jul), April settled last: 7 months, 2 gifts in all.
    first = [(m, True) for m in settled("AAA.AAA")]
    assert in_order([*first, (month(3), True)]) == {month(2), month(6)}
    # 2 + 1 + 2: the month that joins the runs completes the first gift.
    two_and_two = [(m, True) for m in settled("AA.AA")]
    assert in_order([*two_and_two, (month(2), True)]) == {month(2)}
    # 5 + 1 + 5: Mar and Sep stand; the joining month is the new 3k-th month (June).
    five_and_five = [(m, True) for m in settled("AAAAA.AAAAA")]
    assert in_order([*five_and_five, (month(5), True)]) == {month(2), month(5), month(8)}
    # Prepending to a gifted run owes nothing more until the run reaches 6.
    later = [(m, True) for m in settled(".AAA")]
    assert in_order([*later, (month(0), True)]) == {month(3)}
    assert in_order([*later, (month(0), True), (month(4), True), (month(5), True)]) == {
        month(3),
        month(5),
    }


def test_the_worked_example_of_docs_rules():
    state: dict[str, bool] = {}
    issued: set[str] = set()

    def settle(*months: tuple[str, bool]) -> tuple[set[str], Streak]:
        new: set[str] = set()
        for m, active in months:
            state[m] = active
            new |= gifts_due(state, issued | new)
        issued.update(new)
        return new, current_streak(state)

    jan, feb, mar, apr, may, jun, jul, aug, sep, oct, nov, dec = (month(i) for i in range(12))
    assert settle((jan, True), (feb, True), (mar, False)) == (set(), Streak(0, feb))
    assert settle((apr, True), (may, True), (jun, True)) == ({jun}, Streak(3, jun))
    assert settle((sep, True), (oct, True), (nov, True)) == ({nov}, Streak(3, nov))
    assert settle((aug, True)) == (set(), Streak(4, nov))
    assert settle((jul, True)) == (set(), Streak(8, nov))
    assert settle((dec, True)) == ({dec}, Streak(9, dec))
    assert len(issued) == 3 == len(gift_months(state))


def test_the_current_streak():
    assert current_streak({}) == Streak(0, None)
    assert current_streak(settled("mm")) == Streak(0, None)
    assert current_streak(settled("mAAA")) == Streak(3, month(3))
    assert current_streak(settled("AAm")) == Streak(0, month(1))
    assert current_streak(settled("AAAmA")) == Streak(1, month(4))
    assert current_streak(settled("AA.A")) == Streak(1, month(3))  # the gap breaks it


@given(SETTLED)
def test_gifts_fall_exactly_on_the_3k_th_months_of_runs(state):
    gifts = gift_months(state)
    for m, active in state.items():
        assert (m in gifts) == (active and streak_at(state, m) % 3 == 0)


@THOROUGH
@given(SETTLED, st.randoms(use_true_random=False))
def test_the_order_of_settlement_does_not_change_how_many_gifts(state, random):
    chronological = sorted(state.items())
    shuffled = list(state.items())
    random.shuffle(shuffled)
    assert gift_months(dict(shuffled)) == gift_months(state)  # the rule on the same months
    assert in_order(chronological) == gift_months(state)  # in calendar order: exactly those
    issued = in_order(shuffled)
    assert len(issued) == owed(state)  # any order: as many gifts, each run its len // 3
    for run in runs(state):
        assert sum(1 for m in run if m in issued) == len(run) // 3
    assert all(state[m] for m in issued)  # only ever for active months


@THOROUGH
@given(SETTLED, st.randoms(use_true_random=False))
def test_each_gift_is_a_3k_th_month_of_its_run_when_issued_and_issued_once(state, random):
    shuffled = list(state.items())
    random.shuffle(shuffled)
    now: dict[str, bool] = {}
    issued: set[str] = set()
    for m, active in shuffled:
        now[m] = active
        new = gifts_due(now, issued)
        assert not new & issued
        assert new <= gift_months(now)
        issued |= new
        assert gifts_due(now, issued) == set()  # the same settlement again: nothing more


@given(SETTLED, st.integers(min_value=0, max_value=17))
def test_a_missed_month_resets(state, missed):
    state = state | {month(missed): False}
    after = {m: a for m, a in state.items() if month_index(m) > month_index(month(missed))}
    assert {m for m in gift_months(state) if m in after} == gift_months(after)
    if state.get(month(missed + 1)):
        assert streak_at(state, month(missed + 1)) == 1


# --- end to end ------------------------------------------------------------------------------

_settled_at = itertools.count()


async def append_settlement(
    system,
    month: str,
    creators: list[tuple[str, bool, str]],
    *,
    part: int = 1,
    parts: int = 1,
    event_id: str | None = None,
    settled_at: datetime | None = None,
) -> None:
    """Append a part of a month's settlement to the log, as scoring does when it settles."""
    settled_at = settled_at or datetime(2026, 11, 20, 12, next(_settled_at) % 60, tzinfo=UTC)
    data = MonthSettled(
        month=month,
        part=part,
        parts=parts,
        pool=Decimal("1500.00"),
        settled_at=settled_at,
        creators=[
            SettledCreator(creator_id=c, active=active, payout=Decimal(payout))
            for c, active, payout in creators
        ],
    )
    event = IncomingEvent(
        id=event_id or f"month-{month}-settled-{part}",
        type="month.settled",
        time=settled_at,
        source=INTERNAL_SOURCE,
        creator_id=PROGRAM_SUBJECT,
        data=data.model_dump(mode="json"),
        attributes={},
    )
    async with system.runtime.context.sessionmaker() as session, session.begin():
        assert await log.append(session, [event]) == {event.key}


async def badges_caught_up(system, within: float = 30) -> None:
    """Until the badges group has applied every event in the log."""
    deadline = time.monotonic() + within
    while (lag := (await system.lags())["badges"]) != 0:
        assert time.monotonic() < deadline, f"badges did not catch up: lag {lag}"
        await asyncio.sleep(0.05)


async def rewards_of(system, *kinds: str) -> list[tuple]:
    rows = await system.sql(
        "SELECT id, creator_id, kind, amount, currency, month FROM badges_rewards "
        "WHERE kind = ANY($1) ORDER BY creator_id, kind, month",
        list(kinds),
    )
    return [tuple(r) for r in rows]


async def creator_view(system, creator_id: str) -> dict:
    response = await system.client.get(f"/v1/creators/{creator_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def pool_share(creator_id: str, month: str, amount: str) -> tuple:
    return (
        rewards.reward_id(rewards.MONTHLY_POOL_SHARE, creator_id, month),
        creator_id,
        rewards.MONTHLY_POOL_SHARE,
        Decimal(amount),
        "USDT",
        month,
    )


def gift(creator_id: str, month: str) -> tuple:
    return (
        rewards.reward_id(rewards.MERCH_GIFT, creator_id, month),
        creator_id,
        rewards.MERCH_GIFT,
        None,
        None,
        month,
    )


class TestEndToEnd:
    pytestmark = pytest.mark.usefixtures("bus")

    async def test_three_active_months_settled_out_of_order_earn_one_gift(self, system):
        for creator_id in ("c-steady", "c-missed"):
            await certify(system, creator_id, datetime(2026, 5, 1, tzinfo=UTC))
        # November, then September, in two parts; October last.
        await append_settlement(system, "2026-09", [("c-steady", True, "1000.01")], part=1, parts=2)
        await append_settlement(
            system, "2026-11", [("c-steady", True, "1499.99"), ("c-missed", False, "0.00")]
        )
        await append_settlement(system, "2026-09", [("c-missed", True, "499.99")], part=2, parts=2)
        await badges_caught_up(system)
        assert await rewards_of(system, rewards.MERCH_GIFT) == []
        steady = await creator_view(system, "c-steady")
        assert steady["streak"] == {"consecutive_active_months": 1, "last_active_month": "2026-11"}

        await append_settlement(
            system, "2026-10", [("c-steady", True, "750.00"), ("c-missed", True, "750.00")]
        )
        await badges_caught_up(system)

        assert await rewards_of(system, rewards.MERCH_GIFT) == [gift("c-steady", "2026-11")]
        assert await rewards_of(system, rewards.MONTHLY_POOL_SHARE) == [
            pool_share("c-missed", "2026-09", "499.99"),
            pool_share("c-missed", "2026-10", "750.00"),
            pool_share("c-steady", "2026-09", "1000.01"),
            pool_share("c-steady", "2026-10", "750.00"),
            pool_share("c-steady", "2026-11", "1499.99"),
        ]
        steady = await creator_view(system, "c-steady")
        assert steady["streak"] == {"consecutive_active_months": 3, "last_active_month": "2026-11"}
        gifts = [r for r in steady["rewards"] if r["kind"] == "merch_gift"]
        assert [(g["month"], g["amount"], g["currency"]) for g in gifts] == [
            ("2026-11", None, None)
        ]
        shares = {r["month"]: r["amount"] for r in steady["rewards"]}
        assert shares["2026-09"] == "1000.01" and shares["2026-10"] == "750.00"
        missed = await creator_view(system, "c-missed")
        assert missed["streak"] == {"consecutive_active_months": 0, "last_active_month": "2026-10"}
        [row] = await system.sql("SELECT causes FROM badges_rewards WHERE kind = 'merch_gift'")
        assert '"month-2026-10-settled-1"' in row["causes"]  # the settlement that completed it
        months = await system.sql(
            "SELECT creator_id, month, active FROM badges_settled_months ORDER BY 1, 2"
        )
        assert [tuple(m) for m in months] == [
            ("c-missed", "2026-09", True),
            ("c-missed", "2026-10", True),
            ("c-missed", "2026-11", False),
            ("c-steady", "2026-09", True),
            ("c-steady", "2026-10", True),
            ("c-steady", "2026-11", True),
        ]

    async def test_a_settlement_delivered_twice_changes_nothing(self, system):
        for m in ("2026-07", "2026-08", "2026-09"):
            await append_settlement(system, m, [("c-1", True, "100.00"), ("c-2", False, "0.00")])
        await badges_caught_up(system)
        before = await rewards_of(system, *rewards.KINDS)
        assert before == [
            gift("c-1", "2026-09"),
            pool_share("c-1", "2026-07", "100.00"),
            pool_share("c-1", "2026-08", "100.00"),
            pool_share("c-1", "2026-09", "100.00"),
        ]
        months = await system.sql(
            "SELECT creator_id, month, active, seq FROM badges_settled_months ORDER BY 1, 2"
        )

        # The same settlement under another event id; a conflicting copy of a settled month
        # (first write wins); the relay republishes and the group replays the whole log.
        await append_settlement(
            system,
            "2026-09",
            [("c-1", True, "100.00"), ("c-2", False, "0.00")],
            event_id="month-2026-09-settled-1-again",
        )
        await append_settlement(
            system,
            "2026-08",
            [("c-1", False, "0.00"), ("c-2", True, "900.00")],
            event_id="month-2026-08-settled-1-conflicting",
        )
        await system.sql("UPDATE relay_positions SET position = 0")
        await system.sql("DELETE FROM consumer_positions WHERE group_name = 'badges'")
        await badges_caught_up(system)

        assert await rewards_of(system, *rewards.KINDS) == before
        assert (
            await system.sql(
                "SELECT creator_id, month, active, seq FROM badges_settled_months ORDER BY 1, 2"
            )
            == months
        )  # the first settlement of a month stands: c-2's August stays missed
        [feed] = await system.sql("SELECT count(*) AS n FROM badges_rewards")
        assert feed["n"] == 4

    async def test_a_missed_month_resets_the_streak(self, system):
        await certify(system, "c-1", datetime(2026, 1, 1, tzinfo=UTC))
        history = {
            "2026-01": True,
            "2026-02": True,
            "2026-03": False,
            "2026-04": True,
            "2026-05": True,
        }
        for m, active in history.items():
            await append_settlement(system, m, [("c-1", active, "10.00" if active else "0.00")])
        await badges_caught_up(system)
        assert await rewards_of(system, rewards.MERCH_GIFT) == []
        view = await creator_view(system, "c-1")
        assert view["streak"] == {"consecutive_active_months": 2, "last_active_month": "2026-05"}

        await append_settlement(system, "2026-06", [("c-1", True, "10.00")])
        await badges_caught_up(system)
        assert await rewards_of(system, rewards.MERCH_GIFT) == [gift("c-1", "2026-06")]
        view = await creator_view(system, "c-1")
        assert view["streak"] == {"consecutive_active_months": 3, "last_active_month": "2026-06"}

        await append_settlement(system, "2026-07", [("c-1", False, "0.00")])
        await badges_caught_up(system)
        view = await creator_view(system, "c-1")
        assert view["streak"] == {"consecutive_active_months": 0, "last_active_month": "2026-06"}
        assert len(await rewards_of(system, rewards.MERCH_GIFT)) == 1
