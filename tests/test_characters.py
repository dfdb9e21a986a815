"""The character rule of shared/characters.py: grapheme clusters after NFC, less spaces, URLs."""

from __future__ import annotations

import re
import time
import unicodedata
from pathlib import Path

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from shared.characters import (
    count_characters,
    count_clusters,
    is_image_post,
    is_long_enough,
    strip_urls,
)

# The repo is checked out beside shared/ (…/main and …/shared), so the seed is two levels up.
SEED = Path(__file__).resolve().parent.parent.parent / "shared" / "seed"
SEED_FILE = SEED / "000_ca79c1c8f55e25bd.txt"
QUALIFYING = 50  # PROGRAM.md: a qualifying post has ≥ 50 characters

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # 👨‍👩‍👧: 3 people, 2 ZWJs
FLAG_CN = "\U0001f1e8\U0001f1f3"  # 🇨🇳: two regional indicators
THUMBS_UP_MEDIUM = "\U0001f44d\U0001f3fd"  # 👍🏽: emoji + skin-tone modifier
TECHNOLOGIST_DARK = "\U0001f469\U0001f3ff\u200d\U0001f4bb"  # 👩🏿‍💻
KEYCAP_ONE = "1\ufe0f\u20e3"  # 1️⃣ as in the seed's announcement
E_ACUTE_NFD = "e\u0301"


# --- the 50-character boundary --------------------------------------------------------------


@pytest.mark.parametrize(
    "unit", ["a", "中", FAMILY, E_ACUTE_NFD], ids=["latin", "cjk", "zwj", "nfd"]
)
def test_49_characters_are_not_enough_50_are(unit):
    assert count_characters(unit * 49) == 49
    assert not is_long_enough(unit * 49, QUALIFYING)
    assert count_characters(unit * 50) == 50
    assert is_long_enough(unit * 50, QUALIFYING)


def test_latin_words_count_their_letters_and_punctuation_not_their_spaces():
    # The(3) quick(5) brown(5) fox(3) jumps(5) over(4) the(3) lazy(4) dog,(4) again(5) and(3)
    # again!(6) = 50, and 11 spaces that do not count.
    text = "The quick brown fox jumps over the lazy dog, again and again!"
    assert count_characters(text) == len(text.replace(" ", "")) == 50
    assert is_long_enough(text, QUALIFYING)
    assert not is_long_enough(text.removesuffix("!"), QUALIFYING)


def test_cjk_with_fullwidth_punctuation_and_ideographic_spaces():
    text = "入驻广场，瓜分奖励。" + "\u3000" * 5 + "每月发帖！"
    assert count_characters(text) == 15  # 10 + 5; U+3000 is whitespace


# --- grapheme clusters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (FAMILY, 1),
        (FLAG_CN, 1),
        (FLAG_CN * 3, 3),
        ("\U0001f1e8\U0001f1f3\U0001f1fa", 2),  # a flag and a lone regional indicator
        (THUMBS_UP_MEDIUM, 1),
        (TECHNOLOGIST_DARK, 1),
        ("\U0001f44d" + "\U0001f3fd", 1),  # the modifier attaches to the emoji before it
        (KEYCAP_ONE, 1),
        ("\u270d\ufe0f", 1),  # ✍️: emoji + variation selector
        ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", 1),  # tag flag
        (FAMILY + FLAG_CN + THUMBS_UP_MEDIUM, 3),
    ],
    ids=[
        "zwj-family",
        "flag",
        "three-flags",
        "flag-and-lone-indicator",
        "skin-tone",
        "skin-tone-zwj",
        "modifier-joins",
        "keycap",
        "variation-selector",
        "tag-sequence",
        "mixed",
    ],
)
def test_emoji_sequences_count_one_each(text, expected):
    assert count_characters(text) == expected


def test_combining_marks_count_with_their_base():
    assert count_characters(E_ACUTE_NFD) == 1
    assert count_characters("q\u0301") == 1  # no precomposed form: still one cluster
    assert count_characters("a\u0301\u0302\u0303\u0323") == 1  # stacked marks
    nfc = "Café crème brûlée"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert count_characters(nfd) == count_characters(nfc) == 15


