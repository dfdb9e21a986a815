"""End to end, once per bus: HTTP -> event log -> bus -> consumers -> read API."""

from __future__ import annotations

import asyncio

import pytest

from tests.system import ADMIN, interaction_created, post_created

pytestmark = pytest.mark.usefixtures("bus")  # every test here runs on both buses


async def test_posted_batch_is_counted_in_the_program_month(system):
    batch = [
        post_created("c-1", "p-1", time="2026-11-03T10:00:00+08:00"),
        post_created("c-1", "p-2", time="2026-11-04T10:00:00+08:00"),
        interaction_created("c-1", "p-1", "a-1"),
        interaction_created("c-1", "p-1", "a-2", kind="comment"),
        interaction_created("c-1", "p-2", "a-1", kind="share"),
        # 20:00 UTC on Sep 30 is Oct 1 in the program zone (UTC+8)
        post_created("c-1", "p-3", time="2026-09-30T20:00:00Z"),
        post_created("c-2", "p-4"),
    ]
    response = await system.post_events(batch)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 7

    await system.wait_until_processed()
    month = await system.month("c-1", "2026-11")
    assert (month["creator_id"], month["month"], month["posts"]) == ("c-1", "2026-11", 2)
    assert month["interactions"] == 1 + 2 + 3  # a like, a comment, a share, weighted
    assert (await system.month("c-1", "2026-10"))["posts"] == 1
    assert (await system.month("c-2", "2026-11"))["posts"] == 1
    missing = await system.client.get("/v1/creators/c-9/months/2026-11", headers=ADMIN)
    assert missing.status_code == 404

    badges = await system.sql(
        "SELECT creator_id, first_post_id, posts FROM badges_creator_posts ORDER BY creator_id"
    )
    assert [tuple(r) for r in badges] == [("c-1", "p-3", 3), ("c-2", "p-4", 1)]  # earliest


async def test_resent_events_are_not_counted_twice(system):
    batch = [post_created("c-1"), post_created("c-1"), interaction_created("c-1")]
    assert (await system.post_events(batch)).json()["accepted"] == 3
    await system.wait_until_processed()

    again = await system.post_events(batch)
    assert again.status_code == 202
    assert again.json()["duplicates"] == 3
    await system.wait_until_processed()

    month = await system.month("c-1", "2026-11")
    assert (month["posts"], month["interactions"]) == (2, 1)


async def test_invalid_event_mid_batch_rejects_the_whole_batch(system):
    batch = [post_created("c-1"), post_created("c-1"), post_created("c-1")]
    batch[1]["data"]["image_count"] = -1
    response = await system.post_events(batch)
    assert response.status_code == 422
    assert response.json()["details"][0]["index"] == 1

    await system.post_events([post_created("c-2")])
    await system.wait_until_processed()
    rows = await system.sql("SELECT count(*) AS n FROM events WHERE creator_id = 'c-1'")
    assert rows[0]["n"] == 0
    assert (await system.month("c-2", "2026-11"))["posts"] == 1


async def test_consumers_resume_after_restart_without_loss_or_double_count(system):
    await system.post_events([post_created("c-1") for _ in range(5)])
    await system.wait_until_processed()

    await system.runtime.stop_workers()
    await system.post_events([post_created("c-1") for _ in range(7)])
    lags = await system.lags()
    assert lags == {"scoring": 7, "badges": 7}  # accepted while nobody consumed

    await system.restart_workers()
    await system.wait_until_processed()
    assert (await system.month("c-1", "2026-11"))["posts"] == 12


async def test_concurrent_ingest_while_consuming_loses_nothing(system):
    """Appends commit concurrently; a consumer must never skip a row committed late."""

    async def poster(worker: int) -> None:
        for _ in range(5):
            batch = [post_created(f"c-{worker}") for _ in range(20)]
            response = await system.post_events(batch)
            assert response.status_code == 202, response.text

    await asyncio.gather(*(poster(w) for w in range(8)))
    await system.wait_until_processed(within=60)
    for worker in range(8):
        assert (await system.month(f"c-{worker}", "2026-11"))["posts"] == 100
