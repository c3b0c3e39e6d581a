"""Catalog snapshots: one tar file that moves a catalog between machines (``lookalike export/import``).

A snapshot holds, under fixed prefixes:

* ``manifest.json`` (always the first member): ``format`` / ``format_version``, the lookalike
  version that wrote it, the catalog name, item count, each encoder's name, dim, metric,
  fingerprint and vector count, whether images are included, and the size + SHA-256 of every
  other file;
* ``catalog/``: ``catalog.sqlite`` (a consistent copy made with SQLite's online backup API, so a
  catalog being served or written can be exported), ``index/``, the memory-mapped vector caches
  (``cache/<encoder-key>/``), ``artifacts/`` and ``reports/`` — derived files keep their version
  stamps, so the imported catalog serves at once without rebuilding;
* ``images/<sha256><ext>``: every item's image, content-addressed (one copy per distinct image);
  the snapshot's store names them ``images/…`` and import rewrites that to the imported folder.
  Without images (``images=False``, for paths every machine shares) paths are kept as they are;
* ``models/<kind>/<name>/``: the named models the catalog's encoders (and panels) load.

:func:`import_snapshot` reads the whole file once to verify it before anything is written (every
member a regular file listed in the manifest with the right size and SHA-256, none missing, a
format this code reads), then extracts with tarfile's ``"data"`` filter (no absolute paths, no
``..``, no links or devices) into a staging folder beside the target, verifies again, lets the
caller check compatibility (encoders), and only then renames it into place: a failed import leaves
the home as it was. Thumbnails and training caches are rebuilt on demand and not exported.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping

from lookalike.data.artifacts import atomic_path

FORMAT = "lookalike-snapshot"
FORMAT_VERSION = 1   # bumped on any change an older reader would misread; readers refuse newer ones
MANIFEST = "manifest.json"
CATALOG_PREFIX = "catalog"
IMAGES_PREFIX = "images"
MODELS_PREFIX = "models"
BYO_PREFIX = "byo"   # byo/<sha256[:16]>/<file name>: a bring-your-own ONNX model an encoder spec names by path
# Folders of a catalog that travel (derived caches other than the vector matrices are rebuilt on demand).
CATALOG_PARTS = ("index", "artifacts", "reports")
_CHUNK = 1 << 20


class SnapshotError(ValueError):
    """A snapshot that cannot be imported: damaged (checksum, truncated, not a snapshot),
    incompatible (format, encoder) or conflicting with what the home already holds."""


class IncompatibleSnapshot(SnapshotError):
    """A well-formed snapshot this installation cannot use (newer format, unknown encoder, other weights)."""


class CatalogExists(SnapshotError):
    """The target catalog (or a model with other contents) exists and ``force`` was not given."""


@dataclass
class SnapshotInfo:
    """What :func:`export_snapshot` wrote or :func:`import_snapshot` installed."""
    path: Path
    catalog: str
    items: int
    files: int
    bytes: int
    images: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)   # models/<kind>/<name> installed (import) or packed (export)
    dir: Path | None = None                           # the imported catalog's folder


def lookalike_version() -> str:
    try:
        return metadata.version("lookalike")
    except metadata.PackageNotFoundError:   # run from a source tree without installing
        return "unknown"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# -- export ---------------------------------------------------------------------------------------
def export_snapshot(catalog_dir: Path, out: str | os.PathLike, *, name: str, encoders: Iterable[Mapping[str, Any]],
                    default_encoder: str | None = None, models: Mapping[str, Path] | None = None,
                    images: bool = True, on_progress: Callable[[int], None] | None = None,
                    byo: Mapping[str, Path] | None = None) -> SnapshotInfo:
    """Write the catalog in ``catalog_dir`` (named ``name``) as a snapshot tar at ``out`` (atomically;
    ``.tar.gz`` / ``.tgz`` compress with gzip, anything else is a plain tar: JPEGs and float vectors
    barely compress). ``encoders`` are the store's encoder rows (name, dim, metric, fingerprint,
    count) recorded in the manifest; ``models`` maps ``"<kind>/<name>"`` to model folders to include;
    ``images`` copies every item's image into the snapshot (``False``: paths kept as they are).
    ``byo`` maps an encoder spec to the ONNX file it reads (``onnx:/path/model.onnx``): each file
    travels as ``byo/<sha256[:16]>/<name>`` and the manifest's ``byo_models`` lists (encoder, path,
    member, sha256), so an import can say which file to put where.
    ``on_progress(n)`` is called per file written. Returns a :class:`SnapshotInfo`.
    FileNotFoundError when there is no ``catalog.sqlite`` in ``catalog_dir``."""
    catalog_dir = Path(catalog_dir)
    source_db = catalog_dir / "catalog.sqlite"
    if not source_db.exists():
        raise FileNotFoundError(f"no catalog store at {source_db}")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="lookalike-export-") as tmp:
        db_copy = Path(tmp) / "catalog.sqlite"
        image_files, items = _copy_store(source_db, db_copy, images)
        members: list[tuple[str, Path]] = [(f"{CATALOG_PREFIX}/catalog.sqlite", db_copy)]
        for part in CATALOG_PARTS:
            members += _tree(catalog_dir / part, f"{CATALOG_PREFIX}/{part}")
        cache = catalog_dir / "cache"
        for key in sorted(p for p in cache.iterdir() if (p / "stamp").exists()) if cache.is_dir() else ():
            members += [(f"{CATALOG_PREFIX}/cache/{key.name}/{f}", key / f)
                        for f in ("matrix.npy", "rowids.npy", "stamp") if (key / f).is_file()]
        members += [(f"{IMAGES_PREFIX}/{arcname}", path) for arcname, path in sorted(image_files.items())]
        for model, folder in sorted((models or {}).items()):
            members += _tree(Path(folder), f"{MODELS_PREFIX}/{model}")
        byo_models = []
        for encoder, model_path in sorted((byo or {}).items()):
            digest = sha256_file(Path(model_path))
            member = f"{BYO_PREFIX}/{digest[:16]}/{Path(model_path).name}"
            if member not in dict(members):
                members.append((member, Path(model_path)))
            byo_models.append({"encoder": encoder, "path": str(model_path), "member": member, "sha256": digest})
        files = {arc: {"size": path.stat().st_size, "sha256": sha256_file(path)} for arc, path in members}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "lookalike_version": lookalike_version(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "catalog": name,
                    "items": items, "default_encoder": default_encoder, "images": bool(images),
                    "encoders": [{k: e.get(k) for k in ("name", "dim", "metric", "fingerprint", "count")}
                                 for e in encoders],
                    "models": sorted(models or {}), "byo_models": byo_models, "files": files}
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        mode = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp_out, tarfile.open(tmp_out, mode, format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(body), int(time.time()), 0o644
            tar.addfile(info, _BytesReader(body))
            for arcname, path in members:
                info = tar.gettarinfo(str(path), arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
                if on_progress:
                    on_progress(1)
    return SnapshotInfo(out, name, items, len(files), out.stat().st_size, bool(images), manifest,
                        sorted(models or {}))


def snapshot_file_count(catalog_dir: Path, models: Mapping[str, Path] | None = None, images: bool = True) -> int:
    """Roughly how many files :func:`export_snapshot` will write (for a progress bar): catalog files,
    model files and one per item when ``images``."""
    catalog_dir = Path(catalog_dir)
    n = 1 + sum(len(_tree(catalog_dir / part, part)) for part in CATALOG_PARTS)
    n += sum(len(_tree(Path(folder), "m")) for folder in (models or {}).values())
    if images:
        with sqlite3.connect(f"file:{catalog_dir / 'catalog.sqlite'}?mode=ro", uri=True) as db:
            n += db.execute("SELECT COUNT(DISTINCT path) FROM items").fetchone()[0]
    return n


def copy_catalog_dir(source: Path, target: Path) -> Path:
    """Copy a catalog folder to ``target`` (which must not exist): the store through SQLite's online
    backup (consistent while it is served or written: a plain file copy would miss what sits in the
    write-ahead log), then the folders a snapshot carries plus the vector caches; thumbnails and
    training caches are left to be rebuilt. Image paths are kept. Returns ``target``."""
    source, target = Path(source), Path(target)
    target.mkdir(parents=True)
    _copy_store(source / "catalog.sqlite", target / "catalog.sqlite", images=False)
    for part in CATALOG_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, ignore=shutil.ignore_patterns("*.tmp"))
    cache = source / "cache"
    for key in (p for p in cache.iterdir() if (p / "stamp").exists()) if cache.is_dir() else ():
        (target / "cache" / key.name).mkdir(parents=True)
        for name in ("matrix.npy", "rowids.npy", "stamp"):
            if (key / name).is_file():
                shutil.copy2(key / name, target / "cache" / key.name / name)
    return target


def _copy_store(source: Path, target: Path, images: bool) -> tuple[dict[str, Path], int]:
    """Consistent copy of the store (online backup: safe while a server writes); with ``images``
    each item's path becomes ``images/<sha256><ext>`` in the copy. Returns ({arcname: source file}, items)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")   # one self-contained file, no -wal beside it
        items = dst.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        files: dict[str, Path] = {}
        if images:
            renamed = []
            for rowid, path in dst.execute("SELECT rowid, path FROM items").fetchall():
                file = Path(path)
                if not file.is_file():   # kept as it was: `lookalike check` reports it missing after import
                    continue
                # content-addressed by the file's own bytes (an item's sha256 column may lag a replaced file)
                arcname = sha256_file(file) + file.suffix.lower()
                files.setdefault(arcname, file)
                renamed.append((f"{IMAGES_PREFIX}/{arcname}", rowid))
            with dst:
                dst.executemany("UPDATE items SET path = ? WHERE rowid = ?", renamed)
        return files, items
    finally:
        src.close()
        dst.close()


