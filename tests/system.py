"""A running system under test, and helpers that build events the way the platform sends them."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.runtime import Runtime

ADMIN_KEY = "test-admin-key-with-every-scope-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

_ids = itertools.count(1)


def post_created(
    creator_id: str = "c-1",
    post_id: str | None = None,
    *,
    time: str = "2026-11-03T10:00:00+08:00",
    text: str = "今天聊聊回购市场的流动性压力,以及它对加密资产的影响。" * 2,
    image_count: int = 0,
    kind: str = "original",
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    n = next(_ids)
    return {
        "id": event_id or f"evt-post-{n}",
        "type": "post.created",
        "time": time,
        "source": "square",
        "specversion": "1.0",
        "data": {
            "creator_id": creator_id,
            "post_id": post_id or f"p-{n}",
            "text": text,
            "image_count": image_count,
            "kind": kind,
        },
        **extra,
    }


def interaction_created(
    creator_id: str = "c-1",
    post_id: str = "p-1",
    actor_id: str = "a-1",
    *,
    kind: str = "like",
    time: str = "2026-11-03T11:00:00+08:00",
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt-int-{next(_ids)}",
        "type": "interaction.created",
        "time": time,
        "data": {"creator_id": creator_id, "post_id": post_id, "actor_id": actor_id, "kind": kind},
    }


@dataclass
class System:
    runtime: Runtime
    client: httpx.AsyncClient
    database_url: str

    async def post_events(self, body: Any, *, key: str = ADMIN_KEY) -> httpx.Response:
        return await self.client.post(
            "/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
        )

    async def lags(self) -> dict[str, int]:
        response = await self.client.get("/v1/admin/consumers", headers=ADMIN)
        assert response.status_code == 200, response.text
        return {g["name"]: g["lag"] for g in response.json()["groups"]}

    async def wait_until_processed(self, within: float = 30) -> None:
        """Until every consumer group reports lag 0."""
        deadline = time.monotonic() + within
        while True:
            lags = await self.lags()
            if all(lag == 0 for lag in lags.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"consumers did not catch up: {lags}")
            await asyncio.sleep(0.05)

    async def month(self, creator_id: str, month: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/creators/{creator_id}/months/{month}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    async def restart_workers(self) -> None:
        await self.runtime.stop_workers()
        self.runtime.context.bus.stopping.clear()
        self.runtime.start_workers()

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Read the database directly (what the API does not show)."""
        connection = await asyncpg.connect(self.database_url.replace("+asyncpg", ""))
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()


CLI = str(Path(sys.executable).parent / "creator-activity")


async def run_cli(database_url: str | None, *args: str, **env: str) -> tuple[int, str]:
    """Run the `creator-activity` command on a database; its exit code and output."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")}
    if database_url:
        environment["CREATOR_ACTIVITY_DATABASE_URL"] = database_url.replace("+asyncpg", "")
    environment.update(env)
    process = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode, output.decode()


async def wait_until_ready(
    client: httpx.AsyncClient, process: asyncio.subprocess.Process | None = None, within=30
) -> None:
    """Until a server started as a subprocess answers /readyz with 200."""
    deadline = time.monotonic() + within
    while True:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process is None or process.returncode is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not become ready"
        await asyncio.sleep(0.1)
