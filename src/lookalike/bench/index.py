"""Index and filtered-search benchmarks: each configuration measured against exact search, in one run.

Every figure is relative to exact (Flat) search on the same vectors and queries: recall@k of the
approximate top-k against the exact top-k, and latency of single queries (one at a time, as an API
serves them) side by side. Filtered search is compared with exact filtered search and with the
naive "search wider, then drop what fails the filter" approach.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from lookalike.data.synthetic import share_filters, synthetic_store
from lookalike.index import load_index
from lookalike.index.distances import exact_knn, l2_normalize
from lookalike.index.faiss_backend import FaissIndex
from lookalike.index.milvus_backend import MilvusIndex

# `lookalike bench index --kinds`: each name -> the config ``run_index_bench`` measures.
INDEX_CONFIGS = {
    "flat": {"kind": "flat"},
    "hnsw": {"kind": "hnsw", "ef_search": [48, 96, 192]},
    "hnsw-fp16": {"kind": "hnsw-fp16", "ef_search": [48, 96, 192]},
    "hnsw-pca": {"kind": "hnsw-pca", "ef_search": [48, 96, 192]},
    "ivfpq": {"kind": "ivfpq", "nprobe": [16, 32, 64]},
    # the default from 250k items: PCA -> IVF over fast-scan PQ codes refined on float16 reduced
    # vectors, the top rerank·k re-ranked on 8-bit codes of the full vectors, their top
    # exact_rerank·k exactly on the float32 vectors read from disk (defaults: nprobe 48, refine 2,
    # rerank 25, exact_rerank 2); exact_rerank=0 with nprobe 64 / rerank 30 is the session-7 default
    "reduced": {"kind": "reduced", "sweep": [
        {"nprobe": 48, "rerank": 25, "exact_rerank": 2}, {"nprobe": 64, "rerank": 30, "exact_rerank": 0},
        {"nprobe": 64, "rerank": 30, "exact_rerank": 2}, {"nprobe": 48, "rerank": 20, "exact_rerank": 2},
        {"nprobe": 32, "rerank": 25, "exact_rerank": 2}, {"nprobe": 32, "rerank": 20, "exact_rerank": 2},
        {"nprobe": 48, "rerank": 25, "exact_rerank": 1}, {"nprobe": 48, "rerank": 25, "exact_rerank": 0},
        {"nprobe": 32, "rerank": 20, "exact_rerank": 0},
        # 2 OpenMP threads per query (FaissIndex ``threads``) against the default 1
        {"nprobe": 48, "rerank": 25, "exact_rerank": 2, "threads": 2},
        {"nprobe": 48, "rerank": 25, "exact_rerank": 0, "threads": 2}]},
    # the default with its IVF lists assigned by all PCA dimensions (the layout before session 9's
    # 64-d coarse quantizer, ``coarse_dim``), to compare in the same run
    "reduced-coarse-full": {"kind": "reduced", "coarse_dim": 256, "sweep": [
        {"nprobe": 48, "rerank": 25, "exact_rerank": 2}, {"nprobe": 48, "rerank": 25, "exact_rerank": 0}]},
    # the same re-ranked on the float16 PCA distance + 8-bit codes of the PCA residual
    "reduced-residual": {"kind": "reduced", "codes": "residual",
                         "sweep": [{"nprobe": 64, "rerank": 20}, {"nprobe": 48, "rerank": 20},
                                   {"nprobe": 32, "rerank": 20}, {"nprobe": 48, "rerank": 15},
                                   {"nprobe": 24, "rerank": 30}, {"nprobe": 32, "rerank": 30},
                                   {"nprobe": 48, "rerank": 30}]},
    # the same with an HNSW graph over the float16 reduced vectors (the structure before the 1M run)
    "reduced-hnsw": {"kind": "reduced", "structure": "hnsw", "ef_search": [200, 400]},
    "milvus": {"kind": "milvus"},   # embedded milvus-lite (or LOOKALIKE_MILVUS_URI)
}


def index_configs(kinds: list[str]) -> list[dict]:
    """The ``INDEX_CONFIGS`` entries named in ``kinds``; ValueError naming any unknown one."""
    unknown = [c for c in kinds if c not in INDEX_CONFIGS]
    if unknown:
        raise ValueError(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(INDEX_CONFIGS)}")
    return [INDEX_CONFIGS[c] for c in kinds]


@dataclass
class IndexRow:
    n: int
    config: str
    build_s: float
    index_mb: float
    p50_ms: float
    p95_ms: float
    recall: float
    speedup: float = 1.0      # p50 of exact search / p50 of this configuration
    resident_mb: float = float("nan")   # RSS the loaded index adds (anonymous + its mapped files' pages)
    disk_mb: float = 0.0      # files searches read without mapping them (reduced: vectors.npy, via pread)

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class FilterRow:
    n: int
    selectivity: float
    matching: int
    p50_ms: float
    recall: float             # lookalike's filtered search vs exact filtered search
    exact_p50_ms: float       # exact filtered search (bitmap selector over the flat vectors)
    postfilter_recall: float  # naive: top-(k*10) unfiltered, then drop non-matching
    postfilter_fill: float    # share of the k slots the naive approach manages to fill
    path: str = ""            # what the cost model chose: "exact" subset scan or filtered "ann"
    old_p50_ms: float = float("nan")    # the same search with the fixed 3k-item rule (filter_policy="threshold")
    old_recall: float = float("nan")
    sql_ms: float = float("nan")        # filter -> allowed ids, SQLite JSON scan (the old step)
    arrays_ms: float = float("nan")     # the same through ColumnArrays (median of warm calls)
    arrays_first_ms: float = float("nan")  # its first call (loads the columns for this data version)

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _exact(queries: np.ndarray, base: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """lookalike.index.distances.exact_knn over an already prepared ``base``: cosine as the inner
    product of unit vectors, so the (possibly million-row) matrix is not normalised into a copy."""
    if metric == "cosine":
        return exact_knn(l2_normalize(queries), base, k, "ip")
    return exact_knn(queries, base, k, metric)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """Exact top-k positions (brute force; ``base`` is not copied; unit rows for cosine)."""
    return _exact(queries, base, k, metric)[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k that the search returned (ids -1 count as misses)."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def time_single_queries(index, queries: np.ndarray, k: int, allowed=None, warmup: int = 5):
    """(latencies in ms, ids) searching one query at a time."""
    for q in queries[:warmup]:
        index.search(q[None], k, allowed_ids=allowed)
    found = np.empty((len(queries), k), np.int64)
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        start = time.perf_counter()
        _, ids = index.search(q[None], k, allowed_ids=allowed)
        times[i] = (time.perf_counter() - start) * 1000
        found[i] = ids[0]
    return times, found


def index_megabytes(index) -> float:
    """Size of the index as faiss serialises it (vectors + graph/codes; for ``reduced`` its 8-bit
    codes of the full vectors too), plus the id map and, for ``reduced``, the float32 full vectors
    it keeps on disk."""
    if not isinstance(index, FaissIndex):  # milvus-lite: its database file
        db = getattr(index, "_db", None)
        return os.path.getsize(db) / 1e6 if db and os.path.exists(db) else float("nan")
    on_disk = index._full.nbytes if index._full is not None else 0   # reduced: its float32 vectors
    fd, tmp = tempfile.mkstemp(suffix=".faiss")
    os.close(fd)
    try:
        faiss.write_index(index._index, tmp)
        return (os.path.getsize(tmp) + index._ids.nbytes + on_disk) / 1e6
    finally:
        os.unlink(tmp)


def _proc_status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (Linux), 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _mapped_kb(folder: Path) -> int:
    """Resident kB of this process's mappings of files inside ``folder`` (/proc/self/smaps)."""
    total, inside = 0, False
    try:
        for line in Path("/proc/self/smaps").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:   # a mapping's header line
                inside = len(fields) >= 6 and fields[5].startswith(str(folder))
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    except OSError:
        pass
    return total


