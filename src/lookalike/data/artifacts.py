"""Files on disk, written safely: atomic writes and caches keyed by what they were computed from.

Atomic writes. Files that something else may read while they are replaced (index files, reports,
configs, caches, thumbnails, maps) are written through :func:`atomic_file` or :func:`atomic_path`
(or the helpers below, built on them): the content goes to a temporary
file in the target's directory (``os.replace`` is atomic only within one file system), is flushed
and fsynced, then renamed over the target. A reader sees the old file or the new one, never a
partial one, and a crash or exception mid-write leaves the old file intact and no temporary behind.
The temporary's name holds the process and thread ids, so concurrent writers of one file (API worker
threads making the same thumbnail) never share it; the last rename wins with a whole file.

Caches. Two shapes of "recompute only when the inputs changed", both one ``.npz`` per cache:

- :func:`read_cache` / :func:`write_cache`: a whole result (named arrays + a small JSON dict)
  stored with a ``stamp``, a digest of everything it was computed from (:func:`digest`); a stale
  stamp reads as a miss.
- :class:`KeyedCache`: rows keyed by a string per input (an image's content hash) -> fixed-shape
  arrays, for features computed per image: a re-run computes only the keys it has not seen.

Arrays are stored without pickles (``allow_pickle=False``), strings as numpy unicode arrays.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

try:
    import fcntl
except ImportError:  # Windows: file_lock runs unlocked
    fcntl = None


def encoder_key(name: str) -> str:
    """A file-system-safe name for an encoder spec ("vae:my/model" -> "vae--my_model"): the folder
    or file stem of everything stored per encoder (vector cache, indexes, clusters, maps)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace(":", "--"))


# -- atomic writes -------------------------------------------------------------------------------
_unsynced = threading.local()


@contextlib.contextmanager
def derived_writes() -> Iterator[None]:
    """Atomic writes made by this thread inside the block skip the fsync (still a whole-file
    rename): for files derived from the store and rebuilt from it whenever they cannot be read —
    the vector-matrix cache and saved indexes updated after every write, where the fsyncs were
    most of the ~250 ms each write cost every serving process. A crash may lose such a file's
    latest version (the rename over the old one is the barrier ext4's ``auto_da_alloc`` flushes
    at), never the store's."""
    before = getattr(_unsynced, "on", False)
    _unsynced.on = True
    try:
        yield
    finally:
        _unsynced.on = before


def _temp_name(target: Path) -> Path:
    # Hidden and ending in .tmp: globs such as "*.json" in the same folder never pick it up.
    return target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for a writer that needs a file name (faiss, ONNX export, Pillow);
    when the block ends without an exception the file is fsynced (unless inside
    :func:`derived_writes`) and renamed to ``target``.

    The parent directory is created. On an exception the temporary is removed and ``target`` is
    left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(target)
    try:
        yield tmp
        if not getattr(_unsynced, "on", False):
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_file(path, "w") as f:`` like ``open(path, "w")``, but all-or-nothing.

    ``mode`` is ``"wb"`` or ``"w"`` (text: UTF-8, newlines written as given).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes a whole file: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(target) as tmp:
        with open(tmp, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})) as f:
            yield f


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created; never deleted) for the block, across
    processes and threads: ``fcntl.flock`` on a file descriptor of its own, so the API's worker
    processes (``lookalike serve --workers``) never rebuild one cache or index folder at the same
    time, nor read it half-replaced. Where ``fcntl`` does not exist (Windows) the block runs unlocked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(target, "wb") as f:
        f.write(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str) -> Path:
    with atomic_file(target, "w") as f:
        f.write(text)
    return Path(target)


def write_json(target: str | os.PathLike, doc: Any, indent: int | None = None, **dumps_options: Any) -> Path:
    """``json.dumps(doc, indent=indent, **dumps_options)`` written atomically."""
    return write_text(target, json.dumps(doc, indent=indent, **dumps_options))


