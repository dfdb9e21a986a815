"""A steady stream of realistic traffic, sent the way a client would, into a ledger.

The workload (`workload(seed)`) is a program season in four phases, one per month
(2026-08 … 2026-11): certified "stars" posting every day (pool shares, a streak of three
months: a merch gift), 110 newcomers certified in October with a first qualifying post each
(more than the 100 vouchers), creators whose posts do not qualify, creators never certified,
interactions (some removed, one actor over the daily cap), edits, moderation verdicts,
deletions, follower counts, and events sent twice. Each month is settled (two requests at
once) while the next one streams; October is settled while its late events still arrive.

The sender retries every request that got no answer, a 503 or a 5xx, with the same ids, as a
client does, until it is answered; 5xx and other unexpected answers are ledger violations.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import httpx

from tests.faults.ledger import Certification, Ledger, Settlement
from tests.system import ADMIN

logger = logging.getLogger(__name__)

SOURCE = "square"
ZONE = timezone(timedelta(hours=8))  # the program zone of the default settings
CHARACTERS = [chr(0x4E00 + n) for n in range(3000)]  # CJK: random texts are never near-duplicates
MONTHS = ("2026-08", "2026-09", "2026-10", "2026-11")
LATE_MONTH = "2026-10"
LATE_CREATOR = "late-1"


@dataclass
class Events:
    """A batch for POST /v1/events."""

    events: list[dict[str, Any]]


@dataclass
class Certify:
    """Apply and be approved (badges' HTTP API), certified at a given time."""

    creator_id: str
    certified_at: str


@dataclass
class Phase:
    month: str
    actions: list[Events | Certify] = field(default_factory=list)
    settle: str | None = None  # a month settled (twice at once) while the phase streams
    late: list[dict[str, Any]] = field(default_factory=list)  # sent one by one, during settle
    filler: Iterator[Events] | None = None  # sent after the rest, until told to stop


def _time(moment: datetime) -> str:
    return moment.isoformat()


def _text(rng: random.Random, characters: int) -> str:
    words = "".join(rng.choice(CHARACTERS) for _ in range(characters))
    cut = characters // 2
    return words[:cut] + "\n\n" + words[cut:]  # two paragraphs


class _World:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.numbers = itertools.count(1)
        self.actors = [f"a-{n:02d}" for n in range(1, 41)]

    def event(self, type_: str, moment: datetime, creator_id: str, **data: Any) -> dict[str, Any]:
        return {
            "id": f"evt-{next(self.numbers)}",
            "type": type_,
            "time": _time(moment),
            "source": SOURCE,
            "specversion": "1.0",
            "data": {"creator_id": creator_id, **data},
        }

    def post(self, creator_id: str, moment: datetime, *, characters: int = 80, **extra) -> dict:
        post_id = f"p-{next(self.numbers)}"
        data = {"post_id": post_id, "text": _text(self.rng, characters), "image_count": 0}
        return self.event("post.created", moment, creator_id, **(data | extra))

    def interactions(self, post: dict, count: int) -> list[dict]:
        """`count` interactions on a post, the same day; about one in eight removed later."""
        created = datetime.fromisoformat(post["time"])
        out = []
        for actor in self.rng.sample(self.actors, count):
            kind = self.rng.choice(("like", "like", "comment", "share", "quote"))
            moment = created + timedelta(minutes=self.rng.randint(1, 120))
            who = {"post_id": post["data"]["post_id"], "actor_id": actor, "kind": kind}
            creator = post["data"]["creator_id"]
            out.append(self.event("interaction.created", moment, creator, **who))
            if self.rng.random() < 0.125:
                later = moment + timedelta(minutes=30)
                out.append(self.event("interaction.deleted", later, creator, **who))
        return out

    def aftermath(self, post: dict, *, may_remove: bool) -> list[dict]:
        """Edits, verdicts and deletions some posts get, the same day."""
        creator, post_id = post["data"]["creator_id"], post["data"]["post_id"]
        later = datetime.fromisoformat(post["time"]) + timedelta(hours=2)
        roll = self.rng.random()
        if roll < 0.08:
            text = _text(self.rng, 120)
            return [
                self.event(
                    "post.updated", later, creator, post_id=post_id, text=text, image_count=1
                )
            ]
        if roll < 0.16:
            score = round(self.rng.uniform(0.3, 1.0), 3)
            moderated = {"post_id": post_id, "verdict": "approved", "quality_score": score}
            return [self.event("post.moderated", later, creator, **moderated)]
        if may_remove and roll < 0.19:
            verdict = self.rng.choice(("low_quality", "removed"))
            return [self.event("post.moderated", later, creator, post_id=post_id, verdict=verdict)]
        if may_remove and roll < 0.22:
            return [self.event("post.deleted", later, creator, post_id=post_id)]
        return []

    def followers(self, creator_id: str, moment: datetime) -> dict:
        count = self.rng.randint(100, 5000)
        return self.event("creator.followers_changed", moment, creator_id, followers=count)

    def batches(self, events: list[dict]) -> list[Events]:
        """Shuffled (arrival order is not event order), in batches of 1 to 8."""
        events = list(events)
        self.rng.shuffle(events)
        out, i = [], 0
        while i < len(events):
            size = self.rng.randint(1, 8)
            out.append(Events(events[i : i + size]))
            i += size
        return out


def _month_days(month: str) -> list[date]:
    year, number = map(int, month.split("-"))
    first = date(year, number, 1)
    days = []
    while first.month == number:
        days.append(first)
        first += timedelta(days=1)
    return days


# Program numbers of the suite (settings of every process and of the clean run): small enough
# for a stream of a few hundred events to reach them, the rules unchanged.
MIN_POSTS = 5  # monthly_min_quality_posts (30 by default)
VOUCHER_CAP = 20  # new_creator_pool / voucher_amount (100 by default; TestTheCap runs that)
PROGRAM_SETTINGS = {
    "monthly_min_quality_posts": str(MIN_POSTS),
    "new_creator_pool": str(VOUCHER_CAP * 50),
}


def workload(seed: int = 7) -> list[Phase]:
    world = _World(seed)
    rng = world.rng
    stars = [f"star-{n}" for n in (1, 2, 3)]
    newcomers = [f"new-{n:03d}" for n in range(1, VOUCHER_CAP + 7)]  # more than the cap
    not_qualifying = [f"nq-{n:02d}" for n in range(1, 7)]
    regulars = [f"reg-{n:02d}" for n in range(1, 9)]
    star_certified = datetime(2026, 7, 20, 10, 0, tzinfo=ZONE)
    october = datetime(2026, 10, 1, 0, 0, tzinfo=ZONE)

    def month_of_stars(month: str) -> list[dict]:
        events = []
        days = _month_days(month)
        for star in stars:
            for n in range(MIN_POSTS + 2):  # two may be removed: the star stays active
                day = days[(n * 4 + int(star[-1])) % len(days)]
                moment = datetime(day.year, day.month, day.day, 9, 0, tzinfo=ZONE)
                post = world.post(star, moment, characters=rng.randint(60, 400))
                events.append(post)
                events += world.interactions(post, rng.randint(0, 4))
                events += world.aftermath(post, may_remove=n >= MIN_POSTS)
            events.append(world.followers(star, datetime.fromisoformat(f"{month}-15T12:00+08:00")))
        # one actor far over the daily cap on one star's day
        target = next(e for e in events if e["data"]["creator_id"] == "star-1")
        spam_time = datetime.fromisoformat(target["time"]) + timedelta(hours=1)
        for kind in ("like", "comment", "share", "quote"):
            who = {"post_id": target["data"]["post_id"], "actor_id": "a-spam", "kind": kind}
            events.append(world.event("interaction.created", spam_time, "star-1", **who))
        return events

    # --- August: the stars start ------------------------------------------------------------
    august = Phase("2026-08")
    august.actions += [Certify(s, _time(star_certified)) for s in stars]
    august.actions += world.batches(month_of_stars("2026-08"))

    # --- September: August is settled; newcomers are certified --------------------------------
    september = Phase("2026-09", settle="2026-08")
    september.actions += world.batches(month_of_stars("2026-09"))
    september.actions += [
        Certify(c, _time(october + timedelta(hours=5 * n))) for n, c in enumerate(newcomers)
    ]
    september.actions += [Certify(c, _time(october + timedelta(days=4))) for c in not_qualifying]
    september.actions.append(Certify(LATE_CREATOR, _time(october + timedelta(days=1))))
    rng.shuffle(september.actions)  # in a season they come any time

    # --- October: September is settled; first posts ----------------------------------------
    oct_events = month_of_stars("2026-10")
    for n, creator in enumerate(newcomers):
        first = october + timedelta(hours=5 * n + 24 + rng.randint(0, 48))
        post = world.post(creator, first, characters=rng.randint(55, 200))
        oct_events.append(post)  # the voucher's post: never deleted or removed
        oct_events += world.interactions(post, rng.randint(0, 3))
        oct_events.append(world.followers(creator, first))
    for n, creator in enumerate(not_qualifying):
        moment = october + timedelta(days=5, hours=n)
        if n % 3 == 0:  # too short, no image
            oct_events.append(world.post(creator, moment, characters=20))
        elif n % 3 == 1:  # a repost is not original
            oct_events.append(world.post(creator, moment, kind="repost", reference_post_id="p-1"))
        else:  # before the certification: outside the voucher's window
            oct_events.append(world.post(creator, october + timedelta(days=1)))
    for creator in regulars:
        post = world.post(creator, october + timedelta(days=rng.randint(1, 29)))
        oct_events += [post, *world.interactions(post, 2), *world.aftermath(post, may_remove=True)]
    october_phase = Phase("2026-10", settle="2026-09")
    october_phase.actions += world.batches(oct_events)

    # --- November: October is settled while its late events arrive; then the stream goes on
    # (November posts and interactions) until the faults are done.
    late = []
    for n in range(5):
        post = world.post(LATE_CREATOR, october + timedelta(days=20 + n), characters=90)
        late += [post, *world.interactions(post, 2)]
    november = Phase("2026-11", settle=LATE_MONTH, late=late)
    november.filler = _filler(world, [*newcomers, *regulars])

    phases = [august, september, october_phase, november]
    # some events sent a second time, as a client whose answer was lost would
    sent = [e for p in phases for a in p.actions if isinstance(a, Events) for e in a.events]
    for phase in phases[1:3]:
        again = rng.sample(sent[:100], 6)
        phase.actions += [Events(again[:3]), Events(again[3:])]
    return phases


def _filler(world: _World, creators: list[str]) -> Iterator[Events]:
    """November traffic, as much as asked for: posts, their interactions and aftermath."""
    rng = world.rng
    while True:
        creator = rng.choice(creators)
        day = datetime(2026, 11, rng.randint(1, 25), rng.randint(8, 20), 0, tzinfo=ZONE)
        post = world.post(creator, day, characters=rng.randint(30, 150))
        events = [post, *world.interactions(post, rng.randint(0, 3))]
        events += world.aftermath(post, may_remove=True)
        yield Events(events)


def form_of(creator_id: str) -> dict[str, Any]:
    return {
        "creator_id": creator_id,
        "display_name": creator_id,
        "platforms": [{"platform": "x", "handle": creator_id, "followers": 5000, "verified": True}],
    }


class Sender:
    """Requests as a patient client sends them: same body until answered."""

    def __init__(self, ledger: Ledger, targets: Callable[[str], list[str]]) -> None:
        self.ledger = ledger
        self.targets = targets  # service -> its processes' base URLs (live or not)
        self.client = httpx.AsyncClient(headers=ADMIN, timeout=30)
        self._turn = itertools.count()

    async def close(self) -> None:
        await self.client.aclose()

    async def request(
        self, service: str, path: str, body: Any, *, within: float = 180
    ) -> httpx.Response:
        """POST until the answer is neither a failure to connect, a 503 nor a 5xx."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            urls = self.targets(service)
            url = urls[next(self._turn) % len(urls)]
            try:
                response = await self.client.post(url + path, json=body)
            except httpx.TransportError:
                self.ledger.connection_errors += 1
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 503:
                await self.ledger.answered_unavailable()
                retry_after = response.headers.get("retry-after")
                if retry_after is None or response.json().get("error") != "unavailable":
                    self.ledger.violation(f"503 without Retry-After: {path} {response.text}")
                await asyncio.sleep(min(float(retry_after or 1), 0.5))
                continue
            if response.status_code >= 500:
                self.ledger.violation(f"{response.status_code} for {path}: {response.text[:500]}")
                await asyncio.sleep(0.1)
                continue
            return response
        raise AssertionError(f"{path} never answered within {within} s")

    async def send_events(self, events: list[dict[str, Any]]) -> None:
        response = await self.request("ingest", "/v1/events", events)
        if response.status_code != 202:
            self.ledger.violation(f"{response.status_code} for events: {response.text[:500]}")
            return
        await self.ledger.acknowledge(events, response.json())

    async def certify(self, action: Certify) -> None:
        form = form_of(action.creator_id)
        applied = await self.request("badges", "/v1/applications", form)
        if applied.status_code == 201:
            application_id = applied.json()["id"]
        elif applied.status_code == 409:  # our first try was stored, its answer lost
            application_id = applied.json()["details"][0]["application_id"]
        else:
            self.ledger.violation(
                f"apply {action.creator_id}: {applied.status_code} {applied.text}"
            )
            return
        body = {"certified_at": action.certified_at}
        path = f"/v1/admin/applications/{application_id}/approve"
        approved = await self.request("badges", path, body)
        already = approved.status_code == 409 and "already approved" in approved.text
        if approved.status_code != 200 and not already:
            self.ledger.violation(f"approve {action.creator_id}: {approved.text}")
            return
        await self.ledger.certified(Certification(action.creator_id, form, action.certified_at))

    async def settle(self, month: str, *, at_once: int = 2) -> None:
        """`at_once` settle requests together; each retried while scoring is not caught up."""
        acked_before = frozenset(self.ledger.events)

        async def one() -> dict[str, Any] | None:
            while True:
                response = await self.request("scoring", f"/v1/admin/months/{month}/settle", None)
                if response.status_code == 200:
                    return response.json()
                if response.status_code == 409 and response.json()["error"] == "not_caught_up":
                    if "retry-after" not in response.headers:
                        self.ledger.violation(f"not_caught_up without Retry-After: {month}")
                    await asyncio.sleep(0.1)
                    continue
                self.ledger.violation(f"settle {month}: {response.status_code} {response.text}")
                return None

        answers = await asyncio.gather(*(one() for _ in range(at_once)))
        if all(answers):
            await self.ledger.settled(Settlement(month, tuple(answers), acked_before))


async def generate(
    phases: list[Phase],
    ledger: Ledger,
    targets: Callable[[str], list[str]],
    done: asyncio.Event,
    *,
    clients: int = 3,
    pace: float = 0.05,
    most: int = 150,
) -> None:
    """Send the phases one after the other; in each, `clients` concurrent clients take the
    next action, pausing `pace` seconds between requests (a steady stream, not a burst). The
    last phase's filler goes on until `done` is set (the faults are over), `most` events at
    most."""
    sender = Sender(ledger, targets)
    try:
        for phase in phases:
            started = time.monotonic()
            queue = list(reversed(phase.actions))

            async def client(queue: list = queue) -> None:
                while queue:
                    action = queue.pop()
                    if isinstance(action, Events):
                        await sender.send_events(action.events)
                    else:
                        await sender.certify(action)
                    await asyncio.sleep(pace)

            async def late_events(phase: Phase = phase) -> None:
                for event in phase.late:  # one by one, slowly, each answered before the next
                    await sender.send_events([event])
                    await asyncio.sleep(pace * 3)

            async def settle(phase: Phase = phase) -> None:
                if phase.late:  # while the late events are arriving
                    await ledger.wait_for_events(len(ledger.events) + 2)
                await sender.settle(phase.settle)

            work = [client() for _ in range(clients)]
            work += [late_events()] if phase.late else []
            work += [settle()] if phase.settle else []
            await asyncio.gather(*work)
            logger.warning(
                "phase %s sent in %.1f s (%d events acknowledged)",
                phase.month,
                time.monotonic() - started,
                len(ledger.events),
            )
            if phase.filler is not None:
                await _fill(sender, phase.filler, done, clients, pace, most)
    finally:
        await sender.close()


async def _fill(
    sender: Sender, filler: Iterator[Events], done: asyncio.Event, clients: int, pace, most
) -> None:
    sent = 0

    async def client() -> None:
        nonlocal sent
        while not done.is_set() and sent < most:
            batch = next(filler)
            sent += len(batch.events)
            await sender.send_events(batch.events)
            await asyncio.sleep(pace * 4)  # steady, while processes start again under load

    await asyncio.gather(*(client() for _ in range(clients)))
    logger.warning("filler: %d events until the faults were over", sent)
