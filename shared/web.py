"""What every service's HTTP layer shares: the app context, the request transaction, auth.

No pooled connection is held while a client is slow: auth runs on a short session of its own
(returned to the pool before the endpoint starts), and the request's transaction is opened
only when the endpoint first touches the database, so `POST /v1/events` reads and validates
its body first (see services/ingest/router.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.auth import ApiKey, RateLimiter, Scope, authenticate
from shared.bus import Bus
from shared.settings import Settings


@dataclass
class Context:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    bus: Bus
    groups: tuple[str, ...]  # every consumer group of the system, wherever it runs
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)  # this process's buckets


def get_context(request: Request) -> Context:
    return request.app.state.context


@asynccontextmanager
async def transaction(context: Context) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed on leaving, rolled back on any error. Services
    only flush. The connection is taken from the pool at the first statement."""
    async with context.sessionmaker() as session, session.begin():
        yield session


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: committed before the response is sent, rolled back
    on any error. Services only flush."""
    async with transaction(get_context(request)) as session:
        yield session


ContextDep = Annotated[Context, Depends(get_context)]
# scope="function": the commit happens before the response goes out (202 means durable).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def require(scope: Scope) -> Callable:
    """The key of the request, with that scope. Looked up on every request (a revoked key
    fails at once) on a session of its own, back in the pool before the endpoint runs; then
    the key's rate limit, if it has one."""

    async def dependency(
        context: ContextDep, authorization: Annotated[str | None, Header()] = None
    ) -> ApiKey:
        async with context.sessionmaker() as session:
            key = await authenticate(session, authorization, scope)
        context.rate_limiter.check(key)
        return key

    return dependency


EventsWriter = Annotated[ApiKey, Depends(require(Scope.EVENTS_WRITE))]
Reader = Annotated[ApiKey, Depends(require(Scope.READ))]
Admin = Annotated[ApiKey, Depends(require(Scope.ADMIN))]
