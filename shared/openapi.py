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

Links (`LINKS`) say where an answer leads: from a created application to reading, approving or
rejecting it and to its creator's reads; from posted events to their creator's reads. They
are documentation, and what Schemathesis' stateful phase chains requests on
(tests/test_fuzz_api.py).

Every string a request may carry gets a pattern refusing NUL, as the service does everywhere
(PostgreSQL text cannot hold it), and the event envelope of `POST /v1/events` is described
type by type (shared/events.py `event_json_schemas`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
    _add_links(document)
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
    strings with an enum, a const, a format or a pattern for the whole string already say what
    they may be."""
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
        if node.get("type") == "string":
            pattern = node.get("pattern")
            if not {"pattern", "enum", "const", "format"} & set(node):
                node["pattern"] = NO_NUL
            elif pattern and not (pattern.startswith("^") and pattern.endswith("$")):
                # a pattern searched for, not matched by the whole string (a visible character
                # somewhere: shared/events.py NOT_BLANK), says nothing of the other characters
                also = node.setdefault("allOf", [])
                if {"pattern": NO_NUL} not in also:
                    also.append({"pattern": NO_NUL})
        for key, value in node.items():
            if key in ("properties", "patternProperties", "$defs"):
                pending.extend(value.values())
            elif isinstance(value, (dict, list)) and key not in ("examples", "default", "enum"):
                pending.append(value)


@dataclass(frozen=True)
class Link:
    """An OpenAPI link to the operation `method path`; `parameters` are qualified by location
    (`path.creator_id`) and valued by runtime expressions."""

    method: str
    path: str
    parameters: dict[str, str]
    description: str


APPLICATION = "$response.body#/id"
APPLICANT = "$response.body#/creator_id"
# The creator of the event posted, or of a batch's first event (a batch is a JSON array).
EVENT_CREATOR = "$request.body#/data/creator_id"
FIRST_EVENT_CREATOR = "$request.body#/0/data/creator_id"
_MONTH_NOTE = (
    " The month is the event's `time` in the program time zone (a runtime expression cannot "
    "compute it); 404 until scoring has applied the event."
)
_APPLICATION_PATH = "/v1/applications/{application_id}"
_APPROVE_PATH = "/v1/admin/applications/{application_id}/approve"
_REJECT_PATH = "/v1/admin/applications/{application_id}/reject"
_CREATOR_PATH = "/v1/creators/{creator_id}"
_MONTH_PATH = "/v1/creators/{creator_id}/months/{month}"


def _application_links() -> dict[str, Link]:
    return {
        "GetApplication": Link(
            "GET", _APPLICATION_PATH, {"path.application_id": APPLICATION}, "The application."
        ),
        "GetCreator": Link(
            "GET",
            _CREATOR_PATH,
            {"path.creator_id": APPLICANT},
            "The applicant in the program: status, badges, streak, rewards.",
        ),
    }


def _decision_links() -> dict[str, Link]:
    return {
        "ApproveApplication": Link(
            "POST",
            _APPROVE_PATH,
            {"path.application_id": APPLICATION},
            "Certify the creator (409 unless the application is pending review).",
        ),
        "RejectApplication": Link(
            "POST",
            _REJECT_PATH,
            {"path.application_id": APPLICATION},
            "Turn the application down (409 unless it is pending review).",
        ),
    }


def _rewards_link(creator: str) -> Link:
    return Link("GET", "/v1/rewards", {"query.creator_id": creator}, "The creator's rewards.")


# (method, path, status) of the answer -> its links by name
LINKS: dict[tuple[str, str, str], dict[str, Link]] = {
    ("POST", "/v1/applications", "201"): {
        **_application_links(),
        **_decision_links(),
        "ListCreatorApplications": Link(
            "GET",
            "/v1/admin/applications",
            {"query.creator_id": APPLICANT},
            "Every application of the applicant.",
        ),
        "GetCreatorRewards": _rewards_link(APPLICANT),
        "GetCreatorMonth": Link(
            "GET",
            _MONTH_PATH,
            {"path.creator_id": APPLICANT},
            "The applicant's month, for any month with activity.",
        ),
    },
    ("GET", _APPLICATION_PATH, "200"): {
        **_decision_links(),
        "GetCreator": _application_links()["GetCreator"],
    },
    ("POST", _APPROVE_PATH, "200"): {
        **_application_links(),
        "GetCreatorRewards": _rewards_link(APPLICANT),
        "UsePromotionSlot": Link(
            "POST",
            "/v1/admin/creators/{creator_id}/promotion-slots/{month}",
            {"path.creator_id": APPLICANT},
            "Use the certified creator's promotion slot of a month (this month or later).",
        ),
    },
    ("POST", _REJECT_PATH, "200"): _application_links(),
    ("POST", "/v1/admin/creators/{creator_id}/promotion-slots/{month}", "201"): {
        "GetCreatorRewards": Link(
            "GET",
            "/v1/rewards",
            {"query.creator_id": APPLICANT, "query.month": "$response.body#/month"},
            "The creator's rewards of that month, this slot among them.",
        ),
    },
    ("POST", "/v1/events", "202"): {
        "GetCreatorMonth": Link(
            "GET",
            _MONTH_PATH,
            {"path.creator_id": EVENT_CREATOR},
            "The month of the creator of the event posted (one event, not a batch)." + _MONTH_NOTE,
        ),
        "GetFirstCreatorMonth": Link(
            "GET",
            _MONTH_PATH,
            {"path.creator_id": FIRST_EVENT_CREATOR},
            "The month of the creator of a batch's first event." + _MONTH_NOTE,
        ),
        "GetCreator": Link(
            "GET",
            _CREATOR_PATH,
            {"path.creator_id": EVENT_CREATOR},
            "The creator of the event posted in the program (404 until they apply).",
        ),
        "GetCreatorRewards": _rewards_link(EVENT_CREATOR),
    },
}


def _add_links(document: dict[str, Any]) -> None:
    """Each link whose two operations this process serves (a service alone serves some)."""
    paths = document["paths"]
    for (method, path, status), links in LINKS.items():
        source = paths.get(path, {}).get(method.lower())
        if source is None:
            continue
        found: dict[str, Any] = {}
        for name, link in links.items():
            target = paths.get(link.path, {}).get(link.method.lower())
            if target is None:
                continue
            declared = {f"{p['in']}.{p['name']}" for p in target.get("parameters", [])}
            unknown = set(link.parameters) - declared
            if unknown:  # a renamed parameter must not leave a link pointing nowhere
                raise ValueError(f"link {name} of {method} {path}: no parameter {unknown}")
            found[name] = {
                "operationId": target["operationId"],
                "parameters": link.parameters,
                "description": link.description,
            }
        if found:
            source["responses"][status]["links"] = found
