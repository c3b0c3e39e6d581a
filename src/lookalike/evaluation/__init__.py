"""How well a set of vectors retrieves items of the same label.

The interface:

* :mod:`lookalike.evaluation.metrics` — pure metric functions on 0/1 relevance matrices:
  ``precision_at_k``, ``recall_at_k``, ``average_precision_at_k``, ``ndcg_at_k``, ``metrics_at_k``.
* :mod:`lookalike.evaluation.retrieval` — leave-one-out over (n, d) vectors and n labels:
  ``evaluate_vectors(vectors, labels, ks, metric, subset) -> EvalReport`` (neighbours from the one
  exact kNN, ``lookalike.index.distances.exact_knn``; ``nearest_neighbours`` exposes them).
* :mod:`lookalike.evaluation.quality` — ``label_quality(...) -> QualityReport``: per label P@1 /
  mAP@k worst first, the top-1 confusion matrix, failed queries of the worst labels.
* :mod:`lookalike.evaluation.report` — ``quality_html`` / ``write_quality_html`` (one
  self-contained HTML file, PNGs embedded) and ``figure_png`` (one figure's PNG bytes).
"""
from __future__ import annotations

from lookalike.evaluation.metrics import (
    METRICS,
    average_precision_at_k,
    metrics_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from lookalike.evaluation.retrieval import EvalReport, evaluate_vectors, label_key, nearest_neighbours

__all__ = ["METRICS", "EvalReport", "average_precision_at_k", "evaluate_vectors", "label_key", "metrics_at_k",
           "ndcg_at_k", "nearest_neighbours", "precision_at_k", "recall_at_k"]
