"""Who may join (services/badges/eligibility.py): the three ways in, the form, Accept-Language."""

from __future__ import annotations

import json
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.badges.eligibility import (
    MAX_PLATFORMS,
    ApplicationForm,
    JoiningThresholds,
    ReasonCode,
    check_eligibility,
)
from shared.language import preferred_language
from shared.settings import Settings

DEFAULTS = JoiningThresholds()
ALL_SQUARE_REASONS = [
    "square_not_certified",
    "square_followers_below_threshold",
    "square_interactions_below_threshold",
]


def form(*platforms: tuple[int, bool], **square) -> ApplicationForm:
    """An application with one platform per (followers, verified) pair."""
    return ApplicationForm(
        creator_id="c1",
        platforms=[
            {"platform": f"p{i}", "handle": f"h{i}", "followers": followers, "verified": verified}
            for i, (followers, verified) in enumerate(platforms)
        ],
        **square,
    )


def square(followers: int | None, interactions: int | None, certified: bool = True) -> dict:
    return {
        "square_certified": certified,
        "square_followers": followers,
        "square_interactions_30d": interactions,
    }


# --- the eligibility table ------------------------------------------------------------------

TABLE = {
    # name: (form, basis, reason codes)
    "nothing": (
        form(),
        [],
        ["not_verified_elsewhere", "followers_below_threshold", *ALL_SQUARE_REASONS],
    ),
    "999 on one platform": (
        form((999, False)),
        [],
        ["not_verified_elsewhere", "followers_below_threshold", *ALL_SQUARE_REASONS],
    ),
    "1,000 on one platform": (
        form((1000, False)),
        ["followers_on_one_platform"],
        ["not_verified_elsewhere", *ALL_SQUARE_REASONS],
    ),
    "900 + 900 on two platforms": (
        form((900, False), (900, False)),
        [],
        ["not_verified_elsewhere", "followers_below_threshold", *ALL_SQUARE_REASONS],
    ),
    "999 x 20 platforms": (
        form(*[(999, False)] * MAX_PLATFORMS),
        [],
        ["not_verified_elsewhere", "followers_below_threshold", *ALL_SQUARE_REASONS],
    ),
    "900 and 1,000 on two platforms": (
        form((900, False), (1000, False)),
        ["followers_on_one_platform"],
        ["not_verified_elsewhere", *ALL_SQUARE_REASONS],
    ),
    "verified elsewhere with 0 followers": (
        form((0, True)),
        ["verified_elsewhere"],
        ["followers_below_threshold", *ALL_SQUARE_REASONS],
    ),
    "verified on one of two platforms": (
        form((10, False), (0, True)),
        ["verified_elsewhere"],
        ["followers_below_threshold", *ALL_SQUARE_REASONS],
    ),
    "verified and 1,000": (
        form((1000, True)),
        ["verified_elsewhere", "followers_on_one_platform"],
        ALL_SQUARE_REASONS,
    ),
    "square 500/100": (
        form(**square(500, 100)),
        ["square_creator"],
        ["not_verified_elsewhere", "followers_below_threshold"],
    ),
    "square 499/100": (
        form(**square(499, 100)),
        [],
        ["not_verified_elsewhere", "followers_below_threshold", "square_followers_below_threshold"],
    ),
    "square 501/101": (
        form(**square(501, 101)),
        ["square_creator"],
        ["not_verified_elsewhere", "followers_below_threshold"],
    ),
    "square 500/99": (
        form(**square(500, 99)),
        [],
        [
            "not_verified_elsewhere",
            "followers_below_threshold",
            "square_interactions_below_threshold",
        ],
    ),
    "square 499/99": (
        form(**square(499, 99)),
        [],
        [
            "not_verified_elsewhere",
            "followers_below_threshold",
            "square_followers_below_threshold",
            "square_interactions_below_threshold",
        ],
    ),
    "square not certified, high numbers": (
        form(**square(1_000_000, 1_000_000, certified=False)),
        [],
        ["not_verified_elsewhere", "followers_below_threshold", "square_not_certified"],
    ),
    "square certified, figures left out": (
        form(square_certified=True),
        [],
        [
            "not_verified_elsewhere",
            "followers_below_threshold",
            "square_followers_below_threshold",
            "square_interactions_below_threshold",
        ],
    ),
    "square not certified, 499/99": (
        form(**square(499, 99, certified=False)),
        [],
        ["not_verified_elsewhere", "followers_below_threshold", *ALL_SQUARE_REASONS],
    ),
    "all three ways": (
        form((5000, True), **square(500, 100)),
        ["verified_elsewhere", "followers_on_one_platform", "square_creator"],
        [],
    ),
}


