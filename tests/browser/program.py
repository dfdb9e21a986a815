"""A small program month for the console's tests, put in through the real HTTP API: applications
(Chinese display names), certifications before the month, posts and interactions in it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from tests.system import ADMIN, System, interaction_created, post_created

MONTH = "2026-10"  # over, grace included: it can be settled
IN_MONTH = datetime(2026, 10, 3, 12, 0, tzinfo=UTC)
CERTIFIED_AT = datetime(2026, 9, 1, tzinfo=UTC)
MIN_POSTS = 3  # settings_overrides of these tests: a month needs few events

_rng = random.Random(11)


def unique_text(n: int = 60) -> str:
    """A Chinese text no other post resembles (near-duplicates do not qualify)."""
    return "".join(chr(_rng.randrange(0x4E00, 0x9FA5)) for _ in range(n))


async def apply(
    system: System, creator_id: str, display_name: str, *, followers: int = 5000
) -> dict:
    form = {
        "creator_id": creator_id,
        "display_name": display_name,
        "platforms": [
            {"platform": "x", "handle": creator_id, "followers": followers, "verified": False}
        ],
    }
    response = await system.client.post("/v1/applications", json=form, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


async def certify(system: System, creator_id: str, display_name: str) -> None:
    application = await apply(system, creator_id, display_name)
    response = await system.client.post(
        f"/v1/admin/applications/{application['id']}/approve",
        json={"certified_at": CERTIFIED_AT.isoformat()},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text


async def active_month(system: System, creator_id: str, posts: int, likes: int) -> None:
    """`posts` qualifying posts on different days of MONTH, `likes` likes on the first."""
    events = [
        post_created(
            creator_id,
            f"{creator_id}-p{n}",
            time=(IN_MONTH + timedelta(days=n)).isoformat(),
            text=unique_text(),
        )
        for n in range(posts)
    ]
    events += [
        interaction_created(
            creator_id,
            f"{creator_id}-p0",
            f"{creator_id}-fan{n}",
            time=(IN_MONTH + timedelta(hours=2)).isoformat(),
        )
        for n in range(likes)
    ]
    response = await system.post_events(events)
    assert response.status_code == 202, response.text


# (creator, display name, qualifying posts, likes received)
CREATORS = (
    ("c-lin", "林小雨", 6, 9),
    ("c-wang", "王大锤", 4, 3),
    ("c-zhao", "赵钱孙", 3, 0),
    ("c-short", "短短", 2, 1),  # under the minimum: ranked, not paid
)


async def program_month(system: System) -> None:
    """Four certified creators active in MONTH (three eligible), every event applied."""
    for creator_id, name, posts, likes in CREATORS:
        await certify(system, creator_id, name)
        await active_month(system, creator_id, posts, likes)
    await system.wait_until_processed()
