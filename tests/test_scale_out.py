"""Scale out: the same code as three processes per consumer group on a six-partition topic gives
the same projections as one process (docs/scaling.md).

The same events go, in the same order, to two databases on the Kafka bus: once with the
consumer groups in the test's own process, once with three `creator-activity scoring` and
three `creator-activity badges` processes sharing the topic's six partitions. Then the month is
settled and paid. Creator-months, near-duplicate verdicts, featured scores, the settlement,
badges and rewards must be identical."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import pytest

from services import supervisor
from services.runtime import ALL, Runtime
from tests.brokers import free_port
from tests.conftest import fresh_database, make_settings
from tests.system import (
    ADMIN,
    ADMIN_KEY,
    CLI,
    System,
    interaction_created,
    post_created,
    wait_until_ready,
)
from tests.test_vouchers import certify

pytestmark = pytest.mark.timeout(900)

MONTH = "2026-10"
START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
CERTIFIED_AT = datetime(2026, 9, 20, tzinfo=UTC)
CREATORS = [f"c-{n:02d}" for n in range(12)]
CERTIFIED = CREATORS[:10]
PROCESSES_PER_GROUP = 3
GROUP_SETTLES_S = 6  # the members join and share the partitions


def _text(rng: random.Random) -> str:
    return "".join(chr(0x4E00 + rng.randrange(0, 3000)) for _ in range(rng.randint(55, 120)))


def month_of_events() -> list[list[dict]]:
    """Batches of a month's events: 12 creators, 32–40 posts each (several eligible), copies of
    other creators' posts, edits, deletions, moderation, interactions and un-likes."""
    rng = random.Random(2026)
    events: list[dict] = []
    posts: list[tuple[str, str, str]] = []
    for creator in CREATORS:
        for n in range(rng.randint(32, 40)):
            post_id = f"{creator}-p{n:02d}"
            when = START + timedelta(days=rng.randrange(28), minutes=rng.randrange(600))
            if posts and rng.random() < 0.08:  # a near-copy of someone's earlier post
                text = rng.choice(posts)[2][:-2] + "。，"
            else:
                text = _text(rng)
            posts.append((creator, post_id, text))
            events.append(
                post_created(creator, post_id, time=when.isoformat(), text=text, event_id=post_id)
            )
    for creator, post_id, _ in rng.sample(posts, 20):
        events.append(
            {
                "id": f"{post_id}-edit",
                "type": "post.updated",
                "time": (START + timedelta(days=29)).isoformat(),
                "data": {
                    "creator_id": creator,
                    "post_id": post_id,
                    "text": _text(rng),
                    "image_count": 1,
                },
            }
        )
    for creator, post_id, _ in rng.sample(posts, 6):
        events.append(
            {
                "id": f"{post_id}-deleted",
                "type": "post.deleted",
                "time": (START + timedelta(days=29, hours=1)).isoformat(),
                "data": {"creator_id": creator, "post_id": post_id},
            }
        )
    for creator, post_id, _ in rng.sample(posts, 6):
        events.append(
            {
                "id": f"{post_id}-moderated",
                "type": "post.moderated",
                "time": (START + timedelta(days=29, hours=2)).isoformat(),
                "data": {
                    "creator_id": creator,
                    "post_id": post_id,
                    "verdict": rng.choice(["removed", "low_quality", "approved"]),
                    "quality_score": 0.8,
                },
            }
        )
    for n in range(400):
        creator, post_id, _ = rng.choice(posts)
        events.append(
            interaction_created(
                creator,
                post_id,
                f"a-{rng.randrange(40)}",
                kind=rng.choice(["like", "comment", "share", "quote"]),
                time=(START + timedelta(days=rng.randrange(29), hours=12)).isoformat(),
                event_id=f"i-{n}",
            )
        )
    rng.shuffle(events)  # arrival order is not event order
    return [events[i : i + 50] for i in range(0, len(events), 50)]


