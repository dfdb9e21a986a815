"""Concurrent appends and the log's stable end (shared/bus/log.py `LogEnd`).

Appends no longer wait for each other, so their `seq`s may commit out of order; a reader bounded
by the stable end still never passes a `seq` that may commit later. Against the real PostgreSQL,
with transactions held open on purpose. (The consumer's view of the same: tests/test_guarantees.py
`test_a_reader_never_skips_a_row_committed_late` and its mutation run.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest import service as ingest_service
from shared import db
from shared.bus import log as event_log
from shared.settings import Settings
from tests.system import post_created


@pytest.fixture
async def sessionmaker(database_url) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(database_url, Settings(_env_file=None))
    yield db.create_sessionmaker(engine)
    await engine.dispose()


def post(post_id: str):
    [event] = ingest_service.validate(
        [post_created("c-end", post_id, event_id=post_id)], "square", 1
    )
    return event


async def seq_of(session: AsyncSession, post_id: str) -> int:
    query = text("SELECT seq FROM events WHERE event_id = :id")
    return await session.scalar(query, {"id": post_id})


async def end_of(sessionmaker, end: event_log.LogEnd) -> int:
    """One look, as a reader takes it: in a transaction of its own."""
    async with sessionmaker() as session:
        return await end.advance(session)


async def readable(sessionmaker, end: event_log.LogEnd) -> list[str]:
    """What a reader bounded by the stable end reads from the start of the log."""
    async with sessionmaker() as session:
        up_to = await end.advance(session)
        return [e.id for e in await event_log.read_after(session, 0, 100, up_to=up_to)]


async def until(condition: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def append_committed(sessionmaker, post_id: str) -> int:
    async with sessionmaker() as session, session.begin():
        await event_log.append(session, [post(post_id)])
        return await seq_of(session, post_id)


async def test_two_appends_in_open_transactions_do_not_wait_for_each_other(sessionmaker):
    async with sessionmaker() as first, first.begin():
        await event_log.append(first, [post("p-first")])
        async with sessionmaker() as second, second.begin():
            # If appends still waited for each other, this one would wait for the first to
            # commit, which waits for it: the lock timeout would fail it instead of hanging.
            await second.execute(text("SET LOCAL lock_timeout = '5s'"))
            assert await event_log.append(second, [post("p-second")]) == {("square", "p-second")}
            second_seq = await seq_of(second, "p-second")
        # the second committed while the first, with the lower seq, is still open
        assert await seq_of(first, "p-first") < second_seq
    async with sessionmaker() as session:
        assert [e.id for e in await event_log.read_after(session, 0, 10, up_to=second_seq)] == [
            "p-first",
            "p-second",
        ]


async def test_an_open_append_holds_the_stable_end_below_it_until_it_commits(sessionmaker):
    end = event_log.LogEnd("test")
    before = await append_committed(sessionmaker, "p-before")
    await until(lambda: _is(end_of(sessionmaker, end), before))
    async with sessionmaker() as held, held.begin():
        await event_log.append(held, [post("p-held")])
        lower = await seq_of(held, "p-held")
        higher = await append_committed(sessionmaker, "p-after")  # committed, above the open one
        assert higher > lower
        for _ in range(3):  # however often the reader looks
            assert await end_of(sessionmaker, end) == before
            assert await readable(sessionmaker, end) == ["p-before"]  # p-after waits
    # committed: both are final, read in order
    await until(lambda: _is(end_of(sessionmaker, end), higher))
    assert await readable(sessionmaker, end) == ["p-before", "p-held", "p-after"]


async def test_a_rolled_back_append_releases_the_stable_end(sessionmaker):
    end = event_log.LogEnd("test")
    async with sessionmaker() as held:
        await held.begin()
        await event_log.append(held, [post("p-rolled-back")])
        higher = await append_committed(sessionmaker, "p-kept")
        assert await end_of(sessionmaker, end) < higher
        await held.rollback()
    await until(lambda: _is(end_of(sessionmaker, end), higher))
    assert await readable(sessionmaker, end) == ["p-kept"]  # the rolled-back seq never comes


async def test_the_newest_transaction_still_open_holds_the_end_after_an_older_one_commits(
    sessionmaker,
):
    """The hole of a bound taken from the snapshot's xmax: xmax is one past the last
    transaction id to *finish*. An older append (lower xid) commits while a newer one (higher
    xid) is open: the snapshot's xmax is then the open one's own xid, nothing below xmax is
    running, and a check "nothing below xmax is running" would let the reader pass the open
    row. The reader's own xid, taken after it read the last seq drawn, is above every appender's."""
    end = event_log.LogEnd("test")
    async with sessionmaker() as older, sessionmaker() as newer:
        await older.begin()
        await newer.begin()
        await older.execute(event_log.TAKE_XID)  # the older transaction id
        await event_log.append(newer, [post("p-newer")])  # the newer id, the lower seq
        await event_log.append(older, [post("p-older")])  # the higher seq
        newer_seq = await seq_of(newer, "p-newer")
        await older.commit()
        for _ in range(3):
            assert await end_of(sessionmaker, end) < newer_seq
            assert await readable(sessionmaker, end) == []
        await newer.commit()
    await until(lambda: _is(end_of(sessionmaker, end), newer_seq + 1))
    assert await readable(sessionmaker, end) == ["p-newer", "p-older"]


# A trigger that stops an insert of `p-slow` after its `seq` is drawn (defaults come first)
# and before its row is written (which is where a transaction takes its id when it has none).
PAUSE_FUNCTION = """
CREATE FUNCTION pause_before_p_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(4711); RETURN NEW; END $$
"""
PAUSE_TRIGGER = (
    "CREATE TRIGGER pause BEFORE INSERT ON events FOR EACH ROW"
    " WHEN (NEW.event_id = 'p-slow') EXECUTE FUNCTION pause_before_p_slow()"
)


async def read_while_an_append_pauses_after_drawing(sessionmaker) -> tuple[list[str], list[str]]:
    """An append draws its `seq` and pauses before writing its row; a later append commits and
    a reader looks; then the first goes on and commits. What the reader read meanwhile, and
    what it reads at the end."""
    async with sessionmaker() as session, session.begin():
        await session.execute(text(PAUSE_FUNCTION))
        await session.execute(text(PAUSE_TRIGGER))
    end = event_log.LogEnd("test")
    # Not the first `seq`: `nextval` takes an id itself when it logs the sequence to the WAL
    # (once per 32 values, and first after a checkpoint), and would hide the difference.
    first = await append_committed(sessionmaker, "p-first")
    await until(lambda: _is(end_of(sessionmaker, end), first))
    async with sessionmaker() as gate:
        async with gate.begin():
            await gate.execute(text("SELECT pg_advisory_xact_lock(4711)"))
            slow = asyncio.create_task(append_committed(sessionmaker, "p-slow"))

            async def paused() -> bool:
                waiting = (
                    "SELECT count(*) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND objid = 4711 AND NOT granted"
                )
                return await gate.scalar(text(waiting)) > 0

            await until(paused)
            after = await append_committed(sessionmaker, "p-after")
            for _ in range(3):
                meanwhile = await readable(sessionmaker, end)
        await slow  # the gate is open: it goes on and commits
    await until(lambda: _is(end_of(sessionmaker, end), after))
    return meanwhile, await readable(sessionmaker, end)


async def test_an_append_has_its_transaction_id_before_it_draws_a_seq(sessionmaker):
    meanwhile, at_the_end = await read_while_an_append_pauses_after_drawing(sessionmaker)
    assert meanwhile == ["p-first"]
    assert at_the_end == ["p-first", "p-slow", "p-after"]


async def test_without_its_id_first_an_append_commits_below_what_a_reader_passed(
    sessionmaker, monkeypatch
):
    """The mutation run of the test above: without `SELECT pg_current_xact_id()` first, the
    paused append has no id when the reader takes its own, so nothing holds the end: the
    reader reads the later row, and the paused one commits below it."""
    monkeypatch.setattr(event_log, "TAKE_XID", text("SELECT 1"))
    meanwhile, at_the_end = await read_while_an_append_pauses_after_drawing(sessionmaker)
    assert meanwhile == ["p-first", "p-after"]
    assert at_the_end == ["p-first", "p-slow", "p-after"]  # p-slow: below what it had passed


async def test_a_reader_keeps_few_pending_looks_while_a_transaction_holds_the_end(
    sessionmaker, monkeypatch
):
    monkeypatch.setattr(event_log, "MAX_PENDING", 2)
    end = event_log.LogEnd("test")
    async with sessionmaker() as held, held.begin():
        await event_log.append(held, [post("p-held")])
        for n in range(5):
            last = await append_committed(sessionmaker, f"p-{n}")
            assert await end_of(sessionmaker, end) == 0
        assert len(end._pending) == 2
    await until(lambda: _is(end_of(sessionmaker, end), last))
    assert len(await readable(sessionmaker, end)) == 6


async def test_a_hung_append_holds_the_end_only_until_the_idle_timeout(database_url):
    """`db_idle_in_transaction_timeout_ms`: the server ends a transaction left idle, so a hung
    appender delays the readers for that long at most."""
    hung_engine = db.create_engine(
        database_url, Settings(_env_file=None, db_idle_in_transaction_timeout_ms=300)
    )
    engine = db.create_engine(database_url, Settings(_env_file=None))
    sessionmaker = db.create_sessionmaker(engine)
    end = event_log.LogEnd("test")
    try:
        hung = db.create_sessionmaker(hung_engine)()
        await hung.begin()
        await event_log.append(hung, [post("p-hung")])  # and then nothing: the client hangs
        later = await append_committed(sessionmaker, "p-later")
        await until(lambda: _is(end_of(sessionmaker, end), later))
        assert await readable(sessionmaker, end) == ["p-later"]  # the hung one was rolled back
        with pytest.raises(DBAPIError):  # its connection is gone
            await hung.commit()
        await hung.close()
    finally:
        await hung_engine.dispose()
        await engine.dispose()


async def test_the_stable_end_is_read_before_the_transaction_writes(sessionmaker):
    """The xid the reader takes must be newer than the last seq it read: a transaction that
    has one already cannot look."""
    async with sessionmaker() as session, session.begin():
        await session.execute(event_log.TAKE_XID)
        with pytest.raises(RuntimeError):
            await event_log.LogEnd("test").advance(session)


async def test_the_events_sequence_hands_out_one_value_at_a_time(sessionmaker):
    """A sequence cache above 1 would let a session hold seqs drawn earlier and use them
    after a reader read a higher last value: the stable end needs the cache at 1."""
    async with sessionmaker() as session:
        cache = await session.scalar(
            text(
                "SELECT seqcache FROM pg_sequence WHERE seqrelid ="
                " pg_get_serial_sequence('events', 'seq')::regclass"
            )
        )
    assert cache == 1


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
