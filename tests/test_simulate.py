"""`creator-activity simulate`: the demo month, generated (pure) and posted through the HTTP API
of a real `creator-activity serve` process, on both buses."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest

from services.simulate.client import MAX_BATCH, batches
from services.simulate.month import generate, month_bounds
from services.simulate.run import iso_weeks
from shared.characters import count_characters
from tests.brokers import free_port
from tests.conftest import make_settings
from tests.system import ADMIN, ADMIN_KEY, CLI, run_cli, wait_until_ready

ZONE = ZoneInfo("Asia/Shanghai")
MONTH = "2026-10"  # over, grace included: it can be settled
CREATORS = 20  # enough for every path (see the asserts), small enough for a loaded machine
SEED = 3
VOUCHER_CAP = 5  # fewer than the approved creators: the cap must hold


# --- the month, pure ------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_month_and_another_seed_another():
    first = generate(CREATORS, MONTH, SEED, ZONE)
    assert generate(CREATORS, MONTH, SEED, ZONE) == first
    other = generate(CREATORS, MONTH, SEED + 1, ZONE)
    assert {e["id"] for e in other.all_events}.isdisjoint(e["id"] for e in first.all_events)
    # The creators of a seed are the same in every month (streaks), their activity is not.
    november = generate(CREATORS, "2026-11", SEED, ZONE)
    assert [c.display_name for c in november.creators] == [c.display_name for c in first.creators]
    assert {e["id"] for e in november.all_events}.isdisjoint(e["id"] for e in first.all_events)


def test_the_month_holds_what_a_real_one_does():
    month = generate(CREATORS, MONTH, SEED, ZONE)
    events = month.all_events
    start, end = month_bounds(MONTH, ZONE)
    assert len({(e["source"], e["id"]) for e in events}) == len(events)
    assert all(start.isoformat() <= e["time"] < end.isoformat() for e in events)
    types = Counter(e["type"] for e in events)
    assert set(types) == {
        "post.created",
        "post.updated",
        "post.deleted",
        "post.moderated",
        "interaction.created",
        "interaction.deleted",
        "creator.followers_changed",
    }
    interactions = [e["data"] for e in events if e["type"] == "interaction.created"]
    self_likes = [i for i in interactions if i["actor_id"] == i["creator_id"]]
    assert self_likes and all(i["kind"] == "like" for i in self_likes)
    assert {i["kind"] for i in interactions} == {"like", "comment", "share", "quote"}
    assert len({i["actor_id"] for i in interactions}) > 100  # many actors

    posts = {e["data"]["post_id"]: e["data"] for e in events if e["type"] == "post.created"}
    assert month.near_duplicates
    for copy, original in month.near_duplicates:
        assert posts[copy]["creator_id"] and posts[original]["text"]
    texts = [p["text"] for p in posts.values()]
    assert any("回购" in t for t in texts) and any("the" in t.split() for t in texts)
    assert any(p["kind"] in ("repost", "quote") for p in posts.values())
    assert any(count_characters(p["text"]) < 50 and p["image_count"] for p in posts.values())
    # Late: posted after the rest, and some interactions arrive before their post.
    assert month.late_events
    late_posts = {e["data"]["post_id"] for e in month.late_events if e["type"] == "post.created"}
    assert any(
        e["type"] == "interaction.created" and e["data"]["post_id"] in late_posts
        for e in month.events
    )

    applications = [c.application for c in month.creators if c.application]
    assert any(not a.eligible for a in applications)
    assert {a.decision for a in applications if a.eligible} == {"approve", "reject", "pending"}
    assert all(a.certified_at and a.certified_at < end for a in applications if a.certified_at)
    assert all(len(batch) <= MAX_BATCH for batch in batches(list(events)))


def test_the_iso_weeks_of_a_month_are_those_whose_thursday_is_in_it():
    assert iso_weeks("2026-10") == ["2026-W40", "2026-W41", "2026-W42", "2026-W43", "2026-W44"]
    assert iso_weeks("2026-11")[0] == "2026-W45"  # Thursday 5 November


# --- the demo against a running service -----------------------------------------------------


@pytest.fixture
async def served(bus, database_url, request):
    """A `creator-activity serve` process on the test database and bus; its base URL."""
    bootstrap = request.getfixturevalue("kafka_bootstrap") if bus == "kafka" else None
    settings = make_settings(bus, bootstrap)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")},
        "CREATOR_ACTIVITY_DATABASE_URL": database_url.replace("+asyncpg", ""),
        "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CREATOR_ACTIVITY_CONSUMER_POLL_INTERVAL_MS": "20",
        "CREATOR_ACTIVITY_NEW_CREATOR_POOL": str(VOUCHER_CAP * 50),
        "CREATOR_ACTIVITY_LOG_LEVEL": "WARNING",
        "CREATOR_ACTIVITY_CONSUMER_BATCH_SIZE": "2000",
    }
    if bootstrap:
        env.update(
            CREATOR_ACTIVITY_KAFKA_BOOTSTRAP=bootstrap,
            CREATOR_ACTIVITY_KAFKA_EVENTS_TOPIC=settings.kafka_events_topic,
            CREATOR_ACTIVITY_KAFKA_REWARDS_TOPIC=settings.kafka_rewards_topic,
            CREATOR_ACTIVITY_KAFKA_GROUP_PREFIX=settings.kafka_group_prefix,
            CREATOR_ACTIVITY_CONSUMER_FLOOR_INTERVAL_MS="100",
        )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=60) as client:
            await wait_until_ready(client, process, within=60)
            yield url, client
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()[-2000:]


async def _simulate(url: str) -> tuple[int, str]:
    return await run_cli(
        None,
        "simulate",
        *("--creators", str(CREATORS), "--month", MONTH, "--seed", str(SEED), "--url", url),
        CREATOR_ACTIVITY_API_KEY=ADMIN_KEY,
        COLUMNS="160",
    )


async def _state(client: httpx.AsyncClient, database_url: str) -> dict:
    ranking = (await client.get(f"/v1/rankings/{MONTH}", params={"limit": 500})).json()
    rewards = (await client.get("/v1/rewards", params={"limit": 500})).json()
    applications = (await client.get("/v1/admin/applications", params={"limit": 500})).json()
    return {
        "ranking": ranking,
        "rewards": rewards["items"],
        "applications": [(a["id"], a["status"]) for a in applications["items"]],
        "vouchers": (await client.get("/v1/programs/new-creator-vouchers")).json(),
    }


@pytest.mark.timeout(900)  # minutes only on a machine shared with many test runs
async def test_simulate_posts_a_month_settles_it_and_changes_nothing_the_second_time(
    served, database_url
):
    url, client = served
    code, output = await _simulate(url)
    assert code == 0, output
    assert "Leaderboard 2026-10 (settled" in output and "Rewards issued" in output, output
    assert f"new-creator vouchers: {VOUCHER_CAP} issued of {VOUCHER_CAP}" in output, output

    first = await _state(client, database_url)
    ranking = first["ranking"]
    assert ranking["status"] == "settled"
    entries = ranking["entries"]
    assert len(entries) == ranking["total"] > 0
    eligible = [e for e in entries if e["eligible"]]
    assert eligible, "a demo month has creators who share the pool"
    assert sum(Decimal(e["payout"]) for e in entries) == Decimal(ranking["pool"]) == Decimal(1500)
    assert all(Decimal(e["payout"]) == 0 for e in entries if not e["eligible"])
    assert all(e["qualifying_posts"] >= 30 for e in eligible)
    assert [e["rank"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["creator_id"] in output  # the table shows the leader

    # Vouchers: more creators were approved with a qualifying post than the pool holds.
    kinds = Counter(r["kind"] for r in first["rewards"])
    assert first["vouchers"]["cap"] == VOUCHER_CAP
    assert first["vouchers"]["issued"] == VOUCHER_CAP == kinds["new_creator_voucher"]
    assert kinds["monthly_pool_share"] == len(eligible)
    statuses = Counter(status for _, status in first["applications"])
    assert statuses["approved"] and statuses["rejected"] and statuses["ineligible"]
    assert statuses["pending_review"], "some applications are left for the review queue"

    # What the month holds reached the rules: self-likes count zero, copies are caught.
    month = generate(CREATORS, MONTH, SEED, ZONE)
    copies = [copy for copy, _ in month.near_duplicates]
    caught = await _copies_marked(client, month, copies)
    assert caught, "the near-duplicates are not recognised as such"

    code, again = await _simulate(url)
    assert code == 0, again
    assert "events: 0 accepted" in again and "applied before" in again, again
    second = await _state(client, database_url)
    assert second == first  # same leaderboard, same rewards, no new application
    assert _table(again) == _table(output)


async def _copies_marked(client: httpx.AsyncClient, month, copies: list[str]) -> list[str]:
    """Copies the month view of their creator lists as not qualifying for being a copy."""
    author = {
        e["data"]["post_id"]: e["data"]["creator_id"]
        for e in month.all_events
        if e["type"] == "post.created"
    }
    caught = []
    for creator_id in sorted({author[c] for c in copies}):
        view = (await client.get(f"/v1/creators/{creator_id}/months/{MONTH}")).json()
        for post in view["non_qualifying_posts"]:
            codes = {reason["code"] for reason in post["reasons"]}
            if post["post_id"] in copies and any("duplicate" in code for code in codes):
                caught.append(post["post_id"])
    return caught


def _table(output: str) -> str:
    """From the leaderboard to the voucher pool (a retry note may follow)."""
    start = output.index("Leaderboard")
    return output[start : output.index("\n", output.index("new-creator vouchers:", start))]
