"""Reward 2, the monthly pool (PROGRAM.md, "Definitions": content quality, score, ranking):
the rules as pure functions. No I/O, no clock, no settings lookup; `Decimal` throughout.

Three rules, each documented where it is defined and in docs/rules.md ("Reward 2: the monthly
pool", with a worked example):

- `post_quality(...)`: one post's content quality in [0, 1] (the moderation score when the
  platform sent one, otherwise a heuristic), 6 decimals.
- `score_month(stats, rules)`: eligibility, the score's components before and after
  normalisation, the divisors, the score (6 decimals) and the ranking of one month.
- `split_pool(pool, scores)`: the pool split among the eligible creators in proportion to score,
  in cents, summing to exactly `pool` (largest remainder, deterministic ties).

Arithmetic runs in one fixed decimal context (`CONTEXT`: 28 significant digits, half-even), so
the results do not depend on the caller's thread context. The pool split is exact (fractions
of integers), not rounded at all until the cents are handed out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
# Quality and score: 6 decimals, half-even (banker's rounding: no drift upwards on average).
SIX_PLACES = Decimal("0.000001")
CENT = Decimal("0.01")
ZERO = Decimal(0)
ONE = Decimal(1)


# --- content quality ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QualityHeuristic:
    """The heuristic's numbers (settings `quality_*`): weight × min(value, saturation) /
    saturation for each signal; the weights sum to 1."""

    length_weight: Decimal = Decimal("0.40")
    length_full_at: int = 500  # characters (the shared character rule)
    images_weight: Decimal = Decimal("0.20")
    images_full_at: int = 3  # images
    structure_weight: Decimal = Decimal("0.15")
    structure_full_at: int = 5  # paragraphs
    engagement_weight: Decimal = Decimal("0.25")
    engagement_full_at: int = 20  # distinct actors (other than the author) who interacted

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityHeuristic:
        return cls(**{name: getattr(settings, f"quality_{name}") for name in cls.__slots__})


DEFAULT_HEURISTIC = QualityHeuristic()


def post_quality(
    *,
    characters: int,
    image_count: int,
    paragraphs: int,
    distinct_actors: int,
    moderation_score: Decimal | None,
    heuristic: QualityHeuristic = DEFAULT_HEURISTIC,
) -> Decimal:
    """One post's content quality in [0, 1], quantized to 6 decimals (half-even).

    The moderation score, when the platform sent one (it must lie in [0, 1]), is the quality,
    whatever the post looks like. Otherwise the heuristic, each signal saturating at a level past
    which more of it adds nothing:

        quality = 0.40 × min(characters, 500) / 500          length
                + 0.20 × min(image_count, 3) / 3              images
                + 0.15 × min(paragraphs, 5) / 5               structure
                + 0.25 × min(distinct_actors, 20) / 20        engagement

    `characters` is the shared character count (grapheme clusters, no whitespace or URLs);
    `paragraphs` the number of non-blank blocks of text; `distinct_actors` how many different
    accounts other than the author interacted with the post (an account counts once, however
    much it interacted: a ring of accounts buys little). The weights sum to 1, so the result is
    in [0, 1], and it never falls when one input grows. Originality is not a signal here: only
    qualifying posts, which are never near-duplicates, are averaged into a creator's quality.

    The numbers are those of the default settings (`heuristic`, from `quality_*`).

    Example: 250 characters, 1 image, 3 paragraphs, 8 distinct actors →
    0.40 × 0.5 + 0.20 × 1/3 + 0.15 × 0.6 + 0.25 × 0.4 = 0.456666… → 0.456667.
    """
    for name, value in (
        ("characters", characters),
        ("image_count", image_count),
        ("paragraphs", paragraphs),
        ("distinct_actors", distinct_actors),
    ):
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    with localcontext(CONTEXT):
        if moderation_score is not None:
            if not ZERO <= moderation_score <= ONE:
                raise ValueError(f"moderation_score must be in [0, 1], got {moderation_score}")
            return moderation_score.quantize(SIX_PLACES)
    h = heuristic
    return _heuristic_quality(
        h,
        min(characters, h.length_full_at),
        min(image_count, h.images_full_at),
        min(paragraphs, h.structure_full_at),
        min(distinct_actors, h.engagement_full_at),
    )


@lru_cache(maxsize=1 << 16)
def _heuristic_quality(
    h: QualityHeuristic, characters: int, image_count: int, paragraphs: int, distinct_actors: int
) -> Decimal:
    """The heuristic of values already capped at their saturation: few distinct arguments, so
    each is computed once (a month is rebuilt with every qualifying post's quality)."""
    with localcontext(CONTEXT):
        quality = (
            _saturating(h.length_weight, characters, h.length_full_at)
            + _saturating(h.images_weight, image_count, h.images_full_at)
            + _saturating(h.structure_weight, paragraphs, h.structure_full_at)
            + _saturating(h.engagement_weight, distinct_actors, h.engagement_full_at)
        )
        return min(quality, ONE).quantize(SIX_PLACES)


def _saturating(weight: Decimal, value: int, full_at: int) -> Decimal:
    return weight * Decimal(min(value, full_at)) / Decimal(full_at)


# --- the month's scores and ranking ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatorStats:
    """One creator's month, as the scoring service derived it from the facts.

    `interactions` are the weighted interactions received, after the per-actor daily cap;
    `quality` is the mean content quality over the qualifying posts (0 when there are none);
    `certified` means certified before the month ends.
    """

    creator_id: str
    qualifying_posts: int
    active_days: int
    interactions: int
    quality: Decimal
    certified: bool

    def __post_init__(self) -> None:
        for name in ("qualifying_posts", "active_days", "interactions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative ({self.creator_id})")
        if not ZERO <= self.quality <= ONE:
            raise ValueError(f"quality must be in [0, 1], got {self.quality} ({self.creator_id})")


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings the score uses (PROGRAM.md defaults: 0.25, 0.25, 0.30, 0.20; 30 posts)."""

    weight_posts: Decimal
    weight_active_days: Decimal
    weight_interactions: Decimal
    weight_quality: Decimal
    min_posts: int

    def __post_init__(self) -> None:
        for name in ("weight_posts", "weight_active_days", "weight_interactions", "weight_quality"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.min_posts < 0:
            raise ValueError("min_posts must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            weight_posts=settings.weight_posts,
            weight_active_days=settings.weight_active_days,
            weight_interactions=settings.weight_interactions,
            weight_quality=settings.weight_quality,
            min_posts=settings.monthly_min_quality_posts,
        )

    @property
    def weights(self) -> Components:
        return Components(
            posts=self.weight_posts,
            active_days=self.weight_active_days,
            interactions=self.weight_interactions,
            quality=self.weight_quality,
        )


@dataclass(frozen=True, slots=True)
class Components:
    """The four components of the score (raw, divisors, normalised or weights)."""

    posts: Decimal
    active_days: Decimal
    interactions: Decimal
    quality: Decimal


@dataclass(frozen=True, slots=True)
class CreatorScore:
    """One creator's score and place in the month.

    `raw`: qualifying posts, active days, ln(1 + interactions), quality (28 significant digits).
    `normalised`: raw / the month's divisor, capped at 1 (0 where the divisor is 0).
    `score`: Σ weight × normalised, 6 decimals. `rank`: 1, 2, 3 … among certified creators,
    None for the others. Only `eligible` creators share the pool.
    """

    creator_id: str
    certified: bool
    eligible: bool
    raw: Components
    normalised: Components
    score: Decimal
    rank: int | None


@dataclass(frozen=True, slots=True)
class MonthScores:
    """The month: the divisors (the largest raw component among the eligible creators, 0 when
    no one is eligible) and every creator, ranked ones first in rank order, then the
    non-certified by creator id."""

    divisors: Components
    creators: tuple[CreatorScore, ...]

    def by_creator(self) -> dict[str, CreatorScore]:
        return {creator.creator_id: creator for creator in self.creators}

    def eligible_scores(self) -> dict[str, Decimal]:
        """The input of `split_pool`: score of each eligible creator."""
        return {c.creator_id: c.score for c in self.creators if c.eligible}


def is_eligible(stats: CreatorStats, rules: Rules) -> bool:
    """Reward 2: certified before the month ends and ≥ `min_posts` original quality posts."""
    return stats.certified and stats.qualifying_posts >= rules.min_posts


def score_month(stats: Iterable[CreatorStats], rules: Rules) -> MonthScores:
    """The month's scores and ranking (PROGRAM.md, "Score" and "Ranking").

    - **Components** (raw): qualifying posts, active days, ln(1 + interactions), quality.
    - **Divisors**: for each component, its largest value among the month's *eligible* creators;
      0 when no one is eligible (or all eligible have 0), and then that component is 0 for
      everyone.
    - **Normalised** component = min(raw / divisor, 1): the best eligible creator gets exactly 1;
      a non-eligible creator above the divisor (more interactions than any eligible one, say)
      is capped at 1.
    - **Score** = Σ weight × normalised, quantized to 6 decimals half-even; in
      [0, Σ weights]. Every creator gets one, eligible or not, by the same divisors.
    - **Ranking**: certified creators only (the others get rank None), by score descending, then
      creator id ascending; ranks 1..n, never shared. The caller passes the creators with
      activity in the month.

    A creator id given twice is a ValueError.
    """
    stats = list(stats)
    seen: set[str] = set()
    for item in stats:
        if item.creator_id in seen:
            raise ValueError(f"creator {item.creator_id!r} appears twice")
        seen.add(item.creator_id)

    with localcontext(CONTEXT):
        raws = {item.creator_id: _raw_components(item) for item in stats}
        eligible = {item.creator_id for item in stats if is_eligible(item, rules)}
        divisors = Components(
            *(max((getattr(raws[c], field) for c in eligible), default=ZERO) for field in _FIELDS)
        )
        weights = rules.weights
        scored: list[CreatorScore] = []
        for item in stats:
            raw = raws[item.creator_id]
            normalised = Components(
                *(_normalise(getattr(raw, field), getattr(divisors, field)) for field in _FIELDS)
            )
            score = sum(
                (getattr(weights, field) * getattr(normalised, field) for field in _FIELDS),
                start=ZERO,
            ).quantize(SIX_PLACES)
            scored.append(
                CreatorScore(
                    creator_id=item.creator_id,
                    certified=item.certified,
                    eligible=item.creator_id in eligible,
                    raw=raw,
                    normalised=normalised,
                    score=score,
                    rank=None,
                )
            )

    ranked = sorted((c for c in scored if c.certified), key=_ranking_key)
    unranked = sorted((c for c in scored if not c.certified), key=lambda c: c.creator_id)
    creators = tuple([replace(c, rank=rank) for rank, c in enumerate(ranked, start=1)] + unranked)
    return MonthScores(divisors=divisors, creators=creators)


_FIELDS = ("posts", "active_days", "interactions", "quality")


def _raw_components(stats: CreatorStats) -> Components:
    return Components(
        posts=Decimal(stats.qualifying_posts),
        active_days=Decimal(stats.active_days),
        interactions=(ONE + Decimal(stats.interactions)).ln(),
        quality=stats.quality,
    )


def _normalise(value: Decimal, divisor: Decimal) -> Decimal:
    if divisor == 0:
        return ZERO
    return min(value / divisor, ONE)


def _ranking_key(creator: CreatorScore) -> tuple[int, str]:
    # The score in millionths (scores are quantized to six places: the same order): integers
    # compare ~4 times faster than Decimals, and the sort, in C, holds the GIL throughout (a
    # month of 110,000 creators: ~120 ms with Decimals, during which the event loop of the
    # process ranking it in a thread cannot run).
    return (-int(creator.score.scaleb(6)), creator.creator_id)


# --- the pool -------------------------------------------------------------------------------


def split_pool(pool: Decimal, scores: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """The pool shared among the eligible creators (`scores`: creator → score, eligible only) in
    proportion to score, in cents, summing to exactly `pool`.

    Largest remainder: each creator's exact share `pool × score / Σ scores` (computed exactly,
    as a fraction) is floored to the cent; the cents left over (fewer than the number of
    creators) go one each to the largest remainders, ties broken by the higher score, then the
    creator id ascending. So a higher score never gets less, equal scores differ by at most one
    cent, and the result does not depend on the order of `scores`.

    - No eligible creator (`scores` empty) → {} (nothing is paid).
    - Every score 0 → the pool is split equally by the same rule (each creator weighs 1).
    - `pool` must be ≥ 0 with at most 2 decimals; scores must be ≥ 0.

    The answer is ordered by creator id; amounts are `Decimal`s with exactly 2 decimals.
    Creators outside `scores` are not in it (the caller pays them Decimal("0.00")).
    """
    if not pool.is_finite() or pool < 0 or pool != pool.quantize(CENT, context=CONTEXT):
        raise ValueError(f"pool must be a non-negative amount with at most 2 decimals: {pool}")
    for creator_id, score in scores.items():
        if not score.is_finite() or score < 0:
            raise ValueError(f"score of {creator_id!r} must be ≥ 0, got {score}")
    if not scores:
        return {}

    cents = int(pool.scaleb(2, context=CONTEXT))
    weights = {creator_id: Fraction(score) for creator_id, score in scores.items()}
    total = sum(weights.values(), start=Fraction(0))
    if total == 0:
        weights = dict.fromkeys(weights, Fraction(1))
        total = Fraction(len(weights))

    exact = {creator_id: cents * weight / total for creator_id, weight in weights.items()}
    paid = {creator_id: share.numerator // share.denominator for creator_id, share in exact.items()}
    left = cents - sum(paid.values())
    by_remainder = sorted(
        exact,
        key=lambda c: (-(exact[c] - paid[c]), -weights[c], c),
    )
    for creator_id in by_remainder[:left]:
        paid[creator_id] += 1
    return {
        creator_id: Decimal(paid[creator_id]).scaleb(-2, context=CONTEXT)
        for creator_id in sorted(paid)
    }


def month_payouts(month: MonthScores, pool: Decimal) -> dict[str, Decimal]:
    """Every creator of the month → payout: `split_pool` among the eligible, Decimal("0.00")
    for the others. Ordered by creator id."""
    shares = split_pool(pool, month.eligible_scores())
    return {
        c.creator_id: shares.get(c.creator_id, Decimal("0.00"))
        for c in sorted(month.creators, key=lambda c: c.creator_id)
    }
