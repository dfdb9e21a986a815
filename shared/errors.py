"""One error base class: a status code and a machine-readable `error` string, one handler."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class AppError(Exception):
    status_code = 500
    error = "internal_error"

    def __init__(self, message: str = "", *, details: Any = None) -> None:
        super().__init__(message or self.error)
        self.message = message or self.error.replace("_", " ")
        self.details = details

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


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


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the errors an endpoint may raise."""
    return {e.status_code: {"description": e.error} for e in errors}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return JSONResponse(
            ValidationFailed("request is invalid", details=details).body(), status_code=422
        )
