"""The indexing pipeline: rows -> (hash, skip unchanged, decode, preprocess) -> batched encode -> store.

Decoding and resizing run in a thread pool (Pillow releases the GIL while decoding) and stay a
bounded number of images ahead of the model, which runs in the calling thread; so JPEG decoding
and inference overlap and memory stays flat however large the catalog. Each batch is committed in
one SQLite transaction: killing the process loses at most the batch in flight, and a re-run skips
everything already stored (same content hash, same encoder fingerprint).
"""
from __future__ import annotations

import csv
import hashlib
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from lookalike.encoders.base import Encoder
from lookalike.data.artifacts import atomic_file, write_json
from lookalike.data.images import ImageError, open_image
from lookalike.data.sources import RowError, SourceRow
from lookalike.data.store import NewItem, Store


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
        counts: dict[str, int] = {}
        for error in self.errors:
            counts[error.reason] = counts.get(error.reason, 0) + 1
        return counts

    def to_dict(self) -> dict:
        data = asdict(self)
        data["errors"] = [e.to_dict() for e in self.errors]
        data.update(failed=self.failed, images_per_s=round(self.images_per_s, 2), error_counts=self.error_counts())
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


@dataclass
class _Loaded:
    row: SourceRow
    status: str                      # "unchanged" | "embed" | "error"
    item: NewItem | None = None
    array: np.ndarray | None = None
    error: RowError | None = None
    existed: bool = False


def default_workers() -> int:
    return max(2, min(8, (os.cpu_count() or 2)))


def ingest(store: Store, rows: list[SourceRow], encoder: Encoder, *, source: str = "", batch_size: int = 32,
           workers: int | None = None, on_progress: Callable[[int], None] | None = None) -> IngestReport:
    """Embed and store every valid row; unchanged rows are skipped, bad rows reported."""
    report = IngestReport(source=source, encoder=encoder.name, rows=len(rows))
    fingerprint = encoder.fingerprint()
    known = store.known_hashes(encoder.name, fingerprint)
    started = time.perf_counter()
    batch: list[_Loaded] = []
    unchanged: list[NewItem] = []
    for loaded in load_rows(rows, encoder, known, workers or default_workers(), window=batch_size * 4):
        if loaded.status == "error":
            report.errors.append(loaded.error)
        elif loaded.status == "unchanged":
            report.unchanged += 1
            unchanged.append(loaded.item)
        else:
            batch.append(loaded)
            if len(batch) >= batch_size:
                _flush(store, batch, encoder, fingerprint, report)
        if on_progress:
            on_progress(1)
    _flush(store, batch, encoder, fingerprint, report)
    report.metadata_updated = store.update_metadata(unchanged) if unchanged else 0
    report.seconds = time.perf_counter() - started
    return report


def _flush(store: Store, batch: list[_Loaded], encoder: Encoder, fingerprint: str, report: IngestReport) -> None:
    if not batch:
        return
    vectors = encoder.encode_batch(np.stack([b.array for b in batch]))
    store.write_batch([b.item for b in batch], vectors, encoder.name, fingerprint, encoder.metric)
    report.updated += sum(b.existed for b in batch)
    report.added += sum(not b.existed for b in batch)
    batch.clear()


def load_rows(rows: Iterable[SourceRow], encoder: Encoder, known: dict[str, tuple[str, bool]], workers: int,
              window: int) -> Iterator[_Loaded]:
    """Load rows in a thread pool, yielding results in order with at most ``window`` in flight."""
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-decode") as pool:
        for row in rows:
            pending.append(pool.submit(load_row, row, encoder, known.get(row.id)))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def load_row(row: SourceRow, encoder: Encoder, known: tuple[str, bool] | None) -> _Loaded:
    """Read, hash and (unless unchanged) decode + preprocess one row. Never raises."""
    def error(reason: str, message: str) -> _Loaded:
        return _Loaded(row, "error", error=RowError(reason, message, id=row.id, path=str(row.path), line=row.line))

    try:
        data = row.path.read_bytes()
    except FileNotFoundError:
        return error("missing", f"file not found: {row.path}")
    except IsADirectoryError:
        return error("not_an_image", f"is a directory: {row.path}")
    except OSError as exc:
        return error("unreadable", f"cannot read file: {exc}")
    sha = hashlib.sha256(data).hexdigest()
    if known is not None and known[0] == sha and known[1]:
        item = NewItem(row.id, str(row.path), row.label, row.metadata, sha, 0, 0)
        return _Loaded(row, "unchanged", item=item, existed=True)
    try:
        image = open_image(data, draft_size=encoder.image_size)
        array = encoder.preprocess(image)
    except ImageError as exc:
        return error(exc.reason, exc.message)
    except Exception as exc:  # a decoder bug on one odd file must not stop the batch
        return error("corrupt", f"cannot process image: {type(exc).__name__}: {exc}")
    item = NewItem(row.id, str(row.path), row.label, row.metadata, sha, *_original_size(data, image))
    return _Loaded(row, "embed", item=item, array=array, existed=known is not None)


def _original_size(data: bytes, image) -> tuple[int, int]:
    """Size before JPEG draft scaling (cheap: reads only the header)."""
    from io import BytesIO

    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as im:
            return im.size
    except Exception:
        return image.size
