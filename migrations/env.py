"""Alembic environment: async engine, the URL handed over by `shared.migrate`."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

# Every module that defines tables, so Base.metadata holds the whole schema.
import services.badges.models  # noqa: F401
import services.console.sessions  # noqa: F401
import services.scoring.models  # noqa: F401
import shared.auth  # noqa: F401
import shared.bus.dead_letters  # noqa: F401
import shared.bus.log  # noqa: F401
import shared.bus.positions  # noqa: F401
import shared.bus.relay  # noqa: F401
import shared.program_settings  # noqa: F401
from shared.db import Base

# Processes that start together on a fresh embedded database all migrate it: one at a time.
MIGRATION_LOCK_KEY = 0x6361_0002

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


url = context.config.attributes.get("database_url") or context.config.get_main_option(
    "sqlalchemy.url"
)
if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online(url))
