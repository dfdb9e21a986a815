"""scoring: actor-days, and interactions indexed by creator, month, actor and day

Each batch rebuilt the received interactions of every creator-month it touched from all the
month's interactions: the busiest creators are in nearly every batch, so at a million events
the scoring consumer spent most of its time summing the same months again (docs/benchmarks.md,
profile 10). `scoring_actor_days` keeps what the per-actor daily cap clamps (one actor's counted
interactions for one creator and day, by kind); a batch recomputes only the actor-days it
changed and moves the month's total by their difference. The interactions' index by creator and
month gains actor and day, so an actor-day is an index range.

Filled here from the interactions by the counting rule of `months.counted_interactions` as of
this revision (not deleted, not the creator's own, on a post not deleted or removed).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scoring_actor_days",
        sa.Column("creator_id", sa.String(128), primary_key=True),
        sa.Column("month", sa.CHAR(7), primary_key=True),
        sa.Column("actor_id", sa.String(128), primary_key=True),
        sa.Column("day", sa.CHAR(10), primary_key=True),
        sa.Column("likes", sa.Integer(), nullable=False),
        sa.Column("comments", sa.Integer(), nullable=False),
        sa.Column("shares", sa.Integer(), nullable=False),
        sa.Column("quotes", sa.Integer(), nullable=False),
    )
    op.execute(
        "INSERT INTO scoring_actor_days"
        " (creator_id, month, actor_id, day, likes, comments, shares, quotes)"
        " SELECT i.creator_id, i.month, i.actor_id, i.day,"
        "  count(*) FILTER (WHERE i.kind = 'like'), count(*) FILTER (WHERE i.kind = 'comment'),"
        "  count(*) FILTER (WHERE i.kind = 'share'),"
        "  count(*) FILTER (WHERE i.kind NOT IN ('like', 'comment', 'share'))"
        " FROM scoring_interactions AS i LEFT JOIN scoring_posts AS p ON p.post_id = i.post_id"
        " WHERE NOT i.deleted AND i.actor_id != i.creator_id"
        "  AND NOT coalesce(p.deleted, false) AND coalesce(p.verdict, '') != 'removed'"
        " GROUP BY i.creator_id, i.month, i.actor_id, i.day"
    )
    op.create_index(
        "ix_scoring_interactions_creator_actor_day",
        "scoring_interactions",
        ["creator_id", "month", "actor_id", "day"],
    )
    op.drop_index("ix_scoring_interactions_creator_month", table_name="scoring_interactions")


def downgrade() -> None:
    op.create_index(
        "ix_scoring_interactions_creator_month", "scoring_interactions", ["creator_id", "month"]
    )
    op.drop_index("ix_scoring_interactions_creator_actor_day", table_name="scoring_interactions")
    op.drop_table("scoring_actor_days")
