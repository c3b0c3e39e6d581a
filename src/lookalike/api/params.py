"""Unknown query parameters and form fields are a 422, never silently ignored.

FastAPI validates the parameters a route declares and drops every other one. A misspelt or
misplaced option then changes nothing and still answers 200: ``POST /api/search/image`` with the
form field ``filters`` (the JSON body's spelling; the form's is ``filter``) or with ``?k=3`` in the
query string (a form field) returned 12 unfiltered hits. :func:`reject_unknown_parameters`, a
dependency of every API route, answers such a request with 422 ``invalid_parameters`` naming the
unknown names and the closest known one; a name given twice that takes one value (``?k=3&k=50``,
two ``file`` parts: FastAPI kept one of them) is a 422 too. JSON bodies get the same from
``extra="forbid"`` (:class:`lookalike.api.schemas.RequestBody`).
"""
from __future__ import annotations

from types import UnionType
from typing import Union, get_args, get_origin

from fastapi import Request
from fastapi.exceptions import RequestValidationError

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_SEQUENCES = (list, tuple, set, frozenset)
_ALLOWED: dict[int, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {}


def _allowed(route) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(query parameter names, form field names, the names of either that take a list) ``route``
    declares, its dependencies' included."""
    key = id(route)
    if key not in _ALLOWED:
        query: set[str] = set()
        form: set[str] = set()
        lists: set[str] = set()
        todo = [route.dependant]
        while todo:   # the route's own parameters and those of its dependencies, recursively
            dependant = todo.pop()
            query.update(p.alias for p in dependant.query_params)
            form.update(p.alias for p in dependant.body_params)
            lists.update(p.alias for p in [*dependant.query_params, *dependant.body_params] if _is_list(p))
            todo += dependant.dependencies
        _ALLOWED[key] = (frozenset(query), frozenset(form), frozenset(lists))
    return _ALLOWED[key]


def _is_list(param) -> bool:
    annotation = getattr(getattr(param, "field_info", None), "annotation", None)
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return any((get_origin(a) or a) in _SEQUENCES for a in options)


async def reject_unknown_parameters(request: Request) -> None:
    """Raise a 422 (as FastAPI's own validation errors) when the query string or the form holds a
    name the matched route does not declare."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    query, form, lists = _allowed(route)
    errors = _check("query", request.query_params, query, lists)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if form and content_type in _FORM_TYPES:
        fields = await request.form()   # Starlette caches the parsed form: the route reads the same one
        errors += _check("body", fields, form, lists)
    if errors:
        raise RequestValidationError(errors)


def _check(where: str, given, known: frozenset[str], lists: frozenset[str]) -> list[dict]:
    """Errors for names in ``given`` (a multi-dict) that are unknown, or repeated though they take one
    value (``?k=3&k=50``, two ``file`` parts: FastAPI kept one of them without a word)."""
    errors = []
    for name in dict.fromkeys(given.keys()):
        if name not in known:
            errors.append(_unknown(where, name, known))
        elif name not in lists and len(given.getlist(name)) > 1:
            errors.append({"type": "repeated_parameter", "loc": (where, name), "input": None,
                           "msg": f"given {len(given.getlist(name))} times; it takes one value"})
    return errors


def _unknown(where: str, name: str, known: frozenset[str]) -> dict:
    return {"type": "unknown_parameter", "loc": (where, name), "msg": "unknown parameter",
            "known": sorted(known), "input": None}
