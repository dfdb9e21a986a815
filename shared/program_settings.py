"""The monthly program's settings in force for a month.

Placeholder until versioned program settings land: the environment's settings for every month.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from shared.settings import Settings


async def settings_in_force(session: AsyncSession, settings: Settings, month: str) -> Settings:
    """The settings that govern `month` (YYYY-MM)."""
    return settings
