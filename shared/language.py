"""The language of a response's messages: English, or Chinese when the reader prefers it.

The square's creators read Chinese; every service that explains something to them (why an
application is not eligible, why a post does not qualify) answers in the reader's language.
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["en", "zh"]

# RFC 9110 §12.5.4: language-range (RFC 4647) with an optional weight; q has at most 3 decimals.
_ACCEPT_LANGUAGE_ELEMENT = re.compile(
    r"(?P<range>\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*)"
    r"(?:[ \t]*;[ \t]*[qQ]=(?P<q>0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?))?"
)
DEFAULT_LANGUAGE: Language = "en"
_SUPPORTED: dict[str, Language] = {"en": "en", "zh": "zh"}


def preferred_language(accept_language: str | None) -> Language:
    """The language of the messages for a request's Accept-Language header: `zh` or `en`.

    Any `zh-*` range (zh, zh-CN, zh-Hans, zh-TW …) asks for our Chinese (Simplified), any `en-*`
    for English. A language's weight is that of its most favourable explicit range, else that
    of `*` (which stands for every language not named). The highest weight above 0 wins (q=0
    means "not this one"); equal weights go to the range listed first, and to English when
    only `*` names them. Malformed elements are skipped; nothing usable means English.
    """
    if not accept_language:
        return DEFAULT_LANGUAGE
    # language -> (weight in thousandths, position of the range that gave it)
    explicit: dict[Language, tuple[int, int]] = {}
    wildcard: tuple[int, int] | None = None
    for position, element in enumerate(accept_language.split(",")):
        match = _ACCEPT_LANGUAGE_ELEMENT.fullmatch(element.strip(" \t"))
        if match is None:
            continue
        weight = round(float(match["q"]) * 1000) if match["q"] is not None else 1000
        language_range = match["range"].lower()
        if language_range == "*":
            if wildcard is None or weight > wildcard[0]:
                wildcard = (weight, position)
            continue
        language = _SUPPORTED.get(language_range.split("-", 1)[0])
        if language is not None:
            known = explicit.get(language)
            if known is None or weight > known[0]:
                explicit[language] = (weight, position)

    choice, best = DEFAULT_LANGUAGE, (0, 0)
    for candidate in ("en", "zh"):  # English first: it keeps a tie given by `*` alone
        weight, position = explicit.get(candidate) or wildcard or (0, 0)
        if weight > best[0] or (weight == best[0] and weight > 0 and position < best[1]):
            choice, best = candidate, (weight, position)
    return choice
