"""Read a catalog source — a folder of images or a table (CSV/TSV, JSON Lines, Parquet, Excel) —
into rows, per-row errors and skipped files.

Only the structure is checked here (which files are items, required fields, duplicate ids,
unreadable rows); whether each image decodes is checked by the ingest pipeline.

Every file under a folder gets exactly one outcome: it becomes a row (then ingested or failed
with a reason), it is an error (``unreadable_folder``, ``unreadable``, ``unsupported_format``,
``missing`` for a dangling link: items the user most likely wanted), or it is skipped with a
reason (:data:`SKIP_REASONS`). A file is an image by its content (Pillow identifies it from its
first bytes), not by its name: ``photo.jfif``, ``photo.JIF`` or a file without suffix are read;
a file *named* like an image (:data:`~lookalike.data.images.IMAGE_SUFFIXES`) is always a row, so
a broken ``red.png`` fails visibly instead of vanishing.

Ids. An explicit id column always wins. Otherwise ids derive from paths and are unique and stable:

- folder: the path relative to the folder, without suffix (``shoes/red.jpg`` -> ``shoes/red``);
  when several files share that (``shoes/red.jpg`` + ``shoes/red.png``) each of them keeps its
  suffix instead (``shoes/red.jpg``, ``shoes/red.png``), so no file is dropped and ids of files
  without a twin are the same as before;
- table without an id column: the image's file name without suffix (``red``); when several rows
  share it, each of them gets its image path as written in the table (``a/red.jpg``, ``b/red.jpg``).
  Only the same image listed twice is a ``duplicate_id``.

Images by URL, several images per product (tables). An image cell may hold an ``http(s)://`` URL
(the row's ``url``; downloaded at ingest by :mod:`lookalike.data.fetch`) and may hold several
locations, URLs or paths, separated by ``|`` or ``;``. Each image is one item: a product with
several images (several locations in its cell, or several rows of one ``product_id`` column) gives
items ``<product>#1``, ``<product>#2`` … (in table order) whose metadata ``product_id`` names the
product, so they can be grouped later; a ``product_id`` product with one image keeps its id. Other
id columns (``id``, ``sku`` …) name items: a repeated one is a ``duplicate_id``, as is the same
image listed twice under one product.

Tables are parsed by real readers: CSV/TSV by :mod:`csv` on the raw stream (quoted line breaks
and U+2028 inside fields survive), decoded strictly (UTF-8 with or without BOM unless ``encoding``
says otherwise; invalid bytes are an error naming the line and byte offset, never replacement
characters), the delimiter sniffed among comma, semicolon and tab unless given; ``.jsonl`` /
``.ndjson`` one JSON object per line; ``.parquet`` through pyarrow; ``.xlsx`` (first sheet, first
row is the header) through openpyxl. All give the same rows and per-row report; ``line`` is the
line (CSV: where the record starts; JSON Lines: the line), the spreadsheet row, or the Parquet row
number (1-based).
"""
from __future__ import annotations

import base64
import binascii
import codecs
import csv
import datetime as dt
import errno
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, NamedTuple
from urllib.parse import unquote, unquote_to_bytes, urlsplit
from urllib.request import url2pathname

from lookalike.config import MAX_UPLOAD_BYTES
from lookalike.data.fetch import MAX_DOWNLOAD_BYTES, is_url
from lookalike.data.images import (IMAGE_SUFFIXES, ImageError, damaged_image_format, image_format,
                                   image_format_by_signature)

ID_COLUMNS = ("id", "item_id", "sku", "product_id")
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "img",
                 "image_url", "image_link", "image src", "images")   # the last four: shop exports (generic, Google Merchant, Shopify)
LABEL_COLUMNS = ("label", "category", "class")
PRODUCT_COLUMNS = ("product_id",)   # an id column naming products: several rows per id are several images
IMAGE_SEPARATORS = re.compile(r"[|;]")

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TABLE_SUFFIXES = CSV_SUFFIXES + JSONL_SUFFIXES + (".parquet", ".xlsx")
DELIMITERS = (",", ";", "\t")   # sniffed in this order of preference; others need ``delimiter``

SKIP_REASONS = {
    "system_file": "operating-system or thumbnail artefact (.DS_Store, Thumbs.db, ._*, __MACOSX/, @eaDir/ …)",
    "hidden": "hidden file or folder (name starts with '.')",
    "not_an_image": "content is not an image format",
    "link_to_folder": "symbolic link to a folder (not followed)",
    "not_a_file": "not a regular file (pipe, socket, device)",
}
# Names operating systems, NAS boxes and photo tools leave behind. Matched case-insensitively.
SYSTEM_FILES = {".ds_store", "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", ".localized",
                ".picasa.ini", "picasa.ini", ".directory", "icon\r", ".bridgesort", ".bridgelabelsandratings"}
SYSTEM_FOLDERS = {"__macosx", "@eadir", ".appledouble", ".thumbnails", ".spotlight-v100", ".trashes",
                  ".fseventsd", ".temporaryitems", "$recycle.bin", "system volume information", ".picasaoriginals"}


