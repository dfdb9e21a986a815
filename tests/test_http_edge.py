"""The HTTP layer at its edges: slow clients, a database that is away or saturated, the
connection timeouts, errors on every path, NUL characters, readiness, metrics, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
import uvicorn
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import text

from services.runtime import CONSUMER_GROUPS, Runtime
from shared import db
from shared.bus import create_bus
from shared.logs import configure_logging
from shared.web import Context, SessionDep
from tests.brokers import HOST, free_port
from tests.conftest import make_settings
from tests.system import ADMIN, ADMIN_KEY, post_created

MONTH = "/v1/creators/c-1/months/2026-11"


@asynccontextmanager
async def served(app):
    """The app behind a real uvicorn server on a free port (in this event loop)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}", port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def trickle(port: int, stop: asyncio.Event) -> None:
    """A client that sends its headers, announces a large body, then sends a byte at a time."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(
            (
                "POST /v1/events HTTP/1.1\r\n"
                f"Host: {HOST}\r\n"
                f"Authorization: Bearer {ADMIN_KEY}\r\n"
                "Content-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n["
            ).encode()
        )
        await writer.drain()
        while not stop.is_set():
            writer.write(b" ")
            await writer.drain()
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass
    finally:
        writer.close()


@pytest.mark.parametrize("settings_overrides", [{"db_pool_size": 2, "db_pool_timeout_s": 3}])
async def test_slow_clients_do_not_starve_the_pool(system):
    """Twelve clients trickling their bodies (three times the pool of 2 + 2 overflow) while a
    normal POST /v1/events goes through at once: no connection is held during a body read."""
    app = system.runtime.create_app(manage_lifecycle=False)
    async with served(app) as (url, port):
        stop = asyncio.Event()
        slow = [asyncio.create_task(trickle(port, stop)) for _ in range(12)]
        try:
            await asyncio.sleep(1)  # every slow client authenticated and waits on its body
            engine = system.runtime.context.engine
            # the pool is 2 + 2 overflow; at most a background worker's poll may hold one
            assert engine.pool.checkedout() < 4, "the slow clients hold the pool"
            async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=10) as client:
                started = time.monotonic()
                response = await client.post("/v1/events", json=[post_created("c-9")])
                elapsed = time.monotonic() - started
                assert response.status_code == 202, response.text
                assert elapsed < 1.5, f"a normal POST waited {elapsed:.1f}s for a connection"
                assert (await client.get("/v1/admin/consumers")).status_code == 200
        finally:
            stop.set()
            await asyncio.gather(*slow, return_exceptions=True)


@pytest.fixture
async def unreachable_database():
    """An app whose database is a closed port: the database is down."""
    settings = make_settings("embedded", None, db_connect_timeout_s=2)
    engine = db.create_engine(
        f"postgresql+asyncpg://nobody:secret@{HOST}:{free_port()}/x", settings
    )
    sessionmaker = db.create_sessionmaker(engine)
    runtime = Runtime(settings)
    runtime.context = Context(
        settings, engine, sessionmaker, create_bus(settings, sessionmaker), CONSUMER_GROUPS
    )
    app = runtime.create_app(manage_lifecycle=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        yield client
    await engine.dispose()


async def test_database_down_is_503_with_retry_after(unreachable_database):
    client = unreachable_database
    for method, path, body in [
        ("POST", "/v1/events", post_created()),
        ("GET", MONTH, None),
        ("GET", "/v1/admin/consumers", None),
    ]:
        response = await client.request(method, path, json=body, headers=ADMIN)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["retry-after"] == "5"
        assert response.json() == {
            "error": "unavailable",
            "message": "the database is unavailable; retry later",
        }


async def test_readyz_names_the_database_when_it_is_down(unreachable_database):
    response = await unreachable_database.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable"
    assert body["details"] == [{"component": "database", "status": "down"}]
    assert "database" in body["message"]
    for leak in ("Connect call failed", "Error", HOST, "secret"):
        assert leak not in response.text  # the exception goes to the log, not to the client


async def test_readyz_names_the_bus_when_it_is_down(system, monkeypatch, caplog):
    async def broken() -> None:
        raise RuntimeError("broker at 10.1.2.3:9092 refused the connection")

    monkeypatch.setattr(system.runtime.context.bus, "check", broken)
    response = await system.client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["details"] == [{"component": "bus", "status": "down"}]
    assert "10.1.2.3" not in response.text
    assert any("10.1.2.3" in str(getattr(r, "error", "")) for r in caplog.records)


async def test_bus_away_during_a_request_is_503_with_retry_after(system, monkeypatch):
    async def broker_away(groups):
        raise KafkaConnectionError("Unable to bootstrap from 10.1.2.3:9092")

    monkeypatch.setattr(system.runtime.context.bus, "lag", broker_away)
    response = await system.client.get("/v1/admin/consumers", headers=ADMIN)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "error": "unavailable",
        "message": "the bus is unavailable; retry later",
    }


@pytest.mark.parametrize("settings_overrides", [{"db_pool_size": 1, "db_pool_timeout_s": 0.3}])
async def test_pool_exhausted_is_503_with_retry_after(system):
    await system.runtime.stop_workers()  # the test holds the whole pool (1 + 1 overflow)
    engine = system.runtime.context.engine
    async with AsyncExitStack() as held:
        for _ in range(2):
            await held.enter_async_context(engine.connect())
        for method, path, body in [("POST", "/v1/events", post_created()), ("GET", MONTH, None)]:
            response = await system.client.request(method, path, json=body, headers=ADMIN)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "5"
            assert response.json()["error"] == "unavailable"
    assert (await system.client.get(MONTH, headers=ADMIN)).status_code == 404  # back at once


async def test_connections_the_server_dropped_fail_one_request_each_way_then_none(system):
    """No ping per checkout: after the server drops every connection (a restart, a failover),
    the first request on a dropped one is a 503 (never a 500), and the pool is renewed at
    once, so the next requests succeed. Both ways into the database: SQLAlchemy's statements
    (the ingest) and the driver's (the key lookup and the reads)."""
    await system.runtime.stop_workers()  # only the requests use the pool
    engine = system.runtime.context.engine
    for method, path, body, fine in [
        ("GET", MONTH, None, 404),
        ("POST", "/v1/events", post_created(), 202),
    ]:
        for _ in range(3):  # several pooled connections, each with a key lookup done
            assert (await system.client.get(MONTH, headers=ADMIN)).status_code == 404
        assert engine.pool.checkedin() >= 1
        async with engine.connect() as other:  # the server drops every other connection
            await other.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        first = await system.client.request(method, path, json=body, headers=ADMIN)
        assert first.status_code in (503, fine), first.text
        if first.status_code == 503:
            assert first.json()["error"] == "unavailable"
        for _ in range(3):
            again = await system.client.request(method, path, json=body, headers=ADMIN)
            assert again.status_code in (fine, 200), again.text  # 200: the event's duplicate


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "db_statement_timeout_ms": 300,
            "db_lock_timeout_ms": 200,
            "db_idle_in_transaction_timeout_ms": 3456,
        }
    ],
)
async def test_every_connection_has_timeouts_and_hitting_one_is_503(system):
    context = system.runtime.context
    async with context.sessionmaker() as session:
        shown = [
            await session.scalar(text(f"SHOW {name}"))
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        ]
    assert shown == ["300ms", "200ms", "3456ms"]

    app = system.runtime.create_app(manage_lifecycle=False)

    @app.get("/test/slow")
    async def slow(session: SessionDep) -> None:
        await session.execute(text("SELECT pg_sleep(5)"))

    @app.get("/test/locked")
    async def locked(session: SessionDep) -> None:
        await session.execute(text("SELECT pg_advisory_xact_lock(4242)"))

    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        context.engine.connect() as holder,
    ):
        await holder.execute(text("SELECT pg_advisory_xact_lock(4242)"))  # held until the end
        for path in ("/test/slow", "/test/locked"):
            started = time.monotonic()
            response = await client.get(path)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "5"
            assert time.monotonic() - started < 3


