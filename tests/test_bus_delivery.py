"""Delivery guarantees of both buses: poison events, halts, dead letters, redelivery, rivals."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from services.runtime import Runtime
from services.scoring import consumer as scoring
from shared.bus.processor import HALTED
from shared.events import BusEvent
from tests.system import ADMIN, post_created, run_cli

pytestmark = pytest.mark.usefixtures("bus")


async def posts_counted(system, creator_id: str) -> int:
    """Posts of the creator scoring has applied (its facts)."""
    rows = await system.sql(
        "SELECT count(*) AS n FROM scoring_posts WHERE creator_id = $1 AND kind IS NOT NULL",
        creator_id,
    )
    return rows[0]["n"]


async def eventually(check, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.05)


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
            "SELECT group_name, source, event_id, attempts, error FROM dead_letters"
        )
        assert (parked["group_name"], parked["source"], parked["event_id"], parked["attempts"]) == (
            "scoring",
            "square",
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

        # Once the bug is fixed (the real handler), the parked event goes back through its
        # group, on either bus: a processed marker must not swallow it.
        code, output = await run_cli(system.database_url, "dead-letters", "list")
        assert code == 0 and "scoring  seq=" in output and "id=poison" in output, output
        code, output = await run_cli(
            system.database_url, "dead-letters", "replay", "--group", "scoring", "--id", "poison"
        )
        assert code == 0, output
        assert "scoring: 1 applied" in output
        assert await posts_counted(system, "c-1") == 5
        assert await system.sql("SELECT * FROM dead_letters") == []
        code, output = await run_cli(system.database_url, "dead-letters", "replay")
        assert code == 0 and "scoring: 0 applied" in output  # nothing left: nothing twice
        assert await posts_counted(system, "c-1") == 5

    @pytest.mark.parametrize("failure", ["a handler bug", "code ahead of its schema"])
    async def test_a_failure_of_every_event_halts_the_group_and_parks_nothing(
        self, system, failure
    ):
        real = scoring.make_handler(system.runtime.settings)
        broken = True

        async def handler(session, events):
            if broken and failure == "a handler bug":
                raise KeyError("a field every event lacks")
            if broken:
                await session.execute(text("SELECT * FROM a_table_of_the_next_release"))
            await real(session, events)

        await system.post_events([post_created("c-1") for _ in range(5)])
        task = await self.consume_scoring(system, handler)
        await eventually(lambda: asyncio.sleep(0, "scoring" in HALTED))

        ready = await system.client.get("/readyz")
        assert ready.status_code == 503
        assert "consumer group scoring (halted)" in ready.json()["message"]
        metrics = (await system.client.get("/metrics")).text
        assert 'creator_activity_consumer_halted{group="scoring"} 1.0' in metrics
        await asyncio.sleep(0.5)  # halted for a while: still nothing parked, nothing applied
        assert await system.sql("SELECT * FROM dead_letters") == []
        assert (await system.lags())["scoring"] == 5

        broken = False  # the fix is deployed (or the migration ran): the group resumes
        await system.wait_until_processed()
        assert await posts_counted(system, "c-1") == 5
        assert "scoring" not in HALTED
        assert (await system.client.get("/readyz")).status_code == 200
        assert await system.sql("SELECT * FROM dead_letters") == []
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


async def read_topic(bootstrap: str, topic: str) -> list[BusEvent]:
    """Every message of a topic, read without a group."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    try:
        events, quiet_since = [], time.monotonic()
        while time.monotonic() - quiet_since < 1.5:
            batches = await reader.getmany(timeout_ms=200)
            for messages in batches.values():
                events += [BusEvent.from_json(m.value) for m in messages]
                quiet_since = time.monotonic()
        return events
    finally:
        await reader.stop()


async def test_events_published_again_are_skipped(system, bus):
    """The relay crashed after publishing, before recording its position: on restart it
    publishes everything again, and the consumers must skip what they already applied."""
    if bus == "embedded":
        pytest.skip("the embedded bus never redelivers: a position commits with its effects")
    await system.post_events([post_created("c-1") for _ in range(10)])
    await system.wait_until_processed()

    await system.runtime.stop_workers()
    await system.sql("UPDATE relay_positions SET position = 0")
    await system.restart_workers()
    await system.post_events([post_created("c-1")])
    await system.wait_until_processed()

    assert (await system.month("c-1", "2026-11"))["posts"] == 11
    settings = system.runtime.settings
    published = await read_topic(settings.kafka_bootstrap, settings.kafka_events_topic)
    assert len(published) == 21  # every event went out twice, but one
    assert len({e.seq for e in published}) == 11
