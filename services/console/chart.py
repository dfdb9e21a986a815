"""The monthly pool's distribution as a bar chart, drawn on the server (SVG in the page).

The largest shares get a bar each; the rest are summed into one "others" bar, so the chart stays
readable with a thousand creators. The geometry is computed here; the template only draws it
(and escapes the names).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

WIDTH = 360  # the viewBox is about a phone's width, so text keeps its size there
ROW = 36  # a name line and a bar per share
BAR = 14
TOP_SHARES = 10


@dataclass(frozen=True)
class Bar:
    label: str
    amount: Decimal
    percent: Decimal  # of the pool
    y: int  # top of the row
    width: int  # of the bar; the amount is written after it
    others: bool = False


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    pool: Decimal
    paid: Decimal  # the shares' sum: the pool when anyone is eligible, else 0


def distribution(shares: list[tuple[str, Decimal]], pool: Decimal) -> Chart:
    """`shares`: (label, amount) of every creator paid, in any order."""
    paid = [(label, amount) for label, amount in shares if amount > 0]
    paid.sort(key=lambda share: (-share[1], share[0]))
    rows = paid[:TOP_SHARES]
    rest = paid[TOP_SHARES:]
    if rest:
        rows.append((f"{len(rest)} others", sum((a for _, a in rest), Decimal(0))))
    largest = max((amount for _, amount in rows), default=Decimal(0))
    span = WIDTH - 120  # room for the amount after the longest bar
    bars = [
        Bar(
            label=label,
            amount=amount,
            percent=(amount * 100 / pool).quantize(Decimal("0.1")) if pool else Decimal(0),
            y=index * ROW,
            width=max(1, int(span * amount / largest)) if largest else 0,
            others=bool(rest) and index == len(rows) - 1,
        )
        for index, (label, amount) in enumerate(rows)
    ]
    return Chart(
        bars=bars,
        width=WIDTH,
        height=max(ROW, len(bars) * ROW),
        pool=pool,
        paid=sum((a for _, a in paid), Decimal(0)),
    )
