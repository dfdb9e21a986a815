"""Near-duplicate detection (PROGRAM.md, "Original quality post"): a post is not original when
it is a near-duplicate of an earlier post, by this creator or anyone.

The pure part turns a text into a signature:

1. **Comparable or not.** A text shorter than `near_duplicate_min_chars` characters (the shared
   character rule; image captions) is not compared, nor one with no letter or digit left.
2. **Normalised** so that small edits that do not change the content do not count: URLs out
   (`shared.characters.strip_urls`), NFKC (full-width ＡＢＣ１２３ and ，are the ASCII ones),
   case folded, and only letters, digits and combining marks kept (no white space,
   punctuation, symbols, emoji or invisible format characters): `，`→`,` or `。`→`.` or a
   line break changes nothing.
3. **Character shingles** (`near_duplicate_shingle_size` consecutive characters): Chinese has no
   spaces, so words cannot be the unit.
4. A **MinHash** of the shingle set (datasketch, `near_duplicate_permutations` permutations,
   scheme affine32, seed 1); two signatures estimate the Jaccard similarity of the two shingle
   sets. Similar = estimate ≥ `near_duplicate_threshold`.
5. **LSH band keys**: the signature cut into b bands of r values, (b, r) datasketch's optimum
   for the threshold, weighted towards recall (`near_duplicate_recall_weight`); each band
   becomes one signed 64-bit key (blake2b of the band's values, its index and the parameters),
   a Postgres bigint. Posts sharing a key are the candidates.

The database part (`index_post`) keeps one row per (band key, post) in `scoring_post_bands` and
the signature in `scoring_posts.signature`, and maintains `scoring_posts.duplicate_of`:

- **earlier** is by (`time`, `post_id`), `time` being the post's own creation time; ties by
  post id in code-point order;
- `duplicate_of` = the earliest earlier post that shares a band key and is similar, else NULL;
  when an original arrives after its copy, the copy gets `duplicate_of` then;
- deleted or removed posts stay in the index: a copy of a post that was deleted or removed by
  moderation is still a copy (otherwise deleting the original would launder the copy);
- posts whose `time` is not known yet (an edit before its creation) are not indexed: their
  signature is stored, and indexed when the creation brings the time (`text=None`);
- candidates come only from shared band keys: nothing scans all posts;
- two processes indexing two copies at once serialise on transaction-level advisory locks on
  the band keys, old and new (two-int form, class `BAND_LOCK_CLASS`, the key folded to 32
  bits, sorted): the second waits for the first's commit and then sees its rows. A batch that
  indexes several posts locks them post by post, so two batches can deadlock; PostgreSQL then
  rolls one back and the consumer retries it.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import numpy as np
from datasketch import LeanMinHash, MinHash
from datasketch.lsh import _optimal_param
from sqlalchemy import delete, func, select, update
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.models import Post, PostBand
from shared.characters import is_long_enough, strip_urls
from shared.settings import Settings

# Class of the advisory locks on band keys (the two-int form); the family of 0x6361_000N keys.
BAND_LOCK_CLASS = 0x6361_0005
MINHASH_SEED = 1
MINHASH_SCHEME = "affine32"
# Serialised signatures: datasketch's LeanMinHash layout, little-endian whatever the machine.
_BYTE_ORDER = "<"
_KEPT_CATEGORIES = frozenset("LNM")  # letters, numbers, marks


# --- the pure part ------------------------------------------------------------------------


def normalise(text: str) -> str:
    """The text as compared: no URLs, NFKC, case folded, letters, digits and marks only."""
    folded = unicodedata.normalize("NFKC", strip_urls(text)).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in _KEPT_CATEGORIES)


def shingles(normalised: str, size: int) -> set[str]:
    """The set of `size`-character substrings; a shorter non-empty text is its own shingle."""
    if len(normalised) <= size:
        return {normalised} if normalised else set()
    return {normalised[i : i + size] for i in range(len(normalised) - size + 1)}


@cache
def lsh_bands(threshold: float, permutations: int, recall_weight: float) -> tuple[int, int]:
    """(b, r): datasketch's `MinHashLSH` choice for the threshold, with weights (1 −
    recall_weight, recall_weight) on the index's false positives and false negatives. A false
    positive of the index only costs one comparison (the estimate decides), a false negative
    lets a copy through, hence the weight on recall. b × r ≤ permutations; values left over
    are used by the estimate, not by the index."""
    return _optimal_param(threshold, permutations, 1 - recall_weight, recall_weight)


@cache
def _permutations(permutations: int) -> tuple[np.ndarray, np.ndarray]:
    return MinHash(num_perm=permutations, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations


@dataclass(frozen=True)
class NearDuplicateRule:
    """The parameters of near-duplicate detection, from the settings (or chosen by a test)."""

    min_chars: int = 50
    shingle_size: int = 2
    permutations: int = 128
    threshold: float = 0.7
    recall_weight: float = 0.9

    @classmethod
    def from_settings(cls, settings: Settings) -> NearDuplicateRule:
        return cls(
            min_chars=settings.near_duplicate_min_chars,
            shingle_size=settings.near_duplicate_shingle_size,
            permutations=settings.near_duplicate_permutations,
            threshold=settings.near_duplicate_threshold,
            recall_weight=settings.near_duplicate_recall_weight,
        )

    @property
    def bands(self) -> tuple[int, int]:
        return lsh_bands(self.threshold, self.permutations, self.recall_weight)

    def signature(self, text: str) -> LeanMinHash | None:
        """The MinHash of a comparable text; None when the text is not compared."""
        if not is_long_enough(text, self.min_chars):
            return None
        grams = shingles(normalise(text), self.shingle_size)
        if not grams:
            return None
        minhash = MinHash(
            num_perm=self.permutations,
            seed=MINHASH_SEED,
            scheme=MINHASH_SCHEME,
            permutations=_permutations(self.permutations),
        )
        minhash.update_batch(gram.encode() for gram in sorted(grams))
        return LeanMinHash(minhash)

    def band_keys(self, signature: LeanMinHash) -> list[int]:
        """One signed 64-bit key per LSH band. The parameters are part of the key, so a change
        of them never makes old and new signatures candidates of each other by accident."""
        b, r = self.bands
        values = np.asarray(signature.hashvalues, dtype="<u4")
        tag = f"near-duplicate:{self.shingle_size}:{self.permutations}:{b}:{r}:".encode()
        keys = []
        for band in range(b):
            digest = hashlib.blake2b(
                tag + band.to_bytes(2, "big") + values[band * r : (band + 1) * r].tobytes(),
                digest_size=8,
            ).digest()
            keys.append(int.from_bytes(digest, "big", signed=True))
        return keys

    def similar(self, a: LeanMinHash, b: LeanMinHash) -> bool:
        return similarity(a, b) >= self.threshold


def signature_to_bytes(signature: LeanMinHash) -> bytes:
    buffer = bytearray(signature.bytesize(byteorder=_BYTE_ORDER))
    signature.serialize(buffer, byteorder=_BYTE_ORDER)
    return bytes(buffer)


def signature_from_bytes(data: bytes) -> LeanMinHash:
    return LeanMinHash.deserialize(data, byteorder=_BYTE_ORDER)


def similarity(a: LeanMinHash, b: LeanMinHash) -> float:
    """The estimated Jaccard similarity of the two texts' shingle sets; 0 for signatures made
    with other parameters (they cannot be compared)."""
    if len(a) != len(b) or a.seed != b.seed or a.scheme != b.scheme:
        return 0.0
    return float(np.count_nonzero(a.hashvalues == b.hashvalues)) / len(a)


def fold_key(key: int) -> int:
    """A 64-bit band key folded to the signed 32 bits of an advisory lock's second int."""
    folded = ((key >> 32) ^ key) & 0xFFFF_FFFF
    return folded - (1 << 32) if folded >= 1 << 31 else folded


