"""SQLite store for one catalog: items, metadata, vectors per encoder, and derived caches.

SQLite is the source of truth. Every ingest batch is written in one transaction (items + their
vectors), so a process killed at any point leaves either the whole batch or none of it, and a
re-run picks up where it stopped. Vector matrices for fast loading are a cache under ``cache/``,
rebuilt whenever the encoder's vector version no longer matches.

Two versions: an encoder's ``version`` (:meth:`Store.version`) moves only when its vectors change
(rows added, removed or re-embedded): the matrix cache, the index and DBA follow it. A metadata- or
label-only write leaves it alone and moves :meth:`Store.data_version` (every commit), which is what
metadata caches (item reads, filter columns, label-based reports) follow.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lookalike.data.artifacts import atomic_file, derived_writes, encoder_key, file_lock, save_npy, write_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    label TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    sha256 TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    added_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_label ON items(label);
CREATE INDEX IF NOT EXISTS items_sha256 ON items(sha256);
CREATE TABLE IF NOT EXISTS vectors (
    item_rowid INTEGER NOT NULL REFERENCES items(rowid) ON DELETE CASCADE,
    encoder TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (encoder, item_rowid)
);
CREATE TABLE IF NOT EXISTS encoders (
    name TEXT PRIMARY KEY,
    dim INTEGER NOT NULL,
    metric TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- bumped by every row written to items or vectors, whoever writes (see Store.data_version)
CREATE TABLE IF NOT EXISTS generation (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
INSERT OR IGNORE INTO generation (id, n) VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS items_inserted AFTER INSERT ON items BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS items_updated AFTER UPDATE ON items BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS items_deleted AFTER DELETE ON items BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS vectors_inserted AFTER INSERT ON vectors BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS vectors_updated AFTER UPDATE ON vectors BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS vectors_deleted AFTER DELETE ON vectors BEGIN UPDATE generation SET n = n + 1; END;
-- which items' vectors each write touched, per encoder (Store.vector_delta): the matrix cache and the
-- saved index apply just those rows after a write instead of rebuilding from every vector. Entries
-- up to vector_log_floor.seq were pruned (a consumer older than that rebuilds).
CREATE TABLE IF NOT EXISTS vector_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, encoder TEXT NOT NULL,
                                       item_rowid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS vector_log_by_encoder ON vector_log(encoder, seq);
CREATE TABLE IF NOT EXISTS vector_log_floor (encoder TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS vectors_logged_insert AFTER INSERT ON vectors
  BEGIN INSERT INTO vector_log (encoder, item_rowid) VALUES (NEW.encoder, NEW.item_rowid); END;
CREATE TRIGGER IF NOT EXISTS vectors_logged_update AFTER UPDATE ON vectors
  BEGIN INSERT INTO vector_log (encoder, item_rowid) VALUES (NEW.encoder, NEW.item_rowid), (OLD.encoder, OLD.item_rowid); END;
CREATE TRIGGER IF NOT EXISTS vectors_logged_delete AFTER DELETE ON vectors
  BEGIN INSERT INTO vector_log (encoder, item_rowid) VALUES (OLD.encoder, OLD.item_rowid); END;
"""

# A derived vector file (matrix cache, saved index) is updated in place of a rebuild while the rows
# written since it was made are at most this share of its rows (plus DELTA_MIN): past that a rebuild
# reads every vector once anyway.
DELTA_SHARE = 0.1
DELTA_MIN = 64


@dataclass
class VectorDelta:
    """What changed in one encoder's vectors since a log position (:meth:`Store.vector_delta`), read
    in one snapshot: ``version`` and ``seq`` now, ``removed`` (sorted int64 rowids that lost their
    vector), ``rowids`` (sorted int64 rowids whose vector was added or rewritten) and their
    ``vectors`` ((m, dim) float32, aligned)."""
    version: str
    seq: int
    removed: np.ndarray
    rowids: np.ndarray
    vectors: np.ndarray

    @property
    def touched(self) -> np.ndarray:
        """Every rowid whose old row (if any) must go: removed and rewritten ones, sorted."""
        return np.union1d(self.removed, self.rowids)

# Items kept in memory per data version (request-sized reads only: at most CACHED_READ_MAX ids at once).
ITEM_CACHE_MAX = 250_000
CACHED_READ_MAX = 2_000
# Columns of the items table that `where` filters may name directly; anything else is metadata.
ITEM_COLUMNS = ("id", "label", "path")
# A number as filters write it and as CSV cells hold it ("12", "-0.5", "1e3").
NUMBER_RE = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(NUMBER_RE)


