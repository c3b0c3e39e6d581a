"""``lookalike goes-with``: items of another category that go with an item, and how well each
method keeps colour (or finds known outfit partners with --pairs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress
from rich.table import Table

from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, fail_on, open_catalog, out, print_json
from lookalike.explore import goes_with as gw


@app.command("goes-with")
def goes_with(
    catalog: str = CatalogOption,
    item: Optional[str] = typer.Option(None, "--item", "-i", help="Query item id."),
    category: Optional[str] = typer.Option(None, "--category", help="Target category (a value of --category-column, or cluster-N)."),
    k: int = typer.Option(10, "-k", min=1, max=500, help="Results to return."),
    method: str = typer.Option("centroid", "--method", "-m", help="centroid (appchemy), colour, or learned (needs --pairs)."),
    category_column: Optional[str] = typer.Option("label", "--category-column", help="Column holding the category; clusters are used when it is empty."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV of item ids that go together (two columns): enables 'learned' and hit-rate@k."),
    evaluate: int = typer.Option(0, "--evaluate", min=0, help="Measure all methods on N sampled queries (colour consistency; hit-rate with --pairs)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e"),
    grid: bool = typer.Option(True, "--grid/--no-grid", help="Write a PNG of the query and its results."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Cross-category recommendations: the appchemy centroid shift, colour matching, or a map learned from pairs."""
    if method not in gw.METHODS:
        fail(f"unknown --method {method!r}; choose one of {', '.join(gw.METHODS)}")
    if not evaluate and (item is None or category is None):
        fail("give --item and --category (or --evaluate N to measure the methods)")
    if pairs is not None and not pairs.is_file():
        fail(f"pairs file not found: {pairs}")
    cat = open_catalog(catalog, home)
    try:
        with Progress(console=console, transient=True) as bar:
            def tracker(stage: str, total: int):
                task = bar.add_task(stage, total=total)
                return lambda n: bar.advance(task, n)

            report = gw.goes_with_report(cat, item, category, k, method, encoder, category_column, pairs, evaluate,
                                         grid, progress=tracker, warn=lambda text: console.print(f"[yellow]pairs:[/] {text}"))
    except (LookupError, ValueError) as exc:
        fail_on(exc)
    if json_out:
        print_json(report)
        return
    console.print(f"categories from {report['category_source']}: {', '.join(report['categories'])}")
    _print(report, k)


def _print(report: dict, k: int) -> None:
    if "results" in report:
        doc = report["results"]
        table = Table(title=f"{doc['item']} ({doc['item_category']}) -> {doc['target']} · {doc['method']}")
        for name in ("rank", "id", "score", "category"):
            table.add_column(name)
        for r in doc["results"]:
            table.add_row(str(r["rank"]), r["id"], f"{r['score']:.3f}", str(r["category"]))
        out.print(table)
        if doc.get("grid"):
            out.print(f"grid: {doc['grid']}")
    if "colour_consistency" in report:
        table = Table(title=f"colour consistency of top {k} (dominant colour CIEDE2000: lower = closer)")
        for name in ("method", "mean ΔE00", "colour similarity", "coverage", "queries"):
            table.add_column(name, justify="right" if name != "method" else "left")
        for r in report["colour_consistency"]:
            table.add_row(r["method"], f"{r['delta_e']:.2f}", f"{r['colour_similarity']:.3f}", f"{r['coverage']:.3f}",
                          str(r["queries"]))
        out.print(table)
    if "pairs" in report:
        table = Table(title="outfit pairs: partner found in top k (learned: cross-validated)")
        for name in ("method", f"hit-rate@{k}", "queries"):
            table.add_column(name)
        for r in report["pairs"]:
            table.add_row(r["method"], f"{r[f'hit_rate@{k}']:.3f}", str(r["queries"]))
        out.print(table)