def resident_megabytes(index: FaissIndex, queries: np.ndarray, k: int, workdir: Path) -> tuple[float, FaissIndex]:
    """Resident memory of ``index`` as a server holds it: saved, dropped, loaded again, then searched
    with ``queries``. MB of anonymous memory the load and the searches added (RssAnon of
    /proc/self/status) plus the resident pages of the index's own memory-mapped files (the full
    vectors of ``reduced``). Returns (MB, the loaded index)."""
    folder = Path(tempfile.mkdtemp(prefix="resident-", dir=workdir))
    index.save(folder / "index")
    del index
    gc.collect()
    before = _proc_status_kb("RssAnon")
    loaded = load_index(folder / "index")
    time_single_queries(loaded, queries, k)
    resident = max(_proc_status_kb("RssAnon") - before, 0) + _mapped_kb(folder)
    loaded._bench_folder = folder  # removed by the caller once the index is dropped
    return resident / 1024, loaded


def bench_config(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, config: str,
                 metric: str = "cosine", workdir: Path | None = None, **params) -> tuple[IndexRow, FaissIndex]:
    """Build one configuration on ``base`` and measure it; ``config`` is a FaissIndex kind. With a
    ``workdir`` (faiss kinds) the index is saved there and loaded again to measure its resident
    memory (:func:`resident_megabytes`) before it is timed."""
    start = time.perf_counter()
    if config == "milvus":  # the embedded milvus-lite, same interface
        index = MilvusIndex(base.shape[1], metric, **params)
    else:
        index = FaissIndex(base.shape[1], metric, kind=config, workdir=workdir, **params)
    index.add(np.arange(len(base)), base)
    build = time.perf_counter() - start
    megabytes = index_megabytes(index)
    resident = float("nan")
    if workdir is not None and isinstance(index, FaissIndex):
        resident, index = resident_megabytes(index, queries, k, Path(workdir))
    times, found = time_single_queries(index, queries, k)
    label = config + "".join(f" {key}={value}" for key, value in params.items())
    row = IndexRow(len(base), label, build, megabytes, float(np.percentile(times, 50)),
                   float(np.percentile(times, 95)), recall_at_k(found, truth), resident_mb=resident,
                   disk_mb=disk_megabytes(index))
    return row, index