def to_number(value) -> float | None:
    """The float a metadata value stands for (a JSON number, or a string such as ``"12.5"``), or
    None (booleans, text, empty, NaN/inf): how filter values are read. The store's SQL
    (:func:`_number_sql`) reads stored values the same way without a Python call per row."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = str(value).strip()
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


class CatalogReplaced(RuntimeError):
    """The catalog's database file was replaced on disk (``lookalike import --force``, a restore)
    after this process opened it: its reads would answer from the old catalog and its writes go to
    a deleted file, so both are refused until the catalog is opened again (a server: restarted)."""


@dataclass
class Item:
    rowid: int
    id: str
    path: str
    label: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    width: int | None = None
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "path": self.path, "metadata": self.metadata,
                "width": self.width, "height": self.height}


@dataclass
class NewItem:
    """One validated row ready to be written with its vector."""
    id: str
    path: str
    label: str | None
    metadata: dict[str, Any]
    sha256: str
    width: int
    height: int


class Store:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "catalog.sqlite"
        self._local = threading.local()
        self._columns = ColumnArrays(self)   # the fast path of rowids_where on large catalogs
        # Reads a request repeats (encoder rows, state, counts, the matrix cache) kept per data version
        # (see data_version): shared by this process's threads, dropped as soon as anything commits.
        self._memo: dict = {}
        self._memo_version: str | None = None
        self._memo_lock = threading.Lock()
        self.db.executescript(SCHEMA)  # idempotent; executescript manages its own transaction
        self._identity = _file_identity(self.path)   # which file this store serves (see _check_same_file)

    # -- connection ------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        """One connection per thread (the API server reads from worker threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def transaction(self):
        self._check_same_file()
        return _Transaction(self.db)

    def _check_same_file(self) -> None:
        """CatalogReplaced when ``catalog.sqlite`` is no longer the file this store opened (renamed
        away and replaced, or deleted): one ``stat`` per call, made on every data-version check and
        every write, so a server never answers from, nor writes to, a catalog swapped under it."""
        if _file_identity(self.path) != self._identity:
            raise CatalogReplaced(f"catalog {self.dir.name!r} was replaced on disk after this process opened it "
                                  "(lookalike import --force?): restart the server, or open the catalog again, "
                                  "to serve the new one")

    def data_version(self) -> str | None:
        """A token (20 hex digits) that changes whenever anything is committed to this catalog, by this connection
        or any other one (another thread, an API worker process, the CLI): the encoders' (name,
        version, fingerprint, dim, metric), the highest item rowid, the count of rows ever written to
        items or vectors (kept by triggers, so a write path that forgets to bump a version is seen
        too) and the state table, digested.
        While nothing changed it costs one ``PRAGMA data_version`` (SQLite bumps it when another
        connection commits; ``total_changes`` counts this connection's own writes). None inside a
        write transaction (uncommitted rows must not be memoised)."""
        conn = self.db
        if conn.in_transaction:
            return None
        pinned = getattr(self._local, "pinned", None)
        if pinned is not None:   # inside pinned_version(): the version read on entry
            return pinned
        self._check_same_file()
        mark = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        local = self._local
        if getattr(local, "mark", None) != mark:
            encoders = tuple(tuple(r) for r in conn.execute(
                "SELECT name, version, fingerprint, dim, metric FROM encoders ORDER BY name"))
            top = conn.execute("SELECT max(rowid) FROM items").fetchone()[0]
            rows = conn.execute("SELECT n FROM generation").fetchone()
            digest = hashlib.sha1(repr((encoders, top, rows[0] if rows else None)).encode())
            for key, value in conn.execute("SELECT key, value FROM state ORDER BY key"):
                digest.update(f"{key}\0{value}\0".encode())
            local.version, local.mark = digest.hexdigest()[:20], mark
        return local.version

    @contextmanager
    def pinned_version(self):
        """Within the block, :meth:`data_version` on this thread answers the version read on entry
        instead of checking SQLite again (a read-only request looks items up several times: one
        check per request instead of one per lookup). Values memoised for that version are reused;
        a read the memo does not hold still reads the file as it is now (newer than its key at worst,
        as with any commit racing a read; the first check after the block drops it). Not for blocks
        that write: their own commits would not show. Nested blocks keep the outer pin."""
        local = self._local
        if getattr(local, "pinned", None) is not None:
            yield
            return
        local.pinned = self.data_version()
        try:
            yield
        finally:
            local.pinned = None

    def _memoised(self, key, compute):
        """``compute()``, kept until :meth:`data_version` changes (never inside a write transaction).
        A commit racing ``compute`` can only make the value newer than its key, and the next
        version check drops it."""
        version = self.data_version()
        if version is None:
            return compute()
        with self._memo_lock:
            if self._memo_version != version:
                self._memo, self._memo_version = {}, version
            if key in self._memo:
                return self._memo[key]
        value = compute()
        with self._memo_lock:
            if self._memo_version == version:
                self._memo[key] = value
        return value

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- items -----------------------------------------------------------------------------
    def count(self) -> int:
        return self._memoised("count", lambda: self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def get(self, item_id: str) -> Item | None:
        return self.get_many([item_id]).get(item_id)

    def _item_cache(self) -> tuple[dict[int, Item], dict[str, Item]] | None:
        """This data version's items read so far (by rowid, by id): metadata held in memory, filled
        by request-sized reads, so a search's hits cost no SQLite query once seen. None inside a
        write transaction."""
        if self.data_version() is None:
            return None
        return self._memoised("items", lambda: ({}, {}))

    def _remember(self, cache, items: Iterable[Item]) -> None:
        by_rowid, by_id = cache
        if len(by_rowid) < ITEM_CACHE_MAX:
            for item in items:
                by_rowid[item.rowid] = by_id[item.id] = item

    def preload_items(self, limit: int = ITEM_CACHE_MAX) -> int:
        """Read every item into this data version's item cache in one query, so no later request-
        sized read waits on SQLite (a server after warming). Returns how many were loaded: 0 when the
        catalog has more than ``limit`` items (they are then cached as requests read them) or inside
        a write transaction."""
        cache = self._item_cache()
        if cache is None or self.count() > limit:
            return 0
        items = self.items()
        self._remember(cache, items)
        return len(items)

    def get_many(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """id -> Item for those of ``item_ids`` that exist (one indexed query for the ones not yet in
        memory)."""
        return self._read_items([str(i) for i in item_ids], "id", 1)

    def get_by_rowids(self, rowids: Sequence[int]) -> dict[int, Item]:
        """rowid -> Item (one query for the rowids not yet in memory; request-sized reads are kept
        per data version, catalog-sized ones are not)."""
        return self._read_items([int(r) for r in rowids], "rowid", 0)

    def _read_items(self, keys: list, column: str, slot: int) -> dict:
        """``column`` value -> Item for ``keys``: from the per-version item cache (``slot`` 0 is by
        rowid, 1 by id) when the read is request-sized, the rest in one ``IN`` query per 900 keys."""
        cache = self._item_cache() if len(keys) <= CACHED_READ_MAX else None
        out = {k: cache[slot][k] for k in keys if k in cache[slot]} if cache else {}
        missing = [k for k in keys if k not in out]
        found = []
        for chunk in _chunks(missing, 900):
            marks = ",".join("?" * len(chunk))
            found += [_item(row) for row in self.db.execute(f"SELECT * FROM items WHERE {column} IN ({marks})", chunk)]
        if cache and found:
            self._remember(cache, found)
        out.update((item.rowid if slot == 0 else item.id, item) for item in found)
        return out

    def items(self, where: dict[str, Any] | None = None, limit: int | None = None, offset: int = 0,
              filters: Sequence = ()) -> list[Item]:
        clause, params = where_sql(where, filters)
        sql = f"SELECT * FROM items {clause} ORDER BY rowid"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        return [_item(r) for r in self.db.execute(sql, params)]

    def count_where(self, where: dict[str, Any] | None = None, filters: Sequence = ()) -> int:
        clause, params = where_sql(where, filters)
        return self.db.execute(f"SELECT COUNT(*) FROM items {clause}", params).fetchone()[0]

    def rowids_where(self, where: dict[str, Any] | None, filters: Sequence = ()) -> np.ndarray:
        """Sorted int64 rowids of the items matching ``where`` and every one of ``filters``.

        Catalogs of at least ``FAST_FILTER_MIN`` items answer from metadata columns held as numpy
        arrays per data version (:class:`ColumnArrays`: milliseconds at 1M items, where this SQL
        scans every row's JSON: ~1.7 s at 200k); smaller ones from SQLite (:meth:`rowids_where_sql`)."""
        fast = self._columns.rowids_where(where, filters) if self._columns.worth_it() else None
        return fast if fast is not None else self.rowids_where_sql(where, filters)

    def rowids_where_sql(self, where: dict[str, Any] | None, filters: Sequence = ()) -> np.ndarray:
        """:meth:`rowids_where` answered by SQLite (the reference the array path must equal)."""
        clause, params = where_sql(where, filters)
        rows = self.db.execute(f"SELECT rowid FROM items {clause} ORDER BY rowid", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def matching(self, ids: Sequence[str], filters: Sequence) -> set[str]:
        """Which item ``ids`` match every one of ``filters`` (boost conditions on a candidate list:
        the same SQL as filtering, so a boost and a filter never disagree)."""
        clause, params = where_sql(None, filters)
        found: set[str] = set()
        for chunk in _chunks([str(i) for i in ids], 900):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id FROM items {clause or 'WHERE 1'} AND id IN ({marks})"
            found.update(r[0] for r in self.db.execute(sql, params + chunk))
        return found

    def is_numeric(self, column: str) -> bool:
        """Whether every non-empty value of metadata ``column`` is a JSON number or numeric text
        (as :meth:`numeric_columns`); item columns (id, label, path) are text. One scan that stops
        at the first value that is not a number."""
        if column in ITEM_COLUMNS:
            return False
        path = f'$."{column}"'
        bad = self.db.execute(
            "SELECT 1 FROM items WHERE CASE json_type(meta, ?) WHEN 'integer' THEN 0 WHEN 'real' THEN 0 "
            "WHEN 'null' THEN 0 WHEN 'text' THEN NOT (trim(json_extract(meta, ?)) = '' OR "
            f"({_NUMERIC_TEXT.format(x='json_extract(meta, ?)')})) ELSE json_type(meta, ?) IS NOT NULL END LIMIT 1",
            (path, path, *[path] * _NUMERIC_TEXT_USES, path)).fetchone()
        return bad is None

    def numeric_columns(self) -> list[str]:
        """Sorted metadata keys whose every non-empty value is a JSON number or numeric text (as
        :func:`_number_sql` reads them) and that at least one item has a value for: the columns
        range filters accept. One pass over the items (callers cache it per data version)."""
        rows = self.db.execute(
            "SELECT j.key, SUM(NOT (j.type IN ('integer', 'real') OR (j.type = 'text' AND "
            f"{_NUMERIC_TEXT.format(x='j.value')}))) FROM items, json_each(items.meta) AS j "
            "WHERE j.type != 'null' AND NOT (j.type = 'text' AND trim(j.value) = '') GROUP BY j.key")
        return sorted(r[0] for r in rows if r[1] == 0 and r[0] not in ITEM_COLUMNS)

    def referenced(self, paths: Iterable[str], hashes: Iterable[str]) -> tuple[set[str], set[str]]:
        """(those of ``paths`` some item's image path is, those of ``hashes`` some item's sha256 is):
        one indexed query per 900 values (what file clean-up may not delete)."""
        used_paths: set[str] = set()
        used_hashes: set[str] = set()
        for chunk in _chunks(list(paths), 900):
            used_paths.update(r[0] for r in self.db.execute(
                f"SELECT path FROM items WHERE path IN ({','.join('?' * len(chunk))})", chunk))
        for chunk in _chunks(list(hashes), 900):
            used_hashes.update(r[0] for r in self.db.execute(
                f"SELECT sha256 FROM items WHERE sha256 IN ({','.join('?' * len(chunk))})", chunk))
        return used_paths, used_hashes

    def known_hashes(self, encoder: str, fingerprint: str,
                     ids: Sequence[str] | None = None) -> dict[str, tuple[str, bool]]:
        """id -> (sha256, has an up-to-date vector for this encoder), for every item or only ``ids``."""
        sql = ("SELECT i.id, i.sha256, v.sha256 AS vsha, v.fingerprint FROM items i "
               "LEFT JOIN vectors v ON v.item_rowid = i.rowid AND v.encoder = ?")
        if ids is None:
            rows = list(self.db.execute(sql, (encoder,)))
        else:
            rows = [r for chunk in _chunks(list(ids), 900) for r in self.db.execute(
                f"{sql} WHERE i.id IN ({','.join('?' * len(chunk))})", (encoder, *chunk))]
        return {r["id"]: (r["sha256"], r["vsha"] == r["sha256"] and r["fingerprint"] == fingerprint) for r in rows}

    def label_values(self, column: str = "label") -> list[tuple[str, int]]:
        expr, params = _column_expr(column)
        rows = self.db.execute(f"SELECT {expr} AS v, COUNT(*) FROM items GROUP BY v ORDER BY v", params)
        return [(r[0], r[1]) for r in rows if r[0] is not None]

    def has_column(self, column: str) -> bool:
        """Whether ``column`` is an item column or a metadata key of at least one item."""
        if column in ITEM_COLUMNS:
            return True
        return self.db.execute("SELECT 1 FROM items WHERE json_type(meta, ?) IS NOT NULL LIMIT 1",
                               (f'$."{column}"',)).fetchone() is not None

    def columns(self) -> list[str]:
        """Every column a filter may name: the item columns, then every item's metadata keys, sorted."""
        rows = self.db.execute("SELECT DISTINCT j.key FROM items, json_each(items.meta) AS j")
        return list(ITEM_COLUMNS) + sorted({r[0] for r in rows} - set(ITEM_COLUMNS))

    def metadata_columns(self) -> list[str]:
        keys: set[str] = set()
        for (meta,) in self.db.execute("SELECT meta FROM items LIMIT 1000"):
            keys.update(json.loads(meta))
        return sorted(keys)

    # -- writes ----------------------------------------------------------------------------
    def write_batch(self, items: Iterable[NewItem], vectors: np.ndarray, encoder: str, fingerprint: str,
                    metric: str) -> None:
        """Upsert items and their vectors for ``encoder`` in one transaction."""
        items = list(items)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(items) != len(vectors):
            raise ValueError("items and vectors differ in length")
        with self.transaction() as db:
            self._write_rows(db, items, vectors, encoder, fingerprint, metric)

    def upsert(self, items: Sequence[NewItem], vectors: np.ndarray, encoder: str, fingerprint: str, metric: str,
               refreshed: Sequence[NewItem] = ()) -> set[str]:
        """One write of the API / ``lookalike add``, in ONE transaction: ``items`` with their new
        ``vectors`` for ``encoder`` (as :meth:`write_batch`; other encoders' vectors of an image that
        changed are dropped, since they describe the old image) and path/label/metadata of
        ``refreshed`` items whose image is unchanged. Returns the ids of ``refreshed`` that changed.
        ``encoder``'s vector version moves with the new vectors (and another encoder's when its
        vectors of a changed image are dropped); a metadata-only refresh moves only
        :meth:`data_version`, so no process rebuilds a matrix or an index for it, while every
        process serving the catalog still sees the new metadata on its next request."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(items) != len(vectors):
            raise ValueError("items and vectors differ in length")
        with self.transaction() as db:
            stale = 0
            if len(items):
                self._write_rows(db, items, vectors, encoder, fingerprint, metric)
                for item in items:
                    stale += db.execute(
                        "DELETE FROM vectors WHERE encoder != ? AND sha256 != ? AND item_rowid = "
                        "(SELECT rowid FROM items WHERE id = ?)", (encoder, item.sha256, item.id)).rowcount
            changed = {item.id for item in refreshed if self._refresh_row(db, item)}
            if stale:
                db.execute("UPDATE encoders SET version = version + 1 WHERE name != ?", (encoder,))
        return changed

    def patch(self, item_id: str, label: Any = ..., metadata: dict[str, Any] | None = None,
              replace: bool = False) -> bool:
        """Change one item's ``label`` (``...``: keep it; None clears it) and ``metadata`` in one
        transaction: merged key by key (a None value removes that key) or, with ``replace``, the
        whole dict. False when there is no such item. No vector changes: only :meth:`data_version` moves."""
        with self.transaction() as db:
            row = db.execute("SELECT label, meta FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return False
            meta = {} if replace else json.loads(row["meta"])
            for key, value in (metadata or {}).items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            new_label = row["label"] if label is ... else label
            text = json.dumps(meta, ensure_ascii=False)
            if text != row["meta"] or new_label != row["label"]:
                db.execute("UPDATE items SET label = ?, meta = ?, updated_at = ? WHERE id = ?",
                           (new_label, text, time.time(), item_id))
        return True

    def _refresh_row(self, db, item: NewItem) -> bool:
        meta = json.dumps(item.metadata, ensure_ascii=False)
        return bool(db.execute(
            "UPDATE items SET path=?, label=?, meta=?, updated_at=? WHERE id=? AND "
            "(path IS NOT ? OR label IS NOT ? OR meta IS NOT ?)",
            (item.path, item.label, meta, time.time(), item.id, item.path, item.label, meta)).rowcount)

    def _write_rows(self, db, items: Sequence[NewItem], vectors: np.ndarray, encoder: str, fingerprint: str,
                    metric: str) -> None:
        """Upsert ``items`` and their ``vectors`` inside the open transaction ``db``; bumps ``encoder``'s version."""
        now = time.time()
        self._register_encoder(db, encoder, vectors.shape[1] if len(vectors) else 0, metric, fingerprint)
        for item, vec in zip(items, vectors):
            db.execute(
                "INSERT INTO items (id, path, label, meta, sha256, width, height, added_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET path=excluded.path, "
                "label=excluded.label, meta=excluded.meta, sha256=excluded.sha256, width=excluded.width, "
                "height=excluded.height, updated_at=excluded.updated_at",
                (item.id, item.path, item.label, json.dumps(item.metadata, ensure_ascii=False), item.sha256,
                 item.width, item.height, now, now))
            rowid = db.execute("SELECT rowid FROM items WHERE id = ?", (item.id,)).fetchone()[0]
            db.execute(
                "INSERT OR REPLACE INTO vectors (item_rowid, encoder, sha256, fingerprint, vec) VALUES (?, ?, ?, ?, ?)",
                (rowid, encoder, item.sha256, fingerprint, vec.tobytes()))
        db.execute("UPDATE encoders SET version = version + 1 WHERE name = ?", (encoder,))

    def update_metadata(self, items: Iterable[NewItem]) -> int:
        """Refresh path/label/metadata of unchanged images (a CSV edit needs no re-embedding; no
        encoder's vector version moves)."""
        changed = 0
        with self.transaction() as db:
            for item in items:
                changed += self._refresh_row(db, item)
        return changed

    def remove(self, ids: Iterable[str]) -> list[str]:
        removed = []
        with self.transaction() as db:
            for item_id in ids:
                if db.execute("DELETE FROM items WHERE id = ?", (item_id,)).rowcount:
                    removed.append(item_id)
            if removed:
                db.execute("UPDATE encoders SET version = version + 1")
        return removed

    def _register_encoder(self, db, name: str, dim: int, metric: str, fingerprint: str) -> None:
        row = db.execute("SELECT dim, fingerprint FROM encoders WHERE name = ?", (name,)).fetchone()
        if row is None:
            db.execute("INSERT INTO encoders (name, dim, metric, fingerprint) VALUES (?, ?, ?, ?)",
                       (name, dim, metric, fingerprint))
        elif row["fingerprint"] != fingerprint or row["dim"] != dim:
            # The model changed: vectors from the old one are incompatible; drop them.
            db.execute("DELETE FROM vectors WHERE encoder = ? AND fingerprint != ?", (name, fingerprint))
            db.execute("UPDATE encoders SET dim = ?, metric = ?, fingerprint = ? WHERE name = ?",
                       (dim, metric, fingerprint, name))

    # -- state -----------------------------------------------------------------------------
    def get_state(self, key: str, default: Any = None) -> Any:
        text = self._memoised(("state", key), lambda: (self.db.execute(
            "SELECT value FROM state WHERE key = ?", (key,)).fetchone() or [None])[0])
        return json.loads(text) if text is not None else default  # parsed per call: callers may mutate it

    def set_state(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- vectors ---------------------------------------------------------------------------
    def encoders(self) -> list[dict[str, Any]]:
        rows = self._memoised("encoders", lambda: [dict(r) for r in self.db.execute(
            "SELECT e.*, (SELECT COUNT(*) FROM vectors v WHERE v.encoder = e.name) AS count FROM encoders e ORDER BY name")])
        return [dict(r) for r in rows]

    def encoder_info(self, name: str) -> dict[str, Any] | None:
        row = self._memoised(("encoder", name), lambda: self.db.execute(
            "SELECT * FROM encoders WHERE name = ?", (name,)).fetchone())
        return dict(row) if row else None

    def vector_of(self, item_id: str, encoder: str) -> np.ndarray | None:
        """(dim,) float32 copy of the item's vector for ``encoder`` (None: no such item or vector),
        from the memory-mapped matrix when its cache is current, else one query."""
        item = self.get(item_id)
        if item is None:
            return None
        if self.data_version() is not None and self.encoder_info(encoder) is not None:
            rowids, matrix = self.matrix(encoder)
            at = int(np.searchsorted(rowids, item.rowid))
            if at < len(rowids) and rowids[at] == item.rowid:
                return np.array(matrix[at], dtype=np.float32)
        row = self.db.execute(
            "SELECT v.vec FROM vectors v JOIN items i ON i.rowid = v.item_rowid WHERE i.id = ? AND v.encoder = ?",
            (item_id, encoder)).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def vectors_of(self, item_ids: Sequence[str], encoder: str) -> np.ndarray:
        """(n, dim) float32 vectors of ``item_ids`` for ``encoder``, aligned (one query per 900 ids).
        KeyError naming the first id without a vector."""
        found: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(item_ids), 900):
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT i.id, v.vec FROM vectors v JOIN items i ON i.rowid = v.item_rowid "
                                       f"WHERE v.encoder = ? AND i.id IN ({marks})", [encoder, *chunk]):
                found[row[0]] = np.frombuffer(row[1], dtype=np.float32)
        missing = [i for i in item_ids if i not in found]
        if missing:
            raise KeyError(f"item {missing[0]!r} has no vector for encoder {encoder!r}")
        dim = (self.encoder_info(encoder) or {}).get("dim", 0)
        return np.stack([found[i] for i in item_ids]) if item_ids else np.zeros((0, dim), np.float32)

    def matrix(self, encoder: str) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, vectors) for every item with a vector, ordered by rowid; cached on disk.

        The vectors come back as a read-only memory map of the cache file: repeated calls (API
        requests, commands) cost no copy of a matrix that may be gigabytes, and pages are shared
        (also between API worker processes). Kept per :meth:`data_version`.
        """
        return self._memoised(("matrix", encoder), lambda: self._load_matrix(encoder))

    def vector_seq(self, encoder: str) -> int:
        """The vector log's position now (covers ``encoder``'s writes so far; 0: nothing logged)."""
        return self._log_position(self.db)

    @staticmethod
    def _log_position(db) -> int:
        # AUTOINCREMENT's counter: never goes back, also after the log is pruned
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'").fetchone()
        return int(row[0]) if row else 0

    def vector_delta(self, encoder: str, since: int, limit: int) -> VectorDelta | None:
        """``encoder``'s vector rows written or removed after log position ``since`` (one read
        snapshot, so ``version`` / ``seq`` name exactly what is returned). None when the log no
        longer reaches back to ``since`` (pruned), when more than ``limit`` items changed (a rebuild
        is cheaper), or outside a snapshot-able state (inside a write transaction)."""
        db = self.db
        if db.in_transaction:
            return None
        db.execute("BEGIN")
        try:
            floor = db.execute("SELECT seq FROM vector_log_floor WHERE encoder = ?", (encoder,)).fetchone()
            if floor is not None and floor[0] > since:
                return None
            seq = self._log_position(db)
            touched = [r[0] for r in db.execute(
                "SELECT DISTINCT item_rowid FROM vector_log WHERE encoder = ? AND seq > ? LIMIT ?",
                (encoder, since, limit + 1))]
            if len(touched) > limit:
                return None
            info = db.execute("SELECT version, fingerprint, dim FROM encoders WHERE name = ?", (encoder,)).fetchone()
            if info is None:
                return None
            found: dict[int, bytes] = {}
            for chunk in _chunks(touched, 900):
                marks = ",".join("?" * len(chunk))
                found.update((r[0], r[1]) for r in db.execute(
                    f"SELECT item_rowid, vec FROM vectors WHERE encoder = ? AND item_rowid IN ({marks})",
                    [encoder, *chunk]))
        finally:
            db.execute("COMMIT")
        rowids = np.array(sorted(found), np.int64)
        vectors = (np.frombuffer(b"".join(found[int(r)] for r in rowids), np.float32).reshape(len(rowids), info[2])
                   if len(rowids) else np.zeros((0, info[2]), np.float32))
        removed = np.setdiff1d(np.array(touched, np.int64), rowids)
        return VectorDelta(f"{info[0]}:{info[1]}", seq, removed, rowids, vectors)

    def _prune_vector_log(self, encoder: str, upto: int) -> None:
        """Forget ``encoder``'s log entries up to ``upto`` (after a full rebuild of its matrix cache:
        anything older than that rebuilds too). Best effort: a busy or read-only database keeps them."""
        self.db.execute("PRAGMA busy_timeout = 200")   # never hold a reader up behind a long write
        try:
            with self.transaction() as db:
                db.execute("DELETE FROM vector_log WHERE encoder = ? AND seq <= ?", (encoder, upto))
                db.execute("INSERT INTO vector_log_floor (encoder, seq) VALUES (?, ?) ON CONFLICT(encoder) "
                           "DO UPDATE SET seq = max(seq, excluded.seq)", (encoder, upto))
        except sqlite3.OperationalError:
            pass
        finally:
            self.db.execute("PRAGMA busy_timeout = 30000")

    def _load_matrix(self, encoder: str) -> tuple[np.ndarray, np.ndarray]:
        info = self.encoder_info(encoder)
        if info is None:
            raise KeyError(f"no vectors for encoder {encoder!r} in this catalog")
        # Plain .npy files beside a stamp, not an artifacts.write_cache .npz: only a .npy can be memory-mapped.
        cache = self.dir / "cache" / encoder_key(encoder)
        # Several server processes may find the cache stale at once: one rewrites it while the others
        # wait, and nobody reads rowids.npy of one version beside matrix.npy of another.
        with file_lock(cache.parent / f".{cache.name}.lock"):
            stamp = self.version(encoder)
            if not ((cache / "stamp").exists() and (cache / "stamp").read_text() == stamp):
                if not self._update_matrix_cache(encoder, info, cache):
                    self._write_matrix_cache(encoder, info["dim"], cache)
            try:
                rowids, matrix = np.load(cache / "rowids.npy"), np.load(cache / "matrix.npy", mmap_mode="r")
                torn = matrix.shape != (len(rowids), info["dim"])
            except (OSError, ValueError):   # a derived file lost in a crash (see derived_writes)
                torn = True
            if torn:
                self._write_matrix_cache(encoder, info["dim"], cache)
                rowids, matrix = np.load(cache / "rowids.npy"), np.load(cache / "matrix.npy", mmap_mode="r")
            rowids.setflags(write=False)  # shared by every caller until the data version moves
            return rowids, matrix

    def _update_matrix_cache(self, encoder: str, info: dict[str, Any], cache: Path) -> bool:
        """Bring a stale cache up to date from the rows written since it was made (the vector log):
        the kept rows are copied from the old file, only the changed ones read from SQLite — after a
        write, instead of reading every vector blob again. False (rebuild) when there is no usable
        old cache (other weights or dim, no log position, torn files) or the change is too large."""
        try:
            old_stamp = (cache / "stamp").read_text()
            since = int((cache / "seq").read_text())
            old_rowids = np.load(cache / "rowids.npy")
            old = np.load(cache / "matrix.npy", mmap_mode="r")
        except (OSError, ValueError):
            return False
        if old_stamp.split(":", 1)[-1] != info["fingerprint"] or old.shape != (len(old_rowids), info["dim"]):
            return False
        delta = self.vector_delta(encoder, since, int(DELTA_SHARE * len(old_rowids)) + DELTA_MIN)
        if delta is None:
            return False
        kept = np.flatnonzero(~np.isin(old_rowids, delta.touched))
        # both sides are sorted by rowid: each kept row moves down by the new rows before it, so the
        # kept rows copy over as a few contiguous runs (one per change), the new ones go in between
        at_old = np.arange(len(kept)) + np.searchsorted(delta.rowids, old_rowids[kept])
        at_new = np.arange(len(delta.rowids)) + np.searchsorted(old_rowids[kept], delta.rowids)
        rowids = np.empty(len(kept) + len(delta.rowids), np.int64)
        rowids[at_old], rowids[at_new] = old_rowids[kept], delta.rowids
        breaks = np.flatnonzero((np.diff(kept) != 1) | (np.diff(at_old) != 1)) + 1
        # (position in the new file, rows): the runs of old rows and the new rows, written in order
        # with plain writes (a writable memory map's flush is an msync: as slow as the fsync spared)
        pieces = [(int(at_old[run[0]]), ("old", int(kept[run[0]]), len(run)))
                  for run in (np.split(np.arange(len(kept)), breaks) if len(kept) else ())]
        pieces += [(int(at), ("new", j, 1)) for j, at in enumerate(at_new)]
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": (len(rowids), int(info["dim"]))}
        with derived_writes(), atomic_file(cache / "matrix.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for _, (side, first, count) in sorted(pieces, key=lambda piece: piece[0]):
                if side == "new":
                    f.write(delta.vectors[first].tobytes())
                    continue
                for start in range(first, first + count, 65_536):   # bounded memory on a large catalog
                    f.write(np.ascontiguousarray(old[start:min(start + 65_536, first + count)]).tobytes())
        with derived_writes():
            save_npy(cache / "rowids.npy", rowids)
            # the stamp last: a crash before it leaves a stale stamp; re-applying a delta is idempotent
            write_text(cache / "seq", str(delta.seq))
            write_text(cache / "stamp", delta.version)
        self._trim_vector_log(encoder, int(DELTA_SHARE * len(rowids)) + DELTA_MIN)
        return True

    def _trim_vector_log(self, encoder: str, keep: int) -> None:
        """Keep ``encoder``'s log bounded while a served catalog only ever updates in place: once it
        holds more than 2·``keep`` entries, forget all but the newest ``keep`` (a consumer further
        behind than that would rebuild anyway, past the delta limit, or does now)."""
        row = self.db.execute("SELECT seq FROM vector_log WHERE encoder = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
                              (encoder, 2 * keep)).fetchone()
        if row is not None:
            upto = self.db.execute("SELECT seq FROM vector_log WHERE encoder = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
                                   (encoder, keep)).fetchone()[0]
            self._prune_vector_log(encoder, upto)

    def _write_matrix_cache(self, encoder: str, dim: int, cache: Path) -> None:
        db = self.db
        db.execute("BEGIN")  # one read snapshot: the stamp names exactly the rows written
        try:
            stamp = self.version(encoder)
            seq = self._log_position(db)
            rows = db.execute("SELECT item_rowid, vec FROM vectors WHERE encoder = ? ORDER BY item_rowid",
                              (encoder,)).fetchall()
        finally:
            db.execute("COMMIT")
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim) \
            if rows else np.zeros((0, dim), np.float32)
        cache.mkdir(parents=True, exist_ok=True)
        save_npy(cache / "rowids.npy", rowids)
        save_npy(cache / "matrix.npy", matrix)
        write_text(cache / "seq", str(seq))
        write_text(cache / "stamp", stamp)
        self._prune_vector_log(encoder, seq)

    def version(self, encoder: str) -> str:
        info = self.encoder_info(encoder)
        return f"{info['version']}:{info['fingerprint']}" if info else "none"


class _Transaction:
    """``with store.transaction() as db:`` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _item(row: sqlite3.Row) -> Item:
    return Item(rowid=row["rowid"], id=row["id"], path=row["path"], label=row["label"],
                metadata=json.loads(row["meta"]), sha256=row["sha256"], width=row["width"], height=row["height"])


