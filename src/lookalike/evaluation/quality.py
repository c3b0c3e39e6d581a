"""Where retrieval fails, per label: the numbers behind the quality page and ``evaluate --report``.

One leave-one-out pass (:func:`lookalike.evaluation.retrieval.nearest_neighbours`, the same
neighbours :func:`~lookalike.evaluation.retrieval.evaluate_vectors` scores) gives:

* per label: P@1, mAP@k and the number of queries n, **sorted worst first** (lowest mAP@k, then
  lowest P@1), with the label its queries' top-1 neighbour most often has instead;
* the top-1 confusion matrix: rows = the query's label, columns = the label of its nearest
  neighbour (counts; the diagonal is P@1 times n);
* for the worst labels, the failed queries (top-1 neighbour of another label), lowest AP@k first,
  each with the hits that came back instead.

Everything is by position into the ``vectors`` / ``labels`` given, so it runs on plain arrays;
:meth:`lookalike.catalog.Catalog.quality` maps positions to item ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from lookalike.evaluation.metrics import average_precision_at_k
from lookalike.evaluation.retrieval import evaluate_vectors, label_key, nearest_neighbours
from lookalike.search.expansion import Expansion, expanded_neighbours


@dataclass
class LabelQuality:
    """One label's row of the per-label table."""
    label: str
    n: int                          # queries of this label (items with another item of the label)
    p_at_1: float                   # share of queries whose nearest neighbour has the label
    map_at_k: float                 # mean AP@k over the label's queries
    confused_with: str | None       # label most often returned at rank 1 instead (None: never wrong)
    confused_share: float           # that label's share of the label's queries


@dataclass
class FailedQuery:
    """A query whose nearest neighbour has another label, and the top hits that came back."""
    query: int                      # position of the query in the vectors given
    label: str
    ap_at_k: float
    returned: list[int]             # positions of the top hits, nearest first
    returned_labels: list[str | None]


@dataclass
class QualityReport:
    """Per-label quality, top-1 confusion and failed queries of one leave-one-out evaluation."""
    k: int
    metric: str
    n_queries: int
    overall: dict[str, float]               # "P@1", f"mAP@{k}" over all queries
    labels: list[LabelQuality]              # worst first
    confusion_labels: list[str]             # row and column order of ``confusion`` (worst label first)
    confusion: np.ndarray = field(repr=False)   # (n_labels, n_labels) int64: query label x top-1 label
    failures: dict[str, list[FailedQuery]] = field(default_factory=dict)  # worst labels, worst queries first
    ids: list[str] | None = None            # item id per position, when a catalog filled them in

    def to_dict(self) -> dict:
        """JSON-ready; positions become item ids when ``ids`` is set."""
        name = (lambda p: self.ids[p]) if self.ids is not None else int
        return {"k": self.k, "metric": self.metric, "n_queries": self.n_queries, "overall": self.overall,
                "labels": [row.__dict__ for row in self.labels],
                "confusion": {"labels": self.confusion_labels, "counts": self.confusion.tolist(),
                              "rows": "query label", "columns": "label of the nearest neighbour"},
                "failures": [{"label": label, "queries": [
                    {"query": name(f.query), "ap_at_k": f.ap_at_k,
                     "returned": [{"id": name(r), "label": lab} for r, lab in zip(f.returned, f.returned_labels)]}
                    for f in queries]} for label, queries in self.failures.items()]}


