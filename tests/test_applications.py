"""Applications to join the program, their review, and the creator view, through the HTTP API.

Who may join is a pure rule (tests/test_eligibility.py); here: the rule as the API applies it
(settings, languages), one open application per creator, decisions under concurrency, the
`creator.certified` event in the log, and the certification badge through the bus.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from shared.auth import Scope, create_key
from tests.system import ADMIN, post_created

CERTIFIED_AT = "2026-10-05T20:00:00+08:00"


def application(
    creator_id: str,
    *platforms: tuple[int, bool],
    display_name: str | None = None,
    **square: Any,
) -> dict[str, Any]:
    """The form the platform forwards; one platform per (followers, verified) pair."""
    body: dict[str, Any] = {
        "creator_id": creator_id,
        "platforms": [
            {"platform": f"site-{i}", "handle": f"@{creator_id}", "followers": f, "verified": v}
            for i, (f, v) in enumerate(platforms)
        ],
        **square,
    }
    if display_name is not None:
        body["display_name"] = display_name
    return body


def square(followers: int, interactions: int, certified: bool = True) -> dict[str, Any]:
    return {
        "square_certified": certified,
        "square_followers": followers,
        "square_interactions_30d": interactions,
    }


async def apply(system, body: dict[str, Any], headers: dict | None = None):
    return await system.client.post("/v1/applications", json=body, headers=headers or ADMIN)


async def applied(system, body: dict[str, Any], headers: dict | None = None) -> dict[str, Any]:
    response = await apply(system, body, headers)
    assert response.status_code == 201, response.text
    return response.json()


async def approve(system, application_id: str, body: Any = None, headers: dict | None = None):
    return await system.client.post(
        f"/v1/admin/applications/{application_id}/approve", json=body, headers=headers or ADMIN
    )


async def reject(system, application_id: str, reason: str | None = "not a fit"):
    return await system.client.post(
        f"/v1/admin/applications/{application_id}/reject",
        json={} if reason is None else {"reason": reason},
        headers=ADMIN,
    )


async def creator(system, creator_id: str):
    return await system.client.get(f"/v1/creators/{creator_id}", headers=ADMIN)


async def key_with(system, name: str, *scopes: Scope) -> dict[str, str]:
    async with system.runtime.context.sessionmaker() as session, session.begin():
        key = await create_key(session, name, list(scopes))
    return {"Authorization": f"Bearer {key}"}


def codes(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    eligibility = body["eligibility"]
    return eligibility["basis"], [r["code"] for r in eligibility["reasons"]]


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- who may join -----------------------------------------------------------------------------

SQUARE_REASONS = [
    "square_not_certified",
    "square_followers_below_threshold",
    "square_interactions_below_threshold",
]


async def test_eligibility_boundaries_through_the_api(system):
    cases = {
        # creator: (form, status, basis, reason codes)
        "c-999": (application("c-999", (999, False)), "ineligible", [], None),
        "c-1000": (
            application("c-1000", (1000, False)),
            "pending_review",
            ["followers_on_one_platform"],
            ["not_verified_elsewhere", *SQUARE_REASONS],
        ),
        "c-900-900": (
            application("c-900-900", (900, False), (900, False)),
            "ineligible",
            [],
            ["not_verified_elsewhere", "followers_below_threshold", *SQUARE_REASONS],
        ),
        "c-verified": (
            application("c-verified", (0, True)),
            "pending_review",
            ["verified_elsewhere"],
            ["followers_below_threshold", *SQUARE_REASONS],
        ),
        "c-square": (
            application("c-square", **square(500, 100)),
            "pending_review",
            ["square_creator"],
            ["not_verified_elsewhere", "followers_below_threshold"],
        ),
        "c-square-499": (
            application("c-square-499", **square(499, 100)),
            "ineligible",
            [],
            [
                "not_verified_elsewhere",
                "followers_below_threshold",
                "square_followers_below_threshold",
            ],
        ),
        "c-square-99": (
            application("c-square-99", **square(500, 99)),
            "ineligible",
            [],
            [
                "not_verified_elsewhere",
                "followers_below_threshold",
                "square_interactions_below_threshold",
            ],
        ),
        "c-square-uncertified": (
            application("c-square-uncertified", **square(500, 100, certified=False)),
            "ineligible",
            [],
            ["not_verified_elsewhere", "followers_below_threshold", "square_not_certified"],
        ),
    }
    for creator_id, (form, status, basis, reasons) in cases.items():
        body = await applied(system, form)
        assert body["creator_id"] == creator_id
        assert body["status"] == status, creator_id
        assert body["eligibility"]["eligible"] is (status == "pending_review"), creator_id
        assert codes(body)[0] == basis, creator_id
        if reasons is not None:
            assert codes(body)[1] == reasons, creator_id
        assert all(r["message"] for r in body["eligibility"]["reasons"])
        uuid.UUID(body["id"], version=4)
        assert body["thresholds"] == {
            "min_followers_single_platform": 1000,
            "square_min_followers": 500,
            "square_min_interactions_30d": 100,
        }

    # 900 + 900 is never added up, and the message says so with the numbers
    assert (await creator(system, "c-900-900")).json()["status"] == "ineligible"
    listed = await system.client.get("/v1/admin/applications?creator_id=c-900-900", headers=ADMIN)
    [item] = listed.json()["items"]
    [followers] = [r for r in item["eligibility"]["reasons"] if r["code"].startswith("followers")]
    assert "900" in followers["message"] and "1,000" in followers["message"]
    assert "added up" in followers["message"]

    rows = await system.sql(
        "SELECT status, eligible, basis, reasons, thresholds, form "
        "FROM badges_applications WHERE creator_id = 'c-square-99'"
    )
    [row] = rows
    assert (row["status"], row["eligible"], row["basis"]) == ("ineligible", False, [])
    assert row["reasons"] == cases["c-square-99"][3]  # codes are stored, not messages


@pytest.mark.parametrize(
    "settings_overrides",
    [{"min_followers_single_platform": 2000, "square_min_followers": 10}],
)
async def test_thresholds_come_from_the_settings(system):
    body = await applied(system, application("c-1", (1999, False), **square(10, 100)))
    assert body["status"] == "pending_review"
    assert codes(body) == (
        ["square_creator"],
        ["not_verified_elsewhere", "followers_below_threshold"],
    )
    assert "2,000" in body["eligibility"]["reasons"][1]["message"]
    assert body["thresholds"]["min_followers_single_platform"] == 2000
    assert body["thresholds"]["square_min_followers"] == 10


async def test_messages_follow_the_readers_language(system):
    form = application("c-zh", (900, False), (900, False))
    created = await apply(system, form, headers={**ADMIN, "Accept-Language": "zh-CN,zh;q=0.9"})
    assert created.status_code == 201
    assert created.headers["content-language"] == "zh"
    assert created.headers["location"] == f"/v1/applications/{created.json()['id']}"
    zh = {r["code"]: r["message"] for r in created.json()["eligibility"]["reasons"]}
    assert zh["followers_below_threshold"] == (
        "单个平台最多 900 位粉丝，需要至少 1,000 位（多个平台的粉丝不可叠加）"
    )
    assert zh["square_not_certified"] == "尚未成为广场认证创作者"

    # Messages are rendered when read, in the reader's language, from the stored codes.
    url = f"/v1/applications/{created.json()['id']}"
    english = await system.client.get(url, headers={**ADMIN, "Accept-Language": "en-US"})
    assert english.headers["content-language"] == "en"
    en = {r["code"]: r["message"] for r in english.json()["eligibility"]["reasons"]}
    assert en.keys() == zh.keys()
    assert en["square_not_certified"] == "Not a certified creator on the square"
    default = await system.client.get(url, headers=ADMIN)
    assert default.json()["eligibility"] == english.json()["eligibility"]
    chinese = await system.client.get(url, headers={**ADMIN, "Accept-Language": "zh-TW"})
    assert chinese.json()["eligibility"] == created.json()["eligibility"]


# --- one open application per creator ---------------------------------------------------------


async def test_one_open_application_per_creator_and_none_once_certified(system):
    first = await applied(system, application("c-1", (5000, False)))
    second = await apply(system, application("c-1", (0, True)))
    assert second.status_code == 409
    assert second.json()["error"] == "conflict"
    assert "pending review" in second.json()["message"]
    assert second.json()["details"] == [
        {"creator_id": "c-1", "application_id": first["id"], "status": "pending_review"}
    ]

    assert (await approve(system, first["id"])).status_code == 200
    again = await apply(system, application("c-1", (5000, False)))
    assert again.status_code == 409
    assert "already certified" in again.json()["message"]
    # an ineligible form from a certified creator is refused too: nothing to judge
    assert (await apply(system, application("c-1"))).status_code == 409
    rows = await system.sql("SELECT count(*) AS n FROM badges_applications")
    assert rows[0]["n"] == 1


async def test_a_rejected_or_ineligible_creator_may_apply_again(system):
    ineligible = await applied(system, application("c-1", (999, False)))
    assert ineligible["status"] == "ineligible"
    pending = await applied(system, application("c-1", (1000, False)))
    assert pending["status"] == "pending_review"
    assert (await reject(system, pending["id"], "spam account")).status_code == 200
    third = await applied(system, application("c-1", (0, True)))
    assert third["status"] == "pending_review"
    assert (await creator(system, "c-1")).json()["status"] == "pending_review"

    listed = await system.client.get("/v1/admin/applications?creator_id=c-1", headers=ADMIN)
    assert [a["status"] for a in listed.json()["items"]] == [
        "ineligible",
        "rejected",
        "pending_review",
    ]


async def test_the_open_index_refuses_an_application_committed_meanwhile(system):
    """The look-up before the insert cannot see a concurrent transaction's row: the partial
    unique index refuses the insert, and the answer is a 409, not a 500."""
    connection = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(
            "INSERT INTO badges_applications "
            "(id, creator_id, form, status, eligible, basis, reasons, thresholds) "
            "VALUES ($1, 'c-1', '{}', 'pending_review', true, '{verified_elsewhere}', '{}', '{}')",
            str(uuid.uuid4()),
        )
        request = asyncio.create_task(apply(system, application("c-1", (0, True))))
        await asyncio.sleep(0.5)  # the request's insert waits on the uncommitted row
        assert not request.done()
        await transaction.commit()
        response = await request
    finally:
        await connection.close()
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "conflict"
    assert "c-1" in response.json()["message"]


async def test_concurrent_applications_of_one_creator_store_one(system):
    responses = await asyncio.gather(
        *(apply(system, application("c-1", (5000, False))) for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 5
    rows = await system.sql("SELECT count(*) AS n FROM badges_applications")
    assert rows[0]["n"] == 1


# --- bad input --------------------------------------------------------------------------------


def locs(response) -> list[list]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    assert body["message"]
    return [d["loc"] for d in body["details"]]


async def test_bad_input_is_a_422_naming_the_field(system):
    assert locs(await apply(system, {"platforms": []})) == [["body", "creator_id"]]
    negative = application("c-1", (-1, False))
    assert locs(await apply(system, negative)) == [["body", "platforms", 0, "followers"]]
    assert ["body", "square_followers"] in locs(
        await apply(system, application("c-1", square_followers="many"))
    )
    assert locs(await apply(system, {**application("c-1"), "email": "x@y"})) == [["body", "email"]]
    assert ["body", "creator_id"] in locs(await apply(system, application("")))
    assert locs(await apply(system, application("c-1", display_name="n" * 65))) == [
        ["body", "display_name"]
    ]
    assert (await system.sql("SELECT count(*) AS n FROM badges_applications"))[0]["n"] == 0

    pending = await applied(system, application("c-1", (5000, False)))
    for certified_at in ("yesterday", "2026-10-05T12:00:00", "2026-13-01T00:00:00Z", 1700000000):
        response = await approve(system, pending["id"], {"certified_at": certified_at})
        assert locs(response) == [["body", "certified_at"]], certified_at
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    response = await approve(system, pending["id"], {"certified_at": future})
    assert locs(response) == [["body", "certified_at"]]
    assert "future" in response.json()["message"]
    response = await approve(system, pending["id"], {"certified_at": "1999-12-31T23:59:59Z"})
    assert locs(response) == [["body", "certified_at"]]
    assert locs(await approve(system, pending["id"], {"when": CERTIFIED_AT})) == [["body", "when"]]

    assert locs(await reject(system, pending["id"], None)) == [["body", "reason"]]
    assert locs(await reject(system, pending["id"], "   ")) == [["body", "reason"]]
    assert locs(await reject(system, pending["id"], "x" * 501)) == [["body", "reason"]]
    assert (await reject(system, pending["id"], "x" * 500)).status_code == 200

    for query, loc in (
        ("status=open", ["query", "status"]),
        ("limit=0", ["query", "limit"]),
        ("limit=501", ["query", "limit"]),
        ("offset=-1", ["query", "offset"]),
    ):
        response = await system.client.get(f"/v1/admin/applications?{query}", headers=ADMIN)
        assert locs(response) == [loc], query


# --- review -----------------------------------------------------------------------------------


async def test_the_review_queue_is_paginated_and_filtered(system):
    created = []
    for n, followers in enumerate((5000, 10, 5000, 5000, 10)):
        created.append(await applied(system, application(f"c-{n}", (followers, False))))
    pending_ids = [a["id"] for a in created if a["status"] == "pending_review"]
    assert len(pending_ids) == 3

    async def page(query: str) -> dict:
        response = await system.client.get(f"/v1/admin/applications?{query}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    first = await page("status=pending_review&limit=2")
    assert (first["limit"], first["offset"], first["total"]) == (2, 0, 3)
    assert [a["id"] for a in first["items"]] == pending_ids[:2]
    second = await page("status=pending_review&limit=2&offset=2")
    assert [a["id"] for a in second["items"]] == pending_ids[2:]
    assert (await page("status=pending_review&offset=3"))["items"] == []
    everything = await page("")
    assert (everything["limit"], everything["total"]) == (50, 5)
    assert [a["id"] for a in everything["items"]] == [a["id"] for a in created]
    assert (await page("status=ineligible"))["total"] == 2
    assert (await page("status=approved"))["total"] == 0

    assert (await approve(system, pending_ids[0])).status_code == 200
    assert (await page("status=pending_review"))["total"] == 2
    assert [a["id"] for a in (await page("status=approved"))["items"]] == pending_ids[:1]


async def test_deciding(system):
    pending = await applied(system, application("c-1", (5000, False), display_name="小明"))
    assert pending["decided_at"] is None and pending["certified_at"] is None
    before = datetime.now(UTC)
    response = await approve(system, pending["id"])  # no body: certified now
    assert response.status_code == 200, response.text
    approved = response.json()
    assert approved["status"] == "approved"
    assert approved["decided_by"] == "bootstrap-admin"  # the key's name
    assert before <= instant(approved["certified_at"]) <= datetime.now(UTC)
    assert approved["decided_at"] == approved["certified_at"]
    assert approved["eligibility"] == pending["eligibility"]
    assert (await system.client.get(f"/v1/applications/{pending['id']}", headers=ADMIN)).json() == (
        approved
    )

    twice = await approve(system, pending["id"])
    assert twice.status_code == 409
    assert twice.json()["error"] == "conflict"
    assert "already approved" in twice.json()["message"]
    assert (await reject(system, pending["id"])).status_code == 409

    ineligible = await applied(system, application("c-2", (10, False)))
    refused = await approve(system, ineligible["id"])
    assert refused.status_code == 409
    assert "ineligible" in refused.json()["message"]
    assert (await reject(system, ineligible["id"])).status_code == 409

    other = await applied(system, application("c-3", (0, True)))
    rejected = await reject(system, other["id"], "  the account is not the creator's  ")
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["rejection_reason"] == "the account is not the creator's"
    assert rejected.json()["certified_at"] is None
    assert (await approve(system, other["id"])).status_code == 409
    assert "already rejected" in (await reject(system, other["id"])).json()["message"]

    for path, body in (("approve", {}), ("reject", {"reason": "r"})):
        missing = await system.client.post(
            f"/v1/admin/applications/nope/{path}", json=body, headers=ADMIN
        )
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
    unknown = await system.client.get("/v1/applications/nope", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"

    events = await system.sql("SELECT creator_id FROM events WHERE type = 'creator.certified'")
    assert [r["creator_id"] for r in events] == ["c-1"]  # only the approval


@pytest.mark.usefixtures("bus")
async def test_two_operators_approving_at_once_one_wins(system):
    pending = await applied(system, application("c-1", (5000, False)))
    responses = await asyncio.gather(
        approve(system, pending["id"], {"certified_at": CERTIFIED_AT}),
        approve(system, pending["id"], {"certified_at": "2026-10-06T20:00:00+08:00"}),
        approve(system, pending["id"]),
        reject(system, pending["id"], "too late"),
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409]
    [winner] = [r.json() for r in responses if r.status_code == 200]
    events = await system.sql(
        "SELECT data FROM events WHERE type = 'creator.certified' AND creator_id = 'c-1'"
    )
    if winner["status"] == "approved":
        assert len(events) == 1
    else:
        assert events == []


# --- certification through the bus ------------------------------------------------------------


@pytest.mark.usefixtures("bus")
async def test_approval_certifies_through_the_bus(system):
    pending = await applied(system, application("c-1", (5000, False), display_name="小明"))
    # Not known to the creator view's consumers until approved; the view shows the application.
    view = (await creator(system, "c-1")).json()
    assert (view["status"], view["certified_at"], view["badges"]) == ("pending_review", None, [])

    response = await approve(system, pending["id"], {"certified_at": CERTIFIED_AT})
    assert response.status_code == 200, response.text
    assert instant(response.json()["certified_at"]) == instant(CERTIFIED_AT)

    # The approval is in the event log (the outbox) with the application's data, once.
    events = await system.sql(
        "SELECT event_id, source, type, time, creator_id, data FROM events "
        "WHERE type = 'creator.certified'"
    )
    assert len(events) == 1
    event = events[0]
    assert event["event_id"] == f"application-{pending['id']}-approved"
    assert (event["source"], event["creator_id"]) == ("creator-activity", "c-1")
    assert event["time"] == instant(CERTIFIED_AT)
    assert orjson.loads(event["data"]) == {
        "creator_id": "c-1",
        "certified_at": CERTIFIED_AT,
        "application_id": pending["id"],
        "display_name": "小明",
    }

    await system.wait_until_processed()
    view = await creator(system, "c-1")
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["status"] == "certified"
    assert body["display_name"] == "小明"
    assert instant(body["certified_at"]) == instant(CERTIFIED_AT)
    assert [b["kind"] for b in body["badges"]] == ["certification"]
    assert instant(body["badges"][0]["awarded_at"]) == instant(CERTIFIED_AT)
    assert body["streak"] == {"consecutive_active_months": 0, "last_active_month": None}
    assert body["rewards"] == []
    certified = await system.sql("SELECT creator_id FROM badges_certified_creators")
    assert [r["creator_id"] for r in certified] == ["c-1"]


# --- the creator view -------------------------------------------------------------------------


async def test_the_creator_view(system):
    unknown = await creator(system, "c-nobody")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": "not_found",
        "message": "creator 'c-nobody' has never applied to the program",
    }
    # posts alone do not make a creator known here (the month view shows them)
    assert (await system.post_events([post_created("c-poster")])).status_code == 202
    await system.wait_until_processed()
    assert (await creator(system, "c-poster")).status_code == 404

    await applied(system, application("c-ineligible", (1, False)))
    assert (await creator(system, "c-ineligible")).json()["status"] == "ineligible"
    rejected = await applied(system, application("c-rejected", (0, True)))
    await reject(system, rejected["id"])
    assert (await creator(system, "c-rejected")).json()["status"] == "rejected"

    pending = await applied(system, application("c-1", (0, True), display_name="Ana"))
    await approve(system, pending["id"], {"certified_at": CERTIFIED_AT})
    # rewards as the badges service stores them (issued by its consumer or the monthly program)
    await system.sql(
        "INSERT INTO badges_rewards (id, creator_id, kind, amount, currency, month, status, "
        "issued_at, causes) VALUES "
        "('r-2', 'c-1', 'merch_gift', NULL, NULL, '2026-12', 'issued', "
        "'2027-01-03T00:00:00Z', '[]'), "
        "('r-1', 'c-1', 'monthly_pool_share', 12.5, 'USDT', '2026-11', 'issued', "
        "'2026-12-03T00:00:00Z', '[]'), "
        "('r-3', 'c-2', 'new_creator_voucher', 50, 'USD', NULL, 'issued', "
        "'2026-10-06T00:00:00Z', '[]')"
    )
    body = (await creator(system, "c-1")).json()
    assert body["status"] == "certified"
    assert body["rewards"] == [  # in the order issued
        {
            "id": "r-2",
            "creator_id": "c-1",
            "kind": "merch_gift",
            "amount": None,
            "currency": None,
            "month": "2026-12",
            "status": "issued",
            "issued_at": "2027-01-03T00:00:00Z",
        },
        {
            "id": "r-1",
            "creator_id": "c-1",
            "kind": "monthly_pool_share",
            "amount": "12.50",
            "currency": "USDT",
            "month": "2026-11",
            "status": "issued",
            "issued_at": "2026-12-03T00:00:00Z",
        },
    ]


# --- scopes -----------------------------------------------------------------------------------


async def test_scopes(system):
    platform = await key_with(system, "platform", Scope.EVENTS_WRITE)
    reader = await key_with(system, "dashboard", Scope.READ)
    created = await apply(system, application("c-1", (5000, False)), headers=platform)
    assert created.status_code == 201
    application_id = created.json()["id"]

    assert (await apply(system, application("c-2", (5000, False)), headers=reader)).status_code == (
        403
    )
    for headers in (platform, reader):
        refused = await approve(system, application_id, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
        listed = await system.client.get("/v1/admin/applications", headers=headers)
        assert listed.status_code == 403
    read = await system.client.get(f"/v1/applications/{application_id}", headers=reader)
    assert read.status_code == 200
    assert (
        await system.client.get(f"/v1/applications/{application_id}", headers=platform)
    ).status_code == 403
    assert (await system.client.get("/v1/creators/c-1", headers=reader)).status_code == 200
    anonymous = await system.client.post("/v1/applications", json=application("c-3"))
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
