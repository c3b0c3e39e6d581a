"""One result per product: grouping order, group lists, variants (hand-computed)."""
from __future__ import annotations

from lookalike.search.grouping import complete_groups, group_hits, product_key
from lookalike.search.results import SearchResult


def hit(i: str, score: float, **meta) -> SearchResult:
    return SearchResult(0, i, score, 1 - score, "shirt", None, meta)


HITS = [hit("p1-a", 0.9, product_id="p1", colour="red"), hit("p2-a", 0.8, product_id="p2", colour="blue"),
        hit("p1-b", 0.7, product_id="p1", colour="navy"), hit("solo", 0.6, product_id=""),
        hit("p2-b", 0.5, product_id="p2", colour="green"), hit("p3-a", 0.4, product_id="p3")]


def test_group_keeps_best_hit_per_product_in_place():
    grouped = group_hits(HITS, "product_id")
    assert [(h.rank, h.id, h.group) for h in grouped] == [
        (1, "p1-a", ["p1-b"]), (2, "p2-a", ["p2-b"]), (3, "solo", []), (4, "p3-a", [])]
    assert [h.score for h in grouped] == [0.9, 0.8, 0.6, 0.4]
    assert HITS[0].group == []  # pure


def test_items_without_a_product_stand_alone():
    assert product_key(HITS[3], "product_id") == "item:solo"
    assert product_key(HITS[0], "product_id") == "value:p1"
    assert product_key(HITS[0], "label") == "value:shirt"


def test_variant_says_which_one_matched():
    grouped = group_hits(HITS[2:], "product_id", variant="colour")   # p1's navy image is its best here
    assert [(h.id, h.matched_variant) for h in grouped] == [("p1-b", "navy"), ("solo", None), ("p2-b", "green"),
                                                          ("p3-a", None)]


def test_complete_groups_adds_members_outside_the_candidates():
    grouped = group_hits(HITS, "product_id")
    done = complete_groups(grouped, "product_id", {"p1": ["p1-a", "p1-b", "p1-c"], "p3": ["p3-a", "p3-b"]})
    assert [h.group for h in done] == [["p1-b", "p1-c"], ["p2-b"], [], ["p3-b"]]
