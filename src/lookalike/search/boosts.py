"""Business rules applied after retrieval: boosts, recency decay, pins and burials.

The score of a hit is its visual score plus one term per rule::

    score = visual + Σ_b w_b · [item matches condition b] + w_r · 2^(-age_days / half_life_days)

* a **boost** ``CONDITION:WEIGHT`` adds ``WEIGHT`` (negative to demote) to every item matching
  ``CONDITION``, any clause of the filter grammar (:mod:`lookalike.search.filters`), e.g.
  ``in_stock=1:+0.05``, ``price<20:+0.02``, ``brand missing:-0.1``;
* **recency** ``COLUMN:HALF_LIFE_DAYS:WEIGHT`` adds ``WEIGHT`` for an item dated now (or later),
  half of it at one half-life, a quarter at two …; the column holds ISO dates (``2024-05-01``,
  ``2024-05-01T10:00:00Z``) or Unix seconds; an item without a readable date gets 0;
* **pins** (item ids, in order) come first whenever they pass the filters, whatever their score;
  **buried** ids come after every other hit (so they show only when nothing else is left).

Hits are then ordered by score (ties: higher visual score, then id). Each hit's ``score_parts``
holds ``visual`` and one entry per rule that applied to it (``boost:in_stock=1``,
``recency:added``, ``pin``, ``bury``). The rules reorder a deeper candidate list (see
:func:`lookalike.search.pipeline.candidate_depth`); :meth:`Rules.max_gain` bounds what an item
outside the list could gain, which is how the pipeline knows its top k is exact.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Mapping, Sequence

from lookalike.search.filters import Filter, FilterError, parse_filter
from lookalike.search.results import SearchResult

_WEIGHT = re.compile(r"^(.*\S)\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_HALF_LIFE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(d|days?|h|hours?|w|weeks?)?\s*$", re.IGNORECASE)
_UNIT_DAYS = {"h": 1 / 24, "d": 1.0, "w": 7.0}
MAX_WEIGHT = 10.0   # scores live in [-1, 1] (cosine); a larger boost is a typo, not a rule


@dataclass(frozen=True)
class Boost:
    """``weight`` added to the score of items matching every filter of ``condition`` (its text ``name``)."""

    name: str
    condition: tuple[Filter, ...]
    weight: float

    @property
    def part(self) -> str:
        return f"boost:{self.name}"


@dataclass(frozen=True)
class Recency:
    """``weight · 2^(-age_days / half_life_days)`` from the date in metadata column ``column``."""

    column: str
    half_life_days: float
    weight: float

    @property
    def part(self) -> str:
        return f"recency:{self.column}"

    def term(self, value, now: datetime) -> float:
        """The recency term for one metadata value (0.0 when it holds no readable date); a date in
        the future counts as age 0."""
        when = parse_date(value)
        if when is None:
            return 0.0
        age_days = max(0.0, (now - when).total_seconds() / 86400.0)
        return self.weight * 0.5 ** (age_days / self.half_life_days)


@dataclass(frozen=True)
class Rules:
    """All business rules of one search; the empty default changes nothing."""

    boosts: tuple[Boost, ...] = ()
    recency: Recency | None = None
    pin: tuple[str, ...] = ()
    bury: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.boosts or self.recency or self.pin or self.bury)

    def max_gain(self) -> float:
        """The most any item can add to its visual score (positive weights only)."""
        gain = sum(b.weight for b in self.boosts if b.weight > 0)
        return gain + (max(self.recency.weight, 0.0) if self.recency else 0.0)

    def filters(self) -> list[Filter]:
        return [f for b in self.boosts for f in b.condition]


def parse_boost(text: str) -> Boost:
    """``"in_stock=1:+0.05"`` -> Boost("in_stock=1", (Filter("in_stock", "=", ("1",)),), 0.05).
    FilterError for a missing or out-of-range weight or a condition the grammar cannot read."""
    m = _WEIGHT.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise FilterError(f"boost {text!r} must look like CONDITION:WEIGHT, e.g. in_stock=1:+0.05 or price<20:0.02")
    weight = float(m.group(2))
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
        raise FilterError(f"boost {text!r}: the weight must be a number between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    condition = m.group(1).strip()
    return Boost(condition, tuple(parse_filter(condition)), weight)


def parse_recency(text: str) -> Recency:
    """``"added:30d:0.1"`` (column, half-life with unit h/d/w — days when none — and weight) -> Recency.
    FilterError when a part is missing or not a positive half-life / finite weight."""
    parts = [p.strip() for p in text.split(":")] if isinstance(text, str) else []
    if len(parts) != 3 or not parts[0]:
        raise FilterError(f"recency {text!r} must look like COLUMN:HALF_LIFE:WEIGHT, e.g. added:30d:0.1")
    m = _HALF_LIFE.match(parts[1])
    if not m or float(m.group(1)) <= 0:
        raise FilterError(f"recency {text!r}: half-life must be a positive number of days (30d, 12h, 2w)")
    unit = (m.group(2) or "d")[0].lower()
    try:
        weight = float(parts[2])
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
        raise FilterError(f"recency {text!r}: the weight must be a number between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    return Recency(parts[0], float(m.group(1)) * _UNIT_DAYS[unit], weight)


def make_rules(boosts: Sequence[str | Boost] = (), recency: str | Recency | None = None,
               pin: Sequence[str] = (), bury: Sequence[str] = ()) -> Rules:
    """Rules from their texts (CLI / API) or parsed parts; FilterError as the parsers."""
    pin, bury = tuple(dict.fromkeys(pin or ())), tuple(dict.fromkeys(bury or ()))
    if set(pin) & set(bury):
        raise FilterError(f"items both pinned and buried: {', '.join(sorted(set(pin) & set(bury)))}")
    return Rules(boosts=tuple(b if isinstance(b, Boost) else parse_boost(b) for b in boosts or ()),
                 recency=recency if isinstance(recency, Recency) or recency is None else parse_recency(recency),
                 pin=pin, bury=bury)


def parse_date(value) -> datetime | None:
    """An aware UTC datetime from an ISO date/datetime string or Unix seconds; None otherwise."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or re.fullmatch(r"\s*[-+]?\d+(\.\d+)?\s*", str(value)):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip().replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def apply_rules(hits: Sequence[SearchResult], rules: Rules, matches: Mapping[str, set[str]],
                now: datetime | None = None) -> list[SearchResult]:
    """Stage 3 of the pipeline: each hit's ``score_parts`` (``visual`` = its index score, plus every
    rule term that applies) and ``score`` (their sum), then the order of the module docstring.
    ``matches`` maps each boost's ``name`` to the ids matching its condition. Pure: new objects,
    ranks renumbered from 1."""
    now = now or datetime.now(timezone.utc)
    pin_order = {item_id: i for i, item_id in enumerate(rules.pin)}
    buried = set(rules.bury)
    out = []
    for hit in hits:
        visual = hit.score_parts.get("visual", hit.score)
        parts = {"visual": visual}
        for boost in rules.boosts:
            if hit.id in matches.get(boost.name, ()):
                parts[boost.part] = parts.get(boost.part, 0.0) + boost.weight
        if rules.recency is not None:
            term = rules.recency.term(hit.metadata.get(rules.recency.column), now)
            if term:
                parts[rules.recency.part] = term
        if hit.id in pin_order:
            parts["pin"] = 1.0
        if hit.id in buried:
            parts["bury"] = 1.0
        out.append(replace(hit, score=float(sum(v for k, v in parts.items() if k not in ("pin", "bury"))),
                           score_parts=parts))

    def order(h: SearchResult):
        return (h.id not in pin_order, pin_order.get(h.id, 0), h.id in buried, -h.score,
                -h.score_parts["visual"], h.id)

    out.sort(key=order)
    return [replace(h, rank=i + 1) for i, h in enumerate(out)]
