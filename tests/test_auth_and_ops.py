"""API keys and scopes, the CLI that makes them, and the operations endpoints."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest
from pydantic import ValidationError

from services import runtime
from shared import settings as settings_module
from shared.auth import ApiKey, RateLimiter, hash_key
from shared.errors import RateLimited
from shared.settings import Settings
from tests.brokers import free_port
from tests.system import ADMIN, ADMIN_KEY, CLI, post_created, run_cli

MONTH = "/v1/creators/c-1/months/2026-11"  # a read endpoint: 404 while c-1 has no activity

# The ops and auth tests run on both buses (the pure ones too: they are cheap).
pytestmark = pytest.mark.usefixtures("bus")


async def create_key_with_cli(
    database_url: str, *scopes: str, name: str = "tester", rate_limit: int | None = None
) -> str:
    args = ["api-keys", "create", "--name", name]
    for scope in scopes:
        args += ["--scope", scope]
    if rate_limit is not None:
        args += ["--rate-limit", str(rate_limit)]
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
        assert response.headers["www-authenticate"] == "Bearer"


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


async def test_health_and_readiness_need_no_key(system, bus):
    assert (await system.client.get("/healthz")).json() == {"status": "ok"}
    ready = await system.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "bus": bus}


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


async def test_api_keys_list_shows_every_key_but_never_a_secret(system):
    reader = await create_key_with_cli(system.database_url, "read", name="dashboard")
    writer = await create_key_with_cli(
        system.database_url, "events:write", name="platform", rate_limit=50
    )
    code, output = await run_cli(system.database_url, "api-keys", "revoke", "--name", "dashboard")
    assert code == 0, output

    code, output = await run_cli(system.database_url, "api-keys", "list")
    assert code == 0, output
    lines = output.strip().splitlines()
    assert lines[0].split() == ["NAME", "SCOPES", "RATE", "LIMIT", "CREATED", "REVOKED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"bootstrap-admin", "dashboard", "platform"}
    assert rows["bootstrap-admin"][1:3] == ["admin,events:write,read", "-"]
    assert rows["bootstrap-admin"][-1] == "-"  # not revoked
    assert rows["dashboard"][1:3] == ["read", "-"]
    assert rows["dashboard"][-1] != "-"  # revoked: when
    assert rows["platform"][1:3] == ["events:write", "50/s"]
    for secret in (reader, writer, ADMIN_KEY, hash_key(reader), hash_key(ADMIN_KEY)):
        assert secret not in output


async def test_revoking_a_name_revokes_every_key_of_it_at_once(system):
    first = await create_key_with_cli(system.database_url, "admin", name="ci")
    second = await create_key_with_cli(system.database_url, "read", name="ci")
    other = await create_key_with_cli(system.database_url, "read", name="other")
    for key in (first, second, other):
        response = await system.client.get(MONTH, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 404  # authorised; no activity yet

    code, output = await run_cli(system.database_url, "api-keys", "revoke", "--name", "ci")
    assert code == 0, output
    assert "revoked 2 keys named 'ci'" in output
    for key in (first, second):  # the running server refuses them at once: no cache
        response = await system.client.get(MONTH, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
    other_auth = {"Authorization": f"Bearer {other}"}
    assert (await system.client.get(MONTH, headers=other_auth)).status_code == 404


async def test_revoking_an_unknown_name_fails(system):
    code, output = await run_cli(system.database_url, "api-keys", "revoke", "--name", "nobody")
    assert code == 1
    assert "no key is named 'nobody'" in output


async def test_a_rate_limited_key_gets_429_with_retry_after(system):
    limited = await create_key_with_cli(system.database_url, "read", name="slow", rate_limit=1)
    auth = {"Authorization": f"Bearer {limited}"}
    statuses = [(await system.client.get(MONTH, headers=auth)).status_code for _ in range(2)]
    assert statuses == [404, 404]  # a burst of 2N
    response = await system.client.get(MONTH, headers=auth)
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert set(response.json()) == {"error", "message"}
    assert response.headers["retry-after"] == "1"
    # a key without a limit is not limited, and the limit is per key
    for _ in range(20):
        assert (await system.client.get(MONTH, headers=ADMIN)).status_code == 404
    await asyncio.sleep(1.1)  # a token a second: one is back
    assert (await system.client.get(MONTH, headers=auth)).status_code == 404


def test_the_token_bucket_refills_at_the_rate_and_bursts_twice_it():
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    key = ApiKey(id=1, name="k", rate_limit=5)

    def admitted(n: int) -> int:
        count = 0
        for _ in range(n):
            try:
                limiter.check(key)
                count += 1
            except RateLimited:
                pass
        return count

    assert admitted(15) == 10  # burst 2N
    now[0] += 1.0
    assert admitted(15) == 5  # N per second
    now[0] += 60
    assert admitted(15) == 10  # never more than the burst
    assert admitted(1) == 0
    with pytest.raises(RateLimited) as refused:
        limiter.check(key)
    assert refused.value.headers()["Retry-After"] == "1"
    unlimited = ApiKey(id=2, name="u", rate_limit=None)
    for _ in range(1000):
        limiter.check(unlimited)


def test_a_batch_size_for_a_group_that_does_not_exist_is_refused():
    assert set(settings_module.CONSUMER_GROUPS) == set(runtime.CONSUMERS)
    with pytest.raises(ValidationError, match="unknown consumer group 'scoring '"):
        Settings(_env_file=None, consumer_batch_sizes={"scoring ": 2000})
    sizes = Settings(_env_file=None, consumer_batch_sizes={"scoring": 2000})
    assert (sizes.batch_size("scoring"), sizes.batch_size("badges")) == (2000, 500)


def test_a_short_bootstrap_admin_key_is_refused():
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(_env_file=None, bootstrap_admin_key="x" * 31)
    assert Settings(_env_file=None, bootstrap_admin_key="x" * 32).bootstrap_admin_key


async def test_serve_refuses_a_short_bootstrap_admin_key_with_one_clear_line(tmp_path):
    short = "short-admin-key-1234"
    env = {
        **os.environ,
        "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": short,
        "CREATOR_ACTIVITY_DATA_DIR": str(tmp_path),
    }
    process = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--port",
        str(free_port()),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    message = stderr.decode()
    assert "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY" in message
    assert "at least 32 characters" in message
    assert "Traceback" not in message
    assert short not in message  # a refused key is not written to the log


def test_scoring_takes_batches_of_2000_by_default_and_a_setting_changes_it():
    # docs/operations.md: scoring far behind catches up faster in larger batches
    defaults = Settings(_env_file=None)
    assert (defaults.batch_size("scoring"), defaults.batch_size("badges")) == (2000, 500)
    sizes = Settings(_env_file=None, consumer_batch_sizes={"scoring": 500})
    assert sizes.batch_size("scoring") == 500