def _tree(folder: Path, prefix: str) -> list[tuple[str, Path]]:
    """(arcname, path) of every regular file under ``folder`` (links and special files skipped)."""
    if not folder.is_dir():
        return []
    return [(f"{prefix}/{p.relative_to(folder).as_posix()}", p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and not p.name.endswith(".tmp")]


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n is None or n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return chunk


# -- import ---------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of snapshot ``path`` (its first member), checked for format and version.
    SnapshotError when the file is not a snapshot or is damaged; IncompatibleSnapshot for a newer format."""
    try:
        with tarfile.open(path, "r:*") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise SnapshotError(f"{path} is not a lookalike snapshot (no {MANIFEST} first)")
            manifest = json.loads(tar.extractfile(first).read())
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"{path} is not a readable lookalike snapshot ({type(exc).__name__}: {exc})") from exc
    return check_manifest(manifest)


def check_manifest(manifest: Any) -> dict[str, Any]:
    """``manifest`` if this code reads it; SnapshotError / IncompatibleSnapshot saying why not."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError("not a lookalike snapshot (manifest format is not 'lookalike-snapshot')")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise SnapshotError(f"snapshot manifest has no valid format_version ({version!r})")
    if version > FORMAT_VERSION:
        raise IncompatibleSnapshot(
            f"snapshot format {version} (written by lookalike {manifest.get('lookalike_version')}) is newer than "
            f"this lookalike ({lookalike_version()}) reads (format {FORMAT_VERSION}): upgrade lookalike to import it")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str)
                                              and isinstance(v.get("size"), int) for v in files.values()):
        raise SnapshotError("snapshot manifest lists no valid files")
    if f"{CATALOG_PREFIX}/catalog.sqlite" not in files:
        raise SnapshotError("snapshot holds no catalog store (catalog/catalog.sqlite)")
    for name in files:
        _check_member_name(name)
    return manifest


