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
3. **Character shingles by script**: `near_duplicate_shingle_size` (2) consecutive characters
   in runs of Han, kana, Hangul or Bopomofo (Chinese has no spaces, so words cannot be the
   unit), `near_duplicate_alphabetic_shingle_size` (4) in runs of other letters and digits
   (with two, any two long English texts share most letter pairs).
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
  bits, sorted): the second waits for the first's commit and then sees its rows. A batch locks
  every key of all its posts in one sorted statement, so two batches queue, never deadlock;
- a batch of posts (`index_posts`) takes a fixed number of statements, whatever its size: the
  rows and bands written once, the candidates of every post looked up in one statement, a
  bounded number per post and band key (a post with more candidates reads on);
- each band row carries its post's time and its **origin** (its original's time and id, or its
  own for an original), both indexed after the band: the earlier candidates of a post are read
  in time order, the later posts it may become the original of by origin, from the first
  origin after the post. The copies of an earlier original are not in that range, so a flood
  of one text (10,000 claims at one time, arriving in any order) costs a post one short read,
  not a read of every copy.
"""

from __future__ import annotations

import copy
import hashlib
import operator
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache, lru_cache

import numpy as np
import regex
from datasketch import LeanMinHash, MinHash
from datasketch.hashfunc import sha1_hash32
from datasketch.lsh import _optimal_param
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncSession

from shared.characters import is_long_enough, strip_urls
from shared.settings import Settings

# Class of the advisory locks on band keys (the two-int form); the family of 0x6361_000N keys.
BAND_LOCK_CLASS = 0x6361_0005
MINHASH_SEED = 1
MINHASH_SCHEME = "affine32"
# Serialised signatures: datasketch's LeanMinHash layout, little-endian whatever the machine.
_BYTE_ORDER = "<"
# Its header: the seed (q), minus the number of values (i) and the scheme's code (B).
_HEADER_BYTES = 13
_VALUES = "<u4"  # affine32's values
_KEPT_CATEGORIES = frozenset("LNM")  # letters, numbers, marks
# A normalised text cut into runs of ideographic or syllabic scripts and runs of the rest.
_IDEOGRAPHIC = r"\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}\p{scx=Hangul}\p{scx=Bopomofo}"
_SCRIPT_RUNS = regex.compile(rf"(?P<ideographic>[{_IDEOGRAPHIC}]+)|[^{_IDEOGRAPHIC}]+")


# --- the pure part ------------------------------------------------------------------------


def normalise(text: str) -> str:
    """The text as compared: no URLs, NFKC, case folded, letters, digits and marks only."""
    folded = unicodedata.normalize("NFKC", strip_urls(text)).casefold()
    return "".join(filter(_kept, folded))


@lru_cache(maxsize=1 << 16)
def _kept(character: str) -> bool:
    return unicodedata.category(character)[0] in _KEPT_CATEGORIES


def shingles(normalised: str, size: int) -> set[str]:
    """The set of `size`-character substrings; a shorter non-empty text is its own shingle."""
    if len(normalised) <= size:
        return {normalised} if normalised else set()
    return {normalised[i : i + size] for i in range(len(normalised) - size + 1)}


def script_shingles(normalised: str, ideographic_size: int, alphabetic_size: int) -> set[str]:
    """The shingles of each run of one kind of script: `ideographic_size` characters in runs of
    Han, kana, Hangul or Bopomofo (a character is close to a word, there are no spaces: a pair is
    often a word), `alphabetic_size` in runs of any other letters and digits (two letters recur
    in any two English texts, four rarely do by chance: docs/rules.md)."""
    grams: set[str] = set()
    for run in _SCRIPT_RUNS.finditer(normalised):
        grams |= shingles(run[0], ideographic_size if run["ideographic"] else alphabetic_size)
    return grams


@cache
def lsh_bands(threshold: float, permutations: int, recall_weight: float) -> tuple[int, int]:
    """(b, r): datasketch's `MinHashLSH` choice for the threshold, with weights (1 −
    recall_weight, recall_weight) on the index's false positives and false negatives. A false
    positive of the index only costs one comparison (the estimate decides), a false negative
    lets a copy through, hence the weight on recall. b × r ≤ permutations; values left over
    are used by the estimate, not by the index."""
    return _optimal_param(threshold, permutations, 1 - recall_weight, recall_weight)


@cache
def _empty_minhash(permutations: int) -> MinHash:
    """A MinHash of nothing with the index's permutations, copied for each text (making the
    permutations again cost as much as hashing a text)."""
    # The values fed to it are hashed already (`_shingle_hash`): its hash is the identity.
    return MinHash(
        num_perm=permutations, seed=MINHASH_SEED, scheme=MINHASH_SCHEME, hashfunc=operator.index
    )


@lru_cache(maxsize=1 << 17)
def _shingle_hash(gram: str) -> int:
    """datasketch's hash of a shingle (SHA-1, 32 bits), remembered: shingles of two characters
    repeat from post to post."""
    return sha1_hash32(gram.encode())


@dataclass(frozen=True)
class NearDuplicateRule:
    """The parameters of near-duplicate detection, from the settings (or chosen by a test)."""

    min_chars: int = 50
    shingle_size: int = 2  # ideographic runs (Chinese)
    alphabetic_shingle_size: int = 4  # runs of other letters and digits (English)
    permutations: int = 128
    threshold: float = 0.7
    recall_weight: float = 0.9

    @classmethod
    def from_settings(cls, settings: Settings) -> NearDuplicateRule:
        return cls(
            min_chars=settings.near_duplicate_min_chars,
            shingle_size=settings.near_duplicate_shingle_size,
            alphabetic_shingle_size=settings.near_duplicate_alphabetic_shingle_size,
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
        grams = script_shingles(normalise(text), self.shingle_size, self.alphabetic_shingle_size)
        if not grams:
            return None
        minhash = copy.copy(_empty_minhash(self.permutations))  # shares the permutations
        minhash.hashvalues = minhash.hashvalues.copy()
        minhash.update_batch(list(map(_shingle_hash, grams)))
        return LeanMinHash(minhash)

    def band_keys(self, signature: LeanMinHash) -> list[int]:
        """One signed 64-bit key per LSH band. The parameters are part of the key, so a change
        of them never makes old and new signatures candidates of each other by accident."""
        b, r = self.bands
        values = np.asarray(signature.hashvalues, dtype="<u4").tobytes()
        sizes = f"{self.shingle_size}/{self.alphabetic_shingle_size}"
        tag = f"near-duplicate:{sizes}:{self.permutations}:{b}:{r}:".encode()
        width = 4 * r  # bytes of a band's r values
        return [
            int.from_bytes(
                hashlib.blake2b(
                    tag + band.to_bytes(2, "big") + values[band * width : (band + 1) * width],
                    digest_size=8,
                ).digest(),
                "big",
                signed=True,
            )
            for band in range(b)
        ]

    def similar(self, a: LeanMinHash, b: LeanMinHash) -> bool:
        return similarity(a, b) >= self.threshold

    def first_similar(self, signature: LeanMinHash, stored: Sequence[bytes]) -> int | None:
        """The index of the first stored signature similar to `signature`, else None."""
        return next(iter(self.similar_ones(signature, stored)), None)

    def similar_ones(self, signature: LeanMinHash, stored: Sequence[bytes]) -> list[int]:
        """The indexes of the stored signatures similar to `signature`, in order: what
        `similar` says of each, read from the bytes in one comparison instead of building a
        signature per candidate (a post is compared with up to `CANDIDATES_PER_READ`)."""
        own = signature_to_bytes(signature)
        header = own[:_HEADER_BYTES]
        # Another seed, scheme or number of values: never similar (as `similarity` says).
        alike = [i for i, data in enumerate(stored) if data[:_HEADER_BYTES] == header]
        if not alike:
            return []
        values = np.frombuffer(
            b"".join(stored[i][_HEADER_BYTES:] for i in alike), dtype=_VALUES
        ).reshape(len(alike), -1)
        mine = np.frombuffer(own, dtype=_VALUES, offset=_HEADER_BYTES)
        shares = np.count_nonzero(values == mine, axis=1) / len(signature)
        return [alike[i] for i in np.flatnonzero(shares >= self.threshold)]


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
    keys: frozenset[int] | None = None  # its band keys, when known already


@dataclass
class _Row:
    """A post of the batch: its row and band keys, as read under the locks or as left by the
    batch."""

    time: datetime | None
    signature: bytes | None
    duplicate_of: str | None
    keys: frozenset[int]
    indexed: LeanMinHash | None = None  # its signature in the index (it has a time)


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
    """`index_post` for each (post id, text), in that order, with the same end state as one call
    after the other, in a fixed number of statements whatever the number of posts.

    Every band key any of them may touch is locked first, in one statement, sorted (two batches
    indexing posts with shared keys queue, never deadlock); then their rows (sorted). Each
    post's signature and band keys follow from its own texts alone, so the posts are indexed in
    memory, in order, and the rows and bands written once. `duplicate_of` is then "the earliest
    earlier similar post sharing a band key" of every post whose value this can change: the
    posts themselves, the copies of a post whose text changed, and the later posts similar to
    one of them whose original is later (or none); all looked up in one statement."""
    if not posts:
        return set()
    rule = NearDuplicateRule.from_settings(settings)
    ids = sorted({post_id for post_id, _ in posts})
    signatures = {text: rule.signature(text) for _, text in posts if text is not None}
    stored_only = {post_id for post_id, text in posts if text is None}
    keys: set[int] = set()
    for row in await session.execute(_KEYS_NOW, {"ids": ids}):
        keys.update(row.bands)
        if row.post_id in stored_only and row.signature is not None:
            signature = signature_from_bytes(row.signature)
            if len(signature) == rule.permutations:
                keys.update(rule.band_keys(signature))
    text_keys = {
        text: frozenset(rule.band_keys(signature))
        for text, signature in signatures.items()
        if signature is not None
    }
    for text_key_set in text_keys.values():
        keys.update(text_key_set)
    await _lock_band_keys(session, keys)

    before: dict[str, _Row] = {
        row.post_id: _Row(row.time, row.signature, row.duplicate_of, frozenset(row.bands))
        for row in await session.execute(_LOCK_ROWS, {"ids": ids})
    }
    after = {post_id: replace(row) for post_id, row in before.items()}
    handed_over: set[str] = set()  # posts whose text changed: their copies are looked at again
    for post_id, text in posts:
        row = after.get(post_id)
        if row is None:
            continue
        if text is not None:
            signature = signatures[text]
        elif row.signature is not None:
            signature = signature_from_bytes(row.signature)
            if len(signature) != rule.permutations:
                signature = None  # made with other parameters: needs the text again
        else:
            signature = None
        row.indexed = signature if row.time is not None else None  # no time, no place in order
        if row.indexed is None:
            row.keys = frozenset()
        elif text is not None:
            row.keys = text_keys[text]
        else:
            row.keys = frozenset(rule.band_keys(row.indexed))
        if text is not None:
            new_bytes = signature_to_bytes(signature) if signature is not None else None
            if row.signature is not None and row.signature != new_bytes:
                handed_over.add(post_id)  # a post that had no signature is nobody's original
            row.signature = new_bytes
    within = _origins_within(rule, after)
    await _write_index(session, before, after, within)

    # The posts whose `duplicate_of` may change, with the value they have now.
    subjects = {
        post_id: _Indexed(post_id, row.time, row.indexed, row.duplicate_of, row.keys)
        for post_id, row in after.items()
    }
    if handed_over:
        rows = await session.execute(_COPIES, {"ids": sorted(handed_over)})
        for row in rows:
            subjects.setdefault(row.post_id, _indexed(row))
    # Later posts similar to one of the batch whose original is later (or none): it, or an
    # earlier one of the batch, is theirs now.
    indexed = [subjects[p] for p in ids if subjects[p].signature is not None]
    for later in await _later_similar_without_an_earlier_original(session, rule, indexed):
        subjects.setdefault(later.post_id, later)
    originals = await _earliest_similar_before_each(session, rule, list(subjects.values()), within)
    changed = sorted(
        (post_id, originals.get(post_id))
        for post_id, post in subjects.items()
        if originals.get(post_id) != post.duplicate_of
    )
    if changed:
        await session.execute(_SET_ORIGINALS, _columns(changed, ("ids", "originals")))
    # The band rows' origins: of the posts of the batch (new rows, a time that moved), of the
    # posts whose original changed, and of the copies of the batch's posts (their original's
    # time may have moved).
    await session.execute(_BAND_ORIGINS, {"ids": sorted({*ids, *(p for p, _ in changed)})})
    return {post_id for post_id, _ in changed}


def _origins_within(rule: NearDuplicateRule, rows: dict[str, _Row]) -> dict[str, tuple]:
    """(time, id) of each indexed post of the batch's earliest earlier post in the batch sharing
    a band key and similar to it, else its own: the origin its new band rows are written with.

    A hint, set right by `_BAND_ORIGINS` once the originals are known; until then it keeps the
    copies of a flood inside one batch out of each other's later-candidates ranges (written
    with their own as origins, every post of the flood read all the copies after it: the square
    of the flood). Linear for a flood: each copy's first candidate is the first of the flood."""
    origins: dict[str, tuple] = {}
    earlier: dict[int, list[tuple]] = {}  # band key → the batch's posts with it, in order
    checked: set[tuple[str, str]] = set()
    for time, post_id in sorted((r.time, p) for p, r in rows.items() if r.indexed is not None):
        row, best = rows[post_id], (time, post_id)
        for key in sorted(row.keys):
            for candidate in earlier.get(key, ()):
                if candidate >= best:
                    break
                pair = (candidate[1], post_id)
                if pair not in checked:
                    checked.add(pair)
                    if rule.similar(rows[candidate[1]].indexed, row.indexed):
                        best = candidate
                        break
            earlier.setdefault(key, []).append((time, post_id))
        origins[post_id] = best
    return origins


