"""Reward 2's rules of services/scoring/score.py: content quality, the month's scores and
ranking, the split of the pool. Pure functions: no database, no broker."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.score import (
    Components,
    CreatorStats,
    QualityHeuristic,
    Rules,
    month_payouts,
    post_quality,
    score_month,
    split_pool,
)
from shared.settings import Settings

D = Decimal
POOL = D("1500.00")
RULES = Rules(
    weight_posts=D("0.25"),
    weight_active_days=D("0.25"),
    weight_interactions=D("0.30"),
    weight_quality=D("0.20"),
    min_posts=30,
)


def stats(
    creator_id: str,
    posts: int = 30,
    days: int = 20,
    interactions: int = 100,
    quality: str = "0.5",
    certified: bool = True,
) -> CreatorStats:
    return CreatorStats(
        creator_id=creator_id,
        qualifying_posts=posts,
        active_days=days,
        interactions=interactions,
        quality=D(quality),
        certified=certified,
    )


def quality(**overrides) -> Decimal:
    inputs = dict(
        characters=0, image_count=0, paragraphs=0, distinct_actors=0, moderation_score=None
    )
    return post_quality(**(inputs | overrides))


# --- content quality ------------------------------------------------------------------------


class TestPostQuality:
    def test_the_documented_example(self):
        # docs/rules.md: 0.40 × 0.5 + 0.20 × 1/3 + 0.15 × 0.6 + 0.25 × 0.4 = 0.456666… → 0.456667
        assert quality(characters=250, image_count=1, paragraphs=3, distinct_actors=8) == D(
            "0.456667"
        )

    def test_the_moderation_score_wins_over_the_heuristic(self):
        assert quality(characters=10_000, image_count=9, moderation_score=D("0.3")) == D("0.300000")
        assert quality(moderation_score=D("0.87654321")) == D("0.876543")
        assert quality(moderation_score=D(0)) == D("0.000000")
        assert quality(moderation_score=D(1)) == D("1.000000")

    @pytest.mark.parametrize("score", [D("-0.01"), D("1.0001")])
    def test_a_moderation_score_outside_0_1_is_refused(self, score):
        with pytest.raises(ValueError, match="moderation_score"):
            quality(moderation_score=score)

    def test_negative_inputs_are_refused(self):
        with pytest.raises(ValueError, match="characters"):
            quality(characters=-1)

    def test_each_signal_on_its_own_and_at_saturation(self):
        assert quality() == D("0.000000")
        assert quality(characters=500) == quality(characters=5000) == D("0.400000")
        assert quality(image_count=3) == quality(image_count=30) == D("0.200000")
        assert quality(paragraphs=5) == quality(paragraphs=50) == D("0.150000")
        assert quality(distinct_actors=20) == quality(distinct_actors=999) == D("0.250000")
        full = quality(characters=500, image_count=3, paragraphs=5, distinct_actors=20)
        assert full == D("1.000000")

    def test_a_50_character_text_post_is_weak_a_long_illustrated_one_strong(self):
        assert quality(characters=50, paragraphs=1) == D("0.070000")  # 0.04 + 0.03
        strong = quality(characters=800, image_count=2, paragraphs=6, distinct_actors=15)
        assert strong == D("0.870833")  # 0.40 + 0.2 × 2/3 + 0.15 + 0.25 × 0.75 = 0.8708333…

    @given(
        characters=st.integers(0, 2000),
        image_count=st.integers(0, 10),
        paragraphs=st.integers(0, 20),
        distinct_actors=st.integers(0, 100),
        which=st.sampled_from(["characters", "image_count", "paragraphs", "distinct_actors"]),
        more=st.integers(0, 1000),
    )
    def test_in_0_1_with_6_decimals_and_monotone_in_each_input(
        self, characters, image_count, paragraphs, distinct_actors, which, more
    ):
        inputs = dict(
            characters=characters,
            image_count=image_count,
            paragraphs=paragraphs,
            distinct_actors=distinct_actors,
        )
        value = quality(**inputs)
        assert D(0) <= value <= D(1)
        assert value.as_tuple().exponent == -6
        assert quality(**(inputs | {which: inputs[which] + more})) >= value


# --- the month's scores ---------------------------------------------------------------------


class TestWorkedExample:
    """docs/rules.md, "Reward 2: the monthly pool": the same four creators, the same numbers."""

    MONTH = [
        stats("alice", posts=42, days=20, interactions=1_200, quality="0.72"),
        stats("bob", posts=30, days=25, interactions=300, quality="0.85"),
        stats("chen", posts=35, days=12, interactions=20_000, quality="0.60"),
        stats("dana", posts=18, days=15, interactions=400, quality="0.90"),
    ]

    def test_divisors_are_the_eligible_maxima(self):
        month = score_month(self.MONTH, RULES)
        assert month.divisors.posts == 42
        assert month.divisors.active_days == 25
        assert month.divisors.interactions == D(20_001).ln()
        assert str(month.divisors.interactions)[:10] == "9.90353755"
        # dana's 0.90 is not a divisor: dana is not eligible (18 posts < 30)
        assert month.divisors.quality == D("0.85")

    def test_components_scores_and_ranks(self):
        month = score_month(self.MONTH, RULES).by_creator()
        q6 = D("0.000001")
        rows = {
            c: (
                month[c].eligible,
                tuple(
                    getattr(month[c].normalised, f).quantize(q6)
                    for f in ("posts", "active_days", "interactions", "quality")
                ),
                month[c].score,
                month[c].rank,
            )
            for c in month
        }
        assert rows == {
            "alice": (True, (D(1), D("0.8"), D("0.715998"), D("0.847059")), D("0.834211"), 1),
            "bob": (True, (D("0.714286"), D(1), D("0.576270"), D(1)), D("0.801452"), 2),
            "chen": (True, (D("0.833333"), D("0.48"), D(1), D("0.705882")), D("0.769510"), 3),
            "dana": (False, (D("0.428571"), D("0.6"), D("0.605234"), D(1)), D("0.638713"), 4),
        }
        assert {c: month[c].raw.interactions.quantize(q6) for c in month} == {
            "alice": D("7.090910"),  # ln 1201
            "bob": D("5.707110"),  # ln 301
            "chen": D("9.903538"),  # ln 20001
            "dana": D("5.993961"),  # ln 401
        }

    def test_the_payouts(self):
        payouts = month_payouts(score_month(self.MONTH, RULES), POOL)
        # exact shares 520.2605…, 499.8302…, 479.9093…: floors sum to 1499.99, the last cent
        # goes to the largest remainder (chen, .93 of a cent)
        assert payouts == {
            "alice": D("520.26"),
            "bob": D("499.83"),
            "chen": D("479.91"),
            "dana": D("0.00"),
        }
        assert sum(payouts.values()) == POOL
        month = score_month(self.MONTH, RULES)
        eligible = month.eligible_scores()
        assert sum(eligible.values()) == D("2.405173")
        exact = {c: (POOL * s / D("2.405173")).quantize(D("0.0001")) for c, s in eligible.items()}
        assert exact == {"alice": D("520.2605"), "bob": D("499.8302"), "chen": D("479.9093")}


class TestScoreMonth:
    def test_eligible_means_certified_and_enough_posts(self):
        month = score_month(
            [
                stats("a", posts=30),
                stats("b", posts=29),
                stats("c", posts=100, certified=False),
            ],
            RULES,
        ).by_creator()
        assert [month[c].eligible for c in "abc"] == [True, False, False]

    def test_a_non_certified_creator_is_scored_but_not_ranked(self):
        month = score_month([stats("a"), stats("b", posts=60, certified=False)], RULES)
        by_creator = month.by_creator()
        assert by_creator["b"].rank is None
        assert by_creator["a"].rank == 1
        # b has more posts than the only eligible creator: capped at 1
        assert by_creator["b"].normalised.posts == 1
        assert by_creator["b"].score == by_creator["a"].score
        assert [c.creator_id for c in month.creators] == ["a", "b"]

    def test_no_eligible_creator_every_component_and_score_is_zero(self):
        month = score_month([stats("b", posts=5), stats("a", posts=29, interactions=10**6)], RULES)
        assert month.divisors == Components(D(0), D(0), D(0), D(0))
        assert [(c.creator_id, c.score, c.rank) for c in month.creators] == [
            ("a", D("0.000000"), 1),
            ("b", D("0.000000"), 2),
        ]

    def test_a_zero_divisor_zeroes_that_component_only(self):
        month = score_month(
            [stats("a", interactions=0, quality="0"), stats("b", interactions=0, quality="0")],
            RULES,
        ).by_creator()
        assert month["a"].normalised.interactions == 0
        assert month["a"].normalised.quality == 0
        assert month["a"].score == D("0.500000")  # posts 0.25 + active days 0.25

    def test_ties_are_ranked_by_creator_id(self):
        month = score_month([stats("carol"), stats("alice"), stats("bob")], RULES)
        assert [(c.creator_id, c.rank) for c in month.creators] == [
            ("alice", 1),
            ("bob", 2),
            ("carol", 3),
        ]

    def test_score_has_6_decimals_half_even(self):
        # 0.25 × 1/3 + 0.25 + 0.30 + 0.20 = 0.8333…: 6 decimals
        month = score_month([stats("a", posts=90), stats("b", posts=30)], RULES).by_creator()
        assert month["b"].score == D("0.833333")
        assert month["a"].score == D("1.000000")

    def test_a_creator_twice_is_refused(self):
        with pytest.raises(ValueError, match="twice"):
            score_month([stats("a"), stats("a")], RULES)

    def test_invalid_stats_and_rules_are_refused(self):
        with pytest.raises(ValueError):
            stats("a", posts=-1)
        with pytest.raises(ValueError):
            stats("a", quality="1.5")
        with pytest.raises(ValueError):
            Rules(D("-0.1"), D(0), D(0), D(0), 30)

    def test_rules_from_settings_are_the_program_defaults(self):
        assert Rules.from_settings(Settings()) == RULES

    def test_one_viral_post_cannot_take_the_pool(self):
        # PROGRAM.md: interactions on a log scale. One creator's single viral post brings 10⁶
        # interactions, the two others 1,000 each; all else equal.
        month = score_month(
            [
                stats("viral", interactions=1_000_000),
                stats("steady1", interactions=1_000),
                stats("steady2", interactions=1_000),
            ],
            RULES,
        )
        payouts = split_pool(POOL, month.eligible_scores())
        # ln(1001) / ln(1000001) ≈ 0.5: the steady creators keep half the interactions component
        assert month.by_creator()["steady1"].normalised.interactions > D("0.5")
        assert payouts["viral"] < D("560")  # 37 % of the pool; equal would be 33 %
        assert payouts["steady1"] == payouts["steady2"] > D("470")
        # on a linear scale the viral creator would get 1.0 / (1.0 + 0.7003 × 2) ≈ 41.7 %,
        # and with interactions weighed alone, 99.8 %
        linear = 1 + 2 * (D("0.70") + D("0.30") * D(1_000) / D(1_000_000))
        assert payouts["viral"] < POOL / linear


# --- the split ------------------------------------------------------------------------------


class TestSplitPool:
    def test_in_proportion_to_score(self):
        assert split_pool(POOL, {"a": D("0.6"), "b": D("0.3"), "c": D("0.1")}) == {
            "a": D("900.00"),
            "b": D("450.00"),
            "c": D("150.00"),
        }

    def test_largest_remainder_then_higher_score_then_creator_id(self):
        # 1.00 in thirds: 0.333… each, one cent left, equal remainders and scores → "a"
        assert split_pool(D("1.00"), {"c": D(1), "b": D(1), "a": D(1)}) == {
            "a": D("0.34"),
            "b": D("0.33"),
            "c": D("0.33"),
        }
        # 0.10 among scores 1, 1, 2 → 0.025, 0.025, 0.05: floors 0.02 + 0.02 + 0.05, one cent
        # left for the two equal remainders → the id first: "a"
        assert split_pool(D("0.10"), {"b": D(1), "a": D(1), "z": D(2)}) == {
            "a": D("0.03"),
            "b": D("0.02"),
            "z": D("0.05"),
        }
        # 0.05 among 3, 2: 0.03 and 0.02 exactly
        assert split_pool(D("0.05"), {"a": D(2), "b": D(3)}) == {"a": D("0.02"), "b": D("0.03")}

    def test_the_larger_remainder_first_even_against_a_higher_score(self):
        # 0.07 among 1, 3 → 1.75 and 5.25 cents: floors 1 + 5, the cent left goes to the
        # larger remainder (0.75, "a"), not to the higher score
        assert split_pool(D("0.07"), {"a": D(1), "b": D(3)}) == {"a": D("0.02"), "b": D("0.05")}
        # 0.01 among 1.5 and 1 → 0.6 and 0.4 of a cent: "x"
        assert split_pool(D("0.01"), {"x": D("1.5"), "y": D("1")}) == {
            "x": D("0.01"),
            "y": D("0.00"),
        }

    def test_equal_remainders_go_to_the_higher_score_then_the_creator_id(self):
        # 0.02 among 1, 3 → 0.5 and 1.5 cents: equal remainders, the higher score ("b")
        assert split_pool(D("0.02"), {"a": D(1), "b": D(3)}) == {"a": D("0.00"), "b": D("0.02")}
        # 0.02 among 1, 1, 2 → 0.5, 0.5, 1 cent: a and b tie on remainder and score → "a"
        assert split_pool(D("0.02"), {"b": D(1), "a": D(1), "z": D(2)}) == {
            "a": D("0.01"),
            "b": D("0.00"),
            "z": D("0.01"),
        }

    def test_no_eligible_creator_pays_nothing(self):
        assert split_pool(POOL, {}) == {}

    def test_all_scores_zero_split_equally(self):
        assert split_pool(D("100.00"), {"c": D(0), "a": D(0), "b": D(0)}) == {
            "a": D("33.34"),
            "b": D("33.33"),
            "c": D("33.33"),
        }

    def test_a_zero_score_among_others_gets_nothing(self):
        assert split_pool(D("10.00"), {"a": D(0), "b": D("0.5")}) == {
            "a": D("0.00"),
            "b": D("10.00"),
        }

    @pytest.mark.parametrize("pool", [D("-1.00"), D("1.001"), D("NaN"), D("Infinity")])
    def test_a_pool_that_is_not_an_amount_is_refused(self, pool):
        with pytest.raises(ValueError, match="pool"):
            split_pool(pool, {"a": D(1)})

    def test_a_negative_score_is_refused(self):
        with pytest.raises(ValueError, match="score"):
            split_pool(POOL, {"a": D(-1)})

    def test_amounts_have_exactly_two_decimals(self):
        for amount in split_pool(D("1500"), {"a": D(1), "b": D(2)}).values():
            assert amount.as_tuple().exponent == -2

    def test_month_payouts_pays_zero_outside_the_eligible(self):
        month = score_month([stats("a"), stats("b", posts=10), stats("c", certified=False)], RULES)
        assert month_payouts(month, POOL) == {
            "a": D("1500.00"),
            "b": D("0.00"),
            "c": D("0.00"),
        }


# --- properties -----------------------------------------------------------------------------

creator_ids = st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=6)
scores = st.decimals(min_value=0, max_value=2, places=6, allow_nan=False, allow_infinity=False)
pools = st.integers(0, 10**9).map(lambda cents: Decimal(cents).scaleb(-2))
score_maps = st.dictionaries(creator_ids, scores, max_size=30)


@given(pool=pools, scores=score_maps)
def test_split_sums_to_the_pool_with_two_decimals_and_pays_only_the_given(pool, scores):
    payouts = split_pool(pool, scores)
    assert set(payouts) == set(scores)
    if scores:
        assert sum(payouts.values()) == pool
    assert all(a >= 0 and a.as_tuple().exponent == -2 for a in payouts.values())


@given(pool=pools, scores=score_maps)
def test_split_is_monotone_in_score(pool, scores):
    payouts = split_pool(pool, scores)
    for a in scores:
        for b in scores:
            if scores[a] > scores[b]:
                assert payouts[a] >= payouts[b]
            elif scores[a] == scores[b]:
                assert abs(payouts[a] - payouts[b]) <= D("0.01")


@given(pool=pools, scores=score_maps, data=st.data())
def test_split_does_not_depend_on_the_input_order(pool, scores, data):
    items = data.draw(st.permutations(list(scores.items())))
    assert split_pool(pool, dict(items)) == split_pool(pool, scores)
    assert list(split_pool(pool, dict(items))) == sorted(scores)


@given(pool=pools, scores=score_maps)
def test_each_share_is_within_a_cent_of_the_exact_share(pool, scores):
    payouts = split_pool(pool, scores)
    total = sum(scores.values())
    for creator_id, score in scores.items():
        exact = pool * score / total if total else pool / len(scores)
        assert abs(payouts[creator_id] - exact) < D("0.01")


weights = st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False)
rules = st.builds(
    Rules,
    weight_posts=weights,
    weight_active_days=weights,
    weight_interactions=weights,
    weight_quality=weights,
    min_posts=st.integers(0, 40),
)
creator_stats = st.builds(
    CreatorStats,
    creator_id=creator_ids,
    qualifying_posts=st.integers(0, 80),
    active_days=st.integers(0, 31),
    interactions=st.one_of(st.integers(0, 1000), st.integers(0, 10**9)),
    quality=st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False),
    certified=st.booleans(),
)
months = st.lists(creator_stats, max_size=25, unique_by=lambda s: s.creator_id)
FIELDS = ("posts", "active_days", "interactions", "quality")


@given(month=months, rules=rules)
def test_scores_lie_between_0_and_the_sum_of_weights(month, rules):
    top = sum(getattr(rules.weights, f) for f in FIELDS)
    for creator in score_month(month, rules).creators:
        assert D(0) <= creator.score <= top
        assert creator.score.as_tuple().exponent == -6
        for f in FIELDS:
            assert D(0) <= getattr(creator.normalised, f) <= D(1)


@given(month=months, rules=rules)
def test_the_best_eligible_creator_gets_exactly_1_on_each_component(month, rules):
    result = score_month(month, rules)
    eligible = [c for c in result.creators if c.eligible]
    for f in FIELDS:
        best = max((getattr(c.raw, f) for c in eligible), default=D(0))
        assert getattr(result.divisors, f) == best
        for c in eligible:
            if getattr(c.raw, f) == best and best > 0:
                assert getattr(c.normalised, f) == 1


@given(month=months, rules=rules, data=st.data())
def test_ranks_are_a_permutation_over_certified_creators_in_score_order(month, rules, data):
    result = score_month(month, rules)
    ranked = [c for c in result.creators if c.rank is not None]
    assert {c.creator_id for c in ranked} == {s.creator_id for s in month if s.certified}
    assert [c.rank for c in ranked] == list(range(1, len(ranked) + 1))
    assert all(c.rank is None for c in result.creators if not c.certified)
    keys = [(-c.score, c.creator_id) for c in ranked]
    assert keys == sorted(keys)
    shuffled = data.draw(st.permutations(month))
    assert score_month(shuffled, rules) == result


@given(month=months, pool=pools)
def test_month_payouts_pay_the_pool_to_the_eligible_only(month, pool):
    result = score_month(month, RULES)
    payouts = month_payouts(result, pool)
    eligible = {c.creator_id for c in result.creators if c.eligible}
    assert set(payouts) == {s.creator_id for s in month}
    assert all(payouts[c] == D("0.00") for c in payouts if c not in eligible)
    assert sum(payouts.values()) == (pool if eligible else 0)


def test_the_quality_heuristic_comes_from_the_settings():
    from services.scoring import months
    from services.scoring.models import Post

    post = Post(characters=100, image_count=0, paragraphs=1, quality_score=None)
    default = Settings(_env_file=None)
    longer_texts_only = Settings(
        _env_file=None,
        quality_length_weight=Decimal("1"),
        quality_images_weight=Decimal("0"),
        quality_structure_weight=Decimal("0"),
        quality_engagement_weight=Decimal("0"),
        quality_length_full_at=100,
    )
    heuristic = QualityHeuristic.from_settings
    assert months.post_quality(post, 0, heuristic(default)) == Decimal("0.110000")  # 0.08 + 0.03
    assert months.post_quality(post, 0, heuristic(longer_texts_only)) == Decimal("1.000000")
