"""The PostgreSQL log is the source of truth on both buses: whatever the topic lacks, refuses or
garbles, every group ends up with every accepted event applied once."""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.scoring.months import MONTH_LOCK_CLASS
from shared.events import BusEvent
from tests.conftest import make_settings, running
from tests.system import post_created, run_cli
from tests.test_bus_delivery import eventually, posts_counted, read_topic

pytestmark = pytest.mark.usefixtures("bus")


@pytest.fixture
def bus() -> str:
    return "kafka"  # what Kafka may lose or refuse; the bus switch test runs both


async def append_directly(system, event: dict, attributes: dict) -> None:
    """An event stored as an earlier release accepted it, before today's limits."""
    await system.sql(
        "INSERT INTO events (event_id, content_hash, type, time, source, creator_id, data, "
        "attributes) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
        event["id"],
        hashlib.sha256(event["id"].encode()).digest(),
        event["type"],
        datetime.fromisoformat(event["time"]),
        event["source"],
        event["data"]["creator_id"],
        orjson.dumps(event["data"]).decode(),
        orjson.dumps(attributes).decode(),
    )


@pytest.fixture
def settings_overrides():
    return {"consumer_catch_up_after_ms": 300}


async def test_an_event_the_broker_refuses_is_parked_and_nothing_stalls(system):
    await system.runtime.stop_workers()
    await system.post_events([post_created("c-1") for _ in range(3)])
    big = post_created("c-1", event_id="too-big")
    await append_directly(system, big, {"note": "x" * 1_200_000})  # over max_request_size
    await system.post_events([post_created("c-1") for _ in range(3)])
    await system.restart_workers()

    await system.wait_until_processed()
    assert await posts_counted(system, "c-1") == 7  # the refused event came from the log
    [parked] = await system.sql("SELECT group_name, event_id, error FROM dead_letters")
    assert (parked["group_name"], parked["event_id"]) == ("relay", "too-big")
    assert "MessageSizeTooLarge" in parked["error"]
    settings = system.runtime.settings
    published = await read_topic(settings.kafka_bootstrap, settings.kafka_events_topic)
    assert len(published) == 6  # the relay went on past it, and published it no more


async def test_an_undecodable_message_is_parked_never_skipped(system):
    settings = system.runtime.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka_events_topic, b"\xff not json", key=b"c-1")
        lacking = orjson.dumps({"v": 9, "seq": 424242, "id": "e", "novel": True})
        await producer.send_and_wait(settings.kafka_events_topic, lacking, key=b"c-1")
    finally:
        await producer.stop()
    await system.post_events([post_created("c-1") for _ in range(2)])
    await system.wait_until_processed()

    async def both_parked():
        rows = await system.sql("SELECT 1 FROM dead_letters")
        return len(rows) == 4

    await eventually(both_parked)
    rows = await system.sql(
        "SELECT group_name, seq, payload, error FROM dead_letters ORDER BY group_name, id"
    )
    assert [(r["group_name"], r["seq"]) for r in rows] == [
        ("badges", None),
        ("badges", 424242),
        ("scoring", None),
        ("scoring", 424242),
    ]
    assert "not json" in rows[0]["payload"] and '"novel":true' in rows[1]["payload"]
    assert await posts_counted(system, "c-1") == 2  # and the groups went on


def test_bus_messages_of_another_version_are_read_by_what_they_carry():
    event = BusEvent(
        seq=7,
        id="e",
        type="post.created",
        time=datetime(2026, 11, 3, 2, 0, tzinfo=UTC),
        source="square",
        creator_id="c-1",
        data={"creator_id": "c-1", "post_id": "p", "text": "t", "image_count": 0},
    )
    newer = orjson.loads(event.to_json()) | {"v": 2, "partition_hint": 3, "trace": {"a": 1}}
    assert BusEvent.from_json(orjson.dumps(newer)) == event  # unknown fields ignored
    assert orjson.loads(event.to_json())["v"] == 1
    for missing in ("seq", "time", "data"):
        with pytest.raises(ValueError, match=missing):
            BusEvent.from_json(orjson.dumps({k: v for k, v in newer.items() if k != missing}))


async def lose_the_topic(system, events: int) -> None:
    """Events the relay published to a broker that then lost them: the relay's position says
    published, the topic does not have them."""
    await system.runtime.stop_workers()
    await system.post_events([post_created("c-1") for _ in range(events)])
    await system.sql("UPDATE relay_positions SET position = (SELECT max(seq) FROM events)")
    await system.sql(
        "INSERT INTO relay_positions (topic, position) SELECT $1, max(seq) FROM events "
        "ON CONFLICT DO NOTHING",
        system.runtime.settings.kafka_events_topic,
    )
    await system.restart_workers()
    await system.post_events([post_created("c-1") for _ in range(2)])


async def test_a_group_catches_up_from_the_log_what_the_topic_lost(system):
    await lose_the_topic(system, 20)
    await system.wait_until_processed()
    assert await posts_counted(system, "c-1") == 22
    [row] = await system.sql("SELECT count(*) AS n FROM dead_letters")
    assert row["n"] == 0


