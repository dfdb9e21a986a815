"""The database schema: alembic migrations run from code, and the start-up rule.

The embedded default migrates itself at start-up (no separate step). With a database URL, the
operator migrates (`creator-activity migrate`); a process whose schema is behind refuses to
start rather than run code against tables it does not know.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from shared import db
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


class SchemaBehind(Exception):
    """The database schema is not the one this release needs."""


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


async def current_revision(database_url: str) -> str | None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read_revision)
    finally:
        await engine.dispose()


def _read_revision(connection) -> str | None:
    chatty = logging.getLogger("alembic.runtime.migration")
    level = chatty.level
    chatty.setLevel(logging.WARNING)  # "Context impl ...": noise when only reading
    try:
        return MigrationContext.configure(connection).get_current_revision()
    finally:
        chatty.setLevel(level)


async def ensure_current(database_url: str) -> None:
    current, head = await current_revision(database_url), head_revision()
    if current != head:
        raise SchemaBehind(
            f"the database schema is at {current or 'nothing'}, this release needs {head}: "
            "run `creator-activity migrate`"
        )


async def prepare_database(settings: Settings) -> str:
    """The database URL of these settings, ready for this release: the embedded database is
    started and migrated; any other must already be at head (SchemaBehind otherwise)."""
    url = await asyncio.to_thread(db.database_url, settings)
    if settings.database_url is None:
        await asyncio.to_thread(upgrade, url)
    else:
        await ensure_current(url)
    return url
