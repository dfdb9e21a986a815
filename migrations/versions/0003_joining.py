"""joining: applications, certification, voucher pool, rewards

The badges service's tables for the first half of the program (who may join, reward 1,
reward 4) and every reward issued.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 08:43:22.806414
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "badges_applications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=True),
        sa.Column("form", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("basis", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("reasons", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        sa.Column("thresholds", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("certified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badges_applications")),
    )
    op.create_index(
        op.f("ix_badges_applications_creator_id"),
        "badges_applications",
        ["creator_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_badges_applications_status"), "badges_applications", ["status"], unique=False
    )
    op.create_index(
        "uq_badges_applications_open",
        "badges_applications",
        ["creator_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('pending_review', 'approved')"),
    )
    op.create_table(
        "badges_badges",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("awarded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "kind", name=op.f("pk_badges_badges")),
    )
    op.create_table(
        "badges_certified_creators",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("certified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_badges_certified_creators")),
    )
    op.create_table(
        "badges_posts",
        sa.Column("post_id", sa.String(length=128), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("original", sa.Boolean(), nullable=True),
        sa.Column("substantial", sa.Boolean(), nullable=False),
        sa.Column("content_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("verdict_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_seq", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(length=256), nullable=True),
        sa.Column("event_id", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("post_id", name=op.f("pk_badges_posts")),
    )
    op.create_index(
        op.f("ix_badges_posts_creator_id"), "badges_posts", ["creator_id"], unique=False
    )
    op.create_table(
        "badges_rewards",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("feed_seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("month", sa.CHAR(length=7), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("causes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badges_rewards")),
        sa.UniqueConstraint("feed_seq", name=op.f("uq_badges_rewards_feed_seq")),
    )
    op.create_index(
        op.f("ix_badges_rewards_creator_id"), "badges_rewards", ["creator_id"], unique=False
    )
    op.create_index(
        "ix_badges_rewards_kind_month", "badges_rewards", ["kind", "month"], unique=False
    )
    op.create_table(
        "badges_voucher_pool",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badges_voucher_pool")),
    )
    # The new tables are built from the whole log, not from where the foundation's badges
    # group stopped: the group starts again at the beginning, and what it derived before (each
    # creator's first post and count, added up per event) is cleared to be derived again.
    # On Kafka, the floor below what the relay published makes the group catch up from the log
    # (tests/test_upgrade.py).
    op.execute("DELETE FROM badges_creator_posts")
    for table in ("processed_events", "dead_letters"):
        op.execute(f"DELETE FROM {table} WHERE group_name = 'badges'")
    op.execute("UPDATE consumer_positions SET position = 0 WHERE group_name = 'badges'")


def downgrade() -> None:
    op.drop_table("badges_voucher_pool")
    op.drop_index("ix_badges_rewards_kind_month", table_name="badges_rewards")
    op.drop_index(op.f("ix_badges_rewards_creator_id"), table_name="badges_rewards")
    op.drop_table("badges_rewards")
    op.drop_index(op.f("ix_badges_posts_creator_id"), table_name="badges_posts")
    op.drop_table("badges_posts")
    op.drop_table("badges_certified_creators")
    op.drop_table("badges_badges")
    op.drop_index(
        "uq_badges_applications_open",
        table_name="badges_applications",
        postgresql_where=sa.text("status IN ('pending_review', 'approved')"),
    )
    op.drop_index(op.f("ix_badges_applications_status"), table_name="badges_applications")
    op.drop_index(op.f("ix_badges_applications_creator_id"), table_name="badges_applications")
    op.drop_table("badges_applications")