@asynccontextmanager
async def serving(settings, database_url: str, workers: tuple[str, ...]):
    """Every API in the test's process; the workers of `workers` here too (the others run
    elsewhere)."""
    runtime = Runtime(settings, ALL, database_url=database_url, worker_services=workers)
    await runtime.connect()
    runtime.start_workers()
    app = runtime.create_app(manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield System(runtime=runtime, client=client, database_url=database_url)
    await runtime.close()


async def start_process(system: System, command: str) -> asyncio.subprocess.Process:
    """`creator-activity scoring|badges` as a process of its own on the test's database and
    topics (as tests/test_vouchers.py starts its badges processes)."""
    settings = system.runtime.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")},
        "CREATOR_ACTIVITY_DATABASE_URL": system.database_url.replace("+asyncpg", ""),
        "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CREATOR_ACTIVITY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CREATOR_ACTIVITY_KAFKA_EVENTS_TOPIC": settings.kafka_events_topic,
        "CREATOR_ACTIVITY_KAFKA_REWARDS_TOPIC": settings.kafka_rewards_topic,
        "CREATOR_ACTIVITY_KAFKA_GROUP_PREFIX": settings.kafka_group_prefix,
        "CREATOR_ACTIVITY_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "CREATOR_ACTIVITY_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "CREATOR_ACTIVITY_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "CREATOR_ACTIVITY_CONSUMER_BATCH_SIZE": str(settings.consumer_batch_size),
        "CREATOR_ACTIVITY_CONSUMER_BATCH_SIZES": json.dumps(settings.consumer_batch_sizes),
        "CREATOR_ACTIVITY_CONSUMER_FLOOR_INTERVAL_MS": "200",
        "CREATOR_ACTIVITY_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from services.cli import main; sys.argv[0] = 'creator-activity'; main()",
        command,
        "--port",
        str(free_port()),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def run_the_month(system: System) -> None:
    for creator in CERTIFIED:
        await certify(system, creator, CERTIFIED_AT)
    for batch in month_of_events():
        response = await system.post_events(batch)
        assert response.status_code == 202, response.text
    await system.wait_until_processed(within=240)
    settled = await system.client.post(f"/v1/admin/months/{MONTH}/settle", headers=ADMIN)
    assert settled.status_code == 200, settled.text
    await system.wait_until_processed(within=120)


PROJECTIONS = {
    "creator-months": "SELECT creator_id, month, posts, qualifying_posts, active_days,"
    " interactions, quality FROM scoring_creator_months ORDER BY 1, 2",
    "near-duplicates": "SELECT post_id, duplicate_of, deleted, verdict FROM scoring_posts"
    " ORDER BY 1",
    "featured scores": "SELECT post_id, week, quality, engagement, score"
    " FROM scoring_featured_scores ORDER BY 1",
    "settlement": "SELECT creator_id, rank, score, eligible, payout, qualifying_posts"
    " FROM scoring_settlement_entries ORDER BY rank",
    "badges": "SELECT creator_id, kind FROM badges_badges ORDER BY 1, 2",
    "settled months": "SELECT creator_id, month, active FROM badges_settled_months ORDER BY 1",
    "rewards": "SELECT id, creator_id, kind, amount, currency, month FROM badges_rewards"
    " ORDER BY 1",
    "voucher pool": "SELECT cap, issued FROM badges_voucher_pool",
}


async def projections(system: System) -> dict[str, list[tuple]]:
    return {name: [tuple(r) for r in await system.sql(q)] for name, q in PROJECTIONS.items()}


async def test_three_processes_per_group_give_the_projections_of_one(
    database_url, postgres_uri, kafka_bootstrap
):
    # small batches for every group: many batches, interleaved across the processes
    overrides = dict(kafka_partitions=6, consumer_batch_size=40, consumer_batch_sizes={})

    # One process: the groups in the test's own process.
    settings = make_settings("kafka", kafka_bootstrap, **overrides)
    async with serving(settings, database_url, ALL) as system:
        await run_the_month(system)
        alone = await projections(system)

    # Three processes per group: the test's process only accepts events (and relays them).
    settings = make_settings("kafka", kafka_bootstrap, **overrides)
    async with (
        fresh_database(postgres_uri) as other_database,
        serving(settings, other_database, ("ingest",)) as system,
    ):
        processes = [
            await start_process(system, command)
            for command in ("scoring", "badges")
            for _ in range(PROCESSES_PER_GROUP)
        ]
        try:
            await asyncio.sleep(GROUP_SETTLES_S)
            await run_the_month(system)
            shared = await projections(system)
            alive = [p.returncode is None for p in processes]
        finally:
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*(p.wait() for p in processes))
    assert alive == [True] * len(processes) and codes == [0] * len(processes)

    assert alone["settlement"], "the month was settled with ranked creators"
    assert any(r[3] for r in alone["settlement"]), "some creators were eligible"
    assert any(r[1] is not None for r in alone["near-duplicates"]), "copies were found"
    assert {r[2] for r in alone["rewards"]} >= {"new_creator_voucher", "monthly_pool_share"}
    differ = {
        name: sorted(set(shared[name]) ^ set(alone[name]))[:6]
        for name in PROJECTIONS
        if shared[name] != alone[name]
    }
    assert not differ  # the rows of either run that the other lacks


