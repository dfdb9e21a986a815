"""scoring: each post's distinct actors, kept

A creator-month's quality is the mean of its qualifying posts' qualities, and each reads the
post's distinct actors. Each batch counted them again for every qualifying post of every
creator-month it touched: all the month's interactions of the busiest creators, batch after
batch (after migration 0014, the largest statement of the scoring consumer). The count is kept
on the post, counted again for the posts a batch's interactions are on (and those it creates).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 02:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "scoring_posts", sa.Column("actors", sa.Integer(), nullable=False, server_default="0")
    )
    op.execute(
        "UPDATE scoring_posts AS p SET actors = c.actors"
        " FROM (SELECT post_id, count(DISTINCT actor_id) AS actors FROM scoring_interactions"
        "  WHERE NOT deleted AND actor_id != creator_id GROUP BY post_id) AS c"
        " WHERE c.post_id = p.post_id"
    )


def downgrade() -> None:
    op.drop_column("scoring_posts", "actors")
