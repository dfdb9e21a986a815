"""The real `creator-activity serve` process: start, accept, process, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from tests.brokers import free_port
from tests.conftest import make_settings
from tests.system import ADMIN, ADMIN_KEY, CLI, post_created, wait_until_ready

pytestmark = pytest.mark.usefixtures("bus")


async def test_serve_processes_events_and_stops_gracefully_on_sigterm(bus, database_url, request):
    bootstrap = request.getfixturevalue("kafka_bootstrap") if bus == "kafka" else None
    settings = make_settings(bus, bootstrap)
    env = {
        **os.environ,
        "CREATOR_ACTIVITY_DATABASE_URL": database_url.replace("+asyncpg", ""),
        "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CREATOR_ACTIVITY_CONSUMER_POLL_INTERVAL_MS": "20",
    }
    if bootstrap:
        env.update(
            CREATOR_ACTIVITY_KAFKA_BOOTSTRAP=bootstrap,
            CREATOR_ACTIVITY_KAFKA_EVENTS_TOPIC=settings.kafka_events_topic,
            CREATOR_ACTIVITY_KAFKA_REWARDS_TOPIC=settings.kafka_rewards_topic,
            CREATOR_ACTIVITY_KAFKA_GROUP_PREFIX=settings.kafka_group_prefix,
        )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ADMIN) as client:
            await wait_until_ready(client, process)
            deadline = time.monotonic() + 30
            assert (await client.get("/readyz")).json()["bus"] == bus

            response = await client.post("/v1/events", json=[post_created("c-7") for _ in range(3)])
            assert response.status_code == 202
            while True:
                groups = (await client.get("/v1/admin/consumers")).json()["groups"]
                if all(g["lag"] == 0 for g in groups):
                    break
                assert time.monotonic() < deadline, groups
                await asyncio.sleep(0.1)
            month = (await client.get("/v1/creators/c-7/months/2026-11")).json()
            assert month["posts"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    log = stderr.decode()
    assert '"message": "consumer stopped", "group": "scoring"' in log
    assert '"message": "consumer stopped", "group": "badges"' in log
