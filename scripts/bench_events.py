"""Realistic events for the benchmark, made the same way from the same seed in any process.

Ten interactions to one post; creators with a long-tailed activity (a few post a lot, most a
little); post text in Chinese, English, or both; one post in twenty a near-duplicate of an
earlier one (a copy with a few characters changed); some short image posts, some reposts; a
little moderation, deletion and un-liking. Times in the past (ingest refuses more than 24 h
ahead), spread over the weeks before `end`.

The other texts are new texts, not copies: Markov chains trained on real posts (characters of
the seed post `../shared/seed/` for Chinese, words of `tests/fixtures/english_posts.txt` for
English), so that they have the statistics of real posts on the topic and only the deliberate
copies are near-duplicates by the service's rule (`services/scoring/duplicates.py`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
SEED_TEXT = ROOT.parent / "shared" / "seed" / "000_ca79c1c8f55e25bd.txt"
SEED_FIRST_LINE = 21  # the lines before are the program announcement
ENGLISH_POSTS = ROOT / "tests" / "fixtures" / "english_posts.txt"
# Orders of the chains, chosen by measurement on 3,000 posts: with order 1 no two generated
# texts are near-duplicates and the 2-gram Jaccard of two Chinese texts (median 0.08, p99
# 0.15) is close to that of two passages of the seed post (0.06, 0.12). Order 2 copies long
# runs of the small training texts: 17% of English posts near-duplicates with 5-letter shingles.
CHINESE_ORDER = 1  # characters
ENGLISH_ORDER = 1  # words
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


def english_words() -> list[str]:
    """The words of the English posts (punctuation kept), else the fallback list's."""
    try:
        words = ENGLISH_POSTS.read_text(encoding="utf-8").split()
    except OSError:
        words = []
    return words or list(ENGLISH)


class Chain:
    """A Markov chain of `order` over the tokens of a text read as a loop (every state has a
    successor). States are numbered in the text's order and successors sorted: the same walks
    for the same random numbers in any process."""

    def __init__(self, tokens: Sequence[str], order: int, stops: str) -> None:
        loop = list(tokens) + list(tokens[:order])
        states: dict[tuple[str, ...], int] = {}
        at = [
            states.setdefault(tuple(loop[i : i + order]), len(states)) for i in range(len(tokens))
        ]
        self.order = order
        self.states = list(states)  # by number
        self.last = [state[-1] for state in self.states]
        after: list[list[tuple[str, int]]] = [[] for _ in self.states]
        for i, state in enumerate(at):
            after[state].append((loop[i + order], at[(i + 1) % len(at)]))
        # The next states (with repeats: their frequencies), sorted by the token they add.
        self.after = [[state for _, state in sorted(pairs)] for pairs in after]
        self.counts = list(map(len, self.after))
        # Walks start where a sentence starts: after a token ending with one of `stops`.
        starts = [at[i] for i in range(len(at)) if tokens[i - 1][-1:] in stops]
        self.starts = starts or at

    def walk(self, rng: random.Random, length: int) -> list[str]:
        """`length` tokens (at least `order`) from a sentence start."""
        state = self.starts[int(rng.random() * len(self.starts))]
        first = self.states[state]
        after, counts, random_ = self.after, self.counts, rng.random
        walked = []
        for draw in [random_() for _ in range(length - self.order)]:
            state = after[state][int(draw * counts[state])]
            walked.append(state)
        return [*first, *map(self.last.__getitem__, walked)]


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
        self.chinese = Chain(list("\n".join(self.lines)), CHINESE_ORDER, "。！？\n")
        self.english = Chain(english_words(), ENGLISH_ORDER, ".?!")

    def _text(self, rng: random.Random) -> str:
        roll = rng.random()
        if roll < 0.5:
            return self._chinese(rng, rng.randint(1, 3))
        english = " ".join(self.english.walk(rng, rng.randint(12, 90)))
        english = english[0].upper() + english[1:].rstrip(",.;:?!\"'") + "."
        if roll < 0.9:
            return english
        return english + "\n" + self._chinese(rng, 1)

    def _chinese(self, rng: random.Random, lines: int) -> str:
        """A new Chinese text as long as `lines` consecutive lines of the seed post."""
        first = rng.randrange(len(self.lines))
        length = len("\n".join(self.lines[first : first + lines]))
        return "".join(self.chinese.walk(rng, length)).strip().rstrip("，、；：。！？,;:") + "。"

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
