"""The one indexing pipeline: rows -> (hash, skip unchanged, decode, preprocess) -> batched encode -> store.

:func:`ingest` drives it and owns the store: it reads which rows are already embedded
(``Store.known_hashes``), hands the rows to an *executor* that runs the per-row steps
(:func:`load_row`) and the model, and writes what comes back, one batch per SQLite transaction, so
killing the process loses at most the batch in flight and a re-run skips everything already stored
(same content hash, same encoder fingerprint). Two executors, same steps, same store writes:

- :class:`ThreadExecutor` (default): decoding and resizing run in a thread pool (Pillow releases
  the GIL while decoding) and stay a bounded number of images ahead of the model, which runs in
  threads of its own (the encoder's ``encode_workers``); so JPEG decoding, inference and the SQLite
  writes of the calling thread overlap, and memory stays flat however large the catalog.
- :class:`lookalike.data.ray_ingest.RayExecutor`: the same steps as a Ray Data job over a cluster.

Rows whose image is a URL are downloaded in the same per-row step, by the executor's workers (so at
most ``workers`` downloads are in flight), through a :class:`lookalike.data.fetch.Fetcher` (cache,
retries, caps; its failures are row errors like any other); the item's path is then the cached
file and its metadata ``image_url`` the URL. Rows whose table holds the image bytes (a Parquet binary
or Hugging Face image column, a ``data:`` URI: ``SourceRow.data``) are decoded from those bytes and,
once they decode, kept in the file :func:`place_inline` chose (the catalog's ``images/``, by content
hash), which becomes the item's path.

The encoder is anything with the :class:`IngestEncoder` shape (``lookalike.encoders`` provides
them; this layer does not import it).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from lookalike.data.artifacts import atomic_file, write_bytes, write_json
from lookalike.data.fetch import FetchError, Fetcher, is_url
from lookalike.data.images import ImageError, image_format, open_image
from lookalike.data.sources import MAX_ID_CHARS, RowError, SourceRow, invalid_id
from lookalike.data.store import NewItem, Store


class IngestEncoder(Protocol):
    """What the pipeline needs of an encoder (``lookalike.encoders.base.Encoder`` has it)."""
    name: str           # the spec vectors are stored under
    dim: int            # length of one vector
    metric: str         # the metric its vectors are searched with (recorded in the store)
    image_size: int     # decode hint: JPEGs are draft-decoded near this size

    def fingerprint(self) -> str:
        """Changes whenever the same image would give another vector (weights, preprocessing)."""

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> one fixed-shape float32 array (what ``encode_batch`` stacks)."""

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        """(n, *preprocessed shape) -> (n, dim) float32 vectors. Optional attribute
        ``encode_workers`` (default 1): how many calls may run at once to fill the cores."""


@dataclass
class IngestReport:
    source: str
    encoder: str
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    metadata_updated: int = 0
    pruned: int = 0
    seconds: float = 0.0
    errors: list[RowError] = field(default_factory=list)
    skipped: list[RowError] = field(default_factory=list)   # files of a folder that are not items (data.sources)
    downloads: dict[str, int] = field(default_factory=dict)  # URL rows: data.fetch.FetchStats counts (empty: none)
    runtime: str = ""        # the int8 decision of the catalog for this encoder, in words (lookalike.catalog)
    report_json: str | None = None
    report_csv: str | None = None

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def error_counts(self) -> dict[str, int]:
        return _count_reasons(self.errors)

    def skip_counts(self) -> dict[str, int]:
        return _count_reasons(self.skipped)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["errors"] = [e.to_dict() for e in self.errors]
        data["skipped"] = [e.to_dict() for e in self.skipped]
        data.update(failed=self.failed, images_per_s=round(self.images_per_s, 2), error_counts=self.error_counts(),
                    skip_counts=self.skip_counts())
        return data

    def write(self, directory: Path) -> None:
        """Write the report as JSON (everything) and CSV (one line per failed row)."""
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        json_path, csv_path = directory / f"ingest-{stamp}.json", directory / f"ingest-{stamp}-errors.csv"
        self.report_json, self.report_csv = str(json_path), str(csv_path)
        write_json(json_path, self.to_dict(), indent=2)
        with atomic_file(csv_path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "path", "line", "reason", "message"])
            writer.writeheader()
            writer.writerows(e.to_dict() for e in self.errors)
        write_json(directory / "latest.json", self.to_dict(), indent=2)


