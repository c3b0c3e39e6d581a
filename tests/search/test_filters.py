"""The filter grammar: parsing (hand-written expectations), errors, validation and the store's SQL."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.search.filters import Filter, FilterError, UnknownColumn, check_filters, parse_filter, where_filters

from fakes import vector_catalog


@pytest.mark.parametrize("text, expected", [
    ("price<50", [Filter("price", "<", (50.0,))]),
    ("price <= 49.5", [Filter("price", "<=", (49.5,))]),
    ("price>1e2", [Filter("price", ">", (100.0,))]),
    ("price>=-3", [Filter("price", ">=", (-3.0,))]),
    ("20<=price<=80", [Filter("price", ">=", (20.0,)), Filter("price", "<=", (80.0,))]),
    ("0 < price < .5", [Filter("price", ">", (0.0,)), Filter("price", "<", (0.5,))]),
    ("colour=red", [Filter("colour", "=", ("red",))]),
    ("colour == red", [Filter("colour", "=", ("red",))]),
    ("colour!=red", [Filter("colour", "!=", ("red",))]),
    ("colour in red, blue", [Filter("colour", "in", ("red", "blue"))]),
    ("size NOT IN XS,XXL", [Filter("size", "not in", ("XS", "XXL"))]),
    ("brand exists", [Filter("brand", "exists")]),
    ("brand missing", [Filter("brand", "missing")]),
    ("product_id=p-1#2", [Filter("product_id", "=", ("p-1#2",))]),
])
def test_parse(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize("text, words", [
    ("price<cheap", "needs a number"),
    ("price<", "needs a number"),
    ("80<=price<=20", "lower bound 80 is above"),
    ("colour in red,,blue", "empty value"),
    ("", "empty filter"),
    ("just words", "cannot read"),
    ("20<=price", "cannot read"),
])
def test_parse_errors_say_what_is_wrong(text, words):
    with pytest.raises(FilterError, match=words):
        parse_filter(text)


def test_str_round_trips():
    for text in ("price<50", "price>=20.5", "colour=red", "colour in red,blue", "brand missing", "size not in S,M"):
        (f,) = parse_filter(text)
        assert parse_filter(str(f)) == [f]


def test_check_filters_lists_columns():
    columns, numeric = ["id", "label", "path", "colour", "price"], ["price"]
    check_filters(parse_filter("10<price<20") + parse_filter("colour!=red"), columns, numeric)
    with pytest.raises(UnknownColumn, match="columns are: id, label, path, colour, price"):
        check_filters(parse_filter("weight<3"), columns, numeric)
    with pytest.raises(FilterError, match="numeric columns are: price"):
        check_filters(parse_filter("colour<3"), columns, numeric)


def test_where_dict_becomes_in_filters():
    assert where_filters({"label": "a", "colour": ["red", 2]}) == [Filter("label", "in", ("a",)),
                                                                   Filter("colour", "in", ("red", "2"))]


@pytest.fixture
def shop(tmp_path):
    """Six items: price as CSV text, JSON numbers or missing; colour text or empty."""
    meta = [{"price": "10", "colour": "red"}, {"price": 25.5, "colour": "blue"}, {"price": "80", "colour": ""},
            {"colour": "red"}, {"price": "100.0", "colour": "green", "brand": "acme"}, {"price": 40}]
    vectors = np.eye(6, dtype=np.float32)
    return vector_catalog(tmp_path, "shop", vectors, ["a"] * 6, metadata=meta)


def _ids(cat, *clauses):
    found = sorted(int(i.id.split("-")[1]) for i in cat.items(filters=clauses))
    assert cat.count(filters=clauses) == len(found)
    return found


def test_store_sql_semantics(shop):
    assert shop.numeric_columns() == ["price"]
    assert _ids(shop, "price<40") == [0, 1]
    assert _ids(shop, "price<=40") == [0, 1, 5]
    assert _ids(shop, "20<=price<=80") == [1, 2, 5]
    assert _ids(shop, "price>=100") == [4]
    assert _ids(shop, "price=100") == [4]                 # numeric equality matches "100.0"
    assert _ids(shop, "colour=red") == [0, 3]
    assert _ids(shop, "colour in red,green") == [0, 3, 4]
    assert _ids(shop, "colour!=red") == [1, 2, 4, 5]      # no colour counts as "not red"
    assert _ids(shop, "colour not in red,blue") == [2, 4, 5]
    assert _ids(shop, "colour missing") == [2, 5]         # empty string and absent
    assert _ids(shop, "colour exists") == [0, 1, 3, 4]
    assert _ids(shop, "brand exists") == [4]
    assert _ids(shop, "price missing") == [3]
    assert _ids(shop, "price<50", "colour=red") == [0]


def test_catalog_validation(shop):
    with pytest.raises(FilterError, match="numeric columns are: price"):
        shop.check_filters(parse_filter("colour>1"))
    with pytest.raises(UnknownColumn, match="brand, colour, price"):
        shop.check_filters(parse_filter("size<3"))


@pytest.mark.parametrize("text", ["12", "-3.5", "+7", ".5", "5.", "1e3", "1E-3", " 42 ", "2025-01-01", "1-2",
                                  "e5", "1.2.3", "abc", "12abc", "--5", "5e+2", "0x10", "1,5"])
def test_sql_numbers_agree_with_to_number(tmp_path, text):
    from lookalike.data.store import to_number

    cat = vector_catalog(tmp_path, "n", np.eye(2, dtype=np.float32), ["a", "a"],
                         metadata=[{"v": text}, {"v": "1"}])
    assert ("v" in cat.numeric_columns()) == (to_number(text) is not None)