def test_a_combining_mark_after_a_space_is_a_visible_character():
    assert count_characters(" \u0301") == 1
    assert count_characters("a \u0301") == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("한국어", 3),
        (unicodedata.normalize("NFD", "한국어"), 3),  # conjoining jamo, composed by NFC
        ("\u1112\u1161\u11ab", 1),  # ᄒ ᅡ ᆫ = 한
        ("\u1112\u119e\u11ab", 1),  # archaic ᄒ ᆞ ᆫ: no precomposed syllable, one cluster
        ("ㅎㅎㅎ", 3),  # compatibility jamo are separate letters
    ],
    ids=["syllables", "nfd-jamo", "modern-jamo", "archaic-jamo", "compatibility-jamo"],
)
def test_hangul(text, expected):
    assert count_characters(text) == expected


# --- whitespace and invisible characters ----------------------------------------------------


def test_crlf_and_other_line_breaks_do_not_count():
    assert count_characters("ab\r\ncd") == 4
    assert count_characters("\r\n" * 60) == 0
    assert count_characters("a\rb\nc\u2028d\u2029e\u0085f") == 6


def test_zero_width_and_blank_format_characters_do_not_count():
    # U+200B is not White_Space in Unicode, but it is invisible: decided not to count it, nor
    # any other default-ignorable code point on its own.
    assert count_characters("\u200b" * 60) == 0
    assert count_characters("a\u200bb") == 2
    assert count_characters("\u200c\u200d\u2060\ufeff\u00ad\u202e\ufe0f") == 0
    assert count_characters("\u3164" * 60) == 0  # Hangul filler, the "blank name" trick
    assert count_characters("\x00\x07\x1b\x7f") == 0  # controls
    assert not is_image_post("\u200b\u3164 \u200d", image_count=1)


# --- URLs -----------------------------------------------------------------------------------


def test_a_text_padded_with_urls_and_spaces_counts_only_the_rest():
    rest = "真正的内容只有这十二个字。"  # 12 characters + 。 = 13
    padded = (
        "   https://www.gate.com/questionnaire/7159   "
        + rest
        + "\n\nhttp://example.com/a?b=c#d  www.gate.io/zh  gate.com  t.me/gate_zh \t "
        + "https://en.wikipedia.org/wiki/Repo_(finance)\r\n"
    )
    assert count_characters(rest) == 13
    assert count_characters(padded) == 13


@pytest.mark.parametrize(
    "url",
    [
        "https://www.gate.com/questionnaire/7159",
        "http://example.com",
        "HTTPS://EXAMPLE.COM/A",
        "ftp://files.example.org/x.tar.gz",
        "tg://resolve?domain=gate",
        "https://x.com/a/b?c=1&d=%E4%B8%AD#frag",
        "https://en.wikipedia.org/wiki/Repo_(finance)",
        "www.gate.io",
        "WWW.Example.xyz/path",
        "gate.com",
        "gate.com.cn/a?b=1",
        "t.me/gate_zh",
        "sub.example.org:8080/x",
    ],
)
def test_url_forms_count_zero(url):
    assert count_characters(url) == 0
    assert count_characters(f"前{url} 后") == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("e.g.", 4),
        ("i.e. etc.", 8),
        ("U.S.", 4),
        ("Node.js", 7),
        ("ASP.NET", 7),  # TLDs are matched in lowercase only
        ("user.id", 7),  # not a TLD on the list
        ("3.98644%", 8),
        ("2.19万亿", 6),
        ("gate.community", 14),  # .com must end the host
        ("gate.com.evil", 13),  # and so must the last label
        ("name@gate.com", 13),  # an e-mail address is text
        ("https://", 8),  # a scheme alone is no URL
        ("https://.", 9),
        ("1.https://gate.com/a", 2),  # a list number before a URL stays text
        ("e.g.https://gate.com/a", 4),
        ("end.Next sentence", 16),
    ],
)
def test_ordinary_text_is_not_taken_for_a_url(text, expected):
    assert count_characters(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://gate.com/a立即报名", 4),  # Chinese needs no space after a URL
        ("https://gate.com/a，立即报名。", 6),
        ("（https://gate.com/a）", 2),
        ("官网:gate.com。", 4),
        ("see https://gate.com/a.", 4),  # trailing punctuation is the sentence's
        ("see https://gate.com/a!?", 5),
        ("(see https://gate.com/a).", 6),  # unbalanced ) is the sentence's
        ("https://gate.com/a\U0001f449", 1),  # an emoji ends a URL
        ("<https://gate.com/a>", 2),
        ('"https://gate.com/a"', 2),
        ("https://zh.wikipedia.org/wiki/中国", 2),  # a non-ASCII path counts as text
    ],
)
def test_where_a_url_ends(text, expected):
    assert count_characters(text) == expected


