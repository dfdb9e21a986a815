"""One error base class: a status code and a machine-readable `error` string, one handler.

Every answer that is not a success has the shape `{"error", "message", "details"?}`: the
application's errors, FastAPI's validation errors, Starlette's 404/405, a NUL character in the
path or query string, the database being away (503 with `Retry-After`), and bugs (500).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

import asyncpg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.db import pool_holders
from shared.routes import allowed_methods

logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_S = 5


class AppError(Exception):
    status_code = 500
    error = "internal_error"

    def __init__(
        self, message: str = "", *, details: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message or self.error)
        self.message = message or self.error.replace("_", " ")
        self.details = details
        self.retry_after = retry_after  # seconds; sent as a `Retry-After` header

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers())


class BadRequest(AppError):
    status_code, error = 400, "malformed_request"


class Unauthorized(AppError):
    status_code, error = 401, "unauthorized"


class Forbidden(AppError):
    status_code, error = 403, "forbidden"


class NotFound(AppError):
    status_code, error = 404, "not_found"


class Conflict(AppError):
    status_code, error = 409, "conflict"


class PayloadTooLarge(AppError):
    status_code, error = 413, "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code, error = 415, "unsupported_media_type"


class ValidationFailed(AppError):
    status_code, error = 422, "validation_failed"


class RateLimited(AppError):
    status_code, error = 429, "rate_limited"


class Unavailable(AppError):
    """The database or the bus cannot serve the request now: retry later."""

    status_code, error = 503, "unavailable"


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the errors an endpoint may raise besides those every
    operation of its kind may answer (shared/openapi.py adds those, and the error shape)."""
    by_status: dict[int, list[str]] = {}
    for error in errors:
        by_status.setdefault(error.status_code, []).append(error.error)
    return {status: {"description": ", ".join(names)} for status, names in by_status.items()}


# The `error` strings of answers that do not come from an AppError: the framework's (unknown
# route, wrong method, FastAPI's body parsing) and a client that went away.
HTTP_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("malformed_request", "client_disconnected"),
    404: ("not_found",),
    405: ("method_not_allowed",),
    413: ("payload_too_large",),
}


# SQLSTATE classes and codes of a database that cannot serve now (not of a bad request):
# connection exceptions, insufficient resources (disk full, too many connections), operator
# intervention (statement timeout, shutdown), system errors, lock_timeout, and
# idle_in_transaction_session_timeout.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57", "58", "55P03", "25P03")
_UNAVAILABLE_ASYNCPG = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and the chain of its causes (SQLAlchemy wraps the driver's errors in
    `orig`), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__


def is_unavailable(exc: BaseException) -> bool:
    """The database (or the network to it) is away, overloaded or timed out: the request may
    succeed later. Looks through the chain of causes."""
    for current in causes(exc):
        if isinstance(current, (sa_exc.TimeoutError, sa_exc.DisconnectionError, OSError)):
            return True  # pool exhausted; connection refused, reset, lost, timed out
        if isinstance(current, _UNAVAILABLE_ASYNCPG):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
            return True
    return False


def _pool_exhausted(exc: BaseException) -> bool:
    """No pooled connection came within the pool's timeout (SQLAlchemy's own TimeoutError)."""
    return any(isinstance(current, sa_exc.TimeoutError) for current in causes(exc))


def _http_error(status_code: int) -> str:
    if status_code in HTTP_ERRORS:
        return HTTP_ERRORS[status_code][0]
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def _retry_after(request: Request) -> int:
    context = getattr(request.app.state, "context", None)
    settings = getattr(context, "settings", None)
    return getattr(settings, "unavailable_retry_after_s", DEFAULT_RETRY_AFTER_S)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(RejectNulCharacters)

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return ValidationFailed("request is invalid", details=details).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Unknown routes (404), wrong methods (405, with `Allow`), and the like."""
        if exc.status_code == 404 and exc.detail == HTTPStatus.NOT_FOUND.phrase:
            message = f"no such route: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        body = {"error": _http_error(exc.status_code), "message": message}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route of the path
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            raise exc  # a bug: the 500 handler below answers it and it is logged
        extra = {"path": request.url.path, "error": repr(exc)[:500]}
        context = getattr(request.app.state, "context", None)
        if context is not None and _pool_exhausted(exc):
            extra["pool_holders"] = pool_holders(context.engine)
        logger.warning("database unavailable", extra=extra)
        error = Unavailable(
            "the database is unavailable; retry later", retry_after=_retry_after(request)
        )
        return error.response()

    # Only these types, not `Exception`: a handler of `Exception` runs after the response and
    # re-raises. Anything else not unavailable is re-raised to the 500 handler.
    for error_type in (sa_exc.SQLAlchemyError, OSError, asyncpg.PostgresError):
        app.add_exception_handler(error_type, _database)
    app.add_exception_handler(asyncpg.exceptions.InterfaceError, _database)

    @app.exception_handler(KafkaError)
    async def _bus(request: Request, exc: KafkaError) -> JSONResponse:
        logger.warning(
            "bus unavailable", extra={"path": request.url.path, "error": repr(exc)[:500]}
        )
        error = Unavailable(
            "the bus is unavailable; retry later", retry_after=_retry_after(request)
        )
        return error.response()

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # Nobody reads this answer; it only keeps a client that left out of the error log.
        return JSONResponse(
            {"error": "client_disconnected", "message": "the client went away"}, status_code=400
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception (re-raised to the server) after this answer is sent.
        return JSONResponse(
            {"error": "internal_error", "message": "internal error"}, status_code=500
        )


class RejectNulCharacters:
    """A NUL character in the path (percent-encoded `%00`) or the query string is a 422 for
    every route: PostgreSQL text cannot hold it, and no identifier of ours contains it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = _nul_in(scope)
            if where:
                error = ValidationFailed(
                    f"the {where} holds a NUL character",
                    details=[{"loc": [where], "msg": "NUL characters are not allowed"}],
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in(scope: Scope) -> str | None:
    if "\x00" in scope.get("path", "") or b"%00" in scope.get("raw_path", b"").lower():
        return "path"
    query = scope.get("query_string", b"")
    if b"\x00" in query or b"\x00" in unquote_to_bytes(query):
        return "query"
    return None
