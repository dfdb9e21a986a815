"""exposure: weekly featured posts

Scoring's per-post featured scores (kept by the consumer for touched posts), the frozen weeks
and their featured posts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:50:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scoring_featured_scores",
        sa.Column("post_id", sa.String(length=128), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("week", sa.CHAR(length=8), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quality", sa.Numeric(precision=7, scale=6), nullable=False),
        sa.Column("engagement", sa.Integer(), nullable=False),
        sa.Column("score", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.PrimaryKeyConstraint("post_id", name=op.f("pk_scoring_featured_scores")),
    )
    op.create_index(
        "ix_scoring_featured_scores_week_order",
        "scoring_featured_scores",
        ["week", "score", "time", "post_id"],
        unique=False,
    )
    op.create_table(
        "scoring_frozen_weeks",
        sa.Column("week", sa.CHAR(length=8), nullable=False),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("frozen_by", sa.String(length=128), nullable=False),
        sa.Column("bonus", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("settings", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("week", name=op.f("pk_scoring_frozen_weeks")),
    )
    op.create_table(
        "scoring_frozen_featured_posts",
        sa.Column("week", sa.CHAR(length=8), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("post_id", sa.String(length=128), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("score", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.PrimaryKeyConstraint("week", "rank", name=op.f("pk_scoring_frozen_featured_posts")),
    )


def downgrade() -> None:
    op.drop_table("scoring_frozen_featured_posts")
    op.drop_table("scoring_frozen_weeks")
    op.drop_index("ix_scoring_featured_scores_week_order", table_name="scoring_featured_scores")
    op.drop_table("scoring_featured_scores")