def test_a_removed_url_does_not_glue_a_combining_mark_to_the_text_before_it():
    # The URL stops at the (non-ASCII) mark; the mark stays a character of its own.
    assert count_characters("中https://x.com\u0301") == 2


# --- the qualifying predicates --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "images", "expected"),
    [
        ("好", 1, True),
        ("👍", 3, True),
        ("好", 0, False),
        ("", 1, False),
        ("  \n\t", 1, False),
        ("https://gate.com/a", 1, False),  # a URL is not a character
        ("\u200b", 1, False),
    ],
)
def test_is_image_post(text, images, expected):
    assert is_image_post(text, images) is expected


def test_is_long_enough_with_a_threshold_of_zero_or_less():
    assert is_long_enough("", 0)
    assert is_long_enough("", -1)


# --- the seed -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_lines() -> list[str]:
    if not SEED_FILE.is_file():
        pytest.skip(f"the seed file {SEED_FILE} is not there (the repo is not beside shared/)")
    return SEED_FILE.read_text(encoding="utf-8").split("\n")


def test_seed_title_line(seed_lines):
    title = seed_lines[0]
    assert title == "Gate 广场「创作者认证激励计划」开启:入驻广场,瓜分每月 $10,000 创作奖励!"
    # Counted by hand: Gate 4, 广场 2, 「 1, 创作者认证激励计划 9, 」 1, 开启 2, : 1, 入驻广场 4,
    # , 1, 瓜分每月 4, $10,000 7, 创作奖励 4, ! 1 = 41; the 3 spaces do not count.
    assert count_characters(title) == 41


@pytest.mark.parametrize(
    ("line_number", "expected"),
    [
        (5, 11),  # "1️⃣ 其他平台已认证创作者": a keycap (3 code points) + 10 CJK
        (8, 9),  # "立即填写表单报名 👉 https://www.gate.com/…": 8 CJK + 👉, the URL 0
        (9, 11),  # "✍️ 丰厚创作奖励等你拿:": ✍ + U+FE0F is 1, 9 CJK, the colon 1
        (10, 21),  # "🎁 奖励一:新入驻创作者专属 $5,000 奖池": 1 + 3 + 1 + 8 + 6 + 2
    ],
)
def test_seed_announcement_lines(seed_lines, line_number, expected):
    assert count_characters(seed_lines[line_number - 1]) == expected


def test_seed_long_post(seed_lines):
    # PROGRAM.md: lines 1-20 are the announcement, the rest is a long real post.
    post = "\n".join(seed_lines[20:])
    assert post.startswith("美货币体系流动性压力重现")
    # The post has no emoji, combining marks, format characters, jamo or URLs (checked here),
    # so each non-whitespace code point is one character: a reference independent of \X.
    assert unicodedata.is_normalized("NFC", post)
    assert all(ord(ch) < 0x1100 or 0x2000 <= ord(ch) < 0xA000 or ord(ch) >= 0xFF00 for ch in post)
    assert not any(unicodedata.category(ch) in ("Mn", "Mc", "Me", "Cf") for ch in post)
    assert "://" not in post and "www." not in post.lower()
    assert re.search(r"[A-Za-z0-9-]\.[a-z]{2}", post) is None  # nothing like a bare domain
    reference = sum(1 for ch in post if not ch.isspace())
    assert reference == 3750  # pinned, so a changed seed is noticed
    assert count_characters(post) == reference


# --- properties -----------------------------------------------------------------------------

