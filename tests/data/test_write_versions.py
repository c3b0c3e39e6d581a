"""What a write costs the caches: a metadata-only edit moves no vector version (no matrix cache
rewrite, no index rebuild) yet every metadata reader sees it; a vector write updates the matrix
cache and the index incrementally (the changed rows only), with the same answers as a rebuild."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import lookalike.data.store as store_module
from lookalike.catalog import Catalog

import fakes


def _catalog(home, n: int = 40) -> Catalog:
    rng = np.random.default_rng(0)
    meta = [{"price": i, "colour": ["red", "blue"][i % 2]} for i in range(n)]
    return fakes.vector_catalog(home, "writes", rng.normal(size=(n, 8)), [f"c{i % 4}" for i in range(n)],
                                metadata=meta)


def _files(cat: Catalog) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every derived vector file: the matrix cache and the saved index."""
    found = [p for p in (cat.dir / "cache").rglob("*") if p.is_file() and "thumbs" not in p.parts]
    found += [p for p in (cat.dir / "index").rglob("*") if p.is_file() and not p.name.startswith(".")]
    return {str(p.relative_to(cat.dir)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in found}


@pytest.mark.parametrize("fast_filters", [False, True])
def test_a_metadata_edit_rewrites_no_vector_cache(tmp_path, monkeypatch, fast_filters):
    if fast_filters:  # ColumnArrays (the array path of large catalogs) must see the edit too
        monkeypatch.setattr(store_module, "FAST_FILTER_MIN", 0)
    cat = _catalog(tmp_path)
    first = [h.id for h in cat.search(item="item-0", k=5)]
    assert cat.count(filters=["price>=100"]) == 0 and cat.count(filters=["colour=green"]) == 0
    version, data_version, files = cat.version(), cat.data_version(), _files(cat)
    assert any(name.startswith("index/") for name in files) and any(name.startswith("cache/") for name in files)

    cat.update_metadata("item-3", {"price": 150, "colour": "green"}, label="c9")
    other = Catalog.open("writes", home=tmp_path)            # another process serving the catalog
    other.update_metadata("item-5", {"price": 120})

    assert cat.version() == version and cat.data_version() != data_version
    assert [h.id for h in cat.search(item="item-0", k=5)] == first
    assert _files(cat) == files, "a metadata edit rewrote a vector cache or an index"
    assert cat.count(filters=["price>=100"]) == 2 and cat.count(filters=["colour=green"]) == 1
    assert cat.count({"label": "c9"}) == 1 and "price" in cat.numeric_columns()
    hits = cat.search(item="item-0", k=40, filters=["price>=100"])
    assert sorted(h.id for h in hits) == ["item-3", "item-5"]
    assert cat.get("item-3").label == "c9"


def test_vector_writes_update_the_matrix_cache_and_index_in_place(tmp_path, monkeypatch):
    """After the first build, removals, re-embedded items and new items reach the matrix cache and
    the saved index as deltas (no full rebuild: both rebuild paths are made to fail), and the
    answers equal a catalog rebuilt from scratch, in this process and in another one."""
    from lookalike.data.store import Store
    from lookalike.index.distances import exact_knn
    from lookalike.search.indexes import IndexManager

    rng = np.random.default_rng(1)
    cat = _catalog(tmp_path)
    cat.search(item="item-0", k=5)                          # first build: matrix cache + index

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt from every vector after a small write")

    monkeypatch.setattr(Store, "_write_matrix_cache", no_rebuild)
    monkeypatch.setattr(IndexManager, "build", no_rebuild)
    other = Catalog.open("writes", home=tmp_path)            # another serving process, warmed up
    other.search(item="item-1", k=5)
    version = cat.version()
    cat.remove(["item-2", "item-7"])
    other.add_embedded([{"id": i, "path": "/nowhere/x.jpg"} for i in ("item-5", "new-a", "new-b")], rng.normal(size=(3, 8)),
                       "tiny", fingerprint="fp")              # one rewritten, two new
    assert cat.version() != version
    for c in (cat, other):
        hits = c.search(item="item-0", k=45, expansion="none")
        ids, matrix = c.vectors()
        assert len(ids) == 40 and "item-2" not in ids and {"new-a", "new-b"} <= set(ids)
        # exact answer over what the store holds now (read through the facade)
        query = matrix[ids.index("item-0")]
        _, order = exact_knn(query[None], np.asarray(matrix), 40, "cosine")
        assert [h.id for h in hits] == [ids[i] for i in order[0] if ids[i] != "item-0"]
        assert c.check(images=False).ok   # index and matrix cache stamped current, sizes agree
    monkeypatch.undo()
    shutil.rmtree(cat.dir / "cache")
    shutil.rmtree(cat.dir / "index")
    fresh = Catalog.open("writes", home=tmp_path)
    ids, matrix = fresh.vectors()
    assert ids == other.vectors()[0] and np.array_equal(np.asarray(matrix), np.asarray(other.vectors()[1]))


def test_the_vector_log_stays_bounded_under_endless_small_writes(tmp_path, monkeypatch):
    """A served catalog updates its caches in place forever (no full rebuild prunes the log): the log
    is trimmed to the entries a delta can still use, and caches further behind rebuild correctly."""
    import sqlite3

    monkeypatch.setattr(store_module, "DELTA_MIN", 2)
    rng = np.random.default_rng(2)
    cat = _catalog(tmp_path, n=40)
    cat.search(item="item-0", k=3)
    for i in range(30):
        cat.add_embedded([{"id": f"w-{i}", "path": "/nowhere/w.jpg"}], rng.normal(size=(1, 8)), "tiny", fingerprint="fp")
        cat.search(item="item-0", k=3)
    with sqlite3.connect(cat.dir / "catalog.sqlite") as db:
        logged = db.execute("SELECT COUNT(*) FROM vector_log").fetchone()[0]
    assert logged <= 2 * (int(0.1 * 70) + 2) + 1, logged
    ids, _ = cat.vectors()
    assert len(ids) == 70 and cat.check(images=False).ok
