"""The fast filter path (data.store.ColumnArrays: metadata columns as numpy arrays per data
version) answers exactly what the SQLite path answers, for every operator of the filter grammar."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lookalike.data.store as store_module
from lookalike.data.store import NewItem, Store
from lookalike.search.filters import Filter

TEXTS = ["red", "blue", "", " ", "40", "40.0", "1e2", "-3.5", "2025-01-01", "Red", "é"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-50, 50), st.sampled_from([0.5, 40.0, -3.5, 100.0, 1e-3]),
                   st.sampled_from(TEXTS))
COLUMNS = ["colour", "price", "size"]
ITEM = st.fixed_dictionaries({}, optional={c: VALUES for c in COLUMNS})
OPERAND = st.one_of(st.sampled_from(TEXTS), st.integers(-50, 50).map(str), st.sampled_from(["0.5", "40", "100"]))
FILTER = st.one_of(
    st.tuples(st.sampled_from(COLUMNS + ["label", "id"]), st.sampled_from(["=", "!=", "in", "not in"]),
              st.lists(OPERAND, min_size=1, max_size=3).map(tuple)),
    st.tuples(st.sampled_from(COLUMNS), st.sampled_from(["exists", "missing"]), st.just(())),
    st.tuples(st.sampled_from(COLUMNS), st.sampled_from(["<", "<=", ">", ">="]),
              st.sampled_from([-10.0, 0.0, 0.5, 40.0, 60.0]).map(lambda v: (v,))),
)


def write(store: Store, metadata: list[dict]) -> None:
    items = [NewItem(f"item-{i}", f"/x/{i}.jpg", ["shoes", "bags", None][i % 3], meta, f"sha{i}", 8, 8)
             for i, meta in enumerate(metadata)]
    store.write_batch(items, np.zeros((len(items), 4), np.float32), "enc", "fp", "cosine")


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(store_module, "FAST_FILTER_MIN", 0)   # every catalog takes the array path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metadata=st.lists(ITEM, min_size=1, max_size=25),
       filters=st.lists(FILTER, min_size=1, max_size=3),
       where=st.one_of(st.none(), st.fixed_dictionaries({"colour": st.lists(st.sampled_from(TEXTS), max_size=2)})))
def test_array_path_equals_sql(tmp_path_factory, fast, metadata, filters, where):
    store = Store(tmp_path_factory.mktemp("store"))
    write(store, metadata)
    filters = [Filter(*f) for f in filters]
    for f in filters:
        if f.op in ("<", "<=", ">", ">=") and not store.is_numeric(f.column):
            return  # Catalog.check_filters refuses ranges on text columns before any search
    expected = store.rowids_where_sql(where, filters)
    assert store.rowids_where(where, filters).tolist() == expected.tolist()


def test_arrays_follow_writes(tmp_path, fast):
    store = Store(tmp_path)
    write(store, [{"colour": "red", "price": 10}, {"colour": "blue", "price": "30"}, {"price": 50}])
    cheap = [Filter("price", "<", (40.0,))]
    assert len(store.rowids_where(None, cheap)) == 2
    red = store.rowids_where({"colour": "red"})
    assert len(red) == 1
    write(store, [{"colour": "red", "price": 90}, {"colour": "red", "price": 10}])   # metadata edits
    assert len(store.rowids_where({"colour": "red"})) == 2
    assert store.rowids_where(None, cheap).tolist() == store.rowids_where_sql(None, cheap).tolist()
    store.remove(["item-1"])
    assert store.rowids_where({"colour": "red"}).tolist() == store.rowids_where_sql({"colour": "red"}).tolist()


def test_small_catalogs_stay_on_sqlite(tmp_path):
    store = Store(tmp_path)
    write(store, [{"colour": "red"}])
    assert not store._columns.worth_it()
    assert store.rowids_where({"colour": "red"}).tolist() == [1]