async def test_a_bug_is_a_500_in_the_error_shape_not_a_503(system):
    app = system.runtime.create_app(manage_lifecycle=False)

    @app.get("/test/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    @app.get("/test/bad-sql")
    async def bad_sql(session: SessionDep) -> None:
        await session.execute(text("SELECT 1 / 0"))  # a bug in a query is no outage either

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/test/bug", "/test/bad-sql"):
            response = await client.get(path)
            assert response.status_code == 500, response.text
            assert response.json() == {"error": "internal_error", "message": "internal error"}


async def test_unknown_routes_and_methods_answer_the_error_shape(system):
    response = await system.client.get("/v1/nothing-here", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "message": "no such route: GET /v1/nothing-here",
    }

    response = await system.client.delete("/v1/events", headers=ADMIN)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert set(response.json()) == {"error", "message"}
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/creators/a%00b/months/2026-10",
        "/v1/creators/c-1/months/2026-10%00",
        "/v1/creators/c-1/months/2026-10?x=a%00b",
        "/v1/nothing%00here",
        "/v1/rewards?creator_id=%00",
    ],
)
async def test_nul_in_the_path_or_query_is_422(system, path):
    response = await system.client.get(path, headers=ADMIN)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    assert body["details"][0]["msg"] == "NUL characters are not allowed"


async def test_nul_in_a_path_is_422_through_a_real_server(system):
    """Through uvicorn's own parsing of the request line, not only the test transport."""
    app = system.runtime.create_app(manage_lifecycle=False)
    async with served(app) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
            response = await client.get("/v1/creators/a%00b/months/2026-10")
    assert response.status_code == 422
    assert response.json()["error"] == "validation_failed"


async def test_metrics_scrapes_reuse_the_lag_for_a_few_seconds(system, monkeypatch):
    bus = system.runtime.context.bus
    computed = []
    real_lag = bus.lag

    async def counted_lag(groups):
        computed.append(groups)
        return await real_lag(groups)

    monkeypatch.setattr(bus, "lag", counted_lag)
    for _ in range(5):
        response = await system.client.get("/metrics")
        assert response.status_code == 200
        assert 'creator_activity_consumer_lag{group="scoring"}' in response.text
    assert len(computed) == 1  # lag_cache_seconds = 5: one computation for five scrapes
    # the admin endpoint stays exact: it is what "caught up" is judged by
    await system.client.get("/v1/admin/consumers", headers=ADMIN)
    assert len(computed) == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("log_format", "stream", "json_lines"),
    [
        ("auto", io.StringIO(), True),
        ("auto", _Terminal(), False),
        ("json", _Terminal(), True),
        ("text", io.StringIO(), False),
    ],
    ids=["auto-pipe", "auto-terminal", "json", "text"],
)
def test_logs_are_readable_on_a_terminal_and_json_otherwise(
    restore_logging, log_format, stream, json_lines
):
    configure_logging("INFO", log_format, stream)
    logging.getLogger("shared.test").warning("not ready", extra={"component": "database"})
    line = stream.getvalue().strip()
    if json_lines:
        record = json.loads(line)
        assert record["message"] == "not ready"
        assert record["component"] == "database"
        assert record["level"] == "warning"
    else:
        assert line.endswith("WARNING shared.test: not ready component=database")
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
