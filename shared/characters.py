"""The character rule of PROGRAM.md ("Characters"), shared by the badges and scoring services.

A post's characters are its user-perceived characters: the extended grapheme clusters (UAX #29,
the `regex` package's `\\X`) of the text after NFC normalisation, not counting whitespace or
URLs. 中 is one character, so are 👨‍👩‍👧, 🇨🇳, 👍🏽, 1️⃣ and e + U+0301.

Decisions (the spec leaves them to us):

- **Invisible clusters count 0.** A cluster counts when it holds at least one code point that
  is not White_Space, not a control (Cc), not a lone surrogate (Cs) and not a
  Default_Ignorable_Code_Point. So spaces, tabs, CRLF, U+3000, and zero-width or blank-looking
  format characters (U+200B zero width space, U+200C/U+200D joiners on their own, U+2060 word
  joiner, U+FEFF, the soft hyphen, bidi controls, variation selectors, Hangul fillers
  U+115F/U+3164/U+FFA0) never make a post longer: they are the usual ways to pad a post or fake
  a non-empty one. Inside a visible cluster they change nothing (the ZWJs of 👨‍👩‍👧 are part
  of one character). A combining mark that follows a space forms a visible cluster with it and
  counts 1.
- **URLs count 0**, in three forms, matched only in ASCII:
  1. `scheme://…` for any scheme of letters, digits, `+` and `-` (`https://`, `http://`,
     `ftp://`, `tg://` …), so `1.https://gate.com` keeps `1.`;
  2. `www.…`;
  3. a bare domain whose last label is one of a short list of lowercase TLDs (`gate.com`,
     `t.me/x`, `example.com.cn/a?b`). The list is closed and case-sensitive so that ordinary
     text stays text: `e.g.`, `i.e.`, `U.S.`, `Node.js`, `ASP.NET`, `3.98%`, `2.19万亿`.
     A domain right after `@`, `.`, `/`, `-`, `_` or an ASCII letter or digit is not a URL
     (`name@gate.com` is an address and counts in full).
  A URL ends at whitespace or at the first non-ASCII character: Chinese is written without
  spaces, so `https://gate.com/a立即报名` keeps 立即报名, and full-width punctuation (，。）)
  ends it too. An IRI's non-ASCII path therefore counts as text (its percent-encoded form does
  not). Like common linkifiers, a URL does not end in `. , : ; ! ? ' *` and keeps a closing
  bracket only when balanced, so `(see https://gate.com/a).` counts `(see` + `).`.
  A URL is replaced by a space before segmentation, so it never glues the text around it into
  one cluster.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from itertools import islice
from operator import methodcaller

import regex

# URL bodies: printable ASCII except the characters that delimit URLs in running text (RFC 3986
# leaves them out: < > " `) and brackets, which are only taken as balanced pairs.
_URL_CHAR = r"""[\x21-\x7e--[<>"`()\[\]{}]]"""
_URL_TAIL = rf"(?:\({_URL_CHAR}*\)|\[{_URL_CHAR}*\]|{_URL_CHAR})"
# Trailing sentence punctuation is the text's, not the URL's.
_NOT_AFTER_PUNCTUATION = r"(?<![.,:;!?'*])"
# Where a bare domain or `www.` may start: not inside an ASCII word, address or path.
_TOKEN_START = r"(?<![A-Za-z0-9@._/-])"
# Common generic TLDs and some ccTLDs; lowercase only, and none that reads as a word in code or
# prose after a dot (`user.id`, `log.in`, `oh.my` stay text).
_BARE_TLDS = (
    "com|net|org|edu|gov|info|biz|io|co|ai|app|dev|xyz|top|vip|me|tv|cc|gg|ly|"
    "cn|hk|tw|jp|kr|sg|uk|de|fr|ru|finance|exchange"
)
_URL = regex.compile(
    rf"""(?V1x)
    (?:
        [A-Za-z][A-Za-z0-9+-]{{0,31}}://{_URL_TAIL}+             # scheme://… (bounded: linear)
      | {_TOKEN_START}(?i:www)\.[A-Za-z0-9]{_URL_TAIL}*          # www.…
      | {_TOKEN_START}(?:[A-Za-z0-9][A-Za-z0-9-]*\.)+(?:{_BARE_TLDS})
        (?![A-Za-z0-9_-]|\.[A-Za-z0-9])                         # the TLD ends the host
        (?:[/?\#:]{_URL_TAIL}*)?                                # port, path, query, fragment
    )
    {_NOT_AFTER_PUNCTUATION}
    """
)
_GRAPHEME_CLUSTER = regex.compile(r"\X")
_VISIBLE = regex.compile(r"[^\p{White_Space}\p{Cc}\p{Cs}\p{Default_Ignorable_Code_Point}]")
_GROUP = methodcaller("group")


# The code points that can join a neighbour in one grapheme cluster (UAX #29's rules GB3 to
# GB13 all need one): in a text without any, every code point is a cluster of its own.
_JOINING = regex.compile(
    r"[\r\p{Grapheme_Cluster_Break=Extend}\p{Grapheme_Cluster_Break=ZWJ}"
    r"\p{Grapheme_Cluster_Break=SpacingMark}\p{Grapheme_Cluster_Break=Prepend}"
    r"\p{Grapheme_Cluster_Break=Regional_Indicator}\p{Grapheme_Cluster_Break=L}"
    r"\p{Grapheme_Cluster_Break=V}\p{Grapheme_Cluster_Break=T}"
    r"\p{Grapheme_Cluster_Break=LV}\p{Grapheme_Cluster_Break=LVT}]"
)
_INVISIBLE = regex.compile(r"[\p{White_Space}\p{Cc}\p{Cs}\p{Default_Ignorable_Code_Point}]")


def count_characters(text: str) -> int:
    """The number of characters of `text` in the program's sense (see the module docstring)."""
    stripped = strip_urls(text)
    if _JOINING.search(stripped) is None:
        # One code point per cluster: the visible ones, counted without splitting (most posts;
        # a tenth of the scoring consumer's Python time went to the split).
        return len(stripped) - len(_INVISIBLE.findall(stripped))
    return count_clusters(stripped)


def count_clusters(stripped: str) -> int:
    """The visible grapheme clusters of a text whose URLs are stripped already."""
    return sum(map(_is_visible, _GRAPHEME_CLUSTER.findall(stripped)))


def is_long_enough(text: str, min_chars: int) -> bool:
    """At least `min_chars` characters (e.g. the 50 of a qualifying post)."""
    if min_chars <= 0:
        return True
    # Stop counting at the threshold: a 100,000-character post is decided after 50.
    return sum(1 for _ in islice(_visible_clusters(text), min_chars)) == min_chars


def is_image_post(text: str, image_count: int) -> bool:
    """An image post: at least one image and at least one character of text."""
    return image_count >= 1 and is_long_enough(text, 1)


def long_or_image_post(characters: int, image_count: int, min_chars: int) -> bool:
    """The length part of a qualifying post (PROGRAM.md, rewards 1 and 2), on a counted text:
    at least `min_chars` characters, or an image post (an image and some text). Scoring's
    query (services/scoring/months.py `is_substantial`) states the same rule in SQL."""
    return characters >= min_chars or (image_count >= 1 and characters >= 1)


@lru_cache(maxsize=1024)
def strip_urls(text: str) -> str:
    """`text` after NFC normalisation with every URL (the three forms above) replaced by a
    space: what the character count and near-duplicate detection look at.

    Remembered for the last texts: the scoring consumer looks at a post's text three times
    (its characters, whether it is compared, its normalised form)."""
    normalised = unicodedata.normalize("NFC", text)
    if "." not in normalised and ":" not in normalised:
        return normalised  # every URL form holds a dot or a colon
    return _URL.sub(" ", normalised)


@lru_cache(maxsize=1 << 16)
def _is_visible(cluster: str) -> bool:
    """A cluster counts when one of its code points is visible (clusters repeat: remembered)."""
    return _VISIBLE.search(cluster) is not None


def _visible_clusters(text: str) -> Iterator[str]:
    """Lazily: `is_long_enough` stops early."""
    clusters = map(_GROUP, _GRAPHEME_CLUSTER.finditer(strip_urls(text)))
    return filter(_is_visible, clusters)
