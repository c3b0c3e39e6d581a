"""Which unsupervised criterion picks a k that matches the labels? For every k, k-means on all
vectors of a catalog, then silhouette (cosine), Calinski-Harabasz and Davies-Bouldin next to NMI
and ARI with the labels. The table in docs/explore.md ("Choosing k") came from this script.

    LOOKALIKE_HOME=... python -m lookalike.bench.studies.k_criteria --catalog clothing [--k-max 20]
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from sklearn import metrics

from lookalike import Catalog
from lookalike.explore.clusters import kmeans, prepare, silhouette


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--label", default="label")
    parser.add_argument("--k-min", type=int, default=2)
    parser.add_argument("--k-max", type=int, default=20)
    args = parser.parse_args()
    cat = Catalog.open(args.catalog)
    encoder, _, matrix, metric = cat.vectors_with_metric(args.encoder)
    labels = cat.labels(args.label, encoder)
    keep = [i for i, lab in enumerate(labels) if lab not in (None, "")]
    vectors = prepare(matrix, metric)
    table = Table(title=f"{cat.name} · {encoder}: criteria by k (higher silhouette/CH, lower DB = better)")
    for name in ("k", "silhouette", "Calinski-Harabasz", "Davies-Bouldin", "NMI", "ARI"):
        table.add_column(name, justify="right")
    for k in range(args.k_min, args.k_max + 1):
        assignments, _, _ = kmeans(vectors, k, n_init=2)
        y = [labels[i] for i in keep]
        table.add_row(str(k), f"{silhouette(vectors, assignments, metric, sample=len(vectors)):.3f}",
                      f"{metrics.calinski_harabasz_score(vectors, assignments):.1f}",
                      f"{metrics.davies_bouldin_score(vectors, assignments):.3f}",
                      f"{metrics.normalized_mutual_info_score(y, assignments[keep]):.3f}",
                      f"{metrics.adjusted_rand_score(y, assignments[keep]):.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
