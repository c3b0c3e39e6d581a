"""``lookalike cluster``: k-means on a catalog's embeddings, agreement with labels, and the speed and
recall of cluster-restricted search."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, open_catalog, out, print_json


def _parse_k(value: str) -> int | str:
    if value.strip().lower() == "auto":
        return "auto"
    try:
        k = int(value)
    except ValueError:
        fail(f"--k expects a number or 'auto', got {value!r}")
    if k < 1:
        fail("--k must be at least 1")
    return k


def _parse_probes(value: Optional[str]) -> list[int]:
    if not value:
        return []
    try:
        probes = sorted({int(p) for p in value.split(",") if p.strip()})
    except ValueError:
        fail(f"--probe expects numbers separated by commas, got {value!r}")
    if not probes or probes[0] < 1:
        fail("--probe values must be at least 1")
    return probes


@app.command()
def cluster(
    catalog: str = CatalogOption,
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", help="Encoder whose vectors to cluster (default: the catalog's)."),
    k: str = typer.Option("auto", "--k", help="Number of clusters, or 'auto' (best silhouette over --k-min..--k-max)."),
    k_min: int = typer.Option(2, "--k-min", min=2, help="Smallest k tried by --k auto."),
    k_max: int = typer.Option(20, "--k-max", min=2, help="Largest k tried by --k auto."),
    label: Optional[str] = typer.Option(None, "--label", help="Column to compare clusters with (e.g. label): purity, NMI, ARI, P/R/F1, confusion PNG."),
    probe: Optional[str] = typer.Option(None, "--probe", help="Measure cluster-restricted search probing N clusters (e.g. 1,2,4) against full search."),
    queries: int = typer.Option(1000, "--queries", min=1, help="Leave-one-out queries for the --probe measurement."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    home: Optional[Path] = HomeOption,
):
    """Cluster a catalog (cluster ids are stored per item), compare with labels, time restricted search."""
    from lookalike.explore.cluster_search import compare_probes
    from lookalike.explore.clusters import (catalog_vectors, confusion_png, clusters_dir, encoder_key, label_agreement,
                                      cluster_and_save)

    cat = open_catalog(catalog, home)
    k_value, probes = _parse_k(k), _parse_probes(probe)
    if k_max < k_min:
        fail("--k-max must be at least --k-min")
    try:
        spec, ids, matrix, metric = catalog_vectors(cat, encoder)
        if isinstance(k_value, int) and k_value > len(ids):
            fail(f"--k {k_value} is more than the {len(ids)} items with vectors")
        with console.status(f"clustering {len(ids)} vectors ({spec})..."):
            clusters = cluster_and_save(cat.dir, spec, ids, matrix, metric, k_value, range(k_min, k_max + 1),
                                         seed, None)
        labels = cat.labels(label, spec) if label else None
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    stem = f"{encoder_key(spec)}-k{clusters.k}"
    report = {"catalog": cat.name, "encoder": spec, "items": len(ids), "k": clusters.k, "chosen_by":
              "silhouette" if k_value == "auto" else "user", "silhouette": clusters.silhouette,
              "k_scores": clusters.k_scores, "sizes": clusters.sizes(),
              "clusters_file": str(clusters_dir(cat.dir) / f"{stem}.json")}
    if labels is not None:
        if all(v in (None, "") for v in labels):
            fail(f"no item has a value in column {label!r}")
        agreement = label_agreement(labels, clusters.assignments)
        report["agreement"] = agreement.to_dict()
        report["confusion_png"] = str(confusion_png(agreement, clusters_dir(cat.dir) / f"{stem}-confusion.png",
                                                    f"{cat.name} · {spec} · k={clusters.k}: purity {agreement.purity:.3f}, "
                                                    f"NMI {agreement.nmi:.3f}, ARI {agreement.ari:.3f}"))
    if probes:
        with console.status(f"timing full vs cluster-restricted search ({min(queries, len(ids))} queries)..."):
            rows = compare_probes(matrix, clusters.centroids, clusters.assignments, probes, metric, k=10,
                                  labels=labels, n_queries=queries, seed=seed)
        report["restricted_search"] = [r.to_dict() for r in rows]
    report_path = clusters_dir(cat.dir) / f"{stem}-report.json"
    report_path.write_text(json.dumps(report, indent=2, default=str))
    if json_out:
        print_json(report)
        return
    _print(report, report_path)


def _print(report: dict, report_path: Path) -> None:
    sil = report["silhouette"]
    out.print(f"[bold]{report['items']} items · {report['encoder']} · k = {report['k']}[/] "
              f"({report['chosen_by']}), silhouette {sil:.3f}" if sil is not None else f"k = {report['k']}")
    if report["k_scores"]:
        out.print("silhouette by k: " + ", ".join(f"{k}: {v:.3f}" for k, v in report["k_scores"].items()))
    out.print("cluster sizes: " + ", ".join(f"{c}: {n}" for c, n in report["sizes"].items()))
    if "agreement" in report:
        a = report["agreement"]
        summary = Table(title="clusters vs labels (accuracy: each cluster mapped to its majority label)")
        for name in ("items", "purity", "NMI", "ARI", "homog.", "compl.", "accuracy"):
            summary.add_column(name, justify="right")
        summary.add_row(str(a["n"]), *(f"{a[key]:.3f}" for key in ("purity", "nmi", "ari", "homogeneity",
                                                                      "completeness", "accuracy_after_mapping")))
        out.print(summary)
        per = Table(title="per class, after mapping each cluster to its majority label")
        for name in ("label", "precision", "recall", "F1", "support"):
            per.add_column(name, justify="right" if name != "label" else "left")
        for lab, m in a["per_class"].items():
            per.add_row(lab, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
        out.print(per)
        out.print(f"confusion matrix: {report['confusion_png']}")
    if "restricted_search" in report:
        table = Table(title="cluster-restricted vs full search (leave-one-out top 10; recall vs full search's "
                            "top 10; ms per query; P@10 = same-label precision)")
        for name in ("probe", "scanned", "recall@10", "full ms", "restr. ms", "speed-up", "P@10 full", "P@10 restr."):
            table.add_column(name, justify="right")
        for r in report["restricted_search"]:
            table.add_row(str(r["probe"]), f"{r['scanned_share']:.1%}", f"{r['recall_at_k']:.3f}", f"{r['full_ms']:.3f}",
                          f"{r['restricted_ms']:.3f}", f"{r['speedup']:.2f}x", _fmt(r["precision_full"]),
                          _fmt(r["precision_restricted"]))
        out.print(table)
    out.print(f"clusters: {report['clusters_file']}\nreport: {report_path}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command("cluster-search")
def cluster_search(
    catalog: str = CatalogOption,
    item: str = typer.Option(..., "--item", "-i", help="Query item id."),
    k: int = typer.Option(10, "-k", min=1, max=1000, help="Results to return."),
    probe: int = typer.Option(1, "--probe", min=1, help="Search the items of this many nearest clusters."),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e"),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Search only the --probe nearest clusters (stored by `lookalike cluster`), next to full search."""
    import time

    import numpy as np

    from lookalike.explore.cluster_search import ClusterSearch, FullSearch
    from lookalike.explore.clusters import catalog_vectors, load_clusters
    from lookalike.search import distance_to_score

    cat = open_catalog(catalog, home)
    try:
        spec, ids, matrix, metric = catalog_vectors(cat, encoder)
    except LookupError as exc:
        fail(str(exc))
    clusters = load_clusters(cat, spec)
    if clusters is None:
        fail(f"no clusters stored for {spec!r}; run `lookalike cluster --catalog {cat.name}` first")
    by_id = clusters.by_id()
    if any(i not in by_id for i in ids):
        fail(f"items were indexed after the last clustering; re-run `lookalike cluster --catalog {cat.name}`")
    if item not in by_id:
        fail(f"unknown item id {item!r} (or it has no vector for {spec!r})")
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
    results = [{"rank": n, "id": ids[p], "score": float(distance_to_score(np.array([d]), metric)[0]),
                "label": labels[p], "cluster": by_id[ids[p]]} for n, (d, p) in enumerate(keep, start=1)]
    doc = {"item": item, "cluster": by_id[item], "k_clusters": clusters.k, "probe": min(probe, clusters.k),
           "scanned": int(restricted.scanned(query, probe)[0]), "items": len(ids),
           "recall_vs_full": len({p for _, p in keep} & set(full_top)) / max(len(full_top), 1),
           "restricted_ms": restricted_ms, "full_ms": full_ms, "results": results}
    if json_out:
        print_json(doc)
        return
    table = Table(title=f"{item} (cluster {doc['cluster']}) · probe {doc['probe']} of {clusters.k} clusters")
    for name in ("rank", "id", "score", "label", "cluster"):
        table.add_column(name)
    for r in results:
        table.add_row(str(r["rank"]), r["id"], f"{r['score']:.3f}", str(r["label"] or ""), str(r["cluster"]))
    out.print(table)
    out.print(f"scanned {doc['scanned']} of {doc['items']} items; recall@{k} vs full search {doc['recall_vs_full']:.2f}; "
              f"{restricted_ms:.2f} ms vs {full_ms:.2f} ms (one query, not a benchmark: see --probe on `lookalike cluster`)")