def _column_expr(column: str) -> tuple[str, list]:
    if column in ITEM_COLUMNS:
        return column, []
    return "json_extract(meta, ?)", [f'$."{column}"']


def where_sql(where: dict[str, Any] | None, filters: Sequence = ()) -> tuple[str, list]:
    """``{"label": "shoes", "colour": ["red", "blue"]}`` (a list means any of) and ``filters``
    (``lookalike.search.filters.Filter``: ``(column, op, values)`` tuples, semantics documented
    there) -> one SQL WHERE clause, all conditions ANDed ("" when there are none)."""
    parts, params = [], []
    for column, value in (where or {}).items():
        expr, p = _column_expr(column)
        values = list(value) if isinstance(value, (list, tuple, set)) else [value]
        values = [str(v) for v in values]
        # item columns are TEXT already: compared bare, SQLite uses their indexes (id, label)
        compared = expr if column in ITEM_COLUMNS else f"CAST({expr} AS TEXT)"
        parts.append(f"{compared} IN ({','.join('?' * len(values))})" if values else "0")
        params += p + values if values else []  # "0" binds nothing
    for column, op, values in filters:
        sql, p = _filter_sql(column, op, tuple(values))
        parts.append(sql)
        params += p
    return ("WHERE " + " AND ".join(parts), params) if parts else ("", [])


