"""`lookalike tune`: pick a catalog's colour weight, crop and re-ranking by leave-one-out on labels."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress

from lookalike.cli.app import (RETRIEVAL_SCORES, CatalogOption, HomeOption, JsonOption, app, console, fail_on,
                               open_catalog, out, print_json, scores_table)


@app.command()
def tune(
    catalog: str = CatalogOption,
    label: str = typer.Option("label", "--label", "-l", help="Relevance = same value of this column."),
    split_column: Optional[str] = typer.Option("split", "--split-column", help="Column naming each item's split ('' = use every labelled item)."),
    split: str = typer.Option("validation", "--split", help="Tune on the items of this split (leave-one-out among them)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", help="Encoder family to tune (default: the catalog's)."),
    weights: str = typer.Option("0,0.1,0.2,0.3", "--weights", help="Colour weights to try (comma-separated)."),
    rerank: str = typer.Option("none;qe=2;qe=2,dba=3;qe=5,dba=10;qe=10,dba=20;centre=1,qe=15,dba=30,alpha=2;"
                               "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.2;"
                               "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.3", "--rerank",
                               help="Re-rankings to try, ';'-separated (see `lookalike search --rerank`)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the table; record nothing."),
    json_out: bool = JsonOption,
    home: Optional[Path] = HomeOption,
):
    """Pick the encoder options (colour weight, foreground crop, αQE/DBA) that retrieve the same LABEL best
    and record them as the catalog's default (see `lookalike info`). Reuses stored vectors: nothing is re-embedded."""
    cat = open_catalog(catalog, home)
    try:
        colour_weights = [float(w) for w in weights.split(",") if w.strip()]
        expansions = [r.strip() for r in rerank.split(";") if r.strip()]
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("tuning", total=None)
            report = cat.tune(label, split_column=split_column or None, split=split, encoder=encoder,
                              weights=colour_weights, expansions=expansions, record=not dry_run,
                              on_total=lambda n: progress.update(task, total=n),
                              on_progress=lambda n: progress.advance(task, n))
    except (LookupError, ValueError) as exc:
        fail_on(exc)
    if json_out:
        print_json(report.to_dict())
        return
    rows = [([("[bold]" if row is report.best else "") + row.encoder, row.expansion], row.metrics) for row in report.rows]
    out.print(scores_table(f"{cat.name}: leave-one-out on {report.queries} {report.split or 'labelled'} items, "
                           f"relevance = same {label}", ["encoder", "re-ranking"], rows, (*RETRIEVAL_SCORES, "NDCG@10")))
    verb = "would become" if dry_run else "is now"
    out.print(f"default {verb}: encoder {report.best.encoder}, re-ranking {report.best.expansion} "
              f"(mAP@10 {report.best.metrics['mAP@10']:.3f})")
