"""`creator-activity simulate`: post a demo month through the HTTP API of a running service,
settle it when it can be settled, and show what the program made of it.

1. the month's events (posts, interactions, deletions, follower counts), in batches;
2. the applications, and the operator's decisions on them (approve with a `certified_at` in
   or just before the month, reject with a reason, or leave waiting);
3. the late events: timed inside the month, sent after everything else;
4. wait until every consumer group has applied everything (lag 0);
5. settle the month (and freeze its ISO weeks) once month + grace is over; wait again;
6. print the leaderboard and the rewards.

Running it again with the same seed changes nothing: every event is a duplicate, a creator
who has applied is not sent again, a decided application is not decided again, and a settled
month or frozen week answers what it answered.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from services.simulate import month as demo
from services.simulate import report
from services.simulate.client import DemoClient, batches

SETTLE_ATTEMPTS = 30


@dataclass(frozen=True)
class Options:
    creators: int
    month: str
    seed: int
    url: str
    api_key: str
    zone: ZoneInfo
    top: int = 20
    wait_s: float = 1800  # a big month on a small machine takes minutes


def simulate(options: Options, console: Console) -> int:
    """The demo; the exit code. Raises ApiError when the service answers what it should not."""
    plan = demo.generate(options.creators, options.month, options.seed, options.zone)
    now = datetime.now(UTC)
    # A month still running: what lies ahead of the clock has not happened yet (and the
    # service would refuse it).
    events = [e for e in plan.events if _time(e) <= now]
    late = [e for e in plan.late_events if _time(e) <= now]
    skipped = len(plan.all_events) - len(events) - len(late)
    console.print(
        f"Simulating {options.month}: {options.creators} creators, seed {options.seed}, "
        f"{len(events) + len(late):,} events"
        + (f" ({skipped:,} after now are left out)" if skipped else "")
        + f" → {options.url}"
    )
    client = DemoClient(options.url, options.api_key)
    try:
        sent = Counter()
        with _progress(console) as progress:
            _post(client, progress, "events", events, sent)
            decisions = _applications(client, progress, plan, now)
            _post(client, progress, "late events", late, sent)
        console.print(
            f"events: {sent['accepted']:,} accepted, {sent['duplicates']:,} duplicates; "
            + ", ".join(f"{count} {what}" for what, count in decisions.items())
        )
        _wait_until_applied(client, console, options.wait_s)
        if _settle(client, console, options.month):
            _freeze_weeks(client, console, options.month)
            _wait_until_applied(client, console, options.wait_s)
        ranking = client.ranking(options.month)
        names = {c.creator_id: c.display_name for c in plan.creators}
        console.print(report.leaderboard(ranking, names, options.top))
        pool = client.voucher_pool()
        console.print(report.rewards(list(client.rewards())))
        console.print(
            f"new-creator vouchers: {pool['issued']} issued of {pool['cap']} "
            f"({pool['remaining']} remaining), {pool['amount']} USD each"
        )
        if client.retries:
            console.print(f"{client.retries} requests retried (503/429 or connection errors)")
    finally:
        client.close()
    return 0


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _post(client: DemoClient, progress: Progress, what: str, events, sent: Counter) -> None:
    task = progress.add_task(what, total=len(events), note="")
    for batch in batches(events):
        accepted, duplicates = client.post_events(batch)
        sent["accepted"] += accepted
        sent["duplicates"] += duplicates
        progress.update(
            task,
            advance=len(batch),
            note=f"{sent['accepted']:,} accepted, {sent['duplicates']:,} duplicates",
        )


def _applications(
    client: DemoClient, progress: Progress, plan: demo.DemoMonth, now: datetime
) -> Counter:
    """Apply for the creators who have not applied yet, and decide what waits for review as
    the plan says. What the service already holds is left as it is."""
    latest = {a["creator_id"]: a for a in client.applications()}  # in arrival order
    applying = [c for c in plan.creators if c.application is not None]
    task = progress.add_task("applications", total=len(applying), note="")
    done: Counter = Counter()
    for creator in applying:
        application = latest.get(creator.creator_id)
        if application is not None:
            done["applied before"] += 1
        else:
            application = client.submit_application(creator.application.form)
            if application is None:  # 409: one arrived meanwhile; it stands
                continue
            done["applied"] += 1
            if application["status"] == "ineligible":
                done["ineligible"] += 1
        if application["status"] == "pending_review":
            decision = creator.application.decision
            if decision == "approve":
                # never in the future (a month still running): the service refuses it
                certified_at = min(creator.application.certified_at, now - timedelta(minutes=1))
                if client.approve(application["id"], certified_at):
                    done["approved"] += 1
            elif decision == "reject":
                if client.reject(application["id"], creator.application.rejection_reason):
                    done["rejected"] += 1
            else:
                done["left for review"] += 1
        progress.update(task, advance=1, note=", ".join(f"{n} {w}" for w, n in done.items()))
    return done


def _wait_until_applied(client: DemoClient, console: Console, within_s: float) -> None:
    """Until `GET /v1/admin/consumers` shows lag 0 for every group."""
    deadline = time.monotonic() + within_s
    with console.status("waiting for the consumer groups") as status:
        while True:
            groups = client.lags()
            if all(g["lag"] == 0 for g in groups.values()):
                break
            lags = ", ".join(f"{name} {g['lag']:,}" for name, g in groups.items())
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the consumers did not catch up within {within_s:.0f} s (lag {lags}); "
                    "run the same command again later: it posts nothing twice"
                )
            status.update(f"waiting for the consumer groups: lag {lags}")
            time.sleep(0.5)
    parked = {name: g.get("dead_letters", 0) for name, g in groups.items()}
    if any(parked.values()):
        console.print(f"[yellow]dead letters: {parked} (creator-activity dead-letters list)")


def _settle(client: DemoClient, console: Console, month: str) -> bool:
    """Settle the month when month + grace is over; else say when it can be. Settling a
    settled month answers the same settlement."""
    for _ in range(SETTLE_ATTEMPTS):
        response = client.settle(month)
        if response.status_code == 200:
            body = response.json()
            console.print(f"{month} settled at {body['settled_at']} ({body['total']} ranked)")
            return True
        error = _error(response)
        if response.status_code == 409 and error.get("error") == "not_caught_up":
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        if response.status_code == 409:
            console.print(f"[yellow]{month} is not settled: {error.get('message')}")
            return False
        break
    console.print(f"[red]settling {month}: {response.status_code} {response.text[:300]}")
    return False


def _freeze_weeks(client: DemoClient, console: Console, month: str) -> None:
    """Freeze the ISO weeks of the month (those whose Thursday is in it): their featured posts
    earn the featured-post bonus."""
    frozen, waiting = [], []
    for week in iso_weeks(month):
        for _ in range(SETTLE_ATTEMPTS):
            response = client.freeze(week)
            if response.status_code == 200:
                frozen.append(week)
            elif _error(response).get("error") == "not_caught_up":
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            else:
                waiting.append(week)
            break
    if frozen:
        console.print(f"featured weeks frozen: {', '.join(frozen)}")
    if waiting:
        console.print(f"[yellow]weeks not frozen yet (week + grace not over): {', '.join(waiting)}")


def iso_weeks(month: str) -> list[str]:
    """`YYYY-Www` of the ISO weeks whose Thursday falls in the month."""
    first = date(int(month[:4]), int(month[5:7]), 1)
    day = first + timedelta(days=(3 - first.weekday()) % 7)  # the first Thursday
    weeks = []
    while day.month == first.month:
        year, number, _ = day.isocalendar()
        weeks.append(f"{year}-W{number:02d}")
        day += timedelta(days=7)
    return weeks


def _error(response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"])