@pytest.mark.parametrize(("application", "basis", "reason_codes"), TABLE.values(), ids=TABLE)
def test_eligibility_table(application, basis, reason_codes):
    result = check_eligibility(application, DEFAULTS)
    assert result.eligible is bool(basis)
    assert result.basis == basis
    assert [reason.code for reason in result.reasons] == reason_codes


def test_every_reason_code_is_reachable():
    reached = {code for _, _, codes in TABLE.values() for code in codes}
    assert reached == set(get_args(ReasonCode))


def test_reasons_are_listed_for_failed_ways_even_when_eligible():
    result = check_eligibility(form((1000, False)), DEFAULTS)
    assert result.eligible
    assert "not_verified_elsewhere" in [reason.code for reason in result.reasons]


def test_thresholds_are_arguments():
    strict = JoiningThresholds(
        min_followers_single_platform=5000, square_min_followers=1, square_min_interactions_30d=0
    )
    assert not check_eligibility(form((4999, False)), strict).eligible
    assert check_eligibility(form((5000, False)), strict).eligible
    assert check_eligibility(form(**square(1, 0)), strict).basis == ["square_creator"]
    assert not check_eligibility(form(**square(0, 0)), strict).eligible


def test_no_platform_never_meets_the_followers_way_even_with_a_zero_threshold():
    lenient = JoiningThresholds(min_followers_single_platform=0)
    assert "followers_on_one_platform" not in check_eligibility(form(), lenient).basis
    assert "followers_on_one_platform" in check_eligibility(form((0, False)), lenient).basis


def test_thresholds_from_settings():
    settings = Settings(
        min_followers_single_platform=7, square_min_followers=8, square_min_interactions_30d=9
    )
    assert JoiningThresholds.from_settings(settings) == JoiningThresholds(7, 8, 9)
    # The dataclass defaults are the settings' defaults, i.e. PROGRAM.md's numbers.
    assert JoiningThresholds() == JoiningThresholds(
        *(
            Settings.model_fields[name].default
            for name in (
                "min_followers_single_platform",
                "square_min_followers",
                "square_min_interactions_30d",
            )
        )
    )


# --- messages -------------------------------------------------------------------------------


def messages(application: ApplicationForm, language: str) -> dict[str, str]:
    result = check_eligibility(application, DEFAULTS, language)
    return {reason.code: reason.message for reason in result.reasons}


def test_english_messages_name_the_numbers():
    english = messages(form((900, False), (900, False), **square(499, 99, certified=False)), "en")
    assert english == {
        "not_verified_elsewhere": "No listed platform shows the creator as verified",
        "followers_below_threshold": "The largest following on one platform is 900; at least "
        "1,000 are needed (followers on different platforms are not added up)",
        "square_not_certified": "Not a certified creator on the square",
        "square_followers_below_threshold": "Square followers: 499; at least 500 are needed",
        "square_interactions_below_threshold": "Interactions received on the square in the "
        "last 30 days: 99; at least 100 are needed",
    }


def test_chinese_messages_name_the_numbers():
    chinese = messages(form((900, False), (900, False), **square(499, 99, certified=False)), "zh")
    assert chinese == {
        "not_verified_elsewhere": "所填平台均未显示为已认证创作者",
        "followers_below_threshold": "单个平台最多 900 位粉丝，需要至少 1,000 位"
        "（多个平台的粉丝不可叠加）",
        "square_not_certified": "尚未成为广场认证创作者",
        "square_followers_below_threshold": "广场粉丝 499 位，需要至少 500 位",
        "square_interactions_below_threshold": "近 30 天在广场获得 99 次互动，需要至少 100 次",
    }


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (
            "en",
            {
                "followers_below_threshold": "No other platform is listed; at least 1,000 "
                "followers on one platform are needed",
                "square_followers_below_threshold": "The number of square followers is not given; "
                "at least 500 are needed",
                "square_interactions_below_threshold": "The number of interactions received on "
                "the square in the last 30 days is not given; at least 100 are needed",
            },
        ),
        (
            "zh",
            {
                "followers_below_threshold": "未填写其他平台，需要单个平台至少 1,000 位粉丝",
                "square_followers_below_threshold": "未提供广场粉丝数，需要至少 500 位",
                "square_interactions_below_threshold": "未提供近 30 天在广场获得的互动数，"
                "需要至少 100 次",
            },
        ),
    ],
)
def test_messages_when_figures_are_missing(language, expected):
    got = messages(form(square_certified=True), language)
    assert {code: got[code] for code in expected} == expected


