"""The OpenAPI document (`/openapi.json`, `/docs`): FastAPI's, completed in one place so that
no router can forget an error it may answer.

To every operation it adds, each in the error shape `Error` with the `error` strings of its
status:
- 422 (a parameter or body that does not validate; a NUL in the path or query, refused for
  every route by shared/errors.py);
- 401, 403 and 429 when a key is needed (shared/web.py `require`), with the bearer security
  scheme and the scope (`x-required-scope`), and `WWW-Authenticate` / `Retry-After` headers;
- 503 with `Retry-After` where the database is used (a key or a session);
- 400 and 413 where a body is read (malformed or too deeply nested JSON; over the size limit);
- what each route declares with `error_responses(...)` (404, 409, 415, ...).

Every string a request may carry gets a pattern refusing NUL, as the service does everywhere
(PostgreSQL text cannot hold it), and the event envelope of `POST /v1/events` is described
type by type (shared/events.py `event_json_schemas`).
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from shared.errors import HTTP_ERRORS, AppError
from shared.events import EventLimits, event_json_schemas
from shared.routes import every_route
from shared.settings import Settings
from shared.web import MAX_JSON_DEPTH, get_session

SCHEMAS = "#/components/schemas/"
SECURITY_SCHEME = "apiKey"
NO_NUL = "^[^\\u0000]*$"  # ECMA-262: any string without U+0000

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every answer that is not a success, on every path.",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable, stable"},
        "message": {"type": "string", "description": "for people; may change"},
        "details": {
            "type": "array",
            "description": "what exactly is wrong, e.g. `{index, loc, msg}` per problem of a "
            "422 from ingest, `{loc, msg}` from other endpoints",
            "items": {"type": "object"},
        },
    },
    "additionalProperties": False,
}
HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}},
}
RESPONSE_HEADERS = {401: ["WWW-Authenticate"], 429: ["Retry-After"], 503: ["Retry-After"]}
DESCRIPTIONS = {
    400: f"Malformed: the body is not JSON, or nests deeper than {MAX_JSON_DEPTH} levels.",
    401: "No key, an unknown or revoked key, or an `Authorization` header that is not "
    "`Bearer <key>`.",
    403: "The key lacks the scope this operation needs.",
    404: "Not found.",
    409: "Conflicts with the current state.",
    413: "The body is over the size limit.",
    415: "Unsupported content type.",
    422: "A parameter or the body does not validate (a NUL character in the path or query "
    "included); `details` says where.",
    429: "The key's rate limit (requests per second, bursts of twice that) is used up: retry "
    "after `Retry-After` seconds.",
    503: "The database or the bus cannot serve now: retry after `Retry-After` seconds.",
}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, not ours
        schemas.pop(unused, None)
    schemas["Error"] = ERROR_SCHEMA
    components["headers"] = HEADERS
    if b'"' + (SCHEMAS + "Event").encode() in orjson.dumps(document):
        limits = EventLimits.of(settings)
        schemas.update(event_json_schemas(limits, settings.max_batch_events, SCHEMAS))

    secured = False
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            secured |= _complete(operation, route)
    if secured:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (`creator-activity api-keys create`); scopes "
                "`events:write`, `read`, `admin` (admin implies the other two).",
            }
        }
    _refuse_nul_in_request_strings(document)
    return document


def api_routes(app: FastAPI) -> Iterator[Any]:
    for route in every_route(app):
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def _complete(operation: dict[str, Any], route: Any) -> bool:
    """Add the errors the route may answer, and its auth; whether it needs a key."""
    calls = set(_dependency_calls(route.dependant))
    scope = next((c.required_scope for c in calls if hasattr(c, "required_scope")), None)
    statuses = {422} | {int(s) for s in route.responses if str(s).isdigit() and int(s) >= 400}
    if scope is not None:
        statuses |= {401, 403, 429, 503}
        operation["security"] = [{SECURITY_SCHEME: []}]
        operation["x-required-scope"] = scope.value
        note = f"Needs a key with the scope `{scope.value}`."
        operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
    if get_session in calls:
        statuses.add(503)
    if "requestBody" in operation:
        statuses |= {400, 413}
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        responses[str(status)] = _error_response(status)
    return scope is not None


def _dependency_calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _dependency_calls(dependency)


def _error_response(status: int) -> dict[str, Any]:
    strings = error_strings(status)
    schema: dict[str, Any] = {"$ref": SCHEMAS + "Error"}
    if strings:
        schema = {"allOf": [schema, {"properties": {"error": {"enum": strings}}}]}
    response: dict[str, Any] = {
        "description": DESCRIPTIONS.get(status) or HTTPStatus(status).phrase,
        "content": {"application/json": {"schema": schema}},
    }
    if status in RESPONSE_HEADERS:
        response["headers"] = {
            name: {"$ref": f"#/components/headers/{name}"} for name in RESPONSE_HEADERS[status]
        }
    return response


def error_strings(status: int) -> list[str]:
    """The `error` strings an answer of this status may carry: those of the AppError classes
    (every subclass, wherever defined) and of the framework's errors (shared/errors.py)."""
    found = set(HTTP_ERRORS.get(status, ()))
    pending = [AppError]
    while pending:
        error_class = pending.pop()
        pending.extend(error_class.__subclasses__())
        if error_class.status_code == status:
            found.add(error_class.error)
    return sorted(found)


def _refuse_nul_in_request_strings(document: dict[str, Any]) -> None:
    """Every string of a request (parameters and bodies, through their `$ref`s) refuses NUL;
    strings with a pattern, an enum, a const or a format already say what they may be."""
    schemas = document.get("components", {}).get("schemas", {})
    roots: list[Any] = []
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            roots.extend(
                p.get("schema")
                for p in operation.get("parameters", [])
                if p.get("in") in ("path", "query")
            )
            for media in operation.get("requestBody", {}).get("content", {}).values():
                roots.append(media.get("schema"))
    seen: set[str] = set()
    pending = [r for r in roots if r]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMAS):
            name = ref.removeprefix(SCHEMAS)
            if name not in seen and name in schemas:
                seen.add(name)
                pending.append(schemas[name])
        if node.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(node):
            node["pattern"] = NO_NUL
        for key, value in node.items():
            if key in ("properties", "patternProperties", "$defs"):
                pending.extend(value.values())
            elif isinstance(value, (dict, list)) and key not in ("examples", "default", "enum"):
                pending.append(value)