async def hold_the_month(system, seconds: float) -> None:
    """Post five events of November while the month's lock is held (as a settlement holds it):
    scoring's batch waits on it, its floor stays put while the topic holds its events. A lock
    of the session, not of a transaction: that would hold the log's stable end, and the relay
    would publish nothing."""
    blocker = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    month_key = zlib.crc32(b"2026-11") - 2**31
    try:
        await blocker.execute("SELECT pg_advisory_lock($1, $2)", MONTH_LOCK_CLASS, month_key)
        await system.post_events([post_created("c-1") for _ in range(5)])  # in 2026-11
        await asyncio.sleep(seconds)
        await blocker.execute("SELECT pg_advisory_unlock($1, $2)", MONTH_LOCK_CLASS, month_key)
    finally:
        await blocker.close()


def caught_up_from_the_log(caplog) -> list[str]:
    return [r.group for r in caplog.records if r.getMessage().startswith("events missing")]


async def test_a_long_batch_of_one_group_sends_no_other_group_to_the_log(system, caplog):
    """Scoring's batch waits, holding its transaction: the log's stable end stays below the
    events, and so does badges' floor, although badges applied them all. Nothing is missing
    from the topic: no group applies the log a second time."""
    await hold_the_month(system, 3)  # floor intervals and catch-up delays, many times over
    await system.wait_until_processed()
    assert await posts_counted(system, "c-1") == 5
    assert caught_up_from_the_log(caplog) == []


class TestASlowGroup:
    @pytest.fixture
    def settings_overrides(self):
        # scoring's batch gives up on the month's lock quickly and is tried again: short
        # transactions, the stable end moves, the floor stays below the published events
        return {"consumer_catch_up_after_ms": 300, "db_lock_timeout_ms": 100}

    async def test_is_not_caught_up_from_the_log(self, system, caplog):
        """A group behind on the topic keeps its floor below what the relay published: that is
        slowness, not a topic that lost events, and the log must not apply the backlog a second
        time beside the consumers (a full benchmark run did: twice PostgreSQL's work)."""
        await hold_the_month(system, 3)
        await system.wait_until_processed()
        assert await posts_counted(system, "c-1") == 5
        assert caught_up_from_the_log(caplog) == []


class TestReplayCommand:
    @pytest.fixture
    def settings_overrides(self):
        return {"consumer_catch_up_after_ms": 3_600_000}  # no automatic catch-up here

    async def test_replay_applies_what_the_topic_lost_and_nothing_twice(self, system):
        await lose_the_topic(system, 20)
        await eventually(lambda: _lags_are(system, {"scoring": 20, "badges": 20}))

        for group in ("scoring", "badges"):
            code, output = await run_cli(system.database_url, "replay", "--group", group)
            assert code == 0, output
            assert f"{group}: 20 events applied from the log" in output
        assert await system.lags() == {"scoring": 0, "badges": 0}
        assert await posts_counted(system, "c-1") == 22

        code, output = await run_cli(system.database_url, "replay", "--group", "scoring")
        assert "scoring: 0 events applied" in output  # again: nothing
        code, output = await run_cli(system.database_url, "replay", "--group", "nobody")
        assert code != 0 and "scoring, badges" in output


async def _lags_are(system, expected: dict[str, int]) -> bool:
    return await system.lags() == expected


async def test_markers_stay_bounded_behind_the_floor(system):
    for _ in range(5):
        await system.post_events([post_created(f"c-{n % 7}") for n in range(60)])
    await system.wait_until_processed()

    async def pruned():
        rows = await system.sql("SELECT count(*) AS n FROM processed_events")
        return rows[0]["n"] == 0

    await eventually(pruned)  # every marker is below the floor now, and gone
    floors = await system.sql("SELECT group_name, position FROM consumer_positions")
    [last] = await system.sql("SELECT max(seq) AS seq FROM events")
    assert {r["group_name"]: r["position"] for r in floors} == {
        "scoring": last["seq"],
        "badges": last["seq"],
    }
    assert sum([(await system.month(f"c-{n}", "2026-11"))["posts"] for n in range(7)]) == 300


async def test_topics_are_created_with_the_retention_setting(system):
    settings = system.runtime.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        for topic in (settings.kafka_events_topic, settings.kafka_rewards_topic):
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
            entries = {e[0]: e[1] for e in response.resources[0][4]}
            assert entries["retention.ms"] == str(settings.kafka_retention_ms)
    finally:
        await admin.close()


async def test_switching_bus_neither_loses_nor_reapplies(database_url, kafka_bootstrap):
    embedded = make_settings("embedded", None)
    kafka = make_settings("kafka", kafka_bootstrap)
    expected = 0
    for settings in (embedded, kafka, embedded, kafka):
        async with running(settings, database_url) as system:
            await system.wait_until_processed()  # what the last bus left: nothing, or skipped
            assert await posts_counted(system, "c-1") == expected
            await system.post_events([post_created("c-1") for _ in range(10)])
            expected += 10
            await system.wait_until_processed()
            assert await posts_counted(system, "c-1") == expected
            [badges] = await system.sql("SELECT posts FROM badges_creator_posts")
            assert badges["posts"] == expected
    published = await read_topic(kafka_bootstrap, kafka.kafka_events_topic)
    # first Kafka period: only its own 10 (the relay starts at the groups' floor); second:
    # the 10 the embedded period applied (relayed again, skipped) and its own 10
    assert len(published) == 30
