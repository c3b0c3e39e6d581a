"""Milvus backend: the same IndexBackend interface over a Milvus collection.

Two deployments, one code path (pymilvus ``MilvusClient``):

* **milvus-lite** (embedded, default): a local database file ``milvus.db`` inside the index
  directory. Good for tests and for trying the backend; one process may open a file at a time.
  ``LOOKALIKE_MILVUS_URI=/path/file.db`` shares one milvus-lite file between every index of a
  process instead (one embedded server, one collection per index directory, as on a server).
* **Milvus server** (standalone or cluster, see docs/scaling.md): set ``LOOKALIKE_MILVUS_URI``
  (e.g. ``http://localhost:19530``; ``LOOKALIKE_MILVUS_TOKEN`` for auth) or pass ``uri=``. The
  index directory then only holds ``meta.json`` naming the collection; the data lives in Milvus.

Milvus needs ``flush()`` after bulk inserts (a search before it is slow), so ``add`` flushes once
per call; queries are sent in batches. Two Milvus limits are handled here so that a search
answers exactly what faiss answers on the same data (tests/search/test_backend_parity.py):

* ``allowed_ids`` (the ids the catalog's filters let through) becomes an ``id in [...]``
  expression, at most :data:`EXPR_IDS` ids per expression: a larger set is searched in chunks
  whose top-k lists are merged (the union's top k is among them, so the merge is exact);
* a search returns at most :data:`MAX_TOPK` (16,384) hits, so a deeper request (the ranking
  pipeline doubles its candidate list until the top k is provably right) pages through the
  collection with ``search_iterator`` (Milvus' own way to read past top-k, filters included).

Metadata stored with ``add(..., metadata=[{...}])`` can also be filtered natively with
``where={"label": "x"}`` or a raw Milvus expression ``expr="price < 20"``. Milvus has no L1 metric
for float vectors, so this backend serves cosine and l2 only.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from lookalike.data.artifacts import write_json
from lookalike.index.base import IndexBackend
from lookalike.index.distances import prepare, raw_to_distance

DB_FILE = "milvus.db"
# Rows per insert call: keeps each gRPC message well under Milvus' 64 MB limit.
INSERT_BYTES = 16 * 1024 * 1024
# Queries per search call, and ids per delete/lookup expression.
QUERY_BATCH = 256
EXPR_BATCH = 10_000
# Ids per ``id in [...]`` search filter (~8 bytes of expression text each; Milvus parses it per query).
EXPR_IDS = int(os.environ.get("LOOKALIKE_MILVUS_EXPR_IDS", 50_000))
# Milvus' largest top-k (``limit``) for one search; deeper requests page with search_iterator.
MAX_TOPK = 16_384
# Hits per page of search_iterator (the pymilvus v1 iterator widens each page internally, up to MAX_TOPK).
ITERATOR_BATCH = 4_096


def is_lite_uri(uri: str | None) -> bool:
    """A milvus-lite database file (``/path/name.db``), as opposed to a server address."""
    return bool(uri) and str(uri).endswith(".db") and "://" not in str(uri)


def _client_for(uri: str, token: str | None):
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token or "")


def _release_lite(db_path: Path) -> None:
    """Stop the embedded milvus-lite server holding ``db_path`` so the file can be moved."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - milvus-lite missing means no lite server to stop
        return
    if str(db_path.resolve()) in server_manager_instance._servers:
        server_manager_instance.release_server(str(db_path))


def where_to_expr(where: dict | None) -> str | None:
    """``{"label": "shoes", "brand": ["a", "b"]}`` -> ``label == "shoes" and brand in ["a", "b"]``."""
    if not where:
        return None
    parts = []
    for key, value in where.items():
        if not key.isidentifier():
            raise ValueError(f"invalid metadata field name {key!r}")
        if isinstance(value, (list, tuple, set)):
            parts.append(f"{key} in {json.dumps(list(value))}")
        else:
            parts.append(f"{key} == {json.dumps(value)}")
    return " and ".join(parts)


def collection_name_for(path: Path) -> str:
    """A stable, valid Milvus collection name for an index directory (catalog/encoder/metric)."""
    parts = Path(path).resolve().parts[-4:]
    readable = re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))[-180:]
    return f"lookalike_{hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]}_{readable}"