def _count_reasons(errors: list[RowError]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for error in errors:
        counts[error.reason] = counts.get(error.reason, 0) + 1
    return counts


@dataclass
class LoadedRow:
    """One row after the per-row steps (:func:`load_row`)."""
    row: SourceRow
    status: str                      # "unchanged" | "embed" | "error"
    item: NewItem | None = None      # what the store gets (all but errors)
    array: np.ndarray | None = None  # the preprocessed image ("embed" only, and only until encoded)
    error: RowError | None = None
    existed: bool = False            # the id was already in the store (an update, not an add)


@dataclass
class Batch:
    """What an executor yields: rows in any status, and the vectors of its "embed" rows in order."""
    rows: list[LoadedRow]
    vectors: np.ndarray              # (number of "embed" rows, dim) float32

    @property
    def embedded(self) -> list[LoadedRow]:
        return [r for r in self.rows if r.status == "embed"]


class Executor(Protocol):
    """Runs the per-row steps and the model: yields every row of ``rows`` exactly once, in batches
    whose "embed" rows number at most ``batch_size``."""

    def __call__(self, rows: Sequence[SourceRow], encoder: IngestEncoder, known: dict[str, tuple[str, bool]],
                 batch_size: int) -> Iterator[Batch]: ...


EXECUTORS = ("threads", "ray")   # ThreadExecutor, lookalike.data.ray_ingest.RayExecutor


def default_workers() -> int:
    return max(2, min(8, (os.cpu_count() or 2)))


def ingest(store: Store, rows: Sequence[SourceRow], encoder: IngestEncoder, *, source: str = "",
           batch_size: int = 32, executor: Executor | None = None, workers: int | None = None,
           fetcher: Fetcher | None = None, on_progress: Callable[[int], None] | None = None) -> IngestReport:
    """Embed and store every valid row of ``rows`` with ``encoder``; unchanged rows (same content
    hash and encoder fingerprint as stored) are skipped and only get their path/label/metadata
    refreshed, bad rows are reported, never fatal. ``executor`` defaults to a
    :class:`ThreadExecutor` with ``workers`` decode threads and ``fetcher`` for URL rows;
    ``on_progress(n)`` after every n rows (downloads included: a row counts once it is loaded)."""
    executor = executor or ThreadExecutor(workers, fetcher)
    stats = getattr(getattr(executor, "fetcher", None), "stats", None)
    stats_before = asdict(stats) if stats is not None else {}
    report = IngestReport(source=source, encoder=encoder.name, rows=len(rows))
    fingerprint = encoder.fingerprint()
    known = store.known_hashes(encoder.name, fingerprint)
    started = time.perf_counter()
    unchanged: list[NewItem] = []
    batches = executor(rows, encoder, known, batch_size)
    try:
        for batch in batches:
            for loaded in batch.rows:
                if loaded.status == "error":
                    report.errors.append(loaded.error)
                elif loaded.status == "unchanged":
                    report.unchanged += 1
                    unchanged.append(loaded.item)
            embedded = batch.embedded
            if embedded:
                store.write_batch([b.item for b in embedded], batch.vectors, encoder.name, fingerprint, encoder.metric)
                report.updated += sum(b.existed for b in embedded)
                report.added += sum(not b.existed for b in embedded)
            if on_progress:
                on_progress(len(batch.rows))
    finally:  # a failed write stops the executor now (threads joined, Ray shut down), not at garbage collection
        getattr(batches, "close", lambda: None)()
    report.metadata_updated = store.update_metadata(unchanged) if unchanged else 0
    if stats is not None:   # this run's counts (a fetcher may serve several runs)
        downloads = {k: v - stats_before[k] for k, v in asdict(stats).items()}
        report.downloads = downloads if any(downloads.values()) else {}
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class ThreadExecutor:
    """Per-row steps in ``workers`` threads, at most ``4 * batch_size`` rows ahead of the model;
    the model runs in ``encode_threads`` threads of its own (default: the encoder's
    ``encode_workers``, else 1), so decoding, inference and the caller's SQLite writes all overlap
    (a three-stage pipeline: decode threads -> model threads -> store in the calling thread).
    Batches come back in submission order; errors and unchanged rows as soon as everything before
    them has come back (a batch of one), rows to embed in batches of ``batch_size``.
    URL rows are downloaded by the same threads through ``fetcher`` (default: an uncached
    :class:`~lookalike.data.fetch.Fetcher`)."""
    workers: int | None = None
    fetcher: Fetcher | None = None
    encode_threads: int | None = None

    def __call__(self, rows: Sequence[SourceRow], encoder: IngestEncoder, known: dict[str, tuple[str, bool]],
                 batch_size: int) -> Iterator[Batch]:
        workers = self.workers or default_workers()
        model_threads = max(1, int(self.encode_threads or getattr(encoder, "encode_workers", 1) or 1))
        empty = np.zeros((0, encoder.dim), np.float32)
        queue: deque[tuple[Future | None, Batch | None]] = deque()   # in order: a model call or a ready batch
        running = 0                                                  # model calls in the queue
        pending: list[LoadedRow] = []
        model = ThreadPoolExecutor(max_workers=model_threads, thread_name_prefix="lookalike-encode")
        # Every core already runs a decode or model thread: numpy's BLAS pool would only add threads that
        # spin and contend for the small matrix products of per-image work (the colour histogram).
        blas = threadpool_limits(1, user_api="blas")
        try:
            for loaded in load_rows(rows, encoder, known, workers, window=batch_size * 4, fetcher=self.fetcher):
                if loaded.status != "embed":
                    queue.append((None, Batch([loaded], empty)))
                else:
                    pending.append(loaded)
                    if len(pending) >= batch_size:
                        queue.append((model.submit(encode, pending, encoder), None))
                        running, pending = running + 1, []
                # hand back what is finished; wait only when every model thread has a batch queued
                while queue and (queue[0][0] is None or queue[0][0].done() or running > model_threads):
                    future, ready = queue.popleft()
                    if future is not None:
                        running -= 1
                    yield ready if future is None else future.result()
            if pending:
                queue.append((model.submit(encode, pending, encoder), None))
            while queue:
                future, ready = queue.popleft()
                yield ready if future is None else future.result()
        finally:
            model.shutdown(wait=True, cancel_futures=True)
            blas.restore_original_limits()


def encode(rows: list[LoadedRow], encoder: IngestEncoder) -> Batch:
    """Run the model on the preprocessed arrays of ``rows`` (all "embed"); the arrays are dropped."""
    vectors = encoder.encode_batch(np.stack([r.array for r in rows]))
    for r in rows:
        r.array = None
    return Batch(rows, np.asarray(vectors, np.float32))


def load_rows(rows: Iterable[SourceRow], encoder: IngestEncoder, known: dict[str, tuple[str, bool]], workers: int,
              window: int, fetcher: Fetcher | None = None) -> Iterator[LoadedRow]:
    """Load rows in a thread pool, yielding results in order with at most ``window`` in flight."""
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-decode") as pool:
        for row in rows:
            pending.append(pool.submit(load_row, row, encoder, known.get(row.id), fetcher))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def load_row(row: SourceRow, encoder: IngestEncoder, known: tuple[str, bool] | None,
             fetcher: Fetcher | None = None) -> LoadedRow:
    """Read (a URL row: download through ``fetcher``), hash and (unless unchanged) decode +
    preprocess one row. Never raises.

    ``known`` is the store's ``(sha256, vector up to date)`` for this id, None for a new id."""
    def error(reason: str, message: str) -> LoadedRow:
        return LoadedRow(row, "error", error=RowError(reason, message, id=row.id, path=row.location, line=row.line))

    try:
        if row.url:
            data, cached, row.metadata = _download(row.url, fetcher, row.metadata)
            row.path = cached or row.path
        elif row.data is not None:   # image bytes from the table itself
            data = row.data
        elif row.path.exists() and not row.path.is_file() and not row.path.is_dir():
            # a pipe or device listed in a table: reading it would block, or never end (/dev/zero)
            return error("not_an_image", f"not a regular file (pipe, socket, device): {row.path}")
        else:
            data = row.path.read_bytes()
    except FetchError as exc:
        return error(exc.reason, exc.message)
    except FileNotFoundError:
        return error("missing", f"file not found: {row.path}")
    except IsADirectoryError:
        return error("not_an_image", f"is a directory: {row.path}")
    except OSError as exc:
        return error("unreadable", f"cannot read file: {exc}")
    sha = hashlib.sha256(data).hexdigest()
    if known is not None and known[0] == sha and known[1]:
        if not _keep_inline(row, data):
            return error("unreadable", f"cannot store the image in the catalog: {row.path}")
        item = NewItem(row.id, _item_path(row), row.label, row.metadata, sha, 0, 0)
        return LoadedRow(row, "unchanged", item=item, existed=True)
    try:
        image = open_image(data, draft_size=encoder.image_size)
        array = encoder.preprocess(image)
    except ImageError as exc:
        return error(exc.reason, exc.message)
    except Exception as exc:  # a decoder bug on one odd file must not stop the batch
        return error("corrupt", f"cannot process image: {type(exc).__name__}: {exc}")
    if not _keep_inline(row, data):   # only images that decode are kept: a bad one leaves no file behind
        return error("unreadable", f"cannot store the image in the catalog: {row.path}")
    item = NewItem(row.id, _item_path(row), row.label, row.metadata, sha, *_original_size(data, image))
    return LoadedRow(row, "embed", item=item, array=array, existed=known is not None)


def _item_path(row: SourceRow) -> str:
    """What the store records as the item's image: the local file (a URL row's cached download, a
    table's image bytes kept by :func:`place_inline`), or the URL itself when it was fetched without
    a cache (the bytes' description when they were not placed)."""
    if row.path == Path() and (row.url or row.inline):
        return row.url or row.inline
    return str(row.path)


def place_inline(rows: Iterable[SourceRow], folder: Path) -> None:
    """Give every row whose table holds its image bytes (``row.data``) the file under ``folder`` that
    keeps them, by content hash (:func:`kept_path`: the write API's ``images/`` layout), as the
    fetcher's cache keeps a URL's download. The pipeline writes it once the image decodes
    (:func:`load_row`); identical bytes share one file, so a re-run writes nothing."""
    for row in rows:
        if row.data is not None:
            row.path = kept_path(folder, row.data)


def _keep_inline(row: SourceRow, data: bytes) -> bool:
    """Write a table row's image bytes to their :func:`place_inline` file unless it is there; False
    when that fails. Other rows (and bytes not placed): nothing to do, True."""
    if row.data is None or row.path == Path() or row.path.is_file():
        return True
    try:
        write_bytes(row.path, data)
    except OSError:
        return False
    return True


def _download(url: str, fetcher: Fetcher | None, metadata: dict) -> tuple[bytes, Path | None, dict]:
    """(bytes, cached file or None, metadata + ``image_url``) of a URL row."""
    if fetcher is None:
        with Fetcher() as own:
            data, cached = own.fetch(url)
    else:
        data, cached = fetcher.fetch(url)
    return data, cached, {**metadata, "image_url": url}


def _original_size(data: bytes, image: Image.Image) -> tuple[int, int]:
    """Size before JPEG draft scaling (cheap: reads only the header)."""
    try:
        with Image.open(BytesIO(data)) as im:
            return im.size
    except Exception:
        return image.size


# -- single writes: the API's upserts and `lookalike add` ---------------------------------------
MAX_LABEL_CHARS = 512
MAX_METADATA_KEYS = 100
MAX_METADATA_CHARS = 4096   # one metadata key or text value
RESERVED_COLUMNS = ("id", "label", "path")   # item columns (data.store.ITEM_COLUMNS): not metadata keys
IMAGES = "images"           # under the catalog folder: uploaded images, one file per content hash
_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass
class ItemWrite:
    """One item to add or replace (:func:`upsert_items`): its ``id``, its image as exactly one of
    ``data`` (the bytes of an upload), ``url`` (``http(s)://``, downloaded through
    :class:`~lookalike.data.fetch.Fetcher`) or ``path`` (a local file, for the CLI; never from a
    web client), its ``label`` and ``metadata`` (flat: text, number, boolean or null values)."""
    id: str
    data: bytes | None = None
    url: str | None = None
    path: str | Path | None = None
    label: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class WriteOutcome:
    """What became of one :class:`ItemWrite`: ``outcome`` is ``added``, ``updated`` (new image, or
    new label / metadata), ``unchanged`` or ``failed`` (then ``reason`` — a code of
    :func:`check_write`, an image or fetch reason — and ``message``; nothing of it was written)."""
    id: str
    outcome: str
    reason: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"

    def to_dict(self) -> dict:
        return asdict(self)


def check_write(write: ItemWrite) -> RowError | None:
    """The first problem of ``write`` as a RowError (reasons ``invalid_id``, ``invalid_image``
    — not exactly one image source, or a URL that is not http(s) —, ``invalid_label``,
    ``invalid_metadata``), or None."""
    def bad(reason: str, message: str) -> RowError:
        return RowError(reason, message, id=write.id if isinstance(write.id, str) else None)

    if invalid_id(write.id):
        return bad("invalid_id", f"an item id is 1-{MAX_ID_CHARS} printable characters")
    if sum(x is not None for x in (write.data, write.url, write.path)) != 1:
        return bad("invalid_image", "give exactly one image: uploaded bytes, a URL or a file")
    if write.url is not None and not is_url(write.url):
        return bad("invalid_image", f"image URLs start with http:// or https://, got {write.url[:100]!r}")
    problem = label_problem(write.label)
    if problem:
        return bad("invalid_label", problem)
    return check_metadata(write.metadata, write.id)


def label_problem(label) -> str | None:
    """Why ``label`` cannot be stored (None: it can; None itself means "no label"): a label is
    non-blank text of at most MAX_LABEL_CHARS characters. A blank one ("", spaces) would become a
    class of its own in evaluation, filters and the label list — leave it out or null for none."""
    if label is None:
        return None
    if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
        return f"a label is text of at most {MAX_LABEL_CHARS} characters"
    if not label.strip():
        return "a label cannot be blank: leave it out (or null) for an item without a label"
    return None


def parse_metadata_value(text: str):
    """A metadata value typed by the text of a ``KEY=VALUE`` pair (the CLI's ``--meta`` / ``--set``)
    as the JSON of the write API would carry it: a JSON number (``12``, ``-0.5``, ``1e3``; finite,
    integers within 64 bits) or ``true`` / ``false`` becomes that number / boolean, a JSON string in
    double quotes (``"007"``) that text, anything else the text as written (``red``, ``007``,
    ``2024-05-01``, ``null``). So ``--meta price=12`` stores the number 12, which range filters
    (``price<50``) and the API's answers read as a number."""
    stripped = text.strip()
    if stripped in ("true", "false"):
        return stripped == "true"
    if stripped.startswith('"') and stripped.endswith('"') and len(stripped) >= 2:
        try:
            value = json.loads(stripped)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    if _JSON_NUMBER.fullmatch(stripped):
        value = json.loads(stripped)
        if isinstance(value, int) and -2**63 <= value < 2**63:
            return value
        if isinstance(value, float) and math.isfinite(value):
            return value
    return text


def parse_metadata_pairs(pairs: Iterable[str], option: str = "--meta") -> dict:
    """``["price=12", "colour=red"]`` -> ``{"price": 12, "colour": "red"}`` (values by
    :func:`parse_metadata_value`; a later key wins). ValueError naming ``option`` for a pair
    without ``=`` or with an empty key."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = parse_metadata_value(text)
    return out


# JSON's number grammar (RFC 8259 §6): no leading zeros, no "+", no bare ".5"
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def check_metadata(metadata, item_id: str | None = None, *, allow_null: bool = False) -> RowError | None:
    """None when ``metadata`` is a dict of at most 100 keys (text, not ``id`` / ``label`` /
    ``path``) to text, finite numbers or booleans (null too with ``allow_null``: a patch removing
    the key); else a RowError ``invalid_metadata`` naming the first bad key."""
    def bad(message: str) -> RowError:
        return RowError("invalid_metadata", message, id=item_id)

    if not isinstance(metadata, dict):
        return bad("metadata is a JSON object of column -> value")
    if len(metadata) > MAX_METADATA_KEYS:
        return bad(f"at most {MAX_METADATA_KEYS} metadata keys, got {len(metadata)}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 200 or key in RESERVED_COLUMNS:
            return bad(f"metadata key {str(key)[:50]!r}: 1-200 characters, not one of {', '.join(RESERVED_COLUMNS)}")
        if value is None and allow_null:
            continue
        if isinstance(value, float) and not np.isfinite(value):
            return bad(f"metadata {key!r}: numbers must be finite")
        if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
            return bad(f"metadata {key!r}: integers must fit in 64 bits (send a larger one as text)")
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, str) and len(value) > MAX_METADATA_CHARS):
            return bad(f"metadata {key!r}: values are text (at most {MAX_METADATA_CHARS} characters), "
                       f"numbers or booleans")
    return None


def kept_path(folder: Path, data: bytes) -> Path:
    """Where image bytes are kept under ``folder``: ``<sha256[:2]>/<sha256><suffix>`` (the suffix from
    the format Pillow reads in the header, ``.img`` for others)."""
    sha = hashlib.sha256(data).hexdigest()
    try:
        suffix = _SUFFIXES.get(image_format(data), ".img")
    except ImageError:   # not decodable: load_row reports why; the suffix does not matter
        suffix = ".img"
    return Path(folder) / sha[:2] / f"{sha}{suffix}"


def keep_image(folder: Path, data: bytes) -> tuple[Path, bool]:
    """Store uploaded image bytes under ``folder`` at :func:`kept_path` (written atomically; identical
    uploads share one file). Returns (the file, whether this call created it)."""
    path = kept_path(folder, data)
    if path.exists():
        return path, False
    write_bytes(path, data)
    return path, True


def upsert_items(store: Store, writes: Sequence[ItemWrite], encoder: IngestEncoder, images_dir: Path, *,
                 fetcher: Fetcher | None = None, workers: int | None = None) -> list[WriteOutcome]:
    """Add or replace ``writes`` in ``store`` with ``encoder``'s vectors: exactly one
    :class:`WriteOutcome` per write, in order. Each write is checked (:func:`check_write`; a
    repeated id fails as ``duplicate_id``), uploaded bytes are kept under ``images_dir``
    (:func:`keep_image`), URLs downloaded through ``fetcher``, then every image is hashed, decoded
    and preprocessed by the ingest's own :func:`load_rows` (an unchanged image is not re-embedded:
    only its label / metadata are refreshed), embedded in one batch (:func:`encode`) and everything
    valid is written in ONE store transaction (:meth:`Store.upsert`): a failing item never stops or
    half-writes the others, and a crash writes none of them."""
    outcomes: list[WriteOutcome | None] = [None] * len(writes)
    pending: list[tuple[int, SourceRow]] = []
    created: list[Path] = []
    seen: set[str] = set()
    for position, write in enumerate(writes):
        problem = check_write(write)
        if problem is None and write.id in seen:
            problem = RowError("duplicate_id", f"item {write.id!r} appears more than once in this request", id=write.id)
        if problem is not None:
            outcomes[position] = WriteOutcome(str(write.id), "failed", problem.reason, problem.message)
            continue
        seen.add(write.id)
        path = Path(write.path) if write.path is not None else Path()
        if write.data is not None:
            path, new = keep_image(images_dir, write.data)
            if new:
                created.append(path)
        pending.append((position, SourceRow(write.id, path, write.label, dict(write.metadata), line=position + 1,
                                            url=write.url)))
    try:
        rows = [row for _, row in pending]
        fingerprint = encoder.fingerprint()
        known = store.known_hashes(encoder.name, fingerprint, ids=[row.id for row in rows])
        loaded = list(load_rows(rows, encoder, known, workers or default_workers(), window=max(1, len(rows)),
                                fetcher=fetcher)) if rows else []
        embedded = [r for r in loaded if r.status == "embed"]
        vectors = encode(embedded, encoder).vectors if embedded else np.zeros((0, encoder.dim), np.float32)
        changed = store.upsert([r.item for r in embedded], vectors, encoder.name, fingerprint, encoder.metric,
                               refreshed=[r.item for r in loaded if r.status == "unchanged"])
    except BaseException:
        _discard(created)   # nothing was written: no file of this request stays behind
        raise
    used = set()
    for (position, row), result in zip(pending, loaded):
        if result.status == "error":
            outcomes[position] = WriteOutcome(row.id, "failed", result.error.reason, result.error.message)
        else:
            used.add(str(row.path))
            outcome = ("updated" if result.existed else "added") if result.status == "embed" else \
                "updated" if row.id in changed else "unchanged"
            outcomes[position] = WriteOutcome(row.id, outcome)
    _discard([path for path in created if str(path) not in used])   # uploads that failed to decode
    return outcomes


def _discard(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()   # only when empty
        except OSError:
            pass
