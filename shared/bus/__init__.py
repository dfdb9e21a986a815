"""The bus: the embedded event log, or Kafka when CREATOR_ACTIVITY_KAFKA_BOOTSTRAP is set."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.base import Bus
from shared.settings import Settings

__all__ = ["Bus", "create_bus"]


def create_bus(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> Bus:
    if settings.kafka_bootstrap:
        from shared.bus.kafka import KafkaBus

        return KafkaBus(settings, sessionmaker)
    from shared.bus.embedded import EmbeddedBus

    return EmbeddedBus(settings, sessionmaker)
