"""Scale-out parity: every query feature gives the same top k through each index backend as through
exact faiss on the same catalog (issue #17). The reference is ``faiss`` ``kind="flat"`` (exact);
the backends under test are faiss HNSW (graph, filtered graph search) and Milvus (milvus-lite, one
database file shared by the session: tests/conftest.py ``milvus_db``), the latter also with its
Milvus limits shrunk so that every search takes the chunked ``id in [...]`` filter and the
``search_iterator`` paging it uses for big filters and deep candidate lists on a real deployment.

Compared per hit: id, rank, score (4 decimals), score parts, product group, matched variant,
folded duplicates and the weak flag — everything a shop shows.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import numpy as np
import pytest

from lookalike import Catalog
from lookalike.search.examples import Example

from fakes import vector_catalog

N, DIM = 240, 24
NOW = datetime(2024, 6, 1, tzinfo=timezone.utc)


def _catalog_data():
    """Clustered vectors with a few near duplicates, and the metadata every feature reads."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(8, DIM))
    cluster = rng.integers(0, 8, N)
    vectors = centres[cluster] + 0.6 * rng.normal(size=(N, DIM))
    for i in range(0, 40, 8):                           # near duplicates of items 0, 8, 16 … (collapse)
        vectors[i + 1] = vectors[i] + 0.01 * rng.normal(size=DIM)
    labels = [f"kind-{c}" for c in cluster]
    colours = ("red", "green", "blue")
    metadata = [{"price": f"{float(rng.uniform(5, 120)):.2f}", "colour": colours[i % 3],
                 "product_id": f"p{i // 3}", "in_stock": str(int(rng.random() < 0.5)),
                 "added": f"2024-{1 + i % 5:02d}-{1 + i % 27:02d}",
                 **({"brand": "acme"} if i % 4 == 0 else {})} for i in range(N)]
    return vectors.astype(np.float32), labels, metadata


VECTOR = np.random.default_rng(3).normal(size=DIM).astype(np.float32)

# name -> Catalog.search keyword arguments (one query feature, or a few together)
CASES = {
    "item": dict(item="item-5"),
    "vector": dict(vector=VECTOR),
    "k-beyond-matches": dict(item="item-5", k=60, filters=["colour=red", "price<40"]),
    "where-label": dict(item="item-5", where={"label": "kind-3"}),
    "where-set": dict(item="item-5", where={"colour": ["red", "blue"]}),
    "range": dict(item="item-9", filters=["20<=price<=80"]),
    "open-range": dict(vector=VECTOR, filters=["price<30"]),
    "set-filter": dict(item="item-9", filters=["colour in green,blue"]),
    "not-equal-and-exists": dict(item="item-9", filters=["colour!=red", "brand exists"]),
    "min-score": dict(item="item-12", k=30, min_score=0.5),
    "group-by-product": dict(item="item-4", group_by="product_id", variant="colour"),
    "group-by-filtered": dict(vector=VECTOR, group_by="product_id", filters=["price>50"]),
    "diversity-mmr": dict(item="item-8", diversity=0.6),
    "collapse-duplicates": dict(item="item-17", collapse_duplicates=True, k=12),
    "examples-with-negative": dict(item="item-2", examples=[Example("item", "item-40", 0.5),
                                                            Example("item", "item-77", -0.5)]),
    "examples-only": dict(examples=[Example("item", "item-21"), Example("vector", VECTOR, -0.3)]),
    "examples-fusion-max": dict(examples=[Example("item", "item-21"), Example("item", "item-150")], combine="max"),
    "boosts-recency": dict(item="item-30", boosts=["in_stock=1:+0.05", "colour=blue:-0.03"],
                           recency="added:30d:0.08", now=NOW),
    "pin-bury": dict(item="item-30", pin=["item-200", "item-3"], bury=["item-31"]),
    "pin-under-filter": dict(item="item-30", pin=["item-201"], filters=["colour=blue"]),
    "alpha-qe": dict(item="item-44", expansion="qe=3"),
    "alpha-qe-dba-filtered": dict(vector=VECTOR, expansion="qe=2,dba=4", filters=["colour in red,green"]),
    "everything": dict(item="item-61", k=8, filters=["price<100"], group_by="product_id", diversity=0.3,
                       boosts=["in_stock=1:+0.04"], pin=["item-100"], bury=["item-62"],
                       examples=[Example("item", "item-99", -0.5)], collapse_duplicates=True),
    "empty-filter": dict(item="item-5", filters=["price>1000"]),
    "empty-set": dict(item="item-5", where={"label": []}),
}
EMPTY = ("empty-filter", "empty-set")

