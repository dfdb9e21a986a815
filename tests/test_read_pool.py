"""Readers waiting for a refresh do not take the pool (services/scoring/freshness.py): a
reader gives its connection back before it refreshes, and the readers of one process wait for
a key's refresh one at a time. Each used to hold two connections while it waited, and readers
waiting together for one refresh took the whole pool: 503s at 32 concurrent ranking reads in
the full benchmark runs (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import time
import zlib
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.scoring import freshness, recommendations, standings
from shared.program_time import month_of
from tests.system import ADMIN
from tests.test_recommendations import certify, send
from tests.test_standings import like, post

READERS = 12
CREATORS = 30_000  # a month to rank: about a second of Python


@pytest.fixture
def settings_overrides():
    # 4 connections in all (2 + 2 overflow), a second's wait for one: twelve readers holding
    # two each would time out within the test
    return {"db_pool_size": 2, "db_pool_timeout_s": 1}


@asynccontextmanager
async def holding(system, statement: str, *args):
    """`statement` run in a transaction of a connection of its own, its locks held until the
    block ends."""
    holder = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    try:
        locked = holder.transaction()
        await locked.start()
        await holder.execute(statement, *args)
        yield
        await locked.rollback()
    finally:
        await holder.close()


def month_refresh(month: str) -> tuple:
    """The statement and arguments of another refresh of the month holding its lock."""
    key = zlib.crc32(month.encode()) - 2**31
    return ("SELECT pg_advisory_xact_lock($1, $2)", freshness.LOCK_CLASS, key)


async def test_readers_waiting_for_a_refresh_hold_no_connection(system):
    now = datetime.now(UTC)
    month = month_of(now, system.runtime.settings.timezone)
    when = now - timedelta(minutes=5)
    await certify(system, "c-1", now - timedelta(days=400))
    await send(system, [post("c-1", "p-1", when), like("c-1", "p-1", "a-1", when)])
    await system.wait_until_processed()

    # Another refresh of the month holds its lock (a refresher on a busy month): every reader
    # finds the month's table stale (no staleness tolerated in the tests) and must wait.
    async with holding(system, *month_refresh(month)):
        paths = [f"/v1/rankings/{month}", f"/v1/creators/c-1/months/{month}"]
        reads = [
            asyncio.create_task(system.client.get(paths[n % 2], headers=ADMIN, timeout=30))
            for n in range(READERS)
        ]
        await asyncio.sleep(2)  # twice the pool's timeout: every reader is waiting by now
        assert not any(read.done() for read in reads)
    responses = await asyncio.gather(*reads)
    assert [r.status_code for r in responses] == [200] * READERS, responses[0].text
    rankings, months = responses[0::2], responses[1::2]
    assert {tuple(e["creator_id"] for e in r.json()["entries"]) for r in rankings} == {("c-1",)}
    # the creator month's statements after the wait ran on a connection of its own again
    assert {(r.json()["posts"], r.json()["rank"]) for r in months} == {(1, 1)}


async def test_a_503_for_an_exhausted_pool_names_who_holds_it(system, caplog):
    """When no connection comes within the pool's timeout, the log line of the 503 counts the
    connections held, by request path or worker: what an operator needs to find the cause."""
    month = month_of(datetime.now(UTC), system.runtime.settings.timezone)
    # every ranking read blocks on this table, holding its pooled connection
    async with holding(system, "LOCK TABLE scoring_standings_refreshes IN ACCESS EXCLUSIVE MODE"):
        reads = [
            asyncio.create_task(
                system.client.get(f"/v1/rankings/{month}", headers=ADMIN, timeout=30)
            )
            for _ in range(6)  # the pool has 4
        ]
        await asyncio.sleep(1.5)  # past the pool's timeout of 1 s
    statuses = sorted(r.status_code for r in await asyncio.gather(*reads))
    assert 503 in statuses and 200 in statuses, statuses
    exhausted = [r for r in caplog.records if r.getMessage() == "database unavailable"]
    assert exhausted, "the 503 is logged"
    held = exhausted[0].pool_holders
    readers = held[f"GET /v1/rankings/{month}"]
    assert readers["connections"] >= 2 and readers["longest_s"] >= 1, held  # blocked > 1 s
    assert sum(h["connections"] for h in held.values()) == 4, held  # every connection named


async def test_ranking_a_large_month_leaves_the_event_loop_free(system):
    """A refresh ranks every creator of the month: seconds of Python at 100,000 creators. On
    the event loop that stalled every other request of the process (each holding its pooled
    connection meanwhile): the 503s of the full Kafka run of 2026-11-30 06:00."""
    await system.sql(
        "INSERT INTO scoring_creator_months (creator_id, month, posts, qualifying_posts, "
        "active_days, interactions, quality) SELECT 'c-' || n, '2026-10', 5, 1 + n % 9, "
        "1 + n % 30, n % 500, (n % 1000) / 1000.0 FROM generate_series(1, $1) AS n",
        CREATORS,
    )
    longest, ticking = 0.0, True

    async def tick() -> None:  # what another request of the process would see
        nonlocal longest
        before = time.perf_counter()
        while ticking:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            longest, before = max(longest, now - before), now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    async with system.runtime.context.sessionmaker() as session:
        ranked = await standings.standings(session, system.runtime.settings, "2026-10")
    took = time.perf_counter() - started
    ticking = False
    await ticker
    assert len(ranked) == CREATORS
    # the loop went on all along: ~0.1 of the time (fetching the rows) on a quiet machine, 0.36
    # once in a full parallel test run (a thread waits for the GIL longer on busy cores),
    # against ~0.85 with the ranking on the loop
    assert longest < took / 2, (longest, took)


async def test_the_background_refresh_waits_for_no_month(system):
    """The refresher's recommendations (no `wait`) used to wait for a month another process was
    refreshing: with two scoring processes and a month of 110,000 creators, past the statement
    timeout (an error in the full benchmark run of 2026-11-30 09:03). Now they wait for no lock
    and, while a month they read is being refreshed, are left for a later pass rather than
    built from the table being replaced."""
    settings, sessionmaker = system.runtime.settings, system.runtime.context.sessionmaker
    now = datetime.now(UTC)
    month = month_of(now, settings.timezone)
    async with holding(system, *month_refresh(month)):  # another process refreshing the month
        await certify(system, "c-1", now - timedelta(days=400))
        await send(system, [post("c-1", "p-1", now - timedelta(minutes=5))])
        await system.wait_until_processed()  # the list is stale: its version moved

        refresh = recommendations.refresh(sessionmaker, settings, wait=False, now=now)
        assert await asyncio.wait_for(refresh, timeout=10) is False
    await recommendations.refresh(sessionmaker, settings, wait=True, now=now)  # free now
    async with sessionmaker() as session:
        state = await freshness.state(session, recommendations.KEY)
        fingerprint = await recommendations.fingerprint(session, settings, now)
    assert not state.stale(fingerprint, now)
