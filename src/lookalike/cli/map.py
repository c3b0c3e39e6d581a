"""``lookalike map``: a 2-D thumbnail map of a catalog (PNG) and its coordinates (JSON) for the web app."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress

from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, fail_on, open_catalog, out, print_json
from lookalike.explore.projection import PROJECTIONS, map_catalog


@app.command("map")
def map_command(
    catalog: str = CatalogOption,
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", help="Encoder whose vectors to project (default: the catalog's)."),
    method: str = typer.Option("tsne", "--method", "-m", help="tsne, umap or pca (PCA to 50 dims runs first for all)."),
    colour_by: str = typer.Option("label", "--colour-by", help="label, cluster (run `lookalike cluster` first) or a metadata column."),
    size: int = typer.Option(4000, "--size", min=400, max=16000, help="PNG width and height in pixels."),
    thumb: int = typer.Option(56, "--thumb", min=8, max=256, help="Thumbnail size in pixels."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Project embeddings to 2-D and draw every item's thumbnail at its position, framed by label or cluster."""
    if method not in PROJECTIONS:
        fail(f"unknown --method {method!r}; choose one of {', '.join(PROJECTIONS)}")
    cat = open_catalog(catalog, home)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"projecting ({method}), then drawing", total=len(cat))
            result = map_catalog(cat, encoder, method, colour_by, size, thumb, seed,
                                 progress=lambda n: progress.advance(task, n))
    except (LookupError, ValueError) as exc:
        fail_on(exc)
    doc = {"png": str(result.png), "json": str(result.json), "points": result.points, "method": method,
           "colour_by": colour_by, "size": size}
    if json_out:
        print_json(doc)
        return
    out.print(f"{result.points} items mapped ({method}, colour = {colour_by})\nPNG: {result.png}\nJSON: {result.json}")
