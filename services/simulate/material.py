"""The texts demo posts are made of, kept in the repository (`material/`).

- `repo_market_zh.txt`: a long real Chinese post on the US repo market (the seed material of
  the program's announcement file, from its line 21);
- `announcement_zh.txt`: the program's announcement (that file's lines 1–20), which creators
  share when they join: many copies of one text, i.e. near-duplicates;
- `market_notes_en.txt`: English one-line market notes.

Posts are put together from clauses (Chinese) or sentences (English) drawn at random: with a
few hundred pieces and several per post, two posts rarely share more than one piece, so the
posts meant to be original are not near-duplicates of each other by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FOLDER = Path(__file__).parent / "material"
_CLAUSE_END = re.compile(r"[，。；：！？,;:!?\n]+")
MIN_CLAUSE_CHARS = 8


@dataclass(frozen=True)
class Material:
    chinese_clauses: tuple[str, ...]
    english_sentences: tuple[str, ...]
    announcement_lines: tuple[str, ...]


def _read(name: str) -> str:
    return (FOLDER / name).read_text(encoding="utf-8")


@cache
def load() -> Material:
    text = _read("repo_market_zh.txt")
    clauses = [c.strip() for c in _CLAUSE_END.split(text)]
    return Material(
        chinese_clauses=tuple(c for c in clauses if len(c) >= MIN_CLAUSE_CHARS),
        english_sentences=tuple(
            line.strip() for line in _read("market_notes_en.txt").splitlines() if line.strip()
        ),
        announcement_lines=tuple(
            line.strip() for line in _read("announcement_zh.txt").splitlines() if line.strip()
        ),
    )
