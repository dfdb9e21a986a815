"""scoring: interactions by post, copies by original

Two indexes the scoring consumer's per-batch lookups need, each of which was a sequential scan
of a whole table per batch (or per post): the interactions of a post (its distinct actors for
the quality of a creator-month, its engagement for the featured score, the months a deletion
changes) and the copies of a post whose text changed (the near-duplicate index). The second is
partial: most posts are nobody's copy.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 14:15:00
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_scoring_interactions_post_id", "scoring_interactions", ["post_id"], unique=False
    )
    op.create_index(
        "ix_scoring_posts_duplicate_of",
        "scoring_posts",
        ["duplicate_of"],
        unique=False,
        postgresql_where="duplicate_of IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_index("ix_scoring_posts_duplicate_of", table_name="scoring_posts")
    op.drop_index("ix_scoring_interactions_post_id", table_name="scoring_interactions")
