"""The Ray executor of the ingest pipeline: ``lookalike index SOURCE --ray [local|ADDRESS]``.

:func:`lookalike.data.ingest.ingest` drives it exactly as it drives the thread executor (it reads
the stored hashes, writes each returned batch with ``Store.write_batch`` in one transaction, so an
interrupted run resumes where it stopped); only the per-row steps and the model run elsewhere:

1. ``map_batches(decode_batch)`` — stateless tasks read, hash, decode and preprocess each image
   with the very function the thread executor uses (``ingest.load_row``), so vectors are identical,
2. ``map_batches(EncodeActor)`` — an actor pool, each actor holding one copy of the model.

Workers build their own encoder from ``encoder_factory``, a picklable zero-argument callable the
caller provides (``Catalog.index`` passes ``functools.partial(get_encoder, spec, ...)``): this layer
does not import the encoders. Ray itself is imported only when the executor runs (the ``[ray]`` extra).

URL rows (image URLs in a CSV / JSON Lines / … source) are downloaded inside the decode tasks by
the very :class:`~lookalike.data.fetch.Fetcher` the thread executor uses, rebuilt in each task from
the caller's fetcher settings (timeouts, retries, redirect and size caps, the ``downloads/`` cache
with ETag / Last-Modified revalidation), so every row gets the same outcome (``http_404``,
``too_large``, …) and a re-run or a resumed run only revalidates. The tasks' download counts come
back with the rows and add up in the caller's ``fetcher.stats`` (the report's ``downloads``).

Locally (``--ray local``) Ray starts on this machine; ``ray.init`` and shutdown cost several
seconds, so on one box the thread executor is faster and this mode is for testing the pipeline. On a
cluster every worker needs ``lookalike`` installed and the image paths readable (shared storage).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from lookalike.data.fetch import Fetcher, FetchStats
from lookalike.data.ingest import Batch, IngestEncoder, IngestReport, LoadedRow, load_row
from lookalike.data.sources import RowError, SourceRow
from lookalike.data.store import NewItem

STATUS_CODES = {"embed": 0, "unchanged": 1, "error": 2}
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}
FETCH_COUNTS = tuple(f.name for f in fields(FetchStats))   # per-row download counts, in this order
# The lookalike package folder, shipped to cluster workers with the job.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass
class RayExecutor:
    """Decode tasks + a model actor pool on Ray (started here for ``address`` None/"local", else
    joined; shut down afterwards only if this executor started it). ``actors`` defaults to half
    the cluster's CPUs. URL rows are downloaded by the decode tasks, each batch through a
    :class:`~lookalike.data.fetch.Fetcher` with ``fetcher``'s settings (its ``cache_dir`` must be a
    folder every worker can reach; None: no cache, the item's path is then its URL); their download
    counts add up in ``fetcher.stats``."""
    encoder_factory: Callable[[], IngestEncoder]
    address: str | None = "local"
    actors: int | None = None
    fetcher: Fetcher = field(default_factory=Fetcher)

    def __call__(self, rows: Sequence[SourceRow], encoder: IngestEncoder, known: dict[str, tuple[str, bool]],
                 batch_size: int) -> Iterator[Batch]:
        import ray

        records = [_record(row, known.get(row.id)) for row in rows]
        shape = encoder.preprocess(Image.new("RGB", (encoder.image_size,) * 2, (255, 255, 255))).shape
        we_started = start_ray(self.address)
        try:
            if records:
                for out in embed_with_ray(records, self.encoder_factory, shape, batch_size, self.actors,
                                          fetch_settings(self.fetcher)):
                    for name, count in zip(FETCH_COUNTS, np.asarray(out["fetch"]).sum(axis=0)):
                        setattr(self.fetcher.stats, name, getattr(self.fetcher.stats, name) + int(count))
                    yield _batch(out)
        finally:
            if we_started:
                ray.shutdown()


def _record(row: SourceRow, known: tuple[str, bool] | None) -> dict:
    return {"id": row.id, "path": str(row.path), "label": row.label or "", "has_label": row.label is not None,
            "meta": json.dumps(row.metadata), "line": row.line if row.line is not None else -1,
            "known_sha": known[0] if known else "", "known_ok": bool(known and known[1]),
            "existed": known is not None, "url": row.url or "", "inline": row.inline or "",
            "data": row.data if row.data is not None else b""}


def _row(rec: dict) -> SourceRow:
    inline = str(rec.get("inline", "")) or None
    return SourceRow(str(rec["id"]), Path(str(rec["path"])), str(rec["label"]) if rec["has_label"] else None,
                     json.loads(str(rec["meta"])), int(rec["line"]) if int(rec["line"]) >= 0 else None,
                     str(rec["url"]) or None, data=bytes(rec["data"]) if inline else None, inline=inline)


def fetch_settings(fetcher: Fetcher) -> dict[str, Any]:
    """A fetcher's settings (every field but its counts): what a Ray task rebuilds it from (an
    ``httpx.Client`` and a lock cannot be pickled)."""
    return {f.name: getattr(fetcher, f.name) for f in fields(Fetcher) if f.name != "stats"}


def decode_batch(batch: dict, encoder_factory: Callable[[], IngestEncoder], shape: tuple,
                 fetch: dict[str, Any] | None = None) -> dict:
    """Ray task: (download,) hash + decode + preprocess a batch of rows (never raises; errors become rows).
    ``fetch``: :func:`fetch_settings` of the caller's fetcher (None: an uncached default one)."""
    encoder = encoder_factory()
    with Fetcher(**(fetch or {})) as fetcher:   # one client per task
        return _decode_batch(batch, encoder, shape, fetcher)


