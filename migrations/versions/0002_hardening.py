"""hardening: event identity is source + id; markers and dead letters by log position;
the relay's own position table; per-key rate limits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 08:40:00

Every row is kept: processed markers and dead letters are re-keyed through the events they
name, the relay's position moves to its own table (under the default events topic).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DEFAULT_EVENTS_TOPIC = "creator-activity.events"
OLD_RELAY_ROW = "kafka-relay"


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("rate_limit", sa.Integer(), nullable=True))

    # CloudEvents: an event is identified by source + id.
    op.drop_constraint("uq_events_event_id", "events", type_="unique")
    op.create_unique_constraint(op.f("uq_events_source"), "events", ["source", "event_id"])

    # Processed markers by log position (event ids were unique when these rows were written).
    op.add_column("processed_events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE processed_events p SET seq = e.seq FROM events e WHERE e.event_id = p.event_id"
    )
    op.execute("DELETE FROM processed_events WHERE seq IS NULL")
    op.drop_constraint("pk_processed_events", "processed_events", type_="primary")
    op.drop_column("processed_events", "event_id")
    op.drop_column("processed_events", "processed_at")
    op.alter_column("processed_events", "seq", nullable=False)
    op.create_primary_key(op.f("pk_processed_events"), "processed_events", ["group_name", "seq"])

    # Dead letters: a row per parked event and group, by log position; an undecodable Kafka
    # message may have no position, hence a surrogate key.
    op.drop_constraint("pk_dead_letters", "dead_letters", type_="primary")
    op.add_column(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
    )
    op.create_primary_key(op.f("pk_dead_letters"), "dead_letters", ["id"])
    op.add_column("dead_letters", sa.Column("source", sa.String(length=256), nullable=True))
    op.add_column("dead_letters", sa.Column("payload", sa.Text(), nullable=True))
    op.execute("UPDATE dead_letters d SET source = e.source FROM events e WHERE e.seq = d.seq")
    for column in ("seq", "event_id", "type"):
        op.alter_column("dead_letters", column, nullable=True)
    op.create_unique_constraint(
        op.f("uq_dead_letters_group_name"), "dead_letters", ["group_name", "seq"]
    )

    # The relay's position is not a consumer group's: its own table, by topic.
    op.create_table(
        "relay_positions",
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_relay_positions")),
    )
    op.execute(
        sa.text(
            "INSERT INTO relay_positions (topic, position, updated_at) "
            "SELECT :topic, position, updated_at FROM consumer_positions WHERE group_name = :old"
        ).bindparams(topic=DEFAULT_EVENTS_TOPIC, old=OLD_RELAY_ROW)
    )
    op.execute(
        sa.text("DELETE FROM consumer_positions WHERE group_name = :old").bindparams(
            old=OLD_RELAY_ROW
        )
    )
    # Lag is now counted from the log on both buses; the relay's acks are no longer needed.
    op.drop_table("published_offsets")


def downgrade() -> None:
    op.create_table(
        "published_offsets",
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_published_offsets")),
    )
    op.execute(
        sa.text(
            "INSERT INTO consumer_positions (group_name, position, updated_at) "
            "SELECT :old, position, updated_at FROM relay_positions WHERE topic = :topic"
        ).bindparams(topic=DEFAULT_EVENTS_TOPIC, old=OLD_RELAY_ROW)
    )
    op.drop_table("relay_positions")

    op.drop_constraint(op.f("uq_dead_letters_group_name"), "dead_letters", type_="unique")
    op.execute("DELETE FROM dead_letters WHERE seq IS NULL OR event_id IS NULL")
    for column in ("seq", "event_id", "type"):
        op.alter_column("dead_letters", column, nullable=False)
    op.drop_column("dead_letters", "payload")
    op.drop_column("dead_letters", "source")
    op.drop_constraint(op.f("pk_dead_letters"), "dead_letters", type_="primary")
    op.drop_column("dead_letters", "id")
    op.create_primary_key("pk_dead_letters", "dead_letters", ["group_name", "event_id"])

    op.add_column("processed_events", sa.Column("event_id", sa.String(256), nullable=True))
    op.add_column(
        "processed_events",
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.execute(
        "UPDATE processed_events p SET event_id = e.event_id FROM events e WHERE e.seq = p.seq"
    )
    op.drop_constraint(op.f("pk_processed_events"), "processed_events", type_="primary")
    op.drop_column("processed_events", "seq")
    op.alter_column("processed_events", "event_id", nullable=False)
    op.create_primary_key("pk_processed_events", "processed_events", ["group_name", "event_id"])

    op.drop_constraint(op.f("uq_events_source"), "events", type_="unique")
    op.create_unique_constraint("uq_events_event_id", "events", ["event_id"])

    op.drop_column("api_keys", "rate_limit")
