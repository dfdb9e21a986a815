"""Realistic events for the benchmark, made the same way from the same seed in any process.

Ten interactions to one post; creators with a long-tailed activity (a few post a lot, most a
little); post text in Chinese (the seed post, `../shared/seed/`), English, or both; one post in
twenty a near-duplicate of an earlier one (a copy with a few characters changed); some short
image posts, some reposts; a little moderation, deletion and un-liking. Times in the past
(ingest refuses more than 24 h ahead), spread over the weeks before `end`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
SEED_TEXT = ROOT.parent / "shared" / "seed" / "000_ca79c1c8f55e25bd.txt"
SEED_FIRST_LINE = 21  # the lines before are the program announcement
SOURCE = "square"
INTERACTIONS_PER_POST = 10
NEAR_DUPLICATE_SHARE = 0.05
INTERACTION_KINDS = (("like", 60), ("comment", 20), ("share", 10), ("quote", 10))
ENGLISH = (
    "the repo market is showing liquidity stress again as reserves get scarce and the funding "
    "rate climbs above the interest on reserve balances while banks hoard cash into quarter end "
    "traders watch the standing repo facility usage and the treasury general account balance "
    "because quantitative tightening drains liquidity from the system and bitcoin reacts to "
    "every dollar move creators on the square share charts threads and long analysis posts"
).split()
FALLBACK_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说"
    "市场流动性回购储备资产加密货币利率银行创作者广场内容互动"
)


def chinese_lines() -> list[str]:
    try:
        lines = SEED_TEXT.read_text(encoding="utf-8").splitlines()[SEED_FIRST_LINE - 1 :]
    except OSError:
        lines = []
    lines = [line.strip() for line in lines if line.strip()]
    if lines:
        return lines
    rng = random.Random(7)
    return [
        "".join(rng.choice(FALLBACK_CHARS) for _ in range(rng.randint(20, 300))) + "。"
        for _ in range(200)
    ]


class Workload:
    """The event stream of one run: `events(n)` yields the same events for the same seed."""

    def __init__(
        self, prefix: str, creators: int, seed: int, end: datetime, days: int = 30
    ) -> None:
        self.prefix = prefix
        self.creators = [f"{prefix}-c{i:06d}" for i in range(creators)]
        self.cum_weights = list(accumulate(1 / (rank + 1) ** 0.9 for rank in range(creators)))
        self.seed = seed
        self.end = end
        self.days = days
        self.lines = chinese_lines()

    def _text(self, rng: random.Random) -> str:
        roll = rng.random()
        if roll < 0.5:
            first = rng.randrange(len(self.lines))
            return "\n".join(self.lines[first : first + rng.randint(1, 3)])
        english = " ".join(rng.choice(ENGLISH) for _ in range(rng.randint(12, 90))) + "."
        if roll < 0.9:
            return english.capitalize()
        return english.capitalize() + "\n" + rng.choice(self.lines)

    @staticmethod
    def _near_copy(text: str, rng: random.Random) -> str:
        chars = list(text)
        for _ in range(max(1, len(chars) // 60)):
            chars[rng.randrange(len(chars))] = rng.choice("，。!? 的了")
        return "".join(chars) + rng.choice(("", " 🚀", "!!", "（转）"))

    def events(self, n: int) -> Iterator[dict]:
        rng = random.Random(self.seed)
        start = self.end - timedelta(days=self.days)
        span = self.days * 86400
        offsets = sorted(rng.uniform(0, span) for _ in range(n))
        kinds, kind_weights = zip(*INTERACTION_KINDS, strict=True)
        posts: list[tuple[str, str, str]] = []  # (creator, post id, text)
        p = self.prefix
        for i, offset in enumerate(offsets):
            when = (start + timedelta(seconds=offset)).astimezone(UTC)
            time = when.isoformat(timespec="milliseconds")
            event_id = f"{p}-e{i:08d}"
            roll = rng.random()
            if not posts or roll < 1 / (INTERACTIONS_PER_POST + 1):
                creator = rng.choices(self.creators, cum_weights=self.cum_weights)[0]
                if posts and rng.random() < NEAR_DUPLICATE_SHARE:
                    text = self._near_copy(rng.choice(posts[-5000:])[2], rng)
                else:
                    text = self._text(rng)
                images = rng.choice((0, 0, 0, 1, 2, 4))
                if rng.random() < 0.1:  # a short image post
                    text, images = text[: rng.randint(4, 30)], max(images, 1)
                post_id = f"{p}-p{i:08d}"
                posts.append((creator, post_id, text))
                yield _event(
                    event_id,
                    "post.created",
                    time,
                    {
                        "creator_id": creator,
                        "post_id": post_id,
                        "text": text,
                        "image_count": images,
                        "kind": "original" if rng.random() < 0.92 else "repost",
                    },
                )
                continue
            creator, post_id, _ = posts[max(len(posts) - 1 - int(rng.expovariate(1 / 400)), 0)]
            if roll > 0.995:
                verdict = rng.choice(("approved", "approved", "low_quality", "removed"))
                data = {"creator_id": creator, "post_id": post_id, "verdict": verdict}
                yield _event(event_id, "post.moderated", time, data)
            elif roll > 0.993:
                data = {"creator_id": creator, "post_id": post_id}
                yield _event(event_id, "post.deleted", time, data)
            else:
                data = {
                    "creator_id": creator,
                    "post_id": post_id,
                    "actor_id": f"{p}-a{int(200_000 * rng.random() ** 2)}",
                    "kind": rng.choices(kinds, kind_weights)[0],
                }
                deleted = roll > 0.988
                yield _event(
                    event_id,
                    "interaction.deleted" if deleted else "interaction.created",
                    time,
                    data,
                )


def _event(event_id: str, type_: str, time: str, data: dict) -> dict:
    return {
        "id": event_id,
        "type": type_,
        "time": time,
        "source": SOURCE,
        "specversion": "1.0",
        "data": data,
    }


def batches(events: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def log_rows(events: list[dict]) -> list[tuple]:
    """The rows of the `events` table these events become (what ingest stores), as tuples of
    (event_id, content_hash, type, time, source, creator_id, data json, attributes json)."""
    rows = []
    for e in events:
        attributes = {"specversion": "1.0"}
        data = orjson.dumps(e["data"]).decode()
        digest = hashlib.sha256(orjson.dumps([e["id"], e["type"], e["time"], data])).digest()
        rows.append(
            (
                e["id"],
                digest,
                e["type"],
                datetime.fromisoformat(e["time"]),
                e["source"],
                e["data"]["creator_id"],
                data,
                orjson.dumps(attributes).decode(),
            )
        )
    return rows
