"""`creator-activity reindex`: after a change of the near-duplicate settings, every post indexed
before is indexed again from its text in the log, and the provisional months follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scoring.duplicates import NearDuplicateRule
from tests.system import ADMIN, post_created, run_cli

ENGLISH_POSTS = Path(__file__).resolve().parent / "fixtures" / "english_posts.txt"
PARAGRAPHS = [p.strip() for p in ENGLISH_POSTS.read_text().split("\n\n") if p.strip()]
# Two long English posts that share no sentence (5,072 and 6,269 characters).
FIRST = " ".join(PARAGRAPHS[:13])
SECOND = " ".join(PARAGRAPHS[13:])
COPY = FIRST.replace(",", "") + " Not financial advice, do your own research."


@pytest.fixture
def settings_overrides():
    return {"near_duplicate_alphabetic_shingle_size": 2}  # the rule before shingles by script


async def originals(system) -> dict[str, str | None]:
    rows = await system.sql("SELECT post_id, duplicate_of FROM scoring_posts")
    return {row["post_id"]: row["duplicate_of"] for row in rows}


async def qualifying_posts(system, creator: str) -> int:
    response = await system.client.get(f"/v1/creators/{creator}/months/2026-11", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["qualifying_posts"]


async def test_reindex_applies_new_shingle_sizes_to_the_posts_indexed_before(system):
    posts = [
        post_created("c-1", "p-first", time="2026-11-03T10:00:00+08:00", text=FIRST),
        post_created("c-2", "p-second", time="2026-11-04T10:00:00+08:00", text=SECOND),
        post_created("c-3", "p-copy", time="2026-11-05T10:00:00+08:00", text=COPY),
    ]
    assert (await system.post_events(posts)).status_code == 202
    await system.wait_until_processed()
    # With 2-letter shingles two long unrelated English posts are "copies" of each other.
    assert await originals(system) == {
        "p-first": None,
        "p-second": "p-first",
        "p-copy": "p-first",
    }
    assert await qualifying_posts(system, "c-2") == 0

    four = {"CREATOR_ACTIVITY_NEAR_DUPLICATE_ALPHABETIC_SHINGLE_SIZE": "4"}
    code, output = await run_cli(system.database_url, "reindex", **four)
    assert code == 0, output
    assert "3 posts re-indexed, 1 of them changed their original" in output, output
    assert await originals(system) == {"p-first": None, "p-second": None, "p-copy": "p-first"}
    assert await qualifying_posts(system, "c-2") == 1  # the month was rebuilt
    # Every band row is the new rule's: no key of the old one is left to match.
    rule = NearDuplicateRule(alphabetic_shingle_size=4)
    for post_id, body in (("p-first", FIRST), ("p-second", SECOND), ("p-copy", COPY)):
        rows = await system.sql("SELECT band FROM scoring_post_bands WHERE post_id = $1", post_id)
        assert {row["band"] for row in rows} == set(rule.band_keys(rule.signature(body)))

    code, output = await run_cli(system.database_url, "reindex", **four)
    assert code == 0 and "3 posts re-indexed, 0 of them changed their original" in output, output
