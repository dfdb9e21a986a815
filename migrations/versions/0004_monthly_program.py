"""monthly program: scoring facts, creator months, settlements

Scoring's facts (certifications, posts with their near-duplicate index, interactions), the
state derived from them per creator and month, frozen settlements; badges' settled months.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:09:13.076286
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The foundation's counters are replaced by creator-months derived from facts, built from
    # the whole log: the scoring group starts again at its beginning (on Kafka, by a catch-up
    # from the log), not where the foundation's group stopped (tests/test_upgrade.py).
    op.drop_table("scoring_creator_month_activity")
    for table in ("processed_events", "dead_letters"):
        op.execute(f"DELETE FROM {table} WHERE group_name = 'scoring'")
    op.execute("UPDATE consumer_positions SET position = 0 WHERE group_name = 'scoring'")
    op.create_table(
        "badges_settled_months",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "month", name=op.f("pk_badges_settled_months")),
    )
    op.create_table(
        "scoring_certified_creators",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("certified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_scoring_certified_creators")),
    )
    op.create_table(
        "scoring_creator_months",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("posts", sa.Integer(), nullable=False),
        sa.Column("qualifying_posts", sa.Integer(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("interactions", sa.Integer(), nullable=False),
        sa.Column("quality", sa.Numeric(precision=7, scale=6), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("creator_id", "month", name=op.f("pk_scoring_creator_months")),
    )
    op.create_index(
        "ix_scoring_creator_months_month", "scoring_creator_months", ["month"], unique=False
    )
    op.create_table(
        "scoring_interactions",
        sa.Column("actor_id", sa.String(length=128), nullable=False),
        sa.Column("post_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("day", sa.CHAR(length=10), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("state_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "actor_id", "post_id", "kind", name=op.f("pk_scoring_interactions")
        ),
    )
    op.create_index(
        "ix_scoring_interactions_creator_month",
        "scoring_interactions",
        ["creator_id", "month"],
        unique=False,
    )
    op.create_table(
        "scoring_post_bands",
        sa.Column("band", sa.BigInteger(), nullable=False),
        sa.Column("post_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("band", "post_id", name=op.f("pk_scoring_post_bands")),
    )
    op.create_index(
        "ix_scoring_post_bands_post_id", "scoring_post_bands", ["post_id"], unique=False
    )
    op.create_table(
        "scoring_posts",
        sa.Column("post_id", sa.String(length=128), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("month", sa.CHAR(length=7), nullable=True),
        sa.Column("day", sa.CHAR(length=10), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("characters", sa.Integer(), nullable=False),
        sa.Column("image_count", sa.Integer(), nullable=False),
        sa.Column("paragraphs", sa.Integer(), nullable=False),
        sa.Column("content_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("quality_score", sa.Numeric(precision=7, scale=6), nullable=True),
        sa.Column("verdict_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.Column("duplicate_of", sa.String(length=128), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("post_id", name=op.f("pk_scoring_posts")),
    )
    op.create_index(
        "ix_scoring_posts_creator_month", "scoring_posts", ["creator_id", "month"], unique=False
    )
    op.create_table(
        "scoring_settlement_entries",
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Numeric(precision=9, scale=6), nullable=False),
        sa.Column("qualifying_posts", sa.Integer(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("interactions", sa.Integer(), nullable=False),
        sa.Column("quality", sa.Numeric(precision=7, scale=6), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("payout", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("components", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("month", "creator_id", name=op.f("pk_scoring_settlement_entries")),
    )
    op.create_table(
        "scoring_settlements",
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pool", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("settings", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("settled_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_scoring_settlements")),
    )


def downgrade() -> None:
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
    op.drop_table("scoring_settlements")
    op.drop_table("scoring_settlement_entries")
    op.drop_index("ix_scoring_posts_creator_month", table_name="scoring_posts")
    op.drop_table("scoring_posts")
    op.drop_index("ix_scoring_post_bands_post_id", table_name="scoring_post_bands")
    op.drop_table("scoring_post_bands")
    op.drop_index("ix_scoring_interactions_creator_month", table_name="scoring_interactions")
    op.drop_table("scoring_interactions")
    op.drop_index("ix_scoring_creator_months_month", table_name="scoring_creator_months")
    op.drop_table("scoring_creator_months")
    op.drop_table("scoring_certified_creators")
    op.drop_table("badges_settled_months")