def _check_member_name(name: str) -> None:
    path = PurePosixPath(name)
    if (path.is_absolute() or ".." in path.parts or not path.parts
            or path.parts[0] not in (CATALOG_PREFIX, IMAGES_PREFIX, MODELS_PREFIX, BYO_PREFIX)
            or (path.parts[0] == MODELS_PREFIX and len(path.parts) < 4)
            or (path.parts[0] == BYO_PREFIX and len(path.parts) != 3)):
        raise SnapshotError(f"snapshot member {name!r} is outside the snapshot layout")


def verify_snapshot(path: str | os.PathLike) -> dict[str, Any]:
    """Read the whole snapshot without writing anything: the manifest (:func:`check_manifest`),
    then every member — a regular file (or folder) the manifest lists, with its size and SHA-256 —
    and no listed file missing. Returns the manifest; SnapshotError naming the first problem
    (checksum mismatch, truncated file, unexpected / link / device member)."""
    manifest = read_manifest(path)
    expected = manifest["files"]
    seen: set[str] = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for position, member in enumerate(tar):
                if position == 0 or member.isdir():   # the manifest (read_manifest checked it is first)
                    continue
                if not member.isfile():
                    raise SnapshotError(f"snapshot member {member.name!r} is not a regular file (links and devices "
                                        "are refused)")
                want = expected.get(member.name)
                if want is None:
                    raise SnapshotError(f"snapshot member {member.name!r} is not listed in its manifest")
                if member.name in seen:
                    raise SnapshotError(f"snapshot member {member.name!r} appears twice")
                h, size = hashlib.sha256(), 0
                stream = tar.extractfile(member)
                for block in iter(lambda: stream.read(_CHUNK), b""):
                    h.update(block)
                    size += len(block)
                if size != want["size"] or h.hexdigest() != want["sha256"]:
                    raise SnapshotError(f"snapshot is corrupt: {member.name} does not match its checksum")
                seen.add(member.name)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:   # zlib.error is an Exception, see below
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"snapshot is truncated or damaged ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # zlib.error / gzip.BadGzipFile from a damaged compressed stream
        raise SnapshotError(f"snapshot is truncated or damaged ({type(exc).__name__}: {exc})") from exc
    missing = sorted(set(expected) - seen)
    if missing:
        raise SnapshotError(f"snapshot is truncated: {len(missing)} listed file(s) missing, e.g. {missing[0]}")
    return manifest


