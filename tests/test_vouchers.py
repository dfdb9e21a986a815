"""The new-creator voucher (reward 1), the certification badge and the promotion slots, end to
end: applications approved through the API, posts through ingest, the badges group on a bus."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime, timedelta

import pytest

from shared.program_time import current_month
from tests.brokers import free_port
from tests.system import ADMIN, ADMIN_KEY, post_created, run_cli

LONG = "今天聊聊回购市场的流动性压力,以及它对加密资产价格的影响和后续的政策走向分析。" * 2
SHORT_49 = "字" * 49
CERTIFIED_AT = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)  # one calendar month later


async def certify(system, creator_id: str, certified_at: datetime | None = None) -> dict:
    form = {
        "creator_id": creator_id,
        "display_name": creator_id,
        "platforms": [
            {"platform": "x", "handle": creator_id, "followers": 5000, "verified": False}
        ],
    }
    applied = await system.client.post("/v1/applications", json=form, headers=ADMIN)
    assert applied.status_code == 201, applied.text
    body = {"certified_at": certified_at.isoformat()} if certified_at else {}
    approved = await system.client.post(
        f"/v1/admin/applications/{applied.json()['id']}/approve", json=body, headers=ADMIN
    )
    assert approved.status_code == 200, approved.text
    return approved.json()


def post_at(creator_id: str, moment: datetime, **fields) -> dict:
    return post_created(creator_id, time=moment.isoformat(), **({"text": LONG} | fields))


async def voucher_holders(system) -> list[str]:
    rows = await system.sql(
        "SELECT creator_id FROM badges_rewards WHERE kind = 'new_creator_voucher' "
        "ORDER BY creator_id"
    )
    return [r["creator_id"] for r in rows]


async def pool(system) -> dict:
    response = await system.client.get("/v1/programs/new-creator-vouchers", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.usefixtures("bus")
async def test_the_window_and_what_qualifies(system):
    second = timedelta(seconds=1)
    early = "c-early-arrival"
    # A post inside the window that arrives before the certification event counts.
    await system.post_events([post_at(early, CERTIFIED_AT + timedelta(days=3))])
    await system.wait_until_processed()

    cases = {
        "c-one-second-before": [post_at("c-one-second-before", CERTIFIED_AT - second)],
        "c-at-the-start": [post_at("c-at-the-start", CERTIFIED_AT)],
        "c-last-second": [post_at("c-last-second", WINDOW_END - second)],
        "c-at-the-end": [post_at("c-at-the-end", WINDOW_END)],
        "c-image-short-text": [
            post_at("c-image-short-text", CERTIFIED_AT, text="看图", image_count=1)
        ],
        "c-image-no-text": [post_at("c-image-no-text", CERTIFIED_AT, text=" ", image_count=2)],
        "c-49-characters": [post_at("c-49-characters", CERTIFIED_AT, text=SHORT_49)],
        "c-50-characters": [post_at("c-50-characters", CERTIFIED_AT, text=SHORT_49 + "字")],
        "c-repost": [post_at("c-repost", CERTIFIED_AT, kind="repost")],
    }
    for creator_id in [*cases, early]:
        await certify(system, creator_id, CERTIFIED_AT)
    # a post deleted before it could count, and one removed by moderation
    deleted = post_at("c-deleted", CERTIFIED_AT + second, post_id="p-deleted")
    removed = post_at("c-removed", CERTIFIED_AT + second, post_id="p-removed")
    await system.post_events(
        [
            deleted,
            {
                "id": "del-1",
                "type": "post.deleted",
                "time": deleted["time"],
                "data": {"creator_id": "c-deleted", "post_id": "p-deleted"},
            },
            removed,
            {
                "id": "mod-1",
                "type": "post.moderated",
                "time": removed["time"],
                "data": {"creator_id": "c-removed", "post_id": "p-removed", "verdict": "removed"},
            },
        ]
    )
    await certify(system, "c-deleted", CERTIFIED_AT)
    await certify(system, "c-removed", CERTIFIED_AT)
    await system.post_events([event for batch in cases.values() for event in batch])
    await system.wait_until_processed()

    assert await voucher_holders(system) == sorted(
        [
            "c-at-the-start",
            "c-early-arrival",
            "c-image-short-text",
            "c-last-second",
            "c-50-characters",
        ]
    )
    assert await pool(system) == {"cap": 100, "issued": 5, "remaining": 95, "amount": "50.00"}
    [voucher] = await system.sql(
        "SELECT amount, currency, causes FROM badges_rewards WHERE creator_id = 'c-at-the-start'"
    )
    assert (str(voucher["amount"]), voucher["currency"]) == ("50.00", "USD")
    assert "post.created" in voucher["causes"] and "creator.certified" in voucher["causes"]

    # A creator gets one voucher, whatever else it posts; a later post does not add one.
    await system.post_events([post_at("c-at-the-start", CERTIFIED_AT + timedelta(days=1))])
    await system.wait_until_processed()
    assert (await pool(system))["issued"] == 5


@pytest.mark.usefixtures("bus")
async def test_the_badge_and_the_voucher_are_issued_once_whatever_the_redelivery(system):
    await certify(system, "c-1", CERTIFIED_AT)
    await system.post_events([post_at("c-1", CERTIFIED_AT + timedelta(hours=1))])
    await system.wait_until_processed()

    # Everything again: the relay republishes (Kafka), the group replays its log, the same
    # post comes again under another event id.
    await system.sql("UPDATE relay_positions SET position = 0")
    await system.sql("DELETE FROM consumer_positions WHERE group_name = 'badges'")
    await system.post_events([post_at("c-1", CERTIFIED_AT + timedelta(hours=1), post_id="p-x")])
    await system.wait_until_processed()

    creator = (await system.client.get("/v1/creators/c-1", headers=ADMIN)).json()
    assert [b["kind"] for b in creator["badges"]] == ["certification"]
    assert [r["kind"] for r in creator["rewards"]] == ["new_creator_voucher"]
    assert (await pool(system))["issued"] == 1


async def rewards_and_badges(system) -> tuple[list, list]:
    rewards = await system.sql("SELECT id, creator_id, kind FROM badges_rewards ORDER BY id")
    badges = await system.sql("SELECT creator_id, kind FROM badges_badges ORDER BY creator_id")
    return [tuple(r) for r in rewards], [tuple(b) for b in badges]


@pytest.mark.usefixtures("bus")
async def test_a_replay_of_the_log_rebuilds_the_same_badges_and_vouchers(system):
    for n in range(4):
        await system.post_events([post_at(f"c-{n}", CERTIFIED_AT + timedelta(hours=n))])
        await certify(system, f"c-{n}", CERTIFIED_AT)
    await system.post_events([post_at("c-0", CERTIFIED_AT + timedelta(days=2))])
    await system.wait_until_processed()
    before = await rewards_and_badges(system)
    assert len(before[0]) == 4 and len(before[1]) == 4

    await system.runtime.stop_workers()  # the badges group's state is lost, the log is not
    await system.sql(
        "TRUNCATE badges_rewards, badges_badges, badges_certified_creators, badges_posts, "
        "badges_voucher_pool, badges_creator_posts, badges_settled_months"
    )
    await system.sql("DELETE FROM consumer_positions WHERE group_name = 'badges'")
    await system.sql("DELETE FROM processed_events WHERE group_name = 'badges'")
    code, output = await run_cli(system.database_url, "replay", "--group", "badges")
    assert code == 0, output
    assert await rewards_and_badges(system) == before  # same ids, same creators
    assert (await pool(system))["issued"] == 4


# --- the cap: 150 creators, 100 vouchers ---------------------------------------------------

CREATORS = [f"c-{n:03d}" for n in range(150)]
GROUP_SETTLES_S = 5  # new members join; the old ones rejoin within a 3 s session timeout


def first_posts() -> list[dict]:
    return [post_at(c, CERTIFIED_AT + timedelta(minutes=n)) for n, c in enumerate(CREATORS)]


async def post_concurrently(system, events: list[dict], clients: int = 15) -> None:
    async def send(chunk):
        response = await system.post_events(chunk)
        assert response.status_code == 202, response.text

    size = len(events) // clients + 1
    await asyncio.gather(*(send(events[i : i + size]) for i in range(0, len(events), size)))


async def assert_exactly_the_cap(system) -> None:
    holders = await voucher_holders(system)
    assert len(holders) == 100
    assert len(set(holders)) == 100
    assert await pool(system) == {"cap": 100, "issued": 100, "remaining": 0, "amount": "50.00"}


@pytest.fixture
def cap_settings() -> dict:
    return {"kafka_partitions": 6, "consumer_batch_size": 20}


# A check-then-insert claim: read the pool, then write it. What the cap test must catch.
CHECK_THEN_INSERT = """
import asyncio
from datetime import UTC, datetime
from sqlalchemy import update
from services.badges import rewards, vouchers
from services.badges.models import VoucherPool

