"""Who may call what (API.md, "Auth"): every route of the app × every credential.

The routes are enumerated from the app itself: a route added without an entry in ROUTES fails
`test_every_route_has_an_entry`, so none can be forgotten. For each route and each credential:
no key, a malformed `Authorization` header, an unknown key and a revoked key → 401; a key
without the scope → 403; a key with it (admin implies the other two) → anything but 401/403
(the request itself may still be a 404, 409 or 422). Public routes answer whoever asks. The
operator pages take a signed-in session, never a bearer key. Keys are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from shared.auth import Scope, create_key, revoke_keys
from shared.routes import every_route
from tests.system import ADMIN_KEY, CLI, System

SCOPES = {scope.value for scope in Scope}
PUBLIC = "public"
CONSOLE = "console"  # the operator pages: a session cookie (services/console/sessions.py)
CONSOLE_ENTRY = "console entry"  # the console pages one sees before signing in

ROUTES: dict[tuple[str, str], str] = {
    # documentation and operations
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/v1/admin/consumers"): "admin",
    # ingest
    ("POST", "/v1/events"): "events:write",
    # applications
    ("POST", "/v1/applications"): "events:write",
    ("GET", "/v1/applications/{application_id}"): "read",
    ("GET", "/v1/admin/applications"): "admin",
    ("POST", "/v1/admin/applications/{application_id}/approve"): "admin",
    ("POST", "/v1/admin/applications/{application_id}/reject"): "admin",
    # reads
    ("GET", "/v1/creators/{creator_id}"): "read",
    ("GET", "/v1/creators/{creator_id}/months/{month}"): "read",
    ("GET", "/v1/rankings/{month}"): "read",
    ("GET", "/v1/featured/{week}"): "read",
    ("GET", "/v1/recommendations/creators"): "read",
    ("GET", "/v1/programs/new-creator-vouchers"): "read",
    ("GET", "/v1/rewards"): "read",
    ("GET", "/v1/rewards/feed"): "read",
    # operations
    ("POST", "/v1/admin/months/{month}/settle"): "admin",
    ("POST", "/v1/admin/weeks/{week}/freeze"): "admin",
    ("GET", "/v1/admin/months/{month}/preview"): "admin",
    ("GET", "/v1/admin/program-settings"): "admin",
    ("POST", "/v1/admin/program-settings"): "admin",
    ("POST", "/v1/admin/creators/{creator_id}/promotion-slots/{month}"): "admin",
    # the operator console
    ("GET", "/ops/static/ops.css"): CONSOLE_ENTRY,
    ("GET", "/ops/sign-in"): CONSOLE_ENTRY,
    ("POST", "/ops/sign-in"): CONSOLE_ENTRY,
    ("GET", "/ops"): CONSOLE,
    ("POST", "/ops/sign-out"): CONSOLE,
    ("GET", "/ops/applications"): CONSOLE,
    ("POST", "/ops/applications/{application_id}/approve"): CONSOLE,
    ("POST", "/ops/applications/{application_id}/reject"): CONSOLE,
    ("GET", "/ops/creators/{creator_id}"): CONSOLE,
    ("GET", "/ops/vouchers"): CONSOLE,
    ("GET", "/ops/months"): CONSOLE,
    ("GET", "/ops/months/{month}"): CONSOLE,
    ("GET", "/ops/months/{month}/creators"): CONSOLE,
    ("GET", "/ops/months/{month}/creators/{creator_id}"): CONSOLE,
    ("GET", "/ops/months/{month}/settle"): CONSOLE,
    ("POST", "/ops/months/{month}/settle"): CONSOLE,
    ("GET", "/ops/months/{month}/preview"): CONSOLE,
    ("GET", "/ops/consumers"): CONSOLE,
    ("POST", "/ops/dead-letters/replay"): CONSOLE,
}
# Path parameters that name nothing that exists, or a month/week not over: no request of the
# matrix changes anything.
PATH_VALUES = {
    "application_id": "00000000-0000-4000-8000-000000000000",
    "creator_id": "c-nobody",
    "month": "2099-12",
    "week": "2099-W52",
}
MALFORMED = [
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Token " + ADMIN_KEY,
    ADMIN_KEY,  # no scheme
    f"Bearer {ADMIN_KEY}x",  # one character more
    f"Bearer {ADMIN_KEY[:-1]}",  # one character less
]


def app_routes(system: System) -> set[tuple[str, str]]:
    app = system.client._transport.app  # type: ignore[attr-defined]
    return {
        (method, route.path_format)
        for route in every_route(app)
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    }


def concrete(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


async def call(system: System, method: str, path: str, authorization: str | None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    if method == "POST":
        return await system.client.post(concrete(path), headers=headers, json={})
    return await system.client.get(concrete(path), headers=headers)


async def keys(system: System) -> dict[str, str]:
    """A key per scope, an unknown key and a revoked one."""
    async with system.runtime.context.sessionmaker() as session, session.begin():
        made = {
            scope.value: await create_key(session, f"only-{scope.value}", [scope])
            for scope in Scope
        }
        made["revoked"] = await create_key(session, "revoked", list(Scope))
    async with system.runtime.context.sessionmaker() as session, session.begin():
        assert await revoke_keys(session, "revoked") == 1
    made["unknown"] = "ca_" + "x" * 43
    return made


async def test_every_route_has_an_entry(system):
    routes = app_routes(system)
    assert routes - ROUTES.keys() == set(), "routes without an entry in the auth matrix"
    assert ROUTES.keys() - routes == set(), "entries for routes that no longer exist"


async def test_every_route_answers_every_credential_as_api_md_says(system, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, SQL statements included
    made = await keys(system)
    credentials: dict[str, str | None] = {"no key": None}
    credentials |= {f"malformed {i}": value for i, value in enumerate(MALFORMED)}
    credentials |= {name: f"Bearer {key}" for name, key in made.items()}
    credentials["lowercase scheme"] = f"bearer {made['read']}"
    wrong = []
    for (method, path), needed in sorted(ROUTES.items()):
        for name, authorization in credentials.items():
            response = await call(system, method, path, authorization)
            status = response.status_code
            expected = _expected(needed, name, status, response.headers)
            if expected is not None:
                wrong.append(f"{method} {path} with {name}: {status}, expected {expected}")
            if status >= 400 and needed not in (CONSOLE, CONSOLE_ENTRY):  # pages are HTML
                body = response.json()
                assert isinstance(body["error"], str) and isinstance(body["message"], str)
                if status == 401:
                    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert wrong == []
    secrets = [*made.values(), ADMIN_KEY]
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__} {record.exc_text or ''}"
        assert not any(secret in text for secret in secrets), record


def _expected(needed: str, credential: str, status: int, headers) -> str | None:
    """None when `status` is right for this route and credential, else what was expected."""
    if status >= 500:
        return "no 5xx"
    if needed == PUBLIC:
        return None if status not in (401, 403) else "no auth at all"
    if needed == CONSOLE_ENTRY:  # the sign-in form refuses a post without its CSRF token
        return None
    if needed == CONSOLE:  # a bearer key is no session: back to the sign-in page
        location = headers.get("location", "")
        return None if status == 303 and location.startswith("/ops/sign-in") else "303"
    held = "read" if credential == "lowercase scheme" else credential
    if held not in SCOPES:  # no key, malformed, unknown, revoked
        return None if status == 401 else "401"
    if held == "admin" or held == needed:  # admin implies the other two
        return None if status not in (401, 403) else "not 401/403"
    return None if status == 403 else "403"


async def test_a_key_is_refused_as_soon_as_it_is_revoked(system):
    async with system.runtime.context.sessionmaker() as session, session.begin():
        key = await create_key(session, "leaving", [Scope.READ])
    auth = {"Authorization": f"Bearer {key}"}
    assert (await system.client.get("/v1/rewards", headers=auth)).status_code == 200
    async with system.runtime.context.sessionmaker() as session, session.begin():
        await revoke_keys(session, "leaving")
    response = await system.client.get("/v1/rewards", headers=auth)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


@pytest.mark.timeout(600)  # three CLI processes; slow on a loaded machine
async def test_api_keys_create_prints_the_key_but_never_logs_it(system):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")}
    env["CREATOR_ACTIVITY_DATABASE_URL"] = system.database_url.replace("+asyncpg", "")
    env["CREATOR_ACTIVITY_LOG_LEVEL"] = "DEBUG"
    env["CREATOR_ACTIVITY_LOG_FORMAT"] = "json"

    async def run(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            CLI,
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode, out.decode(), err.decode()

    code, out, err = await run(
        "api-keys", "create", "--name", "partner", "--scope", "read", "--rate-limit", "5"
    )
    assert code == 0, err
    key = out.strip().splitlines()[-1]
    assert key.startswith("ca_") and len(key) >= 40
    assert out.count(key) == 1  # alone on the last line of stdout, once
    assert key not in err  # the log (stderr), at DEBUG
    code, out, err = await run("api-keys", "list")
    assert code == 0 and "partner" in out
    assert key not in out and key not in err
    code, out, err = await run("api-keys", "revoke", "--name", "partner")
    assert code == 0 and key not in out + err
    rows = await system.sql("SELECT key_hash FROM api_keys WHERE name = 'partner'")
    assert [r["key_hash"] for r in rows] != [key] and key not in str(rows)


async def test_the_rate_limit_is_a_token_bucket_per_key_with_bursts_of_twice_the_rate(system):
    """API.md: `--rate-limit N` → N requests per second, bursts of 2N, then 429 with
    Retry-After. The process's clock is replaced so that no timing matters."""
    now = [1000.0]
    system.runtime.context.rate_limiter.clock = lambda: now[0]
    async with system.runtime.context.sessionmaker() as session, session.begin():
        limited = await create_key(session, "limited", [Scope.READ], rate_limit=3)
        other = await create_key(session, "other", [Scope.READ], rate_limit=3)

    async def get(key: str, path: str = "/v1/programs/new-creator-vouchers") -> int:
        response = await system.client.get(path, headers={"Authorization": f"Bearer {key}"})
        if response.status_code == 429:
            assert response.json()["error"] == "rate_limited"
            assert response.headers["Retry-After"] == "1"
        return response.status_code

    # refused requests take no token: a wrong scope (403) before any request of the key
    assert [await get(limited, "/v1/admin/consumers") for _ in range(10)] == [403] * 10
    assert [await get(limited) for _ in range(7)] == [200] * 6 + [429]  # a burst of 2N
    assert await get(other) == 200  # each key has its own bucket
    now[0] += 0.5  # 1.5 tokens back at N = 3 per second
    assert [await get(limited) for _ in range(2)] == [200, 429]
    now[0] += 60  # never more than the burst
    assert [await get(limited) for _ in range(7)] == [200] * 6 + [429]
    assert await get(ADMIN_KEY) == 200  # a key created without a limit has none
