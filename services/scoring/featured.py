"""Reward 5, weekly featured posts: the best original quality posts of an ISO week.

The rule (docs/rules.md, "Reward 5: weekly featured posts"):

- A post's **week** is the ISO week (Monday to Sunday) of its `time` in the program zone.
- **Engagement** of a post = Σ over the distinct actors other than its author of the weight of
  the heaviest kind of interaction that actor left on it (like 1, comment 2, share/quote 3, the
  settings); an actor counts once per post, however much it interacted. Only interactions that
  count (`months.counted_interactions`: not deleted, not the author's own) and whose time is
  before the week's end + grace (when the list can be frozen): the frozen list does not depend
  on when the operator pressed the button.
- **Featured score** = post_quality × ln(1 + engagement), 6 decimals (`featured_score`), with
  `score.post_quality` fed the same distinct actors. No engagement from others → 0: a post with
  score 0 is never featured, so self-likes alone never lift a post.
- **Candidates**: qualifying posts (`months.qualifying`: original, not deleted, not removed or
  low quality, not a near-duplicate, long enough or an image post) of creators certified before
  the week ends.
- **The list**: by score desc, then post time, then post id; at most `featured_max_per_creator`
  posts per creator (their best ones); `featured_posts_per_week` posts in all.

State: `scoring_featured_scores`, one row per qualifying post, rebuilt from the facts by the
scoring consumer for every post a batch touches (`refresh`); the list is one query over the
week's rows with a window function for the per-creator cap. Certification is joined at read
time, so a certification that arrives after the posts counts at once.

Freezing (`freeze_week`) works like settling a month: after the week's end + grace
(`settlement_grace_hours`), only when scoring has applied every accepted event, under a
transaction-level advisory lock per week; the stored list is returned again afterwards, and a
`week.frozen` event (the featured posts and the bonus) is appended to the log in the same
transaction. The badges service turns it into `featured_post_bonus` rewards.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from zoneinfo import ZoneInfo

from prometheus_client import Counter
from sqlalchemy import DateTime, String, any_, bindparam, delete, func, literal, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring import facts, months, score
from services.scoring.models import (
    CertifiedCreator,
    FeaturedScore,
    FrozenFeaturedPost,
    FrozenWeek,
    Interaction,
    Post,
)
from services.scoring.settlement import ensure_caught_up
from shared.bus import log as event_log
from shared.errors import Conflict
from shared.events import INTERNAL_SOURCE, PROGRAM_SUBJECT, BusEvent, IncomingEvent, WeekFrozen
from shared.program_settings import settings_in_force
from shared.settings import Settings

FREEZE_LOCK_CLASS = 0x6361_0006  # 0x6361_0005: near-duplicate band keys
WEEK = re.compile(r"^((?:19|2\d)\d{2})-W(0[1-9]|[1-4]\d|5[0-3])$")  # years as MONTH's
CENT = Decimal("0.01")

FROZEN_WEEKS = Counter("creator_activity_featured_weeks_frozen_total", "Featured weeks frozen")


class WeekNotOver(Conflict):
    error = "week_not_over"


# --- the calendar -------------------------------------------------------------------------------


def week_start(week: str) -> date:
    """The Monday of an ISO week `YYYY-Www`; ValueError when there is no such week."""
    match = WEEK.fullmatch(week)
    if match is None:
        raise ValueError(f"{week!r} is not an ISO week (YYYY-Www)")
    year, number = int(match[1]), int(match[2])
    start = date.fromisocalendar(year, number, 1)  # ValueError for W53 of a 52-week year
    return start


def week_bounds(week: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[Monday 00:00, next Monday 00:00) of the week in the program zone."""
    monday = week_start(week)
    start = datetime(monday.year, monday.month, monday.day, tzinfo=zone)
    following = monday + timedelta(days=7)
    return start, datetime(following.year, following.month, following.day, tzinfo=zone)


def week_of(moment: datetime, zone: ZoneInfo) -> str:
    iso = moment.astimezone(zone).isocalendar()
    return f"{iso.year:04d}-W{iso.week:02d}"


def freeze_after(week: str, settings: Settings) -> datetime:
    return week_bounds(week, settings.timezone)[1] + timedelta(
        hours=settings.settlement_grace_hours
    )


# --- the rule (pure) -----------------------------------------------------------------------------


def featured_score(quality: Decimal, engagement: int) -> Decimal:
    """quality × ln(1 + engagement), 6 decimals half-even; 0 without engagement."""
    if engagement < 0:
        raise ValueError(f"engagement must not be negative, got {engagement}")
    if not Decimal(0) <= quality <= Decimal(1):
        raise ValueError(f"quality must be in [0, 1], got {quality}")
    with localcontext(score.CONTEXT):
        return (quality * _log_1p(engagement)).quantize(score.SIX_PLACES)


