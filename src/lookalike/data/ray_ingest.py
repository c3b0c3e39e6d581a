"""Distributed batch embedding with Ray Data: ``lookalike index SOURCE --ray [local|ADDRESS]``.

The same work as :mod:`lookalike.data.ingest`, spread over a Ray cluster:

1. the driver reads the source and the hashes already stored (``Store.known_hashes``),
2. ``map_batches(decode_batch)`` — stateless tasks read, hash, decode and preprocess each image
   with the very function the local pipeline uses (``ingest.load_row``), so vectors are identical,
3. ``map_batches(EncodeActor)`` — an actor pool, each actor holding one copy of the model,
4. the driver writes each result batch with ``Store.write_batch`` (one transaction per batch, the
   same code path as local ingest), so an interrupted run resumes where it stopped.

Locally (``--ray local``) Ray starts on this machine; ``ray.init`` and shutdown cost several
seconds, so on one box the local pipeline is faster and this mode is for testing the pipeline. On a
cluster every worker needs ``lookalike`` installed and the image paths readable (shared storage).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from lookalike.data.ingest import IngestReport, load_row
from lookalike.data.sources import RowError, SourceRow, read_source
from lookalike.data.store import NewItem

STATUS_CODES = {"embed": 0, "unchanged": 1, "error": 2}


def _encoder(spec: str, home: str | None, catalog: str | None):
    from lookalike.encoders import get_encoder

    return get_encoder(spec, home=home, catalog=catalog)


def _record(row: SourceRow, known: tuple[str, bool] | None) -> dict:
    return {"id": row.id, "path": str(row.path), "label": row.label or "", "has_label": row.label is not None,
            "meta": json.dumps(row.metadata), "line": row.line if row.line is not None else -1,
            "known_sha": known[0] if known else "", "known_ok": bool(known and known[1]),
            "existed": known is not None}


def _row(rec: dict) -> SourceRow:
    return SourceRow(str(rec["id"]), Path(str(rec["path"])), str(rec["label"]) if rec["has_label"] else None,
                     json.loads(str(rec["meta"])), int(rec["line"]) if int(rec["line"]) >= 0 else None)


def decode_batch(batch: dict, spec: str, home: str | None, catalog: str | None, shape: tuple) -> dict:
    """Ray task: hash + decode + preprocess a batch of rows (never raises; errors become rows)."""
    encoder = _encoder(spec, home, catalog)
    n = len(batch["id"])
    arrays = np.zeros((n, *shape), np.float32)
    out = {key: [] for key in ("status", "sha", "width", "height", "reason", "message")}
    for i in range(n):
        rec = {key: batch[key][i] for key in batch}
        known = (str(rec["known_sha"]), bool(rec["known_ok"])) if rec["existed"] else None
        loaded = load_row(_row(rec), encoder, known)
        out["status"].append(STATUS_CODES[loaded.status])
        item, error = loaded.item, loaded.error
        out["sha"].append(item.sha256 if item else "")
        out["width"].append(item.width if item else 0)
        out["height"].append(item.height if item else 0)
        out["reason"].append(error.reason if error else "")
        out["message"].append(error.message if error else "")
        if loaded.array is not None:
            arrays[i] = loaded.array
    result = dict(batch)
    result.update({key: np.asarray(value) for key, value in out.items()})
    result["array"] = arrays
    return result


class EncodeActor:
    """Ray actor: holds one model and embeds the decoded rows of each batch."""

    def __init__(self, spec: str, home: str | None, catalog: str | None, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.encoder = _encoder(spec, home, catalog)

    def __call__(self, batch: dict) -> dict:
        todo = np.flatnonzero(batch["status"] == STATUS_CODES["embed"])
        vectors = np.zeros((len(batch["status"]), self.encoder.dim), np.float32)
        if len(todo):
            vectors[todo] = self.encoder.encode_batch(batch["array"][todo])
        result = {key: value for key, value in batch.items() if key != "array"}
        result["vector"] = vectors
        return result


def embed_with_ray(records: list[dict], spec: str, home: str | None, catalog: str | None, shape: tuple,
                   batch_size: int = 32, actors: int | None = None):
    """Yield result batches (dicts of numpy columns, in any order) for ``records``."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = actors or max(1, cpus // 2)
    ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records) // batch_size, 4 * cpus)))
    ds = ds.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy",
                        fn_kwargs={"spec": spec, "home": home, "catalog": catalog, "shape": shape})
    ds = ds.map_batches(EncodeActor, batch_size=batch_size, batch_format="numpy", concurrency=actors,
                        fn_constructor_kwargs={"spec": spec, "home": home, "catalog": catalog})
    yield from ds.iter_batches(batch_size=batch_size, batch_format="numpy")


