"""foundation: event log, api keys, projections

Revision ID: 0001
Revises:
Create Date: 2026-11-27 09:38:13.076010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "badges_creator_posts",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("first_post_id", sa.String(length=128), nullable=False),
        sa.Column("first_post_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("posts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_badges_creator_posts")),
    )
    op.create_table(
        "consumer_positions",
        sa.Column("group_name", sa.String(length=128), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("group_name", name=op.f("pk_consumer_positions")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("group_name", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column(
            "parked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("group_name", "event_id", name=op.f("pk_dead_letters")),
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("attributes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
    )
    op.create_index(op.f("ix_events_creator_id"), "events", ["creator_id"], unique=False)
    op.create_table(
        "processed_events",
        sa.Column("group_name", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("group_name", "event_id", name=op.f("pk_processed_events")),
    )
    op.create_table(
        "published_offsets",
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_published_offsets")),
    )
    op.create_table(
        "scoring_creator_month_activity",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("posts", sa.BigInteger(), nullable=False),
        sa.Column("interactions", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "creator_id", "month", name=op.f("pk_scoring_creator_month_activity")
        ),
    )


def downgrade() -> None:
    op.drop_table("scoring_creator_month_activity")
    op.drop_table("published_offsets")
    op.drop_table("processed_events")
    op.drop_index(op.f("ix_events_creator_id"), table_name="events")
    op.drop_table("events")
    op.drop_table("dead_letters")
    op.drop_table("consumer_positions")
    op.drop_table("badges_creator_posts")
    op.drop_table("api_keys")
