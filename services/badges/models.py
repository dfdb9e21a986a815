"""Tables owned by badges: certification (applications, certified creators, badges), the facts
the new-creator voucher is decided on, the voucher pool, and every reward issued."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    DateTime,
    Identity,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base


class CreatorPosts(Base):
    """Each creator's first post and post count (the foundation's projection)."""

    __tablename__ = "badges_creator_posts"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_post_id: Mapped[str] = mapped_column(String(128))
    first_post_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    posts: Mapped[int] = mapped_column(BigInteger)


class Application(Base):
    """A creator's application, as the platform forwarded it, and the operator's decision.

    A creator has at most one application that is pending or approved (a partial unique index):
    a second one, or one from a certified creator, is refused atomically."""

    __tablename__ = "badges_applications"
    __table_args__ = (
        Index(
            "uq_badges_applications_open",
            "creator_id",
            unique=True,
            postgresql_where=text("status IN ('pending_review', 'approved')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128), index=True)
    display_name: Mapped[str | None] = mapped_column(String(64))
    form: Mapped[dict] = mapped_column(JSONB)  # the platforms and square figures as sent
    status: Mapped[str] = mapped_column(String(16), index=True)
    eligible: Mapped[bool] = mapped_column(Boolean)
    basis: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    reasons: Mapped[list[str]] = mapped_column(ARRAY(String(64)))  # reason codes
    thresholds: Mapped[dict] = mapped_column(JSONB)  # the thresholds it was judged by
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(128))
    certified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rejection_reason: Mapped[str | None] = mapped_column(Text)


class CertifiedCreator(Base):
    """A creator certified, as the `creator.certified` event told the badges group."""

    __tablename__ = "badges_certified_creators"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    certified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seq: Mapped[int] = mapped_column(BigInteger)  # the event's log position


class Badge(Base):
    __tablename__ = "badges_badges"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    awarded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seq: Mapped[int] = mapped_column(BigInteger)  # the event that earned it


class PostFact(Base):
    """What the voucher rule needs to know of a post: its latest state, whatever order its
    events arrived in (a deletion may come before the creation, an edit before either)."""

    __tablename__ = "badges_posts"

    post_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    creator_id: Mapped[str] = mapped_column(String(128), index=True)
    time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # of post.created
    original: Mapped[bool | None] = mapped_column(Boolean)  # None until post.created is known
    substantial: Mapped[bool] = mapped_column(Boolean, default=False)  # long enough, or images
    content_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    removed: Mapped[bool] = mapped_column(Boolean, default=False)  # the latest verdict
    verdict_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_seq: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str | None] = mapped_column(String(256))
    event_id: Mapped[str | None] = mapped_column(String(256))  # of post.created


class VoucherPool(Base):
    """The new-creator voucher pool: one row. `issued` never passes `cap`: a claim is a
    conditional UPDATE in the same transaction as the reward row."""

    __tablename__ = "badges_voucher_pool"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    cap: Mapped[int] = mapped_column(Integer)
    issued: Mapped[int] = mapped_column(Integer, default=0)


class Reward(Base):
    """Every reward issued, once (a deterministic id), in the order issued (`feed_seq`): the
    rewards outbox and the cursor feed read it in that order."""

    __tablename__ = "badges_rewards"
    __table_args__ = (Index("ix_badges_rewards_kind_month", "kind", "month"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    feed_seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    creator_id: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    currency: Mapped[str | None] = mapped_column(String(8))
    month: Mapped[str | None] = mapped_column(CHAR(7))
    status: Mapped[str] = mapped_column(String(16), default="issued")
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    causes: Mapped[list[dict]] = mapped_column(JSONB)  # the events (or request) that earned it


class SettledMonth(Base):
    """A creator's month as its settlement said (`month.settled`): active or not. Streaks are
    runs of consecutive settled active months, in whatever order months were settled."""

    __tablename__ = "badges_settled_months"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean)
    seq: Mapped[int] = mapped_column(BigInteger)  # the month.settled event