def _connections(process: psutil.Process, port: int, status: str) -> int:
    return sum(
        1 for c in process.net_connections("tcp") if c.laddr.port == port and c.status == status
    )


async def connections_per_web_process(pid: int, port: int, web: int, opened: int) -> list[int]:
    """Once the command's `web` HTTP processes all listen, open `opened` connections at once (as
    a load's clients do) and count, per HTTP process, the connections it accepted."""
    for _ in range(600):
        listening = [
            child
            for child in psutil.Process(pid).children(recursive=True)
            if _connections(child, port, psutil.CONN_LISTEN)
        ]
        if len(listening) == web:
            break
        await asyncio.sleep(0.05)
    streams = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(opened))
    )
    try:
        for _ in range(100):
            counts = [_connections(c, port, psutil.CONN_ESTABLISHED) for c in listening]
            if sum(counts) >= opened:
                break
            await asyncio.sleep(0.05)
        return counts
    finally:
        for _, writer in streams:
            writer.close()


async def niceness(pid: int, children: int) -> dict[str, int]:
    """Each child process's nice value, relative to the command's, once `children` have named
    themselves (a child renices itself before it takes its name; multiprocessing's resource
    tracker has none)."""
    parent = psutil.Process(pid)
    for _ in range(600):
        named = [c for c in parent.children() if c.name().startswith("ca-")]
        if len(named) >= children:
            break
        await asyncio.sleep(0.05)
    return {child.name(): child.nice() - parent.nice() for child in named}


async def test_serve_split_over_processes_processes_events_and_stops_on_sigterm(database_url):
    """`creator-activity serve` with two HTTP processes and each consumer group in two processes
    of its own (one command): it accepts on one port, the kernel spreads the connections over both
    HTTP processes, every group applies each event once, SIGTERM stops all."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")},
        "CREATOR_ACTIVITY_DATABASE_URL": database_url.replace("+asyncpg", ""),
        "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CREATOR_ACTIVITY_CONSUMER_POLL_INTERVAL_MS": "20",
        "CREATOR_ACTIVITY_SERVE_WEB_PROCESSES": "2",
        "CREATOR_ACTIVITY_SERVE_WORKERS_APART": "true",
        "CREATOR_ACTIVITY_SERVE_GROUP_PROCESSES": "2",
    }
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
            await wait_until_ready(client, process, within=90)
            spread = await connections_per_web_process(process.pid, port, web=2, opened=16)
            assert len(spread) == 2 and min(spread) > 0, spread  # both take connections
            # the consumers yield the cores to the clients' requests
            assert await niceness(process.pid, children=6) == {
                "ca-web-0": 0,
                "ca-web-1": 0,
                "ca-scoring-0": 10,
                "ca-scoring-1": 10,
                "ca-badges-0": 10,
                "ca-badges-1": 10,
            }
            with pytest.raises(OSError):  # a second command on the port fails, takes none
                supervisor._hold("127.0.0.1", port)
            for _ in range(4):
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", headers=ADMIN
                ) as one:
                    response = await one.post("/v1/events", json=[post_created("c-7")])
                    assert response.status_code == 202, response.text
            system = System(runtime=None, client=client, database_url=database_url)
            await system.wait_until_processed(within=90)
            assert (await system.month("c-7", "2026-11"))["posts"] == 4
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, stderr.decode()[-2000:]
    log = stderr.decode()
    assert log.count('"message": "consumer stopped", "group": "scoring"') == 2
    assert log.count('"message": "consumer stopped", "group": "badges"') == 2