# --- the index in the database -----------------------------------------------------------


@dataclass
class _Indexed:
    post_id: str
    time: datetime | None
    signature: LeanMinHash | None
    duplicate_of: str | None

    @property
    def order(self) -> tuple[datetime, str]:
        assert self.time is not None
        return (self.time, self.post_id)


async def index_post(
    session: AsyncSession, settings: Settings, post_id: str, text: str | None = None
) -> set[str]:
    """(Re)index post `post_id` and recompute `duplicate_of` where it can change: this post, the
    posts that had it as their original, and the later posts it is similar to.

    Call after the post's row holds its latest content and `time`, with its latest `text`; or
    with `text=None` to index the signature stored earlier (a `post.created` that brings the
    time of a post whose newer edit came first: the edit's signature is kept, unindexed, until
    the time is known). Runs in the caller's transaction (nothing is committed here). Returns
    the ids of the posts whose `duplicate_of` changed (this one included, when it did)."""
    return await index_posts(session, settings, [(post_id, text)])


async def index_posts(
    session: AsyncSession, settings: Settings, posts: Sequence[tuple[str, str | None]]
) -> set[str]:
    """`index_post` for each (post id, text), in that order, as one call after the other would:
    but every band key any of them may touch is locked first, in one statement, sorted, so two
    batches indexing posts with shared keys queue instead of deadlocking."""
    if not posts:
        return set()
    rule = NearDuplicateRule.from_settings(settings)
    ids = sorted({post_id for post_id, _ in posts})
    signatures = {text: rule.signature(text) for _, text in posts if text is not None}
    keys: set[int] = set(
        await session.scalars(select(PostBand.band).where(PostBand.post_id.in_(ids)))
    )
    for signature in signatures.values():
        if signature is not None:
            keys.update(rule.band_keys(signature))
    stored = [post_id for post_id, text in posts if text is None]
    if stored:
        for data in await session.scalars(
            select(Post.signature).where(Post.post_id.in_(stored), Post.signature.is_not(None))
        ):
            signature = signature_from_bytes(data)
            if len(signature) == rule.permutations:
                keys.update(rule.band_keys(signature))
    await _lock_band_keys(session, keys)
    changed: set[str] = set()
    for post_id, text in posts:
        signature = signatures.get(text) if text is not None else None
        changed |= await _index_one(session, rule, post_id, text, signature)
    return changed


