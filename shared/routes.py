"""The app's routes, those of included routers too, whatever the FastAPI version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fastapi.routing
from starlette.types import Scope


def every_route(app: Any) -> Iterator[Any]:
    """Every route of the app, as objects with `path_format`, `path_regex`, `methods` and (API
    routes) `dependant`, `responses`, `include_in_schema`. FastAPI ≥ 0.150 keeps included
    routers as such (a context stands for each of their routes); earlier ones copy the routes."""
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """The methods some route of the app takes on the request's path (for `Allow`)."""
    path = scope.get("path", "")
    methods: set[str] = set()
    for route in every_route(app):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)
