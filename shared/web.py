"""What every service's HTTP layer shares: the app context, the request transaction, auth.

No pooled connection is held while a client is slow: auth runs on a short session of its own
(returned to the pool before the endpoint starts), and the request's transaction is opened
only when the endpoint first touches the database, so `POST /v1/events` reads and validates
its body first (see services/ingest/router.py). Reads, with no body to wait for, authenticate
on the session they read with, outside any transaction (`ReadSessionDep`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import ApiKey, RateLimiter, authenticate
from shared.auth import Scope as KeyScope
from shared.bus import Bus
from shared.db import POOL_HOLDER
from shared.errors import AppError, BadRequest, PayloadTooLarge
from shared.settings import Settings


@dataclass
class Context:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    bus: Bus
    groups: tuple[str, ...]  # every consumer group of the system, wherever it runs
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)  # this process's buckets
    # reads: the same pool, no transaction (see `reading`)
    read_sessionmaker: async_sessionmaker[AsyncSession] = field(init=False)

    def __post_init__(self) -> None:
        autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.read_sessionmaker = async_sessionmaker(**{**self.sessionmaker.kw, "bind": autocommit})


async def get_context(request: Request) -> Context:
    # async: FastAPI would run a plain function in its thread pool, on every request
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
    async with transaction(request.app.state.context) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read's session: no transaction, each statement committed on its own. A read sees what
    it would see in a READ COMMITTED transaction (each statement the data committed before it
    starts) without the BEGIN and COMMIT round trips; it must not write."""
    async with request.app.state.context.read_sessionmaker() as session:
        yield session


ContextDep = Annotated[Context, Depends(get_context)]
# scope="function": the commit happens before the response goes out (202 means durable).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]


def require(scope: KeyScope, *, on_read_session: bool = False) -> Callable:
    """The key of the request, with that scope. Looked up on every request (a revoked key
    fails at once); then the key's rate limit, if it has one.

    By default on a session of its own, back in the pool before the endpoint runs, so that a
    client slow to send its body holds no connection. With `on_read_session` (reads: no body
    to wait for), on the read's session (`ReadSessionDep`): one connection per request."""

    if on_read_session:

        async def dependency(
            context: ContextDep,
            session: ReadSessionDep,
            # Documented as the bearer security scheme instead (shared/openapi.py).
            authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        ) -> ApiKey:
            key = await authenticate(session, authorization, scope)
            context.rate_limiter.check(key)
            return key

    else:

        async def dependency(
            context: ContextDep,
            authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        ) -> ApiKey:
            async with context.sessionmaker() as session:
                key = await authenticate(session, authorization, scope)
            context.rate_limiter.check(key)
            return key

    dependency.required_scope = scope  # type: ignore[attr-defined]  # for the OpenAPI document
    return dependency


EventsWriter = Annotated[ApiKey, Depends(require(KeyScope.EVENTS_WRITE))]
Reader = Annotated[ApiKey, Depends(require(KeyScope.READ, on_read_session=True))]
Admin = Annotated[ApiKey, Depends(require(KeyScope.ADMIN))]


# --- request bodies ---------------------------------------------------------------------------

MAX_JSON_DEPTH = 64  # nesting levels of a JSON body: ours need 3 (a batch, an event, its data)
# Paths that read their own bodies, streaming, under a larger limit (setting `max_body_bytes`):
# services/ingest/http_binding.py applies the same rules there.
BULK_PATHS = frozenset({"/v1/events"})


async def read_limited(
    chunks: AsyncIterator[bytes], declared_length: str | None, max_bytes: int
) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it is known to be over `max_bytes`: from
    its Content-Length before reading anything, else while streaming (nothing more is read)."""
    if declared_length and declared_length.isdigit() and int(declared_length) > max_bytes:
        raise PayloadTooLarge(f"the body is over the limit of {max_bytes} bytes")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is over the limit of {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


def nesting_exceeds(document: Any, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON document nests arrays and objects more than `max_depth` levels
    deep (the outermost counts as 1). Level by level, no recursion; stops at `max_depth`."""
    level = [document] if isinstance(document, (dict, list)) else []
    for _ in range(max_depth):
        if not level:
            return False
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
    return bool(level)


def too_deep(max_depth: int = MAX_JSON_DEPTH) -> BadRequest:
    return BadRequest(f"the JSON body nests deeper than {max_depth} levels")


def is_depth_error(error: orjson.JSONDecodeError) -> bool:
    """orjson refuses documents nested beyond its own limit (1,024) this way."""
    return "depth limit" in str(error) or "recursion" in str(error).lower()


class LimitRequestBodies:
    """A request body (on any path but BULK_PATHS) is at most `max_bytes` (413, read no further)
    and, when it is JSON, nests at most MAX_JSON_DEPTH levels (400): checked before routing,
    auth or parsing, so a hostile body costs at most `max_bytes` of memory and one C parse."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in BULK_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not _may_have_body(headers):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_limited(
                _chunks(receive), headers.get("content-length"), self.max_bytes
            )
            if _is_json(headers.get("content-type")):
                _check_depth(body)
        except AppError as error:
            await error.response()(scope, receive, send)
            return
        except ClientDisconnect:
            return  # nobody to answer

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # the disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class NamePoolHolder:
    """Labels the connections a request takes from the pool with its method and path, which
    the log line of an exhausted pool counts (`shared.db.pool_holders`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            POOL_HOLDER.set(f"{scope['method']} {scope['path']}")  # the request's own context
        await self.app(scope, receive, send)


def install_pool_holder_names(app: FastAPI) -> None:
    app.add_middleware(NamePoolHolder)


def install_body_limits(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(LimitRequestBodies, max_bytes=settings.max_request_body_bytes)


def _may_have_body(headers: Headers) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def _is_json(content_type: str | None) -> bool:
    """What FastAPI would parse as JSON (application/json, application/…+json), or no type."""
    if not content_type:
        return True
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _check_depth(body: bytes) -> None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if is_depth_error(error):
            raise too_deep() from None
        return  # malformed: the endpoint answers that as it always does
    if nesting_exceeds(document):
        raise too_deep()


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
