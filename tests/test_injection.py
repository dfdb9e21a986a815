"""Bad input changes nothing and costs little.

- Injection: every path and query parameter of every documented operation gets SQL
  metacharacters, path traversal, confusable and invisible Unicode, NUL, numbers that do not
  fit and very long values, one parameter at a time (the others valid). Every answer is a
  4xx in the error shape, or a 2xx list that matched nothing (a filter compares the value
  literally); every table of the database is identical before and after.
- Bodies: on every operation that takes a body, one over the limit is a 413 before it is read
  (by its Content-Length) or as soon as it passes the limit while streaming (the rest is never
  read), and JSON nested deeper than MAX_JSON_DEPTH levels is a 400, also far past the depth
  where parsers give up; nothing is stored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from services.runtime import Runtime
from shared.settings import Settings
from shared.web import MAX_JSON_DEPTH, nesting_exceeds
from tests.system import ADMIN, System, post_created

DOCUMENT = Runtime(Settings(_env_file=None)).create_app(manage_lifecycle=False).openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
]

HOSTILE = [
    "' OR '1'='1",
    "c-1' OR 1=1 --",
    "'; DROP TABLE events; --",
    "1; DELETE FROM api_keys",
    '" OR ""="',
    "c-1') UNION SELECT key_hash FROM api_keys --",
    "%' OR 1=1 --",
    "\\",
    "$1",
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2f",
    "....//....//",
    "/v1/admin/consumers",
    "c\u202e1-",  # right-to-left override
    "ｃ－１",  # fullwidth look-alike of c-1
    "c-1\u200b",  # zero-width space
    "\ufeffc-1",
    "C-1",
    "c-1 ",
    "İ",
    "👨‍👩‍👧",
    "e\u0301",
    "\x00",
    "c-1\x00' OR 1=1",
    "-1",
    "99999999999999999999999999",
    "1e309",
    "NaN",
    "2026-11' --",
    "2026-W45' --",
    "a" * 4000,
    "中" * 2000,
]
VALID = {
    "creator_id": "c-1",
    "month": "2026-11",
    "week": "2026-W45",
    "application_id": None,  # the seeded application's
}


# Precomputed lists a read may refresh from the facts (services/scoring/freshness.py): a cache
# of what the facts already say, not a change an input could make.
DERIVED_ON_READ = {
    "scoring_standings",
    "scoring_standings_refreshes",
    "scoring_recommendations",
    "scoring_rank_snapshots",
    "scoring_rank_snapshot_days",
}


async def snapshot(system: System) -> dict[str, list[str]]:
    """Every row of every table, as text, in a stable order."""
    tables = await system.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    tables = [row for row in tables if row["tablename"] not in DERIVED_ON_READ]
    contents = {}
    for table in (row["tablename"] for row in tables):
        rows = await system.sql(f'SELECT t::text AS row FROM "{table}" AS t')
        contents[table] = sorted(row["row"] for row in rows)
    return contents


async def seed(system: System) -> str:
    """A creator with posts, an application pending review; everything processed."""
    response = await system.post_events([post_created("c-1") for _ in range(3)])
    assert response.status_code == 202, response.text
    form = {"creator_id": "c-1", "platforms": [{"platform": "x", "handle": "c1",
            "followers": 5000, "verified": False}]}  # fmt: skip
    response = await system.client.post("/v1/applications", json=form, headers=ADMIN)
    assert response.status_code == 201, response.text
    await system.wait_until_processed()
    return response.json()["id"]


def _url(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    return path


async def test_injection_in_any_parameter_changes_nothing(system):
    VALID["application_id"] = await seed(system)
    before = await snapshot(system)
    seen: set[int] = set()
    wrong = []
    for method, path, operation in OPERATIONS:
        parameters = [p for p in operation.get("parameters", []) if p["in"] in ("path", "query")]
        path_values = {p["name"]: VALID[p["name"]] for p in parameters if p["in"] == "path"}
        for parameter in parameters:
            for value in HOSTILE:
                url_values, query = dict(path_values), {}
                if parameter["in"] == "path":
                    url_values[parameter["name"]] = value
                else:
                    query[parameter["name"]] = value
                response = await system.client.request(
                    method, _url(path, url_values), params=query, headers=ADMIN
                )
                seen.add(response.status_code)
                problem = _problem(response)
                if problem:
                    wrong.append(f"{method} {path} {parameter['name']}={value[:40]!r}: {problem}")
    assert wrong == []
    assert await snapshot(system) == before
    assert seen <= {200, 404, 409, 422}, seen
    assert {404, 422} <= seen


def _problem(response) -> str | None:
    status = response.status_code
    if status >= 500 or status < 200 or 300 <= status < 400:
        return f"{status} {response.text[:200]}"
    body = response.json()
    if status >= 400:
        if not (isinstance(body.get("error"), str) and isinstance(body.get("message"), str)):
            return f"{status} not in the error shape: {body}"
        return None
    # a 2xx: a filter that compared the value literally and matched nothing
    items = body.get("items", body.get("entries"))
    if items:
        return f"{status} matched something: {str(body)[:200]}"
    return None


# --- bodies ---------------------------------------------------------------------------------

BODY_OPERATIONS = [(m, p) for m, p, operation in OPERATIONS if "requestBody" in operation]


def _concrete(path: str) -> str:
    return _url(
        path, {**VALID, "application_id": "00000000-0000-4000-8000-000000000000"}
    )  # nothing of the kind exists: a body that got through would be a 404, not a change


def _limit(system: System, path: str) -> int:
    settings = system.runtime.settings
    return settings.max_body_bytes if path == "/v1/events" else settings.max_request_body_bytes


def test_every_operation_that_takes_a_body_is_covered():
    assert ("POST", "/v1/events") in BODY_OPERATIONS
    assert ("POST", "/v1/applications") in BODY_OPERATIONS
    assert ("POST", "/v1/admin/applications/{application_id}/reject") in BODY_OPERATIONS


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
async def test_a_body_over_the_limit_is_refused_by_its_length_without_reading_it(
    system, method, path
):
    limit = _limit(system, path)
    read = []

    async def body():
        read.append(1)
        yield b"[" + b" " * limit + b"]"

    headers = {**ADMIN, "Content-Type": "application/json", "Content-Length": str(limit + 2)}
    response = await system.client.request(method, _concrete(path), content=body(), headers=headers)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
    assert read == [] or len(read) == 1  # refused on the declared length


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
async def test_a_streamed_body_is_cut_off_at_the_limit(system, method, path):
    limit = _limit(system, path)  # a stream has no Content-Length: counted while read
    chunk = b" " * 16384
    sent = []

    async def endless():
        yield b"["
        for _ in range(limit // len(chunk) * 10):  # ten times the limit, if it were all read
            sent.append(len(chunk))
            yield chunk

    before = await system.sql("SELECT count(*) AS n FROM events")
    response = await system.client.request(
        method,
        _concrete(path),
        content=endless(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
    assert sum(sent) <= limit + 2 * len(chunk)  # the rest was never read
    assert await system.sql("SELECT count(*) AS n FROM events") == before


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """JSON nested `depth` levels deep (arrays in an object), built without recursion."""
    return b'{"a":' + b"[" * (depth - 1) + leaf + b"]" * (depth - 1) + b"}"


async def test_json_nested_too_deep_is_400_and_to_the_limit_is_judged_on_its_content(system):
    for method, path in BODY_OPERATIONS:
        # past the limit, past where parsers give up (orjson 1,024, json ~1,000), and far past
        for depth in (MAX_JSON_DEPTH + 1, 5000, 30_000):
            response = await system.client.request(
                method,
                _concrete(path),
                content=nested(depth),
                headers={**ADMIN, "Content-Type": "application/json"},
            )
            assert response.status_code == 400, (path, depth, response.text)
            assert response.json()["error"] == "malformed_request"
            assert f"deeper than {MAX_JSON_DEPTH} levels" in response.json()["message"]
        response = await system.client.request(
            method,
            _concrete(path),
            content=nested(MAX_JSON_DEPTH),
            headers={**ADMIN, "Content-Type": "application/json"},
        )
        assert response.status_code in (404, 422), (path, response.text)  # not about depth
    assert (await system.sql("SELECT count(*) AS n FROM events"))[0]["n"] == 0


def test_nesting_depth_counts_levels_of_arrays_and_objects():
    def deep(depth: int) -> Any:
        value: Any = 1
        for level in range(depth):  # arrays and objects in turn
            value = [value] if level % 2 else {"k": value}
        return value

    assert not nesting_exceeds(1, 0)
    assert not nesting_exceeds([], 1)
    assert nesting_exceeds([[]], 1)
    assert not nesting_exceeds(deep(64), 64)
    assert nesting_exceeds(deep(65), 64)
    assert not nesting_exceeds([{"a": [1, {"b": []}]}, "x", {"c": "d"}], 5)
    assert nesting_exceeds([{"a": [1, {"b": []}]}, "x", {"c": "d"}], 4)
    assert not nesting_exceeds([[0] * 100_000], 2)  # width is not depth
