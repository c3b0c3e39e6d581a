"""Which rule for `cluster --k auto` picks a k that matches the labels? For one catalog (or a subset:
``--where split=train``, ``--labels a,b,c``) or generated blobs with a known k: the per-k table that
:func:`lookalike.explore.clusters.choose_k` scores (k-means in a PCA-whitened space on a 2,000-item
sample: inertia, silhouette, Calinski-Harabasz), the k each criterion picks, and the NMI with the
labels of the final k-means (all items, as `lookalike cluster` fits it) at every k. The table in
docs/explore.md ("Choosing k") came from this script.

    LOOKALIKE_HOME=... python -m lookalike.bench.studies.k_criteria --catalog clothing [--where split=train]
    python -m lookalike.bench.studies.k_criteria --blobs 6 --dim 512
    ... --n-init 2 --repeats 1 --final-n-init 4      # the k-means settings before N_INIT / K_REPEATS
    ... --where split=train --invert-where          # every item whose split is not train
"""
from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn import metrics

from lookalike import Catalog
from lookalike.explore.clusters import K_CRITERIA, K_REPEATS, N_INIT, choose_k, kmeans, kneedle, prepare


def blobs(k: int, dim: int, per: int = 60, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``k`` Gaussian blobs of ``per`` unit-normalised points in ``dim`` dimensions, centres spread so
    the groups are separated (as a cosine encoder's vectors would be)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * (6.0 if dim <= 64 else 2.0)
    x = np.concatenate([c + rng.normal(size=(per, dim)) for c in centres]).astype(np.float32)
    return prepare(x, "cosine"), [str(i) for i in np.repeat(np.arange(k), per)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--catalog")
    source.add_argument("--blobs", type=int, help="generated blobs with this many groups")
    parser.add_argument("--dim", type=int, default=512, help="dimensions of the generated blobs")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--label", default="label")
    parser.add_argument("--where", default=None, help="COLUMN=VALUE: only these items (e.g. split=train)")
    parser.add_argument("--labels", default=None, help="comma-separated: only items with these labels")
    parser.add_argument("--k-min", type=int, default=2)
    parser.add_argument("--k-max", type=int, default=20)
    parser.add_argument("--invert-where", action="store_true", help="keep the items --where does NOT select")
    parser.add_argument("--n-init", type=int, default=N_INIT, help="k-means restarts while choosing k")
    parser.add_argument("--repeats", type=int, default=K_REPEATS, help="seeds each criterion is averaged over")
    parser.add_argument("--final-n-init", type=int, default=N_INIT, help="k-means restarts of the final clustering")
    parser.add_argument("--nmi", choices=("all", "picked"), default="all",
                        help="NMI of the final k-means at every k, or only at k = 10 and the picked ones (faster)")
    args = parser.parse_args()
    if args.catalog:
        cat = Catalog.open(args.catalog)
        encoder, _, matrix, metric = cat.vectors_with_metric(args.encoder)
        labels = cat.labels(args.label, encoder)
        keep = np.array([lab not in (None, "") for lab in labels])
        if args.where:
            column, value = args.where.split("=", 1)
            keep &= np.array([(v == value) != args.invert_where for v in cat.labels(column, encoder)])
        if args.labels:
            keep &= np.isin(np.array(labels, dtype=object), args.labels.split(","))
        vectors = prepare(matrix, metric)[keep]
        labels = [lab for lab, kept in zip(labels, keep) if kept]
        title = f"{cat.name} · {encoder}" + (f" · {'not ' if args.invert_where else ''}{args.where}" if args.where else "") + (f" · {args.labels}" if args.labels else "")
    else:
        vectors, labels = blobs(args.blobs, args.dim)
        title = f"{args.blobs} blobs in {args.dim} dimensions"
    ks = list(range(args.k_min, args.k_max + 1))
    _, scores = choose_k(vectors, ks, n_init=args.n_init, repeats=args.repeats)
    picks = {"silhouette": max(ks, key=lambda k: scores[k]["silhouette"]),
             "elbow": kneedle(ks, [scores[k]["inertia"] for k in ks]),
             "calinski-harabasz": max(ks, key=lambda k: scores[k]["calinski_harabasz"])}
    measured = ks if args.nmi == "all" else sorted({*picks.values(), 10} & set(ks))
    nmi = {k: metrics.normalized_mutual_info_score(labels, kmeans(vectors, k, n_init=args.final_n_init)[0])
           for k in measured}
    assert set(picks) == set(K_CRITERIA)
    table = Table(title=f"{title}: {len(vectors)} items, {len(set(labels))} labels; k-means restarts "
                        f"{args.n_init} x {args.repeats} seeds (choice), {args.final_n_init} (final)")
    for name in ("k", "inertia", "silhouette", "Calinski-Harabasz", "NMI (final k-means)", "picked by"):
        table.add_column(name, justify="right")
    for k in ks:
        table.add_row(str(k), f"{scores[k]['inertia']:.0f}", f"{scores[k]['silhouette']:.3f}",
                      f"{scores[k]['calinski_harabasz']:.1f}", f"{nmi[k]:.3f}" if k in nmi else "—",
                      ", ".join(c for c, chosen in picks.items() if chosen == k))
    console = Console()
    console.print(table)
    if 10 in nmi:
        console.print(f"NMI at k=10: {nmi[10]:.3f}; " + "; ".join(f"{c}: k={k}, NMI {nmi[k]:.3f}" for c, k in picks.items()))


if __name__ == "__main__":
    main()
