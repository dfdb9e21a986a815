"""API keys: scoped, stored as SHA-256 digests (keys are random 256-bit tokens, not passwords)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from enum import StrEnum

from sqlalchemy import DateTime, String, func, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.errors import Forbidden, Unauthorized

KEY_PREFIX = "ca_"


class Scope(StrEnum):
    EVENTS_WRITE = "events:write"
    READ = "read"
    ADMIN = "admin"  # implies the other two


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def grants(scopes: list[str], wanted: Scope) -> bool:
    return Scope.ADMIN in scopes or wanted in scopes


async def create_key(session: AsyncSession, name: str, scopes: list[Scope]) -> str:
    """Store a new key; return it in plain text, the only time it exists as such."""
    key = new_key()
    session.add(ApiKey(name=name, key_hash=hash_key(key), scopes=sorted(set(scopes))))
    await session.flush()
    return key


async def ensure_key(session: AsyncSession, name: str, key: str, scopes: list[Scope]) -> None:
    """Make sure this exact key exists with these scopes (the bootstrap admin key)."""
    await session.execute(
        insert(ApiKey)
        .values(name=name, key_hash=hash_key(key), scopes=sorted(set(scopes)))
        .on_conflict_do_update(index_elements=["key_hash"], set_={"scopes": sorted(set(scopes))})
    )


async def authenticate(session: AsyncSession, authorization: str | None, wanted: Scope) -> ApiKey:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    key = authorization[7:].strip()
    api_key = await session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    if api_key is None:
        raise Unauthorized("unknown API key")
    if not grants(api_key.scopes, wanted):
        raise Forbidden(f"this key lacks the scope {wanted.value!r}")
    return api_key
