"""API keys: scoped, stored as SHA-256 digests (keys are random 256-bit tokens, not passwords),
optionally limited to N requests per second (a token bucket per key, in each process)."""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import DateTime, Integer, String, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, driver
from shared.errors import Forbidden, RateLimited, Unauthorized

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
    rate_limit: Mapped[int | None] = mapped_column(Integer)  # requests per second; None = any


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def grants(scopes: list[str], wanted: Scope) -> bool:
    return Scope.ADMIN in scopes or wanted in scopes


async def create_key(
    session: AsyncSession, name: str, scopes: list[Scope], *, rate_limit: int | None = None
) -> str:
    """Store a new key; return it in plain text, the only time it exists as such."""
    key = new_key()
    session.add(
        ApiKey(name=name, key_hash=hash_key(key), scopes=sorted(set(scopes)), rate_limit=rate_limit)
    )
    await session.flush()
    return key


async def list_keys(session: AsyncSession) -> Sequence[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    return (await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))).all()


async def revoke_keys(session: AsyncSession, name: str) -> int | None:
    """Revoke every key of that name still active; how many were, or None if no key of that
    name exists at all."""
    if not await session.scalar(select(func.count()).where(ApiKey.name == name)):
        return None
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return result.rowcount


async def ensure_key(session: AsyncSession, name: str, key: str, scopes: list[Scope]) -> None:
    """Make sure this exact key exists with these scopes (the bootstrap admin key)."""
    await session.execute(
        insert(ApiKey)
        .values(name=name, key_hash=hash_key(key), scopes=sorted(set(scopes)))
        .on_conflict_do_update(index_elements=["key_hash"], set_={"scopes": sorted(set(scopes))})
    )


_ACTIVE_KEY = (
    "SELECT id, name, key_hash, scopes, created_at, revoked_at, rate_limit FROM api_keys"
    " WHERE key_hash = $1 AND revoked_at IS NULL"
)


async def authenticate(session: AsyncSession, authorization: str | None, wanted: Scope) -> ApiKey:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    key = authorization[7:].strip()
    # on the driver: one statement on every request (shared/db.py `driver`)
    row = await (await driver(session)).fetchrow(_ACTIVE_KEY, hash_key(key))
    if row is None:
        raise Unauthorized("unknown API key")
    api_key = ApiKey(**row)  # not added to the session: a copy of the row, read only
    if not grants(api_key.scopes, wanted):
        raise Forbidden(f"this key lacks the scope {wanted.value!r}")
    return api_key


@dataclass
class _Bucket:
    rate: float
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """A token bucket per key: `rate_limit` tokens per second, bursts of twice that.

    In memory, per process: with several processes, a key may send its rate to each."""

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[int, _Bucket] = field(default_factory=dict)

    def check(self, key: ApiKey) -> None:
        """Take one token from the key's bucket, or raise RateLimited with Retry-After."""
        if key.rate_limit is None:
            return
        rate, now = float(key.rate_limit), self.clock()
        bucket = self._buckets.get(key.id)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[key.id] = _Bucket(rate, 2 * rate, now)
        bucket.tokens = min(2 * rate, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        wait = (1 - bucket.tokens) / rate
        raise RateLimited(
            f"this key is limited to {key.rate_limit} requests per second",
            retry_after=max(1, math.ceil(wait)),
        )