# Text that reads as a number (NUMBER_RE) in GLOB, which has no full regex: starts with a digit,
# sign or point; holds a digit; only digits, sign, point and exponent; a sign only first or after
# the exponent ("2025-01-01" is a date, not a number); at most one point.
_NUMERIC_TEXT = ("trim({x}) GLOB '[-+.0-9]*' AND trim({x}) GLOB '*[0-9]*' AND trim({x}) NOT GLOB '*[^-+.eE0-9]*' "
                 "AND trim({x}) NOT GLOB '*[.0-9][-+]*' AND trim({x}) NOT GLOB '*[-+][-+]*' AND trim({x}) NOT GLOB '*.*.*'")
_NUMERIC_TEXT_USES = _NUMERIC_TEXT.count("{x}")


def _number_sql(expr: str, p: list) -> tuple[str, list]:
    """SQL for the number a stored value stands for — a JSON number, or numeric text (CSV cells)
    cast to REAL — else NULL (so a range never matches it); no Python call per row."""
    sql = (f"(CASE WHEN typeof({expr}) IN ('integer', 'real') THEN {expr} "
           f"WHEN typeof({expr}) = 'text' AND {_NUMERIC_TEXT.format(x=expr)} THEN CAST(trim({expr}) AS REAL) END)")
    return sql, p * (4 + _NUMERIC_TEXT_USES)


