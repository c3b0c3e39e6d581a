"""IndexManager keeps one saved index folder per (encoder, metric, backend, parameters): processes
opening one catalog with other index parameters never overwrite or borrow each other's files."""
from __future__ import annotations

import json

import numpy as np

from lookalike.catalog import Catalog

import fakes


def test_other_index_parameters_keep_their_own_folder(tmp_path):
    rng = np.random.default_rng(0)
    fakes.vector_catalog(tmp_path, "params", rng.normal(size=(60, 8)), [f"c{i % 3}" for i in range(60)])
    default = Catalog.open("params", home=tmp_path)
    flat = Catalog.open("params", home=tmp_path, kind="flat")
    graph = Catalog.open("params", home=tmp_path, kind="hnsw", hnsw_m=8)
    answers = {name: [h.id for h in cat.search(item="item-0", k=5, expansion="none")]
               for name, cat in (("default", default), ("flat", flat), ("graph", graph))}
    folders = sorted(p for p in (default.dir / "index").glob("*/*") if p.is_dir())
    kinds = sorted(json.loads((p / "meta.json").read_text())["built_kind"] for p in folders)
    assert len(folders) == 3 and kinds == ["flat", "flat", "hnsw"]
    assert any(p.name == "faiss-cosine" for p in folders)   # the defaults keep the folder name they always had
    # each one reloads its own build (another process with the same parameters shares it)
    again = Catalog.open("params", home=tmp_path, hnsw_m=8, kind="hnsw")
    assert [h.id for h in again.search(item="item-0", k=5, expansion="none")] == answers["graph"]
    assert sorted(p for p in (default.dir / "index").glob("*/*") if p.is_dir()) == folders
    assert default.check(images=False).ok