def disk_megabytes(index) -> float:
    """MB of files ``index`` reads at search time without mapping them: ``reduced``'s float32
    vectors.npy (its exact re-rank preads rows; the OS page cache, not the process, holds them)."""
    full = getattr(index, "_full", None)
    if full is None or not getattr(index, "_exact_factor", lambda: 0)():
        return 0.0
    return full.nbytes / 1e6


def retune(index: FaissIndex, queries: np.ndarray, truth: np.ndarray, k: int, n: int, label: str,
           build_s: float, megabytes: float, resident_mb: float = float("nan"), **search_params) -> IndexRow:
    """Measure an already built index again with other search-time parameters (efSearch, nprobe,
    rerank); the index's own values are restored afterwards."""
    before = {key: getattr(index, key) for key in search_params}
    for key, value in search_params.items():
        setattr(index, key, value)
    try:
        times, found = time_single_queries(index, queries, k)
        disk = disk_megabytes(index)
    finally:
        for key, value in before.items():
            setattr(index, key, value)
    name = label + "".join(f" {key}={value}" for key, value in search_params.items())
    return IndexRow(n, name, build_s, megabytes, float(np.percentile(times, 50)), float(np.percentile(times, 95)),
                    recall_at_k(found, truth), resident_mb=resident_mb, disk_mb=disk)