@dataclass
class SourceRow:
    id: str
    path: Path               # the local image file; for a URL row, where its download is kept (set at ingest)
    label: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int | None = None  # table line / row number, for error messages
    url: str | None = None   # http(s) location of the image (tables only); downloaded by data.fetch
    data: bytes | None = None    # the image's bytes when the table holds them (tables only; see read_table)
    inline: str | None = None    # such an image, for reports: "<embedded image NAME, sha256 …>" / "<data: URI, sha256 …>"

    @property
    def location(self) -> str:
        """Where the image comes from, for reports: the URL, the embedded image, else the file path."""
        return self.url or self.inline or str(self.path)


@dataclass
class RowError:
    reason: str          # machine-readable code
    message: str         # for people
    id: str | None = None
    path: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "line": self.line, "reason": self.reason, "message": self.message}


class SourceRead(NamedTuple):
    """What :func:`read_source` found: rows to ingest, rows/files in error, files skipped (folders only)."""
    rows: list[SourceRow]
    errors: list[RowError]
    skipped: list[RowError]


class SourceError(Exception):
    """The source as a whole cannot be read (not found, undecodable, no usable columns)."""


def read_source(source: str | Path, id_column: str | None = None, image_column: str | None = None,
                label_column: str | None = None, *, encoding: str | None = None,
                delimiter: str | None = None) -> SourceRead:
    """Rows of a folder or table (see the module docstring for ids, outcomes and formats).

    ``encoding`` (default UTF-8, BOM or not) applies to CSV/TSV and JSON Lines, ``delimiter``
    (default sniffed) to CSV/TSV.
    Raises :class:`SourceError` when the source as a whole is unusable."""
    source = Path(source).expanduser()
    delimiter = parse_delimiter(delimiter)
    if source.is_dir():
        rows, errors, skipped = read_folder(source)
    elif source.is_file() and source.suffix.lower() in TABLE_SUFFIXES:
        (rows, errors), skipped = read_table(source, id_column, image_column, label_column,
                                             encoding=encoding, delimiter=delimiter), []
    elif source.exists():
        raise SourceError(f"{source} is neither a folder nor a table ({', '.join(TABLE_SUFFIXES)})")
    else:
        raise SourceError(f"source not found: {source}")
    rows, errors = dedupe(*_check_ids(rows, errors))
    return SourceRead(rows, errors, skipped)


MAX_ID_CHARS = 512   # what the API serves (GET /api/items/{id}) and the write API accepts


