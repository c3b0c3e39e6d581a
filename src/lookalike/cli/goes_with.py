"""``lookalike goes-with``: items of another category that go with an item, and how well each
method keeps colour (or finds known outfit partners with --pairs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress
from rich.table import Table

from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, open_catalog, out, print_json


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
    from lookalike.explore import goes_with as gw
    if method not in gw.METHODS:
        fail(f"unknown --method {method!r}; choose one of {', '.join(gw.METHODS)}")
    if not evaluate and (item is None or category is None):
        fail("give --item and --category (or --evaluate N to measure the methods)")
    if pairs is not None and not pairs.is_file():
        fail(f"pairs file not found: {pairs}")
    cat = open_catalog(catalog, home)
    need_colour = evaluate > 0 or method == "colour"
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("colour features", total=len(cat) if need_colour else 0)
            data = gw.catalog_data(cat, encoder, category_column, with_colour=need_colour,
                                   progress=lambda n: progress.advance(task, n))
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    pair_rows, learned = [], None
    if pairs is not None:
        pair_rows, problems = gw.read_pairs(pairs, data)
        for problem in problems[:10]:
            console.print(f"[yellow]pairs:[/] {problem}")
        if len(pair_rows) < 2:
            fail(f"{pairs} has fewer than 2 usable pairs of catalog item ids")
        learned = gw.LearnedMap(data, pair_rows)
    elif method == "learned":
        fail("--method learned needs --pairs CSV")
    report = {"catalog": cat.name, "encoder": encoder or cat.default_encoder, "category_source": data.category_source,
              "categories": data.category_names()}
    if not json_out:
        console.print(f"categories from {data.category_source}: {', '.join(data.category_names())}")
    if item is not None and category is not None:
        report["results"] = _recommend(cat, data, item, category, k, method, learned, grid)
    if evaluate:
        methods = [m for m in gw.METHODS if m != "learned" or learned is not None]
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("measuring", total=min(evaluate, len(data.ids)))
            report["colour_consistency"] = gw.colour_consistency(
                data, methods, k=k, n_queries=evaluate, learned=learned, progress=lambda n: progress.advance(task, n))
        if pair_rows:
            report["pairs"] = gw.pair_hit_rate(data, pair_rows, methods, k=k)
        gw.write_report(cat.dir / "artifacts" / "goes-with" / "evaluation.json", report)
    if json_out:
        print_json(report)
        return
    _print(report, k)


def _recommend(cat, data, item: str, category: str, k: int, method: str, learned, grid: bool) -> dict:
    from lookalike.explore import goes_with as gw
    if item not in data.row_of:
        fail(f"unknown item id {item!r} (or it has no vector for this encoder)")
    if category not in data.category_names():
        fail(f"unknown category {category!r}; known: {', '.join(data.category_names())}")
    try:
        ranked = gw.recommend(data, data.row_of[item], category, k, method, learned)
    except (KeyError, ValueError) as exc:
        fail(str(exc).strip('"'))
    results = []
    for rank, (row, score) in enumerate(ranked, start=1):
        found = cat.get(data.ids[row])
        results.append({"rank": rank, "id": found.id, "score": round(score, 4), "category": data.categories[row],
                        "path": found.path})
    doc = {"item": item, "item_category": data.categories[data.row_of[item]], "target": category,
           "method": method, "results": results}
    if grid and results:
        from types import SimpleNamespace

        from lookalike.viz.grids import result_grid

        png = cat.dir / "artifacts" / "goes-with" / f"{_safe(item)}-{_safe(category)}-{method}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        cells = [SimpleNamespace(rank=r["rank"], id=r["id"], score=r["score"], label=r["category"], path=r["path"])
                 for r in results]
        doc["grid"] = str(result_grid(cat.get(item).path, cells, png, title=f"{item} -> {category}"))
    return doc


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


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