async def _write_index(
    session: AsyncSession,
    before: dict[str, _Row],
    after: dict[str, _Row],
    origins: dict[str, tuple],
) -> None:
    """The band rows the batch removed and added (with the origins of `_origins_within`), and
    the signatures it changed."""
    removed = sorted((k, p) for p, row in after.items() for k in before[p].keys - row.keys)
    added = sorted(
        (k, p, row.time, *origins[p]) for p, row in after.items() for k in row.keys - before[p].keys
    )
    if removed:
        await session.execute(_DELETE_BANDS, _columns(removed, ("bands", "ids")))
    if added:
        await session.execute(
            _INSERT_BANDS,
            _columns(added, ("bands", "ids", "times", "origin_times", "origin_ids")),
        )
    # A post created again with another time (facts take the latest): its kept rows follow.
    kept = sorted(p for p, row in after.items() if row.keys & before[p].keys)
    if kept:
        await session.execute(_BAND_TIMES, {"ids": kept})
    signed = sorted(
        (p, row.signature) for p, row in after.items() if row.signature != before[p].signature
    )
    if signed:
        await session.execute(_SET_SIGNATURES, _columns(signed, ("ids", "signatures")))


def _columns(rows: list[tuple], names: tuple[str, ...]) -> dict[str, list]:
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def _lookup(
    rule: NearDuplicateRule, posts: list[_Indexed], bounds: dict[str, tuple]
) -> dict[str, list]:
    """The parameters of a lookup for several posts: the nth post's id and time (or the (time,
    id) of `bounds`), and its band keys as (n, key) rows (n from 1)."""
    numbers: list[int] = []
    keys: list[int] = []
    for n, post in enumerate(posts, start=1):
        known = post.keys if post.keys is not None else rule.band_keys(post.signature)
        post_keys = sorted(set(known))
        numbers += [n] * len(post_keys)
        keys += post_keys
    at = [bounds.get(p.post_id, (p.time, p.post_id)) for p in posts]
    return {
        "ids": [post_id for _, post_id in at],
        "times": [time for time, _ in at],
        "numbers": numbers,
        "keys": keys,
    }


