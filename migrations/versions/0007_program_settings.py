"""program settings versions

The monthly program's versioned settings (shared/program_settings.py): one row per change, the
month it takes effect from, who made it and why. The first row is seeded from the environment
at the first start-up, not here.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 11:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "program_settings_versions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("effective_from", sa.CHAR(length=7), nullable=False),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("changed_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_settings_versions")),
    )
    op.create_index(
        "ix_program_settings_versions_effective_from",
        "program_settings_versions",
        ["effective_from", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_program_settings_versions_effective_from", table_name="program_settings_versions"
    )
    op.drop_table("program_settings_versions")
