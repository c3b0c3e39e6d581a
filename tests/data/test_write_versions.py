"""What a write costs the caches: a metadata-only edit moves no vector version (no matrix cache
rewrite, no index rebuild) yet every metadata reader sees it; a vector write updates the matrix
cache and the index incrementally (the changed rows only), with the same answers as a rebuild."""
from __future__ import annotations

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