# Candidates read per post at a time (most posts need one read: their first is similar or they
# have fewer), and per read after the first (a post that reads on is usually an original with
# many dissimilar posts sharing a band key: it has to read them all).
CANDIDATES_PER_READ = 64
READ_ON_FACTOR = 8


async def _earliest_similar_before_each(
    session: AsyncSession,
    rule: NearDuplicateRule,
    posts: list[_Indexed],
    within: dict[str, tuple] | None = None,
) -> dict[str, str]:
    """{post: the earliest post before it (by time, then id) sharing a band key with it and
    similar to it}, for those that have one: read in time order, and the first similar
    candidate ends a post's search.

    `within` (`_origins_within`): a post's earliest similar post of its own batch, found in
    memory. Only the candidates before that one are read; none similar, it is the original. The
    copies of a flood inside one batch read what its first reads, not each other."""
    within = within or {}
    bounds = {
        post.post_id: within[post.post_id]
        for post in posts
        if within.get(post.post_id, (post.time, post.post_id)) != (post.time, post.post_id)
    }
    originals: dict[str, str] = {}

    def first_original(post: _Indexed, rows: list) -> bool:
        signed = [row for row in rows if row.signature is not None]
        first = rule.first_similar(post.signature, [row.signature for row in signed])
        if first is not None:
            originals[post.post_id] = signed[first].post_id
        return first is not None

    await _read_in_rounds(
        session,
        rule,
        posts,
        _EARLIEST,
        {"after_times": "time", "after_ids": "post_id"},
        first_original,
        bounds,
    )
    for post_id, (_, earliest) in bounds.items():
        originals.setdefault(post_id, earliest)
    return originals


