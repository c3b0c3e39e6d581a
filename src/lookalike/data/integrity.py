"""Integrity of one catalog's store and files (``lookalike check``): what :class:`IntegrityReport` holds.

Checks, each a :class:`Problem` with a stable ``code`` (``error`` = something is wrong and will not
heal by itself; ``warning`` = it will, or it may be intended):

* ``sqlite`` (error): SQLite's ``PRAGMA quick_check`` fails;
* ``orphan-vectors`` (error): vectors whose item is gone; ``bad-vectors`` (error): a vector blob
  whose length is not the encoder's dim x 4 bytes; ``stale-vectors`` (error): vectors from another
  model than the encoder's recorded fingerprint;
* ``no-vector`` (error): items without a vector for the default encoder (search can never return them);
  ``empty-encoder`` (warning): an encoder row with no vectors;
* ``missing-image`` (error): an item whose image file is gone (thumbnails, re-embedding fail);
* ``bad-id`` (error): an item id the API cannot serve (:func:`lookalike.data.sources.invalid_id`:
  control characters, over 512 characters), from an ingest before those ids were refused;
* ``matrix-cache`` (error): a vector cache stamped with the current data version whose row count
  or shape disagrees with the store; ``stale-cache`` (warning: rebuilt on next use);
* ``orphan-files`` (warning, from ``Catalog.check``): uploaded images and thumbnails no item needs
  any more (:func:`orphan_files`; a delete removes its own at once, these are left by a crash or an
  older version; ``lookalike check --repair`` removes them).

Index files are checked one layer up (:func:`lookalike.search.indexes.check_indexes`), the
whole catalog by ``Catalog.check``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from lookalike.data.artifacts import encoder_key
from lookalike.data.sources import invalid_id
from lookalike.data.store import Store

EXAMPLES = 5   # ids / paths named per problem


@dataclass
class Problem:
    severity: str            # "error" | "warning"
    code: str                # e.g. "missing-image" (module docstring lists them)
    message: str
    count: int = 1
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message, "count": self.count,
                "examples": self.examples}


@dataclass
class IntegrityReport:
    """``catalog`` name, ``items``, ``encoders`` (name -> vector count), ``index_folders`` (saved index
    folders checked) and ``problems``; ``ok`` when none is an error."""
    catalog: str
    items: int = 0
    encoders: dict[str, int] = field(default_factory=dict)
    index_folders: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {"catalog": self.catalog, "ok": self.ok, "items": self.items, "encoders": self.encoders,
                "index_folders": self.index_folders, "problems": [p.to_dict() for p in self.problems]}


def check_store(store: Store, default_encoder: str | None, *, images: bool = True) -> IntegrityReport:
    """Check ``store`` (the checks in the module docstring except the index ones). ``images=False``
    skips the per-item file check (a stat per item). Reads only; never repairs."""
    report = IntegrityReport(catalog=store.dir.name)
    db = store.db
    bad = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
    if bad != ["ok"]:
        report.problems.append(Problem("error", "sqlite", f"the SQLite file is damaged: {bad[0]}", len(bad), bad[:EXAMPLES]))
        return report   # nothing below can be trusted
    report.items = store.count()
    orphans = db.execute("SELECT COUNT(*) FROM vectors WHERE item_rowid NOT IN (SELECT rowid FROM items)").fetchone()[0]
    if orphans:
        report.problems.append(Problem("error", "orphan-vectors", f"{orphans} vector(s) belong to no item", orphans))
    for enc in store.encoders():
        name, count = enc["name"], enc["count"]
        report.encoders[name] = count
        if count == 0:
            report.problems.append(Problem("warning", "empty-encoder", f"encoder {name!r} has no vectors"))
            continue
        rows = db.execute("SELECT i.id FROM vectors v JOIN items i ON i.rowid = v.item_rowid "
                          "WHERE v.encoder = ? AND length(v.vec) != ?", (name, enc["dim"] * 4)).fetchall()
        if rows:
            report.problems.append(Problem("error", "bad-vectors", f"{len(rows)} {name!r} vector(s) are not "
                                           f"{enc['dim']} float32 values", len(rows), [r[0] for r in rows[:EXAMPLES]]))
        stale = db.execute("SELECT COUNT(*) FROM vectors WHERE encoder = ? AND fingerprint != ?",
                           (name, enc["fingerprint"])).fetchone()[0]
        if stale:
            report.problems.append(Problem("error", "stale-vectors", f"{stale} {name!r} vector(s) come from another "
                                           "model than the encoder's fingerprint", stale))
        _check_matrix_cache(store, name, enc["dim"], count, report)
    if default_encoder is not None and report.items:
        rows = db.execute("SELECT id FROM items WHERE rowid NOT IN (SELECT item_rowid FROM vectors WHERE encoder = ?) "
                          "ORDER BY rowid", (default_encoder,)).fetchall()
        if rows:
            report.problems.append(Problem("error", "no-vector", f"{len(rows)} item(s) have no vector for the default "
                                           f"encoder {default_encoder!r} (search never returns them)", len(rows),
                                           [r[0] for r in rows[:EXAMPLES]]))
    bad_ids = [item_id for (item_id,) in db.execute("SELECT id FROM items ORDER BY rowid") if invalid_id(item_id)]
    if bad_ids:
        report.problems.append(Problem("error", "bad-id", f"{len(bad_ids)} item id(s) cannot be served by the API "
                                       "(control characters or over 512 characters; indexed before ingest checked "
                                       "them): `lookalike remove` them, rename the file or fix the id, re-index", len(bad_ids),
                                       [repr(i[:80]) for i in bad_ids[:EXAMPLES]]))
    if images:
        missing = [(item_id, path) for item_id, path in db.execute("SELECT id, path FROM items ORDER BY rowid")
                   if not Path(path).is_file()]
        if missing:
            report.problems.append(Problem("error", "missing-image", f"{len(missing)} item image file(s) are missing",
                                           len(missing), [f"{i}: {p}" for i, p in missing[:EXAMPLES]]))
    return report


def orphan_files(store: Store, images_dir: Path, thumbs_dir: Path,
                 candidates: Iterable[tuple[str, str]] | None = None) -> list[Path]:
    """Files kept for items that no longer need them: uploaded images under ``images_dir`` (the
    write API's content-addressed copies) whose path no item has, and thumbnails under
    ``thumbs_dir/<size>/<sha256>.jpg`` whose content hash no item has. ``candidates``: (path, sha256)
    of just-removed or replaced items to look at (a delete's cleanup: one query), else every file of
    both folders (``lookalike check``). Never a file outside those folders (images indexed from a
    folder or URL stay where they are)."""
    images_dir, thumbs_dir = Path(images_dir), Path(thumbs_dir)
    if candidates is None:
        images = [p for p in images_dir.rglob("*") if p.is_file() and not p.name.startswith(".")] if images_dir.is_dir() else []
        thumbs = [p for p in thumbs_dir.glob("*/*.jpg")] if thumbs_dir.is_dir() else []
        paths, hashes = {str(p) for p in images}, {p.stem for p in thumbs}
    else:
        candidates = list(candidates)
        paths = {path for path, _ in candidates if Path(path).parent.parent == images_dir}
        hashes = {sha for _, sha in candidates if sha}
        images = [Path(p) for p in paths]
        thumbs = [t for sha in hashes for t in thumbs_dir.glob(f"*/{sha}.jpg")] if thumbs_dir.is_dir() else []
    used_paths, used_hashes = store.referenced(paths, hashes)
    return sorted([p for p in images if str(p) not in used_paths and p.is_file()] +
                  [t for t in thumbs if t.stem not in used_hashes])


def _check_matrix_cache(store: Store, encoder: str, dim: int, count: int, report: IntegrityReport) -> None:
    cache = store.dir / "cache" / encoder_key(encoder)
    stamp = cache / "stamp"
    if not stamp.exists():
        return   # built on first use
    if stamp.read_text() != store.version(encoder):
        report.problems.append(Problem("warning", "stale-cache", f"the {encoder!r} vector cache predates the last "
                                       "write (rebuilt on next use)"))
        return
    try:
        rowids = np.load(cache / "rowids.npy", mmap_mode="r")
        matrix = np.load(cache / "matrix.npy", mmap_mode="r")
        shape_ok = len(rowids) == count and matrix.shape == (count, dim)
    except (OSError, ValueError) as exc:
        report.problems.append(Problem("error", "matrix-cache", f"the {encoder!r} vector cache is unreadable: {exc}"))
        return
    if not shape_ok:
        report.problems.append(Problem("error", "matrix-cache", f"the {encoder!r} vector cache holds {len(rowids)} rows "
                                       f"of shape {tuple(matrix.shape)} but the store has {count} x {dim}"))
