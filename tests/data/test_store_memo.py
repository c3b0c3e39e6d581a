"""The store's per-data-version memo: what a request re-reads (counts, encoder rows, state, the matrix)
is kept until anything commits, by this connection, another thread or another process."""
from __future__ import annotations

import threading

import numpy as np

from lookalike.catalog import Catalog

import fakes


def _catalog(home, n: int = 30) -> Catalog:
    rng = np.random.default_rng(0)
    return fakes.vector_catalog(home, "memo", rng.normal(size=(n, 8)), [f"c{i % 3}" for i in range(n)])


def test_data_version_moves_with_every_kind_of_write(tmp_path):
    cat = _catalog(tmp_path)
    seen = {cat.data_version()}
    assert cat.data_version() in seen                       # nothing changed: same token
    cat.remove(["item-0"])
    seen.add(cat.data_version())
    cat.set_default_expansion("qe=2")                       # a setting, no vector touched
    seen.add(cat.data_version())
    other = Catalog.open("memo", home=tmp_path)             # another connection (the CLI, another worker)
    other.remove(["item-1"])
    seen.add(cat.data_version())
    assert len(seen) == 4


def test_memoised_reads_follow_writes_made_elsewhere(tmp_path):
    cat = _catalog(tmp_path)
    ids, matrix = cat.vectors()
    assert len(cat) == 30 and len(ids) == 30 and cat.version() == cat.version()
    version = cat.version()
    other = Catalog.open("memo", home=tmp_path)
    other.remove(["item-3", "item-4"])
    other.set_default_expansion("qe=3")
    assert len(cat) == 28 and cat.version() != version
    ids, after = cat.vectors()
    assert len(ids) == 28 and "item-3" not in ids and after.shape == (28, 8)
    assert str(cat.default_expansion) == "qe=3,alpha=3"
    assert cat.search(item="item-5", k=30)[-1].id != "item-3"
    assert {h.id for h in cat.search(item="item-5", k=30)}.isdisjoint({"item-3", "item-4"})


def test_memo_is_shared_by_threads_and_each_sees_a_write(tmp_path):
    cat = _catalog(tmp_path)
    counts = []

    def read():
        counts.append(len(cat))

    threads = [threading.Thread(target=read) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    cat.remove(["item-9"])
    threads = [threading.Thread(target=read) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert counts == [30] * 4 + [29] * 4


def test_matrix_rows_are_shared_read_only(tmp_path):
    cat = _catalog(tmp_path)
    ids, matrix = cat.vectors()
    assert not matrix.flags.writeable


def test_a_metadata_write_that_bumps_no_version_is_still_seen(tmp_path):
    """Any row written to items (here by plain SQL, as a write path that forgets the encoder version
    would) moves the data version, so no worker keeps serving the old metadata from memory."""
    import json
    import sqlite3

    cat = _catalog(tmp_path)
    before, version = cat.data_version(), cat.version()
    assert cat.get("item-2").metadata == {}
    with sqlite3.connect(cat.dir / "catalog.sqlite") as db:
        db.execute("UPDATE items SET meta = ? WHERE id = 'item-2'", (json.dumps({"colour": "red"}),))
    assert cat.version() == version and cat.data_version() != before
    assert cat.get("item-2").metadata == {"colour": "red"}


def test_a_pinned_version_holds_for_its_block_and_only_its_thread(tmp_path):
    """Catalog.pinned_version (the API fast path: one data-version check per answer): inside the
    block the data version is the one read on entry, even after another connection's write; the
    first check after it sees the write; other threads are not pinned; nested blocks keep the outer pin."""
    cat = _catalog(tmp_path)
    other = Catalog.open("memo", home=tmp_path)
    before = cat.data_version()
    with cat.pinned_version():
        other.remove(["item-2"])
        with cat.pinned_version():
            assert cat.data_version() == before
        assert cat.data_version() == before
        seen = []
        thread = threading.Thread(target=lambda: seen.append(cat.data_version()))
        thread.start()
        thread.join()
        assert seen[0] != before
    assert cat.data_version() != before and len(cat) == 29