async def _read_in_rounds(
    session: AsyncSession,
    rule: NearDuplicateRule,
    posts: list[_Indexed],
    statement,
    cursor: dict[str, str],
    done: Callable[[_Indexed, list], bool],
    bounds: dict[str, tuple] | None = None,
) -> None:
    """Read the candidates of every post with `statement`, all posts in one statement per
    round: `CANDIDATES_PER_READ` each at first, then `READ_ON_FACTOR` times as many. Each post
    reads from a cursor (the parameters of `cursor`, from those columns of its last row read;
    at first, before everything), and relative to its own (time, id) or, in `bounds`, to
    another's. `done(post, rows)` sees each read; a post it says is done, or whose read was not
    full, reads no more."""
    todo = [p for p in posts if p.signature is not None and p.time is not None]
    at_first = {"after_times": datetime.min.replace(tzinfo=UTC)}
    cursors = {post.post_id: {name: at_first.get(name, "") for name in cursor} for post in todo}
    bounds = bounds or {}
    chunk = CANDIDATES_PER_READ
    while todo:
        # Posts that would read the same rows (the same keys, bound and cursor: the copies of a
        # flood in one batch) read them once, as one.
        alike: dict[tuple, list[_Indexed]] = {}
        for post in todo:
            keys = post.keys if post.keys is not None else rule.band_keys(post.signature)
            at = bounds.get(post.post_id, (post.time, post.post_id))
            place = tuple(cursors[post.post_id].values())
            alike.setdefault((frozenset(keys), at, place), []).append(post)
        readers = [posts[0] for posts in alike.values()]
        lookup = _lookup(rule, readers, bounds)
        for name in cursor:
            lookup[name] = [cursors[post.post_id][name] for post in readers]
        read: list[list] = [[] for _ in readers]
        for row in await session.execute(statement, {**lookup, "limit": chunk}):
            read[row.ord - 1].append(row)
        reading_on = []
        for posts, rows in zip(alike.values(), read, strict=True):
            for post in posts:
                if not done(post, rows) and len(rows) == chunk:
                    last = rows[-1]
                    cursors[post.post_id] = {
                        name: getattr(last, column) for name, column in cursor.items()
                    }
                    reading_on.append(post)
        todo = reading_on
        chunk = CANDIDATES_PER_READ * READ_ON_FACTOR


