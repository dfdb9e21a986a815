"""Delivery guarantees of both buses: poison events, database failures, redelivery, rivals."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from services.runtime import Runtime
from services.scoring import consumer as scoring
from tests.system import ADMIN, post_created

pytestmark = pytest.mark.usefixtures("bus")


async def posts_counted(system, creator_id: str) -> int:
    rows = await system.sql(
        "SELECT posts FROM scoring_creator_month_activity WHERE creator_id = $1", creator_id
    )
    return sum(r["posts"] for r in rows)


class TestWithOurOwnScoringHandler:
    """Scoring's own workers do not run; each test drives its group with a handler of its own."""

    @pytest.fixture
    def system_services(self):
        return ("ingest", "badges")

    async def consume_scoring(self, system, handler) -> asyncio.Task:
        bus = system.runtime.context.bus
        return asyncio.create_task(bus.consume(scoring.GROUP, handler))

    async def test_poison_event_is_parked_and_the_group_goes_on(self, system):
        real = scoring.make_handler(system.runtime.settings)
        attempts = []

        async def handler(session, events):
            if any(e.id == "poison" for e in events):
                attempts.append(len(events))
                raise ValueError("cannot handle this one")
            await real(session, events)

        batch = [post_created("c-1") for _ in range(3)]
        batch.insert(1, post_created("c-1", event_id="poison"))
        await system.post_events(batch)
        task = await self.consume_scoring(system, handler)
        await system.wait_until_processed()

        assert await posts_counted(system, "c-1") == 3  # every event but the poison one
        [parked] = await system.sql(
            "SELECT group_name, event_id, attempts, error FROM dead_letters"
        )
        assert (parked["group_name"], parked["event_id"], parked["attempts"]) == (
            "scoring",
            "poison",
            system.runtime.settings.consumer_poison_attempts,
        )
        assert "cannot handle this one" in parked["error"]
        consumers = (await system.client.get("/v1/admin/consumers", headers=ADMIN)).json()
        assert {g["name"]: g["dead_letters"] for g in consumers["groups"]} == {
            "scoring": 1,
            "badges": 0,
        }
        assert attempts[0] == 4  # the whole batch first, then the event alone

        await system.post_events([post_created("c-1")])  # and the group goes on
        await system.wait_until_processed()
        assert await posts_counted(system, "c-1") == 4
        system.runtime.context.bus.stop()
        await task

    async def test_database_failure_is_retried_without_skipping_or_double_counting(self, system):
        real = scoring.make_handler(system.runtime.settings)
        failures = []

        async def handler(session, events):
            await real(session, events)
            if len(failures) < 2:  # the connection dies mid-transaction, twice
                failures.append(True)
                await session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

        await system.post_events([post_created("c-1") for _ in range(5)])
        task = await self.consume_scoring(system, handler)
        await system.wait_until_processed()

        assert len(failures) == 2
        assert await posts_counted(system, "c-1") == 5
        assert await system.sql("SELECT * FROM dead_letters") == []
        system.runtime.context.bus.stop()
        await task


async def test_two_processes_of_one_group_apply_each_event_once(system, database_url):
    rival = Runtime(system.runtime.settings, ("scoring",), database_url=database_url)
    await rival.connect()
    rival.start_workers()
    try:
        for _ in range(4):
            await system.post_events([post_created(f"c-{n % 10}") for n in range(50)])
            await asyncio.sleep(0.05)
        await system.wait_until_processed(within=60)
    finally:
        await rival.close()
    for n in range(10):
        assert (await system.month(f"c-{n}", "2026-11"))["posts"] == 20


async def test_events_published_again_are_skipped(system, bus):
    """The relay crashed after publishing, before recording its position: on restart it
    publishes everything again, and the consumers must skip what they already applied."""
    if bus == "embedded":
        pytest.skip("the embedded bus never redelivers: a position commits with its effects")
    await system.post_events([post_created("c-1") for _ in range(10)])
    await system.wait_until_processed()

    await system.runtime.stop_workers()
    await system.sql("UPDATE consumer_positions SET position = 0 WHERE group_name = 'kafka-relay'")
    await system.restart_workers()
    await system.post_events([post_created("c-1")])
    await system.wait_until_processed()

    assert (await system.month("c-1", "2026-11"))["posts"] == 11
    [row] = await system.sql("SELECT sum(next_offset) AS published FROM published_offsets")
    assert row["published"] == 21  # every event went out twice, but one
