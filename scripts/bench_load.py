"""The benchmark's load generator and its bare limits, each run in a process of its own.

`start(job)` spawns a process that prepares its work (events made and encoded, rows built)
before any clock starts, says "ready", waits for "go", runs, and sends back its figures. The
server under test is another process (`creator-activity serve`), so the client's CPU is never
counted as the server's, and the other way round.

The HTTP client is a few lines over asyncio streams (keep-alive HTTP/1.1, bodies encoded in
advance): a full client library would spend more CPU per request than the server it measures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import sys
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_events import Workload, batches, log_rows  # noqa: E402

COLUMNS = ("event_id", "content_hash", "type", "time", "source", "creator_id", "data", "attributes")
UNNEST_INSERT = (
    "INSERT INTO {table} (event_id, content_hash, type, time, source, creator_id, data,"
    " attributes) SELECT * FROM unnest($1::varchar[], $2::bytea[], $3::varchar[],"
    " $4::timestamptz[], $5::varchar[], $6::varchar[], $7::jsonb[], $8::jsonb[])"
    " ON CONFLICT (source, event_id) DO NOTHING"
)
SINGLE_INSERT = (
    "INSERT INTO {table} (event_id, content_hash, type, time, source, creator_id, data,"
    " attributes) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)"
    " ON CONFLICT (source, event_id) DO NOTHING"
)


@dataclass
class Figures:
    """What a load or limit process sends back."""

    started: float = 0.0  # time.monotonic(): the clock is the machine's, the same in every process
    ended: float = 0.0
    count: int = 0  # events, requests or rows done
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    duplicates: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    max_rss_mb: float = 0.0
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


class Job:
    """A process that prepares, waits for `go`, runs and reports."""

    def __init__(self, kind: str, **spec: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.parent, child = context.Pipe()
        self.process = context.Process(target=_main, args=(kind, spec, child), daemon=True)
        self.process.start()
        self.pid = self.process.pid

    async def ready(self, within: float = 600) -> None:
        message = await self._receive(within)
        if message[0] != "ready":
            raise RuntimeError(f"load process failed while preparing: {message[1]}")

    def go(self) -> None:
        self.parent.send("go")

    async def result(self, within: float) -> Figures:
        message = await self._receive(within)
        if message[0] != "done":
            raise RuntimeError(f"load process failed: {message[1]}")
        return message[1]

    async def _receive(self, within: float):
        deadline = time.monotonic() + within
        while not self.parent.poll():
            if not self.process.is_alive():
                raise RuntimeError(f"load process died (exit code {self.process.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError("the load process did not answer in time")
            await asyncio.sleep(0.05)
        return self.parent.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


def _main(kind: str, spec: dict, pipe) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        try:
            run = runner.run(PREPARE[kind](**spec))
            pipe.send(("ready", None))
            if pipe.recv() != "go":
                return
            figures = runner.run(run())
            figures.max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            pipe.send(("done", figures))
        except BaseException:
            pipe.send(("failed", traceback.format_exc()[-3000:]))


# --- HTTP ------------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; requests are sent whole, answers read by length."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def post_request(host: str, port: int, key: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _drive(
    host: str, port: int, requests: list[bytes], concurrency: int, events_per_request: list[int]
) -> Figures:
    figures = Figures()
    statuses: Counter[str] = Counter()
    pending = iter(range(len(requests)))

    async def client() -> None:
        connection = Connection(host, port)
        try:
            for index in pending:
                started = time.perf_counter()
                try:
                    status, body = await connection.send(requests[index])
                except (OSError, asyncio.IncompleteReadError) as exc:
                    statuses[type(exc).__name__] += 1
                    connection.close()
                    continue
                figures.latencies_ms.append((time.perf_counter() - started) * 1000)
                statuses[str(status)] += 1
                if status == 202:
                    answer = orjson.loads(body)
                    figures.accepted += answer["accepted"]
                    figures.duplicates += answer["duplicates"]
                elif status >= 300 and statuses[str(status)] <= 3:
                    statuses[f"{status}: {body[:160].decode(errors='replace')}"] += 1
        finally:
            connection.close()

    figures.started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    figures.ended = time.monotonic()
    figures.count = sum(events_per_request)
    figures.statuses = dict(statuses)
    return figures


async def _drive_at_rate(
    host: str, port: int, requests: list[bytes], rate: float, max_connections: int = 64
) -> Figures:
    """Open loop: request i is due at start + i / rate, whether or not earlier ones have been
    answered (a new connection when none is free, up to `max_connections`, then it waits for
    one); its latency counts from when it was due, so a slow server is not hidden by clients
    that wait for it (coordinated omission)."""
    figures = Figures()
    statuses: Counter[str] = Counter()
    free: list[Connection] = []
    opened: list[Connection] = []
    slots = asyncio.Semaphore(max_connections)

    async def one(request: bytes, due: float) -> None:
        async with slots:
            await send(request, due)

    async def send(request: bytes, due: float) -> None:
        if free:
            connection = free.pop()
        else:
            connection = Connection(host, port)
            opened.append(connection)
        try:
            status, body = await connection.send(request)
        except (OSError, asyncio.IncompleteReadError) as exc:
            statuses[type(exc).__name__] += 1
            connection.close()
            return
        figures.latencies_ms.append((time.perf_counter() - due) * 1000)
        statuses[str(status)] += 1
        if status >= 300 and statuses[str(status)] <= 3:
            statuses[f"{status}: {body[:160].decode(errors='replace')}"] += 1
        free.append(connection)

    figures.started = time.monotonic()
    start = time.perf_counter()
    tasks = []
    for index, request in enumerate(requests):
        due = start + index / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*tasks)
    figures.ended = time.monotonic()
    figures.count = len(requests)
    figures.statuses = dict(statuses)
    figures.extra["connections"] = len(opened)
    for connection in opened:
        connection.close()
    return figures


def get_request(host: str, port: int, key: str, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n\r\n"
    ).encode()


async def prepare_reads(
    host: str, port: int, key: str, paths: list[str], concurrency: int, rate: float | None = None
):
    """GETs of `paths`: from `concurrency` clients each sending its next one when answered, or
    (given a `rate`) one every 1/rate seconds, open loop."""
    requests = [get_request(host, port, key, path) for path in paths]

    async def run() -> Figures:
        if rate:
            return await _drive_at_rate(host, port, requests, rate)
        return await _drive(host, port, requests, concurrency, [1] * len(requests))

    return run


def _workload(prefix: str, creators: int, seed: int, end: str) -> Workload:
    return Workload(prefix, creators, seed, datetime.fromisoformat(end))


async def prepare_batches(
    host: str,
    port: int,
    key: str,
    prefix: str,
    creators: int,
    seed: int,
    end: str,
    events: int,
    batch_size: int,
    concurrency: int,
    skip: int = 0,
):
    """Batches of realistic events (JSON arrays), from `concurrency` connections."""
    workload = _workload(prefix, creators, seed, end)
    stream = workload.events(events)
    bodies = [orjson.dumps(batch) for batch in batches(stream, batch_size)][skip:]
    sizes = [min(batch_size, events - i * batch_size) for i in range(skip, skip + len(bodies))]
    requests = [post_request(host, port, key, body, "application/json") for body in bodies]
    del bodies

    async def run() -> Figures:
        return await _drive(host, port, requests, concurrency, sizes)

    return run


async def prepare_singles(
    host: str, port: int, key: str, concurrency: int, events: list[dict] | None = None, **spec
):
    """One event per request (structured mode), from `concurrency` connections: the given
    events, or realistic ones."""
    if events is None:
        workload = _workload(spec["prefix"], spec["creators"], spec["seed"], spec["end"])
        events = list(workload.events(spec["count"]))
    requests = [
        post_request(host, port, key, orjson.dumps(e), "application/cloudevents+json")
        for e in events
    ]

    async def run() -> Figures:
        return await _drive(host, port, requests, concurrency, [1] * len(requests))

    return run


# --- the bare limits ---------------------------------------------------------------------------


async def _limit_rows(prefix: str, creators: int, seed: int, end: str, events: int, size: int):
    workload = _workload(prefix, creators, seed, end)
    return [log_rows(batch) for batch in batches(workload.events(events), size)]


async def _scratch_table(dsn: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f"DROP TABLE IF EXISTS {name}")
        await connection.execute(f"CREATE TABLE {name} (LIKE events INCLUDING ALL)")
    finally:
        await connection.close()


async def _drop(dsn: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f"DROP TABLE IF EXISTS {name}")
    finally:
        await connection.close()


async def prepare_bare_insert(dsn: str, concurrency: int, method: str, rounds: int = 1, **spec):
    """The same rows as ingest would store, into a copy of the events table (its indexes and
    identity): one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` per batch, or one
    binary `COPY` per batch, each its own transaction, from `concurrency` connections.

    `rounds` times, each into a fresh copy: the fastest round is the limit (other work on the
    machine only ever slows a round down), and every round's rate is in `extra`."""
    import asyncpg

    rows = await _limit_rows(**spec)
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)

    async def one_round() -> Figures:
        table = f"bench_limit_{method}_{uuid.uuid4().hex[:6]}"
        await _scratch_table(dsn, table)
        statement = UNNEST_INSERT.format(table=table)
        figures = Figures()
        pending = iter(rows)

        async def writer() -> None:
            async with pool.acquire() as connection:
                for batch in pending:
                    started = time.perf_counter()
                    if method == "insert":
                        await connection.execute(statement, *map(list, zip(*batch, strict=True)))
                    else:
                        await connection.copy_records_to_table(
                            table, records=batch, columns=COLUMNS
                        )
                    figures.latencies_ms.append((time.perf_counter() - started) * 1000)

        figures.started = time.monotonic()
        await asyncio.gather(*(writer() for _ in range(concurrency)))
        figures.ended = time.monotonic()
        figures.count = sum(len(batch) for batch in rows)
        await _drop(dsn, table)
        return figures

    async def run() -> Figures:
        done = [await one_round() for _ in range(rounds)]
        await pool.close()
        best = max(done, key=lambda figures: figures.rate)
        best.extra = {f"round {i}": figures.rate for i, figures in enumerate(done, 1)}
        return best

    return run


async def prepare_bare_single(dsn: str, concurrency: int, **spec):
    """One row per transaction (`INSERT … VALUES … ON CONFLICT DO NOTHING`), from
    `concurrency` connections: what one event per request costs at least."""
    import asyncpg

    rows = [row for batch in await _limit_rows(**spec) for row in batch]
    table = f"bench_limit_single_{uuid.uuid4().hex[:6]}"
    await _scratch_table(dsn, table)
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    statement = SINGLE_INSERT.format(table=table)

    async def run() -> Figures:
        figures = Figures()
        pending = iter(rows)

        async def writer() -> None:
            async with pool.acquire() as connection:
                for row in pending:
                    started = time.perf_counter()
                    await connection.execute(statement, *row)
                    figures.latencies_ms.append((time.perf_counter() - started) * 1000)

        figures.started = time.monotonic()
        await asyncio.gather(*(writer() for _ in range(concurrency)))
        figures.ended = time.monotonic()
        figures.count = len(rows)
        await pool.close()
        await _drop(dsn, table)
        return figures

    return run


async def prepare_bare_kafka(bootstrap: str, partitions: int, **spec):
    """The same events as bus messages: produced (acks=all, keyed by creator) and consumed at
    once, on a fresh topic of the same broker; rate = messages / (first send → last received)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    workload = _workload(spec["prefix"], spec["creators"], spec["seed"], spec["end"])
    messages = [
        (e["data"]["creator_id"].encode(), orjson.dumps({"v": 1, "seq": i, **e}))
        for i, e in enumerate(workload.events(spec["events"]), start=1)
    ]
    topic = f"bench-limit-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        await consumer.getmany(timeout_ms=200)

    async def run() -> Figures:
        figures = Figures()
        received = 0

        async def consume() -> None:
            nonlocal received
            while received < len(messages):
                batch = await consumer.getmany(timeout_ms=200, max_records=1000)
                received += sum(len(records) for records in batch.values())

        figures.started = time.monotonic()
        consuming = asyncio.create_task(consume())
        for start in range(0, len(messages), 1000):
            futures = [
                await producer.send(topic, value, key=key)
                for key, value in messages[start : start + 1000]
            ]
            await asyncio.gather(*futures)
        figures.extra["produced_s"] = time.monotonic() - figures.started
        await asyncio.wait_for(consuming, 600)
        figures.ended = time.monotonic()
        figures.count = len(messages)
        await producer.stop()
        await consumer.stop()
        return figures

    return run


PREPARE = {
    "batches": prepare_batches,
    "singles": prepare_singles,
    "bare_insert": prepare_bare_insert,
    "bare_single": prepare_bare_single,
    "bare_kafka": prepare_bare_kafka,
    "reads": prepare_reads,
}


def voucher_posts(creators: list[str], certified_at: datetime) -> list[dict]:
    """Each creator's first qualifying post, an hour after its certification."""
    when = (certified_at + timedelta(hours=1)).astimezone(UTC).isoformat()
    text = "今天聊聊回购市场的流动性压力,以及它对加密资产价格的影响和后续的政策走向分析。" * 2
    return [
        {
            "id": f"{creator}-first-post",
            "type": "post.created",
            "time": when,
            "source": "square",
            "specversion": "1.0",
            "data": {
                "creator_id": creator,
                "post_id": f"{creator}-p1",
                "text": text,
                "image_count": 0,
                "kind": "original",
            },
        }
        for creator in creators
    ]
