"""Cluster-restricted search (the appchemy speed trick) and its cost against full search.

A query is compared with the k-means centroids first and then only with the items of the
``probe`` nearest clusters. That is exactly an inverted-file index whose coarse quantizer holds
our centroids: :class:`lookalike.index.ivf.PreassignedIVF` (faiss ``IndexIVFFlat`` over the
clustering's own centroids and assignments) instead of a hand-written scan: ``nprobe`` = ``--probe``.
Probing every cluster visits every item, so it returns the same items as full search.

Catalog layer (what ``lookalike cluster`` / ``lookalike cluster-search`` call): ``cluster_report``
clusters a catalog, compares with labels and times restricted search; ``search_item`` runs one
item's restricted search next to full search.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lookalike.data.artifacts import encoder_key, write_json
from lookalike.explore.clusters import cluster_catalog, label_agreement, load_clusters
from lookalike.index.distances import distance_to_score, exact_knn, prepare
from lookalike.index.ivf import PreassignedIVF, set_search_threads
from lookalike.search import SearchResult
from lookalike.train.base import artifact_dir
from lookalike.viz.charts import confusion_png


# Kept under the name the explore layer and its tests use.
ClusterSearch = PreassignedIVF


class FullSearch:
    """Exact search over every item: the reference the restricted search is measured against."""

    def __init__(self, matrix: np.ndarray, metric: str = "cosine"):
        self.metric = metric
        self.vectors = prepare(matrix, metric)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_knn(queries, self.vectors, k, self.metric)


@dataclass
class ProbeResult:
    probe: int
    recall_at_k: float         # share of the full search's top-k that the restricted search finds
    scanned_share: float       # mean share of the catalog compared per query
    full_ms: float             # mean per-query latency, full search
    restricted_ms: float       # mean per-query latency, restricted search
    speedup: float
    precision_full: float | None = None        # label P@k of full search (same for every row)
    precision_restricted: float | None = None  # label P@k of restricted search

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _drop_self(pos: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    """Leave-one-out: remove each query's own row, keep the first k others."""
    out = np.full((len(pos), k), -1, np.int64)
    for i, (row, own) in enumerate(zip(pos, query_rows)):
        kept = row[(row != own) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out


def _label_precision(pos: np.ndarray, query_rows: np.ndarray, labels: Sequence) -> float | None:
    hits, total = 0, 0
    for row, own in zip(pos, query_rows):
        if labels[own] in (None, ""):
            continue
        valid = row[row >= 0]
        hits += sum(labels[j] == labels[own] for j in valid)
        total += len(row)
    return hits / total if total else None


def _timed_per_query(search_one, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Run one query at a time (what an online request does); (positions, mean ms per query)."""
    results = []
    start = time.perf_counter()
    for q in queries:
        results.append(search_one(q[None]))
    elapsed = time.perf_counter() - start
    return np.concatenate(results), 1000.0 * elapsed / max(len(queries), 1)


def _timed_pair(full_one, restricted_one, queries: np.ndarray, rounds: int):
    """Time both searches in alternating rounds and keep each one's fastest round: other load on
    the machine only ever adds time, so the minimum is the least disturbed estimate."""
    full_ms, restricted_ms, pos = [], [], None
    for _ in range(rounds):
        full_ms.append(_timed_per_query(full_one, queries)[1])
        pos, ms = _timed_per_query(restricted_one, queries)
        restricted_ms.append(ms)
    return pos, min(full_ms), min(restricted_ms)


def compare_probes(matrix: np.ndarray, centroids: np.ndarray, assignments: np.ndarray, probes: Sequence[int],
                   metric: str = "cosine", k: int = 10, labels: Sequence | None = None,
                   n_queries: int | None = 1000, seed: int = 0, threads: int = 1,
                   rounds: int = 3) -> list[ProbeResult]:
    """Leave-one-out queries from the catalog itself, full and restricted search side by side.

    Both searches run in the same process, one query at a time, with the same faiss thread count,
    in alternating rounds (fastest round kept), so the ratio is meaningful even on a busy machine. Recall@k is measured against full search's
    top-k (not against labels), so it isolates what restricting the search loses.
    """
    set_search_threads(threads)
    n = len(matrix)
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if not n_queries or n_queries >= n else np.sort(rng.choice(n, n_queries, replace=False))
    queries = np.ascontiguousarray(matrix[rows], dtype=np.float32)
    full, restricted = FullSearch(matrix, metric), ClusterSearch(matrix, centroids, assignments, metric)
    fetch = min(k + 1, n)
    full_pos = _drop_self(full.search(queries, fetch)[1], rows, k)
    results = []
    for probe in probes:
        # time the full search again next to every probe value: load on a shared box drifts
        pos, full_ms, ms = _timed_pair(lambda q: full.search(q, fetch)[1],
                                       lambda q, p=probe: restricted.search(q, fetch, p)[1], queries, rounds)
        pos = _drop_self(pos, rows, k)
        recall = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max((a >= 0).sum(), 1)
                          for a, b in zip(full_pos, pos)])
        results.append(ProbeResult(
            probe=int(probe), recall_at_k=float(recall),
            scanned_share=float(restricted.scanned(queries, probe).mean() / n),
            full_ms=full_ms, restricted_ms=ms, speedup=full_ms / ms if ms else float("inf"),
            precision_full=_label_precision(full_pos, rows, labels) if labels is not None else None,
            precision_restricted=_label_precision(pos, rows, labels) if labels is not None else None))
    return results


# -- catalog layer ---------------------------------------------------------------------------

def cluster_report(cat, encoder: str | None = None, k: int | str = "auto", k_range: Sequence[int] = range(2, 21),
                   label: str | None = None, probes: Sequence[int] = (), queries: int = 1000, seed: int = 0,
                   status: Callable[[str], object] | None = None, criterion: str = "silhouette") -> tuple[dict, Path]:
    """Cluster ``cat`` (stored per item), compare with the ``label`` column and time restricted
    search for each ``probes`` value (``k == "auto"``: chosen by ``criterion``, see
    :func:`lookalike.explore.clusters.choose_k`; the per-k table is kept as ``k_scores``); write ``<enc>-k<k>-report.json`` (and a confusion PNG with
    ``label``) under ``artifacts/clusters/``. Returns (report dict, report path).

    ``status(text)`` may return a context manager shown while a long step runs (e.g. rich's
    ``console.status``). Raises LookupError (no vectors), ValueError (``k`` larger than the items
    with vectors, or no item has a ``label`` value).
    """
    spec, ids, matrix, metric = cat.vectors_with_metric(encoder)
    if isinstance(k, int) and k > len(ids):
        raise ValueError(f"--k {k} is more than the {len(ids)} items with vectors")
    labels = cat.labels(label, spec) if label else None  # an unknown column fails before the clustering
    with _status(status, f"clustering {len(ids)} vectors ({spec})..."):
        clusters = cluster_catalog(cat, spec, k, k_range, seed, criterion=criterion)
    folder = artifact_dir(cat.dir, "clusters")
    stem = f"{encoder_key(spec)}-k{clusters.k}"
    report = {"catalog": cat.name, "encoder": spec, "items": len(ids), "k": clusters.k,
              "chosen_by": criterion if k == "auto" else "user", "silhouette": clusters.silhouette,
              "k_scores": clusters.k_scores, "sizes": clusters.sizes(),
              "clusters_file": str(folder / f"{stem}.json")}
    if labels is not None:
        if all(v in (None, "") for v in labels):
            raise ValueError(f"no item has a value in column {label!r}")
        agreement = label_agreement(labels, clusters.assignments)
        report["agreement"] = agreement.to_dict()
        report["confusion_png"] = str(confusion_png(agreement, folder / f"{stem}-confusion.png",
                                                    f"{cat.name} · {spec} · k={clusters.k}: purity {agreement.purity:.3f}, "
                                                    f"NMI {agreement.nmi:.3f}, ARI {agreement.ari:.3f}"))
    if probes:
        with _status(status, f"timing full vs cluster-restricted search ({min(queries, len(ids))} queries)..."):
            rows = compare_probes(matrix, clusters.centroids, clusters.assignments, probes, metric, k=10,
                                  labels=labels, n_queries=queries, seed=seed)
        report["restricted_search"] = [r.to_dict() for r in rows]
    report_path = folder / f"{stem}-report.json"
    write_json(report_path, report, indent=2, default=str)
    return report, report_path


def _status(status, text: str):
    return status(text) if status else nullcontext()


@dataclass
class ItemSearch:
    """One item's cluster-restricted search next to full search (``search_item``).

    ``results`` are ranked hits, best first; each one's ``metadata["cluster"]`` is its cluster id.
    Latencies are of this one query (milliseconds), not a benchmark: see ``compare_probes``.
    """
    item: str
    cluster: int
    k_clusters: int
    probe: int
    scanned: int               # items the restricted search compared the query with
    items: int                 # items with vectors
    recall_vs_full: float      # share of full search's top k that the restricted search found
    restricted_ms: float
    full_ms: float
    results: list[SearchResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        doc = {k: v for k, v in self.__dict__.items() if k != "results"}
        doc["results"] = [{**r.to_dict(("rank", "id", "score", "label"), digits=None), "cluster": r.metadata["cluster"]}
                          for r in self.results]
        return doc


def search_item(cat, item: str, k: int = 10, probe: int = 1, encoder: str | None = None) -> ItemSearch:
    """The ``k`` nearest items to ``item`` among the ``probe`` nearest clusters stored by
    ``lookalike cluster`` (the item itself excluded), and full search's top ``k`` for recall.

    Raises LookupError when the catalog has no vectors for ``encoder``, no stored clusters, was
    re-indexed after clustering, or ``item`` is unknown (messages name the command that fixes it).
    """
    spec, ids, matrix, metric = cat.vectors_with_metric(encoder)
    clusters = load_clusters(cat, spec)
    if clusters is None:
        raise LookupError(f"no clusters stored for {spec!r}; run `lookalike cluster --catalog {cat.name}` first")
    by_id = clusters.by_id()
    if any(i not in by_id for i in ids):
        raise LookupError(f"items were indexed after the last clustering; re-run `lookalike cluster --catalog {cat.name}`")
    if item not in by_id:
        raise LookupError(f"unknown item id {item!r} (or it has no vector for {spec!r})")
    row = ids.index(item)
    query = matrix[row][None]
    restricted = ClusterSearch(matrix, clusters.centroids, np.array([by_id[i] for i in ids]), metric)
    full = FullSearch(matrix, metric)
    start = time.perf_counter()
    dist, pos = restricted.search(query, k + 1, probe)
    restricted_ms = 1000 * (time.perf_counter() - start)
    start = time.perf_counter()
    _, full_pos = full.search(query, k + 1)
    full_ms = 1000 * (time.perf_counter() - start)
    keep = [(d, p) for d, p in zip(dist[0], pos[0]) if p >= 0 and p != row][:k]
    full_top = [p for p in full_pos[0] if p >= 0 and p != row][:k]
    labels = cat.labels("label", spec)
    scores = distance_to_score(np.array([d for d, _ in keep]), metric)
    results = [SearchResult(rank=n, id=ids[p], score=float(score), distance=float(d), label=labels[p],
                            path=cat.get(ids[p]).path, metadata={"cluster": by_id[ids[p]]})
               for n, ((d, p), score) in enumerate(zip(keep, scores), start=1)]
    return ItemSearch(item=item, cluster=by_id[item], k_clusters=clusters.k, probe=min(probe, clusters.k),
                      scanned=int(restricted.scanned(query, probe)[0]), items=len(ids),
                      recall_vs_full=len({p for _, p in keep} & set(full_top)) / max(len(full_top), 1),
                      restricted_ms=restricted_ms, full_ms=full_ms, results=results)