# name -> (backend, backend parameters, Milvus limits to shrink)
BACKENDS = {
    "faiss-hnsw": ("faiss", {"kind": "hnsw", "ef_search": 512}, None),
    "milvus": ("milvus", {}, None),
    # Forces the two code paths of a big deployment on a small catalog: filters in chunks of 16 ids,
    # and every request deeper than 8 hits paged with search_iterator (pages of 5).
    "milvus-paged": ("milvus", {}, {"EXPR_IDS": 16, "MAX_TOPK": 8, "ITERATOR_BATCH": 5}),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("parity")
    vectors, labels, metadata = _catalog_data()
    vector_catalog(home, "parity", vectors, labels, metadata=metadata)
    return home


@pytest.fixture(scope="module")
def reference(home):
    return Catalog.open("parity", home=home, backend="faiss", kind="flat")


@pytest.fixture(scope="module")
def opened(home, tmp_path_factory):
    """One Catalog per backend for the module (its index is built on first use, then reused). Each
    faiss variant gets its own copy of the catalog: faiss indexes of one catalog share a folder."""
    out = {}
    for name, (backend, params, _) in BACKENDS.items():
        where = home
        if backend == "faiss":
            where = tmp_path_factory.mktemp(name)
            shutil.copytree(home / "catalogs" / "parity", where / "catalogs" / "parity", ignore=shutil.ignore_patterns("index"))
        out[name] = Catalog.open("parity", home=where, backend=backend, **params)
    return out


@pytest.fixture(params=list(BACKENDS))
def backend(request, opened, monkeypatch):
    backend, _, limits = BACKENDS[request.param]
    if backend == "milvus":
        request.getfixturevalue("milvus_lite")
        import lookalike.index.milvus_backend as milvus_backend

        for name, value in (limits or {}).items():
            monkeypatch.setattr(milvus_backend, name, value)
        if limits:  # count the pages and chunks, so the test knows the big-deployment paths ran
            calls = {"pages": 0, "chunks": 0}
            search_raw, iterate = milvus_backend.MilvusIndex._search_raw, milvus_backend.MilvusIndex._iterate

            def counted_search(self, queries, k, filter_expr):
                calls["chunks"] += filter_expr.count("id in [")
                return search_raw(self, queries, k, filter_expr)

            def counted_iterate(self, *args):
                calls["pages"] += 1
                return iterate(self, *args)

            monkeypatch.setattr(milvus_backend.MilvusIndex, "_search_raw", counted_search)
            monkeypatch.setattr(milvus_backend.MilvusIndex, "_iterate", counted_iterate)
            opened[request.param].paths_taken = calls
    return opened[request.param]


def shown(hits) -> list[tuple]:
    """What a shop shows of a ranking (scores to 4 decimals: backends compute cosines apart)."""
    return [(h.rank, h.id, round(h.score, 4), tuple(sorted((k, round(v, 4)) for k, v in h.score_parts.items())),
             tuple(h.group), h.matched_variant, tuple(h.duplicates), h.weak) for h in hits]


@pytest.mark.parametrize("case", list(CASES))
def test_every_query_feature_gives_the_reference_top_k(backend, reference, case):
    kwargs = CASES[case]
    expected = reference.search(**kwargs)
    got = backend.search(**kwargs)
    assert shown(got) == shown(expected)
    if case not in EMPTY:
        assert expected, "a case that returns nothing compares nothing"
    if backend.dir != reference.dir:                     # the faiss variant under test searched its graph
        assert {json.loads(m.read_text())["built_kind"] for m in backend.dir.glob("index/*/faiss-*/meta.json")} == {"hnsw"}
    taken = getattr(backend, "paths_taken", None)
    # (DBA searches its own in-memory exact index of augmented vectors, whatever the backend)
    if taken is not None and case not in EMPTY and "dba" not in kwargs.get("expansion", ""):
        assert taken["pages"] > 0, "milvus-paged never paged with search_iterator"
        if "filters" in kwargs or "where" in kwargs:
            assert taken["chunks"] > 1, "milvus-paged never split an id filter into chunks"


def test_the_cases_exercise_what_they_name(reference):
    """The reference rankings really use each feature (a case whose feature changes nothing would pass
    the parity check while checking nothing)."""
    plain = [h.id for h in reference.search(item="item-5")]
    assert [h.id for h in reference.search(item="item-5", where={"label": "kind-3"})] != plain
    grouped = reference.search(**CASES["group-by-product"])
    assert any(h.group for h in grouped) and len({h.metadata["product_id"] for h in grouped}) == len(grouped)
    assert any(h.duplicates for h in reference.search(**CASES["collapse-duplicates"]))
    assert [h.id for h in reference.search(item="item-8", diversity=0.6)] != \
        [h.id for h in reference.search(item="item-8")]
    pinned = reference.search(**CASES["pin-bury"])
    assert [h.id for h in pinned[:2]] == ["item-200", "item-3"] and "item-31" not in [h.id for h in pinned[:-1]]
    assert [h.id for h in reference.search(**CASES["alpha-qe"])] != [h.id for h in reference.search(item="item-44")]
    assert len(reference.search(**CASES["k-beyond-matches"])) < 60


def test_l2_catalog_gives_the_reference_top_k(milvus_lite, tmp_path):
    """A Euclidean (l2) catalog through Milvus (which returns squared distances) ranks and scores as
    exact faiss does: plain, filtered, grouped, steered and vector queries."""
    vectors, labels, metadata = _catalog_data()
    vector_catalog(tmp_path, "l2", vectors * 3.0, labels, metric="l2", metadata=metadata)
    faiss_cat = Catalog.open("l2", home=tmp_path, backend="faiss", kind="flat")
    milvus_cat = Catalog.open("l2", home=tmp_path, backend="milvus")
    for kwargs in (dict(item="item-5"), dict(vector=VECTOR * 3.0, filters=["20<=price<=80"]),
                   dict(item="item-4", group_by="product_id", boosts=["in_stock=1:+0.01"]),
                   dict(item="item-2", examples=[Example("item", "item-77", -0.5)], diversity=0.5)):
        expected = faiss_cat.search(**kwargs)
        assert expected and shown(milvus_cat.search(**kwargs)) == shown(expected)
