"""Guarantees that need whole processes: SIGTERM finishes the batch in hand (nothing lost,
nothing applied twice), and the last process using the embedded PostgreSQL stops it."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import httpx
import psutil
import pytest

from tests.brokers import free_port
from tests.conftest import make_settings, running
from tests.system import ADMIN, ADMIN_KEY, CLI, post_created, wait_until_ready

_ids = itertools.count(1)


def _serve_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")}
    env.update(
        CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
        CREATOR_ACTIVITY_CONSUMER_POLL_INTERVAL_MS="20",
    )
    env.update({f"CREATOR_ACTIVITY_{k.upper()}": str(v) for k, v in settings.items()})
    return env


async def start_serve(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
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
    return process, f"http://127.0.0.1:{port}"


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM; the process's log once it has exited."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    return stderr.decode()


# --- SIGTERM with a batch and requests in flight ------------------------------------------------


async def keep_posting(client: httpx.AsyncClient, acknowledged: list[str]) -> None:
    """Batches of posts until the server goes away; the ids of every event answered 202."""
    while True:
        batch = [post_created(f"c-{n % 7}", event_id=f"term-{next(_ids)}") for n in range(40)]
        try:
            response = await client.post("/v1/events", json=batch)
        except httpx.TransportError:
            return  # the server stopped listening: these were never acknowledged
        if response.status_code == 202:
            acknowledged += [e["id"] for e in batch]
        elif response.status_code != 503:
            raise AssertionError(response.text)


@pytest.mark.usefixtures("bus")
async def test_sigterm_with_batches_and_requests_in_flight_loses_and_doubles_nothing(
    bus, database_url, request
):
    bootstrap = request.getfixturevalue("kafka_bootstrap") if bus == "kafka" else None
    settings = make_settings(bus, bootstrap, consumer_batch_size=25, consumer_batch_sizes={})
    env = _serve_env(
        database_url=database_url.replace("+asyncpg", ""),
        consumer_batch_size=25,
        consumer_batch_sizes="{}",
    )
    if bootstrap:
        env.update(
            _serve_env(
                kafka_bootstrap=bootstrap,
                kafka_events_topic=settings.kafka_events_topic,
                kafka_rewards_topic=settings.kafka_rewards_topic,
                kafka_group_prefix=settings.kafka_group_prefix,
                kafka_partitions=settings.kafka_partitions,
            )
        )
    process, url = await start_serve(env)
    acknowledged: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=30) as client:
            await wait_until_ready(client, process, within=60)
            posters = [asyncio.create_task(keep_posting(client, acknowledged)) for _ in range(3)]
            # SIGTERM once events are accepted and the consumers are behind: batches in hand,
            # requests in flight
            deadline = time.monotonic() + 60
            while True:
                groups = (await client.get("/v1/admin/consumers")).json()["groups"]
                if len(acknowledged) >= 400 and all(g["lag"] > 0 for g in groups):
                    break
                assert time.monotonic() < deadline, groups
                assert not any(p.done() for p in posters), [p.exception() for p in posters]
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            log = await stop(process)
            await asyncio.gather(*posters)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, log[-3000:]
    for group in ("scoring", "badges"):
        assert f'"message": "consumer stopped", "group": "{group}"' in log

    # what was left is applied by the next process; then compare with the log
    async with running(settings, database_url) as system:
        await system.wait_until_processed(within=120)
        stored = await system.sql("SELECT event_id FROM events WHERE type = 'post.created'")
        stored_ids = [r["event_id"] for r in stored]
        assert set(acknowledged) <= set(stored_ids)  # every 202 is in the log
        assert len(stored_ids) == len(set(stored_ids))  # once
        # badges adds each post to its creator's count: an event applied twice shows
        per_creator = await system.sql(
            "SELECT e.creator_id, count(*) AS events, p.posts FROM events e"
            " JOIN badges_creator_posts p USING (creator_id)"
            " WHERE e.type = 'post.created' GROUP BY e.creator_id, p.posts"
        )
        assert len(per_creator) == 7
        assert all(r["events"] == r["posts"] for r in per_creator), [dict(r) for r in per_creator]
        [scoring] = await system.sql("SELECT count(*) AS n FROM scoring_posts")
        assert scoring["n"] == len(stored_ids)


# --- the last process stops the embedded PostgreSQL -----------------------------------------------


def _server_pid(pgdata) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


async def test_the_last_process_stops_the_embedded_postgresql(tmp_path):
    """Two processes on one data directory: the server lives while either runs, stops with
    the last; a killed process (it never signs off) does not keep it alive."""
    env = _serve_env(data_dir=str(tmp_path))
    pgdata = tmp_path / "pgdata"
    processes = []
    try:
        for _ in range(3):  # one after the other: the first one creates the cluster
            process, url = await start_serve(env)
            processes.append((process, url))
            async with httpx.AsyncClient(base_url=url) as client:
                await wait_until_ready(client, process, within=90)
        server = _server_pid(pgdata)
        assert server is not None and psutil.pid_exists(server)

        killed, _ = processes.pop()
        killed.kill()  # never signs off
        await killed.wait()
        first, _ = processes.pop(0)
        log = await stop(first)
        assert first.returncode == 0, log[-2000:]
        last, url = processes[0]
        async with httpx.AsyncClient(base_url=url) as client:  # the server is still there
            assert (await client.get("/readyz")).status_code == 200
        assert psutil.pid_exists(server)

        log = await stop(last)
        assert last.returncode == 0, log[-2000:]
        deadline = time.monotonic() + 30
        while psutil.pid_exists(server) and psutil.Process(server).status() != "zombie":
            assert time.monotonic() < deadline, "the embedded PostgreSQL is still running"
            await asyncio.sleep(0.1)
        assert _server_pid(pgdata) is None
    finally:
        for process, _ in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
