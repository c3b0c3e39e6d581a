"""``lookalike cluster``: k-means on a catalog's embeddings, agreement with labels, and the speed and
recall of cluster-restricted search."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, fail_on, open_catalog, out, print_json
from lookalike.explore.cluster_search import cluster_report, search_item
from lookalike.explore.clusters import K_CRITERIA


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
    k: str = typer.Option("auto", "--k", help="Number of clusters, or 'auto' (chosen over --k-min..--k-max by --k-criterion)."),
    criterion: str = typer.Option("silhouette", "--k-criterion", help="How --k auto chooses, in a PCA-whitened space: silhouette (best mean silhouette), elbow (knee of inertia) or calinski-harabasz."),
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
    cat = open_catalog(catalog, home)
    k_value, probes = _parse_k(k), _parse_probes(probe)
    if k_max < k_min:
        fail("--k-max must be at least --k-min")
    if criterion not in K_CRITERIA:
        fail(f"--k-criterion must be one of {', '.join(K_CRITERIA)}, got {criterion!r}")
    try:
        report, report_path = cluster_report(cat, encoder, k_value, range(k_min, k_max + 1), label, probes, queries,
                                             seed, status=console.status, criterion=criterion)
    except (LookupError, ValueError) as exc:
        fail_on(exc)
    if json_out:
        print_json(report)
        return
    _print(report, report_path)


def _print(report: dict, report_path: Path) -> None:
    sil = report["silhouette"]
    out.print(f"[bold]{report['items']} items · {report['encoder']} · k = {report['k']}[/] "
              f"({report['chosen_by']}), silhouette {sil:.3f}" if sil is not None else f"k = {report['k']}")
    if report["k_scores"]:
        table = Table(title=f"choosing k (k-means in a PCA-whitened space, on a sample; chosen by {report['chosen_by']})")
        for name in ("k", "inertia", "silhouette", "Calinski-Harabasz"):
            table.add_column(name, justify="right")
        for k, row in report["k_scores"].items():
            mark = "[bold]" if int(k) == report["k"] else ""
            table.add_row(f"{mark}{k}", *(f"{row.get(c, float('nan')):.3f}" for c in ("inertia", "silhouette", "calinski_harabasz")))
        out.print(table)
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
    cat = open_catalog(catalog, home)
    try:
        found = search_item(cat, item, k, probe, encoder)
    except LookupError as exc:
        fail(str(exc))
    doc = found.to_dict()
    if json_out:
        print_json(doc)
        return
    table = Table(title=f"{item} (cluster {doc['cluster']}) · probe {doc['probe']} of {doc['k_clusters']} clusters")
    for name in ("rank", "id", "score", "label", "cluster"):
        table.add_column(name)
    for r in doc["results"]:
        table.add_row(str(r["rank"]), r["id"], f"{r['score']:.3f}", str(r["label"] or ""), str(r["cluster"]))
    out.print(table)
    out.print(f"scanned {doc['scanned']} of {doc['items']} items; recall@{k} vs full search {doc['recall_vs_full']:.2f}; "
              f"{doc['restricted_ms']:.2f} ms vs {doc['full_ms']:.2f} ms (one query, not a benchmark: see --probe on "
              "`lookalike cluster`)")