async def _index_one(
    session: AsyncSession,
    rule: NearDuplicateRule,
    post_id: str,
    text: str | None,
    text_signature: LeanMinHash | None,
) -> set[str]:
    """One post, its band keys locked already by the caller."""
    bands = select(func.array_agg(PostBand.band)).where(PostBand.post_id == post_id)
    row = (
        await session.execute(
            select(Post.time, Post.signature, Post.duplicate_of, bands.scalar_subquery())
            .where(Post.post_id == post_id)
            .with_for_update(of=Post)
        )
    ).one_or_none()
    if row is None:
        return set()
    if text is not None:
        signature = text_signature
    elif row.signature is not None:
        signature = signature_from_bytes(row.signature)
        if len(signature) != rule.permutations:
            signature = None  # made with other parameters: needs the text again
    else:
        signature = None
    indexed = signature if row.time is not None else None  # no time, no place in the order
    new_keys = set(rule.band_keys(indexed)) if indexed is not None else set()
    old_keys = set(row[3] or ())

    if old_keys != new_keys:
        if old_keys:
            await session.execute(delete(PostBand).where(PostBand.post_id == post_id))
        if new_keys:
            await session.execute(
                insert(PostBand).on_conflict_do_nothing(),
                [{"band": key, "post_id": post_id} for key in sorted(new_keys)],
            )
    new_bytes = signature_to_bytes(signature) if signature is not None else None
    if text is not None and new_bytes != row.signature:
        await session.execute(
            update(Post).where(Post.post_id == post_id).values(signature=new_bytes)
        )

    this = _Indexed(post_id, row.time, indexed, row.duplicate_of)
    current: dict[str, str | None] = {post_id: row.duplicate_of}  # what each post has now
    changes: dict[str, str | None] = {}
    # 1. This post's own original: the earliest earlier post it is similar to.
    changes[post_id] = await _earliest_similar_before(session, rule, this)
    # 2. Its copies, when its text changed: they may now be copies of another post, or none.
    #    A post that had no signature is nobody's original (similarity needs one).
    if text is not None and row.signature is not None and row.signature != new_bytes:
        for copy in await _copies_of(session, post_id):
            current[copy.post_id] = copy.duplicate_of
            changes[copy.post_id] = await _earliest_similar_before(session, rule, copy)
    # 3. Later posts it is similar to whose original is later (or none): it is theirs now. Their
    #    original was the earliest similar post, so nothing earlier than this one is.
    if indexed is not None and row.time is not None:
        for later in await _later_with_a_later_original(session, new_keys, this):
            current.setdefault(later.post_id, later.duplicate_of)
            if rule.similar(indexed, later.signature):
                changes[later.post_id] = post_id
    changed = {(pid, original) for pid, original in changes.items() if original != current[pid]}
    if changed:
        await session.execute(
            sql("UPDATE scoring_posts SET duplicate_of = :original WHERE post_id = :post_id"),
            [{"post_id": pid, "original": original} for pid, original in sorted(changed)],
        )
    return {pid for pid, _ in changed}


