"""Product-level leave-one-out evaluation: what a shopper sees with ``search --group-by``.

Every labelled item is a query. Its whole product (every item with its product value) leaves the
gallery — a shop never answers "more like this" with the same product — and the remaining items,
ranked by similarity, are folded to products: a product appears once, at the rank of its best
image, exactly as :func:`lookalike.search.grouping.group_hits` shows it. A product is relevant when
its label equals the query's label; a product's label is the most common label of its images
(ties: the first seen). ``n_relevant`` counts the other products with the query's label, so R@k
and mAP@k are over products. Items without a product value are products of their own; queries
with no relevant product are skipped (``n_skipped``). Metrics: :mod:`lookalike.evaluation.metrics`.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Hashable, Sequence

import numpy as np

from lookalike.evaluation.metrics import metrics_at_k
from lookalike.evaluation.retrieval import EvalReport, _encode_labels, _is_missing, label_key, nearest_neighbours


def product_ids(products: Sequence[Hashable | None]) -> np.ndarray:
    """(n,) int64 product codes: equal values share a code; None / "" get one code each."""
    codes: dict = {}
    out = np.empty(len(products), np.int64)
    for i, value in enumerate(products):
        key = ("item", i) if value is None or value == "" else ("value", value)
        out[i] = codes.setdefault(key, len(codes))
    return out


def fold_to_products(neighbours: np.ndarray, product: np.ndarray, query_product: np.ndarray,
                     depth: int) -> np.ndarray:
    """Item rankings (q, m) of positions (-1 = padding) -> product rankings (q, depth): each
    product's first (best) position kept, the query's own product dropped; padded with -1."""
    out = np.full((len(neighbours), depth), -1, np.int64)
    for q, row in enumerate(neighbours):
        seen = {int(query_product[q])}
        n = 0
        for pos in row:
            if pos < 0 or n == depth:
                break
            p = int(product[pos])
            if p not in seen:
                seen.add(p)
                out[q, n] = pos
                n += 1
    return out


def evaluate_products(vectors: np.ndarray, labels: Sequence[Hashable], products: Sequence[Hashable | None],
                      ks: Sequence[int] = (1, 5, 10), metric: str = "cosine",
                      subset: Sequence[int] | np.ndarray | None = None,
                      neighbours_fn: Callable[[int, np.ndarray], np.ndarray] | None = None) -> EvalReport:
    """Product-level leave-one-out evaluation (module docstring) of ``vectors`` (n, d) with
    ``labels`` and ``products`` (n each). ``subset`` restricts queries and gallery to those
    positions. ``neighbours_fn(depth, pool)`` may replace the exact kNN (e.g. with re-ranking);
    it must return (len(pool), depth) positions into ``vectors`` without the query itself.
    ValueError for bad ``ks``, mismatched lengths or no labelled item."""
    vectors = np.asarray(vectors)
    if not (len(vectors) == len(labels) == len(products)):
        raise ValueError(f"{len(vectors)} vectors, {len(labels)} labels and {len(products)} products")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    labels = [tuple(v) if isinstance(v, (list, np.ndarray)) else v for v in labels]
    candidates = np.arange(len(labels)) if subset is None else np.unique(np.asarray(subset, dtype=np.int64))
    pool = np.array([i for i in candidates if not _is_missing(labels[i])], dtype=np.int64)
    if len(pool) == 0:
        raise ValueError("no labelled items to evaluate")
    product = product_ids(products)
    codes, label_ids = _encode_labels([labels[i] for i in pool])
    item_label = np.full(len(vectors), -1, np.int64)
    item_label[pool] = label_ids
    # each product's label: the most common label of its images in the pool
    by_product: dict[int, Counter] = {}
    for i in pool:
        by_product.setdefault(int(product[i]), Counter())[int(item_label[i])] += 1
    product_label = {p: counts.most_common(1)[0][0] for p, counts in by_product.items()}
    products_with = Counter(product_label.values())
    query_product = product[pool]
    n_relevant = np.array([products_with[int(item_label[i])] - (product_label[int(product[i])] == item_label[i])
                           for i in pool], dtype=np.int64)
    # enough item neighbours to fill max(ks) other products: each product holds at most `largest` items
    largest = max(Counter(product[pool].tolist()).values())
    depth = min(len(pool) - 1, max(ks) * largest + largest)
    if depth < 1:
        raise ValueError("need at least two labelled items")
    neighbours = (neighbours_fn(depth, pool) if neighbours_fn else nearest_neighbours(vectors, depth, metric, pool))
    ranked = fold_to_products(neighbours, product, query_product, max(ks))
    ranked_label = np.array([[product_label[int(product[p])] if p >= 0 else -1 for p in row] for row in ranked],
                            dtype=np.int64).reshape(len(pool), max(ks))
    relevance = (ranked_label == label_ids[:, None]).astype(np.float64)
    keep = n_relevant > 0
    per_query = metrics_at_k(relevance[keep], n_relevant[keep], ks)
    overall = {name: float(values.mean()) if len(values) else 0.0 for name, values in per_query.items()}
    per_label: dict[str, dict[str, float]] = {}
    kept_ids = label_ids[keep]
    counts = np.bincount(label_ids)
    for code in sorted(set(kept_ids.tolist()), key=lambda c: (-counts[c], label_key(codes[c]))):
        mask = kept_ids == code
        row = {name: float(values[mask].mean()) for name, values in per_query.items()}
        row["n"] = int(mask.sum())
        per_label[label_key(codes[code])] = row
    return EvalReport(overall=overall, per_label=per_label, n_queries=int(keep.sum()), ks=ks, metric=metric,
                      n_skipped=int((~keep).sum()), n_items=len(pool),
                      extra={"level": "product", "n_products": len(by_product)})