def start_ray(address: str | None) -> bool:
    """Connect to ``address`` (or start Ray here for None/'local'); True when we started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address in (None, "", "local"):
        ray.init(num_cpus=os.cpu_count() or 2, **quiet)
    else:  # a cluster: ship this package to the workers with the job
        import lookalike

        ray.init(address=address, runtime_env={"py_modules": [str(Path(lookalike.__file__).parent)]}, **quiet)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return True


def index_with_ray(cat, source, encoder: str | None = None, *, address: str | None = "local",
                   id_column: str | None = None, image_column: str | None = None, label_column: str | None = None,
                   prune: bool = False, batch_size: int = 32, actors: int | None = None) -> IngestReport:
    """Like ``Catalog.index`` but decode + encode run as a Ray Data pipeline; same store writes."""
    import ray

    spec = encoder or cat.default_encoder
    enc = cat.encoder(spec)
    fingerprint = enc.fingerprint()
    rows, errors = read_source(source, id_column, image_column, label_column)
    report = IngestReport(source=str(source), encoder=enc.name, rows=len(rows))
    report.errors.extend(errors)
    known = cat.store.known_hashes(enc.name, fingerprint)
    records = [_record(row, known.get(row.id)) for row in rows]
    shape = enc.preprocess(_blank(enc.image_size)).shape
    started = time.perf_counter()
    we_started = start_ray(address)
    unchanged: list[NewItem] = []
    try:
        if records:
            home = str(cat.home) if cat.home is not None else None
            for batch in embed_with_ray(records, spec, home, cat.name, shape, batch_size, actors):
                _store_batch(cat.store, batch, enc, fingerprint, report, unchanged)
    finally:
        if we_started:
            ray.shutdown()
    report.metadata_updated = cat.store.update_metadata(unchanged) if unchanged else 0
    report.seconds = time.perf_counter() - started
    return cat.finish_ingest(report, rows, spec, prune, source=str(source), id_column=id_column,
                             image_column=image_column, label_column=label_column, ray=address)


def _store_batch(store, batch: dict, enc, fingerprint: str, report: IngestReport, unchanged: list) -> None:
    items, vectors, existed = [], [], 0
    for i, status in enumerate(batch["status"]):
        row = _row({key: batch[key][i] for key in ("id", "path", "label", "has_label", "meta", "line")})
        if status == STATUS_CODES["error"]:
            report.errors.append(RowError(str(batch["reason"][i]), str(batch["message"][i]), id=row.id,
                                          path=str(row.path), line=row.line))
            continue
        item = NewItem(row.id, str(row.path), row.label, row.metadata, str(batch["sha"][i]),
                       int(batch["width"][i]), int(batch["height"][i]))
        if status == STATUS_CODES["unchanged"]:
            report.unchanged += 1
            unchanged.append(item)
        else:
            items.append(item)
            vectors.append(batch["vector"][i])
            existed += bool(batch["existed"][i])
    if items:
        store.write_batch(items, np.stack(vectors), enc.name, fingerprint, enc.metric)
        report.updated += existed
        report.added += len(items) - existed


def _blank(size: int):
    from PIL import Image

    return Image.new("RGB", (size, size), (255, 255, 255))
