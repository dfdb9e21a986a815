"""scoring: each band row carries its post's origin (its original, or itself)

When a post arrives, the later posts it may become the original of are those sharing a band key
whose original is none or later than it. Read by the post's time, every later copy of a flood
was read and dropped: 10,000 claims of one text at one time, in random id order, read half the
flood each (quadratic; the full benchmark run). With the origin on the band rows (the post
itself when it is an original, else its original's time and id) and an index by band, then
origin, the later posts that can change are exactly an index range: the flood's copies, whose
origin is the first copy, are not in it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 20:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "scoring_post_bands",
        sa.Column("origin_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("scoring_post_bands", sa.Column("origin_id", sa.String(128), nullable=True))
    op.execute(
        "UPDATE scoring_post_bands AS b"
        " SET origin_time = coalesce(o.time, b.time), origin_id = coalesce(o.post_id, b.post_id)"
        " FROM scoring_posts AS p LEFT JOIN scoring_posts AS o"
        "  ON o.post_id = coalesce(p.duplicate_of, p.post_id) AND o.time IS NOT NULL"
        " WHERE p.post_id = b.post_id"
    )
    # a band row without its post would be a stale leftover (it is never read)
    op.execute("DELETE FROM scoring_post_bands WHERE origin_time IS NULL")
    op.alter_column("scoring_post_bands", "origin_time", nullable=False)
    op.alter_column("scoring_post_bands", "origin_id", nullable=False)
    op.execute(
        "CREATE INDEX ix_scoring_post_bands_band_origin ON scoring_post_bands"
        ' (band, origin_time, origin_id COLLATE "C", post_id COLLATE "C")'
    )


def downgrade() -> None:
    op.drop_index("ix_scoring_post_bands_band_origin", table_name="scoring_post_bands")
    op.drop_column("scoring_post_bands", "origin_id")
    op.drop_column("scoring_post_bands", "origin_time")