class MilvusIndex(IndexBackend):
    backend = "milvus"

    def __init__(self, dim: int, metric: str = "cosine", uri: str | None = None, token: str | None = None,
                 collection: str | None = None, index_type: str | None = None, hnsw_m: int = 32,
                 ef_construction: int = 200, ef_search: int = 128, db_path: str | Path | None = None):
        super().__init__(dim, metric)
        if metric == "l1":
            raise ValueError("the milvus backend supports cosine and l2 (Milvus has no L1 for float vectors)")
        # db_path: an existing milvus-lite file (what load() reopens); it wins over any server URI.
        self.uri = None if db_path else (uri or os.environ.get("LOOKALIKE_MILVUS_URI") or None)
        self.token = token if token is not None else os.environ.get("LOOKALIKE_MILVUS_TOKEN")
        # An unnamed collection gets a temporary name; save() renames it after its directory (dropping
        # the previous build there), so rebuilding an index never leaves stray collections on a server.
        self._named = collection is not None
        self.collection = collection or f"lookalike_tmp_{uuid.uuid4().hex[:12]}"
        # milvus-lite only implements FLAT (exact); servers get HNSW unless told otherwise.
        self.index_type = index_type or ("HNSW" if self.uri and not is_lite_uri(self.uri) else "FLAT")
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self._tmpdir: str | None = None
        self._db: Path | None = None
        if db_path:
            self._db = Path(db_path)
        elif self.uri is None:  # embedded: a temporary file until save() moves it into place
            self._tmpdir = tempfile.mkdtemp(prefix="lookalike-milvus-")
            self._db = Path(self._tmpdir) / DB_FILE
        self._client = None

    # -- connection -----------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = _client_for(self.uri or str(self._db), self.token)
            if not self._client.has_collection(self.collection):
                self._create_collection()
            self._client.load_collection(self.collection)
        return self._client

    def _milvus_metric(self) -> str:
        return "COSINE" if self.metric == "cosine" else "L2"

    def _create_collection(self) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = self._client.prepare_index_params()
        build = {"M": self.hnsw_m, "efConstruction": self.ef_construction} if self.index_type == "HNSW" else {}
        params.add_index(field_name="vector", index_type=self.index_type, metric_type=self._milvus_metric(),
                         params=build)
        self._client.create_collection(self.collection, schema=schema, index_params=params,
                                       consistency_level="Strong")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._db is not None:
            _release_lite(self._db)

    def __del__(self):  # the temporary database of an index never saved goes with it
        if getattr(self, "_tmpdir", None):
            try:
                self.close()
            finally:
                shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- writing --------------------------------------------------------------------------
    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        return prepare(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim), self.metric)

    def add(self, ids: np.ndarray, vectors: np.ndarray, metadata: list[dict] | None = None) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        vectors = self._prepare(vectors)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        if metadata is not None and len(metadata) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(metadata)} metadata rows")
        step = max(1, INSERT_BYTES // (4 * self.dim))
        for start in range(0, len(ids), step):
            rows = []
            for i in range(start, min(start + step, len(ids))):
                row = dict(metadata[i]) if metadata is not None else {}
                row.update(id=int(ids[i]), vector=vectors[i])
                rows.append(row)
            self.client.upsert(self.collection, rows)  # upsert: re-adding an id replaces it
        if len(ids):
            self.client.flush(self.collection)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        removed = 0
        for start in range(0, len(ids), EXPR_BATCH):
            chunk = ids[start:start + EXPR_BATCH].tolist()
            present = self.client.query(self.collection, filter=f"id in {chunk}", output_fields=["id"])
            if present:
                self.client.delete(self.collection, ids=[row["id"] for row in present])
                removed += len(present)
        if removed:
            self.client.flush(self.collection)
        return removed

    # -- searching ------------------------------------------------------------------------
    def search(self, queries, k, allowed_ids=None, where: dict | None = None, expr: str | None = None):
        queries = self._prepare(queries)
        nq = len(queries)
        dist = np.full((nq, k), np.inf, np.float32)
        out = np.full((nq, k), -1, np.int64)
        filters = [f for f in (expr, where_to_expr(where)) if f]
        if allowed_ids is None:
            chunks = [" and ".join(f"({f})" for f in filters)]
        else:
            allowed = np.unique(np.asarray(allowed_ids, dtype=np.int64))
            if len(allowed) == 0:
                return dist, out
            # Each chunk's top k holds every member of the union's top k from that chunk: merging is exact.
            chunks = [" and ".join(f"({f})" for f in [*filters, f"id in {allowed[i:i + EXPR_IDS].tolist()}"])
                      for i in range(0, len(allowed), EXPR_IDS)]
        found = [([], []) for _ in range(nq)]
        for chunk in chunks:
            for row, (ids, raw) in enumerate(self._search_raw(queries, k, chunk)):
                found[row][0].extend(ids)
                found[row][1].extend(raw)
        for row, (ids, raw) in enumerate(found):
            if not ids:
                continue
            # Milvus COSINE returns the similarity, L2 the squared distance: faiss's raw values.
            d = raw_to_distance(np.asarray(raw, np.float32), self.metric)
            order = np.argsort(d, kind="stable")[:k]
            out[row, :len(order)] = np.asarray(ids, np.int64)[order]
            dist[row, :len(order)] = d[order]
        return dist, out

    def _search_raw(self, queries: np.ndarray, k: int, filter_expr: str) -> list[tuple[list[int], list[float]]]:
        """(ids, raw Milvus distances) of the best ``k`` per query under ``filter_expr``, best first."""
        params = {"metric_type": self._milvus_metric(), "params": {"ef": max(self.ef_search, min(k, MAX_TOPK))}}
        if k > MAX_TOPK:
            return [self._iterate(q, k, filter_expr, params) for q in queries]
        results = []
        for start in range(0, len(queries), QUERY_BATCH):
            hits = self.client.search(self.collection, data=list(queries[start:start + QUERY_BATCH]), limit=k,
                                      filter=filter_expr, search_params=params, output_fields=[])
            results += [([h["id"] for h in found[:k]], [h["distance"] for h in found[:k]]) for found in hits]
        return results

    def _iterate(self, query: np.ndarray, k: int, filter_expr: str, params: dict) -> tuple[list[int], list[float]]:
        """The best ``k`` (> MAX_TOPK) for one query: pages of ``search_iterator`` until k or the end."""
        iterator = self.client.search_iterator(self.collection, data=[query], batch_size=ITERATOR_BATCH, limit=k,
                                               filter=filter_expr, search_params=params, output_fields=[])
        ids, raw, seen = [], [], set()
        try:
            while len(ids) < k:
                page = iterator.next()
                if not page:
                    break
                for hit in page:
                    if hit["id"] not in seen:  # pages meet at a distance: never count an id twice
                        seen.add(hit["id"])
                        ids.append(hit["id"])
                        raw.append(hit["distance"])
        finally:
            iterator.close()
        return ids[:k], raw[:k]

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.client.flush(self.collection)
        if self.uri is None and self._db.resolve() != (path / DB_FILE).resolve():
            self.close()  # the lite server must let go of the file before it moves
            target = path / DB_FILE
            if target.exists():
                _release_lite(target)
                target.unlink()
            if self._tmpdir:
                shutil.move(str(self._db), target)
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None
            else:
                shutil.copy2(self._db, target)
            self._db = target
        if self.uri and not self._named:
            if is_lite_uri(self.uri):  # milvus-lite cannot rename: the collection keeps its name (in meta.json)
                self._named = True
            else:
                self._rename(collection_name_for(path))
        meta = {"backend": self.backend, "dim": self.dim, "metric": self.metric, "uri": self.uri,
                "collection": self.collection, "index_type": self.index_type, "hnsw_m": self.hnsw_m,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search}
        write_json(path / "meta.json", meta)

    def _rename(self, name: str) -> None:
        if self.client.has_collection(name):
            self.client.drop_collection(name)  # the previous build of this index
        self.client.rename_collection(self.collection, name)
        self.collection, self._named = name, True
        self.client.load_collection(name)

    @classmethod
    def discard(cls, path: Path) -> None:
        """Drop the collection a saved index at ``path`` names on its server or shared milvus-lite
        file (an embedded index's own file goes with its directory)."""
        meta = json.loads((Path(path) / "meta.json").read_text())
        if meta.get("uri"):
            client = _client_for(meta["uri"], os.environ.get("LOOKALIKE_MILVUS_TOKEN"))
            try:
                if client.has_collection(meta["collection"]):
                    client.drop_collection(meta["collection"])
            finally:
                client.close()

    def drop(self) -> None:
        """Delete the collection (and, embedded, nothing else: the file goes with its directory)."""
        self.client.drop_collection(self.collection)

    @classmethod
    def load(cls, path: Path) -> "MilvusIndex":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        uri = meta["uri"] or None
        return cls(meta["dim"], meta["metric"], uri=uri, collection=meta["collection"],
                   index_type=meta["index_type"], hnsw_m=meta["hnsw_m"], ef_construction=meta["ef_construction"],
                   ef_search=meta["ef_search"], db_path=None if uri else path / DB_FILE)

    def __len__(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def describe(self) -> str:
        where = self.uri or f"milvus-lite {self._db}"
        return f"milvus {self.index_type} ({self.metric}, {len(self)} vectors, {where})"
