"""Tables owned by scoring: facts keyed by their natural keys, the state derived from them per
creator and month, and the frozen settlements."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base

# --- facts ------------------------------------------------------------------------------------


class CertifiedCreator(Base):
    __tablename__ = "scoring_certified_creators"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    certified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    display_name: Mapped[str | None] = mapped_column(String(64))  # from the application


class FollowerCount(Base):
    """A `creator.followers_changed` fact: the square followers at an event time. Kept as
    history (growth over the last 30 days), keyed by time so any arrival order gives the
    same rows; two counts at one instant keep the larger."""

    __tablename__ = "scoring_follower_counts"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    followers: Mapped[int] = mapped_column(BigInteger)


class Post(Base):
    """A post's latest state, whatever order its events came in: content by the latest edit
    (event time), the latest verdict, deletion; and its near-duplicate status."""

    __tablename__ = "scoring_posts"
    __table_args__ = (
        Index("ix_scoring_posts_creator_month", "creator_id", "month"),
        Index(  # migration 0010: the copies of a post whose text changed
            "ix_scoring_posts_duplicate_of",
            "duplicate_of",
            postgresql_where=text("duplicate_of IS NOT NULL"),
        ),
    )

    post_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128))
    time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # of post.created
    month: Mapped[str | None] = mapped_column(CHAR(7))  # program month of `time`
    day: Mapped[str | None] = mapped_column(CHAR(10))  # program day of `time`, YYYY-MM-DD
    kind: Mapped[str | None] = mapped_column(String(16))  # None until post.created is known
    characters: Mapped[int] = mapped_column(Integer, default=0)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    paragraphs: Mapped[int] = mapped_column(Integer, default=0)
    content_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    verdict: Mapped[str | None] = mapped_column(String(16))  # the latest moderation verdict
    quality_score: Mapped[Decimal | None] = mapped_column(Numeric(7, 6))  # from moderation
    verdict_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)  # MinHash, comparable texts
    duplicate_of: Mapped[str | None] = mapped_column(String(128))  # an earlier similar post
    seq: Mapped[int] = mapped_column(BigInteger)  # the last event that changed it
    # Distinct actors other than its author with an interaction on it not deleted: what its
    # quality reads while it counts (`facts.count_actors`, migration 0015).
    actors: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What it adds to its creator-month as last counted (migration 0016): the month it is
    # counted in (None: not counted), and while it qualifies its day and quality. A batch moves
    # the month's sums by the difference (`months._posts_side`).
    counted_month: Mapped[str | None] = mapped_column(CHAR(7))
    counted_day: Mapped[str | None] = mapped_column(CHAR(10))
    counted_quality: Mapped[Decimal | None] = mapped_column(Numeric(7, 6))


class PostBand(Base):
    """The LSH index of near-duplicate detection: one row per band of a post's signature.
    Posts that share a band key are the candidates to compare; nothing scans all posts."""

    __tablename__ = "scoring_post_bands"
    __table_args__ = (
        # A post's own rows, to replace them on an edit (the primary key leads with the band).
        Index("ix_scoring_post_bands_post_id", "post_id"),
        # migration 0012: a key's posts in order (earlier is by time, then id by code point)
        Index(
            "ix_scoring_post_bands_band_time",
            "band",
            "time",
            text('post_id COLLATE "C"'),
        ),
        # migration 0013: a key's posts by origin (the later posts a post may be the original of)
        Index(
            "ix_scoring_post_bands_band_origin",
            "band",
            "origin_time",
            text('origin_id COLLATE "C"'),
            text('post_id COLLATE "C"'),
        ),
    )

    band: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    post_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the post's (0012)
    # Its original's time and id, or its own when it is an original (0013).
    origin_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    origin_id: Mapped[str] = mapped_column(String(128))


class Interaction(Base):
    """One (actor, post, kind): counted once, its latest state by event time."""

    __tablename__ = "scoring_interactions"
    __table_args__ = (
        # migration 0014: a creator-month's interactions, and one actor's of one day in it
        Index(
            "ix_scoring_interactions_creator_actor_day", "creator_id", "month", "actor_id", "day"
        ),
        Index("ix_scoring_interactions_post_id", "post_id"),  # migration 0010
    )

    actor_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    post_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128))  # the post's author
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # of the latest creation
    month: Mapped[str] = mapped_column(CHAR(7))
    day: Mapped[str] = mapped_column(CHAR(10))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    state_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- derived ----------------------------------------------------------------------------------


class ActorDay(Base):
    """The counted interactions (`months.counted_interactions`) one actor gave one creator on
    one program day, by kind: what the per-actor daily cap clamps. Kept with the creator-months
    (open months), so that a batch updates a creator's received interactions by the actor-days
    it changed instead of summing the month's interactions again (migration 0014)."""

    __tablename__ = "scoring_actor_days"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    actor_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[str] = mapped_column(CHAR(10), primary_key=True)
    likes: Mapped[int] = mapped_column(Integer)
    comments: Mapped[int] = mapped_column(Integer)
    shares: Mapped[int] = mapped_column(Integer)
    quotes: Mapped[int] = mapped_column(Integer)