def invalid_id(item_id: object) -> str | None:
    """Why ``item_id`` cannot be an item id (not text, empty, longer than :data:`MAX_ID_CHARS`, or
    holding a control character: tab, line break, NUL…), else None. Ingest, the write API and the
    item routes apply this one rule, so every item indexed can also be fetched by its id."""
    if not isinstance(item_id, str) or not item_id:
        return "an item id must be non-empty text"
    if len(item_id) > MAX_ID_CHARS:
        return f"an item id is at most {MAX_ID_CHARS} characters; this one has {len(item_id):,}"
    bad = next((c for c in item_id if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        return f"an item id holds no control characters; this one holds {bad!r}"
    return None


def _check_ids(rows: list[SourceRow], errors: list[RowError]) -> tuple[list[SourceRow], list[RowError]]:
    """Rows whose id the API could never serve (an explicit id column, or a file name with a line
    break) are ``invalid_id`` errors instead of items nobody can open."""
    kept = []
    for row in rows:
        why = invalid_id(row.id)
        if why:
            errors.append(RowError("invalid_id", f"{why}: {row.id[:80]!r}", path=row.location, line=row.line))
        else:
            kept.append(row)
    return kept, errors


# -- folders -------------------------------------------------------------------------------
def read_folder(root: Path) -> SourceRead:
    """Walk ``root`` recursively (symbolic links to folders are not followed); label = the file's
    sub-folder name. Returns rows (ids not yet checked for duplicates), errors and skipped files."""
    errors: list[RowError] = []
    skipped: list[RowError] = []

    def unreadable(exc: OSError) -> None:
        errors.append(RowError("unreadable_folder", f"cannot list folder: {exc.strerror or exc}",
                               path=_shown(exc.filename or root)))

    candidates: list[tuple[Path, str | None]] = []   # (file, reason to skip it, if any)
    for folder, dirs, files in os.walk(root, onerror=unreadable):
        folder_path = Path(folder)
        inherited = _skip_reason_for_folder(folder_path.relative_to(root))
        dirs.sort()
        for name in list(dirs):
            if (folder_path / name).is_symlink():
                dirs.remove(name)
                skipped.append(RowError("link_to_folder", SKIP_REASONS["link_to_folder"],
                                        path=_shown(folder_path / name)))
        for name in sorted(files):
            candidates.append((folder_path / name, inherited or _skip_reason_for_name(name)))

    derived: list[tuple[SourceRow, str]] = []
    candidates.sort(key=lambda c: c[0].relative_to(root).parts)   # the order rglob gave before
    for path, reason in candidates:
        if reason:
            skipped.append(RowError(reason, SKIP_REASONS[reason], path=_shown(path)))
            continue
        if _undecodable(path):   # SQLite and the reports hold text: this name cannot be stored, only renamed
            errors.append(RowError("unreadable", f"the file name is not valid UTF-8 (bytes {os.fsencode(path.relative_to(root))!r}): "
                                   "rename the file", path=_shown(path)))
            continue
        outcome = _classify_file(path)
        if isinstance(outcome, RowError):
            (skipped if outcome.reason in SKIP_REASONS else errors).append(outcome)
            continue
        rel = path.relative_to(root)
        label = rel.parts[-2] if len(rel.parts) > 1 else None
        row = SourceRow(id=rel.with_suffix("").as_posix(), path=_resolved(path), label=label)
        derived.append((row, rel.as_posix()))
    return SourceRead(_unique_derived_ids(derived), errors, skipped)


def _link_loop(path: Path) -> bool:
    """True when following ``path`` loops (``a -> b -> a``)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _resolved(path: Path) -> Path:
    """``path`` made absolute with its links resolved; a symbolic-link loop (``a -> b -> a``), which
    ``Path.resolve`` raises on (RuntimeError; OSError from Python 3.13) and which stopped a whole table's
    ingest, stays as written: reading it is then that row's ``unreadable`` ("too many levels of
    symbolic links")."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def _undecodable(path: Path | str) -> bool:
    """True when ``path`` holds bytes that are not UTF-8 (os.fsdecode turned them into lone surrogates:
    names from old zips or Latin-1 file systems). They stopped the whole ingest at the first write."""
    return any(0xDC80 <= ord(c) <= 0xDCFF for c in str(path))


def _shown(path: Path | str) -> str:
    """``path`` as text that can be written anywhere (undecodable bytes as ``\\xe9``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _skip_reason_for_folder(rel: Path) -> str | None:
    for part in rel.parts:
        if part.lower() in SYSTEM_FOLDERS:
            return "system_file"
    for part in rel.parts:
        if part.startswith("."):
            return "hidden"
    return None


def _skip_reason_for_name(name: str) -> str | None:
    lower = name.lower()
    if lower in SYSTEM_FILES or name.startswith("._"):   # ._name: macOS AppleDouble resource fork
        return "system_file"
    if name.startswith("."):
        return "hidden"
    if name.startswith("~$"):                            # Office lock file
        return "system_file"
    return None


def _classify_file(path: Path) -> RowError | None:
    """None when ``path`` is a row; else the error or skip (reason in SKIP_REASONS) for it.

    Files named like an image are rows without opening them (the pipeline reads them anyway and
    reports a broken one); other files are rows when Pillow identifies their content, or recognises
    its format and fails on the header (then they fail visibly in the pipeline too)."""
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            if _link_loop(path):   # as reading it from a table reports it
                return RowError("unreadable", f"symbolic link loop (too many levels of symbolic links): {path}",
                                path=str(path))
            return RowError("missing", f"broken symbolic link: {path}", path=str(path))
        return RowError("not_a_file", SKIP_REASONS["not_a_file"], path=str(path))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return None
    try:
        image_format(path)   # the one decision of what is an image (data.images), from the header
    except ImageError as exc:
        if exc.reason == "corrupt":   # starts like a readable image (a cut-short JPEG without suffix):
            return None               # a row whose failure the pipeline reports, never a silent skip
        if exc.reason == "unsupported_format" and exc.format != "PDF":   # a PDF beside the photos: a document
            return RowError("unsupported_format", exc.message, path=str(path))
        if exc.reason == "missing":
            return RowError("missing", exc.message, path=str(path))
        return RowError("not_an_image", SKIP_REASONS["not_an_image"], path=str(path))   # a document, text, empty
    except OSError as exc:
        return RowError("unreadable", f"cannot read file: {exc.strerror or exc}", path=str(path))
    return None


def _unique_derived_ids(derived: list[tuple[SourceRow, str]]) -> list[SourceRow]:
    """Rows whose derived id is shared take their fallback id instead (see the module docstring)."""
    counts: dict[str, int] = {}
    for row, _ in derived:
        counts[row.id] = counts.get(row.id, 0) + 1
    for row, fallback in derived:
        if counts[row.id] > 1:
            row.id = fallback
    return [row for row, _ in derived]


# -- tables --------------------------------------------------------------------------------
def read_table(path: Path, id_column: str | None, image_column: str | None, label_column: str | None, *,
               encoding: str | None = None, delimiter: str | None = None) -> tuple[list[SourceRow], list[RowError]]:
    """Rows and per-row errors of a CSV/TSV, JSON Lines, Parquet or .xlsx table."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        header, records, errors = _read_jsonl(path, encoding)
    elif suffix == ".parquet":
        header, records, errors = _read_parquet(path)
    elif suffix == ".xlsx":
        header, records, errors = _read_xlsx(path)
    else:
        header, records, errors = _read_csv(path, encoding, delimiter)
    _check_header(path, header)
    image_col = _pick(header, image_column, IMAGE_COLUMNS, "image")
    id_col = _pick(header, id_column, ID_COLUMNS, "id", required=id_column is not None)
    label_col = _pick(header, label_column, LABEL_COLUMNS, "label", required=label_column is not None)
    rows: list[SourceRow] = []
    derived: list[tuple[SourceRow, str]] = []
    products: dict[str, list[SourceRow]] = {}
    for line, record in records:
        raw = record.get(image_col, "")
        record = {k: str(v) for k, v in record.items()}   # other columns as text (an _Inline's text)
        cell = record.get(image_col, "")
        given_id = record.get(id_col) if id_col else None
        try:
            images = _cell_images(raw)
        except _CellError as exc:
            errors.append(RowError(exc.reason, exc.message, id=given_id or None, path=cell[:200] or None, line=line))
            continue
        images = [image if isinstance(image, _Inline) else _file_url_path(image) for image in images]
        item_id = (given_id or "") if id_col else (_stem(images[0]) if images else "")
        if not images:
            errors.append(RowError("missing_field", f"empty '{image_col}' column", id=item_id or None, line=line))
            continue
        if not item_id:
            errors.append(RowError("missing_field", f"empty '{id_col}' column", path=cell, line=line))
            continue
        metadata = {k: v for k, v in record.items() if k not in (id_col, image_col, label_col)}
        label = (record.get(label_col) or None) if label_col else None
        cell_rows = []
        for image in images:
            if isinstance(image, _Inline):
                row = SourceRow(id=item_id, path=Path(), label=label, metadata=dict(metadata), line=line,
                                data=image.data, inline=image.location)
            elif is_url(image):
                row = SourceRow(id=item_id, path=Path(), label=label, metadata=dict(metadata), line=line, url=image)
            else:
                image_path = Path(image).expanduser()
                if not image_path.is_absolute():
                    image_path = path.parent / image_path
                row = SourceRow(id=item_id, path=_resolved(image_path), label=label, metadata=dict(metadata), line=line)
            cell_rows.append(row)
        rows += cell_rows
        if len(images) > 1 or id_col in PRODUCT_COLUMNS:
            products.setdefault(item_id, []).extend(cell_rows)
        elif not id_col:
            first = images[0]
            derived.append((cell_rows[0], first.fallback_id if isinstance(first, _Inline)
                            else Path(first.removeprefix("./")).as_posix()))
    _unique_derived_ids(derived)
    _number_product_images(products)
    errors.sort(key=lambda e: e.line or 0)
    return rows, errors


def _file_url_path(image: str) -> str | None:
    """A local path as written in a table cell: ``file:`` URLs (``file:///a%20b.jpg``,
    ``file://localhost/…``, ``file:/…``) become the path they name, percent-escapes decoded; other
    text is returned as it is. None for a ``file://`` URL naming another host (not readable here)."""
    if not image[:5].lower() == "file:":
        return image
    parts = urlsplit(image)
    if parts.netloc not in ("", "localhost"):
        return None
    return url2pathname(parts.path)


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://|^(data):")   # 'shoes:red.jpg' stays a file name


def _unreadable_location(image: str) -> str | None:
    """Why a table's image location cannot be read here (a URL scheme other than http(s), ``file:``
    and ``data:``, e.g. ``ftp://``, ``s3://``; a ``file://`` URL naming another host), else None.
    Such cells were read as relative file names and failed as ``missing``."""
    if is_url(image):
        return None
    scheme = _SCHEME.match(image)
    name = scheme and (scheme.group(1) or scheme.group(2))
    if name and len(name) > 1 and name.lower() != "file":   # 'C://x.jpg' is a path
        return f"unsupported URL scheme {name!r} (http://, https:// or file: locations): {image[:100]}"
    if _file_url_path(image) is None:
        return f"a file URL on another host cannot be read here: {image[:100]}"
    return None


class _CellError(Exception):
    """An image cell that gives no image location: ``reason`` (a row error code) and a message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class _Inline:
    """Image bytes held by a table cell: a binary column, a Hugging Face ``{"bytes", "path"}`` struct
    (``name``: its path, '' for none) or a ``data:`` URI. ``text`` is the cell as the other columns
    show it (metadata); ``problem`` says why the bytes could not even be read (bad base64)."""
    data: bytes
    name: str = ""
    text: str = ""
    kind: str = "embedded image"
    problem: str | None = None

    def __str__(self) -> str:
        return self.text

    @cached_property   # hashed once: location, stem and fallback_id all name it
    def sha(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def location(self) -> str:
        """For reports (and to tell a product's images apart): the kind, the name, the content hash."""
        return f"<{self.kind}{' ' + self.name if self.name else ''}, sha256 {self.sha[:16]}>"

    @property
    def stem(self) -> str:
        """The derived id: the name's file name without suffix, else the content hash (16 hex digits)."""
        return (Path(self.name).stem if self.name else "") or self.sha[:16]

    @property
    def fallback_id(self) -> str:
        """The derived id when the stem is shared by other rows: the name (or stem) and the content hash."""
        return f"{self.name}@{self.sha[:16]}" if self.name else self.stem   # a nameless one's id is its hash


def _table_value(value: Any) -> str | _Inline:
    """A Parquet / JSON Lines value as a record value: image bytes (a ``binary`` cell, a ``{"bytes",
    "path"}`` object with bytes) stay bytes, as an :class:`_Inline`; everything else the text
    :func:`_cell` gives."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return _Inline(data, text=_binary_text(data)) if data else ""
    if isinstance(value, dict) and {"bytes", "path"} & set(value) and value.get("bytes"):
        name = value.get("path") if isinstance(value.get("path"), str) else ""
        data, problem = _embedded_bytes(value["bytes"])
        return _Inline(data, name.strip(), _cell(value), problem=problem)
    return _cell(value)


def _embedded_bytes(value: Any) -> tuple[bytes, str | None]:
    """The bytes of a ``{"bytes": ...}`` object: Parquet gives bytes; JSON Lines base64 text (or a list
    of byte values). (bytes, None), or (b'', why) when they cannot be read."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if isinstance(value, str):
        try:
            return base64.b64decode(re.sub(r"\s+", "", value), validate=True), None
        except (binascii.Error, ValueError):
            return b"", "the embedded image's \"bytes\" are not valid base64"
    if isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value):
        return bytes(value), None
    return b"", f"the embedded image's \"bytes\" are {type(value).__name__}, not bytes or base64 text"


def _cell_images(cell: str | _Inline) -> list[str | _Inline]:
    """The images of one image cell: locations (paths, URLs, as :func:`split_images` reads them) and
    image bytes (:class:`_Inline`: a binary cell, an embedded image, ``data:`` URIs). Raises
    :class:`_CellError` for a location that cannot be read here (``bad_url``), image bytes over
    their cap (``too_large``) or unreadable (``corrupt``: bad base64)."""
    if isinstance(cell, _Inline):
        if cell.problem:
            raise _CellError("corrupt", cell.problem)
        if not cell.name and _is_text(cell.data):   # a path kept in a binary column
            cell = cell.text
        else:
            _check_inline_size(cell, MAX_DOWNLOAD_BYTES, "an image download")
            return [cell]
    embedded = _embedded_path(cell)
    if embedded is not None:   # a {"bytes": null, "path": ...} object: the path
        cell = embedded
    images: list[str | _Inline] = []
    for image in split_images(cell):
        if image[:5].lower() == "data:":
            images.append(_data_uri(image))
            continue
        why = _unreadable_location(image)
        if why:
            raise _CellError("bad_url", why)
        images.append(image)
    return images


def _check_inline_size(image: _Inline, cap: int, like: str) -> None:
    if len(image.data) > cap:
        raise _CellError("too_large", f"the {image.kind} is {len(image.data):,} bytes; the limit is {cap:,} "
                                      f"(as for {like})")


def _is_text(data: bytes) -> bool:
    """True for bytes that are UTF-8 text and do not start like an image (a path in a binary column)."""
    head = data[:64]
    if image_format_by_signature(head) or damaged_image_format(head):
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text.strip()) and text.isprintable()


def _data_uri(text: str) -> _Inline:
    """A ``data:[<media type>][;base64],<data>`` URI (RFC 2397) as its bytes, capped like an upload
    (``MAX_UPLOAD_BYTES``, checked before decoding). :class:`_CellError` ``bad_url`` when malformed."""
    header, comma, payload = text[5:].partition(",")
    if not comma:
        raise _CellError("bad_url", f"a data: URI needs a ',' before its data: {text[:100]}")
    shown = f"data:{header},…"
    if header.lower().endswith(";base64"):
        payload = re.sub(r"\s+", "", unquote(payload))
        if len(payload) // 4 * 3 > MAX_UPLOAD_BYTES + 3:   # too large: refused before decoding it
            raise _CellError("too_large", f"the data: URI holds about {len(payload) // 4 * 3:,} bytes; the limit is "
                                          f"{MAX_UPLOAD_BYTES:,} (as for an upload)")
        try:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _CellError("bad_url", f"the data: URI's base64 is malformed: {text[:100]}") from None
    else:
        data = unquote_to_bytes(payload)
    image = _Inline(data, text=shown, kind="data: URI")
    _check_inline_size(image, MAX_UPLOAD_BYTES, "an upload")
    return image


def _embedded_path(cell: str) -> str | None:
    """For an image cell holding a ``{"bytes": null, "path": ...}`` object (a Hugging Face ``Image``
    column without bytes, as JSON text): its ``path`` ('' for none); None for an ordinary cell.
    (With bytes, :func:`_table_value` made the cell an :class:`_Inline`.)"""
    text = cell.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not {"bytes", "path"} & set(obj):
        return None
    path = obj.get("path")
    return path.strip() if isinstance(path, str) else ""


def split_images(cell: str) -> list[str]:
    """The image locations of one table cell: one path or URL, several separated by ``|`` or ``;``
    (as shop exports write them), or a JSON list of them (a JSON Lines array or a Parquet list column,
    which reach here as JSON text; they were read as one file named ``["a.jpg", "b.jpg"]``); blanks dropped."""
    text = cell.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parts = json.loads(text)
        except ValueError:
            parts = None
        if isinstance(parts, list) and all(isinstance(part, str) for part in parts):
            return [part.strip() for part in parts if part.strip()]
    if "data:" in text.lower():   # a data: URI's header holds a ';' ("data:image/png;base64,…"): not a separator
        return [part.strip() for part in _DATA_URI_OR_PART.findall(cell) if part.strip()]
    return [part.strip() for part in IMAGE_SEPARATORS.split(cell) if part.strip()]


_DATA_URI_OR_PART = re.compile(r"(?i)\s*(data:[^,|]*,[^|;]*|[^|;]+)")


def _stem(image: str | _Inline) -> str:
    """An id derived from an image location: the file name without suffix (of a URL: of its path; of
    image bytes: :attr:`_Inline.stem`)."""
    if isinstance(image, _Inline):
        return image.stem
    if is_url(image):
        image = urlsplit(image).path or image
    return Path(image).stem


def _number_product_images(products: dict[str, list[SourceRow]]) -> None:
    """Products with several images: one row per image, id ``<product>#<n>`` (n from 1, in table
    order) and metadata ``product_id``. The same image listed twice under one product keeps the
    same id, so it is still reported as a ``duplicate_id``; a product with one image keeps its id."""
    for product, images in products.items():
        locations = list(dict.fromkeys(r.location for r in images))
        for row in images:
            row.metadata["product_id"] = product
            if len(locations) > 1:
                row.id = f"{product}#{locations.index(row.location) + 1}"


Records = list[tuple[int, dict[str, "str | _Inline"]]]   # Parquet / JSON Lines cells may hold image bytes


def _read_csv(path: Path, encoding: str | None, delimiter: str | None) -> tuple[list[str], Records, list[RowError]]:
    text = decode_text(_read_bytes(path), encoding, path)
    lines = io.StringIO(text, newline="").readlines()
    # physical lines as csv counts them (\n, \r\n, \r; U+2028 stays inside a line): a record that is bad
    # is re-read from the line after its start (see _csv_records)
    hint = _SEP_LINE.match(lines[0]) if lines else None   # Excel's "sep=;" first line names the delimiter
    if delimiter is None:
        delimiter = hint.group(1) if hint else \
            "\t" if path.suffix.lower() == ".tsv" else sniff_delimiter(text)
    reader = csv.reader(iter(lines[1:] if hint else lines), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise SourceError(f"{path} is empty") from None
    except csv.Error as exc:
        raise SourceError(f"{path}: cannot read the header: {exc}") from None
    named, unnamed = _name_blank_columns(header)
    records: Records = []
    errors: list[RowError] = []
    for line, values, error in _csv_records(lines, reader.line_num + bool(hint), delimiter, len(header)):
        if error:
            errors.append(RowError("bad_row", error, line=line))
        elif any(v.strip() for v in values):   # else a blank line
            records.append((line, {h: v.strip() for h, v in zip(named, values) if h not in unnamed or v.strip()}))
    return named if any(header) else header, records, errors


def _name_blank_columns(header: list[str]) -> tuple[list[str], set[str]]:
    """``header`` with each blank name replaced by ``column_<n>`` (1-based position), and those names.
    Blank-named columns all mapped to one key '': a value in the first was overwritten by the next
    (``id,image,,colour,,`` kept nothing of a note in the third column). Their blank cells are left
    out of the metadata (spreadsheet exports pad with empty columns)."""
    taken = set(header)
    named, unnamed = [], set()
    for position, name in enumerate(header, start=1):
        if not name.strip():
            name = f"column_{position}"
            while name in taken:
                name += "_"
            taken.add(name)
            unnamed.add(name)
        named.append(name)
    return named, unnamed


_SEP_LINE = re.compile(r"^sep=(.)\r?\n?$")


def _csv_records(lines: list[str], start: int, delimiter: str, fields: int):
    """(line, values, error) of each CSV record in ``lines[start:]``; ``line`` is 1-based, where the
    record starts; ``error`` is None or why the record is a ``bad_row``.

    A quote that opens a field and is never closed as expected (a stray ``"`` in an export) makes
    :mod:`csv` read every following line into that one field: the rest of the file vanished as part
    of one record that could even have the right number of fields. So a record spanning several
    lines must also parse with ``strict=True`` and have ``fields`` values; if not, it is one
    ``bad_row`` and reading resumes on the line after its first one, so the rows it swallowed still
    get their own outcomes. A quoted line break that is closed properly (Excel Alt+Enter) is kept.
    """
    pos = start
    while pos < len(lines):
        reader = csv.reader(iter(lines[pos:]), delimiter=delimiter)
        resume = None
        while resume is None:
            first = pos + reader.line_num          # 0-based index of the line this record starts on
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield first + 1, [], f"cannot parse: {exc}"
                if pos + reader.line_num - first > 1:
                    resume = first + 1
                continue
            last = pos + reader.line_num           # one past the record's last line
            if last - first > 1:
                problem = _multiline_problem(lines[first:last], delimiter, len(values), fields)
                if problem:
                    again = f"line {last} is" if last == first + 2 else f"lines {first + 2}-{last} are"
                    yield first + 1, [], (f"{problem} (a quote opened on line {first + 1} runs to line {last}); "
                                          f"{again} read again as rows")
                    resume = first + 1
                    continue
            elif last == len(lines) and _multiline_problem(lines[first:last], delimiter, len(values), len(values)) \
                    == "unterminated quoted field":
                yield first + 1, [], "unterminated quoted field (a quote opened on the last line is never closed)"
                continue
            if len(values) > fields and not any(v.strip() for v in values[fields:]):
                values = values[:fields]   # trailing empty cells ("a,b,c,,"): spreadsheet exports write them
            if values and len(values) != fields and any(v.strip() for v in values):
                yield first + 1, values, f"expected {fields} fields, found {len(values)}"
                continue
            yield first + 1, values, None
        pos = resume


def _multiline_problem(record_lines: list[str], delimiter: str, found: int, fields: int) -> str | None:
    """Why a record read over several lines is not one well-formed record, else None."""
    try:
        list(csv.reader(iter(record_lines), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return "unterminated quoted field" if "end of data" in str(exc) else f"malformed quoting: {exc}"
    if found != fields:
        return f"expected {fields} fields, found {found}"
    return None


_WIDE_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


def _read_bytes(path: Path) -> bytes:
    """A table file's bytes; an OSError (permissions, a folder, an I/O error) is the source's one-line
    error, not a traceback."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def decode_text(data: bytes, encoding: str | None, path: Path | str = "input") -> str:
    """``data`` decoded strictly: UTF-8 with or without BOM by default. Invalid bytes raise
    :class:`SourceError` naming the line, the byte offset and (when charset-normalizer is
    installed) the likely encoding."""
    name = encoding or "utf-8"
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise SourceError(f"unknown encoding {name!r}") from None
    if codec == "utf-8":
        codec = "utf-8-sig"   # a BOM is not part of the first column's name
        if encoding is None and data.startswith(_WIDE_BOMS):   # Excel's "Unicode Text" is UTF-16 with a BOM:
            codec = "utf-32" if data[:4] in _WIDE_BOMS[2:] else "utf-16"   # unambiguous (never valid UTF-8)
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start:exc.end]
        hint = _guess_encoding(data)
        raise SourceError(f"{path}: line {line}, byte {exc.start}: {bad!r} is not valid {name} ({exc.reason}); "
                          f"pass --encoding{f' (it looks like {hint})' if hint else ''}") from None


def _guess_encoding(data: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes   # optional: only improves the error message
    except ImportError:
        return None
    best = from_bytes(data[:65536]).best()
    return best.encoding if best else None


DELIMITER_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}


def parse_delimiter(value: str | None) -> str | None:
    """A delimiter as typed on a command line (``;``, ``tab``, ``\\t``, ``comma``…) -> one character."""
    if value is None:
        return None
    delimiter = DELIMITER_NAMES.get(value.lower(), value)
    if len(delimiter) != 1:
        raise SourceError(f"delimiter must be one character or one of {', '.join(DELIMITER_NAMES)}; got {value!r}")
    return delimiter


def sniff_delimiter(text: str) -> str:
    """The delimiter among :data:`DELIMITERS` that splits the header into the most fields
    (a header rarely contains a delimiter; data fields often do). Ties go to the earlier one."""
    first = text[:65536]
    best, best_fields = DELIMITERS[0], 0
    for candidate in DELIMITERS:
        try:
            fields = len(next(csv.reader(io.StringIO(first, newline=""), delimiter=candidate), []))
        except csv.Error:
            continue
        if fields > best_fields:
            best, best_fields = candidate, fields
    return best


def _cell(value: Any) -> str:
    """A table cell as the text a CSV would hold (None -> '', 3.0 -> '3', dates ISO, lists JSON)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _binary_text(bytes(value))
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value).strip()


def _binary_text(data: bytes) -> str:
    """A binary cell (Parquet ``binary``) as text: its UTF-8 text when it is text, else a placeholder
    naming its size (json.dumps / str() of bytes crashed the ingest or stored "b'...'")."""
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return f"<{len(data):,} bytes>"


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _binary_text(bytes(value))
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    return str(value)


def _header_of(dicts: Iterable[dict]) -> list[str]:
    header: dict[str, None] = {}
    for d in dicts:
        header.update(dict.fromkeys(d))
    return list(header)


def _read_jsonl(path: Path, encoding: str | None) -> tuple[list[str], Records, list[RowError]]:
    records: Records = []
    errors: list[RowError] = []
    objects: list[tuple[int, dict]] = []
    text = decode_text(_read_bytes(path), encoding, path)
    for line, raw in enumerate(io.StringIO(text, newline=None), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(RowError("bad_row", f"invalid JSON: {exc.msg} (column {exc.colno})", line=line))
            continue
        if not isinstance(obj, dict):
            errors.append(RowError("bad_row", f"expected a JSON object, found {type(obj).__name__}", line=line))
            continue
        objects.append((line, obj))
    header = _header_of(o for _, o in objects)
    records = [(line, {h: _table_value(o.get(h)) for h in header}) for line, o in objects]
    if not objects and not errors:
        raise SourceError(f"{path} is empty")
    return header, records, errors


def _read_parquet(path: Path) -> tuple[list[str], Records, list[RowError]]:
    try:
        import pyarrow.parquet as pq   # optional dependency ([tables] extra)
    except ImportError:
        raise SourceError("reading Parquet needs pyarrow: pip install 'lookalike[tables]'") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for bad files
        raise SourceError(f"{path}: cannot read Parquet: {exc}") from None
    header = [str(name) for name in table.column_names]
    return header, [(i, {h: _table_value(v) for h, v in zip(header, rec.values())})
                    for i, rec in enumerate(table.to_pylist(), start=1)], []


def _read_xlsx(path: Path) -> tuple[list[str], Records, list[RowError]]:
    try:
        import openpyxl   # optional dependency ([tables] extra)
    except ImportError:
        raise SourceError("reading .xlsx needs openpyxl: pip install 'lookalike[tables]'") from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile/XML errors for files that are not workbooks
        raise SourceError(f"{path}: cannot read workbook: {exc}") from None
    try:
        rows = enumerate(book.worksheets[0].iter_rows(values_only=True), start=1)
        try:
            header = [_cell(v) for v in next(rows)[1]]
        except StopIteration:
            raise SourceError(f"{path} is empty") from None
        table = [(number, [_cell(v) for v in values]) for number, values in rows]
        table = [(number, cells) for number, cells in table if any(cells)]
        # cells right of the last named column are kept too, as column_<n>, when any row fills them
        width = max([len(header)] + [max((i + 1 for i, c in enumerate(cells) if c), default=0) for _, cells in table])
        header = (header + [""] * width)[:width]
        if not any(header):
            return header, [], []
        named, unnamed = _name_blank_columns(header)
        records: Records = []
        for number, cells in table:
            cells += [""] * (width - len(cells))
            records.append((number, {h: c for h, c in zip(named, cells) if h not in unnamed or c}))
        return named, records, []
    finally:
        book.close()


def _check_header(path: Path, header: list[str]) -> None:
    if not any(header):
        raise SourceError(f"{path} has no header row")
    duplicates = sorted({h for h in header if h and header.count(h) > 1})
    if duplicates:
        raise SourceError(f"{path}: column name(s) used twice in the header: {', '.join(duplicates)}")


def dedupe(rows: list[SourceRow], errors: list[RowError]) -> tuple[list[SourceRow], list[RowError]]:
    """Keep the first row of each id; later ones are reported, never silently merged."""
    seen: dict[str, SourceRow] = {}
    unique = []
    for row in rows:
        if row.id in seen:
            first = seen[row.id]
            where = f"line {first.line}" if first.line else first.location
            errors.append(RowError("duplicate_id", f"id already used by {where}", id=row.id,
                                   path=row.location, line=row.line))
            continue
        seen[row.id] = row
        unique.append(row)
    return unique, errors


def _column_key(name: str) -> str:
    """A column name as the default columns are matched: case, spaces, hyphens and underscores do
    not matter (``Image Path``, ``image-path`` and ``IMAGE_PATH`` are ``image_path``; ``Image Src`` is
    Shopify's ``image src``)."""
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def _pick(header: list[str], wanted: str | None, candidates: tuple[str, ...], what: str,
          required: bool = True) -> str | None:
    if wanted:
        if wanted not in header:
            close = [h for h in header if _column_key(h) == _column_key(wanted)]
            if len(close) == 1:
                return close[0]
            raise SourceError(f"{what} column {wanted!r} not found; columns are: {', '.join(header)}")
        return wanted
    normal = {}
    for h in header:
        normal.setdefault(_column_key(h), h)
    for name in candidates:
        if _column_key(name) in normal:
            return normal[_column_key(name)]
    if what == "image" and required:
        raise SourceError(f"no image column found (tried {', '.join(candidates)}; columns are: "
                          f"{', '.join(header)}); pass --image-column")
    return None
