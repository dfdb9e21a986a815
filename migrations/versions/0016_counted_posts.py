"""scoring: what each post adds to its creator-month, and each month's quality sum

After migration 0014 a batch still read every post of every creator-month it touched, and
averaged the qualities of the qualifying ones in Python: the busiest creators' months, batch
after batch. Each post now keeps what it adds to its month (the month it is counted in, and
while it qualifies its day and quality); a batch moves the month's sums (posts, qualifying
posts, quality sum) and the creator-days by the difference for the posts it changed.

Not filled here (a post's quality needs the settings' heuristic): `quality_sum` stays NULL, and
the consumer rebuilds such a month from its posts the first time a batch touches it, which
fills the posts' columns; `creator-activity rescore` does every month at once.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 02:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scoring_posts", sa.Column("counted_month", sa.CHAR(7), nullable=True))
    op.add_column("scoring_posts", sa.Column("counted_day", sa.CHAR(10), nullable=True))
    op.add_column("scoring_posts", sa.Column("counted_quality", sa.Numeric(7, 6), nullable=True))
    op.add_column(
        "scoring_creator_months", sa.Column("quality_sum", sa.Numeric(18, 6), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("scoring_creator_months", "quality_sum")
    op.drop_column("scoring_posts", "counted_quality")
    op.drop_column("scoring_posts", "counted_day")
    op.drop_column("scoring_posts", "counted_month")
