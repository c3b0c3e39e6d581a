"""Indexes are built from the store's vector matrix on first use, saved under the catalog's
``index/`` directory with the vector version they were built from (and the store's vector-log
position), and brought up to date when that version changes (an ingest, removal or re-embedded
image; a metadata edit does not move it). A small change is applied to the saved index — the
removed and rewritten rows taken out, the new vectors added (:meth:`IndexManager.update`) —
instead of a rebuild from every vector; a large one (more than ``DELTA_SHARE`` of the index),
other weights or an unreadable index rebuild. Every :meth:`IndexManager.get` reads the version
from the store, so a write by another process (API worker, ``lookalike add``) is picked up by the
next search in every process: one process updates and saves while the others wait, then load it."""
from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

from lookalike.data.artifacts import derived_writes, encoder_key, file_lock, write_json
from lookalike.data.integrity import Problem
from lookalike.data.store import DELTA_MIN, DELTA_SHARE, Store
from lookalike.index import IndexBackend, discard_index, load_index, make_index


class IndexManager:
    """Keeps one loaded index per (encoder, metric, backend), fresh with respect to the store."""

    def __init__(self, store: Store, backend: str = "faiss", **backend_params):
        self._store = store
        self.backend = backend
        self.backend_params = backend_params
        self._loaded: dict[tuple[str, str], tuple[str, IndexBackend]] = {}
        self._lock = threading.Lock()

    def path(self, encoder: str, metric: str) -> Path:
        """``index/<encoder-key>/<backend>-<metric>`` for the backend's defaults, plus ``-<digest>``
        of the parameters otherwise (``kind=hnsw``, ``nprobe=64`` …): two servers or commands with
        other index parameters over one catalog each keep their own files instead of overwriting
        each other's (and loading an index built with other parameters as their own)."""
        return self._store.dir / "index" / encoder_key(encoder) / f"{self.backend}-{metric}{self._params_suffix}"

    @property
    def _params_suffix(self) -> str:
        params = {k: v for k, v in self.backend_params.items() if k != "workdir" and v is not None}
        if not params:
            return ""
        return "-" + hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def get(self, encoder: str, metric: str) -> IndexBackend:
        version = self._store.version(encoder)
        with self._lock:
            cached = self._loaded.get((encoder, metric))
            if cached and cached[0] == version:
                return cached[1]
            path = self.path(encoder, metric)
            # other server processes (lookalike serve --workers) see the same new version: one builds
            # and saves while the others wait, then load what it saved
            with file_lock(path.parent / f".{path.name}.lock"):
                index = self._load_saved(encoder, metric, version)
                if index is None:
                    index, version = self.update(encoder, metric) or (self.build(encoder, metric, version), version)
            self._loaded[(encoder, metric)] = (version, index)
            return index

    def update(self, encoder: str, metric: str) -> tuple[IndexBackend, str] | None:
        """(index, vector version) after applying the vector rows written since the saved index was
        built (:meth:`Store.vector_delta`): ``remove`` of the removed and rewritten rowids, ``add``
        of the new vectors, saved in place. None when it cannot (no saved index with a log
        position, other weights, a change over ``DELTA_SHARE`` of the index, a backend other than
        faiss): the caller rebuilds. Call under the folder's lock (as :meth:`get` does)."""
        path = self.path(encoder, metric)
        info = self._store.encoder_info(encoder)
        if self.backend != "faiss" or info is None:
            return None
        try:
            stamp = json.loads((path / "version.json").read_text())
            since, built = int(stamp["seq"]), str(stamp["version"])
            index = load_index(path)   # in memory: it is about to change
        except Exception:  # no stamp, an older stamp without a log position, damaged files
            return None
        if built.split(":", 1)[-1] != info["fingerprint"] or index.dim != info["dim"]:
            return None
        delta = self._store.vector_delta(encoder, since, int(DELTA_SHARE * len(index)) + DELTA_MIN)
        if delta is None:
            return None
        if len(delta.touched):
            index.remove(delta.touched)
        if len(delta.rowids):
            index.add(delta.rowids, delta.vectors)
        with derived_writes():   # rebuilt from the store if a crash loses them
            index.save(path)
            write_json(path / "version.json", {"version": delta.version, "seq": delta.seq})
        return index, delta.version

    def _load_saved(self, encoder: str, metric: str, version: str) -> IndexBackend | None:
        path = self.path(encoder, metric)
        stamp = path / "version.json"
        if not stamp.exists() or json.loads(stamp.read_text()).get("version") != version:
            return None
        try:
            return load_index(path, mmap=True)  # shared by every worker process serving the catalog
        except Exception:  # unreadable/partial index files: rebuild from the store
            return None

    def build(self, encoder: str, metric: str, version: str | None = None) -> IndexBackend:
        seq = self._store.vector_seq(encoder)   # before the matrix: a later write is re-applied, never lost
        rowids, matrix = self._store.matrix(encoder)
        params = dict(self.backend_params)
        if self.backend == "faiss":  # large catalogs keep full vectors on disk: next to the index
            params.setdefault("workdir", self.path(encoder, metric).parent)
        index = make_index(self.backend, matrix.shape[1], metric, **params)
        if len(rowids):
            index.add(rowids, matrix)
        path = self.path(encoder, metric)
        if path.exists():
            discard_index(path)   # the previous build's collection, when it lives on a Milvus server
            shutil.rmtree(path, ignore_errors=True)
        index.save(path)
        write_json(path / "version.json", {"version": version or self._store.version(encoder), "seq": seq})
        return index


def check_indexes(store: Store) -> tuple[int, list[Problem]]:
    """Check every saved index folder of ``store``'s catalog (``index/<encoder-key>/<backend>-<metric>/``):
    ``orphan-index`` (warning: no such encoder), ``stale-index`` (warning: built from an older data
    version, rebuilt on next search), ``index`` (error: stamped current but unreadable, or holding
    another number of vectors than the store). Returns (folders checked, problems)."""
    root = store.dir / "index"
    if not root.is_dir():
        return 0, []
    encoders = {encoder_key(e["name"]): e for e in store.encoders()}
    problems: list[Problem] = []
    checked = 0
    for stamp in sorted(root.glob("*/*/version.json")):
        folder, checked = stamp.parent, checked + 1
        where = f"{folder.parent.name}/{folder.name}"
        enc = encoders.get(folder.parent.name)
        if enc is None:
            problems.append(Problem("warning", "orphan-index", f"index {where} belongs to no encoder of the catalog"))
            continue
        try:
            built = json.loads(stamp.read_text()).get("version")
        except (OSError, ValueError):
            built = None
        if built != store.version(enc["name"]):
            problems.append(Problem("warning", "stale-index", f"index {where} was built from data version {built}, "
                                    f"the store is at {store.version(enc['name'])} (rebuilt on next search)"))
            continue
        try:
            size = len(load_index(folder))
        except Exception as exc:  # any backend's load error: the files are damaged
            problems.append(Problem("error", "index", f"index {where} cannot be loaded: {type(exc).__name__}: {exc}"))
            continue
        if size != enc["count"]:
            problems.append(Problem("error", "index", f"index {where} holds {size} vectors, the store {enc['count']}"))
    return checked, problems
