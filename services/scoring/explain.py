"""Why a post is not an original quality post, in words a creator or an operator can read.

The month view lists each post of the month that does not qualify with a machine code and a
message in English, or in Chinese when the reader prefers it (Accept-Language), as the
eligibility reasons of applications do.
"""

from __future__ import annotations

from typing import Literal

from services.scoring.models import Post
from shared.characters import long_or_image_post
from shared.settings import Settings

Language = Literal["en", "zh"]

MESSAGES: dict[str, dict[Language, str]] = {
    "not_original": {
        "en": "A repost or a quote is not an original post.",
        "zh": "转发或引用不算原创内容。",
    },
    "deleted": {"en": "The post was deleted.", "zh": "该帖子已被删除。"},
    "removed": {"en": "Moderation removed the post.", "zh": "该帖子已被审核移除。"},
    "low_quality": {
        "en": "Moderation marked the post as low quality.",
        "zh": "该帖子被审核标记为低质量。",
    },
    "too_short": {
        "en": "The post has {characters} characters; {minimum} are needed, or an image with text.",
        "zh": "该帖子只有 {characters} 个字符，至少需要 {minimum} 个字符，或带图片且有文字。",
    },
    "near_duplicate": {
        "en": "The post is a near-duplicate of an earlier post ({original}).",
        "zh": "该帖子与更早的帖子（{original}）高度相似。",
    },
}


def reasons(post: Post, settings: Settings) -> list[str]:
    """Every reason the post does not qualify (none: it qualifies)."""
    found = []
    if post.kind != "original":
        found.append("not_original")
    if post.deleted:
        found.append("deleted")
    if post.verdict == "removed":
        found.append("removed")
    if post.verdict == "low_quality":
        found.append("low_quality")
    minimum = settings.qualifying_post_min_chars
    if not long_or_image_post(post.characters, post.image_count, minimum):
        found.append("too_short")
    if post.duplicate_of is not None:
        found.append("near_duplicate")
    return found


def message(code: str, language: Language, post: Post, settings: Settings) -> str:
    return MESSAGES[code][language].format(
        characters=post.characters,
        minimum=settings.qualifying_post_min_chars,
        original=post.duplicate_of,
    )
