"""`Catalog.check`: a healthy catalog passes; each kind of damage is named with its code."""
from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np

from lookalike.catalog import Catalog


def _codes(report, severity="error"):
    return {p.code for p in report.problems if p.severity == severity}


def _sql(cat, sql, *params):
    db = sqlite3.connect(cat.dir / "catalog.sqlite")
    with db:
        db.execute(sql, params)
    db.close()


def test_fresh_catalog_is_ok(shapes_catalog):
    shapes_catalog.search(item="circle-red/circle-red-0", k=3)
    report = shapes_catalog.check()
    assert report.ok and report.problems == [], report.to_dict()
    assert report.items == 54 and report.encoders == {"colour-hist": 54} and report.index_folders == 1


def test_missing_image_and_item_without_vector(shapes_catalog):
    victim = shapes_catalog.get("circle-red/circle-red-0")
    moved = victim.path + ".moved"
    shutil.move(victim.path, moved)
    try:
        _sql(shapes_catalog, "INSERT INTO items (id, path, label, sha256, added_at, updated_at) VALUES "
                             "('ghost', ?, 'x', 'abc', 0, 0)", moved)
        report = Catalog.open("shapes", home=shapes_catalog.home).check()
        assert not report.ok
        assert _codes(report) == {"missing-image", "no-vector"}
        missing = next(p for p in report.problems if p.code == "missing-image")
        assert missing.count == 1 and "circle-red/circle-red-0" in missing.examples[0]
        assert next(p for p in report.problems if p.code == "no-vector").examples == ["ghost"]
        assert Catalog.open("shapes", home=shapes_catalog.home).check(images=False).ok is False  # still no-vector
    finally:
        shutil.move(moved, victim.path)


def test_bad_vectors_and_orphans(shapes_catalog):
    db = sqlite3.connect(shapes_catalog.dir / "catalog.sqlite")   # foreign keys are off by default: orphans can be made
    with db:
        db.execute("UPDATE vectors SET vec = x'00000000' WHERE item_rowid = 1")
        db.execute("INSERT INTO vectors SELECT 9999, encoder, sha256, fingerprint, vec FROM vectors WHERE item_rowid = 2")
        db.execute("UPDATE vectors SET fingerprint = 'old model' WHERE item_rowid = 3")
    db.close()
    assert _codes(shapes_catalog.check(images=False)) == {"bad-vectors", "orphan-vectors", "stale-vectors"}


def test_index_out_of_step_with_the_store(shapes_catalog):
    shapes_catalog.search(item="circle-red/circle-red-0", k=3)
    index_dir = next((shapes_catalog.dir / "index").glob("*/*/version.json")).parent   # (a .lock file may sit beside it)
    shapes_catalog.remove(["square-blue/square-blue-0"])      # the saved index is now stale: heals on next search
    report = shapes_catalog.check()
    assert report.ok and "stale-index" in _codes(report, "warning")
    shapes_catalog.search(item="circle-red/circle-red-0", k=3)   # rebuilt
    assert shapes_catalog.check().problems == []
    # an index stamped current but holding another number of vectors: an error
    shapes_catalog.remove(["square-blue/square-blue-1"])
    (index_dir / "version.json").write_text(json.dumps({"version": shapes_catalog.version()}))
    report = shapes_catalog.check()
    assert _codes(report) == {"index"} and "53 vectors, the store 52" in report.errors[0].message
    (index_dir / "index.faiss").write_bytes(b"garbage")
    assert "cannot be loaded" in shapes_catalog.check().errors[0].message


def test_matrix_cache_mismatch(shapes_catalog):
    shapes_catalog.vectors()   # writes the cache
    cache = next((shapes_catalog.dir / "cache").glob("colour-hist*"))
    np.save(cache / "rowids.npy", np.arange(3, dtype=np.int64))
    assert _codes(shapes_catalog.check(images=False)) == {"matrix-cache"}


def test_an_id_the_api_cannot_serve_is_a_bad_id_error(tmp_path, shapes_folder):
    """Ingest refuses such ids now; a catalog indexed before (a file named with a line break) still held
    items every /api/items/{id} route answered 422 for, and `check` said ok."""
    cat = Catalog.create("ids", home=tmp_path)
    cat.index(shapes_folder / "circle-red", "colour-hist")
    _sql(cat, "UPDATE items SET id = ? WHERE id = 'circle-red-0'", "circle\nred")
    report = Catalog.open("ids", home=tmp_path).check()
    assert _codes(report) == {"bad-id"}
    assert [p.examples for p in report.problems if p.code == "bad-id"] == [["'circle\\nred'"]]