def retune_side_by_side(index: FaissIndex, queries: np.ndarray, truth: np.ndarray, k: int, n: int, label: str,
                        build_s: float, megabytes: float, settings: list[dict],
                        resident_mb: float = float("nan")) -> list[IndexRow]:
    """:func:`retune` for several settings of one built index, timed side by side: the searches
    alternate between the settings (search s runs setting s mod len(settings)), so a change in the
    machine's load during the run shifts every setting alike — timed one after another on the shared
    box, the same setting's p50 moved by ±0.3 ms between rows. Consecutive searches use different
    queries (setting j's i-th search is query i + j·len(queries)/len(settings)), so none profits from
    the caches its predecessor warmed on the same query. Each setting sees every query once (after
    5 warm-up searches); the index's own values are restored afterwards. One row per setting."""
    keys = sorted({key for setting in settings for key in setting})
    before = {key: getattr(index, key) for key in keys}
    nq, ns = len(queries), len(settings)
    times = np.empty((ns, nq))
    found = np.empty((ns, nq, k), np.int64)
    disk = []

    def apply(setting: dict) -> None:
        for key in keys:
            setattr(index, key, setting.get(key, before[key]))

    try:
        for setting in settings:
            apply(setting)
            for q in queries[:5]:
                index.search(q[None], k)
            disk.append(disk_megabytes(index))
        stride = max(nq // ns, 1)
        for i in range(nq):
            for j, setting in enumerate(settings):
                apply(setting)
                q = (i + j * stride) % nq
                start = time.perf_counter()
                _, ids = index.search(queries[q][None], k)
                times[j, q] = (time.perf_counter() - start) * 1000
                found[j, q] = ids[0]
    finally:
        for key, value in before.items():
            setattr(index, key, value)
    return [IndexRow(n, label + "".join(f" {key}={value}" for key, value in setting.items()), build_s, megabytes,
                     float(np.percentile(times[j], 50)), float(np.percentile(times[j], 95)),
                     recall_at_k(found[j], truth), resident_mb=resident_mb, disk_mb=disk[j])
            for j, setting in enumerate(settings)]


def exact_row(base: np.ndarray, queries: np.ndarray, k: int, metric: str, max_queries: int | None = None) -> IndexRow:
    """The baseline: brute force over ``base`` in place (what a Flat index does, without copying
    the matrix: at a million vectors that would be another 5 GB), single queries (50, or 20 above
    200k vectors: each reads the whole matrix)."""
    max_queries = max_queries or (20 if len(base) > 200_000 else 50)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # as FaissIndex does for single queries
    try:
        times = []
        for q in queries[:max_queries]:
            start = time.perf_counter()
            _exact(q[None], base, k, metric)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        faiss.omp_set_num_threads(threads)
    return IndexRow(len(base), "exact (flat)", 0.0, base.nbytes / 1e6, float(np.percentile(times, 50)),
                    float(np.percentile(times, 95)), 1.0, resident_mb=base.nbytes / 2**20)


def run_index_bench(base: np.ndarray, queries: np.ndarray, configs: list[dict], k: int = 10,
                    metric: str = "cosine", on_row=None, workdir: Path | None = None) -> list[IndexRow]:
    """Exact search first (the baseline), then each config; ``configs`` are FaissIndex kwargs
    plus an optional ``"ef_search"`` / ``"nprobe"`` / ``"refine"`` / ``"rerank"`` list to sweep on
    the same build, or a ``"sweep"`` list of such settings (dicts), all timed side by side
    (:func:`retune_side_by_side`). ``base`` must be L2-normalised for cosine (a read-only memmap is fine).
    Resident memory is measured in a temporary folder under ``workdir`` (default: the system's)."""
    workdir = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    truth = exact_topk(base, queries, k, metric)
    rows: list[IndexRow] = [exact_row(base, queries, k, metric)]
    on_row and on_row(rows[0])
    for config in [c for c in configs if c.get("kind") != "flat"]:
        config = dict(config)
        sweep = config.pop("sweep", None) or [{key: value} for key in ("ef_search", "nprobe", "refine", "rerank")
                                              if isinstance(config.get(key), list) for value in config.pop(key)]
        kind = config.pop("kind")
        row, index = bench_config(base, queries, truth, k, kind, metric,
                                  workdir=workdir if kind != "milvus" else None, **config)
        label = row.config
        if not sweep:
            rows.append(row)
            on_row and on_row(row)
        if sweep:   # timed side by side (see retune_side_by_side)
            for swept in retune_side_by_side(index, queries, truth, k, len(base), label, row.build_s, row.index_mb,
                                             sweep, row.resident_mb):
                rows.append(swept)
                on_row and on_row(swept)
        folder = getattr(index, "_bench_folder", None)
        del index
        gc.collect()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    exact_p50 = rows[0].p50_ms
    for row in rows:
        row.speedup = exact_p50 / row.p50_ms if row.p50_ms > 0 else float("nan")
    return rows


def _median_ms(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def run_filter_bench(index: FaissIndex, base: np.ndarray, queries: np.ndarray, selectivities: list[float],
                     k: int = 10, metric: str = "cosine", seed: int = 0, store=None) -> list[FilterRow]:
    """Filtered search at each selectivity (share of items matching) against exact filtered search.

    ``index`` holds ``base`` at ids 0..n-1; ``base`` must already be L2-normalised for cosine.
    The exact baseline is brute force over the matching vectors gathered beforehand (its best case).
    Each row also times the search with the fixed 3k-item rule (``old_*``) next to the calibrated
    cost model. With ``store`` (a ``data.synthetic.synthetic_store`` of len(base) items) the
    allowed ids come from a range + set filter (``share_filters``), answered by SQLite's JSON scan
    (``sql_ms``, the old step) and by ColumnArrays (``arrays_ms``), checked equal; else random.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for share in selectivities:
        sql_ms = arrays_ms = arrays_first_ms = float("nan")
        if store is not None:
            filters = share_filters(share)
            start = time.perf_counter()
            fast = store.rowids_where(None, filters)
            arrays_first_ms = (time.perf_counter() - start) * 1000
            arrays_ms = _median_ms(lambda: store.rowids_where(None, filters), 10)
            slow = store.rowids_where_sql(None, filters)
            sql_ms = _median_ms(lambda: store.rowids_where_sql(None, filters), 2)
            if not np.array_equal(fast, slow):
                raise AssertionError(f"the array filter path disagrees with SQLite at share {share}")
            allowed = fast - 1   # rowid r holds benchmark vector r - 1
        else:
            allowed = np.flatnonzero(rng.random(len(base)) < share).astype(np.int64)
        if len(allowed) < k:
            continue
        subset = base[allowed]
        exact_times = np.empty(len(queries))
        truth = np.empty((len(queries), k), np.int64)
        for i, q in enumerate(queries):
            start = time.perf_counter()
            _, local = _exact(q[None], subset, k, metric)
            exact_times[i] = (time.perf_counter() - start) * 1000
            truth[i] = allowed[local[0]]
        del subset
        policy = index.filter_policy
        index.filter_policy = "threshold"
        old_times, old_found = time_single_queries(index, queries, k, allowed=allowed)
        index.filter_policy = policy
        times, found = time_single_queries(index, queries, k, allowed=allowed)
        _, wide = index.search(queries, k * 10)
        allowed_set = set(allowed.tolist())
        post = np.array([([i for i in row if i in allowed_set] + [-1] * k)[:k] for row in wide])
        rows.append(FilterRow(len(base), share, len(allowed), float(np.percentile(times, 50)),
                              recall_at_k(found, truth), float(np.percentile(exact_times, 50)),
                              recall_at_k(post, truth), float((post >= 0).mean()),
                              "exact" if index.prefers_exact(len(allowed)) else "ann",
                              float(np.percentile(old_times, 50)), recall_at_k(old_found, truth),
                              sql_ms, arrays_ms, arrays_first_ms))
    return rows


def filter_bench(base: np.ndarray, queries: np.ndarray, selectivities: list[float], kind: str = "auto",
                 k: int = 10, workdir: Path | None = None, metadata: bool = True) -> tuple[str, list[FilterRow]]:
    """``run_filter_bench`` on a cosine faiss index of ``kind`` holding ``base`` (unit-length
    float32 rows, e.g. ``bench.data.bench_vectors``) at ids 0..n-1, the allowed ids from a synthetic
    store's metadata filters (``metadata``; else random subsets): (index description, rows).
    Temporary files (the store, ``reduced``'s full vectors) go under ``workdir``."""
    folder = Path(tempfile.mkdtemp(prefix="filter-bench-", dir=workdir))
    try:
        store = synthetic_store(folder / "store", len(base)) if metadata else None
        index = FaissIndex(base.shape[1], "cosine", kind=kind, workdir=folder)
        index.add(np.arange(len(base)), base)
        described = index.describe()
        rows = run_filter_bench(index, base, queries, selectivities, k=k, store=store)
        if store is not None:
            store.close()
        del index
        return described, rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)