def _filter_sql(column: str, op: str, values: tuple) -> tuple[str, list]:
    expr, p = _column_expr(column)
    present = f"({expr} IS NOT NULL AND CAST({expr} AS TEXT) != '')"
    if op in ("exists", "missing"):
        return (present if op == "exists" else f"NOT {present}"), p * 2
    if op in ("<", "<=", ">", ">="):
        # The column holds numbers only (Catalog.check_filters validates it with numeric_columns),
        # so a plain cast is exact and reads the JSON once per row; empty values stay NULL.
        return f"CAST(NULLIF(trim({expr}), '') AS REAL) {op} ?", p + [float(values[0])]
    if op not in ("=", "!=", "in", "not in"):
        raise ValueError(f"unknown filter operator {op!r}")
    texts = [str(v) for v in values]
    numbers = [n for n in (to_number(v) for v in texts) if n is not None]
    match = f"CAST({expr} AS TEXT) IN ({','.join('?' * len(texts))})"
    params = p + texts
    if numbers:  # size=40 also matches 40.0 and "40"
        number, q = _number_sql(expr, p)
        # coalesce: a value that is no number gives NULL here, which NOT (...) would keep NULL and
        # so drop "red" from "colour!=0"
        match = f"({match} OR coalesce({number} IN ({','.join('?' * len(numbers))}), 0))"
        params += q + numbers
    if op in ("=", "in"):
        return match, params
    return f"NOT ({present} AND {match})", p * 2 + params  # "not red" includes items with no colour


