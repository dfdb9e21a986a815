"""the relays' broker offsets

The highest offset the broker acked to the Kafka relays in each partition of their topics,
kept with the relay positions: an ack at or below it means the broker lost what was published
(shared/bus/relay.py). Empty until a relay publishes; nothing to backfill.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 14:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_offsets",
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("acked_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_relay_offsets")),
    )


def downgrade() -> None:
    op.drop_table("relay_offsets")