def import_snapshot(path: str | os.PathLike, home: Path, *, name: str | None = None, force: bool = False,
                    check: Callable[[dict[str, Any], Path, str], None] | None = None) -> SnapshotInfo:
    """Install snapshot ``path`` as catalog ``name`` (default: the name it was exported with) in
    ``home``: :func:`verify_snapshot` first (nothing written), then extract into a staging folder
    under ``<home>/catalogs`` with tarfile's ``"data"`` filter, verify the extracted files again, call
    ``check(manifest, staging_home, name)`` (the caller's compatibility check: it may raise
    :class:`IncompatibleSnapshot`; ``staging_home`` holds ``catalogs/<name>/`` and ``models/``), rewrite
    image paths to the catalog's ``images/`` folder and rename into place. Models go to
    ``<home>/models/<kind>/<name>``: one with the same files is kept, one with other files is
    replaced only with ``force``. An existing catalog ``name`` is replaced only with ``force``
    (CatalogExists otherwise). On any error the staging folder is removed and the home is unchanged.
    ``name`` must pass ``check_name`` (the caller's job)."""
    manifest = verify_snapshot(path)
    name = name or str(manifest.get("catalog") or "")
    catalogs = Path(home) / "catalogs"
    target = catalogs / name
    if (target / "catalog.sqlite").exists() and not force:
        raise CatalogExists(f"catalog {name!r} already exists in {home}: import with --force to replace it, "
                            "or --as NAME to import under another name")
    models = _models_of(manifest)
    conflicts = [m for m in models if not force and _model_differs(Path(home) / MODELS_PREFIX / m, manifest, m)]
    if conflicts:
        raise CatalogExists(f"model {conflicts[0]} already exists in {home} with other files: import with --force "
                            "to replace it")
    catalogs.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=catalogs))
    try:
        try:
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(staging / "x", filter="data")
        except Exception as exc:   # the file changed since it was verified
            raise SnapshotError(f"snapshot could not be extracted ({type(exc).__name__}: {exc})") from exc
        extracted = staging / "x"
        for arcname, want in manifest["files"].items():
            file = extracted / arcname
            if not file.is_file() or file.is_symlink() or sha256_file(file) != want["sha256"]:
                raise SnapshotError(f"snapshot is corrupt: {arcname} does not match its checksum after extraction")
        staged_home = staging / "home"
        (staged_home / "catalogs").mkdir(parents=True)
        staged_catalog = staged_home / "catalogs" / name
        (extracted / CATALOG_PREFIX).rename(staged_catalog)
        if (extracted / IMAGES_PREFIX).is_dir():
            (extracted / IMAGES_PREFIX).rename(staged_catalog / IMAGES_PREFIX)
        if (extracted / MODELS_PREFIX).is_dir():
            (extracted / MODELS_PREFIX).rename(staged_home / MODELS_PREFIX)
        if check is not None:
            check(manifest, staged_home, name)
        if manifest.get("images"):
            _rewrite_image_paths(staged_catalog / "catalog.sqlite", target)
        installed = [m for m in models if _install_model(staged_home / MODELS_PREFIX / m, Path(home) / MODELS_PREFIX / m)]
        old = None
        if target.exists():
            old = catalogs / f".replaced-{name}-{os.getpid()}-{time.time_ns()}"
            target.rename(old)
        staged_catalog.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = manifest["files"]
    return SnapshotInfo(Path(path), name, int(manifest.get("items") or 0), len(files),
                        sum(f["size"] for f in files.values()), bool(manifest.get("images")), manifest, installed,
                        target)


