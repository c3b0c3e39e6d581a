"""Leave-one-out retrieval evaluation: how every encoder is compared.

Each labelled item is used once as a query against all the other labelled items (it never retrieves
itself; neighbours from :func:`lookalike.index.distances.exact_knn`); an item is relevant to a query
when its label equals the query's label (a tuple label — e.g. ``(type, colour)`` — must match in
every part). The metrics (P@k, R@k, mAP@k, NDCG@k) are :mod:`lookalike.evaluation.metrics`.
Queries with no other relevant item in the gallery are skipped (R@k and AP are undefined for them)
and counted in ``n_skipped``.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from lookalike.evaluation.metrics import METRICS, metrics_at_k
from lookalike.index.distances import exact_knn
from lookalike.index.faiss_backend import KINDS, FaissIndex
from lookalike.search.expansion import Expansion, expanded_neighbours


# -- nearest neighbours ----------------------------------------------------------------------
def nearest_neighbours(vectors: np.ndarray, k: int, metric: str = "cosine",
                       pool: np.ndarray | None = None) -> np.ndarray:
    """Exact leave-one-out kNN: row q holds the positions (into ``vectors``) of the k items closest
    to item ``pool[q]`` among ``pool``, never the item itself. Padded with -1 when the pool is small.
    Any metric of :mod:`lookalike.index.distances` (``exact_knn``)."""
    pool = np.arange(len(vectors)) if pool is None else np.asarray(pool, dtype=np.int64)
    gallery = np.asarray(vectors)[pool]
    _, local = exact_knn(gallery, gallery, k, metric, exclude=np.arange(len(pool)))
    return np.where(local >= 0, pool[np.clip(local, 0, None)], -1) if len(pool) else local


def parse_index_spec(spec: str) -> tuple[str, dict[str, int]]:
    """``"reduced"`` or ``"reduced,rerank=1,pca_dim=384"`` -> (faiss kind, integer parameters);
    ValueError naming the kinds for an unknown one or a malformed parameter."""
    kind, *pairs = [part.strip() for part in spec.split(",") if part.strip()] or [""]
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose from {', '.join(KINDS)}")
    params = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in ("pca_dim", "rerank", "ef_search", "nprobe", "refine", "hnsw_m", "exact_rerank", "coarse_dim") \
                or not value.isdigit():
            raise ValueError(f"bad index parameter {pair!r}: use pca_dim=, rerank=, ef_search=, nprobe=, "
                             "refine=, hnsw_m=, exact_rerank= or coarse_dim= with a whole number")
        params[key] = int(value)
    return kind, params


def index_neighbours(vectors: np.ndarray, k: int, metric: str = "cosine", pool: np.ndarray | None = None,
                     index: str = "reduced") -> np.ndarray:
    """As :func:`nearest_neighbours`, but ranked by a faiss index of spec ``index`` (a kind from
    ``lookalike.index.faiss_backend.KINDS``, optionally with ``,key=value`` parameters — see
    :func:`parse_index_spec`) built over the pool: what a catalog of that index would return, so
    ``evaluate --index reduced`` measures the retrieval quality an approximate or reduced index
    costs. The query's own id is dropped from its hits."""
    kind, params = parse_index_spec(index)
    pool = np.arange(len(vectors)) if pool is None else np.asarray(pool, dtype=np.int64)
    gallery = np.asarray(vectors, np.float32)[pool]
    built = FaissIndex(gallery.shape[1], metric, kind=kind, **params)
    built.add(np.arange(len(pool)), gallery)
    _, found = built.search(gallery, min(k + 1, len(pool)))
    out = np.full((len(pool), k), -1, np.int64)
    for q, row in enumerate(found):
        hits = row[(row >= 0) & (row != q)][:k]
        out[q, :len(hits)] = pool[hits]
    return out


# -- the report --------------------------------------------------------------------------------
@dataclass
class EvalReport:
    overall: dict[str, float]
    per_label: dict[str, dict[str, float]]
    n_queries: int
    ks: tuple[int, ...]
    metric: str = "cosine"
    n_skipped: int = 0
    n_items: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"overall": self.overall, "per_label": self.per_label, "n_queries": self.n_queries,
                "n_skipped": self.n_skipped, "n_items": self.n_items, "ks": list(self.ks),
                "metric": self.metric, **self.extra}

    def columns(self) -> list[str]:
        return [f"{m}@{k}" for k in self.ks for m in METRICS]

    def to_table(self, title: str = "retrieval evaluation", per_label: bool = True):
        """A rich Table: one row for all queries, then one per label value."""
        from rich.table import Table

        table = Table(title=title, caption=f"{self.n_queries} queries, leave-one-out, {self.metric}"
                      + (f", re-ranked {self.extra['expansion']}" if self.extra.get("expansion") else "")
                      + (f"; {self.n_skipped} skipped (no other relevant item)" if self.n_skipped else ""))
        table.add_column("label")
        table.add_column("n", justify="right")
        for col in self.columns():
            table.add_column(col, justify="right")
        table.add_row("[bold]all[/]", str(self.n_queries), *(f"{self.overall[c]:.3f}" for c in self.columns()),
                      end_section=per_label and bool(self.per_label))
        if per_label:
            for label, values in self.per_label.items():
                table.add_row(label, str(int(values["n"])), *(f"{values[c]:.3f}" for c in self.columns()))
        return table


