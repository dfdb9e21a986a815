"""precomputed standings and recommendations; display names backfilled

The provisional months' standings (score, rank, eligibility, statistics per creator) and the
recommended follows, refreshed from the facts when their version moves (services/scoring/
standings_table.py, docs/decisions.md "Precomputed standings and recommendations"); a page of
a settled ranking by rank.

Creators certified before 0006 have no display name in scoring: it is copied from their
approved application (badges' table; one approved application per creator at most).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 11:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scoring_standings_versions",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_scoring_standings_versions")),
    )
    op.create_table(
        "scoring_standings_refreshes",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("divisors", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("weights", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_scoring_standings_refreshes")),
    )
    op.create_table(
        "scoring_standings",
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("score", sa.Numeric(precision=9, scale=6), nullable=False),
        sa.Column("certified", sa.Boolean(), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("qualifying_posts", sa.Integer(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("interactions", sa.Integer(), nullable=False),
        sa.Column("quality", sa.Numeric(precision=7, scale=6), nullable=False),
        sa.PrimaryKeyConstraint("month", "creator_id", name=op.f("pk_scoring_standings")),
    )
    op.create_index("ix_scoring_standings_month_rank", "scoring_standings", ["month", "rank"])
    op.create_table(
        "scoring_recommendations",
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=True),
        sa.Column("score", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("recent_score", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("activity", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("growth", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("qualifying_posts", sa.Integer(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("followers", sa.BigInteger(), nullable=True),
        sa.Column("followers_before", sa.BigInteger(), nullable=True),
        sa.Column("newcomer", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_scoring_recommendations")),
    )
    op.create_index(
        "ix_scoring_settlement_entries_month_rank",
        "scoring_settlement_entries",
        ["month", "rank"],
    )
    # Display names of creators certified before 0006: from the approved application.
    op.execute(
        """
        UPDATE scoring_certified_creators AS c
        SET display_name = a.display_name
        FROM badges_applications AS a
        WHERE a.creator_id = c.creator_id
          AND a.status = 'approved'
          AND a.display_name IS NOT NULL
          AND c.display_name IS NULL
        """
    )


def downgrade() -> None:
    # The backfilled display names stay: they are what the application said.
    op.drop_index(
        "ix_scoring_settlement_entries_month_rank", table_name="scoring_settlement_entries"
    )
    op.drop_table("scoring_recommendations")
    op.drop_index("ix_scoring_standings_month_rank", table_name="scoring_standings")
    op.drop_table("scoring_standings")
    op.drop_table("scoring_standings_refreshes")
    op.drop_table("scoring_standings_versions")