WHITESPACE = st.sampled_from([" ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2003", "\u2028"])
# Text that tends to hit the interesting paths: emoji parts, marks, jamo, URL pieces.
PIECES = st.sampled_from(
    [
        "a",
        "中",
        "。",
        ".",
        "/",
        ":",
        "com",
        "www",
        "https://",
        "gate.com",
        "\u0301",
        "\u200d",
        "\u200b",
        "\U0001f468",
        "\U0001f3fd",
        "\U0001f1e8",
        "\ufe0f",
        "\u1112",
        "\u1161",
        "\u11ab",
        "\u0600",  # a prepended concatenation mark
        " ",
        "\r",
        "\n",
    ]
)
TEXT = st.one_of(st.text(max_size=40), st.lists(PIECES, max_size=20).map("".join))
_JOINS_BEFORE = regex.compile(r"^[\p{GCB=Extend}\p{GCB=SpacingMark}\p{GCB=ZWJ}]")
_JOINS_AFTER = regex.compile(r"\p{GCB=Prepend}$")
_WHITE = regex.compile(r"\p{White_Space}")
# A token: no whitespace, and nothing at its edges that a grapheme cluster carries across a space.
TOKEN = TEXT.filter(
    lambda t: (
        t and not _WHITE.search(t) and not _JOINS_BEFORE.search(t) and not _JOINS_AFTER.search(t)
    )
)


@given(TEXT)
def test_nfc_and_nfd_inputs_count_the_same(text):
    count = count_characters(text)
    assert count_characters(unicodedata.normalize("NFD", text)) == count
    assert count_characters(unicodedata.normalize("NFC", text)) == count


@given(st.one_of(TEXT, st.text(alphabet=st.characters(codec="utf-8"), max_size=80)))
def test_the_count_without_splitting_is_the_count_of_the_clusters(text):
    # A text without a code point that joins clusters is counted code point by code point.
    assert count_characters(text) == count_clusters(strip_urls(text))


@given(TEXT, TEXT)
def test_joining_two_texts_with_a_space_loses_at_most_one_character(a, b):
    # A space keeps URLs and clusters apart, except that a prepended mark at the end of `a` and
    # a combining mark at the start of `b` can hold it in one cluster.
    separate = count_characters(a) + count_characters(b)
    assert separate - 1 <= count_characters(a + " " + b) <= separate


@given(TEXT, st.lists(WHITESPACE, max_size=4).map("".join), st.lists(WHITESPACE).map("".join))
def test_leading_and_trailing_whitespace_do_not_count(text, before, after):
    assert count_characters(before + text + after) == count_characters(text)


@given(st.lists(st.tuples(TOKEN, st.lists(WHITESPACE, min_size=1, max_size=3)), max_size=8))
def test_whitespace_between_tokens_does_not_count(tokens_and_gaps):
    text = "".join(token + "".join(gap) for token, gap in tokens_and_gaps)
    assert count_characters(text) == sum(count_characters(token) for token, _ in tokens_and_gaps)


@given(TEXT, st.integers(min_value=-2, max_value=60))
def test_predicates_agree_with_the_count(text, min_chars):
    count = count_characters(text)
    assert is_long_enough(text, min_chars) is (count >= min_chars)
    assert is_image_post(text, 1) is (count >= 1)
    assert is_image_post(text, 0) is False


@given(
    st.lists(st.sampled_from(["a", "中", FAMILY, FLAG_CN, E_ACUTE_NFD, "😀", "한"]), max_size=80)
)
def test_simple_characters_count_one_each_with_or_without_spaces(units):
    # Adjacent flags pair from the start and a ZWJ sequence ends at its last emoji, so nothing
    # glues two units together.
    assert count_characters(" ".join(units)) == len(units)
    assert count_characters("".join(units)) == len(units)


# --- hostile input --------------------------------------------------------------------------

HOSTILE = {
    "dots": "a." * 50_000,
    "letters": "a" * 100_000,
    "letters-then-scheme-separator": "a" * 100_000 + "://",
    "dotted-chains": ("a." * 100 + "，") * 500,
    "scheme-then-dots": "https://" + "." * 100_000,
    "open-parens": "https://x" + "(" * 50_000,
    "unclosed-parens": "https://x/" + "(a" * 30_000,
    "www-hyphens": "www." + "a-" * 50_000,
    "labels": "gate." * 20_000 + "com",
    "labels-no-tld": "gate." * 20_000 + "zzz",
    "marks": "\u0301" * 100_000,
    "zwj": FAMILY * 10_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_long_hostile_texts_are_counted_in_linear_time(text):
    started = time.perf_counter()
    count_characters(text)
    assert time.perf_counter() - started < 5