def _decode_batch(batch: dict, encoder: IngestEncoder, shape: tuple, fetcher: Fetcher) -> dict:
    n = len(batch["id"])
    arrays = np.zeros((n, *shape), np.float32)
    out = {key: [] for key in ("status", "sha", "width", "height", "reason", "message", "item_path", "item_meta",
                               "fetch")}
    for i in range(n):
        rec = {key: batch[key][i] for key in batch}
        known = (str(rec["known_sha"]), bool(rec["known_ok"])) if rec["existed"] else None
        before = asdict(fetcher.stats)
        loaded = load_row(_row(rec), encoder, known, fetcher)
        out["fetch"].append([getattr(fetcher.stats, name) - before[name] for name in FETCH_COUNTS])
        out["status"].append(STATUS_CODES[loaded.status])
        item, error = loaded.item, loaded.error
        out["sha"].append(item.sha256 if item else "")
        out["width"].append(item.width if item else 0)
        out["height"].append(item.height if item else 0)
        out["reason"].append(error.reason if error else "")
        out["message"].append(error.message if error else "")
        out["item_path"].append(item.path if item else "")     # a URL row's: its download (and image_url)
        out["item_meta"].append(json.dumps(item.metadata) if item else "{}")
        if loaded.array is not None:
            arrays[i] = loaded.array
    result = {key: value for key, value in batch.items() if key != "data"}   # the bytes need not travel back
    result.update({key: np.asarray(value) for key, value in out.items()})
    result["fetch"] = np.asarray(out["fetch"], np.int64).reshape(n, len(FETCH_COUNTS))
    result["array"] = arrays
    return result


class EncodeActor:
    """Ray actor: holds one model and embeds the decoded rows of each batch."""

    def __init__(self, encoder_factory: Callable[[], IngestEncoder], threads: int = 1):
        import torch  # every lookalike model runs on torch or onnxruntime; one thread per actor

        torch.set_num_threads(threads)
        self.encoder = encoder_factory()

    def __call__(self, batch: dict) -> dict:
        todo = np.flatnonzero(batch["status"] == STATUS_CODES["embed"])
        vectors = np.zeros((len(batch["status"]), self.encoder.dim), np.float32)
        if len(todo):
            vectors[todo] = self.encoder.encode_batch(batch["array"][todo])
        result = {key: value for key, value in batch.items() if key != "array"}
        result["vector"] = vectors
        return result


def embed_with_ray(records: list[dict], encoder_factory: Callable[[], IngestEncoder], shape: tuple,
                   batch_size: int = 32, actors: int | None = None, fetch: dict[str, Any] | None = None) -> Iterator[dict]:
    """Yield result batches (dicts of numpy columns, in any order) for ``records``."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = actors or max(1, cpus // 2)
    ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records) // batch_size, 4 * cpus)))
    ds = ds.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy",
                        fn_kwargs={"encoder_factory": encoder_factory, "shape": shape, "fetch": fetch})
    ds = ds.map_batches(EncodeActor, batch_size=batch_size, batch_format="numpy", concurrency=actors,
                        fn_constructor_kwargs={"encoder_factory": encoder_factory})
    yield from ds.iter_batches(batch_size=batch_size, batch_format="numpy")


def _batch(out: dict) -> Batch:
    """A Ray result batch (numpy columns) as the pipeline's :class:`Batch`."""
    rows, vectors = [], []
    for i, code in enumerate(out["status"]):
        row = _row({key: out[key][i] for key in ("id", "path", "label", "has_label", "meta", "line", "url", "inline")}
                   | {"data": b""})
        status = STATUS_NAMES[int(code)]
        if status == "error":
            error = RowError(str(out["reason"][i]), str(out["message"][i]), id=row.id, path=row.location, line=row.line)
            rows.append(LoadedRow(row, status, error=error))
            continue
        item = NewItem(row.id, str(out["item_path"][i]), row.label, json.loads(str(out["item_meta"][i])), str(out["sha"][i]),
                       int(out["width"][i]), int(out["height"][i]))
        rows.append(LoadedRow(row, status, item=item, existed=bool(out["existed"][i])))
        if status == "embed":
            vectors.append(out["vector"][i])
    dim = out["vector"].shape[1]
    return Batch(rows, np.stack(vectors) if vectors else np.zeros((0, dim), np.float32))


def start_ray(address: str | None) -> bool:
    """Connect to ``address`` (or start Ray here for None/'local'); True when we started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address in (None, "", "local"):
        ray.init(num_cpus=os.cpu_count() or 2, **quiet)
    else:  # a cluster: ship this package to the workers with the job
        ray.init(address=address, runtime_env={"py_modules": [str(PACKAGE_DIR)]}, **quiet)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return True


def index_with_ray(cat: Any, source, encoder: str | None = None, *, address: str | None = "local",
                   actors: int | None = None, **options: Any) -> IngestReport:
    """``cat.index(source, encoder, executor="ray", ...)``: a ``Catalog`` indexed by the Ray executor
    (``options`` as for ``Catalog.index``)."""
    return cat.index(source, encoder, executor="ray", ray_address=address, actors=actors, **options)