@functools.lru_cache(maxsize=2**16)
def _log_1p(engagement: int) -> Decimal:
    """ln(1 + engagement) in the score's context: a Decimal logarithm costs far more than the
    rest of a post's refresh, and engagements repeat."""
    with localcontext(score.CONTEXT):
        return (Decimal(1) + Decimal(engagement)).ln()


# --- the state, kept by the scoring consumer ---------------------------------------------------


def touched_posts(events: Iterable[BusEvent]) -> set[str]:
    """The posts whose featured score a batch may change (besides created, edited and
    near-duplicate-changed ones, which the consumer knows already)."""
    kinds = ("post.deleted", "post.moderated", "interaction.created", "interaction.deleted")
    return {e.data["post_id"] for e in events if e.type in kinds}


async def refresh(session: AsyncSession, settings: Settings, post_ids: Iterable[str]) -> None:
    """Rebuild the featured rows of these posts from the facts: a qualifying post gets its
    score, any other loses its row."""
    ids = sorted(set(post_ids))
    if not ids:
        return
    zone = settings.timezone
    qualifying_of, engagements_of, remove, upsert = _refresh_statements(settings)
    posts = (await session.execute(qualifying_of, {"ids": ids})).all()
    keep = {p.post_id for p in posts}
    gone = [i for i in ids if i not in keep]
    if gone:
        await session.execute(remove, {"ids": gone})
    if not posts:
        return
    # One query for every post: its distinct actors and engagement before its week's freeze.
    weeks = {p.post_id: week_of(p.time, zone) for p in posts}
    cutoffs = {p.post_id: freeze_after(weeks[p.post_id], settings) for p in posts}
    engaged = sorted(cutoffs)
    engagement = {
        post_id: (int(n), int(total))
        for post_id, n, total in await session.execute(
            engagements_of, {"ids": engaged, "cutoffs": [cutoffs[i] for i in engaged]}
        )
    }
    rows = []
    heuristic = score.QualityHeuristic.from_settings(settings)
    for post in sorted(posts, key=lambda p: p.post_id):
        distinct, weighted = engagement.get(post.post_id, (0, 0))
        quality = months.post_quality(post, distinct, heuristic)
        rows.append(
            {
                "post_id": post.post_id,
                "creator_id": post.creator_id,
                "week": weeks[post.post_id],
                "time": post.time,
                "quality": quality,
                "engagement": weighted,
                "score": featured_score(quality, weighted),
            }
        )
    await session.execute(upsert, facts.arrays(rows, ("post_id", *_SCORED)))


_SCORED = ("creator_id", "week", "time", "quality", "engagement", "score")

# The statements of `refresh`, built once per rule (the settings they depend on).
_STATEMENTS: dict[tuple, tuple] = {}


def _refresh_statements(settings: Settings) -> tuple:
    rule = months.counting_rule(settings)
    if rule not in _STATEMENTS:
        _STATEMENTS[rule] = _build_refresh_statements(settings)
    return _STATEMENTS[rule]


def _build_refresh_statements(settings: Settings) -> tuple:
    ids = bindparam("ids", type_=ARRAY(String))
    qualifying_of = select(
        Post.post_id,
        Post.creator_id,
        Post.time,
        Post.characters,
        Post.image_count,
        Post.paragraphs,
        Post.quality_score,
    ).where(Post.post_id == any_(ids), Post.time.is_not(None), months.qualifying(settings))
    remove = delete(FeaturedScore).where(FeaturedScore.post_id == any_(ids))
    engagements_of = _engagements_statement(settings)
    statement = facts.from_arrays(FeaturedScore, ("post_id", *_SCORED))
    upsert = statement.on_conflict_do_update(
        index_elements=["post_id"], set_={n: statement.excluded[n] for n in _SCORED}
    )
    return qualifying_of, engagements_of, remove, upsert


def _engagements_statement(settings: Settings):
    """(post, distinct actors, Σ of each actor's heaviest interaction weight) of the posts
    `ids`, counting the interactions before each post's cut-off (`cutoffs`, in the same order)."""
    bounds = select(
        func.unnest(bindparam("ids", type_=ARRAY(String))).label("post_id"),
        func.unnest(bindparam("cutoffs", type_=ARRAY(DateTime(True)))).label("before"),
    ).subquery()
    per_actor = (
        months.counted_interactions(settings)
        .join(bounds, bounds.c.post_id == Interaction.post_id)
        .where(Interaction.time < bounds.c.before)
        .with_only_columns(Interaction.post_id, func.max(months._weight(settings)).label("weight"))
        .group_by(Interaction.post_id, Interaction.actor_id)
        .subquery()
    )
    return select(per_actor.c.post_id, func.count(), func.sum(per_actor.c.weight)).group_by(
        per_actor.c.post_id
    )


async def rebuild(session: AsyncSession, settings: Settings, week: str | None = None) -> int:
    """Rebuild the featured rows of every post (of one week) from the facts: after a rule
    change, or to fill the table for posts that predate it. How many posts were looked at."""
    query = select(Post.post_id).where(Post.time.is_not(None))
    if week is not None:
        start, end = week_bounds(week, settings.timezone)
        query = query.where(Post.time >= start, Post.time < end)
    ids = set(await session.scalars(query))
    stale = select(FeaturedScore.post_id)
    if week is not None:
        stale = stale.where(FeaturedScore.week == week)
    ids |= set(await session.scalars(stale))
    await refresh(session, settings, ids)
    return len(ids)


