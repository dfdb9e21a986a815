"""A demo month of the square, generated from a seed: pure and deterministic.

`generate(creators, month, seed, zone)` returns the same `DemoMonth` for the same arguments:
the creators (names, profiles, the application each sends and what the operator decides) and
the month's events as the platform would send them, CloudEvents envelopes ready to post.
Event ids are derived from the seed and what the event is (the post, the actor, the kind), so
posting the month again is a duplicate of every event.

What a real month holds, and the rules it exercises:
- three kinds of creator: a few prolific ones, many regular ones (around the 30 qualifying
  posts of the monthly pool), and casual ones; Chinese, English and bilingual;
- long and short posts, image posts, reposts and quotes, edits, moderation verdicts;
- near-duplicates: the announcement shared by creators who join, and copies of earlier
  posts (their own or someone else's) with cosmetic changes;
- interactions from readers and other creators (likes, comments, shares, quotes), self-likes
  (which count zero), unlikes, and a ring of accounts boosting one creator (clamped by the
  daily cap per actor);
- deletions, follower counts changing over the month;
- late events: posts whose interactions were sent before them, and events timed inside the
  month sent after everything else (`late_events`);
- applications: eligible by each of the three ways in, ineligible ones (900 + 900 followers
  on two platforms, too few square followers), approvals (with a `certified_at` in or just
  before the month), rejections, and a few left waiting for review.

Creator ids, names, profiles and forms depend on the seed only, so simulating several months
with one seed follows the same creators (streaks); the activity depends on the month too.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from services.simulate.material import Material, load

SOURCE = "square"
Profile = Literal["prolific", "regular", "casual"]
Decision = Literal["approve", "reject", "pending"]

# profile: (share of creators, posts per month, active days, mean interactions per post,
# chance of applying)
PROFILES: dict[Profile, tuple[float, tuple[int, int], tuple[int, int], float, float]] = {
    "prolific": (0.10, (45, 62), (22, 31), 8.0, 0.95),
    "regular": (0.45, (34, 48), (14, 26), 3.0, 0.90),
    "casual": (0.45, (3, 26), (2, 10), 1.5, 0.50),
}
INTERACTION_KINDS = (("like", 0.65), ("comment", 0.18), ("share", 0.10), ("quote", 0.07))
REJECTION_REASONS = (
    "The verified account on the other platform could not be confirmed",
    "The account mostly reposts other people's content",
    "Handle does not match the square profile",
)
ZH_OPENERS = (
    "今日观察",
    "聊聊我的看法",
    "复盘一下",
    "盘后笔记",
    "说点实话",
    "宏观速记",
    "早间简报",
)
ZH_TAGS = ("#回购市场", "#流动性", "#美联储", "#宏观", "#BTC")
ZH_SHORT = ("早安，今天继续关注回购市场。", "晚点发图。", "收盘了，休息。", "这波行情看不懂。")
EN_SHORT = ("GM everyone.", "Charts later today.", "Taking a break from screens.", "Wild day.")
ZH_NAMES = (
    ("链上", "币圈", "量化", "宏观", "夜读", "广场", "矿工", "合约"),
    ("老王", "小李", "阿杰", "研究员", "观察员", "笔记", "船长", "大叔"),
)
EN_NAMES = (
    ("Alice", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ivy", "Jonas"),
    ("Chen", "Park", "Okafor", "Silva", "Novak", "Tanaka", "Haddad", "Moreau"),
)


@dataclass(frozen=True)
class Application:
    form: dict[str, Any]  # the body of POST /v1/applications
    eligible: bool  # what the program's rule says of the form (the service decides)
    decision: Decision  # what the operator does with it when it is eligible
    certified_at: datetime | None  # with "approve"
    rejection_reason: str | None  # with "reject"


@dataclass(frozen=True)
class Creator:
    creator_id: str
    display_name: str
    profile: Profile
    language: Literal["zh", "en", "both"]
    application: Application | None  # None: never applies


@dataclass(frozen=True)
class DemoMonth:
    month: str
    seed: int
    creators: tuple[Creator, ...]
    events: tuple[dict[str, Any], ...]  # in the order they are sent
    late_events: tuple[dict[str, Any], ...]  # timed inside the month, sent after the rest
    near_duplicates: tuple[tuple[str, str], ...]  # (copy, the earlier post it copies)

    @property
    def all_events(self) -> tuple[dict[str, Any], ...]:
        return self.events + self.late_events


@dataclass
class _Post:
    post_id: str
    creator: Creator
    time: datetime
    text: str
    image_count: int = 0
    kind: str = "original"
    reference_post_id: str | None = None
    late: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)


def month_bounds(month: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    year, number = int(month[:4]), int(month[5:7])
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start, end


def generate(creators: int, month: str, seed: int, zone: ZoneInfo) -> DemoMonth:
    """The month; the same arguments give the same month, event for event."""
    material = load()
    start, end = month_bounds(month, zone)
    people = _every_decision(
        [_creator(seed, index, month, start, zone) for index in range(creators)]
    )
    builder = _MonthBuilder(seed, month, start, end, material, people)
    builder.posts()
    builder.near_duplicates()
    builder.post_events()
    builder.interactions()
    builder.followers()
    events, late = builder.ordered()
    return DemoMonth(
        month=month,
        seed=seed,
        creators=tuple(people),
        events=tuple(events),
        late_events=tuple(late),
        near_duplicates=tuple(builder.copies),
    )


# --- creators and their applications ------------------------------------------------------


def _creator(seed: int, index: int, month: str, start: datetime, zone: ZoneInfo) -> Creator:
    rng = random.Random(f"creator:{seed}:{index}")  # the same creator in every month
    profile = _weighted(rng, [(name, spec[0]) for name, spec in PROFILES.items()])
    language = _weighted(rng, [("zh", 0.65), ("en", 0.2), ("both", 0.15)])
    if language == "en":
        name = f"{rng.choice(EN_NAMES[0])} {rng.choice(EN_NAMES[1])}"
    else:
        name = rng.choice(ZH_NAMES[0]) + rng.choice(ZH_NAMES[1])
    creator_id = f"sim{seed}-c{index:03d}"
    handle = f"{creator_id}-{rng.randrange(1000)}"
    application = None
    if rng.random() < PROFILES[profile][4]:
        form, eligible = _form(rng, creator_id, name, handle)
        decision: Decision = "pending"
        if eligible:
            decision = _weighted(rng, [("approve", 0.88), ("reject", 0.08), ("pending", 0.04)])
        month_rng = random.Random(f"certified:{seed}:{month}:{index}")
        certified_at = start + timedelta(seconds=month_rng.randrange(-15 * 86400, 18 * 86400))
        application = Application(
            form=form,
            eligible=eligible,
            decision=decision,
            certified_at=certified_at.astimezone(zone) if decision == "approve" else None,
            rejection_reason=rng.choice(REJECTION_REASONS) if decision == "reject" else None,
        )
    return Creator(creator_id, name, profile, language, application)


def _every_decision(people: list[Creator]) -> list[Creator]:
    """With ten eligible applicants or more, the operator rejects one and leaves one waiting at
    least (small months show every path too): the last ones approved are turned."""
    eligible = [c for c in people if c.application and c.application.eligible]
    if len(eligible) < 10:
        return people
    for decision in ("reject", "pending"):
        if any(c.application.decision == decision for c in eligible):
            continue
        turned = [c for c in eligible if c.application.decision == "approve"][-1]
        application = dataclasses.replace(
            turned.application,
            decision=decision,
            certified_at=None,
            rejection_reason=REJECTION_REASONS[0] if decision == "reject" else None,
        )
        index = people.index(turned)
        people[index] = eligible[eligible.index(turned)] = dataclasses.replace(
            turned, application=application
        )
    return people


def _form(rng: random.Random, creator_id: str, name: str, handle: str) -> tuple[dict, bool]:
    """An application form and whether it meets one of the three ways in (defaults)."""
    form: dict[str, Any] = {"creator_id": creator_id, "display_name": name, "platforms": []}
    way = _weighted(
        rng, [("verified", 0.3), ("followers", 0.35), ("square", 0.2), ("ineligible", 0.15)]
    )
    platforms = ("x", "youtube", "weibo", "bilibili", "telegram")
    if way == "verified":
        form["platforms"] = [_platform(rng, "x", handle, rng.randint(200, 80_000), True)]
    elif way == "followers":
        first, second = rng.sample(platforms, 2)
        form["platforms"] = [
            _platform(rng, first, handle, rng.randint(1_000, 200_000), False),
            _platform(rng, second, handle, rng.randint(0, 900), False),
        ]
    elif way == "square":
        form.update(
            square_certified=True,
            square_followers=rng.randint(500, 20_000),
            square_interactions_30d=rng.randint(100, 5_000),
        )
    else:
        variant = rng.randrange(3)
        if variant == 0:  # 900 + 900 on two platforms: never added up
            first, second = rng.sample(platforms, 2)
            form["platforms"] = [
                _platform(rng, first, handle, 900, False),
                _platform(rng, second, handle, 900, False),
            ]
        elif variant == 1:  # square-certified, too few square followers
            form.update(square_certified=True, square_followers=320, square_interactions_30d=150)
        else:
            form["platforms"] = [_platform(rng, "weibo", handle, rng.randint(10, 999), False)]
    return form, way != "ineligible"


def _platform(rng: random.Random, platform: str, handle: str, followers: int, verified: bool):
    return {"platform": platform, "handle": handle, "followers": followers, "verified": verified}


# --- the month's activity -------------------------------------------------------------------


class _MonthBuilder:
    def __init__(self, seed, month, start, end, material: Material, people: list[Creator]):
        self.rng = random.Random(f"month:{seed}:{month}:{len(people)}")
        self.seed, self.month, self.start, self.end = seed, month, start, end
        self.material = material
        self.people = people
        self.days = (end - start).days
        self.posts_: list[_Post] = []
        self.other_events: list[tuple[datetime, bool, dict[str, Any]]] = []  # (time, late, ...)
        self.copies: list[tuple[str, str]] = []
        self.english_pairs: list[tuple[int, int]] = []
        self.readers = [f"sim{seed}-u{n:04d}" for n in range(max(300, 15 * len(people)))]

    # posts

    def posts(self) -> None:
        rng = self.rng
        for creator in self.people:
            _, (low, high), (fewest, most), _, _ = PROFILES[creator.profile]
            active = rng.sample(range(self.days), min(self.days, rng.randint(fewest, most)))
            for number in range(rng.randint(low, high)):
                day = rng.choice(active)
                at = self.start + timedelta(
                    days=day, hours=rng.randint(7, 23), minutes=rng.randrange(60)
                )
                post = _Post(f"{creator.creator_id}-{self.month}-p{number:03d}", creator, at, "")
                self._content(post)
                self.posts_.append(post)
        # Creators who joined share the announcement: one text, many near-duplicates.
        joiners = [c for c in self.people if c.application and rng.random() < 0.08]
        for creator in joiners:
            at = self.start + timedelta(days=rng.randrange(3), hours=rng.randint(9, 22))
            lines = "\n".join(self.material.announcement_lines[:8])
            post_id = f"{creator.creator_id}-{self.month}-joined"
            self.posts_.append(_Post(post_id, creator, at, f"我报名了！\n{lines}"))
        self.posts_.sort(key=lambda p: (p.time, p.post_id))
        # Reposts and quotes of someone else's earlier post.
        for index, post in enumerate(self.posts_):
            if index > 10 and rng.random() < 0.08:
                earlier = self.posts_[rng.randrange(index)]
                if earlier.creator is not post.creator:
                    post.kind = rng.choice(("repost", "quote"))
                    post.reference_post_id = earlier.post_id
                    post.text = "转发" if post.kind == "repost" else "说得好：" + post.text[:40]

    def _content(self, post: _Post) -> None:
        rng = self.rng
        english = post.creator.language == "en" or (
            post.creator.language == "both" and rng.random() < 0.5
        )
        roll = rng.random()
        if roll < 0.06:  # a short post, not a qualifying one
            post.text = rng.choice(EN_SHORT if english else ZH_SHORT)
        elif roll < 0.10:  # an image post with a short caption: it qualifies
            post.text = rng.choice(EN_SHORT if english else ZH_SHORT)
            post.image_count = rng.randint(1, 4)
        elif english:
            post.text = self._english_pair()
        else:
            clauses = rng.sample(self.material.chinese_clauses, rng.randint(4, 7))
            separator = "。\n" if rng.random() < 0.3 else "，"
            post.text = f"{rng.choice(ZH_OPENERS)}：{separator.join(clauses)}。"
            if rng.random() < 0.4:
                post.text += " " + rng.choice(ZH_TAGS)
        if post.image_count == 0 and rng.random() < 0.12:
            post.image_count = rng.randint(1, 3)

    def _english_pair(self) -> str:
        """Two English sentences no other post has together: English posts sharing both
        sentences (or one of one) would be near-duplicates."""
        if not self.english_pairs:
            sentences = self.material.english_sentences
            self.english_pairs = list(itertools.combinations(range(len(sentences)), 2))
            self.rng.shuffle(self.english_pairs)  # used up (a huge month): pairs come again
        first, second = self.english_pairs.pop()
        return f"{self.material.english_sentences[first]} {self.material.english_sentences[second]}"

    def near_duplicates(self) -> None:
        """About 3% of the posts copy an earlier one with cosmetic changes."""
        rng = self.rng
        originals = [p for p in self.posts_ if p.kind == "original" and len(p.text) >= 60]
        for index, post in enumerate(self.posts_):
            if index < 20 or post.kind != "original" or rng.random() >= 0.03:
                continue
            own = [p for p in originals if p.creator is post.creator and p.time < post.time]
            anyone = [p for p in originals if p.time < post.time]
            pool = own if own and rng.random() < 0.5 else anyone
            if not pool:
                continue
            source = rng.choice(pool)
            post.text = _cosmetic_change(rng, source.text)
            self.copies.append((post.post_id, source.post_id))

    def post_events(self) -> None:
        rng = self.rng
        created_late = set(rng.sample(range(len(self.posts_)), len(self.posts_) // 25))
        for index, post in enumerate(self.posts_):
            data = {
                "creator_id": post.creator.creator_id,
                "post_id": post.post_id,
                "text": post.text,
                "image_count": post.image_count,
                "kind": post.kind,
            }
            if post.reference_post_id:
                data["reference_post_id"] = post.reference_post_id
            self._event(
                f"{post.post_id}:created",
                "post.created",
                post.time,
                data,
                late=index in created_late,
            )
            key = {"creator_id": post.creator.creator_id, "post_id": post.post_id}
            roll = rng.random()
            if roll < 0.02:
                self._event(
                    f"{post.post_id}:deleted",
                    "post.deleted",
                    self._after(post.time, 600, 2 * 86400),
                    key,
                )
            elif roll < 0.03:
                data = {
                    **key,
                    "text": post.text + "（更新：补充了数据来源）",
                    "image_count": post.image_count,
                }
                self._event(
                    f"{post.post_id}:updated",
                    "post.updated",
                    self._after(post.time, 600, 7200),
                    data,
                )
            roll = rng.random()
            if roll < 0.10:
                verdict: dict[str, Any] = {
                    "verdict": "approved",
                    "quality_score": round(rng.uniform(0.55, 0.97), 2),
                }
            elif roll < 0.115:
                verdict = {"verdict": "low_quality", "quality_score": round(rng.uniform(0, 0.3), 2)}
            elif roll < 0.12:
                verdict = {"verdict": "removed"}
            else:
                continue
            self._event(
                f"{post.post_id}:moderated",
                "post.moderated",
                self._after(post.time, 300, 6 * 3600),
                {**key, **verdict},
            )

    def interactions(self) -> None:
        rng = self.rng
        creator_ids = [c.creator_id for c in self.people]
        kinds, weights = zip(*INTERACTION_KINDS, strict=True)
        for post in self.posts_:
            author = post.creator.creator_id
            mean = PROFILES[post.creator.profile][3]
            given: set[tuple[str, str]] = set()
            for _ in range(min(120, int(rng.expovariate(1 / mean)))):
                use_creator = rng.random() < 0.2 and len(creator_ids) > 1
                actor = rng.choice(creator_ids if use_creator else self.readers)
                if actor != author:
                    given.add((actor, rng.choices(kinds, weights)[0]))
            if rng.random() < 0.04:  # a self-like: it counts zero
                given.add((author, "like"))
            for actor, kind in sorted(given):
                self._interaction(post, actor, kind)
        # A ring of accounts boosting one casual creator: the daily cap per actor clamps it.
        casual = [c for c in self.people if c.profile == "casual"]
        if casual:
            boosted = rng.choice(casual)
            ring = [f"sim{self.seed}-ring{n}" for n in range(6)]
            for post in (p for p in self.posts_ if p.creator is boosted):
                for actor in ring:
                    for kind in ("like", "comment", "share"):
                        self._interaction(post, actor, kind)

    def _interaction(self, post: _Post, actor: str, kind: str) -> None:
        data = {
            "creator_id": post.creator.creator_id,
            "post_id": post.post_id,
            "actor_id": actor,
            "kind": kind,
        }
        at = self._after(post.time, 30, int(self.rng.expovariate(1 / (6 * 3600))) + 60)
        event_id = f"{post.post_id}:{kind}:{actor}"
        self._event(event_id, "interaction.created", at, data)
        if self.rng.random() < 0.015:  # changed their mind
            self._event(
                f"{event_id}:deleted", "interaction.deleted", self._after(at, 60, 86400), data
            )

    def followers(self) -> None:
        rng = self.rng
        base = {"prolific": (5_000, 50_000), "regular": (500, 5_000), "casual": (10, 800)}
        for creator in self.people:
            followers = rng.randint(*base[creator.profile])
            for week, day in enumerate(range(0, self.days, 7)):
                followers = max(0, int(followers * rng.uniform(0.98, 1.12)))
                at = self.start + timedelta(days=day, minutes=rng.randrange(1, 600))
                self._event(
                    f"{creator.creator_id}-{self.month}-followers-{week}",
                    "creator.followers_changed",
                    at,
                    {"creator_id": creator.creator_id, "followers": followers},
                )

    # events and their order

    def _after(self, at: datetime, least_s: int, most_s: int) -> datetime:
        """A time after `at`, still inside the month."""
        later = at + timedelta(seconds=self.rng.randint(least_s, max(least_s, most_s)))
        return min(later, self.end - timedelta(seconds=1))

    def _event(self, event_id, type_, at: datetime, data, *, late: bool = False) -> None:
        event = {
            "id": event_id,
            "type": type_,
            "time": at.isoformat(timespec="seconds"),
            "source": SOURCE,
            "specversion": "1.0",
            "data": data,
        }
        self.other_events.append((at, late, event))

    def ordered(self) -> tuple[list[dict], list[dict]]:
        """Roughly in time order (the platform sends batches as they come, a little shuffled);
        the late ones, plus 3% of the others, after everything else."""
        rng = self.rng
        timed = sorted(self.other_events, key=lambda e: (e[0], e[2]["id"]))
        events, late = [], []
        for _, is_late, event in timed:
            (late if is_late or rng.random() < 0.03 else events).append(event)
        window = 50
        for start in range(0, len(events), window):
            chunk = events[start : start + window]
            rng.shuffle(chunk)
            events[start : start + window] = chunk
        rng.shuffle(late)
        return events, late


def _cosmetic_change(rng: random.Random, text: str) -> str:
    """The same text to the near-duplicate rule: punctuation, emoji, a tag."""
    changed = text.replace("，", ",").replace("。", ". ")
    return rng.choice(("🔥 ", "【转】", "")) + changed + rng.choice((" 🚀", " #分享", "!!"))


def _weighted(rng: random.Random, choices):
    names, weights = zip(*choices, strict=True)
    return rng.choices(names, weights)[0]
