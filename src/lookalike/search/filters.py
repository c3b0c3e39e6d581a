"""The filter grammar of search, evaluation and boosts, and its validation against a catalog.

::

    filter  = column op value                    price<50   colour=red   colour!=red   price>=20
            | number lt column lt number           20<=price<=80   0<price<1.5
            | column ["not"] "in" value {"," value}  colour in red,blue   size not in XS,XXL
            | column ("exists" | "missing")        brand exists   discount missing
    op      = "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
    lt      = "<" | "<="

A parsed clause is one or two :class:`Filter` (a range ``a<=x<=b`` is ``x>=a`` and ``x<=b``); every
filter of a search must hold (AND). Semantics (one implementation: the store's SQL,
:func:`lookalike.data.store.where_sql`):

* ``=`` / ``in`` compare as text (``colour=red``); a number also matches a numeric value
  (``size=40`` matches ``40``, ``40.0`` and ``"40"``);
* ``<`` ``<=`` ``>`` ``>=`` compare numbers: a column is numeric when every non-empty value is
  a JSON number or a string that parses as one (CSV cells are strings); items without a value
  never match a range;
* ``!=`` / ``not in`` match items whose value differs, *including* items without the column
  (what a shop means by "not red");
* ``missing`` = no value (absent, null or the empty string); ``exists`` = the opposite.

Validation (:func:`check_filters`) raises :class:`UnknownColumn` for a column no item has and
:class:`FilterError` (a ValueError) for a range on a text column; both messages list what exists.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, NamedTuple, Sequence

from lookalike.data.store import NUMBER_RE, to_number

OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in", "exists", "missing")
RANGE_OPS = ("<", "<=", ">", ">=")
_COL = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_NUM = NUMBER_RE
_BETWEEN = re.compile(rf"^\s*({_NUM})\s*(<=?)\s*({_COL})\s*(<=?)\s*({_NUM})\s*$")
_SET = re.compile(rf"^\s*({_COL})\s+(not\s+)?in\s+(.+?)\s*$", re.IGNORECASE)
_PRESENCE = re.compile(rf"^\s*({_COL})\s+(exists|missing)\s*$", re.IGNORECASE)
_COMPARE = re.compile(rf"^\s*({_COL})\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*$")
_FLIP = {"<": ">", "<=": ">="}


class FilterError(ValueError):
    """A filter that cannot be parsed, or a range on a column whose values are not all numbers."""


class UnknownColumn(ValueError):
    """A filter (``where``) or label column that no item of the catalog has; the message lists the
    columns it does have (``.column``, ``.known``). Raised by ``Catalog.check_columns``."""

    def __init__(self, column: str, known: Sequence[str]):
        self.column, self.known = column, list(known)
        super().__init__(f"unknown column {column!r}; this catalog's columns are: {', '.join(self.known)}")


class Filter(NamedTuple):
    """One condition: ``column``, ``op`` (one of :data:`OPS`) and ``values`` (strings for ``=``,
    ``!=``, ``in``, ``not in``; one float for a range op; empty for ``exists`` / ``missing``)."""

    column: str
    op: str
    values: tuple = ()

    def __str__(self) -> str:
        if self.op in ("exists", "missing"):
            return f"{self.column} {self.op}"
        if self.op in ("in", "not in"):
            return f"{self.column} {self.op} {','.join(self.values)}"
        value = self.values[0]
        return f"{self.column}{self.op}{_number_text(value) if isinstance(value, float) else value}"


def parse_filter(text: str) -> list[Filter]:
    """One clause of the grammar -> its filters (two for ``a<=x<=b``). FilterError says what is
    wrong and shows the forms, e.g. for ``price<cheap`` (not a number) or ``20<=price`` (half a range)."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("empty filter; " + _FORMS)
    if m := _BETWEEN.match(text):
        low, low_op, column, high_op, high = m.groups()
        lo, hi = float(low), float(high)
        if lo > hi:
            raise FilterError(f"filter {text!r}: the lower bound {low} is above the upper bound {high}")
        return [Filter(column, _FLIP[low_op], (lo,)), Filter(column, high_op, (hi,))]
    if m := _PRESENCE.match(text):
        return [Filter(m.group(1), m.group(2).lower())]
    if m := _SET.match(text):
        values = tuple(v.strip() for v in m.group(3).split(","))
        if not all(values):
            raise FilterError(f"filter {text!r}: empty value in the list (write {m.group(1)} in a,b,c)")
        return [Filter(m.group(1), "not in" if m.group(2) else "in", values)]
    if m := _COMPARE.match(text):
        column, op, value = m.groups()
        op = "=" if op == "==" else op
        if op in RANGE_OPS:
            number = to_number(value)
            if number is None:
                raise FilterError(f"filter {text!r}: {op} needs a number, not {value!r}")
            return [Filter(column, op, (number,))]
        return [Filter(column, op, (value,))]
    raise FilterError(f"cannot read filter {text!r}; " + _FORMS)


def parse_filters(texts: Iterable[str] | None) -> list[Filter]:
    """Every clause of ``texts`` parsed (all must hold); [] for None."""
    return [f for text in (texts or ()) for f in parse_filter(text)]


def where_filters(where: Mapping | None) -> list[Filter]:
    """The older ``where`` dict (column -> value, a list value = any of) as filters."""
    out = []
    for column, value in (where or {}).items():
        values = value if isinstance(value, (list, tuple, set)) else [value]
        out.append(Filter(str(column), "in", tuple(str(v) for v in values)))
    return out


def check_filters(filters: Iterable[Filter], columns: Sequence[str], numeric: Iterable[str]) -> None:
    """UnknownColumn for the first filter on a column not in ``columns``; FilterError for a range
    (``<`` ``<=`` ``>`` ``>=``) on a column not in ``numeric``, naming the numeric columns."""
    numeric = set(numeric)
    for f in filters:
        if f.column not in columns:
            raise UnknownColumn(f.column, columns)
        if f.op in RANGE_OPS and f.column not in numeric:
            names = ", ".join(c for c in columns if c in numeric) or "none"
            raise FilterError(f"filter {str(f)!r}: column {f.column!r} does not hold numbers only, so it has no "
                              f"range; this catalog's numeric columns are: {names}")


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


_FORMS = ("forms: price<50, 20<=price<=80, colour=red, colour!=red, colour in red,blue, "
          "colour not in red,blue, brand exists, brand missing")
