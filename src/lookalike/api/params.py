"""Unknown query parameters and form fields are a 422, never silently ignored.

FastAPI validates the parameters a route declares and drops every other one. A misspelt or
misplaced option then changes nothing and still answers 200: ``POST /api/search/image`` with the
form field ``filters`` (the JSON body's spelling; the form's is ``filter``) or with ``?k=3`` in the
query string (a form field) returned 12 unfiltered hits. :func:`reject_unknown_parameters`, a
dependency of every API route, answers such a request with 422 ``invalid_parameters`` naming the
unknown names and the closest known one. JSON bodies get the same from ``extra="forbid"``
(:class:`lookalike.api.schemas.RequestBody`).
"""
from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_ALLOWED: dict[int, tuple[frozenset[str], frozenset[str]]] = {}


def _allowed(route) -> tuple[frozenset[str], frozenset[str]]:
    """(query parameter names, form field names) ``route`` declares, its dependencies' included."""
    key = id(route)
    if key not in _ALLOWED:
        query: set[str] = set()
        form: set[str] = set()
        todo = [route.dependant]
        while todo:   # the route's own parameters and those of its dependencies, recursively
            dependant = todo.pop()
            query.update(p.alias for p in dependant.query_params)
            form.update(p.alias for p in dependant.body_params)
            todo += dependant.dependencies
        _ALLOWED[key] = (frozenset(query), frozenset(form))
    return _ALLOWED[key]


async def reject_unknown_parameters(request: Request) -> None:
    """Raise a 422 (as FastAPI's own validation errors) when the query string or the form holds a
    name the matched route does not declare."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    query, form = _allowed(route)
    errors = [_unknown("query", name, query) for name in dict.fromkeys(request.query_params) if name not in query]
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if form and content_type in _FORM_TYPES:
        fields = await request.form()   # Starlette caches the parsed form: the route reads the same one
        errors += [_unknown("body", name, form) for name in dict.fromkeys(fields) if name not in form]
    if errors:
        raise RequestValidationError(errors)


def _unknown(where: str, name: str, known: frozenset[str]) -> dict:
    return {"type": "unknown_parameter", "loc": (where, name), "msg": "unknown parameter",
            "known": sorted(known), "input": None}
