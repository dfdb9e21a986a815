"""API keys and scopes, the CLI that makes them, and the operations endpoints."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from shared.auth import hash_key
from tests.system import ADMIN, ADMIN_KEY, post_created

CLI = str(Path(sys.executable).parent / "creator-activity")


async def run_cli(database_url: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "CREATOR_ACTIVITY_DATABASE_URL": database_url.replace("+asyncpg", "")}
    process = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode, output.decode()


async def create_key_with_cli(database_url: str, *scopes: str) -> str:
    args = ["api-keys", "create", "--name", "tester"]
    for scope in scopes:
        args += ["--scope", scope]
    code, output = await run_cli(database_url, *args)
    assert code == 0, output
    return output.strip().splitlines()[-1]  # the key alone on the last line


async def test_cli_key_works_and_is_stored_hashed(system):
    key = await create_key_with_cli(system.database_url, "events:write")
    assert (await system.post_events(post_created(), key=key)).status_code == 202

    rows = await system.sql("SELECT name, key_hash, scopes FROM api_keys WHERE name = 'tester'")
    assert [(r["name"], r["key_hash"], r["scopes"]) for r in rows] == [
        ("tester", hash_key(key), ["events:write"])
    ]
    assert all(key not in str(dict(r)) for r in rows)


async def test_cli_rejects_an_unknown_scope(system):
    code, output = await run_cli(
        system.database_url, "api-keys", "create", "--name", "x", "--scope", "superuser"
    )
    assert code != 0
    assert "superuser" in output


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not bearer"],
)
async def test_missing_or_unknown_key_is_401(system, headers):
    for method, path in [
        ("POST", "/v1/events"),
        ("GET", "/v1/creators/c-1/months/2026-11"),
        ("GET", "/v1/admin/consumers"),
    ]:
        response = await system.client.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"] == "unauthorized"


async def test_scopes_are_enforced_with_403(system):
    reader = await create_key_with_cli(system.database_url, "read")
    writer = await create_key_with_cli(system.database_url, "events:write")

    assert (await system.post_events(post_created(), key=reader)).status_code == 403
    read = {"Authorization": f"Bearer {reader}"}
    write = {"Authorization": f"Bearer {writer}"}
    month = "/v1/creators/c-1/months/2026-11"
    assert (await system.client.get(month, headers=write)).status_code == 403
    assert (await system.client.get(month, headers=read)).status_code in (200, 404)
    assert (await system.client.get("/v1/admin/consumers", headers=read)).status_code == 403
    assert (await system.client.get("/v1/admin/consumers", headers=ADMIN)).status_code == 200


async def test_revoked_key_is_401(system):
    key = await create_key_with_cli(system.database_url, "admin")
    connection = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    await connection.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_key(key)
    )
    await connection.close()
    assert (await system.post_events(post_created(), key=key)).status_code == 401


async def test_bootstrap_admin_key_has_every_scope(system):
    [row] = await system.sql("SELECT scopes FROM api_keys WHERE key_hash = $1", hash_key(ADMIN_KEY))
    assert sorted(row["scopes"]) == ["admin", "events:write", "read"]


async def test_health_and_readiness_need_no_key(system):
    assert (await system.client.get("/healthz")).json() == {"status": "ok"}
    ready = await system.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "bus": "embedded"}


async def test_metrics_count_events_and_report_lag(system):
    await system.post_events([post_created(), post_created()])
    await system.post_events([{"id": "bad"}])
    await system.wait_until_processed()
    text = (await system.client.get("/metrics")).text
    assert 'creator_activity_ingest_events_total{outcome="accepted"}' in text
    assert 'creator_activity_ingest_events_total{outcome="rejected"}' in text
    assert 'creator_activity_consumer_lag{group="scoring"} 0.0' in text
    assert "creator_activity_consumer_batch_seconds_bucket" in text


async def test_openapi_documents_the_api(system):
    spec = (await system.client.get("/openapi.json")).json()
    assert "/v1/events" in spec["paths"]
    assert "413" in spec["paths"]["/v1/events"]["post"]["responses"]
    assert (await system.client.get("/docs")).status_code == 200


async def test_bad_month_is_422(system):
    response = await system.client.get("/v1/creators/c-1/months/2026-13", headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_failed"
