"""`lookalike export` / `lookalike import` (catalog snapshots) and `lookalike check` (integrity)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lookalike.catalog import import_catalog
from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, open_catalog, out, print_json
from lookalike.data.snapshot import SnapshotError


@app.command()
def export(
    out_file: Path = typer.Argument(..., metavar="OUT.tar", help="Snapshot file to write (.tar; .tar.gz / .tgz compress)."),
    catalog: str = CatalogOption,
    images: bool = typer.Option(True, "--images/--no-images",
                                help="Copy every item's image into the snapshot (--no-images: keep image paths as they are, "
                                     "for folders every machine shares)."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Write a catalog as one snapshot file: store, vectors, indexes, artifacts, the models it needs and its
    images, with a manifest (versions, encoder fingerprints, SHA-256 of every file). Safe while it is served."""
    cat = open_catalog(catalog, home)
    with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("export", total=None)
        try:
            info = cat.export(out_file, images=images, on_total=lambda n: progress.update(task, total=n),
                              on_progress=lambda n: progress.advance(task, n))
        except FileNotFoundError as exc:   # a bring-your-own model file the catalog's encoder reads is gone
            fail(str(exc))
    if json_out:
        print_json({k: v for k, v in info.manifest.items() if k != "files"} | {"path": str(info.path), "bytes": info.bytes})
        return
    out.print(f"exported {info.catalog}: {info.items} items, {info.files} files"
              f"{' with images' if info.images else ' (image paths kept)'}"
              f"{', models ' + ', '.join(info.models) if info.models else ''} -> {info.path} "
              f"({info.bytes / 1e6:.1f} MB)")


@app.command("import")
def import_(
    snapshot: Path = typer.Argument(..., metavar="SNAPSHOT.tar", help="A file written by `lookalike export`."),
    name: Optional[str] = typer.Option(None, "--as", help="Catalog name to import as (default: the exported name)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing catalog of that name (and models with other files)."),
    check_encoders: bool = typer.Option(True, "--check-encoders/--no-check-encoders",
                                        help="Refuse a snapshot whose encoders cannot be loaded here or have other weights."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Install a snapshot as a catalog. Every checksum is verified before the home is touched; a corrupt,
    truncated or incompatible snapshot is refused and an existing catalog is kept unless --force."""
    if not snapshot.is_file():
        fail(f"no such snapshot file: {snapshot}")
    try:
        with console.status("verifying and importing"):
            info = import_catalog(snapshot, home, name=name, force=force, check_encoders=check_encoders)
    except (SnapshotError, ValueError) as exc:
        fail(str(exc))
    if json_out:
        print_json({"catalog": info.catalog, "items": info.items, "files": info.files, "dir": str(info.dir),
                    "images": info.images, "models": info.models})
        return
    out.print(f"imported {info.catalog}: {info.items} items, {info.files} files verified -> {info.dir}"
              + (f"; models {', '.join(info.models)}" if info.models else ""))


@app.command()
def check(
    catalog: str = CatalogOption,
    images: bool = typer.Option(True, "--images/--no-images", help="Check that every item's image file exists."),
    repair: bool = typer.Option(False, "--repair", help="First delete uploaded images and thumbnails no item needs."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Check a catalog's integrity: store vs vectors vs indexes vs files (counts, orphans, missing images,
    version stamps). Exit code 1 when an error is found (warnings heal by themselves)."""
    cat = open_catalog(catalog, home)
    if repair:
        removed = cat.remove_orphan_files()
        if not json_out:
            out.print(f"removed {len(removed)} file(s) no item needs")
    report = cat.check(images=images)
    if json_out:
        print_json(report.to_dict())
    else:
        vectors = ", ".join(f"{name} {count}" for name, count in report.encoders.items()) or "none"
        out.print(f"{report.catalog}: {report.items} items; vectors: {vectors}; {report.index_folders} saved index(es)")
        for problem in report.problems:
            colour = "red" if problem.severity == "error" else "yellow"
            out.print(f"[{colour}]{problem.severity}[/] {problem.code}: {problem.message}", highlight=False)
            for example in problem.examples:
                out.print(f"    {example}", highlight=False)
        out.print("[green]ok[/]" if report.ok else f"[red]{len(report.errors)} error(s)[/]")
    if not report.ok:
        raise typer.Exit(1)