class CreatorDay(Base):
    """A creator's original quality posts of one program day: what "active in the last 30 days"
    reads. Moved with their open creator-month (`months.recompute`), rebuilt from the facts for
    a settled month that late events touch (`recommendations.refresh_days`)."""

    __tablename__ = "scoring_creator_days"
    __table_args__ = (Index("ix_scoring_creator_days_day", "day"),)

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[str] = mapped_column(CHAR(10), primary_key=True)  # YYYY-MM-DD, program zone
    qualifying_posts: Mapped[int] = mapped_column(Integer)


class RankSnapshotDay(Base):
    """A month's ranking was snapshotted on this program day (at most once a day)."""

    __tablename__ = "scoring_rank_snapshot_days"

    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    day: Mapped[str] = mapped_column(CHAR(10), primary_key=True)
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RankSnapshot(Base):
    """A creator's rank in the month's ranking as of a program day."""

    __tablename__ = "scoring_rank_snapshots"

    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    day: Mapped[str] = mapped_column(CHAR(10), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)


class CreatorMonth(Base):
    """A creator's month, recomputed from the facts whenever a batch touches it (until the
    month is settled)."""

    __tablename__ = "scoring_creator_months"
    __table_args__ = (Index("ix_scoring_creator_months_month", "month"),)

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    posts: Mapped[int] = mapped_column(Integer, default=0)  # every post of the month
    qualifying_posts: Mapped[int] = mapped_column(Integer, default=0)
    active_days: Mapped[int] = mapped_column(Integer, default=0)
    interactions: Mapped[int] = mapped_column(Integer, default=0)  # weighted, capped
    quality: Mapped[Decimal] = mapped_column(Numeric(7, 6), default=Decimal(0))
    # Σ of the qualifying posts' qualities (exact: each has 6 decimals); None until the month
    # is first rebuilt after migration 0016 (then it is kept, batch by batch).
    quality_sum: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


# --- precomputed standings (services/scoring/standings.py) -----------------------------------


class StandingsVersion(Base):
    """A counter bumped in a consumer batch's transaction whenever what a key's precomputed
    state is computed from changes: a month's creator-months or certifications (key: the month),
    or anything recommendations read (key: `recommendations`)."""

    __tablename__ = "scoring_standings_versions"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class StandingsRefresh(Base):
    """What a key's precomputed state was computed from: the version, a fingerprint of the
    rules in force (and for recommendations the day and settled months), and when."""

    __tablename__ = "scoring_standings_refreshes"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    fingerprint: Mapped[str] = mapped_column(String(64))
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    total: Mapped[int] = mapped_column(Integer)  # ranked creators, or recommendations
    divisors: Mapped[dict | None] = mapped_column(JSONB)  # a month's, for `explain`
    weights: Mapped[dict | None] = mapped_column(JSONB)