def save_npy(target: str | os.PathLike, array: np.ndarray) -> Path:
    """One array as ``.npy`` (``np.load(path, mmap_mode="r")`` can map it)."""
    with atomic_file(target, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    return Path(target)


def save_npz(target: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Named arrays as one uncompressed ``.npz`` (no pickles: object arrays are refused)."""
    with atomic_file(target, "wb") as f:
        np.savez(f, **{name: _no_objects(name, value) for name, value in arrays.items()})
    return Path(target)


def save_image(target: str | os.PathLike, image: Image.Image, format: str | None = None, **params: Any) -> Path:
    """A Pillow image, its format from ``format`` or the target's extension; ``params`` go to
    ``Image.save`` (e.g. ``quality=85``, ``optimize=True``)."""
    target = Path(target)
    format = format or Image.registered_extensions().get(target.suffix.lower())
    if format is None:
        raise ValueError(f"cannot tell the image format of {target.name!r}; pass format=")
    with atomic_file(target, "wb") as f:
        image.save(f, format, **params)
    return target


def _no_objects(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"array {name!r} holds Python objects; store strings as str, not None/mixed")
    return array


# -- whole-result caches -------------------------------------------------------------------------
def digest(*parts: Any, length: int = 16) -> str:
    """A hex sha256 of ``parts`` (str, bytes, numbers, or iterables of those, one per line): the
    stamp of a cache entry. Changing, adding or reordering any part changes it."""
    h = hashlib.sha256()
    for part in parts:
        for piece in ([part] if isinstance(part, (str, bytes, int, float)) or part is None else part):
            h.update(piece if isinstance(piece, bytes) else str(piece).encode())
            h.update(b"\n")
        h.update(b"\x00")
    return h.hexdigest()[:length]


@dataclass
class Cached:
    """A cache entry: named arrays plus a JSON-able dict (ids, labels, errors...)."""
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


_STAMP, _META = "__stamp__", "__meta__"


def read_cache(path: str | os.PathLike, stamp: str) -> Cached | None:
    """The entry at ``path`` if it was written with ``stamp``; None when missing, stale or unreadable
    (a cache is never worth failing for: the caller recomputes)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if _STAMP not in z.files or str(z[_STAMP]) != stamp:
                return None
            meta = json.loads(str(z[_META])) if _META in z.files else {}
            return Cached({k: z[k] for k in z.files if k not in (_STAMP, _META)}, meta)
    except (OSError, ValueError, KeyError):
        return None


def write_cache(path: str | os.PathLike, stamp: str, arrays: Mapping[str, np.ndarray],
                meta: Mapping[str, Any] | None = None) -> Path:
    """Store ``arrays`` and ``meta`` under ``stamp`` (atomically, replacing any older entry)."""
    extra = {_STAMP: np.array(stamp)}
    if meta is not None:
        extra[_META] = np.array(json.dumps(meta))
    return save_npz(path, **arrays, **extra)


# -- per-key caches ------------------------------------------------------------------------------
class KeyedCache:
    """Rows of named arrays per string key (e.g. image sha256 -> features), kept in one ``.npz``.

        cache = KeyedCache(path, ("codes",))
        todo = cache.missing(keys)
        for key in todo: cache[key] = compute(key)        # one array per column (a tuple for several)
        cache.save()                                      # only writes when something was added

    ``stamp`` names how rows were computed (model weights, descriptor version): a file written with
    another stamp is ignored, so changing the method recomputes everything. Rows of one column share
    a shape and dtype. ``path`` None keeps the cache in memory only.
    """

    def __init__(self, path: str | os.PathLike | None, columns: Sequence[str], stamp: str = ""):
        if not columns or "keys" in columns:
            raise ValueError("give the column names (not 'keys', which holds the keys)")
        self.path = Path(path) if path is not None else None
        self.columns = tuple(columns)
        self.stamp = stamp
        self.rows: dict[str, tuple[np.ndarray, ...]] = {}
        self._dirty = False
        stored = read_cache(self.path, stamp) if self.path is not None else None
        if stored is not None and set(self.columns) | {"keys"} <= set(stored.arrays):
            columns = [stored.arrays[c] for c in self.columns]
            self.rows = {key: tuple(c[i] for c in columns) for i, key in enumerate(stored.arrays["keys"].tolist())}

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __getitem__(self, key: str):
        """The row of ``key``: one array, or a tuple with one per column when there are several."""
        row = self.rows[key]
        return row[0] if len(self.columns) == 1 else row

    def get(self, key: str, default=None):
        return self[key] if key in self.rows else default

    def __setitem__(self, key: str, row) -> None:
        row = (row,) if len(self.columns) == 1 else tuple(row)
        if len(row) != len(self.columns):
            raise ValueError(f"a row has {len(self.columns)} arrays ({', '.join(self.columns)}), got {len(row)}")
        self.rows[str(key)] = tuple(np.asarray(v) for v in row)
        self._dirty = True

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys (in order, without repeats) that have no row yet."""
        return list(dict.fromkeys(k for k in keys if k not in self.rows))

    def save(self) -> None:
        """Write the file if rows were added since it was read (nothing to write: nothing written)."""
        if self.path is None or not self._dirty or not self.rows:
            return
        values = list(self.rows.values())
        arrays = {c: np.stack([row[i] for row in values]) for i, c in enumerate(self.columns)}
        write_cache(self.path, self.stamp, {"keys": np.array(list(self.rows)), **arrays})
        self._dirty = False
