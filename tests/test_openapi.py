"""The OpenAPI document says what the code checks: a valid OpenAPI 3.1 document, every
operation with every error it may answer (in the error shape), its auth, and the event envelope
type by type, as strict as `parse_envelope` and no stricter."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from services.runtime import Runtime
from shared.events import (
    JSON_CONTENT_TYPE,
    JSON_CONTENT_TYPE_SCHEMA_PATTERN,
    EventLimits,
    IncomingEvent,
    parse_envelope,
)
from shared.openapi import api_routes
from shared.settings import Settings
from tests.test_auth_matrix import ROUTES
from tests.test_hostile_input import envelopes, materialize

SETTINGS = Settings(_env_file=None)
APP = Runtime(SETTINGS).create_app(manage_lifecycle=False)
DOCUMENT = APP.openapi()
ERROR = {"$ref": "#/components/schemas/Error"}


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
    ]


def test_the_document_is_valid_openapi_3_1():
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT)


async def test_the_served_document_is_this_one(system):
    response = await system.client.get("/openapi.json")
    assert response.status_code == 200
    served = response.json()
    # the test system's settings differ from the defaults only where the document does not
    # depend on them; the operations and their answers are the same
    assert served["paths"].keys() == DOCUMENT["paths"].keys()
    assert served["components"]["schemas"].keys() == DOCUMENT["components"]["schemas"].keys()


def test_every_api_route_is_documented_and_nothing_else():
    documented = {(m, p) for m, p, _ in operations()}
    routes = {
        (method, route.path_format)
        for route in api_routes(APP)
        if route.include_in_schema
        for method in route.methods
    }
    assert documented == routes


def _error_schema(response: dict[str, Any]) -> dict[str, Any]:
    return response["content"]["application/json"]["schema"]


def test_every_error_answer_is_documented_in_the_error_shape():
    for method, path, operation in operations():
        responses = operation["responses"]
        errors = {int(s): r for s, r in responses.items() if int(s) >= 400}
        assert 422 in errors, (method, path)  # a NUL in the path or query, for every route
        for status, response in errors.items():
            schema = _error_schema(response)
            assert schema == ERROR or schema["allOf"][0] == ERROR, (method, path, status)
        if "requestBody" in operation:
            assert {400, 413} <= errors.keys(), (method, path)


def test_every_operation_that_needs_a_key_says_which_and_documents_401_403_429_503():
    needs = {(m, p): scope for (m, p), scope in ROUTES.items() if scope in SCOPES}
    for method, path, operation in operations():
        scope = needs.get((method, path))
        assert operation.get("x-required-scope") == scope, (method, path)
        if scope is None:
            assert "security" not in operation, (method, path)
            continue
        assert operation["security"] == [{"apiKey": []}]
        assert {"401", "403", "429", "503"} <= operation["responses"].keys(), (method, path)
        headers = operation["responses"]["429"]["headers"]
        assert "Retry-After" in headers
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert DOCUMENT["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


SCOPES = {"events:write", "read", "admin"}


def test_error_strings_are_listed_per_status():
    settle = DOCUMENT["paths"]["/v1/admin/months/{month}/settle"]["post"]["responses"]
    conflict = _error_schema(settle["409"])["allOf"][1]["properties"]["error"]["enum"]
    assert {"conflict", "month_not_over", "not_caught_up"} <= set(conflict)
    events = DOCUMENT["paths"]["/v1/events"]["post"]["responses"]
    assert _error_schema(events["413"])["allOf"][1]["properties"]["error"]["enum"] == [
        "payload_too_large"
    ]


def test_pagination_is_documented_on_list_endpoints():
    for path, default_limit in [
        ("/v1/admin/applications", 50),
        ("/v1/rewards", 50),
        ("/v1/rankings/{month}", 50),
        ("/v1/featured/{week}", 20),
    ]:
        operation = DOCUMENT["paths"][path]["get"]
        parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
        assert parameters["limit"]["minimum"] == 1 and parameters["limit"]["maximum"] >= 100
        assert parameters["limit"]["default"] == default_limit
        assert parameters["offset"]["minimum"] == 0
        page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        shape = DOCUMENT["components"]["schemas"][page.rsplit("/", 1)[1]]
        assert {"limit", "offset", "total"} <= set(shape["required"]), path


def test_every_request_string_refuses_nul():
    for method, path, operation in operations():
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            if parameter["in"] in ("path", "query") and schema.get("type") == "string":
                assert "pattern" in schema or "enum" in schema, (method, path, parameter)
                assert not re.search(schema["pattern"], "a\x00b"), (method, path, parameter)


def test_free_text_that_needs_a_visible_character_still_refuses_nul():
    # found by the stateful fuzzing: `{"reason": "\u0000"}` matched the schema, got a 422
    for body in ("RejectBody", "SettingsChange"):
        reason = DOCUMENT["components"]["schemas"][body]["properties"]["reason"]
        assert not EcmaValidator(reason).is_valid("why\x00"), body
        assert EcmaValidator(reason).is_valid("why"), body


# --- the event envelope: the schema agrees with parse_envelope ------------------------------

REQUEST = DOCUMENT["paths"]["/v1/events"]["post"]["requestBody"]["content"]
RESOLVER_ROOT = {"components": DOCUMENT["components"]}


def ecma_search(pattern: str, text: str) -> bool:
    """A JSON Schema `pattern` as ECMA-262 reads it: `$` is the very end (Python's `$` also
    matches before a final newline)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, text) is not None


