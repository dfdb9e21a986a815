"""A relay that starts after the broker lost its data still notices the loss: what the broker
acked is recorded in the database (`relay_offsets`), not only in the process it was acked to.
(A real broker that loses its data looks the same: topics created again, offsets from 0.)"""

from __future__ import annotations

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