# The next `limit` candidates before each post after its cursor (time, id), in order. Each band
# key's next `limit` earlier posts are an index range (band, time, id: migration 0012), and the
# next `limit` posts sharing any key are among them: the cost is bounded by the keys and the
# limit, not by the posts before (a post with no earlier copy used to read them all). Only
# those are joined with their posts for the signatures.
_EARLIEST = sql(
    "WITH a AS MATERIALIZED (SELECT a.post_id, a.time, a.ord, a.after_time, a.after_id, k.keys"
    " FROM unnest(CAST(:ids AS varchar[]), CAST(:times AS timestamptz[]),"
    "  CAST(:after_times AS timestamptz[]), CAST(:after_ids AS varchar[]))"
    "  WITH ORDINALITY AS a(post_id, time, after_time, after_id, ord)"
    " JOIN (SELECT ord, array_agg(band) AS keys FROM unnest(CAST(:numbers AS bigint[]),"
    "  CAST(:keys AS bigint[])) AS k(ord, band) GROUP BY ord) AS k ON k.ord = a.ord),"
    " c AS (SELECT DISTINCT a.ord, b.post_id, b.time"
    "  FROM a CROSS JOIN LATERAL unnest(a.keys) AS k(band)"
    "  CROSS JOIN LATERAL (SELECT b.post_id, b.time FROM scoring_post_bands AS b"
    "   WHERE b.band = k.band"
    '   AND (b.time, b.post_id COLLATE "C") < (a.time, a.post_id COLLATE "C")'
    '   AND (b.time, b.post_id COLLATE "C") > (a.after_time, a.after_id COLLATE "C")'
    '   ORDER BY b.time, b.post_id COLLATE "C" LIMIT :limit) AS b),'
    " r AS (SELECT c.*, row_number() OVER"
    '  (PARTITION BY c.ord ORDER BY c.time, c.post_id COLLATE "C") AS n FROM c)'
    " SELECT r.ord, r.post_id, r.time, p.signature FROM r"
    " LEFT JOIN scoring_posts AS p ON p.post_id = r.post_id"
    " WHERE r.n <= :limit"
    ' ORDER BY r.ord, r.time, r.post_id COLLATE "C"'
)
# The next `limit` posts after each post's cursor, by origin (the original's time and id, or the
# post's own for an original), then id, that share a band key with it and whose origin is after
# it: the posts whose original is none or later than it, an index range per band key
# (band, origin, id: migration 0013). The copies of an earlier original are not in it, however
# many (a flood of one text, at one time, arriving in any order).
_LATER = sql(
    "WITH a AS MATERIALIZED (SELECT a.post_id, a.time, a.ord, a.after_time, a.after_origin,"
    "  a.after_id, k.keys"
    " FROM unnest(CAST(:ids AS varchar[]), CAST(:times AS timestamptz[]),"
    "  CAST(:after_times AS timestamptz[]), CAST(:after_origins AS varchar[]),"
    "  CAST(:after_ids AS varchar[]))"
    "  WITH ORDINALITY AS a(post_id, time, after_time, after_origin, after_id, ord)"
    " JOIN (SELECT ord, array_agg(band) AS keys FROM unnest(CAST(:numbers AS bigint[]),"
    "  CAST(:keys AS bigint[])) AS k(ord, band) GROUP BY ord) AS k ON k.ord = a.ord),"
    " c AS (SELECT DISTINCT a.ord, b.post_id, b.origin_time, b.origin_id"
    "  FROM a CROSS JOIN LATERAL unnest(a.keys) AS k(band)"
    "  CROSS JOIN LATERAL (SELECT b.post_id, b.origin_time, b.origin_id"
    "   FROM scoring_post_bands AS b WHERE b.band = k.band"
    '   AND (b.origin_time, b.origin_id COLLATE "C") > (a.time, a.post_id COLLATE "C")'
    '   AND (b.origin_time, b.origin_id COLLATE "C", b.post_id COLLATE "C")'
    '    > (a.after_time, a.after_origin COLLATE "C", a.after_id COLLATE "C")'
    '   ORDER BY b.origin_time, b.origin_id COLLATE "C", b.post_id COLLATE "C"'
    "   LIMIT :limit) AS b),"
    " r AS (SELECT c.*, row_number() OVER (PARTITION BY c.ord"
    '  ORDER BY c.origin_time, c.origin_id COLLATE "C", c.post_id COLLATE "C") AS n FROM c)'
    " SELECT r.ord, r.origin_time, r.origin_id, p.post_id, p.time, p.signature, p.duplicate_of"
    " FROM r JOIN scoring_posts AS p ON p.post_id = r.post_id"
    " WHERE r.n <= :limit"
    ' ORDER BY r.ord, r.origin_time, r.origin_id COLLATE "C", r.post_id COLLATE "C"'
)
_BANDS_OF = "ARRAY(SELECT b.band FROM scoring_post_bands AS b WHERE b.post_id = p.post_id)"
_KEYS_NOW = sql(
    f"SELECT p.post_id, p.signature, {_BANDS_OF} AS bands FROM scoring_posts AS p"
    " WHERE p.post_id = ANY(CAST(:ids AS varchar[]))"
)
_LOCK_ROWS = sql(
    f"SELECT p.post_id, p.time, p.signature, p.duplicate_of, {_BANDS_OF} AS bands"
    " FROM scoring_posts AS p WHERE p.post_id = ANY(CAST(:ids AS varchar[]))"
    " ORDER BY p.post_id FOR UPDATE OF p"
)
_COPIES = sql(
    "SELECT post_id, time, signature, duplicate_of FROM scoring_posts"
    " WHERE duplicate_of = ANY(CAST(:ids AS varchar[]))"
)
_DELETE_BANDS = sql(
    "DELETE FROM scoring_post_bands AS b"
    " USING unnest(CAST(:bands AS bigint[]), CAST(:ids AS varchar[])) AS d(band, post_id)"
    " WHERE b.band = d.band AND b.post_id = d.post_id"
)
_INSERT_BANDS = sql(
    "INSERT INTO scoring_post_bands (band, post_id, time, origin_time, origin_id)"
    " SELECT * FROM unnest(CAST(:bands AS bigint[]), CAST(:ids AS varchar[]),"
    "  CAST(:times AS timestamptz[]), CAST(:origin_times AS timestamptz[]),"
    "  CAST(:origin_ids AS varchar[]))"
    " ON CONFLICT DO NOTHING"
)
# The origin of these posts' band rows and of their copies' (the original, else the post).
_BAND_ORIGINS = sql(
    "UPDATE scoring_post_bands AS b SET origin_time = o.time, origin_id = o.post_id"
    " FROM scoring_posts AS p JOIN scoring_posts AS o"
    "  ON o.post_id = coalesce(p.duplicate_of, p.post_id)"
    " WHERE b.post_id = p.post_id AND o.time IS NOT NULL"
    " AND (p.post_id = ANY(CAST(:ids AS varchar[]))"
    "  OR p.duplicate_of = ANY(CAST(:ids AS varchar[])))"
    " AND (b.origin_time <> o.time OR b.origin_id <> o.post_id)"
)
_BAND_TIMES = sql(
    "UPDATE scoring_post_bands AS b SET time = p.time FROM scoring_posts AS p"
    " WHERE p.post_id = b.post_id AND b.post_id = ANY(CAST(:ids AS varchar[]))"
    " AND b.time <> p.time"
)
_SET_ORIGINALS = sql(
    "UPDATE scoring_posts AS p SET duplicate_of = s.original"
    " FROM unnest(CAST(:ids AS varchar[]), CAST(:originals AS varchar[])) AS s(post_id, original)"
    " WHERE p.post_id = s.post_id"
)
_SET_SIGNATURES = sql(
    "UPDATE scoring_posts AS p SET signature = s.signature"
    " FROM unnest(CAST(:ids AS varchar[]), CAST(:signatures AS bytea[])) AS s(post_id, signature)"
    " WHERE p.post_id = s.post_id"
)


async def _later_similar_without_an_earlier_original(
    session: AsyncSession, rule: NearDuplicateRule, posts: list[_Indexed]
) -> list[_Indexed]:
    """The posts after any of `posts`, not one of them, sharing a band key with it and similar
    to it, whose original is none or after it: it, or an earlier one, is their original now.
    Read by origin, all of them (posts that came before a family of copies read on)."""
    ids = {post.post_id for post in posts}
    found: dict[str, _Indexed] = {}

    def collect(post: _Indexed, rows: list) -> bool:
        others = [
            row
            for row in rows
            if row.post_id not in ids and row.post_id not in found and row.signature
        ]
        for i in rule.similar_ones(post.signature, [row.signature for row in others]):
            found[others[i].post_id] = _indexed(others[i])
        return False

    cursor = {"after_times": "origin_time", "after_origins": "origin_id", "after_ids": "post_id"}
    await _read_in_rounds(session, rule, posts, _LATER, cursor, collect)
    return list(found.values())


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