def label_quality(vectors: np.ndarray, labels: Sequence[Hashable], k: int = 10, metric: str = "cosine",
                  worst: int = 3, failures_per_label: int = 4, shown: int = 5,
                  subset: Sequence[int] | np.ndarray | None = None,
                  expansion: "Expansion | str | None" = None) -> QualityReport:
    """Per-label P@1 / mAP@``k`` (worst first), the top-1 confusion matrix, and up to
    ``failures_per_label`` failed queries (``shown`` hits each) for the ``worst`` labels.

    ``vectors`` (n, d) float32 with ``labels`` (n hashables, None = unlabelled, left out);
    ``subset`` restricts queries and gallery to those positions. Raises ValueError when no
    labelled item has another item of its label (nothing to measure). ``expansion`` ranks with
    αQE / DBA re-ranking as search does (:func:`lookalike.search.expansion.expanded_neighbours`).
    """
    vectors = np.asarray(vectors)
    keys = [label_key(tuple(lab) if isinstance(lab, (list, np.ndarray)) else lab) for lab in labels]
    if len(vectors) != len(keys):
        raise ValueError(f"{len(vectors)} vectors but {len(keys)} labels")
    candidates = np.arange(len(keys)) if subset is None else np.unique(np.asarray(subset, dtype=np.int64))
    pool = np.array([i for i in candidates if keys[i] not in (None, "")], dtype=np.int64)
    if len(pool) < 2:
        raise ValueError("nothing to evaluate: fewer than 2 labelled items")
    depth = max(k, shown)
    setting = Expansion.parse(expansion)
    neighbours = (expanded_neighbours(vectors, depth, setting, pool, metric) if setting.active
                  else nearest_neighbours(vectors, depth, metric, pool))
    report = evaluate_vectors(vectors, keys, ks=(1, k), metric=metric, subset=pool, neighbours=neighbours)
    if report.n_queries == 0:
        raise ValueError(f"nothing to evaluate: none of the {len(pool)} labelled items has another item with its label")

    pool_labels = np.array([keys[i] for i in pool], dtype=object)
    counts = {lab: int((pool_labels == lab).sum()) for lab in set(pool_labels.tolist())}
    top1 = np.array([keys[j] if j >= 0 else None for j in neighbours[:, 0]], dtype=object)
    # Queries as evaluate_vectors counts them: the label has another item in the pool.
    queried = np.array([counts[lab] > 1 for lab in pool_labels])

    rows = []
    for label, values in report.per_label.items():
        mask = queried & (pool_labels == label)
        wrong = [str(t) for t in top1[mask] if t != label]
        confused, share = (None, 0.0)
        if wrong:
            confused = max(sorted(set(wrong)), key=wrong.count)
            share = wrong.count(confused) / int(mask.sum())
        rows.append(LabelQuality(label=label, n=int(values["n"]), p_at_1=values["P@1"], map_at_k=values[f"mAP@{k}"],
                                 confused_with=confused, confused_share=float(share)))
    rows.sort(key=lambda r: (r.map_at_k, r.p_at_1, r.label))

    order = [r.label for r in rows]
    index = {lab: i for i, lab in enumerate(order)}
    confusion = np.zeros((len(order), len(order)), np.int64)
    for lab, hit in zip(pool_labels[queried], top1[queried]):
        if hit in index:
            confusion[index[lab], index[hit]] += 1

    ap = _ap_at_k(neighbours, pool, keys, k, counts)
    failures: dict[str, list[FailedQuery]] = {}
    for row in rows[:worst]:
        failed = [q for q in np.flatnonzero(queried & (pool_labels == row.label)) if top1[q] != row.label]
        failed.sort(key=lambda q: (ap[q], int(pool[q])))
        failures[row.label] = [FailedQuery(query=int(pool[q]), label=row.label, ap_at_k=float(ap[q]),
                                           returned=[int(j) for j in neighbours[q, :shown] if j >= 0],
                                           returned_labels=[keys[j] for j in neighbours[q, :shown] if j >= 0])
                               for q in failed[:failures_per_label]]
    overall = {"P@1": report.overall["P@1"], f"mAP@{k}": report.overall[f"mAP@{k}"]}
    return QualityReport(k=k, metric=metric, n_queries=report.n_queries, overall=overall, labels=rows,
                         confusion_labels=order, confusion=confusion, failures=failures)


def _ap_at_k(neighbours: np.ndarray, pool: np.ndarray, keys: list, k: int, counts: dict) -> np.ndarray:
    """AP@k per pool query (:func:`lookalike.evaluation.metrics.average_precision_at_k`)."""
    relevance = np.array([[j >= 0 and keys[j] == keys[q] for j in row[:k]] for q, row in zip(pool, neighbours)],
                         dtype=np.float64).reshape(len(pool), -1)
    n_relevant = np.array([counts[keys[q]] - 1 for q in pool])
    return average_precision_at_k(relevance, k, n_relevant)
