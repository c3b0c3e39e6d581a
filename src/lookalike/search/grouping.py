"""One result per product (stage 4 of :mod:`lookalike.search.pipeline`).

A catalog's product column (``product_id`` from ingest, or any column: ``group_by``) says which
items are images or colour variants of one product. :func:`group_hits` keeps each product's
best-ranked hit and lists the product's other hits in its ``group``; ``k`` then counts products.
Items without a value in the column are products of their own. With a ``variant`` column (e.g.
``colour``) each kept hit also says which variant matched (``matched_variant``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

from lookalike.search.results import SearchResult

ITEM_FIELDS = ("id", "label", "path")


def column_value(hit: SearchResult | Any, column: str) -> str | None:
    """The text of ``column`` on a hit or store item (``id``, ``label``, ``path`` or a metadata
    key); None when it has no value (absent, null or empty)."""
    value = getattr(hit, column, None) if column in ITEM_FIELDS else hit.metadata.get(column)
    return None if value is None or value == "" else str(value)


def product_key(hit: SearchResult | Any, column: str) -> str:
    """The product a hit belongs to: its ``column`` value, or (no value) one of its own."""
    value = column_value(hit, column)
    return f"value:{value}" if value is not None else f"item:{hit.id}"


def group_hits(hits: Sequence[SearchResult], column: str, variant: str | None = None) -> list[SearchResult]:
    """``hits`` (best first) folded to one per product: the first hit of each product stays, at
    the place it had, with the ids of its product's later hits appended to ``group`` (in their
    order) and, when ``variant`` is given, ``matched_variant`` = its own ``variant`` value. Pure:
    new objects, ranks renumbered from 1."""
    kept: dict[str, SearchResult] = {}
    for hit in hits:
        key = product_key(hit, column)
        if key in kept:
            kept[key].group.append(hit.id)
        else:
            kept[key] = replace(hit, group=list(hit.group),
                                matched_variant=column_value(hit, variant) if variant else hit.matched_variant)
    return [replace(h, rank=i + 1) for i, h in enumerate(kept.values())]


def complete_groups(hits: Sequence[SearchResult], column: str,
                    members: Mapping[str, Sequence[str]]) -> list[SearchResult]:
    """Append to each hit's ``group`` the ids in ``members[its column value]`` (every item of
    the product, e.g. from the store) that are neither the hit nor already listed: images outside
    the candidate list are still shown as part of their product. Pure."""
    out = []
    for hit in hits:
        value = column_value(hit, column)
        listed = {hit.id, *hit.group}
        extra = [i for i in members.get(value, ()) if i not in listed] if value is not None else []
        out.append(replace(hit, group=[*hit.group, *extra]))
    return out