class PrecomputedStanding(Base):
    """A creator's standing in a provisional month, as of the month's last refresh: every
    creator with a creator-month (rank null when not certified by the month's end)."""

    __tablename__ = "scoring_standings"
    __table_args__ = (Index("ix_scoring_standings_month_rank", "month", "rank"),)

    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    rank: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[Decimal] = mapped_column(Numeric(9, 6))
    certified: Mapped[bool] = mapped_column(Boolean)
    eligible: Mapped[bool] = mapped_column(Boolean)
    qualifying_posts: Mapped[int] = mapped_column(Integer)
    active_days: Mapped[int] = mapped_column(Integer)
    interactions: Mapped[int] = mapped_column(Integer)
    quality: Mapped[Decimal] = mapped_column(Numeric(7, 6))
    # the components are not stored: the statistics and the month's divisors give them again


class PrecomputedRecommendation(Base):
    """The recommended follows as of the last refresh, in list order (newcomers interleaved),
    up to `recommendations_max`: a request reads its first `limit` rows."""

    __tablename__ = "scoring_recommendations"

    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    recent_score: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    activity: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    growth: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    qualifying_posts: Mapped[int] = mapped_column(Integer)
    active_days: Mapped[int] = mapped_column(Integer)
    followers: Mapped[int | None] = mapped_column(BigInteger)
    followers_before: Mapped[int | None] = mapped_column(BigInteger)
    newcomer: Mapped[bool] = mapped_column(Boolean)


class Settlement(Base):
    __tablename__ = "scoring_settlements"

    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    settled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pool: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    settings: Mapped[dict] = mapped_column(JSONB)  # the rule settings it was computed with
    settled_by: Mapped[str] = mapped_column(String(128))


class SettlementEntry(Base):
    __tablename__ = "scoring_settlement_entries"
    # a page of a settled ranking (migration 0008)
    __table_args__ = (Index("ix_scoring_settlement_entries_month_rank", "month", "rank"),)

    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[Decimal] = mapped_column(Numeric(9, 6))
    qualifying_posts: Mapped[int] = mapped_column(Integer)
    active_days: Mapped[int] = mapped_column(Integer)
    interactions: Mapped[int] = mapped_column(Integer)
    quality: Mapped[Decimal] = mapped_column(Numeric(7, 6))
    eligible: Mapped[bool] = mapped_column(Boolean)
    payout: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    components: Mapped[dict] = mapped_column(JSONB)  # before and after normalisation


# --- weekly featured posts (services/scoring/featured.py) --------------------------------------


class FeaturedScore(Base):
    """A qualifying post's featured score in its ISO week, kept up to date by the scoring
    consumer for every post a batch touches; a post that stops qualifying loses its row."""

    __tablename__ = "scoring_featured_scores"
    __table_args__ = (
        Index("ix_scoring_featured_scores_week_order", "week", "score", "time", "post_id"),
    )

    post_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128))
    week: Mapped[str] = mapped_column(CHAR(8))  # ISO week of the post's time, program zone
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    quality: Mapped[Decimal] = mapped_column(Numeric(7, 6))
    engagement: Mapped[int] = mapped_column(Integer)  # weighted, one per distinct actor
    score: Mapped[Decimal] = mapped_column(Numeric(12, 6))


class FrozenWeek(Base):
    __tablename__ = "scoring_frozen_weeks"

    week: Mapped[str] = mapped_column(CHAR(8), primary_key=True)
    frozen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    frozen_by: Mapped[str] = mapped_column(String(128))
    bonus: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    settings: Mapped[dict] = mapped_column(JSONB)  # the rule settings it was computed with


class FrozenFeaturedPost(Base):
    __tablename__ = "scoring_frozen_featured_posts"

    week: Mapped[str] = mapped_column(CHAR(8), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[str] = mapped_column(String(128))
    creator_id: Mapped[str] = mapped_column(String(128))
    score: Mapped[Decimal] = mapped_column(Numeric(12, 6))
