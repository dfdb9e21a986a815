"""Re-index every post for near-duplicates from its latest text in the event log: after a change
of the near-duplicate settings (shingle sizes, threshold, permutations), whose band keys and
signatures the posts indexed before do not share (docs/operations.md, "Rule changes").

Scoring keeps no text, only signatures; the log keeps every `post.created` and `post.updated`.
Each post's latest content is the one `consumer.py` indexes: the event with the latest `time`,
ties by log position. The posts are re-indexed in batches (`duplicates.index_posts`, under the
same band-key locks as the consumer's batches, so running consumers are safe), in any order:
`duplicate_of` does not depend on it.
"""

from __future__ import annotations

from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring import duplicates
from shared.settings import Settings

BATCH = 500

_LATEST_TEXTS = sql(
    "SELECT DISTINCT ON (data->>'post_id') data->>'post_id' AS post_id, data->>'text' AS text"
    " FROM events WHERE type IN ('post.created', 'post.updated')"
    " ORDER BY data->>'post_id', time DESC, seq DESC"
)


async def reindex(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, batch: int = BATCH
) -> tuple[int, int]:
    """(posts re-indexed, posts whose `duplicate_of` changed). Each batch commits on its own: a
    run stopped halfway leaves every post indexed by the old rule or the new, and can be run
    again."""
    posts = 0
    changed: set[str] = set()  # a post may change in one batch and again in a later one
    # A connection of its own reads the texts (a server-side cursor), others write.
    async with sessionmaker() as reader:
        result = await reader.stream(_LATEST_TEXTS)
        async for rows in result.partitions(batch):
            async with sessionmaker() as session, session.begin():
                texts = [(row.post_id, row.text) for row in rows]
                changed |= await duplicates.index_posts(session, settings, texts)
            posts += len(rows)
    return posts, len(changed)