# From this many items (max rowid) on, rowids_where answers from ColumnArrays.
FAST_FILTER_MIN = 20_000


class ColumnArrays:
    """Metadata columns of one store as numpy arrays, loaded per column on first use and dropped
    whenever a row of items or vectors is written (the ``generation`` counter its triggers keep: a
    metadata-only edit moves no encoder version; the token is read with one small query per call,
    so writes from other processes are seen too).

    Each column holds, per item in rowid order, the values the SQL of :func:`where_sql` compares —
    computed by SQLite itself with the same expressions, so both paths agree by construction:
    the text (``CAST(x AS TEXT)``, factorised into int32 codes), whether it is present, the number
    it stands for (:func:`_number_sql`) and the value range filters compare. A filter is then a
    few vectorised comparisons (``tests/data/test_column_arrays.py`` checks equality with the SQL
    answers under hypothesis)."""

    def __init__(self, store: "Store"):
        self._store = store
        self._lock = threading.Lock()
        self._token = None
        self._rowids: np.ndarray | None = None
        self._columns: dict[str, dict[str, Any]] = {}

    def worth_it(self) -> bool:
        row = self._store.db.execute("SELECT max(rowid) FROM items").fetchone()
        return (row[0] or 0) >= FAST_FILTER_MIN

    def _fresh(self) -> None:
        token = tuple(self._store.db.execute(
            "SELECT (SELECT coalesce(sum(version), 0) || ':' || count(*) FROM encoders), "
            "(SELECT max(rowid) FROM items), (SELECT n FROM generation)").fetchone())
        if token != self._token:
            self._token, self._rowids, self._columns = token, None, {}

    def _column(self, column: str) -> dict[str, Any]:
        cached = self._columns.get(column)
        if cached is not None:
            return cached
        expr, p = _column_expr(column)
        number, q = _number_sql(expr, p)
        rows = self._store.db.execute(
            f"SELECT rowid, CAST({expr} AS TEXT), ({expr} IS NOT NULL AND CAST({expr} AS TEXT) != ''), "
            f"{number}, CAST(NULLIF(trim({expr}), '') AS REAL) FROM items ORDER BY rowid",
            p * 3 + q + p).fetchall()
        rowids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        if self._rowids is None or not np.array_equal(self._rowids, rowids):
            self._rowids, self._columns = rowids, {}
        codes: dict[str, int] = {}
        text = np.fromiter((-1 if r[1] is None else codes.setdefault(r[1], len(codes)) for r in rows),
                           np.int32, len(rows))
        cached = {"codes": codes, "text": text,
                  "present": np.fromiter((bool(r[2]) for r in rows), bool, len(rows)),
                  "number": np.fromiter((np.nan if r[3] is None else r[3] for r in rows), np.float64, len(rows)),
                  "range": np.fromiter((np.nan if r[4] is None else r[4] for r in rows), np.float64, len(rows))}
        self._columns[column] = cached
        return cached

    def _text_in(self, col: dict[str, Any], texts: Sequence[str]) -> np.ndarray:
        wanted = [col["codes"][t] for t in texts if t in col["codes"]]
        return np.isin(col["text"], wanted) if wanted else np.zeros(len(col["text"]), bool)

    def rowids_where(self, where: dict[str, Any] | None, filters: Sequence = ()) -> np.ndarray | None:
        """As :meth:`Store.rowids_where`; None for an operator this path does not know."""
        with self._lock:
            self._fresh()
            mask = None
            conditions = [(column, "where", value) for column, value in (where or {}).items()]
            conditions += [(column, op, tuple(values)) for column, op, values in filters]
            for column, op, values in conditions:
                col = self._column(column)
                if op == "where":
                    values = list(values) if isinstance(values, (list, tuple, set)) else [values]
                    hit = self._text_in(col, [str(v) for v in values])
                elif op in ("exists", "missing"):
                    hit = col["present"] if op == "exists" else ~col["present"]
                elif op in ("<", "<=", ">", ">="):
                    with np.errstate(invalid="ignore"):  # NaN (no value) never matches, as NULL in SQL
                        hit = {"<": np.less, "<=": np.less_equal, ">": np.greater,
                               ">=": np.greater_equal}[op](col["range"], float(values[0]))
                elif op in ("=", "!=", "in", "not in"):
                    texts = [str(v) for v in values]
                    numbers = [n for n in (to_number(v) for v in texts) if n is not None]
                    hit = self._text_in(col, texts)
                    if numbers:
                        hit = hit | np.isin(col["number"], numbers)
                    if op in ("!=", "not in"):
                        hit = ~(col["present"] & hit)
                else:
                    return None
                mask = hit if mask is None else mask & hit
            if self._rowids is None:  # no condition at all
                return self._store.rowids_where_sql(None)
            return self._rowids if mask is None else self._rowids[mask]


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _chunks(seq: list, size: int):
    for i in range(0, len(seq), size):
        yield seq[i:i + size]
