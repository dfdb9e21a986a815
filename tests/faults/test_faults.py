"""Faults while a steady stream of traffic runs, each scenario then judged by the history
checker (tests/faults/checker.py) against a clean run of the events the clients were told were
taken.

Real processes (`creator-activity ingest|scoring|badges`), the suite's own PostgreSQL and Tansu
broker (tests/faults/infra.py). A fault is injected when the stream has reached a number of
acknowledged events, never after a fixed sleep; the stream goes on until the faults are over.
Every scenario also settles three months, each by two requests at once, the last one while its
late events arrive (tests/faults/generator.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.faults.checker import GROUPS, check, last_offsets, topic_ids, unchanged
from tests.faults.cluster import Cluster
from tests.faults.generator import PROGRAM_SETTINGS, generate, workload
from tests.faults.ledger import Ledger
from tests.system import run_cli

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1800)]


@contextlib.asynccontextmanager
async def streaming(cluster: Cluster):
    """The processes started, the traffic flowing while the block runs (the faults); then the
    stream ends and the ledger is handed over for checking."""
    await asyncio.gather(*(cluster.add(s) for s in ("ingest", "scoring", "badges")))
    ledger = Ledger()
    done = asyncio.Event()

    def targets(service: str) -> list[str]:
        return [p.url for p in cluster.of(service)]

    stream = asyncio.create_task(generate(workload(), ledger, targets, done))
    try:
        yield ledger
    finally:
        done.set()
        await stream


async def restart(cluster: Cluster, service: str, *, graceful: bool = False) -> None:
    victim = cluster.live(service)[0]
    if service in GROUPS:
        await cluster.wait_busy(service)  # events to apply: a batch in hand, most likely
    if graceful:
        code = await cluster.terminate(victim)
        assert code == 0, victim.log_tail()
    else:
        await cluster.kill(victim)
    await cluster.start(victim)


async def replay_changes_nothing(cluster: Cluster, before) -> None:
    """`creator-activity replay` finds nothing to apply; the whole log applied again from the
    start (floors to 0, markers gone; on Kafka the relay publishes it all again) changes
    nothing."""
    env = {f"CREATOR_ACTIVITY_{k.upper()}": v for k, v in PROGRAM_SETTINGS.items()}
    for group in GROUPS:
        code, output = await run_cli(cluster.database_url, "replay", "--group", group, **env)
        assert code == 0, output
        assert f"{group}: 0 events applied from the log" in output, output
    await cluster.sql(
        "UPDATE consumer_positions SET position = 0",
        "DELETE FROM processed_events",
        "UPDATE relay_positions SET position = 0",
    )
    await unchanged(cluster, before)


@pytest.mark.parametrize("bus", ["embedded", "kafka"])
async def test_crashes_restarts_and_rebalances(bus, cluster_of, fault_postgres):
    cluster = await cluster_of(bus)
    async with streaming(cluster) as ledger:
        # ingest killed with requests in flight, then stopped gracefully; clients retry
        await ledger.wait_for_events(40)
        await restart(cluster, "ingest")
        await ledger.wait_for_events(80)
        await restart(cluster, "ingest", graceful=True)
        # consumers killed mid-stream (a batch in hand, most likely): each group killed twice,
        # here alone and below one of three
        for n, service in enumerate(("scoring", "badges")):
            await ledger.wait_for_events(120 + 40 * n)
            await restart(cluster, service)
        # two, then three processes of each group: rebalances under load
        await ledger.wait_for_events(240)
        await asyncio.gather(cluster.add("scoring"), cluster.add("badges"))
        await ledger.wait_for_events(300)
        await asyncio.gather(cluster.add("scoring"), cluster.add("badges"))
        # one of three killed: the others take its partitions, then it comes back
        await ledger.wait_for_events(340)
        await asyncio.gather(restart(cluster, "scoring"), restart(cluster, "badges"))
        await ledger.wait_for_events(400)
    assert ledger.connection_errors > 0  # the clients did see ingest go away
    before = await check(cluster, ledger, fault_postgres)
    await replay_changes_nothing(cluster, before)


@pytest.mark.parametrize("bus", ["embedded", "kafka"])
async def test_database_stops(bus, cluster_of, fault_postgres):
    cluster = await cluster_of(bus)
    async with streaming(cluster) as ledger:
        for at in (100, 300):
            await ledger.wait_for_events(at)
            seen = ledger.unavailable
            await asyncio.to_thread(fault_postgres.stop)
            try:
                # down until the clients have been told 503 a few times and /readyz says so
                await ledger.wait_for_unavailable(seen + 5)
                ready = await cluster.get("ingest", "/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.headers["retry-after"] == "1"
            finally:
                await asyncio.to_thread(fault_postgres.start)
        await ledger.wait_for_events(400)
    await check(cluster, ledger, fault_postgres)


async def test_the_broker_loses_its_data(cluster_of, fault_postgres, fault_broker):
    """Tansu keeps nothing: restarted, it has lost every topic, message and committed offset.
    The relays notice, create the topics again and publish their outboxes again from the
    start; the groups apply what the topic lost from the log; the copies change nothing."""
    cluster = await cluster_of("kafka")
    async with streaming(cluster) as ledger:
        await ledger.wait_for_events(150)
        await fault_broker.restart()
        await ledger.wait_for_events(350)  # the stream goes on over the empty broker
    # lag 0 from the log, every projection as in the clean run, the feed complete
    projections = await check(cluster, ledger, fault_postgres, rewards_topic=False)
    # What the relays record is a position in their outbox (the log's seq, the rewards'
    # feed_seq), not a broker offset: after the loss it stands at the outbox's end again.
    # (a relay that noticed the loss late may still be publishing again: given a minute)
    ends = await cluster.fetch(
        "SELECT (SELECT max(seq) FROM events), (SELECT max(feed_seq) FROM badges_rewards)"
    )
    expected = {cluster.events_topic: ends[0][0], cluster.rewards_topic: ends[0][1]}
    deadline = time.monotonic() + 60
    for _ in range(120):
        positions = dict(await cluster.fetch("SELECT topic, position FROM relay_positions"))
        if positions == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert positions == expected
    # The broker offsets the events relay recorded started again at 0 on the empty broker: in
    # each partition, the last offset the new broker holds (not the lost broker's numbering).
    recorded = dict(
        await cluster.fetch(
            "SELECT partition, acked_offset FROM relay_offsets"
            f" WHERE topic = '{cluster.events_topic}'"
        )
    )
    assert await last_offsets(cluster.bootstrap, cluster.events_topic, recorded) == recorded
    # and every process is ready again (its bus check finds the topics)
    for process in cluster.processes:
        await cluster.wait_ready(process, within=60)
    # and the rewards topic has every reward, those published before the loss too
    reward_ids = {v[0] for v in projections.rewards.values()}
    on_topic = await topic_ids(cluster.bootstrap, cluster.rewards_topic, reward_ids)
    assert reward_ids - set(on_topic) == set()