def _pattern(validator, pattern, instance, schema):
    if isinstance(instance, str) and not ecma_search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})


def _validator(ref: str) -> jsonschema.protocols.Validator:
    return EcmaValidator({"$ref": ref, **RESOLVER_ROOT})


EVENT = _validator("#/components/schemas/Event")
BATCH = _validator("#/components/schemas/EventBatch")


def test_the_three_content_types_take_an_event_a_batch_or_either():
    assert REQUEST["application/cloudevents+json"]["schema"] == {
        "$ref": "#/components/schemas/Event"
    }
    assert REQUEST["application/cloudevents-batch+json"]["schema"] == {
        "$ref": "#/components/schemas/EventBatch"
    }
    assert len(REQUEST["application/json"]["schema"]["oneOf"]) == 2
    batch = DOCUMENT["components"]["schemas"]["EventBatch"]
    assert (batch["minItems"], batch["maxItems"]) == (1, SETTINGS.max_batch_events)
    event = DOCUMENT["components"]["schemas"]["Event"]
    assert event["discriminator"]["propertyName"] == "type"
    assert len(event["oneOf"]) == 7


def as_received(document: Any) -> Any | None:
    """The document as the server would parse it from a client's JSON, or None when it cannot
    travel as JSON at all (NaN, a lone surrogate: a 400 before any validation)."""
    try:
        body = json.dumps(document, allow_nan=False).encode()
        return orjson.loads(body)
    except (ValueError, TypeError, UnicodeEncodeError, orjson.JSONDecodeError):
        return None


# What the schema can only say in words: the time bounds (relative to the clock, or a calendar
# date that does not exist) and the size of an event as compact JSON.
def _said_in_words(error) -> bool:
    return error.loc == ["time"] or (error.loc == [] and "bytes as JSON" in error.msg)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(envelope=envelopes())
def test_the_event_schema_accepts_exactly_what_parse_envelope_accepts(envelope):
    received = as_received(materialize(envelope))
    if received is None:
        return
    parsed = parse_envelope(received, "key-name", EventLimits.of(SETTINGS), now=datetime.now(UTC))
    schema_errors = [e.message for e in EVENT.iter_errors(received)]
    if isinstance(parsed, IncomingEvent):
        assert schema_errors == [], schema_errors
    elif not schema_errors:
        assert all(_said_in_words(e) for e in parsed), parsed


def test_a_valid_event_of_every_type_validates_and_is_accepted():
    from tests.test_hostile_input import VALID_DATA

    for event_type, data in VALID_DATA.items():
        event = {"id": "e-1", "type": event_type, "time": "2026-11-03T10:00:00+08:00"}
        event["data"] = data
        EVENT.validate(event)
        assert isinstance(parse_envelope(event, "k"), IncomingEvent)
        BATCH.validate([event])