_CANDIDATES = (
    " FROM scoring_posts AS p WHERE EXISTS (SELECT 1 FROM scoring_post_bands AS b"
    "  WHERE b.post_id = p.post_id AND b.band = ANY(CAST(:keys AS bigint[])))"
    " AND p.post_id <> :post_id AND p.time IS NOT NULL AND p.signature IS NOT NULL"
)
# post ids compare by code point, whatever the database's collation
_ORDER = 'p.time, p.post_id COLLATE "C"'


async def _earliest_similar_before(
    session: AsyncSession, rule: NearDuplicateRule, post: _Indexed, chunk: int = 64
) -> str | None:
    """The earliest post before `post` (by time, then id) sharing a band key with it and similar
    to it: candidates are read in that order and the first similar one ends the search."""
    if post.signature is None or post.time is None:
        return None
    keys = sorted(rule.band_keys(post.signature))
    seen = 0
    while True:
        rows = (
            await session.execute(
                sql(
                    f"SELECT p.post_id, p.time, p.signature{_CANDIDATES}"
                    f' AND (p.time, p.post_id COLLATE "C") < (:time, :post_id)'
                    f" ORDER BY {_ORDER} LIMIT :limit OFFSET :offset"
                ),
                {
                    "keys": keys,
                    "post_id": post.post_id,
                    "time": post.time,
                    "limit": chunk,
                    "offset": seen,
                },
            )
        ).all()
        for row in rows:
            if rule.similar(post.signature, signature_from_bytes(row.signature)):
                return row.post_id
        if len(rows) < chunk:
            return None
        seen += chunk


async def _copies_of(session: AsyncSession, post_id: str) -> list[_Indexed]:
    rows = await session.execute(
        select(Post.post_id, Post.time, Post.signature, Post.duplicate_of).where(
            Post.duplicate_of == post_id
        )
    )
    return [_indexed(row) for row in rows]


async def _later_with_a_later_original(
    session: AsyncSession, keys: set[int], post: _Indexed
) -> list[_Indexed]:
    """Posts after `post` sharing a band key with it whose original is none or after it."""
    if not keys:
        return []
    rows = await session.execute(
        sql(
            f"SELECT p.post_id, p.time, p.signature, p.duplicate_of{_CANDIDATES}"
            ' AND (p.time, p.post_id COLLATE "C") > (:time, :post_id)'
            " AND (p.duplicate_of IS NULL OR EXISTS (SELECT 1 FROM scoring_posts AS o"
            "  WHERE o.post_id = p.duplicate_of"
            '  AND (o.time, o.post_id COLLATE "C") > (:time, :post_id)))'
        ),
        {"keys": sorted(keys), "post_id": post.post_id, "time": post.time},
    )
    return [_indexed(row) for row in rows]


async def _lock_band_keys(session: AsyncSession, keys: Iterable[int]) -> None:
    """Transaction-level advisory locks on the keys, in sorted order (no deadlock between two
    indexers): whoever indexes a post with one of these keys waits for this commit."""
    folded = sorted({fold_key(key) for key in keys})
    if not folded:
        return
    # unnest keeps the array's (sorted) order; the aggregate makes one row of the result.
    await session.execute(
        sql(
            "SELECT count(pg_advisory_xact_lock(:class, key))"
            " FROM unnest(CAST(:keys AS integer[])) AS key"
        ),
        {"class": BAND_LOCK_CLASS, "keys": folded},
    )


def _indexed(row) -> _Indexed:
    signature = signature_from_bytes(row.signature) if row.signature is not None else None
    return _Indexed(row.post_id, row.time, signature, row.duplicate_of)