def test_large_numbers_are_grouped_in_thousands():
    big = JoiningThresholds(min_followers_single_platform=1_234_567)
    result = check_eligibility(form((999_999, False)), big, "zh")
    assert "999,999" in result.reasons[1].message
    assert "1,234,567" in result.reasons[1].message


@pytest.mark.parametrize("language", ["en", "zh"])
def test_every_message_is_in_its_language(language):
    application = form((1, False), **square(1, 1, certified=False))
    for message in messages(application, language).values():
        has_chinese = any("\u4e00" <= ch <= "\u9fff" for ch in message)
        assert has_chinese is (language == "zh"), message
        assert message.isascii() is (language == "en"), message


# --- the form -------------------------------------------------------------------------------


def valid_body(**changes) -> dict:
    body = {
        "creator_id": "creator-1",
        "display_name": "小明",
        "platforms": [{"platform": "x", "handle": "@ming", "followers": 1200, "verified": False}],
        "square_certified": True,
        "square_followers": 10,
        "square_interactions_30d": 3,
    }
    body.update(changes)
    return body


def account(**changes) -> dict:
    return {"platform": "x", "handle": "h", "followers": 1, "verified": False, **changes}


def test_a_minimal_form_has_defaults():
    application = ApplicationForm.model_validate_json('{"creator_id": "c"}')
    assert application.platforms == []
    assert application.display_name is None
    assert application.square_certified is False
    assert application.square_followers is None
    assert application.square_interactions_30d is None


@pytest.mark.parametrize(
    "body",
    [
        valid_body(),
        valid_body(platforms=[account()] * MAX_PLATFORMS),
        valid_body(platforms=[account(platform="p" * 64, handle="h" * 64)]),
        valid_body(creator_id="c" * 128, display_name="d" * 64),
        valid_body(platforms=[account(followers=0)], square_followers=0),
        valid_body(platforms=[account(followers=2**63 - 1)]),
        valid_body(display_name=None, square_followers=None, square_interactions_30d=None),
    ],
)
def test_valid_forms(body):
    ApplicationForm.model_validate_json(json.dumps(body))


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (valid_body(platforms=[account()] * (MAX_PLATFORMS + 1)), ("platforms",)),
        (valid_body(platforms=[account(followers=-1)]), ("platforms", 0, "followers")),
        (valid_body(platforms=[account(followers="1000")]), ("platforms", 0, "followers")),
        (valid_body(platforms=[account(followers=1000.0)]), ("platforms", 0, "followers")),
        (valid_body(platforms=[account(followers=True)]), ("platforms", 0, "followers")),
        (valid_body(platforms=[account(followers=2**63)]), ("platforms", 0, "followers")),
        (valid_body(platforms=[account(verified="true")]), ("platforms", 0, "verified")),
        (valid_body(platforms=[account(verified=1)]), ("platforms", 0, "verified")),
        (valid_body(platforms=[account(platform="")]), ("platforms", 0, "platform")),
        (valid_body(platforms=[account(platform="p" * 65)]), ("platforms", 0, "platform")),
        (valid_body(platforms=[account(handle="a\x00b")]), ("platforms", 0, "handle")),
        (valid_body(platforms=[account(handle="\ud800")]), ("platforms", 0, "handle")),
        (
            valid_body(platforms=[{"platform": "x", "handle": "h", "verified": True}]),
            ("platforms", 0, "followers"),
        ),
        (valid_body(platforms=[account(extra=1)]), ("platforms", 0, "extra")),
        (valid_body(creator_id=""), ("creator_id",)),
        (valid_body(creator_id="c" * 129), ("creator_id",)),
        (valid_body(creator_id="c\x00"), ("creator_id",)),
        (valid_body(creator_id=12), ("creator_id",)),
        (valid_body(display_name="d" * 65), ("display_name",)),
        (valid_body(square_certified="yes"), ("square_certified",)),
        (valid_body(square_followers=-1), ("square_followers",)),
        (valid_body(square_interactions_30d=1.5), ("square_interactions_30d",)),
        (valid_body(platforms=None), ("platforms",)),
        (valid_body(unknown_field=1), ("unknown_field",)),
        ({"platforms": []}, ("creator_id",)),
    ],
)
def test_invalid_forms_name_the_field(body, loc):
    # As the router may see it: parsed JSON (FastAPI validates the decoded body) ...
    with pytest.raises(ValidationError) as refused:
        ApplicationForm.model_validate(body)
    assert [error["loc"][: len(loc)] for error in refused.value.errors()] == [loc]
    # ... or the raw JSON document, where a lone surrogate is refused already by the parser.
    with pytest.raises(ValidationError) as refused:
        ApplicationForm.model_validate_json(json.dumps(body))
    expected = [()] if "\\ud800" in json.dumps(body) else [loc]
    assert [error["loc"][: len(loc)] for error in refused.value.errors()] == expected


