"""What the demo prints at the end: the month's leaderboard and the rewards issued."""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from rich.table import Table


def leaderboard(ranking: dict[str, Any], names: dict[str, str], top: int) -> Table:
    """Rank, creator, display name, score, qualifying posts and payout of the first `top`."""
    status = ranking["status"]
    entries = ranking["entries"]
    table = Table(
        title=f"Leaderboard {ranking['month']} ({status}, pool {ranking['pool']} USDT)",
        caption=(
            f"{len(entries)} ranked, {sum(e['eligible'] for e in entries)} eligible for the pool"
            + (f"; first {top} shown" if len(entries) > top else "")
        ),
    )
    table.add_column("rank", justify="right")
    table.add_column("creator")
    table.add_column("display name")
    table.add_column("score", justify="right")
    table.add_column("posts", justify="right")
    table.add_column("payout", justify="right")
    for entry in entries[:top]:
        payout = entry["payout"]
        table.add_row(
            str(entry["rank"]),
            entry["creator_id"],
            entry.get("display_name") or names.get(entry["creator_id"], ""),
            entry["score"],
            str(entry["qualifying_posts"]),
            "-" if payout is None else payout if entry["eligible"] else f"[dim]{payout}[/dim]",
        )
    return table


def rewards(items: list[dict[str, Any]]) -> Table:
    """Rewards issued, by kind: how many, and their total."""
    counts: Counter[str] = Counter()
    totals: dict[str, Decimal] = defaultdict(Decimal)
    currency: dict[str, str] = {}
    for reward in items:
        counts[reward["kind"]] += 1
        if reward["amount"] is not None:
            totals[reward["kind"]] += Decimal(reward["amount"])
            currency[reward["kind"]] = reward["currency"]
    table = Table(title="Rewards issued")
    table.add_column("kind")
    table.add_column("count", justify="right")
    table.add_column("total", justify="right")
    for kind in sorted(counts):
        total = f"{totals[kind]:.2f} {currency[kind]}" if kind in currency else "-"
        table.add_row(kind, str(counts[kind]), total)
    return table