async def check_then_insert(session, settings, creator_id, causes):
    row = await session.get(VoucherPool, vouchers.POOL)
    issued = row.issued if row else 0
    if issued >= settings.voucher_cap:
        return False
    await asyncio.sleep(0.02)
    await rewards.issue(session, rewards.NewReward(
        id=vouchers.voucher_id(creator_id), creator_id=creator_id,
        kind=rewards.NEW_CREATOR_VOUCHER, issued_at=datetime.now(UTC), causes=causes))
    await session.execute(update(VoucherPool).where(VoucherPool.id == vouchers.POOL)
                          .values(issued=issued + 1))
    return True

vouchers.claim = check_then_insert
"""


@pytest.mark.usefixtures("bus")
class TestTheCap:
    """150 certified creators post their first qualifying posts at once; three badges
    processes (and the test's own badges consumer) share a six-partition topic; one process is
    killed mid-batch and restarted, and the relay publishes everything again."""

    @pytest.fixture
    def bus(self) -> str:
        return "kafka"

    @pytest.fixture
    def settings_overrides(self, cap_settings):
        return cap_settings

    async def run(self, system, patch: str = "") -> None:
        await system.sql("INSERT INTO badges_voucher_pool (id, cap, issued) VALUES (1, 100, 0)")
        processes = [await start_badges_process(system, patch) for _ in range(3)]
        try:
            await asyncio.sleep(GROUP_SETTLES_S)  # the three share the partitions
            for creator_id in CREATORS:
                await certify(system, creator_id, CERTIFIED_AT)
            await system.wait_until_processed(within=60)
            await post_concurrently(system, first_posts())
            await asyncio.sleep(0.3)
            victim = processes.pop(0)  # killed mid-batch, then started again
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            processes.append(await start_badges_process(system, patch))
            await system.sql("UPDATE relay_positions SET position = 0")  # everything again
            await system.wait_until_processed(within=120)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            await asyncio.gather(*(p.wait() for p in processes))

    async def test_never_more_than_100_with_several_processes_and_redelivery(self, system):
        await self.run(system)
        await assert_exactly_the_cap(system)

    async def test_a_check_then_insert_claim_breaks_it(self, system):
        """The mutation run: the same scenario, the three processes with a claim that reads,
        then writes, the pool: more than 100 get through; so the test above can fail."""
        await self.run(system, patch=CHECK_THEN_INSERT)
        with pytest.raises(AssertionError):
            await assert_exactly_the_cap(system)
        assert len(await voucher_holders(system)) > 100


async def start_badges_process(system, patch: str = "") -> asyncio.subprocess.Process:
    """`creator-activity badges` as its own process, on the test's database and topics;
    `patch` is Python run first (the mutation run)."""
    settings = system.runtime.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")},
        "CREATOR_ACTIVITY_DATABASE_URL": system.database_url.replace("+asyncpg", ""),
        "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CREATOR_ACTIVITY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CREATOR_ACTIVITY_KAFKA_EVENTS_TOPIC": settings.kafka_events_topic,
        "CREATOR_ACTIVITY_KAFKA_REWARDS_TOPIC": settings.kafka_rewards_topic,
        "CREATOR_ACTIVITY_KAFKA_GROUP_PREFIX": settings.kafka_group_prefix,
        "CREATOR_ACTIVITY_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "CREATOR_ACTIVITY_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "CREATOR_ACTIVITY_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "CREATOR_ACTIVITY_CONSUMER_BATCH_SIZE": str(settings.consumer_batch_size),
        "CREATOR_ACTIVITY_LOG_LEVEL": "WARNING",
    }
    run_the_cli = (
        "import sys; from services.cli import main; sys.argv[0] = 'creator-activity'; main()"
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        patch + "\n" + run_the_cli,
        "badges",
        "--port",
        str(free_port()),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


# --- promotion slots -------------------------------------------------------------------------


async def test_one_promotion_slot_per_certified_creator_and_month(system):
    await certify(system, "c-1")
    this_month = current_month(system.runtime.settings.timezone)
    year, month = map(int, this_month.split("-"))
    next_month = f"{year + month // 12}-{month % 12 + 1:02d}"
    previous = f"{year - (month == 1)}-{(month - 2) % 12 + 1:02d}"

    async def use(creator_id: str, month: str):
        return await system.client.post(
            f"/v1/admin/creators/{creator_id}/promotion-slots/{month}", headers=ADMIN
        )

    first = await use("c-1", this_month)
    assert first.status_code == 201, first.text
    assert first.json()["kind"] == "promotion_slot" and first.json()["month"] == this_month
    assert first.json()["amount"] is None and first.json()["currency"] is None
    again = await use("c-1", this_month)
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    assert (await use("c-1", next_month)).status_code == 201
    assert (await use("c-1", previous)).status_code == 409  # slots do not carry over
    assert (await use("c-nobody", this_month)).status_code == 409  # not certified
    assert (await use("c-1", "2026-13")).status_code == 422
    slots = await system.sql("SELECT month FROM badges_rewards WHERE kind = 'promotion_slot'")
    assert sorted(r["month"] for r in slots) == sorted([this_month, next_month])
