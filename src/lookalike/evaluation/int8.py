"""Is the int8 model good enough for this catalog? The quality check behind the automatic runtime
choice of ``lookalike index`` (:meth:`lookalike.catalog.Catalog.index`).

The same sample of the catalog's own images is embedded by the fp32 and the calibrated int8 model;
both are scored by leave-one-out mAP@10 over the sample (:func:`lookalike.evaluation.retrieval.
evaluate_vectors`), and int8 is chosen when it loses at most ``max_loss`` (default
:data:`INT8_MAX_LOSS` = 0.005, issue #17's bar):

* ``protocol="labels"`` when enough sampled items carry a label: relevance = same label.
* ``protocol="fp32-clusters"`` otherwise (no labels): relevance = same k-means cluster of the fp32
  vectors (k = √(n/2), faiss k-means, fixed seed), a label-free stand-in for "same kind of product"
  on the scale of mAP@10. The clusters come from the fp32 vectors, so the check leans towards fp32:
  int8 has to be as good on fp32's own grouping, which is the safe side.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Hashable, Sequence

import faiss
import numpy as np

from lookalike.evaluation.retrieval import evaluate_vectors

INT8_MAX_LOSS = 0.005   # mAP@10 the int8 model may lose against fp32 and still be chosen
MIN_LABELLED = 0.8      # share of sampled items with a label for the label protocol


@dataclass
class Int8Check:
    """Outcome of :func:`check_int8`: ``chosen`` when ``loss = map_fp32 - map_int8 <= max_loss``."""
    chosen: bool
    protocol: str            # "labels" | "fp32-clusters"
    n_items: int
    map_fp32: float
    map_int8: float
    loss: float
    max_loss: float

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        verdict = "chosen" if self.chosen else "refused"
        return (f"int8 {verdict}: mAP@10 {self.map_int8:.4f} vs fp32 {self.map_fp32:.4f} (loss {self.loss:+.4f}, "
                f"bar {self.max_loss}) on {self.n_items} of the catalog's images, {self.protocol}")


def pseudo_labels(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n,) int cluster ids of ``vectors`` (n, d) by k-means with k = max(2, round(√(n/2)))."""
    x = np.ascontiguousarray(vectors, np.float32)
    k = max(2, int(round(np.sqrt(len(x) / 2))))
    kmeans = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, verbose=False, min_points_per_centroid=1)
    kmeans.train(x)
    return kmeans.index.search(x, 1)[1][:, 0]


def check_int8(fp32: np.ndarray, int8: np.ndarray, labels: Sequence[Hashable | None] | None = None,
               metric: str = "cosine", max_loss: float | None = None) -> Int8Check:
    """Compare fp32 and int8 vectors (n, d) of the same n images by leave-one-out mAP@10 (see the
    module docstring for the two protocols). ``labels`` (n values, None = unlabelled) are used when
    at least 80% of the items have one and some label occurs twice. ``max_loss`` defaults to
    :data:`INT8_MAX_LOSS`. ValueError for fewer than 4 items or mismatched shapes."""
    max_loss = INT8_MAX_LOSS if max_loss is None else max_loss
    fp32, int8 = np.asarray(fp32, np.float32), np.asarray(int8, np.float32)
    if fp32.shape != int8.shape or len(fp32) < 4:
        raise ValueError(f"need the same n >= 4 images from both models, got {fp32.shape} and {int8.shape}")
    protocol, relevance = "fp32-clusters", None
    if labels is not None and len(labels) == len(fp32):
        present = [label for label in labels if label not in (None, "")]
        if len(present) >= MIN_LABELLED * len(labels) and len(set(present)) < len(present):
            protocol, relevance = "labels", [None if label in (None, "") else label for label in labels]
    if relevance is None:
        relevance = pseudo_labels(fp32).tolist()
    map_fp32 = evaluate_vectors(fp32, relevance, (10,), metric).overall["mAP@10"]
    map_int8 = evaluate_vectors(int8, relevance, (10,), metric).overall["mAP@10"]
    loss = float(map_fp32 - map_int8)
    return Int8Check(loss <= max_loss + 1e-12, protocol, len(fp32), float(map_fp32), float(map_int8), loss,
                     float(max_loss))