# --- Accept-Language ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9,zh;q=0.8", "en"),
        ("zh", "zh"),
        ("ZH-cn", "zh"),
        ("zh-Hans-CN", "zh"),
        ("zh-TW", "zh"),  # any Chinese: ours is Simplified, still better than English
        ("en", "en"),
        ("*", "en"),
        ("", "en"),
        (None, "en"),
        ("garbage", "en"),
        (";;;,,,=q", "en"),
        ("fr-FR,fr;q=0.9", "en"),  # nothing we have: the default
        ("fr-FR,fr;q=0.9,zh;q=0.1", "zh"),
        ("fr,*;q=0.5", "en"),
        ("en;q=0.5,zh;q=0.6", "zh"),
        ("en;q=0.5, zh ; q=0.500", "en"),  # equal weights: the first listed
        ("zh;q=0.5,en;q=0.5", "zh"),
        ("zh;q=0", "en"),  # q=0: not Chinese
        ("zh;q=0,en;q=0", "en"),  # nothing acceptable: the default
        ("en;q=0,*", "zh"),  # anything but English
        ("en;q=0.000, *;q=0.1", "zh"),
        ("zh;q=0, *", "en"),
        ("zh;q=0, zh-CN;q=0.8", "zh"),  # the most favourable Chinese range counts
        ("zh;q=1.5,en;q=0.1", "en"),  # an invalid weight drops its element
        ("zh;q=0.9999,en;q=0.1", "en"),  # at most 3 decimals
        ("zh;q=abc", "en"),
        ("zh;level=1", "en"),  # Accept-Language has no other parameters
        ("zh;Q=0.7, en;q=0.6", "zh"),
        ("en-GB;q=0.8, zh-CN;q=0.81", "zh"),
        ("  zh-CN  ,  en;q=0.9 ", "zh"),
        ("toolongsubtag-CN", "en"),
        ("zh-", "en"),
        ("中文", "en"),
    ],
)
def test_preferred_language(header, expected):
    assert preferred_language(header) == expected


def test_preferred_language_copes_with_a_huge_header():
    assert preferred_language("fr;q=0.1," * 10_000 + "zh") == "zh"


# --- the rule as a property -----------------------------------------------------------------

THRESHOLD = st.integers(min_value=0, max_value=1500)
COUNT = st.one_of(st.integers(min_value=0, max_value=1600), st.sampled_from([999, 1000, 1001]))
PLATFORMS = st.lists(st.tuples(COUNT, st.booleans()), max_size=MAX_PLATFORMS)
SQUARE_FIGURE = st.one_of(st.none(), COUNT)


@given(
    PLATFORMS,
    st.booleans(),
    SQUARE_FIGURE,
    SQUARE_FIGURE,
    st.builds(JoiningThresholds, THRESHOLD, THRESHOLD, THRESHOLD),
)
def test_eligible_iff_one_way_holds(platforms, certified, followers, interactions, thresholds):
    application = form(*platforms, **square(followers, interactions, certified))
    result = check_eligibility(application, thresholds)

    one_platform = any(n >= thresholds.min_followers_single_platform for n, _ in platforms)
    verified = any(is_verified for _, is_verified in platforms)
    square_creator = (
        certified
        and (followers or 0) >= thresholds.square_min_followers
        and (interactions or 0) >= thresholds.square_min_interactions_30d
    )
    assert result.eligible is (one_platform or verified or square_creator)
    assert result.eligible is bool(result.basis)

    # Each way is either a basis or explained by at least one reason, never both.
    codes = [reason.code for reason in result.reasons]
    assert len(codes) == len(set(codes))
    assert ("verified_elsewhere" in result.basis) is verified
    assert ("not_verified_elsewhere" in codes) is not verified
    assert ("followers_on_one_platform" in result.basis) is one_platform
    assert ("followers_below_threshold" in codes) is not one_platform
    assert ("square_creator" in result.basis) is square_creator
    assert any(code in ALL_SQUARE_REASONS for code in codes) is not square_creator

    chinese = check_eligibility(application, thresholds, "zh")
    assert chinese.basis == result.basis
    assert [reason.code for reason in chinese.reasons] == codes
