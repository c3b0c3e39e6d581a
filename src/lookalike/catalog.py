"""The public API: a named catalog of product images you index, search and evaluate.

    cat = Catalog.open_or_create("shop")
    cat.index("products.csv")                       # ingest + embed (incremental)
    cat.search(item="sku-123", k=10, where={"label": "shoes"})
    cat.search(image="photo.jpg", k=5)
    cat.evaluate(labels=["label"])
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from lookalike.config import (DEFAULT_ENCODER, DEFAULT_EXPANSION, DEFAULT_EXPANSION_KINDS, INT8_CALIBRATION,
                              INT8_CHECK_ITEMS, INT8_MIN_ROWS, check_name, home_dir, model_dir)
from lookalike.encoders import Encoder, get_encoder
from lookalike.data.artifacts import atomic_path, digest, save_image, write_json
from lookalike.data.images import BoxError, ImageSource, crop_box, open_image, thumbnail
from lookalike.encoders.colour import COLOUR_DIM, fuse_parts, fused_weight, split_fused
from lookalike.evaluation.products import evaluate_products
from lookalike.evaluation.quality import label_quality
from lookalike.evaluation.report import write_quality_html
from lookalike.evaluation.int8 import check_int8
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.evaluation.tuning import (COLOUR_WEIGHTS, EXPANSIONS, FUSED_KINDS, TuneReport, candidate_count,
                                         tune_options, variant_spec)
from lookalike.index import SCORED_METRICS, IndexBackend
from lookalike.index.distances import distance_to_score
from lookalike.data.fetch import Fetcher
from lookalike.data.pixel_cache import catalog_pixels
from lookalike.data.ingest import (EXECUTORS, IMAGES, IngestReport, ItemWrite, ThreadExecutor, WriteOutcome,
                                   check_metadata, default_workers, ingest, label_problem, load_rows, place_inline,
                                   upsert_items)
from lookalike.data.ray_ingest import RayExecutor
from lookalike.search import ExpandedSearch, Expansion, IndexManager, SearchResult
from lookalike.search.indexes import check_indexes
from lookalike.search.calibration import DEFAULT_SAMPLE, ScoreThreshold, calibrate, still_valid
from lookalike.search.diversity import NEAR_DUPLICATE_DISTANCE
from lookalike.search.examples import COMBINE_RULES, DEFAULT_RULE, MAX_EXAMPLES, Example, weighted_mean
from lookalike.search.boosts import make_rules, parse_date
from lookalike.search.expansion import expanded_neighbours
from lookalike.search.filters import RANGE_OPS, Filter, FilterError, UnknownColumn, check_filters, parse_filter, where_filters
from lookalike.search.pipeline import SearchOptions, check_min_score, run_pipeline
from lookalike.search.similar import SimilarTables, build_table, supports, table_stamp
from lookalike.train.base import recorded_expansion
from lookalike.train.probes import Probe, ProbeConfig, load_probe
from lookalike.data.integrity import IntegrityReport, Problem, check_store, orphan_files
from lookalike.data.snapshot import (IncompatibleSnapshot, SnapshotInfo, copy_catalog_dir, export_snapshot,
                                     import_snapshot, snapshot_file_count)
from lookalike.data.sources import read_source
from lookalike.data.store import CatalogReplaced, Item, NewItem, Store
from lookalike.encoders.spec import EncoderSpec
from lookalike.explore.stored import stored as stored_explore
from lookalike.shop.pose import mediapipe_installed

CALIBRATION_WORK = 5_000_000_000   # sampled queries x vector values for one match-threshold calibration
INT8_MODES = ("auto", "check", "off")   # Catalog.index(int8=...)
DOWNLOADS = "downloads"   # under the catalog folder: images of URL rows, keyed by URL (data.fetch)

__all__ = ["BoxError", "Catalog", "CatalogNotFound", "CatalogReplaced", "ItemNotFound", "UnknownColumn", "FilterError", "SearchResult", "Item",
           "ItemWrite", "WriteOutcome"]


class CatalogNotFound(LookupError):
    pass


class ItemNotFound(KeyError):
    def __str__(self) -> str:
        return f"unknown item id {self.args[0]!r}"


class Catalog:
    def __init__(self, name: str, home: str | Path | None = None, *, create: bool = False,
                 backend: str | None = None, **backend_params):
        self.name = check_name(name)
        self.home = home_dir(home)
        self.dir = self.home / "catalogs" / self.name
        if not (self.dir / "catalog.sqlite").exists() and not create:
            known = ", ".join(list_catalogs(self.home)) or "none"
            raise CatalogNotFound(f"catalog {name!r} not found in {self.home} (existing: {known}); "
                                  f"create it with `lookalike index SOURCE --catalog {name}`")
        # Private: only catalog, search and data/ touch the store (issue #12 rule 2, tests/test_architecture.py).
        self._store = Store(self.dir)
        # faiss embedded by default; "milvus" (LOOKALIKE_MILVUS_URI) when a catalog outgrows one machine
        backend = backend or os.environ.get("LOOKALIKE_BACKEND", "faiss")
        self._indexes = IndexManager(self._store, backend, **backend_params)
        self._expanded = ExpandedSearch(self._store)
        self._similar = SimilarTables(self._store)   # precomputed "more like this" (search.similar)
        self._similar_setups: dict[tuple[str, str | None], Any] = {}
        self._similar_use, self._similar_refresh = True, False   # see use_similar

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def open(cls, name: str, home: str | Path | None = None, **kwargs) -> "Catalog":
        return cls(name, home, **kwargs)

    @classmethod
    def create(cls, name: str, home: str | Path | None = None, **kwargs) -> "Catalog":
        return cls(name, home, create=True, **kwargs)

    open_or_create = create

    def delete(self) -> None:
        self._store.close()
        shutil.rmtree(self.dir)

    def __len__(self) -> int:
        return self._store.count()

    def __repr__(self) -> str:
        return f"Catalog({self.name!r}, items={len(self)}, dir={str(self.dir)!r})"

    # -- snapshots and integrity -------------------------------------------------------------
    def export(self, out: str | os.PathLike, *, images: bool = True,
               on_total: Callable[[int], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> SnapshotInfo:
        """Write this catalog as one snapshot tar at ``out`` (:mod:`lookalike.data.snapshot`: store,
        vectors, indexes, vector caches, artifacts, reports, the named models in
        :meth:`snapshot_models`, and — with ``images`` — every item's image; a manifest with the
        format and lookalike versions, encoder fingerprints, item count and every file's SHA-256).
        Safe while the catalog is served or written (SQLite online backup). ``images=False`` for
        image paths every machine shares (they are kept as they are)."""
        models, byo = self.snapshot_models(), self.snapshot_byo_models()
        if on_total:
            on_total(snapshot_file_count(self.dir, models, images) + len(set(byo.values())))
        return export_snapshot(self.dir, out, name=self.name, encoders=self.encoders(),
                               default_encoder=self.default_encoder, models=models, images=images,
                               on_progress=on_progress, byo=byo)

    def snapshot_byo_models(self) -> dict[str, Path]:
        """``{encoder spec: model file}`` of the bring-your-own ONNX encoders (``onnx:/path/model.onnx``)
        this catalog has vectors of: the files a snapshot carries (checksummed) so the other machine
        can put each where its spec says. FileNotFoundError naming the encoder and the path when one
        is missing here (a snapshot without it could not embed queries as the vectors were)."""
        from lookalike.encoders.byo import decode_path  # in-function: the byo module loads torch via pretrained

        found = {}
        for enc in self.encoders():
            try:
                spec = EncoderSpec.parse(enc["name"])
            except ValueError:
                continue
            if spec.kind != "onnx" or not spec.name:
                continue
            path = decode_path(spec.name).absolute()
            if not path.is_file():
                raise FileNotFoundError(f"encoder {enc['name']!r} reads the model file {path}, which is missing: "
                                        "a snapshot without it could not embed queries as the vectors were; "
                                        "put the file back (or remove that encoder's vectors) and export again")
            found[enc["name"]] = path
        return found

    def copy_to(self, home: str | Path, name: str | None = None) -> "Catalog":
        """A working copy of this catalog as ``name`` (default: the same) in another ``home`` (e.g. a
        scratch folder for a load test): store copied consistently while it is served or written,
        indexes and vector caches kept (no rebuild), image paths unchanged, models not copied.
        FileExistsError when the target catalog exists."""
        target = home_dir(home) / "catalogs" / check_name(name or self.name)
        if target.exists():
            raise FileExistsError(f"catalog {target.name!r} already exists in {home}")
        copy_catalog_dir(self.dir, target)
        return Catalog.open(target.name, home=home)

    def snapshot_models(self) -> dict[str, Path]:
        """``{"<kind>/<name>": folder}`` of the named models under ``<home>/models`` this catalog
        needs: those an encoder spec of it names (``vae:NAME``, ``finetuned:NAME``...) and those
        trained on it (their ``config.json`` names the catalog: the latent explorer's VAE, probes).
        ONNX runtime variants (``models/onnx``) are derived and rebuilt where needed."""
        names = set()
        for enc in self.encoders():
            try:
                names.add(EncoderSpec.parse(enc["name"]).name)
            except ValueError:
                continue
        found = {}
        root = self.home / "models"
        for folder in sorted(root.glob("*/*")) if root.is_dir() else ():
            if folder.parent.name == "onnx" or not folder.is_dir():
                continue
            trained_here = False
            if (folder / "config.json").is_file():
                try:
                    trained_here = json.loads((folder / "config.json").read_text()).get("catalog") == self.name
                except (OSError, ValueError, AttributeError):
                    pass
            if folder.name in names or trained_here:
                found[f"{folder.parent.name}/{folder.name}"] = folder
        return found

    def check(self, *, images: bool = True) -> IntegrityReport:
        """Integrity of this catalog (``lookalike check``): the store (SQLite quick check, orphan /
        malformed / stale vectors, items without a default-encoder vector, vector caches,
        missing image files unless ``images=False``: :func:`lookalike.data.integrity.check_store`)
        and every saved index (version stamp, loadable, vector count:
        :func:`lookalike.search.indexes.check_indexes`). ``report.ok`` when no problem is an error.
        Reads only."""
        report = check_store(self._store, self.default_encoder if self.encoders() else None, images=images)
        report.catalog = self.name
        if report.problems and report.problems[0].code == "sqlite":
            return report
        report.index_folders, problems = check_indexes(self._store)
        report.problems += problems
        orphans = orphan_files(self._store, self.dir / IMAGES, self.dir / "cache" / "thumbs")
        if orphans:
            report.problems.append(Problem("warning", "orphan-files", f"{len(orphans)} uploaded image / thumbnail "
                                           "file(s) no item needs (lookalike check --repair removes them)",
                                           len(orphans), [str(p) for p in orphans[:5]]))
        return report

    @property
    def artifacts_dir(self) -> Path:
        path = self.dir / "artifacts"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stats(self) -> dict[str, Any]:
        """What a monitoring scrape reads (cheap: counts from the store, file sizes): ``items``,
        ``encoders`` (name, dim, metric, count, version), ``index_bytes`` (saved index files) and
        ``last_ingest`` (the last ingest report's counts plus ``finished_at``, Unix seconds; None
        before one)."""
        index_dir = self.dir / "index"
        size = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file()) if index_dir.is_dir() else 0
        latest = self.dir / "reports" / "latest.json"
        last = None
        if latest.exists():
            try:
                doc = json.loads(latest.read_text())
                last = {key: doc.get(key, 0) for key in ("added", "updated", "unchanged", "failed", "pruned",
                                                         "images_per_s")}
                last["finished_at"] = latest.stat().st_mtime
            except (OSError, ValueError):
                last = None
        return {"items": len(self), "encoders": self.encoders(), "index_bytes": size, "last_ingest": last}

    # -- encoders --------------------------------------------------------------------------
    @property
    def default_encoder(self) -> str:
        """The encoder used when none is named: the one set at first index, else the global default."""
        return self._store.get_state("default_encoder") or DEFAULT_ENCODER

    def set_default_encoder(self, spec: str) -> None:
        self._store.set_state("default_encoder", spec)

    @property
    def default_expansion(self) -> Expansion:
        """Search-time re-ranking of the default encoder when a search names none (see :meth:`expansion_for`)."""
        return self.expansion_for(self.default_encoder)

    def expansion_for(self, encoder: str) -> Expansion:
        """The re-ranking a search with ``encoder`` gets when it names none: the one ``lookalike tune``
        recorded for this catalog, else — for a ``finetuned:NAME`` encoder — the one ``lookalike train
        finetune`` chose on the model's validation items (:func:`lookalike.train.base.recorded_expansion`;
        it also wins over a ``tune`` record made for another encoder), else ``lookalike.config.DEFAULT_EXPANSION``
        for the encoder kinds it was measured on (``DEFAULT_EXPANSION_KINDS``: the pretrained CNN encoders),
        else none (:mod:`lookalike.search.expansion`)."""
        parsed = EncoderSpec.parse(encoder)
        own = recorded_expansion("finetuned", parsed.name, self.home) if parsed.kind == "finetuned" and parsed.name else None
        recorded = self._store.get_state("default_expansion")
        if recorded is not None and (own is None or (self.tuned() or {}).get("encoder") in (None, encoder)):
            return Expansion.parse(recorded)
        if own is not None:
            return Expansion.parse(own)
        measured = parsed.kind in DEFAULT_EXPANSION_KINDS
        return Expansion.parse(DEFAULT_EXPANSION if measured else None)

    def set_default_expansion(self, expansion: "Expansion | str") -> None:
        self._store.set_state("default_expansion", str(Expansion.parse(expansion)))

    def encoder(self, spec: str | None = None) -> Encoder:
        """The encoder ``spec`` (default: the catalog's) as this catalog's vectors were made: with the
        int8 model calibrated on the catalog when :meth:`index` chose it (:meth:`runtime_choice`), so
        query images (uploads, ``search(image=...)``) are embedded by the same runtime."""
        spec = spec or self.default_encoder
        return get_encoder(spec, home=self.home, catalog=self.name, **self._runtime_options(spec))

    def runtime_choice(self, encoder: str | None = None) -> dict[str, Any] | None:
        """What :meth:`index` decided about int8 for ``encoder`` (default: the catalog's): ``runtime``
        (``onnx-int8`` or ``onnx``), ``int8_model`` (relative to the catalog folder), ``check`` (the
        :class:`lookalike.evaluation.int8.Int8Check` as a dict), ``seconds``; None when it never
        checked (a small catalog, an encoder with its runtime named, vectors older than the check)."""
        return self._store.get_state(f"runtime:{encoder or self.default_encoder}")

    def _runtime_options(self, spec: str) -> dict[str, Any]:
        choice = self.runtime_choice(spec)
        if not choice or choice.get("runtime") != "onnx-int8":
            return {}
        return {"runtime": "onnx-int8", "int8_model": str(self.dir / choice["int8_model"])}

    def _choose_runtime(self, spec: str, rows: Sequence, int8: str, workers: int | None,
                        on_stage: Callable[[str, int], None] | None = None,
                        on_progress: Callable[[int], None] | None = None) -> dict[str, Any] | None:
        """Before a first index with ``spec``: calibrate int8 on a sample of ``rows`` and keep it when
        it loses at most INT8_MAX_LOSS mAP@10 (:mod:`lookalike.evaluation.int8`). The decision and the
        calibrated file (``artifacts/int8/<fingerprint digest>/model.onnx``, one per catalog + encoder
        fingerprint) are kept, so every later index and query uses the same runtime. ``int8``:
        ``auto`` (only for sources of INT8_MIN_ROWS rows or more), ``check`` (any size), ``off``.
        ``on_stage`` / ``on_progress``: as :meth:`index` (each stage counts images)."""
        def stage(name: str, total: int) -> Callable[[int], None] | None:
            if on_stage:
                on_stage(name, total)
            return on_progress
        if int8 == "off" or self.runtime_choice(spec) is not None or self._store.encoder_info(spec) is not None:
            return None   # decided before, or vectors exist already: never mix runtimes in one index
        fp32 = get_encoder(spec, home=self.home, catalog=self.name)
        if not getattr(fp32, "int8_candidate", False) or (int8 == "auto" and len(rows) < INT8_MIN_ROWS):
            return None
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        sample = [rows[i] for i in rng.permutation(len(rows))[: INT8_CALIBRATION + INT8_CHECK_ITEMS]]
        step = stage("int8: loading", len(sample))
        loaded = []
        for r in load_rows(sample, fp32, {}, workers or default_workers(), window=64):
            if r.status == "embed":
                loaded.append(r)
            if step:
                step(1)
        calibration, checked = loaded[:INT8_CALIBRATION], loaded[INT8_CALIBRATION:]
        if len(checked) < 4:   # a handful of images: calibrate and check on the same ones
            calibration = checked = loaded
        if len(checked) < 4:
            return None
        folder = self.dir / "artifacts" / "int8" / digest(fp32.fingerprint())
        model = folder / "model.onnx"
        if not model.is_file():
            step = stage("int8: calibrating", len(calibration))
            fp32.build_int8(np.stack([r.array for r in calibration]), model, progress=step)
        quantised = get_encoder(spec, home=self.home, catalog=self.name, runtime="onnx-int8", int8_model=str(model))
        batch = np.stack([r.array for r in checked])
        step = stage("int8: checking", 2 * len(batch))

        def encode(enc, part):
            vectors = enc.encode_batch(part)
            if step:
                step(len(part))
            return vectors

        vectors = [np.concatenate([encode(enc, batch[i:i + 32]) for i in range(0, len(batch), 32)])
                   for enc in (fp32, quantised)]
        check = check_int8(*vectors, labels=[r.row.label for r in checked], metric=fp32.metric)
        choice = {"runtime": "onnx-int8" if check.chosen else "onnx", "int8_model": str(model.relative_to(self.dir)),
                  "check": check.to_dict(), "summary": check.describe(),
                  "seconds": round(time.perf_counter() - started, 2)}
        write_json(folder / "check.json", choice, indent=2)
        self._store.set_state(f"runtime:{spec}", choice)
        return choice

    def encoders(self) -> list[dict[str, Any]]:
        """Encoders with vectors in this catalog: name, dim, metric, count."""
        return self._store.encoders()

    def encoder_info(self, encoder: str | None = None) -> dict[str, Any] | None:
        """What the catalog stores for ``encoder`` (default: the catalog's): ``name``, ``dim``,
        ``metric``, ``fingerprint`` (of the model weights) and ``version`` (bumped on every write of
        its vectors; metadata edits leave it);
        None when it has no vectors for it."""
        return self._store.encoder_info(encoder or self.default_encoder)

    def version(self, encoder: str | None = None) -> str:
        """The data version of ``encoder``'s vectors, ``"<writes>:<fingerprint>"`` (``"none"`` when
        it has none): a key for anything computed from the vectors alone, which changes on every
        ingest, removal or re-embedded image — not on a metadata or label edit (key what reads
        labels or metadata on :meth:`data_version`)."""
        return self._store.version(encoder or self.default_encoder)

    def pinned_version(self):
        """Context manager: within it, this thread's data version is the one seen on entry, checked
        once instead of on every lookup (:meth:`Store.pinned_version`: what is memoised for it is
        reused); for read-only request handlers on the hot path."""
        return self._store.pinned_version()

    def data_version(self) -> str:
        """A short token that changes whenever anything in the catalog is committed (items,
        metadata, vectors of any encoder, settings), by this process or another (API workers, the
        CLI); one SQLite pragma while nothing changed, so a server checks it on every request
        (HTTP ETags of search answers, per-version caches)."""
        return self._store.data_version() or "writing"

    def match_threshold(self, encoder: str | None = None, *, refresh: bool = False) -> ScoreThreshold | None:
        """The "no close match" score threshold of ``encoder``'s vectors (:mod:`lookalike.search.calibration`):
        from leave-one-out nearest neighbours of a sample of items, labelled by the ``label`` column when
        enough items have one, label-free otherwise. Kept in the catalog's state with the data version
        it came from and recomputed when the encoder's weights change, once the writes since then pass
        ``RECALIBRATE_SHARE`` of the catalog (``calibration.still_valid``: a served catalog's every write
        moves the data version, and recomputing per write cost each worker ~1 s), or on ``refresh``. None when there are fewer than 2 vectors for ``encoder``."""
        spec = encoder or self.default_encoder
        info = self._store.encoder_info(spec)
        if info is None:
            return None
        key, version = f"match-threshold:{spec}", self._store.version(spec)
        doc = self._store.get_state(key)
        if doc and not refresh and still_valid(doc, version, self._store.count()):
            return ScoreThreshold.from_dict(doc)
        rowids, matrix, items = self._matrix_items(spec)
        if len(rowids) < 2:
            return None
        labels = [items[int(r)].label for r in rowids]
        # bound the leave-one-out work (sample x n x dim) to a few seconds on a large catalog
        sample = int(min(DEFAULT_SAMPLE, max(200, CALIBRATION_WORK // max(1, matrix.size))))
        threshold = calibrate(matrix, info["metric"], labels if any(labels) else None, sample=sample, encoder=spec,
                              version=version)
        threshold.items = self._store.count()  # what still_valid compares with
        try:
            self._store.set_state(key, threshold.to_dict())
        except sqlite3.OperationalError:  # a read-only catalog: use it without storing it
            pass
        return threshold

    # -- ingest ----------------------------------------------------------------------------
    def index(self, source: str | Path, encoder: str | None = None, *, id_column: str | None = None,
              image_column: str | None = None, label_column: str | None = None, encoding: str | None = None,
              delimiter: str | None = None, prune: bool = False, batch_size: int = 32, workers: int | None = None, executor: str = "threads",
              ray_address: str | None = "local", actors: int | None = None, fetcher: Fetcher | None = None,
              on_progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None,
              int8: str = "auto", on_stage: Callable[[str, int], None] | None = None) -> IngestReport:
        """Ingest ``source`` (a folder, or a CSV/TSV, JSON Lines, Parquet or .xlsx table) and embed
        new or changed images with ``encoder``. How files become rows and ids, and ``encoding`` /
        ``delimiter`` of CSVs: :mod:`lookalike.data.sources`; skipped files are in ``report.skipped``.

        ``executor`` runs decoding and the model: ``"threads"`` (``workers`` decode threads, the
        model in this thread) or ``"ray"`` (a Ray Data job on ``ray_address``: ``"local"`` starts
        Ray here; ``actors`` model copies; needs the ``[ray]`` extra). Either way the same rows are
        skipped, stored and reported (:mod:`lookalike.data.ingest`). ``prune`` removes items whose
        source row or file is gone; the report is also written under ``reports/``.

        Images given by URL are downloaded by the decode workers through ``fetcher`` (timeouts,
        retries, size cap: :mod:`lookalike.data.fetch`; default: one caching under the catalog's
        ``downloads/`` folder, so a re-run only revalidates); the item's path is the cached file.
        Image bytes held by the table (a Parquet binary or Hugging Face image column, ``data:`` URIs)
        are kept under ``images/`` by content hash (:func:`~lookalike.data.ingest.place_inline`).

        ``int8``: on the first index with an encoder whose runtime is left to the fixed rule (the
        EfficientNet-Lite encoders), ``auto`` calibrates a static int8 model on a sample of the
        source's images and uses it when its measured mAP@10 loss is at most 0.005
        (:meth:`_choose_runtime`, :mod:`lookalike.evaluation.int8`) — only for sources of
        ``INT8_MIN_ROWS`` (1,000) rows or more; ``check`` does so at any size; ``off`` keeps fp32.
        The decision holds for the catalog's later runs (:meth:`runtime_choice`; ``report.runtime``).

        Progress: ``on_stage(name, total)`` when a stage starts (the int8 choice's ``int8: loading``,
        ``int8: calibrating``, ``int8: checking`` — images each —, then ``embedding``), ``on_progress(n)``
        for n more done in the current one; ``on_total(rows)`` as the embedding starts.
        """
        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        if int8 not in INT8_MODES:
            raise ValueError(f"int8 must be one of {', '.join(INT8_MODES)}, not {int8!r}")
        spec = encoder or self.default_encoder
        rows, errors, skipped = read_source(source, id_column, image_column, label_column,
                                            encoding=encoding, delimiter=delimiter)
        place_inline(rows, self.dir / IMAGES)   # image bytes held by the table: kept by content hash
        self._choose_runtime(spec, rows, int8, workers, on_stage=on_stage, on_progress=on_progress)
        enc = self.encoder(spec)
        if on_stage:
            on_stage("embedding", len(rows))
        if on_total:
            on_total(len(rows))
        source_info = {"source": str(source), "id_column": id_column, "image_column": image_column,
                       "label_column": label_column, "encoding": encoding, "delimiter": delimiter}
        if executor == "ray":
            # Ray workers rebuild the encoder from this (picklable) factory; data/ cannot import encoders.
            run = RayExecutor(partial(get_encoder, spec, home=self.home, catalog=self.name, **self._runtime_options(spec)),
                              ray_address, actors,
                              fetcher or Fetcher(cache_dir=self.dir / DOWNLOADS))
            source_info["ray"] = ray_address
        else:
            run = ThreadExecutor(workers, fetcher or Fetcher(cache_dir=self.dir / DOWNLOADS))
        try:
            report = ingest(self._store, rows, enc, source=str(source), batch_size=batch_size, executor=run,
                            on_progress=on_progress)
        finally:
            if isinstance(run, ThreadExecutor) and run.fetcher is not fetcher:   # ours: release its connections
                run.fetcher.close()
        report.errors[:0] = errors
        report.skipped = skipped
        choice = self.runtime_choice(spec)
        report.runtime = choice["summary"] if choice else ""
        return self.finish_ingest(report, rows, spec, prune, **source_info)

    def finish_ingest(self, report: IngestReport, rows: Sequence, spec: str, prune: bool,
                      **source_info: Any) -> IngestReport:
        """Bookkeeping after the pipeline: prune items whose source row or file is gone, remember
        the first encoder as the default and the source (:attr:`last_source`), write the report."""
        if prune:
            listed = {r.id for r in rows}
            gone = [it.id for it in self._store.items() if it.id not in listed or not Path(it.path).exists()]
            report.pruned = len(self.remove(gone))   # with the files kept for them (images/, thumbnails)
        if self._store.get_state("default_encoder") is None:
            self.set_default_encoder(spec)
        self._store.set_state("last_source", source_info)
        report.write(self.dir / "reports")
        return report

    def remove(self, ids: Sequence[str]) -> list[str]:
        """Remove items (and their vectors) in one transaction; returns the ids that existed. Then
        the files kept for them that no other item needs go too: an uploaded image under
        ``images/`` and cached thumbnails (images indexed from a folder or URL stay where they are;
        what a crash leaves between the two steps, ``check`` reports and ``remove_orphan_files``
        removes)."""
        before = self._store.get_many(list(ids))
        removed = self._store.remove(ids)
        self._drop_files([(before[i].path, before[i].sha256) for i in removed if i in before])
        return removed

    def remove_orphan_files(self) -> list[Path]:
        """Delete every uploaded image and thumbnail no item needs (``lookalike check --repair``;
        :func:`lookalike.data.integrity.orphan_files`); returns what was deleted."""
        return self._drop_files(None)

    def _drop_files(self, candidates) -> list[Path]:
        found = orphan_files(self._store, self.dir / IMAGES, self.dir / "cache" / "thumbs", candidates)
        for path in found:
            path.unlink(missing_ok=True)
        return found

    def upsert(self, items: Sequence[ItemWrite], encoder: str | None = None, *,
               fetcher: Fetcher | None = None, private_urls: bool = True) -> list[WriteOutcome]:
        """Add or replace items one by one while the catalog is served (the write API, ``lookalike
        add``): one :class:`~lookalike.data.ingest.WriteOutcome` per
        :class:`~lookalike.data.ingest.ItemWrite`, in order (``added`` / ``updated`` / ``unchanged``
        / ``failed`` with a reason). Images are given as bytes (kept under the catalog's ``images/``
        folder by content hash, written atomically), an http(s) URL (downloaded through ``fetcher``,
        default one caching under ``downloads/`` as :meth:`index` does, refusing hosts on
        non-public addresses unless ``private_urls``) or a local path; they are
        decoded and embedded with ``encoder`` (default: the catalog's) exactly as :meth:`index`
        does, and everything valid is written in one transaction
        (:func:`lookalike.data.ingest.upsert_items`). The write bumps the data version, so the
        index, thumbnails, the match threshold and every cache keyed by :meth:`version` follow on
        the next request, in this process and in any other serving the catalog."""
        spec = encoder or self.default_encoder
        before = self._store.get_many([w.id for w in items if isinstance(w.id, str)])   # their files, if replaced
        own = fetcher is None and any(w.url is not None for w in items)
        fetch = Fetcher(cache_dir=self.dir / DOWNLOADS, allow_private=private_urls) if own else fetcher
        try:
            outcomes = upsert_items(self._store, items, self.encoder(spec), self.dir / IMAGES, fetcher=fetch)
        finally:
            if own:
                fetch.close()
        if any(o.ok for o in outcomes) and self._store.get_state("default_encoder") is None:
            self.set_default_encoder(spec)
        if before:   # a replaced image's upload and thumbnails, unless another item has the same file
            self._drop_files([(item.path, item.sha256) for item in before.values()])
        return outcomes

    def update_metadata(self, item_id: str, metadata: dict[str, Any] | None = None, *, label: Any = ...,
                        replace: bool = False) -> Item:
        """Change one item's label and/or metadata without re-embedding it (one transaction):
        ``metadata`` is merged key by key (a None value removes the key) or, with ``replace``, becomes
        the whole metadata; ``label=None`` clears the label, leaving it out keeps it. Returns the
        item as stored. ItemNotFound; ValueError for metadata that is not a flat dict of text,
        numbers and booleans (:func:`lookalike.data.ingest.check_metadata`) or a label that is not text."""
        problem = check_metadata(metadata or {}, item_id, allow_null=True)
        if problem is not None:
            raise ValueError(problem.message)
        if label is not ... and label_problem(label):
            raise ValueError(label_problem(label))
        if not self._store.patch(item_id, label, metadata, replace):
            raise ItemNotFound(item_id)
        return self.get(item_id)

    @property
    def last_source(self) -> dict[str, Any] | None:
        """How the catalog was last indexed: ``{"source", "id_column", "image_column", "label_column",
        "encoding", "delimiter"}`` (plus ``"ray"`` for a Ray ingest); None before the first ingest."""
        return self._store.get_state("last_source")

    def reindex(self, encoder: str, **options: Any) -> IngestReport:
        """Embed the catalog's last indexed source (same columns) with ``encoder``, e.g. a model just
        trained on it; ``options`` as for :meth:`index`. LookupError when no source is recorded."""
        source = self.last_source
        if not source:
            raise LookupError(f"catalog {self.name!r} has no recorded source; run "
                              f"`lookalike index SOURCE --catalog {self.name} --encoder {encoder}`")
        columns = {key: source.get(key) for key in ("id_column", "image_column", "label_column", "encoding", "delimiter")}
        return self.index(source["source"], encoder=encoder, **columns, **options)

    # -- items -----------------------------------------------------------------------------
    def get(self, item_id: str) -> Item:
        item = self._store.get(item_id)
        if item is None:
            raise ItemNotFound(item_id)
        return item

    def columns(self) -> list[str]:
        """Every column filters and labels may name: ``id``, ``label``, ``path``, then every metadata
        key any item has (sorted)."""
        return self._store.columns()

    def check_columns(self, columns: Iterable[str]) -> None:
        """UnknownColumn (a ValueError) for the first of ``columns`` that no item has: a filter on it
        would silently match nothing."""
        for column in columns:
            if not self._store.has_column(column):
                raise UnknownColumn(column, self.columns())

    def numeric_columns(self) -> list[str]:
        """Metadata columns whose every value is a number (as text or JSON): those range filters
        (``price<50``) accept. One scan of all metadata, cached until the catalog's data changes."""
        return self._cached("numeric_columns", self._store.numeric_columns)

    def check_filters(self, filters: Iterable[Filter]) -> None:
        """UnknownColumn for a filter on a column no item has; FilterError (a ValueError) for a
        range on a column that does not hold numbers only. Both messages list what exists. Each
        range column is checked once per data version (one scan that stops at the first non-number)."""
        filters = list(filters)
        self.check_columns(f.column for f in filters)
        for column in {f.column for f in filters if f.op in RANGE_OPS}:
            if not self._cached(("numeric", column), lambda: self._store.is_numeric(column)):
                check_filters(filters, self.columns(), self.numeric_columns())  # raises, naming them

    def _cached(self, name, compute: Callable[[], Any]) -> Any:
        """``compute()`` kept until the catalog's data changes (:meth:`data_version`: any ingest,
        metadata edit or removal; a metadata edit moves no encoder's vector version)."""
        key = self._store.data_version()
        if key is None:  # inside a write transaction: nothing is kept
            return compute()
        cache = self.__dict__.setdefault("_data_cache", {})
        if cache.get("key") != key:
            cache.clear()
            cache["key"] = key
        if name not in cache:
            cache[name] = compute()
        return cache[name]

    def items(self, where: dict[str, Any] | None = None, limit: int | None = None, offset: int = 0,
              filters: Sequence[str | Filter] = ()) -> list[Item]:
        """Items matching ``where`` (column -> value, a list value means any of) and every clause of
        ``filters`` (the grammar of :meth:`search`), in insertion order. UnknownColumn when they
        name a column no item has, FilterError for a clause that cannot be read or applied."""
        parsed = _parse_filters(filters)
        self.check_filters([*where_filters(where), *parsed])
        return self._store.items(where, limit, offset, filters=parsed)

    def count(self, where: dict[str, Any] | None = None, filters: Sequence[str | Filter] = ()) -> int:
        """Number of items matching ``where`` and ``filters`` (as :meth:`items`; none: all)."""
        parsed = _parse_filters(filters)
        self.check_filters([*where_filters(where), *parsed])
        return self._store.count_where(where, filters=parsed)

    def label_values(self, column: str = "label") -> list[tuple[str, int]]:
        return self._store.label_values(column)

    def metadata_columns(self) -> list[str]:
        """Sorted metadata keys (CSV columns beyond id/image/label) seen on the first 1000 items."""
        return self._store.metadata_columns()

    def thumbnail(self, item: str | Item, size: int) -> Path:
        """A JPEG of the item's image fitted into ``size`` x ``size`` px, cached under
        ``cache/thumbs/<size>/`` by image content hash (written atomically: concurrent requests
        never see a partial file). ItemNotFound, FileNotFoundError (image gone) or ImageError."""
        item = item if isinstance(item, Item) else self.get(item)
        key = item.sha256 or hashlib.sha256(str(item.id).encode()).hexdigest()
        path = self.dir / "cache" / "thumbs" / str(size) / f"{key}.jpg"
        if not path.exists():
            if not Path(item.path).is_file():
                raise FileNotFoundError(f"the image file of item {item.id!r} is missing: {item.path}")
            save_image(path, thumbnail(open_image(item.path), size), quality=85, optimize=True)
        return path

    def vectors(self, encoder: str | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, matrix) of every item with a vector for ``encoder``, aligned."""
        rowids, matrix, items = self._matrix_items(encoder or self.default_encoder)
        return [items[int(r)].id for r in rowids], matrix

    def _matrix_items(self, encoder: str) -> tuple[np.ndarray, np.ndarray, dict[int, Item]]:
        """(rowids, matrix, {rowid: Item}) of ``encoder``'s vectors, aligned: rows whose item was
        removed between reading the matrix and its items (a concurrent write, e.g. through the API)
        are dropped rather than failing with a KeyError."""
        rowids, matrix = self._store.matrix(encoder)
        items = self._store.get_by_rowids(rowids)
        if len(items) < len(rowids):
            keep = np.fromiter((int(r) in items for r in rowids), dtype=bool, count=len(rowids))
            rowids, matrix = rowids[keep], np.asarray(matrix)[keep]
        return rowids, matrix, items

    def vectors_with_metric(self, encoder: str | None = None) -> tuple[str, list[str], np.ndarray, str]:
        """(encoder spec, ids, (n, dim) float32 matrix, metric) for ``encoder`` (default: the
        catalog's), as :meth:`vectors`; LookupError naming the encoders it has when it has none."""
        spec = encoder or self.default_encoder
        info = self._store.encoder_info(spec)
        if info is None:
            known = ", ".join(e["name"] for e in self.encoders()) or "none"
            raise LookupError(f"catalog {self.name!r} has no vectors for encoder {spec!r} (has: {known})")
        ids, matrix = self.vectors(spec)
        return spec, ids, matrix, info["metric"]

    def labels(self, column: str = "label", encoder: str | None = None) -> list[str | None]:
        """Values of ``column`` aligned with :meth:`vectors` (None where an item has none).
        UnknownColumn when no item has ``column``."""
        self.check_columns([column])
        rowids, _, items = self._matrix_items(encoder or self.default_encoder)
        return [_column_value(items[int(r)], column) for r in rowids]

    def embed_images(self, images: Sequence[ImageSource], encoder: str | None = None) -> np.ndarray:
        """(n, dim) float32 vectors of query images (paths, bytes or PIL images), decoded and
        preprocessed exactly as ``index`` does (``open_image`` with the encoder's input size as JPEG
        draft size), so a file's query vector equals its stored one. ImageError for a bad image."""
        enc = self.encoder(encoder)
        loaded = [open_image(im, draft_size=enc.image_size) for im in images]
        return enc.encode(loaded)

    # -- search ----------------------------------------------------------------------------
    def search(self, item: str | None = None, image: ImageSource | None = None, vector: np.ndarray | None = None,
               k: int = 10, metric: str | None = None, where: dict[str, Any] | None = None,
               min_score: float | None = None, encoder: str | None = None,
               expansion: "Expansion | str | None" = None, *,
               filters: Sequence[str | Filter] = (), boosts: Sequence[str] = (), recency: str | None = None,
               pin: Sequence[str] = (), bury: Sequence[str] = (), group_by: str | None = None,
               variant: str | None = None, now: datetime | None = None,
               box: str | Sequence[float] | None = None, examples: Sequence[Example] = (),
               combine: str = DEFAULT_RULE, diversity: float = 0.0,
               collapse_duplicates: bool | float = False) -> list[SearchResult]:
        """Most similar items to a catalog item, an image or a vector (exactly one of them), ranked
        by :mod:`lookalike.search.pipeline`.

        ``box`` (x0, y0, x1, y1 or ``"x0,y0,x1,y1"``, pixels of the image as a viewer shows it, EXIF
        orientation applied) searches with just that part of ``image``: decoded at full size, cropped
        (:func:`lookalike.data.images.crop_box`), then embedded; BoxError (a ValueError) when the box
        is malformed or does not fit the image, ValueError when given without ``image``.

        The query item itself is never returned. ``where`` filters on ``label`` or any metadata
        column (a list value means any of); ``filters`` are clauses of the filter grammar
        (``price<50``, ``20<=price<=80``, ``colour in red,blue``, ``colour!=red``, ``brand exists``:
        :mod:`lookalike.search.filters`); all must hold, and recall stays exact. ``min_score`` drops
        hits whose visual score is lower, so a query with nothing close returns nothing rather than
        junk. ``k`` larger than the items that match returns all of them (never padding).
        ``expansion`` re-ranks with centring / αQE / DBA (``"centre=1,qe=2,dba=5,alpha=3"``, ``"none"``; default
        :meth:`expansion_for` the encoder; cosine encoders only — others search plainly;
        :mod:`lookalike.search.expansion`): it changes the query vector and the index searched.

        Business rules (:mod:`lookalike.search.boosts`): ``boosts`` (``"in_stock=1:+0.05"``),
        ``recency`` (``"added:30d:0.1"``: column, half-life, weight; ``now`` defaults to the clock),
        ``pin`` / ``bury`` (item ids); each hit's ``score_parts`` say why it ranked where it did.
        ``group_by`` (e.g. ``product_id``) returns one hit per product (its best image, the others
        in ``group``; ``k`` counts products) and a query item excludes its whole product;
        ``variant`` (e.g. ``colour``) names the column whose value says which variant matched.

        Steering (:mod:`lookalike.search.examples`, :mod:`lookalike.search.diversity`):
        ``examples`` are weighted items / images / vectors (:class:`~lookalike.search.examples.Example`;
        a negative weight = less like this; the ``item`` / ``image`` / ``vector``, when given, is one
        more example of weight 1), combined by ``combine`` (``mean``: Rocchio, the default; ``max``:
        best-score fusion); example items are never returned. ``collapse_duplicates`` (True: cosine
        distance 0.12, the near-duplicate threshold; or a distance) folds near duplicates of a
        better hit into it (``SearchResult.duplicates``); ``diversity`` λ in [0, 1] re-ranks the best
        2·k by MMR (0 = off). Both run on the deeper candidate list.

        "No close match" (:mod:`lookalike.search.calibration`): for one image or vector query whose
        nearest item (plain search, before any re-ranking) scores below :meth:`match_threshold`,
        every hit is ``weak`` and ``calibration.no_close_match(hits)`` is True.

        Raises UnknownColumn (a column no item has), FilterError (a filter, boost or recency that
        cannot be read, or a range on a non-numeric column), ItemNotFound, LookupError (no
        vectors for ``encoder``) and ValueError (bad ``k``, vector of the wrong length or with
        NaN/inf values, bad example weights, ``diversity`` outside [0, 1], ``min_score`` outside [-1, 1] or NaN,
        unknown ``combine``).
        """
        given = sum(x is not None for x in (item, image, vector))
        if given > 1 or (given == 0 and not examples):
            raise ValueError("give exactly one of item, image or vector (and/or examples)")
        if box is not None:
            if image is None:
                raise ValueError("box crops a query image: give it with image")
            image = crop_box(open_image(image), box)
        if combine not in COMBINE_RULES:
            raise ValueError(f"unknown combine rule {combine!r}; choose one of {', '.join(COMBINE_RULES)}")
        if not 0.0 <= diversity <= 1.0:
            raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
        check_min_score(min_score)
        collapse = (NEAR_DUPLICATE_DISTANCE if collapse_duplicates is True
                    else None if collapse_duplicates is False else float(collapse_duplicates))
        if vector is not None and not np.all(np.isfinite(np.asarray(vector, np.float32))):
            raise ValueError("vector values must be finite numbers")
        parsed = _parse_filters(filters)
        rules = make_rules(boosts, recency, pin, bury)
        self.check_filters([*where_filters(where), *parsed, *rules.filters()])
        self._check_pinned(rules.pin, rules.bury)
        self.check_columns([c for c in (group_by, variant, rules.recency and rules.recency.column) if c])
        if variant is not None and group_by is None:
            raise FilterError(f"variant {variant!r} says which variant of a product matched: give group_by too")
        if rules.recency is not None:
            column = rules.recency.column
            # A recency rule on a column without dates would silently add nothing to every score.
            if not self._cached(("dated", column), lambda: any(parse_date(v) is not None
                                                                for v, _ in self._store.label_values(column))):
                raise FilterError(f"recency column {column!r} holds no readable dates (ISO dates such as "
                                  f"2024-05-01 or Unix times)")
        spec = encoder or self.default_encoder
        info = self._store.encoder_info(spec)
        if info is None:
            raise LookupError(f"catalog {self.name!r} has no vectors for encoder {spec!r}; "
                              f"index it with `lookalike index SOURCE --catalog {self.name} --encoder {spec}`")
        metric = metric or info["metric"]
        exclude: set[int] = set()
        if given == 0:
            query = None
        elif item is not None:
            found = self.get(item)
            plain = (not examples and not where and not parsed and not rules and group_by is None and diversity == 0
                     and collapse is None and expansion is None and metric == info["metric"])
            setup = self._similar_setup(spec) if plain and self._similar_use else None
            answer = self._similar_hits(setup, found, k, min_score, refresh=True) if setup else None
            if answer is not None:
                return answer
            query = self._store.vector_of(item, spec)
            if query is None:
                raise LookupError(f"item {item!r} has no vector for encoder {spec!r}")
            exclude.add(found.rowid)
            product = _column_value(found, group_by) if group_by else None
            if product is not None:  # "more like this" never shows the query's own product
                exclude.update(int(r) for r in self._store.rowids_where({group_by: [product]}))
        elif image is not None:
            query = self.embed_images([image], spec)[0]
        else:
            query = np.asarray(vector, np.float32).ravel()
            # A likelihood spec stores [µ, log σ²]; a bare latent point µ (half the values) is a valid query.
            point_query = metric in SCORED_METRICS and 2 * query.shape[0] == info["dim"]
            if query.shape[0] != info["dim"] and not point_query:
                raise ValueError(f"vector has {query.shape[0]} values; encoder {spec!r} expects {info['dim']}")
            if metric == "cosine" and not np.any(query):  # no direction: every cosine score would be 0
                raise ValueError("an all-zero vector has no direction to search by (cosine)")
        fusion, flag_query = None, None
        if examples:
            base = [Example("vector", query, 1.0)] if query is not None else []
            vectors, weights, example_rows = self._example_vectors(list(examples), spec, info["dim"])
            vectors, weights = np.concatenate([np.stack([b.value for b in base]), vectors]) if base else vectors, \
                np.concatenate([[1.0] * len(base), weights])
            exclude |= example_rows
            query = weighted_mean(vectors, weights, normalise=metric == "cosine")
            if combine == "max":
                fusion = (vectors, weights)
        elif item is None and metric == info["metric"]:
            flag_query = query      # one image or vector: is anything in the catalog close to it?
        index = self._indexes.get(spec, metric)
        setting = Expansion.parse(expansion) if expansion is not None else self.expansion_for(spec)
        if metric != "cosine":  # αQE/DBA are defined on unit vectors
            setting = Expansion()
        keep = self._unexpanded_dims(spec) if setting.active else 0
        plain, first = index, []
        if setting.active:
            index, query = self._expanded.prepare(index, spec, query, metric, setting, where, exclude, parsed, keep,
                                                  first=first)
        # the visual score splits into shape + colour on fused vectors (re-ranking leaves the colour part alone)
        colour_weight = fused_weight(spec) if metric == "cosine" and (keep or not setting.active) else 0.0
        options = SearchOptions(k=k, where=where, filters=tuple(parsed), rules=rules, group_by=group_by,
                                variant=variant, min_score=min_score, encoder=spec,
                                colour_weight=colour_weight if fusion is None else 0.0, diversity=diversity,
                                collapse=collapse, fusion=fusion,
                                threshold=self.match_threshold(spec) if flag_query is not None else None,
                                best_score=self._best_score(spec, metric, flag_query, plain, first if (
                                    index is plain and not where and not parsed and not exclude) else ())
                                if flag_query is not None else None)
        return run_pipeline(self._store, index, query, metric, options, exclude, now)

    # -- precomputed "more like this" ------------------------------------------------------
    def _similar_setup(self, spec: str):
        """(stamp, make) of ``spec``'s similar-items table for the current data version
        (:mod:`lookalike.search.similar`), or None when its index cannot back one; kept per data version."""
        key = (spec, self._store.data_version())
        if key in self._similar_setups:
            return self._similar_setups[key]
        info = self._store.encoder_info(spec)
        setup = None
        if info is not None:
            metric = info["metric"]
            index = self._indexes.get(spec, metric)
            if supports(index):
                # the default item query, as search() applies it
                setting = self.expansion_for(spec) if metric == "cosine" else Expansion()
                keep = self._unexpanded_dims(spec) if setting.active else 0
                colour_weight = fused_weight(spec) if metric == "cosine" and (keep or not setting.active) else 0.0
                setting = self._expanded.resolve(setting)
                stamp = table_stamp(self._store.version(spec), spec, metric, setting, keep, colour_weight, index)
                setup = stamp, partial(build_table, self._store, index, spec, metric, setting, self._expanded, keep,
                                       colour_weight)
        if key[1] is not None:
            self._similar_setups = {k: v for k, v in self._similar_setups.items() if k[1] == key[1]}
            self._similar_setups[key] = setup
        return setup

    def build_similar(self, encoder: str | None = None, *, progress: bool = False) -> bool:
        """Build (or load) the precomputed "more like this" table of ``encoder`` (default: the
        catalog's) for the current data version: every item's top hits for the default item
        query, so ``search(item=...)`` without filters or other options answers from it, exactly
        as live search would (:mod:`lookalike.search.similar`). False when the encoder's index
        cannot back one (IVF-PQ, ``reduced``, Milvus) or it has no vectors. Cost: two batched
        index searches per item; 100k items (HNSW, 1,525-d) took 554 s on the 2-core box at load
        average 16-18 and take 99 MB on disk (docs/web.md "Serving at throughput")."""
        spec = encoder or self.default_encoder
        setup = self._similar_setup(spec)
        if setup is None:
            return False
        stamp, make = setup
        self._similar.build(stamp, lambda bar: make(progress=bar), progress=progress)
        return True

    def use_similar(self, use: bool = True, refresh: bool = False) -> None:
        """Whether item searches answer from the similar-items table when a fresh one is saved
        (``use``, the default) and whether a stale one (after a write by any process) is rebuilt
        in a background thread on the next item search (``refresh``: servers; meanwhile the live
        search answers)."""
        self._similar_use, self._similar_refresh = use, refresh

    def similar_from_table(self, item: str, k: int = 10, min_score: float | None = None,
                           encoder: str | None = None) -> list[SearchResult] | None:
        """``search(item=item, k=k, min_score=min_score, encoder=encoder)`` answered from the
        similar-items table (:meth:`build_similar`) when this process has already checked it for
        the current data version, else None (then call :meth:`search`). Never builds an index or a
        table and never embeds: a server may call it on its event loop. ItemNotFound for an
        unknown item; ValueError for k < 1."""
        if k < 1:
            raise ValueError("k must be at least 1")
        version, spec = self._store.data_version(), encoder or self.default_encoder
        if not version or not self._similar_use:
            return None
        setup = self._similar_setups.get((spec, version))
        if setup is None:   # something changed since; if not the vectors (a metadata edit), nothing to build
            known = [v for (e, _), v in self._similar_setups.items() if e == spec and v]
            if known and known[0][0]["version"] == self._store.version(spec):
                setup = self._similar_setup(spec)
        return self._similar_hits(setup, self.get(item), k, min_score, refresh=False) if setup else None

    def _similar_hits(self, setup, found: Item, k: int, min_score: float | None,
                      refresh: bool) -> list[SearchResult] | None:
        """The default item query's top ``k`` from the similar-items table of ``setup``
        (:meth:`_similar_setup`), or None (no fresh table, ``k`` beyond its depth, an item added
        since): the caller searches live. ``refresh``: a stale table may start a background rebuild."""
        stamp, make = setup
        table = self._similar.get(stamp)
        if table is None:
            if refresh and self._similar_refresh:
                self._similar.build_in_background(stamp, lambda bar: make(progress=False))
            return None
        row = table.lookup(found.rowid, k)
        if row is None:
            return None
        rowids, distances, colour = row
        items = self._store.get_by_rowids(rowids)
        # one array conversion for the row (the same float64 values live search computes per hit)
        scores = distance_to_score(distances, stamp["metric"]).tolist()
        colours = colour.tolist() if colour is not None else None
        hits: list[SearchResult] = []
        for at, (rowid, d) in enumerate(zip(rowids.tolist(), distances.tolist())):
            score = scores[at]
            if min_score is not None and score < min_score:
                break   # scores only fall from here
            item = items.get(rowid)
            if item is None:   # removed since: cannot happen while the table is fresh
                return None
            if colours is None:
                parts = {"visual": score}
            else:
                c = colours[at]
                parts = {"visual": score, "visual.shape": score - c, "visual.colour": c}
            hits.append(SearchResult(at + 1, item.id, score, d, item.label, item.path, item.metadata,
                                     score_parts=parts))
        return hits

    def _check_pinned(self, pin: Sequence[str], bury: Sequence[str]) -> None:
        """FilterError naming pinned / buried ids that are not in the catalog: a pin that silently did
        nothing (a typo, an item since removed) is a merchandising rule nobody sees failing."""
        wanted = [*pin, *bury]
        if not wanted:
            return
        known = {item.id for item in self._store.items({"id": wanted})}
        unknown = [i for i in wanted if i not in known]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise FilterError(f"pin / bury name items not in catalog {self.name!r}: {shown}")

    def _best_score(self, spec: str, metric: str, query: np.ndarray, plain: IndexBackend | None = None,
                    first: Sequence[SearchResult] = ()) -> float | None:
        """The score of ``query``'s nearest item by a plain search (no filters, no re-ranking).
        ``first``: αQE's first-stage hits of the same query on ``plain``, the index searched here,
        unfiltered and excluding nothing (:meth:`search` passes them only then): their top score is
        this search's answer when the index's top 1 is the first row of its top ``len(first)``
        (``nested_top_k``: exact, HNSW within its beam), which saves an index search per upload."""
        nested = getattr(plain, "nested_top_k", None)
        if first and nested is not None and nested(len(first)):
            return float(first[0].score)
        distances, rowids = self._indexes.get(spec, metric).search(np.asarray(query, np.float32)[None, :], 1)
        return float(distance_to_score(distances[0, 0], metric)) if rowids[0, 0] >= 0 else None

    def _example_vectors(self, examples: Sequence[Example], spec: str, dim: int) -> tuple[np.ndarray, np.ndarray, set[int]]:
        """(m, dim) vectors and (m,) weights of query ``examples`` (items, images, vectors) for
        encoder ``spec``, and the rowids of the example items (never returned as hits).
        ItemNotFound, ImageError, LookupError, ValueError (bad weights, a vector of the wrong length)."""
        if len(examples) > MAX_EXAMPLES:
            raise ValueError(f"at most {MAX_EXAMPLES} examples in one query, got {len(examples)}")
        vectors, exclude = [], set()
        for ex in examples:
            if ex.kind == "item":
                found = self.get(ex.value)
                vec = self._store.vector_of(found.id, spec)
                if vec is None:
                    raise LookupError(f"item {found.id!r} has no vector for encoder {spec!r}")
                exclude.add(found.rowid)
            elif ex.kind == "image":
                vec = self.embed_images([ex.value], spec)[0]
            else:
                vec = np.asarray(ex.value, np.float32).ravel()
                if vec.shape[0] != dim or not np.all(np.isfinite(vec)):
                    raise ValueError(f"an example vector needs {dim} finite values for encoder {spec!r}")
            vectors.append(vec)
        # Each Example's weight is finite and non-zero already; "at least one positive" is checked on the
        # whole query (the query item / image / vector counts as weight 1) by weighted_mean / fuse_scores.
        weights = np.asarray([ex.weight for ex in examples], np.float64)
        return np.stack(vectors).astype(np.float32), weights, exclude

    # -- learned components ----------------------------------------------------------------
    def train_autoencoder(self, config, name: str | None = None, *, split: str | None = None,
                          resume: bool = False, progress: bool = True):
        """Fit an autoencoder on this catalog's images (only items whose ``split`` metadata equals
        ``split``, when given) and save it as ``ae:NAME`` / ``vae:NAME`` / ``hvae:NAME`` (default name
        CATALOG-ARCH) under ``model_dir``. ``config`` is a :class:`lookalike.train.autoencoder.AutoencoderConfig`;
        a hybrid compresses the catalog's ``config.base`` vectors (LookupError when it has none).
        VAEs and hybrids then get the latent explorer's latent_stats.json and traversal.png.
        Returns the fitted :class:`~lookalike.train.autoencoder.Autoencoder` /
        ``HybridAutoencoder`` (``.dir``, ``.history``, ``.best_val``...)."""
        # torch and the training code load only when a model is trained, not on `import lookalike`
        from lookalike.encoders.autoencoder import pixel_transform
        from lookalike.explore.latent import LatentSpace
        from lookalike.train.autoencoder import Autoencoder, HybridAutoencoder, kind_dir

        name = name or f"{self.name}-{config.arch}"
        transform, key = pixel_transform(config.preprocess)
        data = catalog_pixels(self, config.image_size, progress=progress, transform=transform, transform_key=key)
        pixels, ids = data.pixels, data.ids
        if split is not None:
            keep = np.array([s == split for s in data.splits], dtype=bool)
            if not keep.any():
                raise ValueError(f"no items of catalog {self.name!r} have split={split!r}")
            pixels, ids = pixels[keep], [i for i, k in zip(ids, keep) if k]
        meta = {"catalog": self.name, "split": split, "n_images": int(len(pixels)), "skipped_images": len(data.errors)}
        kind = kind_dir(config.arch)
        out_dir = model_dir(kind, name, self.home)
        if config.arch == "hybrid":
            if resume:
                raise ValueError("--resume is not supported for hybrid models (they train in minutes)")
            features, found = self._aligned_vectors(config.base, ids)
            model = HybridAutoencoder(config).fit(features, pixels[found], progress=progress, meta=meta)
        else:
            model = Autoencoder(config).fit(pixels, checkpoint_dir=out_dir, resume=resume, progress=progress, meta=meta)
        model.save(out_dir)
        if kind in ("vae", "hvae"):
            space = LatentSpace.build(self, name, progress=progress, kind=kind)
            write_json(out_dir / "latent_stats.json", space.stats(), indent=1, default=str)
            space.traversal_grid(out_dir / "traversal.png")
        return model

    def trained_model(self, kind: str = "vae") -> str | None:
        """Name of the ``kind`` model (e.g. ``vae``) trained on this catalog, or None: ``CATALOG-KIND``
        when that one exists, else the one with the newest weights among those whose config.json
        names this catalog (``train_autoencoder`` records it). Reads config files only (no torch)."""
        root = model_dir(kind, f"{self.name}-{kind}", self.home).parent
        found = []
        for config in root.glob("*/config.json"):
            try:
                meta = json.loads(config.read_text())
            except (OSError, ValueError):
                continue
            weights = [p for p in config.parent.iterdir() if p.suffix in (".pt", ".pth", ".safetensors")]
            if meta.get("catalog") == self.name and weights:
                found.append((config.parent.name == f"{self.name}-{kind}", max(p.stat().st_mtime for p in weights),
                              config.parent.name))
        return max(found)[2] if found else None

    def features(self) -> dict[str, bool]:
        """Which optional panels can answer for this catalog right now, from file checks only (no
        vectors read, no torch: ``/api/health`` asks on every call): ``goes_with`` and ``duplicates``
        (computed on demand: always), ``latent`` (a VAE trained on it), ``clusters`` / ``map`` (the
        latest ``lookalike cluster`` / ``lookalike map`` run for the default encoder, see
        :func:`lookalike.explore.stored.stored`), ``shop`` (MediaPipe importable)."""
        found = stored_explore(self)
        return {"goes_with": True, "duplicates": True, "latent": found["latent"], "clusters": found["clusters"],
                "map": found["map"], "shop": mediapipe_installed()}

    def train_probe(self, label: str = "label", encoder: str | None = None, *, holdout: float = 0.3,
                    split_column: str | None = None, name: str | None = None, C: float = 0.1,
                    refit: bool = True, seed: int = 0):
        """Fit an attribute probe for column ``label`` on this catalog's ``encoder`` vectors, score it
        on held-out items and save it as ``name`` (default CATALOG-LABEL) under ``model_dir("probe", ...)``.
        Returns its :class:`lookalike.train.probes.ProbeReport`. ValueError with fewer than 4 labelled
        items or a single value."""
        spec = encoder or self.default_encoder
        _, matrix = self.vectors(spec)
        name = check_name(name or f"{self.name}-{label}", "probe")
        config = ProbeConfig(label=label, encoder=spec, C=C, holdout=holdout, split_column=split_column,
                             refit=refit, seed=seed)
        splits = self.labels(split_column, spec) if split_column else None
        probe = Probe(config, name=name).fit(matrix, self.labels(label, spec), splits)
        probe.report.catalog = self.name
        probe.save(model_dir("probe", name, self.home))
        return probe.report

    def predict_attribute(self, probe: str, image: ImageSource) -> tuple[str, dict[str, float]]:
        """The value probe ``probe`` predicts for one image (path, bytes or PIL) and every class's
        probability; the image is embedded with the probe's encoder exactly as items are.
        FileNotFoundError when there is no such probe."""
        found = load_probe(probe, self.home)
        values, probabilities = found.predict(self.embed_images([image], found.encoder))
        return values[0], {c: float(p) for c, p in zip(found.classes, probabilities[0])}

    def _aligned_vectors(self, encoder: str, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """This catalog's ``encoder`` vectors for ``ids`` (those that have one) and their positions in ``ids``."""
        if self.encoder_info(encoder) is None:
            raise ValueError(f"catalog {self.name!r} has no {encoder!r} vectors; index it with --encoder {encoder} first")
        vec_ids, matrix = self.vectors(encoder)
        row = {item_id: i for i, item_id in enumerate(vec_ids)}
        found = np.array([i for i, item_id in enumerate(ids) if item_id in row], dtype=np.int64)
        if len(found) < 2:
            raise ValueError(f"too few items with {encoder!r} vectors to train on")
        return matrix[[row[ids[i]] for i in found]], found

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, labels: Sequence[str] = ("label",), ks: Sequence[int] = (1, 5, 10),
                 encoder: str | None = None, metric: str | None = None, where: dict[str, Any] | None = None,
                 expansion: "Expansion | str | None" = None, group_by: str | None = None,
                 index: str | None = None):
        """Leave-one-out retrieval quality; relevant = all ``labels`` columns equal. ``expansion``
        ranks as search would with that αQE / DBA re-ranking (None: the catalog's
        :meth:`expansion_for` the encoder), without the query leaking into the augmented gallery.
        ``group_by`` (e.g. ``product_id``) scores at product level, as ``search --group-by`` shows
        results: the query's whole product leaves the gallery, hits fold to one per product and
        relevance is per product (:mod:`lookalike.evaluation.products`).
        ``index`` (e.g. ``"reduced"``, ``"hnsw,ef_search=48"``) ranks through that faiss index kind
        instead of exact search (:func:`lookalike.evaluation.retrieval.index_neighbours`; no
        re-ranking expansion, no ``group_by``): the quality an approximate index costs.
        UnknownColumn when ``labels``, ``where`` or ``group_by`` name a column no item has;
        ValueError when no labelled item has another relevant item (nothing to measure)."""
        self.check_columns([*labels, *(where or ()), *([group_by] if group_by else [])])
        spec = encoder or self.default_encoder
        info = self._store.encoder_info(spec)
        if info is None:
            raise LookupError(f"catalog {self.name!r} has no vectors for encoder {spec!r}")
        rowids, matrix, items = self._matrix_items(spec)
        keys = [_label_key(items[int(r)], labels) for r in rowids]
        subset = None
        if where:
            allowed = set(self._store.rowids_where(where).tolist())
            subset = np.array([i for i, r in enumerate(rowids) if int(r) in allowed], dtype=np.int64)
        metric = metric or info["metric"]
        setting = Expansion.parse(expansion) if expansion is not None else self.expansion_for(spec)
        setting = setting if metric == "cosine" else Expansion()
        keep = self._unexpanded_dims(spec) if setting.active else 0
        if group_by:
            products = [_column_value(items[int(r)], group_by) for r in rowids]
            ranker = (lambda depth, pool: expanded_neighbours(matrix, depth, setting, pool, metric, keep=keep)) \
                if setting.active else None
            report = evaluate_products(matrix, keys, products, ks=tuple(ks), metric=metric, subset=subset,
                                       neighbours_fn=ranker)
            report.extra["group_by"] = group_by
        elif index:
            report = evaluate_vectors(matrix, keys, ks=tuple(ks), metric=metric, subset=subset, index=index)
            report.extra["index"] = index
        else:
            report = evaluate_vectors(matrix, keys, ks=tuple(ks), metric=metric, subset=subset, expansion=setting,
                                      keep=keep)
        if report.n_queries == 0:  # a table of zeros would read as "retrieval fails", not "nothing to measure"
            raise ValueError(f"nothing to evaluate: none of the {report.n_items} labelled items has another item "
                             f"with the same {' & '.join(labels)}")
        return report

    def quality(self, label: str = "label", encoder: str | None = None, k: int = 10, worst: int = 3,
                failures_per_label: int = 4, where: dict[str, Any] | None = None,
                expansion: "Expansion | str | None" = None):
        """Where retrieval fails, per label (:func:`lookalike.evaluation.quality.label_quality`):
        P@1 / mAP@``k`` per label worst first, the top-1 confusion matrix, and failed queries of the
        ``worst`` labels, ranked with ``expansion`` (None: the catalog's :attr:`default_expansion`)
        like :meth:`evaluate`;
        its ``ids`` map positions to item ids. Errors as :meth:`evaluate`."""
        self.check_columns([label, *(where or ())])
        spec, ids, matrix, metric = self.vectors_with_metric(encoder)
        labels = self.labels(label, spec)
        subset = None
        if where:
            allowed = {it.id for it in self.items(where)}
            subset = np.array([i for i, item_id in enumerate(ids) if item_id in allowed], dtype=np.int64)
        # ranked as search and evaluate rank: with ``expansion`` or the catalog's re-ranking (cosine only)
        setting = Expansion.parse(expansion) if expansion is not None else self.default_expansion
        report = label_quality(matrix, labels, k=k, metric=metric, worst=worst,
                               failures_per_label=failures_per_label, subset=subset,
                               expansion=setting if metric == "cosine" else None)
        report.ids = ids
        return report

    def quality_report(self, out: str | os.PathLike, label: str = "label", encoder: str | None = None,
                       k: int = 10, worst: int = 3, where: dict[str, Any] | None = None,
                       expansion: "Expansion | str | None" = None) -> Path:
        """Write :meth:`quality` as one self-contained HTML file (PNGs embedded in base64,
        :func:`lookalike.evaluation.report.write_quality_html`) to ``out``; returns ``out``."""
        spec = encoder or self.default_encoder
        report = self.quality(label, spec, k, worst, where=where, expansion=expansion)
        paths = {item.id: item.path for item in self.items()}
        return write_quality_html(report, out, lambda position: paths[report.ids[position]],
                                  title=f"Retrieval quality · {self.name}",
                                  subtitle=f"encoder {spec} · relevance: same {label}"
                                           + (f" · subset {where}" if where else ""))

    # -- per-catalog options -----------------------------------------------------------------
    def tuned(self) -> dict[str, Any] | None:
        """What the last :meth:`tune` recorded (encoder, re-ranking, label, split, queries, mAP@10), or None."""
        return self._store.get_state("tuned")

    def tune(self, label: str = "label", *, split_column: str | None = "split", split: str | None = "validation",
             encoder: str | None = None, weights: Sequence[float] = COLOUR_WEIGHTS,
             expansions: Sequence[str] = EXPANSIONS, record: bool = True,
             on_total: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None
             ) -> TuneReport:
        """Pick this catalog's encoder options — colour weight, foreground crop, αQE/DBA re-ranking —
        by leave-one-out on the items whose ``split_column`` is ``split`` (all labelled items when
        ``split_column`` is None or no item has it), relevance = same ``label``; with ``record`` the
        winner becomes the catalog's :attr:`default_encoder` and :attr:`default_expansion` (shown
        by ``lookalike info``). Nothing is re-embedded: colour weights come from the stored fused
        vectors' separable parts, crops from vectors the catalog already has (index the
        ``,crop=fg`` variant to let it compete); the winner's vectors are written from those parts
        (:mod:`lookalike.evaluation.tuning`). Raises UnknownColumn, LookupError (no vectors for
        ``encoder``) and ValueError (nothing to evaluate)."""
        spec, ids, matrix, metric = self.vectors_with_metric(encoder)
        labels = self.labels(label, spec)
        subset, used_split = None, None
        if split_column and split is not None and self._store.has_column(split_column):
            splits = self.labels(split_column, spec)
            subset = np.array([i for i, value in enumerate(splits) if value == split], dtype=np.int64)
            if len(subset) == 0:
                raise ValueError(f"no item of catalog {self.name!r} has {split_column}={split!r}")
            used_split = split
        parts = self._fused_parts(spec, ids, matrix) if metric == "cosine" else None
        if on_total:
            on_total(candidate_count(len(parts), _has_colour(parts), weights, expansions) if parts
                     else len(expansions) if metric == "cosine" else 1)
        keep = 0 if parts or metric != "cosine" else self._unexpanded_dims(spec)
        report = tune_options(parts, labels, subset, base=spec, base_vectors=matrix, weights=weights, keep=keep,
                              expansions=expansions, metric=metric,
                              on_step=(lambda: on_progress(1)) if on_progress else None)
        report.label, report.split = label, used_split
        if record:
            best = report.best
            if best.encoder != spec and self.encoder_info(best.encoder) is None:
                cnn, colour = parts[best.crop]
                self._write_vectors(ids, fuse_parts(cnn, colour, best.colour), best.encoder)
            self.set_default_encoder(best.encoder)
            self.set_default_expansion(best.expansion)
            self._store.set_state("tuned", {"encoder": best.encoder, "expansion": best.expansion, "label": label,
                                            "split": used_split, "queries": report.queries,
                                            "mAP@10": best.metrics["mAP@10"], "P@1": best.metrics["P@1"]})
        return report

    def _unexpanded_dims(self, spec: str) -> int:
        """``Encoder.unexpanded_dims`` of ``spec``; for the fused family read from the spec, so an
        item search loads no model."""
        if EncoderSpec.parse(spec).kind in FUSED_KINDS:
            return COLOUR_DIM if fused_weight(spec) > 0 else 0
        return self.encoder(spec).unexpanded_dims

    def _fused_parts(self, spec: str, ids: list[str], matrix: np.ndarray):
        """{crop: (cnn part, colour part | None)} of ``spec``'s fused family from every stored variant
        that differs from it only in colour weight and crop (aligned with ``ids``); None when
        ``spec`` is not a fused encoder."""
        if EncoderSpec.parse(spec).kind not in FUSED_KINDS:
            return None
        family = variant_spec(spec, 0.0, "none")
        parts: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        colour = None
        for stored in [spec] + [e["name"] for e in self.encoders() if e["name"] != spec]:
            try:
                if EncoderSpec.parse(stored).kind not in FUSED_KINDS or variant_spec(stored, 0.0, "none") != family:
                    continue
            except ValueError:
                continue
            enc = self.encoder(stored)
            vectors = matrix if stored == spec else self._vectors_for(stored, ids)
            if vectors is None:
                continue
            cnn, part_colour = split_fused(vectors, enc.colour)
            colour = colour if colour is not None else part_colour
            if enc.crop not in parts or parts[enc.crop][1] is None:
                parts[enc.crop] = (cnn, part_colour)
        # the colour part is computed on the whole photo whatever the crop: one serves every crop
        return {crop: (cnn, own if own is not None else colour) for crop, (cnn, own) in parts.items()}

    def _vectors_for(self, encoder: str, ids: Sequence[str]) -> np.ndarray | None:
        vec_ids, matrix = self.vectors(encoder)
        row = {item_id: i for i, item_id in enumerate(vec_ids)}
        if any(item_id not in row for item_id in ids):
            return None
        return np.asarray(matrix)[[row[item_id] for item_id in ids]]

    def add_embedded(self, items: Sequence[dict[str, Any]], vectors: np.ndarray, encoder: str, *,
                     fingerprint: str, metric: str = "cosine", batch: int = 5000,
                     on_progress: Callable[[int], None] | None = None, runtime_of: "Catalog | None" = None) -> int:
        """Store ``items`` with vectors embedded elsewhere (a benchmark catalog grown from a real
        one: :mod:`lookalike.bench.api`): each item a dict with ``id``, ``path``, optional ``label``,
        ``metadata``, ``sha256``, ``width``, ``height``; ``vectors`` (n, dim) float32 aligned with them,
        recorded as ``encoder``'s with its ``fingerprint`` and ``metric``. Upserts by id, ``batch``
        items per transaction; the first encoder stored becomes the default. ``runtime_of``: the
        catalog that embedded the vectors; its runtime choice for ``encoder`` (:meth:`runtime_choice`)
        and calibrated int8 model are copied, so query images here embed as the vectors were.
        Returns the count written."""
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
        choice = runtime_of.runtime_choice(encoder) if runtime_of is not None else None
        if choice is not None:
            model = runtime_of.dir / choice["int8_model"] if choice.get("int8_model") else None
            if model is not None and model.is_file():
                with atomic_path(self.dir / choice["int8_model"]) as tmp:
                    shutil.copyfile(model, tmp)
            self._store.set_state(f"runtime:{encoder}", choice)
        rows = [NewItem(str(it["id"]), str(it["path"]), it.get("label"), dict(it.get("metadata") or {}),
                        it.get("sha256") or hashlib.sha256(str(it["id"]).encode()).hexdigest(),
                        int(it.get("width") or 0), int(it.get("height") or 0)) for it in items]
        for start in range(0, len(rows), batch):
            self._store.write_batch(rows[start:start + batch], vectors[start:start + batch], encoder, fingerprint,
                                    metric)
            if on_progress:
                on_progress(len(rows[start:start + batch]))
        if self._store.get_state("default_encoder") is None:
            self.set_default_encoder(encoder)
        return len(rows)

    def warm(self, encoder: str | None = None, *, similar: bool = True, progress: bool = False,
             items: bool = False) -> None:
        """Do now what the first search of a data version would otherwise pay for (a server at
        startup and after a write, a benchmark before timing): load (or build and save) the index
        of ``encoder`` (default: the catalog's), the "no close match" threshold, and the default
        re-ranking's gallery (one search by a stored vector), the similar-items table when
        ``similar`` (:meth:`build_similar`; ``progress``: its progress bar), and the query encoder (one small image
        embedded: loading the model and its runtime costs the first upload search seconds). An
        encoder that cannot load here is left for that search to report. ``items``: also read every
        item's metadata into memory in one query (servers: hits then never wait on SQLite; skipped
        above ``ITEM_CACHE_MAX`` items, :meth:`Store.preload_items`; 100k items: ~2 s, ~160 MB)."""
        spec = encoder or self.default_encoder
        if items:
            self._store.preload_items()
        info = self._store.encoder_info(spec)
        if info is None:
            return
        self._indexes.get(spec, info["metric"])
        rowids, matrix = self._store.matrix(spec)
        if len(rowids):
            self.search(vector=np.asarray(matrix[0], np.float32), k=1, encoder=spec)
        if similar and self._similar_use:
            self.build_similar(spec, progress=progress)
        try:
            self.embed_images([Image.new("RGB", (64, 64), (128, 128, 128))], spec)
        except (ImportError, OSError, ValueError, RuntimeError, KeyError):
            pass  # item-to-item search still works; an upload search answers the encoder's own error

    def _write_vectors(self, ids: Sequence[str], vectors: np.ndarray, spec: str) -> None:
        """Store ``vectors`` (aligned with ``ids``) as encoder ``spec``'s, fingerprinted as if it had embedded them."""
        enc = self.encoder(spec)
        items = [self.get(item_id) for item_id in ids]
        rows = [NewItem(i.id, i.path, i.label, i.metadata, i.sha256, i.width or 0, i.height or 0) for i in items]
        for start in range(0, len(rows), 1000):
            self._store.write_batch(rows[start:start + 1000], vectors[start:start + 1000], spec, enc.fingerprint(),
                                    enc.metric)


def _has_colour(parts) -> bool:
    return bool(parts) and any(colour is not None for _, colour in parts.values())


def _parse_filters(filters: Sequence[str | Filter]) -> list[Filter]:
    return [f for clause in filters or () for f in ([clause] if isinstance(clause, Filter) else parse_filter(clause))]


def _column_value(item: Item, column: str) -> str | None:
    if column == "label":
        return item.label
    if column == "id":
        return item.id
    value = item.metadata.get(column)
    return None if value in (None, "") else str(value)


def _label_key(item: Item, columns: Sequence[str]):
    values = tuple(_column_value(item, c) for c in columns)
    if any(v is None for v in values):
        return None
    return values[0] if len(values) == 1 else values


def import_catalog(path: str | os.PathLike, home: str | Path | None = None, *, name: str | None = None,
                   force: bool = False, check_encoders: bool = True) -> SnapshotInfo:
    """Install the snapshot at ``path`` (written by :meth:`Catalog.export`) as catalog ``name``
    (default: its exported name) in ``home``; :func:`lookalike.data.snapshot.import_snapshot` verifies
    every checksum before writing, extracts safely and renames into place atomically, so a refused
    import leaves the home as it was. With ``check_encoders`` each encoder of the snapshot must load
    here (its kind installed, its models shipped or present) and have the fingerprint the vectors were
    made with — otherwise image queries would embed differently (IncompatibleSnapshot). Raises
    SnapshotError (damaged, truncated, not a snapshot), IncompatibleSnapshot (format, encoder),
    CatalogExists (``name`` exists and not ``force``) and ValueError (an invalid ``name``)."""
    if name is not None:
        check_name(name)
    return import_snapshot(path, home_dir(home), name=name, force=force,
                           check=_check_snapshot_encoders if check_encoders else _check_snapshot_name)


def _check_snapshot_name(manifest: dict[str, Any], staged_home: Path, name: str) -> None:
    check_name(name)


def _check_snapshot_encoders(manifest: dict[str, Any], staged_home: Path, name: str) -> None:
    """IncompatibleSnapshot when an encoder of the snapshot cannot be built here or would make other vectors."""
    check_name(name)
    # the staged catalog builds its encoders as it will once imported (e.g. with the int8 model it
    # calibrated, which travels in its artifacts/)
    staged = Catalog.open(name, home=staged_home)
    try:
        for recorded in manifest.get("encoders") or ():
            spec = recorded.get("name")
            byo = next((b for b in manifest.get("byo_models") or () if b.get("encoder") == spec), None)
            # a bring-your-own model is never written outside the home: say which carried file goes where
            carried = (f"; the snapshot carries that model as {byo['member']!r} (sha256 {byo['sha256'][:16]}…): "
                       f"put it at {byo['path']} (tar -xOf SNAPSHOT {byo['member']} > {byo['path']}) and import "
                       "again, or import with --no-check-encoders") if byo else ""
            try:
                here = staged.encoder(spec).fingerprint()
            except Exception as exc:  # unknown kind, missing extra or model: any of them makes the vectors unusable
                raise IncompatibleSnapshot(f"encoder {spec!r} of the snapshot cannot be loaded here "
                                           f"({type(exc).__name__}: {exc}){carried}") from exc
            if here != recorded.get("fingerprint"):
                raise IncompatibleSnapshot(f"encoder {spec!r} here has fingerprint {here!r}, the snapshot's vectors "
                                           f"were made with {recorded.get('fingerprint')!r}: image queries would not "
                                           f"match them{carried}")
    finally:
        staged._store.close()   # before the staged folder is renamed into place


def list_catalogs(home: str | Path | None = None) -> list[str]:
    root = home_dir(home) / "catalogs"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "catalog.sqlite").exists())


def catalog_counts(home: str | Path | None = None) -> dict[str, int]:
    """Every catalog in ``home`` (sorted by name) -> its number of items (opens each one)."""
    return {name: len(Catalog.open(name, home=home)) for name in list_catalogs(home)}


def catalog_summary(cat: Catalog) -> dict[str, Any]:
    latest = cat.dir / "reports" / "latest.json"
    return {"name": cat.name, "items": len(cat), "dir": str(cat.dir), "default_encoder": cat.default_encoder,
            "default_expansion": str(cat.default_expansion), "tuned": cat.tuned(),
            "encoders": cat.encoders(), "labels": dict(cat.label_values()),
            "last_ingest": json.loads(latest.read_text()) if latest.exists() else None}
