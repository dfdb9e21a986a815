"""scoring: each band row carries its post's time

The earliest similar post before a post was found by walking every earlier post in time order
and probing its bands: a post with no earlier copy read all of them, so the cost of a batch grew
with the whole table. With the post's time on its band rows (and an index by band, then time),
the first candidates of each band key are an index range: bounded by the keys and the limit.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 17:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "scoring_post_bands", sa.Column("time", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(
        "UPDATE scoring_post_bands AS b SET time = p.time"
        " FROM scoring_posts AS p WHERE p.post_id = b.post_id"
    )
    # only posts with a time are indexed; a row without one would be a stale leftover
    op.execute("DELETE FROM scoring_post_bands WHERE time IS NULL")
    op.alter_column("scoring_post_bands", "time", nullable=False)
    op.execute(
        "CREATE INDEX ix_scoring_post_bands_band_time"
        ' ON scoring_post_bands (band, time, post_id COLLATE "C")'
    )


def downgrade() -> None:
    op.drop_index("ix_scoring_post_bands_band_time", table_name="scoring_post_bands")
    op.drop_column("scoring_post_bands", "time")
