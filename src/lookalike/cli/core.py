"""Core commands: index, search, evaluate, remove, catalogs, info, encoders."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lookalike.catalog import BoxError, Catalog, CatalogNotFound, ItemNotFound, catalog_counts, catalog_summary
from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, fail_on, open_catalog, out, print_json
from lookalike.data.images import ImageError, crop_box, open_image
from lookalike.data.sources import SourceError
from lookalike.encoders import describe
from lookalike.search.calibration import no_close_match
from lookalike.search.examples import parse_item_example
from lookalike.viz.grids import result_grid


def parse_where(where: list[str] | None) -> dict[str, list[str]] | None:
    """``["label=shoes", "colour=red", "colour=blue"]`` -> {"label": ["shoes"], "colour": ["red", "blue"]}."""
    if not where:
        return None
    parsed: dict[str, list[str]] = {}
    for clause in where:
        column, sep, value = clause.partition("=")
        if not sep or not column.strip():
            fail(f"--where expects COLUMN=VALUE, got {clause!r}")
        parsed.setdefault(column.strip(), []).append(value.strip())
    return parsed


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console)


@app.command()
def index(
    source: Path = typer.Argument(..., help="A folder of images (label = sub-folder) or a table: CSV/TSV, JSON Lines, Parquet, .xlsx."),
    catalog: str = CatalogOption,
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", help="Encoder spec (default: the catalog's, else effnet-lite0)."),
    id_column: Optional[str] = typer.Option(None, help="CSV column with item ids (default: id, sku, ...; else derived from the image path)."),
    image_column: Optional[str] = typer.Option(None, help="CSV column with image paths (default: image, path, ...)."),
    label_column: Optional[str] = typer.Option(None, help="CSV column with the category label (default: label, category)."),
    encoding: Optional[str] = typer.Option(None, help="Text encoding of a CSV/TSV (default: UTF-8, with or without BOM)."),
    delimiter: Optional[str] = typer.Option(None, help="CSV delimiter: one character, or comma/semicolon/tab (default: sniffed)."),
    prune: bool = typer.Option(False, "--prune", help="Remove items whose source row or file is gone."),
    batch_size: int = typer.Option(32, min=1, max=1024, help="Images per model call."),
    workers: Optional[int] = typer.Option(None, min=1, max=64, help="Decode threads (default: CPU count, 2..8)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run decode+encode as a Ray Data pipeline ('local' or a cluster address).", show_default=False),
    int8: str = typer.Option("auto", "--int8", help="First index: calibrate an int8 model on the catalog and use it when it loses <= 0.005 mAP@10 (auto: sources of 1,000+ rows; check: any size; off: fp32)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    home: Optional[Path] = HomeOption,
):
    """Ingest and embed a catalog (incremental: unchanged images are skipped)."""
    try:
        cat, new = Catalog.open(catalog, home=home), False
    except CatalogNotFound:
        cat, new = None, True
    except ValueError as exc:
        fail_on(exc)
    if new:
        cat = Catalog.create(catalog, home=home)
    try:
        with _progress() as progress:
            task = progress.add_task("embedding", total=None, rate="")
            state = {"done": 0}

            def step(n: int) -> None:
                state["done"] += n
                elapsed = progress.tasks[task].elapsed or 1e-9
                progress.update(task, advance=n, rate=f"{state['done'] / elapsed:.1f} img/s")

            def stage(name: str, total: int) -> None:   # int8 calibration stages, then the embedding
                state["done"] = 0
                progress.reset(task, total=total, description=name, rate="")

            report = cat.index(source, encoder, id_column=id_column, image_column=image_column,
                               label_column=label_column, encoding=encoding, delimiter=delimiter, prune=prune,
                               batch_size=batch_size, workers=workers,
                               executor="threads" if ray is None else "ray", ray_address=ray, int8=int8,
                               on_progress=step, on_total=lambda n: progress.update(task, total=n), on_stage=stage)
    except (SourceError, KeyError, FileNotFoundError) as exc:
        _drop_if_new_and_empty(cat, new)
        fail(str(exc).strip('"'))
    except (ValueError, RuntimeError) as exc:  # an encoder that cannot be built: bad spec or option, unusable model
        _drop_if_new_and_empty(cat, new)
        fail(str(exc))
    except ImportError as exc:  # the [ray] extra, or an encoder's optional package (the message names it)
        _drop_if_new_and_empty(cat, new)
        fail(f"Ray ingest needs the [ray] extra: {exc}" if ray is not None else str(exc))
    if json_out:
        print_json(report.to_dict())
        return
    _print_report(cat, report)


def _drop_if_new_and_empty(cat: Catalog, new: bool) -> None:
    """A first `index` that failed as a whole (unreadable source, bad encoder) leaves no empty
    catalog behind: it showed in `lookalike catalogs` and the web app's catalog list with 0 items."""
    if new and len(cat) == 0:
        cat.delete()


