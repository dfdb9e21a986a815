"""A relay that starts after the broker lost its data still notices the loss: what the broker
acked is recorded in the database (`relay_offsets`), not only in the process it was acked to.
(A real broker that loses its data looks the same: topics created again, offsets from 0.)"""

from __future__ import annotations

import asyncio
import signal

import pytest

from shared.db import to_asyncpg_url
from tests.conftest import make_settings, running
from tests.faults.checker import topic_ids
from tests.test_rewards import issue, slot, voucher, wait_until_published

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


async def test_a_relay_started_after_the_loss_publishes_its_outbox_again(
    fault_postgres, fault_broker
):
    url = to_asyncpg_url(await fault_postgres.create_database())
    settings = make_settings("kafka", fault_broker.bootstrap)
    before = [voucher(f"c-{n}") for n in range(6)]
    async with running(settings, url, ("badges",)) as system:
        await issue(system, *before)
        await wait_until_published(system)
        # one more, not yet published when the process goes away
        await system.runtime.stop_workers()
        later = slot("c-0", "2026-11")  # c-0's partition: published before the loss
        await issue(system, later)

    await fault_broker.restart()  # the broker loses every topic and offset
    # A new process: it knows nothing of the old broker but what the database recorded. Its
    # first batch (the later reward) is acked at offset 0 where the old broker had acked one.
    async with running(settings, url, ("badges",)) as system:
        await wait_until_published(system)
        expected = {r.id for r in [*before, later]}
        on_topic = await topic_ids(settings.kafka_bootstrap, settings.kafka_rewards_topic, expected)
        assert set(on_topic) == expected  # those published before the loss too


async def test_a_batch_sent_as_the_broker_goes_away_is_published_once_it_is_back(
    fault_postgres, fault_broker, publish_timeout_ms
):
    """A batch in flight when the broker dies is published to the new one, with what it lost.
    (The relay bounds its wait for acks, `kafka_publish_timeout_ms`: in one fault-suite run the
    rewards relay waited forever on aiokafka after the broker went away, aio-libs/aiokafka#1101.
    This scenario did not reproduce that wait without the bound; it checks the recovery.)"""
    url = to_asyncpg_url(await fault_postgres.create_database())
    settings = make_settings(
        "kafka", fault_broker.bootstrap, kafka_publish_timeout_ms=publish_timeout_ms
    )
    async with running(settings, url, ("badges",)) as system:
        await issue(system, voucher("c-0"))
        await wait_until_published(system)
        fault_broker.process.send_signal(signal.SIGSTOP)  # it takes requests, answers none
        later = [voucher(f"c-{n}") for n in range(1, 7)]
        await issue(system, *later)
        await asyncio.sleep(2)  # the relay has sent them and waits for the acks
        fault_broker.process.kill()  # their connection closes with the requests in flight
        fault_broker.process.wait()
        await asyncio.to_thread(fault_broker.start)  # empty: it lost c-0 too
        await wait_until_published(system, within=60)
        expected = {r.id for r in [voucher("c-0"), *later]}
        on_topic = await topic_ids(settings.kafka_bootstrap, settings.kafka_rewards_topic, expected)
        assert set(on_topic) == expected


@pytest.fixture
def publish_timeout_ms() -> int:
    return 3_000
