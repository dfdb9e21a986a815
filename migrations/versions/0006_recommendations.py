"""exposure: followers, recommended follows, leaderboard snapshots

Scoring's follower-count facts, certified creators' display names, the per-day qualifying
posts recommendations read, and the daily snapshots of a month's ranks (rank change).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 09:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "scoring_certified_creators",
        sa.Column("display_name", sa.String(length=64), nullable=True),
    )
    op.create_table(
        "scoring_follower_counts",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("followers", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "time", name=op.f("pk_scoring_follower_counts")),
    )
    op.create_table(
        "scoring_creator_days",
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.CHAR(length=10), nullable=False),
        sa.Column("qualifying_posts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "day", name=op.f("pk_scoring_creator_days")),
    )
    op.create_index("ix_scoring_creator_days_day", "scoring_creator_days", ["day"], unique=False)
    op.create_table(
        "scoring_rank_snapshot_days",
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("day", sa.CHAR(length=10), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("month", "day", name=op.f("pk_scoring_rank_snapshot_days")),
    )
    op.create_table(
        "scoring_rank_snapshots",
        sa.Column("month", sa.CHAR(length=7), nullable=False),
        sa.Column("day", sa.CHAR(length=10), nullable=False),
        sa.Column("creator_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "month", "day", "creator_id", name=op.f("pk_scoring_rank_snapshots")
        ),
    )


def downgrade() -> None:
    op.drop_table("scoring_rank_snapshots")
    op.drop_table("scoring_rank_snapshot_days")
    op.drop_index("ix_scoring_creator_days_day", table_name="scoring_creator_days")
    op.drop_table("scoring_creator_days")
    op.drop_table("scoring_follower_counts")
    op.drop_column("scoring_certified_creators", "display_name")
