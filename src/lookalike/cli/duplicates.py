"""``lookalike duplicates``: exact and near-duplicate groups, and their precision/recall on generated copies."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress
from rich.table import Table

from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, fail_on, open_catalog, out, print_json
from lookalike.explore import duplicates as dup


@app.command()
def duplicates(
    catalog: str = CatalogOption,
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", help="Encoder whose vectors to compare (default: the catalog's)."),
    method: str = typer.Option("embedding", "--method", "-m", help="embedding (cosine distance), phash (perceptual hash baseline) or both (either one)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="Max cosine distance for near duplicates (default 0.12)."),
    phash_bits: Optional[int] = typer.Option(None, "--phash-bits", help="Max Hamming distance of 64-bit phashes (default 4)."),
    max_png: int = typer.Option(50, "--max-png", min=0, help="Write a PNG for at most this many groups (largest first)."),
    evaluate: int = typer.Option(0, "--evaluate", min=0, help="Instead: make N augmented copies and measure precision/recall of embedding vs phash."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Group exact and near-duplicate images (JSON, CSV and a PNG per group under artifacts/duplicates/)."""
    if method not in dup.METHODS:
        fail(f"unknown --method {method!r}; choose one of {', '.join(dup.METHODS)}")
    threshold = dup.DEFAULT_THRESHOLD if threshold is None else threshold
    phash_bits = dup.DEFAULT_PHASH_BITS if phash_bits is None else phash_bits
    if not 0 <= threshold < 2:
        fail("--threshold is a cosine distance between 0 and 2")
    if not 0 <= phash_bits <= 64:
        fail("--phash-bits must be between 0 and 64")
    cat = open_catalog(catalog, home)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("perceptual hashes", total=len(cat) if (evaluate or method != "embedding") else 0)
            step = lambda n: progress.advance(task, n)  # noqa: E731
            if evaluate:
                report = dup.evaluate_catalog(cat, encoder, n_copies=evaluate, seed=seed, progress=step)
            else:
                report = dup.catalog_duplicates(cat, encoder, threshold, method, phash_bits, max_png, progress=step)
    except (LookupError, ValueError) as exc:
        fail_on(exc)
    if json_out:
        print_json(report)
    elif evaluate:
        _print_evaluation(report)
    else:
        _print_groups(report)


def _print_groups(report: dict) -> None:
    out.print(f"[bold]{report['groups']} duplicate groups[/] ({report['exact_groups']} exact) covering "
              f"{report['items_in_groups']} of {report['items']} items · " + ", ".join(
                  text for text, value in (("cosine distance <= {}", report["threshold"]),
                                           ("phash Hamming bits <= {}", report["phash_bits"])) if value is not None
              ).format(*(v for v in (report["threshold"], report["phash_bits"]) if v is not None)))
    table = Table(title="largest groups")
    for name in ("group", "size", "exact", "max distance", "items"):
        table.add_column(name)
    for g in report["top_groups"]:
        table.add_row(str(g["group"]), str(g["size"]), "yes" if g["exact"] else "", f"{g['max_distance']:.3f}",
                      ", ".join(m["id"] for m in g["items"][:4]) + (" ..." if g["size"] > 4 else ""))
    out.print(table)
    out.print(f"groups.json, groups.csv and PNGs: {report['folder']}")


def _print_evaluation(report: dict) -> None:
    out.print(f"{report['copies']} generated copies of {report['originals']} originals "
              f"({', '.join(f'{k} {v}' for k, v in report['augmentations'].items())}); "
              f"threshold tuned on half the copies, scored on the other {report['held_out_copies']}")
    table = Table(title="near-duplicate detection on held-out copies (pairs involving a copy)")
    for name in ("method", "threshold", "precision", "recall", "F1", "orig. pairs"):
        table.add_column(name, justify="right" if name != "method" else "left")
    for method, m in report["methods"].items():
        h = m["held_out"]
        table.add_row(method, str(m["threshold"]), f"{h['precision']:.3f}", f"{h['recall']:.3f}", f"{h['f1']:.3f}",
                      str(h["original_pairs"]))
    out.print(table)
    out.print("orig. pairs = pairs of catalog images flagged (possible real duplicates, not scored)")
    kinds = Table(title="recall by augmentation (held-out copies)")
    kinds.add_column("augmentation")
    for method in report["methods"]:
        kinds.add_column(method, justify="right")
    for kind in report["augmentations"]:
        kinds.add_row(kind, *(f"{m['recall_by_augmentation'][kind]:.2f}" for m in report["methods"].values()))
    out.print(kinds)
    out.print(f"report: {report['report']}")
