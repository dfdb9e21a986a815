"""Fixtures of the fault suite: its own PostgreSQL and broker (the faults stop them), and the
processes of one scenario. Run the suite alone with `pytest -m faults` (or `pytest tests/faults`);
leave it out with `-m "not faults"`."""

from __future__ import annotations

import pytest

from tests.faults.cluster import Cluster
from tests.faults.infra import Broker, Postgres


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: the fault-injection suite (tests/faults)")


@pytest.fixture(scope="session")
def fault_postgres():
    """A PostgreSQL server for this suite only: stopping it hurts no other test."""
    postgres = Postgres()
    yield postgres
    postgres.close()


@pytest.fixture(scope="session")
def fault_broker():
    """A Tansu broker for this suite only: restarting it hurts no other test."""
    broker = Broker()
    yield broker
    broker.stop()


@pytest.fixture
async def cluster_of(fault_postgres, fault_broker, tmp_path):
    """`await cluster_of(bus)`: a fresh database and no process yet; every process is stopped
    at the end of the test."""
    clusters = []

    async def make(bus: str) -> Cluster:
        cluster = Cluster(
            database_url=await fault_postgres.create_database(),
            bus=bus,
            bootstrap=fault_broker.bootstrap if bus == "kafka" else None,
            logs=tmp_path,
        )
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        await cluster.stop_all()
