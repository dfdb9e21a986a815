"""What every service's HTTP layer shares: the app context, the request transaction, auth."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.auth import ApiKey, Scope, authenticate
from shared.bus import Bus
from shared.settings import Settings


@dataclass
class Context:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    bus: Bus
    groups: tuple[str, ...]  # every consumer group of the system, wherever it runs


def get_context(request: Request) -> Context:
    return request.app.state.context


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: committed before the response is sent, rolled back
    on any error. Services only flush."""
    async with get_context(request).sessionmaker() as session, session.begin():
        yield session


ContextDep = Annotated[Context, Depends(get_context)]
# scope="function": the commit happens before the response goes out (202 means durable).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def require(scope: Scope) -> Callable:
    async def dependency(
        session: SessionDep, authorization: Annotated[str | None, Header()] = None
    ) -> ApiKey:
        return await authenticate(session, authorization, scope)

    return dependency


EventsWriter = Annotated[ApiKey, Depends(require(Scope.EVENTS_WRITE))]
Reader = Annotated[ApiKey, Depends(require(Scope.READ))]
Admin = Annotated[ApiKey, Depends(require(Scope.ADMIN))]
