"""SearchResult.to_dict: the one JSON rendering of a hit (CLI, API, shop / goes-with / cluster reports)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lookalike.search.results import FIELDS, SearchResult


def hit(**kw) -> SearchResult:
    return SearchResult(2, "sku-1", np.float32(0.123456789), np.float32(0.876543211), "shirt", "/img/1.jpg",
                        {"colour": "red"}, **kw)


def test_default_shape_says_only_what_is_set():
    plain = hit().to_dict()
    assert list(plain) == ["rank", "id", "score", "distance", "label", "metadata"]   # no path, no empty extras
    assert plain["score"] == 0.123457 and type(plain["score"]) is float and type(plain["rank"]) is int
    full = hit(score_parts={"visual": np.float32(0.1), "pin": 1.0}, group=["sku-2"], matched_variant="red",
               duplicates=["sku-9"], weak=True).to_dict()
    assert list(full) == [f for f in FIELDS if f != "path"]
    assert full["score_parts"] == {"visual": 0.1, "pin": 1.0} and full["weak"] is True
    json.dumps(full)                                     # numpy scalars never leak into JSON


def test_fields_pick_and_order_and_digits():
    h = hit()
    assert h.to_dict(("rank", "id", "score", "label", "path"), digits=4) == \
        {"rank": 2, "id": "sku-1", "score": 0.1235, "label": "shirt", "path": "/img/1.jpg"}
    exact = h.to_dict(("score", "group", "weak"), digits=None)
    assert list(exact) == ["score", "group", "weak"] and exact["group"] == [] and exact["weak"] is False
    assert exact["score"] == pytest.approx(0.123456789, abs=1e-7)
    rendered = h.to_dict(("metadata",))
    rendered["metadata"]["colour"] = "blue"              # a copy: the hit is unchanged
    assert h.metadata == {"colour": "red"}
    with pytest.raises(ValueError, match="unknown SearchResult fields"):
        h.to_dict(("rank", "price"))
