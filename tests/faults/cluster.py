"""The system under test as real processes: `creator-activity ingest|scoring|badges`, each a
subprocess on its own port, on the suite's PostgreSQL and (Kafka bus) the suite's broker.

Faults are done to these processes for real: SIGKILL, SIGTERM, start again on the same port.
Each process logs to a file of its own; a failed wait shows the end of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from tests.brokers import free_port
from tests.faults.generator import PROGRAM_SETTINGS
from tests.system import ADMIN, ADMIN_KEY, CLI

# Short waits and retries: faults heal in seconds, not in the defaults' tens of seconds. The
# idle loops (log polling, the Kafka floor keeper) stay at a tenth of a second or more: up to
# seven processes poll at once, and polling every 20 ms cost more CPU than the traffic.
FAST = {
    "CONSUMER_POLL_INTERVAL_MS": "100",
    "CONSUMER_BATCH_WAIT_MS": "100",
    "CONSUMER_RETRY_INITIAL_MS": "50",
    "CONSUMER_RETRY_MAX_MS": "500",
    "CONSUMER_HALT_RETRY_MS": "500",
    "CONSUMER_FLOOR_INTERVAL_MS": "250",
    "CONSUMER_CATCH_UP_AFTER_MS": "3000",
    "DB_CONNECT_TIMEOUT_S": "2",
    "DB_POOL_TIMEOUT_S": "3",
    "UNAVAILABLE_RETRY_AFTER_S": "1",
    "READYZ_TIMEOUT_S": "2",
    "LAG_CACHE_SECONDS": "0",
    "STANDINGS_REFRESH_SECONDS": "0",  # a read after lag 0 is exact
    "KAFKA_SESSION_TIMEOUT_MS": "3000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    "KAFKA_PARTITIONS": "3",
    "LOG_LEVEL": "WARNING",
    "LOG_FORMAT": "json",
}

SERVICES = ("ingest", "scoring", "badges")


@dataclass
class Process:
    service: str
    port: int
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


@dataclass
class Cluster:
    """The processes of one scenario, on one database, one bus."""

    database_url: str  # libpq form
    bus: str  # "embedded" or "kafka"
    bootstrap: str | None
    logs: Path
    processes: list[Process] = field(default_factory=list)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def events_topic(self) -> str:
        return f"events-{self.run}"

    @property
    def rewards_topic(self) -> str:
        return f"rewards-{self.run}"

    def env(self) -> dict[str, str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")}
        settings = {
            "DATABASE_URL": self.database_url,
            "BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            **FAST,
            **{name.upper(): value for name, value in PROGRAM_SETTINGS.items()},
        }
        if self.bus == "kafka":
            settings.update(
                KAFKA_BOOTSTRAP=self.bootstrap,
                KAFKA_EVENTS_TOPIC=self.events_topic,
                KAFKA_REWARDS_TOPIC=self.rewards_topic,
                KAFKA_GROUP_PREFIX=f"{self.run}-",
            )
        environment.update({f"CREATOR_ACTIVITY_{k}": v for k, v in settings.items()})
        return environment

    # --- the processes -----------------------------------------------------------------------

    def of(self, service: str) -> list[Process]:
        return [p for p in self.processes if p.service == service]

    def live(self, service: str) -> list[Process]:
        return [p for p in self.of(service) if p.alive]

    async def add(self, service: str) -> Process:
        """One more process of the service, started and ready."""
        number = len(self.of(service)) + 1
        process = Process(service, free_port(), self.logs / f"{service}-{number}.log")
        self.processes.append(process)
        await self.start(process)
        return process

    async def start(self, process: Process) -> None:
        """Start (again, on its port) and wait until it answers /readyz."""
        assert not process.alive
        process.starts += 1
        with process.log.open("ab") as log:
            log.write(f"--- start {process.starts} ---\n".encode())
            process.process = await asyncio.create_subprocess_exec(
                CLI,
                process.service,
                "--port",
                str(process.port),
                env=self.env(),
                stdout=log,
                stderr=log,
            )
        await self.wait_ready(process)

    async def wait_ready(self, process: Process, within: float = 180) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=process.url, timeout=5) as client:
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if not process.alive:
                    raise AssertionError(
                        f"{process.service} on {process.port} exited:\n{process.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{process.service} on {process.port} not ready:\n{process.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def kill(self, process: Process) -> None:
        """SIGKILL: no batch finished, no goodbye."""
        process.process.send_signal(signal.SIGKILL)
        await process.process.wait()

    async def terminate(self, process: Process, within: float = 60) -> int:
        """SIGTERM: stop accepting, finish the batch in hand, exit; the exit code."""
        process.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.process.wait(), within)
        except TimeoutError:
            raise AssertionError(
                f"{process.service} ignored SIGTERM for {within} s:\n{process.log_tail()}"
            ) from None

    async def stop_all(self) -> None:
        for process in self.processes:
            if process.alive:
                process.process.send_signal(signal.SIGTERM)
        for process in self.processes:
            if process.process is not None:
                try:
                    await asyncio.wait_for(process.process.wait(), 30)
                except TimeoutError:
                    process.process.send_signal(signal.SIGKILL)
                    await process.process.wait()

    # --- asking the processes ----------------------------------------------------------------

    async def get(self, service: str, path: str, **params) -> httpx.Response:
        """GET from a live process of the service (any: they share the database)."""
        process = self.live(service)[0]
        async with httpx.AsyncClient(base_url=process.url, headers=ADMIN, timeout=30) as client:
            return await client.get(path, params=params)

    async def sql(self, *statements: str) -> None:
        connection = await asyncpg.connect(self.database_url)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def fetch(self, query: str) -> list[tuple]:
        connection = await asyncpg.connect(self.database_url)
        try:
            return [tuple(r) for r in await connection.fetch(query)]
        finally:
            await connection.close()

    async def lags(self) -> dict[str, int]:
        response = await self.get("ingest", "/v1/admin/consumers")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["bus"] == self.bus, body
        return {g["name"]: g["lag"] for g in body["groups"]}

    async def wait_busy(self, group: str, within: float = 30) -> bool:
        """Until the group has events to apply (a batch is likely in hand); False if it never
        had within the time (the fault is then injected anyway)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if (await self.lags()).get(group, 0) > 0:
                    return True
            except (httpx.TransportError, AssertionError):
                pass
            await asyncio.sleep(0.05)
        return False

    async def wait_caught_up(self, within: float = 120) -> None:
        """Until every group reports lag 0 (GET /v1/admin/consumers)."""
        deadline = time.monotonic() + within
        lags: dict[str, int] | str = {}
        while time.monotonic() < deadline:
            try:
                lags = await self.lags()
                if all(lag == 0 for lag in lags.values()):
                    return
            except (httpx.TransportError, AssertionError) as exc:
                lags = repr(exc)
            await asyncio.sleep(0.2)
        tails = "\n".join(
            f"== {p.service}:{p.port}\n{p.log_tail(1500)}" for p in self.processes if p.alive
        )
        raise AssertionError(f"the groups did not catch up within {within} s: {lags}\n{tails}")
