"""The operator console over plain HTTP (no browser needed): sessions kept in PostgreSQL, the
cookie's flags, the CSRF check on every form, the end of a session, and that acting from the
console is acting through the admin API's own functions."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from shared.auth import Scope, create_key, revoke_keys
from tests.browser.program import IN_MONTH, MONTH, apply, program_month, unique_text
from tests.system import ADMIN, ADMIN_KEY, System, post_created

FORM_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def client(system: System):
    """A client of the console over https (the session cookie is Secure); redirects are not
    followed, so each answer can be checked."""
    transport = httpx.ASGITransport(app=system.runtime.create_app(manage_lifecycle=False))
    async with httpx.AsyncClient(transport=transport, base_url="https://ops.test") as client:
        yield client


async def sign_in(client: httpx.AsyncClient, key: str = ADMIN_KEY) -> httpx.Response:
    form = await client.get("/ops/sign-in")
    token = FORM_TOKEN.search(form.text).group(1)
    return await client.post("/ops/sign-in", data={"csrf_token": token, "api_key": key})


async def form_token(client: httpx.AsyncClient, path: str = "/ops/applications") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return FORM_TOKEN.search(page.text).group(1)


async def new_key(system: System, name: str, scopes: list[Scope]) -> str:
    async with system.runtime.context.sessionmaker() as session, session.begin():
        return await create_key(session, name, scopes)


async def application_status(system: System, application_id: str) -> str:
    response = await system.client.get(f"/v1/applications/{application_id}", headers=ADMIN)
    return response.json()["status"]


async def test_the_session_cookie_is_secure_httponly_strict_and_stored_as_a_digest(system, client):
    response = await sign_in(client)
    assert response.status_code == 303
    assert response.headers["location"] == "/ops/applications"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("ops_session=")
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"secure", "httponly", "max-age", "path"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/ops" in cookie.lower()

    token = client.cookies["ops_session"]
    [row] = await system.sql("SELECT token_digest, key_name, expires_at FROM console_sessions")
    assert row["token_digest"] == hashlib.sha256(token.encode()).hexdigest() != token
    assert row["key_name"] == "bootstrap-admin"
    assert row["expires_at"] > datetime.now(UTC)

    page = await client.get("/ops/applications")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


async def test_pages_need_a_session(client):
    for path in ("/ops", "/ops/applications", f"/ops/months/{MONTH}", "/ops/consumers"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/ops/sign-in"


async def test_a_wrong_or_non_admin_key_is_refused_and_opens_no_session(system, client):
    wrong = await sign_in(client, "ca_no-such-key")
    assert wrong.status_code == 401
    assert "Unknown or revoked API key" in wrong.text

    reader = await new_key(system, "dashboard", [Scope.READ, Scope.EVENTS_WRITE])
    refused = await sign_in(client, reader)
    assert refused.status_code == 403
    assert "has no admin scope" in refused.text

    assert await system.sql("SELECT * FROM console_sessions") == []
    assert "ops_session" not in client.cookies


async def test_sign_in_without_its_form_token_is_refused(client):
    await client.get("/ops/sign-in")
    response = await client.post("/ops/sign-in", data={"api_key": ADMIN_KEY})
    assert response.status_code == 403
    assert "ops_session" not in client.cookies


async def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(system, client):
    application = await apply(system, "c-csrf", "跨站")
    await sign_in(client)
    approve = f"/ops/applications/{application['id']}/approve"

    missing = await client.post(approve, data={"creator_id": "c-csrf"})
    wrong = await client.post(approve, data={"csrf_token": "forged", "creator_id": "c-csrf"})
    as_json = await client.post(approve, json={"csrf_token": await form_token(client)})
    for response in (missing, wrong, as_json):
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert await application_status(system, application["id"]) == "pending_review"

    settle = await client.post(f"/ops/months/{MONTH}/settle", data={"confirm": MONTH})
    assert settle.status_code == 403
    assert await system.sql("SELECT * FROM scoring_settlements") == []

    signed_out = await client.post("/ops/sign-out", data={})
    assert signed_out.status_code == 403
    assert len(await system.sql("SELECT * FROM console_sessions")) == 1


async def test_approving_here_is_approving_through_the_admin_api(system, client):
    application = await apply(system, "c-same", "同一个")
    await sign_in(client)
    token = await form_token(client)
    response = await client.post(
        f"/ops/applications/{application['id']}/approve",
        data={"csrf_token": token, "creator_id": "c-same", "certified_at": "2026-10-01T08:00"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ops/applications?notice=approved&creator=c-same"

    approved = (
        await system.client.get(f"/v1/applications/{application['id']}", headers=ADMIN)
    ).json()
    assert approved["status"] == "approved"
    assert approved["decided_by"] == "bootstrap-admin"
    # the form's local time is in the program time zone (Asia/Shanghai, UTC+8)
    assert datetime.fromisoformat(approved["certified_at"]) == datetime(
        2026, 10, 1, 0, 0, tzinfo=UTC
    )
    logged = await system.sql(
        "SELECT type FROM events WHERE event_id = $1", f"application-{application['id']}-approved"
    )
    assert [row["type"] for row in logged] == ["creator.certified"]

    again = await client.post(
        f"/ops/applications/{application['id']}/approve",
        data={"csrf_token": token, "creator_id": "c-same"},
    )
    assert again.status_code == 409
    assert "was already approved" in again.text


async def test_a_future_certification_time_is_refused_with_the_api_s_message(system, client):
    application = await apply(system, "c-future", "未来")
    await sign_in(client)
    response = await client.post(
        f"/ops/applications/{application['id']}/approve",
        data={"csrf_token": await form_token(client), "certified_at": "2099-01-01T00:00"},
    )
    assert response.status_code == 422
    assert "must not be in the future" in response.text
    assert await application_status(system, application["id"]) == "pending_review"


async def test_revoking_the_key_ends_its_sessions(system, client):
    operator = await new_key(system, "operator-ann", [Scope.ADMIN])
    await sign_in(client, operator)
    assert (await client.get("/ops/vouchers")).status_code == 200

    async with system.runtime.context.sessionmaker() as session, session.begin():
        await revoke_keys(session, "operator-ann")
    ended = await client.get("/ops/vouchers")
    assert ended.status_code == 303
    assert ended.headers["location"] == "/ops/sign-in?notice=session_ended"
    assert await system.sql("SELECT * FROM console_sessions") == []


async def test_an_expired_session_is_refused(system, client):
    await sign_in(client)
    await system.sql("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    assert (await client.get("/ops/applications")).status_code == 303


async def test_sign_out_deletes_the_session(system, client):
    await sign_in(client)
    token = client.cookies["ops_session"]
    response = await client.post("/ops/sign-out", data={"csrf_token": await form_token(client)})
    assert response.status_code == 303
    assert await system.sql("SELECT * FROM console_sessions") == []
    # the old cookie, replayed, opens nothing
    client.cookies.set("ops_session", token, domain="ops.test", path="/ops")
    assert (await client.get("/ops/applications")).status_code == 303


async def test_settling_needs_the_confirmation_and_matches_the_api(system, client):
    await program_month(system)
    await sign_in(client)
    token = await form_token(client, f"/ops/months/{MONTH}/settle")
    unconfirmed = await client.post(f"/ops/months/{MONTH}/settle", data={"csrf_token": token})
    assert unconfirmed.status_code == 422
    assert await system.sql("SELECT * FROM scoring_settlements") == []

    settled = await client.post(
        f"/ops/months/{MONTH}/settle", data={"csrf_token": token, "confirm": MONTH}
    )
    assert settled.status_code == 303
    [row] = await system.sql("SELECT settled_by FROM scoring_settlements WHERE month = $1", MONTH)
    assert row["settled_by"] == "bootstrap-admin"
    page = await client.get(f"/ops/months/{MONTH}")
    ranking = (await system.client.get(f"/v1/rankings/{MONTH}", headers=ADMIN)).json()
    for entry in ranking["entries"]:
        assert entry["payout"] in page.text

    too_early = await client.post(
        "/ops/months/2026-11/settle", data={"csrf_token": token, "confirm": "2026-11"}
    )
    assert too_early.status_code == 409
    assert "can be settled from" in too_early.text


async def test_dead_letters_are_listed_and_replayed(system, client):
    await program_month(system)
    # An event scoring applied, parked as if it had failed: the replay applies it again.
    [event] = await system.sql("SELECT seq, source, event_id FROM events ORDER BY seq LIMIT 1")
    await system.sql(
        "INSERT INTO dead_letters (group_name, seq, source, event_id, type, attempts, error) "
        "VALUES ('scoring', $1, $2, $3, 'post.created', 3, 'RuntimeError(boom)')",
        event["seq"],
        event["source"],
        event["event_id"],
    )
    await sign_in(client)
    page = await client.get("/ops/consumers")
    assert "RuntimeError(boom)" in page.text
    assert re.search(r'id="group-scoring">.*?<td class="num bad">1</td>', page.text, re.S)

    response = await client.post(
        "/ops/dead-letters/replay",
        data={"csrf_token": FORM_TOKEN.search(page.text).group(1), "group": "scoring"},
    )
    assert response.status_code == 303
    assert "applied=1" in response.headers["location"]
    assert await system.sql("SELECT * FROM dead_letters") == []


async def test_every_page_renders(system, client):
    await program_month(system)
    await sign_in(client)
    for path in (
        "/ops/applications?status=all",
        "/ops/vouchers",
        f"/ops/months/{MONTH}",
        f"/ops/months/{MONTH}/creators/c-short",
        f"/ops/months/{MONTH}/settle",
        f"/ops/months/{MONTH}/preview?weight_posts=1",
        "/ops/consumers",
        "/ops/creators/c-lin",
    ):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text[-500:])
    bad = await client.get(f"/ops/months/{MONTH}/preview?weight_posts=-1")
    assert bad.status_code == 422
    unknown = await client.get("/ops/creators/c-nobody")
    assert unknown.status_code == 404
    assert "has never applied" in unknown.text


async def test_a_creator_month_says_why_it_is_not_paid_and_why_posts_do_not_qualify(system, client):
    await program_month(system)
    short = post_created("c-short", "c-short-tiny", time=IN_MONTH.isoformat(), text="太短了")
    assert (await system.post_events([short])).status_code == 202
    await system.wait_until_processed()
    await sign_in(client)
    page = await client.get(f"/ops/months/{MONTH}/creators/c-short")
    assert page.status_code == 200
    assert "1 more original quality post needed to share the pool" in page.text
    row = re.search(r"c-short-tiny</td>.*?</tr>", page.text, re.S)
    assert row and "too_short" in row.group(0), page.text[-2000:]


async def test_the_voucher_pool_shows_its_latest_winners(system, client):
    application = await apply(system, "c-first", "第一名")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    approved = await system.client.post(
        f"/v1/admin/applications/{application['id']}/approve",
        json={"certified_at": an_hour_ago.isoformat()},
        headers=ADMIN,
    )
    assert approved.status_code == 200
    just_now = datetime.now(UTC) - timedelta(minutes=5)  # in the voucher's window
    response = await system.post_events(
        [post_created("c-first", "c-first-p1", time=just_now.isoformat(), text=unique_text())]
    )
    assert response.status_code == 202
    await system.wait_until_processed()

    await sign_in(client)
    page = await client.get("/ops/vouchers")
    assert re.search(r'id="issued">1<', page.text)
    assert re.search(r'id="remaining">99<', page.text)
    assert "第一名" in page.text
