"""Boost arithmetic, recency decay, pins and burials, by hand-computed expectations."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lookalike.search.boosts import Rules, apply_rules, make_rules, parse_boost, parse_date, parse_recency
from lookalike.search.filters import Filter, FilterError
from lookalike.search.results import SearchResult

NOW = datetime(2025, 1, 31, tzinfo=timezone.utc)


def hit(i: str, visual: float, **meta) -> SearchResult:
    return SearchResult(0, i, visual, 1 - visual, None, None, meta, score_parts={"visual": visual})


def test_parse_boost():
    b = parse_boost("in_stock=1:+0.05")
    assert (b.name, b.condition, b.weight, b.part) == ("in_stock=1", (Filter("in_stock", "=", ("1",)),), 0.05,
                                                        "boost:in_stock=1")
    assert parse_boost("20<=price<=80 : -0.1").condition == (Filter("price", ">=", (20.0,)), Filter("price", "<=", (80.0,)))
    for bad in ("in_stock=1", "in_stock=1:lots", "in_stock=1:50", ":0.1"):
        with pytest.raises(FilterError):
            parse_boost(bad)


def test_parse_recency_units():
    assert parse_recency("added:30d:0.1").half_life_days == 30
    assert parse_recency("added:12h:0.1").half_life_days == 0.5
    assert parse_recency("added:2w:-0.2").half_life_days == 14
    assert parse_recency("added:7:0.1").half_life_days == 7
    for bad in ("added:0d:0.1", "added:30d", "added:soon:0.1", "added:30d:x"):
        with pytest.raises(FilterError):
            parse_recency(bad)


def test_parse_date():
    assert parse_date("2025-01-01") == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert parse_date("2025-01-01T12:00:00Z") == datetime(2025, 1, 1, 12, tzinfo=timezone.utc)
    assert parse_date(86400) == datetime(1970, 1, 2, tzinfo=timezone.utc)
    assert parse_date("yesterday") is None and parse_date(None) is None and parse_date("") is None


def test_boost_arithmetic_and_order():
    hits = [hit("a", 0.90), hit("b", 0.80), hit("c", 0.70), hit("d", 0.60)]
    rules = make_rules(["in_stock=1:+0.15", "brand missing:-0.25"])
    matches = {"in_stock=1": {"c", "d"}, "brand missing": {"a"}}
    ranked = apply_rules(hits, rules, matches, NOW)
    # a 0.90-0.25 = 0.65, b 0.80, c 0.70+0.15 = 0.85, d 0.60+0.15 = 0.75
    assert [h.id for h in ranked] == ["c", "b", "d", "a"]
    assert [h.rank for h in ranked] == [1, 2, 3, 4]
    assert [round(h.score, 6) for h in ranked] == [0.85, 0.80, 0.75, 0.65]
    assert ranked[0].score_parts == {"visual": 0.70, "boost:in_stock=1": 0.15}
    assert ranked[3].score_parts == {"visual": 0.90, "boost:brand missing": -0.25}
    assert ranked[1].score_parts == {"visual": 0.80}
    assert hits[0].score == 0.90  # pure: inputs untouched
    assert rules.max_gain() == pytest.approx(0.15)


def test_recency_halves_per_half_life():
    rules = make_rules(recency="added:10d:0.2")
    hits = [hit("old", 0.80, added="2025-01-01"),    # 30 days: 0.2 / 8 = 0.025
            hit("new", 0.70, added="2025-01-21"),    # 10 days: 0.1
            hit("future", 0.50, added="2025-03-01"),  # counts as today: 0.2
            hit("undated", 0.75)]
    ranked = apply_rules(hits, rules, {}, NOW)
    assert [h.id for h in ranked] == ["old", "new", "undated", "future"]
    scores = {h.id: h.score for h in ranked}
    assert scores["old"] == pytest.approx(0.825) and scores["new"] == pytest.approx(0.8)
    assert scores["future"] == pytest.approx(0.7) and scores["undated"] == 0.75
    assert "recency:added" not in next(h for h in ranked if h.id == "undated").score_parts


def test_pins_first_in_order_buried_last():
    hits = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.7), hit("d", 0.6)]
    rules = make_rules(pin=["d", "c"], bury=["a"])
    ranked = apply_rules(hits, rules, {}, NOW)
    assert [h.id for h in ranked] == ["d", "c", "b", "a"]
    assert ranked[0].score_parts == {"visual": 0.6, "pin": 1.0} and ranked[0].score == 0.6
    assert ranked[3].score_parts == {"visual": 0.9, "bury": 1.0}
    with pytest.raises(FilterError, match="both pinned and buried"):
        make_rules(pin=["a"], bury=["a"])


def test_empty_rules_are_falsy():
    assert not Rules() and make_rules(boosts=["x=1:0.1"])