def _models_of(manifest: Mapping[str, Any]) -> list[str]:
    """``<kind>/<name>`` of every model folder the snapshot carries."""
    return sorted({"/".join(PurePosixPath(f).parts[1:3]) for f in manifest["files"]
                   if PurePosixPath(f).parts[0] == MODELS_PREFIX})


def _model_files(manifest: Mapping[str, Any], model: str) -> dict[str, str]:
    prefix = f"{MODELS_PREFIX}/{model}/"
    return {f[len(prefix):]: v["sha256"] for f, v in manifest["files"].items() if f.startswith(prefix)}


def _model_differs(folder: Path, manifest: Mapping[str, Any], model: str) -> bool:
    if not folder.exists():
        return False
    for rel, sha in _model_files(manifest, model).items():
        file = folder / rel
        if not file.is_file() or sha256_file(file) != sha:
            return True
    return False


def _install_model(staged: Path, target: Path) -> bool:
    """Move a staged model folder into place (replacing another one); False when an identical one is there."""
    if target.exists():
        if all((target / p.relative_to(staged)).is_file() and sha256_file(p) == sha256_file(target / p.relative_to(staged))
               for p in staged.rglob("*") if p.is_file()):
            return False
        old = target.with_name(f".replaced-{target.name}-{time.time_ns()}")
        target.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(target)
    return True


def _rewrite_image_paths(db_path: Path, catalog_dir: Path) -> None:
    """``images/<file>`` (as the snapshot stores them) -> ``<catalog_dir>/images/<file>``. Only paths
    change, so data versions (and with them the shipped index and vector caches) stay valid."""
    prefix = str(Path(catalog_dir).resolve() / IMAGES_PREFIX) + os.sep
    db = sqlite3.connect(db_path)
    try:
        with db:
            db.execute("UPDATE items SET path = ? || substr(path, ?) WHERE path LIKE ?",
                       (prefix, len(IMAGES_PREFIX) + 2, f"{IMAGES_PREFIX}/%"))
    finally:
        db.close()