def label_key(label) -> str | None:
    """How a label (or tuple of labels) is shown: "shirt" or "shirt / blue"."""
    if label is None:
        return None
    if isinstance(label, tuple):
        return " / ".join(str(part) for part in label)
    return str(label)


def _is_missing(label) -> bool:
    if label is None:
        return True
    if isinstance(label, float) and np.isnan(label):
        return True
    return isinstance(label, tuple) and any(_is_missing(part) for part in label)


def evaluate_vectors(vectors: np.ndarray, labels: Sequence[Hashable], ks: Sequence[int] = (1, 5, 10),
                     metric: str = "cosine", subset: Sequence[int] | np.ndarray | None = None,
                     neighbours: np.ndarray | None = None,
                     expansion: "Expansion | str | None" = None, keep: int = 0,
                     index: str | None = None) -> EvalReport:
    """Leave-one-out retrieval evaluation of ``vectors`` (n, d) against ``labels`` (n hashables).

    Items whose label is None (or a tuple containing None) are neither queries nor gallery.
    ``subset`` restricts queries and gallery to those positions (held-out evaluation).
    ``neighbours`` may pass a precomputed :func:`nearest_neighbours` result over the same pool.
    ``expansion`` ranks with αQE/DBA re-ranking (:mod:`lookalike.search.expansion`, e.g.
    ``"qe=2,dba=5"``), exactly as search applies it and without the query leaking into the
    augmented gallery (:func:`~lookalike.search.expansion.expanded_neighbours`; ``keep`` trailing
    values, a fused colour part, are left out of the re-ranking as search leaves them).
    ``index`` ranks through a faiss index of that spec instead (:func:`index_neighbours`).
    """
    vectors = np.asarray(vectors)
    if len(vectors) != len(labels):
        raise ValueError(f"{len(vectors)} vectors but {len(labels)} labels")
    # rows of a 2-D label array or lists become tuples (hashable; all parts must match)
    labels = [tuple(label) if isinstance(label, (list, np.ndarray)) else label for label in labels]
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    candidates = np.arange(len(labels)) if subset is None else np.unique(np.asarray(subset, dtype=np.int64))
    pool = np.array([i for i in candidates if not _is_missing(labels[i])], dtype=np.int64)
    if len(pool) == 0:
        raise ValueError("no labelled items to evaluate")

    codes, label_ids = _encode_labels([labels[i] for i in pool])
    counts = np.bincount(label_ids)
    n_relevant = counts[label_ids] - 1
    setting = Expansion.parse(expansion)
    if neighbours is None and index:
        neighbours = index_neighbours(vectors, max(ks), metric, pool, index)
    elif neighbours is None and setting.active:
        neighbours = expanded_neighbours(vectors, max(ks), setting, pool, metric, keep=keep)
    elif neighbours is None:
        neighbours = nearest_neighbours(vectors, max(ks), metric, pool)
    position = np.full(len(vectors), -1, np.int64)
    position[pool] = np.arange(len(pool))
    hit_ids = np.where(neighbours >= 0, label_ids[position[np.clip(neighbours, 0, None)]], -1)
    relevance = (hit_ids == label_ids[:, None]).astype(np.float64)

    keep = n_relevant > 0
    per_query = metrics_at_k(relevance[keep], n_relevant[keep], ks)
    overall = {name: float(values.mean()) if len(values) else 0.0 for name, values in per_query.items()}
    per_label: dict[str, dict[str, float]] = {}
    kept_ids = label_ids[keep]
    for code in sorted(set(kept_ids.tolist()), key=lambda c: (-counts[c], label_key(codes[c]))):
        mask = kept_ids == code
        row = {name: float(values[mask].mean()) for name, values in per_query.items()}
        row["n"] = int(mask.sum())
        per_label[label_key(codes[code])] = row
    return EvalReport(overall=overall, per_label=per_label, n_queries=int(keep.sum()), ks=ks,
                      metric=metric, n_skipped=int((~keep).sum()), n_items=len(pool),
                      extra={"expansion": str(setting)} if setting.active else {})


def _encode_labels(labels: list) -> tuple[list, np.ndarray]:
    index: dict = defaultdict(lambda: len(index))
    ids = np.array([index[label] for label in labels], dtype=np.int64)
    codes = [None] * len(index)
    for label, code in index.items():
        codes[code] = label
    return codes, ids