# --- the list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Featured:
    rank: int
    post_id: str
    creator_id: str
    score: Decimal


async def provisional(session: AsyncSession, settings: Settings, week: str) -> list[Featured]:
    """The week's featured posts as they stand: one query over the week's rows."""
    _, end = week_bounds(week, settings.timezone)
    certified = (
        select(literal(True))
        .where(
            CertifiedCreator.creator_id == FeaturedScore.creator_id,
            CertifiedCreator.certified_at < end,
        )
        .exists()
    )
    order = (FeaturedScore.score.desc(), FeaturedScore.time, FeaturedScore.post_id)
    candidates = (
        select(
            FeaturedScore.post_id,
            FeaturedScore.creator_id,
            FeaturedScore.score,
            FeaturedScore.time,
            func.row_number()
            .over(partition_by=FeaturedScore.creator_id, order_by=order)
            .label("nth"),
        )
        .where(FeaturedScore.week == week, FeaturedScore.score > 0, certified)
        .subquery()
    )
    rows = await session.execute(
        select(candidates.c.post_id, candidates.c.creator_id, candidates.c.score)
        .where(candidates.c.nth <= settings.featured_max_per_creator)
        .order_by(candidates.c.score.desc(), candidates.c.time, candidates.c.post_id)
        .limit(settings.featured_posts_per_week)
    )
    return [
        Featured(rank=rank, post_id=post_id, creator_id=creator_id, score=value)
        for rank, (post_id, creator_id, value) in enumerate(rows, start=1)
    ]


async def frozen(session: AsyncSession, week: str) -> list[Featured]:
    rows = await session.scalars(
        select(FrozenFeaturedPost)
        .where(FrozenFeaturedPost.week == week)
        .order_by(FrozenFeaturedPost.rank)
    )
    return [Featured(r.rank, r.post_id, r.creator_id, r.score) for r in rows]


# --- the freeze ----------------------------------------------------------------------------------


def rule_settings(settings: Settings) -> dict:
    names = (
        "featured_posts_per_week",
        "featured_max_per_creator",
        "featured_post_bonus",
        "qualifying_post_min_chars",
        "near_duplicate_threshold",
        "interaction_weight_like",
        "interaction_weight_comment",
        "interaction_weight_share",
        "interaction_weight_quote",
        "settlement_grace_hours",
        "program_timezone",
    )
    return {name: str(getattr(settings, name)) for name in names}


async def freeze_week(
    session: AsyncSession, settings: Settings, week: str, frozen_by: str, group: str
) -> tuple[FrozenWeek, list[Featured]]:
    """Freeze the week's list once; again (or at once, by two operators) → the same list."""
    now = datetime.now(UTC)
    opens = freeze_after(week, settings)
    if now < opens:
        raise WeekNotOver(f"{week} can be frozen from {opens.isoformat()} (week end + grace)")
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:class, :week)"),
        {"class": FREEZE_LOCK_CLASS, "week": zlib.crc32(week.encode()) - 2**31},
    )
    done = await session.get(FrozenWeek, week)
    if done is not None:
        return done, await frozen(session, week)
    await ensure_caught_up(session, group)
    items = await provisional(session, settings, week)
    # The bonus is a versioned program setting: the one in force for the month of the week's
    # Monday (a change never reaches a week that had begun when it was made).
    in_force = await settings_in_force(session, settings, week_start(week).strftime("%Y-%m"))
    bonus = in_force.featured_post_bonus.quantize(CENT)
    week_row = FrozenWeek(
        week=week,
        frozen_at=now,
        frozen_by=frozen_by,
        bonus=bonus,
        settings=rule_settings(in_force),
    )
    session.add(week_row)
    session.add_all(
        FrozenFeaturedPost(
            week=week, rank=i.rank, post_id=i.post_id, creator_id=i.creator_id, score=i.score
        )
        for i in items
    )
    await session.flush()
    await event_log.append(session, [_frozen_event(week, now, bonus, items)])
    FROZEN_WEEKS.inc()
    return week_row, items


def _frozen_event(
    week: str, now: datetime, bonus: Decimal, items: Sequence[Featured]
) -> IncomingEvent:
    data = WeekFrozen(
        week=week,
        frozen_at=now,
        bonus=bonus,
        items=[{"rank": i.rank, "post_id": i.post_id, "creator_id": i.creator_id} for i in items],
    ).model_dump(mode="json")
    return IncomingEvent(
        id=f"week-{week}-frozen",
        type="week.frozen",
        time=now,
        source=INTERNAL_SOURCE,
        creator_id=PROGRAM_SUBJECT,
        data=data,
        attributes={},
    )