content_types = st.one_of(
    st.from_regex(JSON_CONTENT_TYPE_SCHEMA_PATTERN),
    st.from_regex(r"\A[Aa]pplication/[a-z+.]{0,8}[Jj]son[ ;\t\n=a-z\x00-\x1f]{0,6}\Z"),
    st.text(max_size=30),
)


@given(content_type=content_types)
def test_the_datacontenttype_pattern_is_the_one_ingest_uses(content_type):
    in_schema = ecma_search(JSON_CONTENT_TYPE_SCHEMA_PATTERN, content_type)
    assert in_schema == (JSON_CONTENT_TYPE.fullmatch(content_type) is not None)


async def test_a_wrong_method_names_every_method_of_the_path_in_allow(system):
    for path, allowed in [("/v1/admin/program-settings", "GET, POST"), ("/v1/events", "POST")]:
        response = await system.client.delete(path, headers={"Authorization": "Bearer x"})
        assert response.status_code == 405
        assert response.json()["error"] == "method_not_allowed"
        assert response.headers["allow"] == allowed
        documented = {m.upper() for m in DOCUMENT["paths"][path]}
        assert set(allowed.split(", ")) == documented


def _schema_at(schema: dict[str, Any], pointer: list[str]) -> list[dict[str, Any]]:
    """The schemas a JSON pointer reaches in every document `schema` describes (in each branch
    of a `oneOf`); AssertionError where some document need not hold it."""
    if "$ref" in schema:
        return _schema_at(
            DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/")[-1]], pointer
        )
    if "oneOf" in schema:
        return [s for branch in schema["oneOf"] for s in _schema_at(branch, pointer)]
    if not pointer:
        return [schema]
    token, rest = pointer[0], pointer[1:]
    if schema.get("type") == "array":
        assert token.isdigit() and schema.get("minItems", 0) > int(token), (schema, token)
        return _schema_at(schema["items"], rest)
    assert token in schema.get("required", []), (schema, token)
    return _schema_at(schema["properties"][token], rest)


def _types(schema: dict[str, Any]) -> set[str]:
    if "type" in schema:
        return {schema["type"]}
    return {t for s in schema.get("anyOf", []) for t in _types(s)}


def _types_at(media: dict[str, Any], pointer: str) -> set[str]:
    try:
        return {t for s in _schema_at(media["schema"], pointer.split("/")[1:]) for t in _types(s)}
    except AssertionError:
        return set()


def test_links_lead_to_real_operations_with_values_every_answer_or_request_holds():
    by_id = {op["operationId"]: (m, p, op) for m, p, op in operations()}
    followed = set()
    for method, path, operation in operations():
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                _, target_path, target = by_id[link["operationId"]]
                declared = {f"{p['in']}.{p['name']}": p for p in target.get("parameters", [])}
                for parameter, expression in link["parameters"].items():
                    source, pointer = expression.split("#")
                    assert source in ("$request.body", "$response.body"), expression
                    body = operation["requestBody"] if source == "$request.body" else response
                    # every request (of one of its content types) or answer holds the value,
                    # of the type the parameter takes
                    takes = _types(declared[parameter]["schema"])
                    assert any(
                        types and types <= takes
                        for types in (_types_at(m, pointer) for m in body["content"].values())
                    ), (name, expression)
                followed.add((method, path, status, name, target_path))
    assert {
        ("POST", "/v1/applications", "201", "GetApplication", "/v1/applications/{application_id}"),
        (
            "POST",
            "/v1/applications",
            "201",
            "ApproveApplication",
            "/v1/admin/applications/{application_id}/approve",
        ),
        (
            "POST",
            "/v1/applications",
            "201",
            "RejectApplication",
            "/v1/admin/applications/{application_id}/reject",
        ),
        (
            "POST",
            "/v1/events",
            "202",
            "GetCreatorMonth",
            "/v1/creators/{creator_id}/months/{month}",
        ),
        ("POST", "/v1/events", "202", "GetCreatorRewards", "/v1/rewards"),
    } <= followed