def _print_report(cat, report) -> None:
    table = Table(title=f"catalog {cat.name!r} — {report.encoder}", show_header=False)
    for name, value in [("rows in source", report.rows), ("files skipped (not items)", len(report.skipped)),
                        ("added", report.added), ("re-embedded (changed, or new encoder)", report.updated),
                        ("unchanged (skipped)", report.unchanged), ("metadata updated", report.metadata_updated),
                        ("pruned", report.pruned), ("failed", report.failed), ("items in catalog", len(cat)),
                        ("time", f"{report.seconds:.1f} s"), ("throughput", f"{report.images_per_s:.1f} img/s"),
                        *([("model runtime", report.runtime)] if report.runtime else [])]:
        table.add_row(name, str(value))
    out.print(table)
    if report.errors:
        errors = Table(title=f"{report.failed} rows not indexed")
        for column in ("reason", "id", "path / line", "message"):
            errors.add_column(column, overflow="fold")
        for e in report.errors[:20]:
            errors.add_row(e.reason, e.id or "", e.path or (f"line {e.line}" if e.line else ""), e.message)
        out.print(errors)
        if report.failed > 20:
            out.print(f"... and {report.failed - 20} more")
        out.print("by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(report.error_counts().items())))
    if report.downloads:
        out.print("images by URL: " + ", ".join(f"{k}={v}" for k, v in report.downloads.items()))
    if report.skipped:
        out.print(f"{len(report.skipped)} files skipped, by reason: "
                  + ", ".join(f"{k}={v}" for k, v in sorted(report.skip_counts().items())))
    out.print(f"report: {report.report_json}\nerrors: {report.report_csv}")


@app.command()
def search(
    catalog: str = CatalogOption,
    items: Optional[List[str]] = typer.Option(None, "--item", "-i", help="Query by a catalog item id; repeat for more examples, ID:WEIGHT to weigh one (e.g. --item A --item B:0.5)."),
    not_items: Optional[List[str]] = typer.Option(None, "--not", help="Less like this item (ID, weight 0.5, or ID:WEIGHT), repeatable."),
    combine: str = typer.Option("mean", "--combine", help="How examples combine: mean (Rocchio: weighted mean of normalised vectors) or max (best-score fusion)."),
    diversity: float = typer.Option(0.0, "--diversity", min=0.0, max=1.0, help="MMR λ: 0 = most similar first, higher = more varied results."),
    collapse_duplicates: bool = typer.Option(False, "--collapse-duplicates", help="Fold near duplicates of a better hit into it (listed in a 'duplicates' column)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Query by an image file."),
    box: Optional[str] = typer.Option(None, "--box", help="With --image: search only this part, x0,y0,x1,y1 in pixels of the photo as shown."),
    latent: Optional[str] = typer.Option(None, "--latent", help="Query by a vector: comma-separated values (e.g. a VAE latent)."),
    k: int = typer.Option(10, "-k", min=1, max=1000, help="Number of results."),
    metric: Optional[str] = typer.Option(None, help="cosine, l2 or l1 (default: the encoder's)."),
    where: Optional[List[str]] = typer.Option(None, "--where", "-w", help="COLUMN=VALUE filter; repeat for more (same column = any of)."),
    filters: Optional[List[str]] = typer.Option(None, "--filter", "-f", help="Filter clause, repeatable (all hold): price<50, 20<=price<=80, colour in red,blue, colour!=red, brand exists, brand missing."),
    boost: Optional[List[str]] = typer.Option(None, "--boost", help="CONDITION:WEIGHT added to matching items' score, repeatable: in_stock=1:+0.05, price<20:0.02."),
    recency: Optional[str] = typer.Option(None, "--recency", help="COLUMN:HALF_LIFE:WEIGHT recency boost on a date column, e.g. added:30d:0.1."),
    pin: Optional[List[str]] = typer.Option(None, "--pin", help="Item id shown first (when it passes the filters); repeat, in order."),
    bury: Optional[List[str]] = typer.Option(None, "--bury", help="Item id shown only after every other hit; repeatable."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="One result per value of this column (e.g. product_id); -k counts products."),
    variant: Optional[str] = typer.Option(None, "--variant", help="With --group-by: the column saying which variant matched (e.g. colour)."),
    min_score: Optional[float] = typer.Option(None, help="Drop results whose visual score is below this (higher score = more similar)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", help="Encoder whose vectors to search."),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="Re-ranking: centre=1 (subtract the catalog mean), qe=N (αQE), dba=K (DBA), alpha=A, window=N,colour=W (the CNN part ranks, colour re-orders its first N at weight W), e.g. centre=1,qe=2,dba=5; 'none' (default: the catalog's, see `lookalike info`)."),
    grid: Optional[Path] = typer.Option(None, help="Write a PNG grid of the query and results."),
    backend: Optional[str] = typer.Option(None, "--backend", envvar="LOOKALIKE_BACKEND",
                                          help="Index backend: faiss (default, embedded) or milvus ($LOOKALIKE_MILVUS_URI)."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
    home: Optional[Path] = HomeOption,
):
    """Find the most similar items to a catalog item, an image or a vector, or to several weighted
    examples (--item A --item B:0.5 --not C)."""
    try:
        examples = [parse_item_example(t) for t in items or ()] + [parse_item_example(t, True) for t in not_items or ()]
    except ValueError as exc:
        fail(str(exc))
    item = None
    if len(examples) == 1 and examples[0].weight == 1.0:   # one plain --item: the classic query
        item, examples = examples[0].value, []
    if sum(x is not None for x in (item, image, latent)) > 1 or (examples and latent is not None) or \
            (item is None and image is None and latent is None and not any(e.weight > 0 for e in examples)):
        fail("give exactly one of --item, --image or --latent (several --item / --not combine as examples)")
    if metric is not None and metric not in ("cosine", "l2", "l1"):
        fail("--metric must be cosine, l2 or l1")
    if box is not None and image is None:
        fail("--box crops the query photo: give it with --image")
    cat = open_catalog(catalog, home, backend)
    vector = None
    if latent is not None:
        try:
            vector = [float(v) for v in latent.split(",")]
        except ValueError:
            fail("--latent expects comma-separated numbers")
    try:
        results = cat.search(item=item, image=image, vector=vector, k=k, metric=metric, where=parse_where(where),
                             min_score=min_score, encoder=encoder, expansion=rerank, filters=filters or (),
                             boosts=boost or (), recency=recency, pin=pin or (), bury=bury or (), group_by=group_by,
                             variant=variant, box=box, examples=examples, combine=combine, diversity=diversity,
                             collapse_duplicates=collapse_duplicates)
    except ItemNotFound as exc:
        fail(str(exc))
    except BoxError as exc:
        fail(f"--box: {exc}")
    except ImageError as exc:
        fail(f"cannot use {image}: {exc.message} ({exc.reason})")   # the reason code ingest and the API give
    except (LookupError, ValueError) as exc:
        fail_on(exc)
    first = item or next((e.value for e in examples if e.weight > 0), None)
    described = " ".join(f"{'not ' if e.weight < 0 else ''}{e.value}" + (f":{abs(e.weight):g}" if abs(e.weight) != 1 else "")
                         for e in examples)
    query_name = " + ".join(x for x in (str(image) if image else None, described or item) if x) or "vector"
    if grid is not None:
        query_source = cat.get(first).path if first else (image if image else None)
        if box is not None:  # the grid shows the part that was searched
            query_source = crop_box(open_image(image), box)
        if query_source is not None:
            result_grid(query_source, results, grid, title=first or Path(image).name,
                        query_label=cat.get(first).label if first else None)
            console.print(f"grid written to {grid}")
    if len(results) < k and min_score is None:  # k past the matching items: say so, never pad
        console.print(f"note: only {len(results)} item(s) match, fewer than -k {k}", highlight=False)
    nothing_close = no_close_match(results)
    if json_out:
        print_json({"query": query_name, "no_close_match": nothing_close, "results": [r.to_dict() for r in results]})
        return
    if not results:
        out.print("no results" + (f" scoring at least {min_score}" if min_score is not None else ""))
        return
    if nothing_close:
        out.print("no close match: nothing in this catalog looks much like the query; the closest items are "
                  "marked weak (threshold: `lookalike info`)")
    table = Table(title=f"similar to {query_name}")
    explain = any(len(r.score_parts) > 1 for r in results)
    folded = any(r.duplicates for r in results)
    columns = ["rank", "id", "score", *(["why (score parts)"] if explain else []), "label",
               *(["product images"] if group_by else []), *(["duplicates"] if folded else []), "metadata"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for r in results:
        meta = ", ".join(f"{k}={v}" for k, v in r.metadata.items())
        why = [_why(r.score_parts)] if explain else []
        grouped = [f"{1 + len(r.group)}" + (f" (matched {r.matched_variant})" if r.matched_variant else "")] \
            if group_by else []
        table.add_row(str(r.rank), r.id, f"{r.score:.4f}" + (" weak" if r.weak else ""), *why, r.label or "",
                      *grouped, *([", ".join(r.duplicates)] if folded else []), meta)
    out.print(table)


def _why(parts: dict[str, float]) -> str:
    """``visual=0.73 (shape 0.56 + colour 0.17) boost:in_stock=1 +0.05 pinned``."""
    text = f"visual={parts.get('visual', 0.0):.4f}"
    if "visual.shape" in parts:
        text += f" (shape {parts['visual.shape']:.4f} + colour {parts['visual.colour']:.4f})"
    for name, value in parts.items():
        if name in ("pin", "bury"):
            text += " " + {"pin": "pinned", "bury": "buried"}[name]
        elif not name.startswith("visual"):
            text += f" {name} {value:+.4f}"
    return text


@app.command()
def evaluate(
    catalog: str = CatalogOption,
    label: List[str] = typer.Option(["label"], "--label", "-l", help="Relevance = same value of this column; repeat: all must match."),
    encoder: Optional[List[str]] = typer.Option(None, "--encoder", "-e", help="Encoder(s) to evaluate (repeat to compare)."),
    k: str = typer.Option("1,5,10", "-k", help="Comma-separated cut-offs."),
    metric: Optional[str] = typer.Option(None, help="cosine, l2 or l1 (default: the encoder's)."),
    where: Optional[List[str]] = typer.Option(None, "--where", "-w", help="Evaluate on the subset matching COLUMN=VALUE."),
    per_label: bool = typer.Option(True, "--per-label/--no-per-label", help="Also print per-label rows."),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="Re-ranking: centre=1 (subtract the catalog mean), qe=N (αQE), dba=K (DBA), alpha=A, window=N,colour=W (the CNN part ranks, colour re-orders its first N at weight W), e.g. centre=1,qe=2,dba=5; 'none' (default: the catalog's, see `lookalike info`)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Score at product level: the query's whole product leaves the gallery, hits fold to one per value of this column (e.g. product_id)."),
    index: Optional[str] = typer.Option(None, "--index", help="Rank through this faiss index kind instead of exact search, e.g. reduced, reduced,rerank=1, hnsw,ef_search=48: the quality an approximate index costs."),
    report_path: Optional[Path] = typer.Option(None, "--report", help="Also write the quality page as one self-contained HTML file (per-label table worst first, bar chart, top-1 confusion, failed queries; PNGs embedded)."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Leave-one-out retrieval evaluation: P@k, R@k, mAP@k, NDCG@k overall and per label."""
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        fail("-k expects comma-separated integers, e.g. 1,5,10")
    if not ks or ks[0] < 1:
        fail("-k values must be positive")
    if report_path is not None and (len(label) != 1 or len(encoder or []) > 1 or group_by):
        fail("--report takes one --label and one --encoder, and scores items (not --group-by)")
    cat = open_catalog(catalog, home)
    reports = {}
    for spec in encoder or [cat.default_encoder]:
        try:
            reports[spec] = cat.evaluate(labels=label, ks=ks, encoder=spec, metric=metric, where=parse_where(where),
                                         expansion=rerank, group_by=group_by, index=index)
        except (LookupError, ValueError) as exc:
            fail_on(exc)
    if report_path is not None:
        try:
            written = cat.quality_report(report_path, label[0], next(iter(reports)), k=max(ks), where=parse_where(where),
                                         expansion=rerank)
        except (LookupError, ValueError, OSError) as exc:
            fail_on(exc)
    if json_out:
        print_json({spec: r.to_dict() for spec, r in reports.items()})
        return
    if report_path is not None:
        out.print(f"quality report: {written}")
    for spec, report in reports.items():
        level = f" — per product ({group_by}: {report.extra['n_products']} products)" if group_by else ""
        out.print(report.to_table(f"{cat.name} — {spec} — relevance: same {' & '.join(label)}{level}",
                                  per_label=per_label))


@app.command()
def remove(
    ids: List[str] = typer.Argument(..., help="Item ids to remove."),
    catalog: str = CatalogOption,
    home: Optional[Path] = HomeOption,
):
    """Remove items (and their vectors) from a catalog."""
    cat = open_catalog(catalog, home)
    removed = cat.remove(ids)
    missing = sorted(set(ids) - set(removed))
    out.print(f"removed {len(removed)} item(s)" + (f"; not found: {', '.join(missing)}" if missing else ""))


@app.command()
def catalogs(home: Optional[Path] = HomeOption, json_out: bool = typer.Option(False, "--json")):
    """List catalogs in the home directory."""
    counts = catalog_counts(home)
    if json_out:
        print_json([{"name": n, "items": c} for n, c in counts.items()])
        return
    if not counts:
        out.print("no catalogs yet: create one with `lookalike index SOURCE --catalog NAME`")
    for name, count in counts.items():
        out.print(f"{name}\t{count} items")


@app.command()
def info(catalog: str = CatalogOption, home: Optional[Path] = HomeOption, json_out: bool = typer.Option(False, "--json")):
    """Show a catalog: items, labels, encoders, last ingest."""
    cat = open_catalog(catalog, home)
    summary = catalog_summary(cat)
    threshold = cat.match_threshold() if len(cat) else None   # computed once per data version, then stored
    summary["match_threshold"] = threshold.to_dict() if threshold else None
    if json_out:
        print_json(summary)
        return
    out.print(f"[bold]{summary['name']}[/]: {summary['items']} items in {summary['dir']}")
    out.print(f"default encoder: {summary['default_encoder']}")
    out.print(f"default re-ranking: {summary['default_expansion']}")
    if summary.get("tuned"):
        tuned = summary["tuned"]
        out.print(f"tuned on {tuned['label']} ({tuned['queries']} {tuned['split'] or 'all'} queries, leave-one-out): "
                  f"{tuned['encoder']} + re-ranking {tuned['expansion']}, mAP@10 {tuned['mAP@10']:.3f}")
    for e in summary["encoders"]:
        out.print(f"  encoder {e['name']}: {e['count']} vectors, dim {e['dim']}, {e['metric']}")
    if summary["labels"]:
        out.print("labels: " + ", ".join(f"{k} ({v})" for k, v in summary["labels"].items()))
    if threshold:
        out.print(f"no-close-match threshold: score {threshold.threshold:.3f} ({threshold.method}, from {threshold.sample} "
                  f"leave-one-out neighbours; {threshold.miss_rate:.0%} of true neighbours score lower)")


@app.command()
def encoders():
    """List available encoders."""
    for name, text in describe().items():
        out.print(f"[bold]{name}[/]\t{text}")
