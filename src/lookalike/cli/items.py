"""``lookalike add`` / ``lookalike update``: change one item of a catalog in place (the CLI twins of
``POST /api/items`` and ``PATCH /api/items/{id}``); a running server picks the change up on its next
request."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lookalike.catalog import ItemNotFound, ItemWrite
from lookalike.cli.app import CatalogOption, HomeOption, app, fail, open_catalog, out
from lookalike.data.fetch import is_url
from lookalike.data.ingest import parse_metadata_pairs


def _pairs(values: list[str] | None, option: str) -> dict:
    """KEY=VALUE pairs typed as the write API's JSON would be (12 a number, true a boolean, "007"
    text): the library's one parser, lookalike.data.ingest.parse_metadata_pairs."""
    try:
        return parse_metadata_pairs(values or (), option)
    except ValueError as exc:
        fail(str(exc), 2)


@app.command()
def add(
    image: str = typer.Argument(..., help="The item's image: a file or an http(s) URL."),
    catalog: str = CatalogOption,
    home: Optional[Path] = HomeOption,
    item_id: Optional[str] = typer.Option(None, "--id", help="Item id (default: the file name without extension); "
                                          "an existing id is replaced."),
    label: Optional[str] = typer.Option(None, help="The item's label."),
    meta: Optional[List[str]] = typer.Option(None, "--meta", help="Metadata KEY=VALUE (repeatable); numbers and "
                                             "true/false are stored as such, \"007\" in quotes as text."),
    encoder: Optional[str] = typer.Option(None, help="Encoder to embed with (default: the catalog's)."),
):
    """Add or replace one item: embedded and written in one transaction (Catalog.upsert)."""
    cat = open_catalog(catalog, home)
    url = image if is_url(image) else None
    item_id = item_id or (Path(url.split("?")[0]).stem if url else Path(image).stem)
    write = ItemWrite(item_id, url=url, path=None if url else Path(image), label=label, metadata=_pairs(meta, "--meta"))
    try:
        outcome = cat.upsert([write], encoder)[0]
    except (LookupError, ValueError) as exc:   # an encoder that cannot be built
        fail(str(exc).strip('"'))
    if not outcome.ok:
        fail(f"{outcome.id}: {outcome.reason}: {outcome.message}")
    out.print(f"{outcome.outcome} {outcome.id} ({len(cat)} items in {cat.name})")


@app.command()
def update(
    item_id: str = typer.Argument(..., help="Item id."),
    catalog: str = CatalogOption,
    home: Optional[Path] = HomeOption,
    label: Optional[str] = typer.Option(None, help="New label."),
    clear_label: bool = typer.Option(False, "--clear-label", help="Remove the label."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Metadata KEY=VALUE to set (repeatable; typed as "
                                             "--meta of `add`)."),
    unset: Optional[List[str]] = typer.Option(None, "--unset", help="Metadata KEY to remove (repeatable)."),
    replace: bool = typer.Option(False, help="The metadata becomes exactly the --set pairs."),
):
    """Change an item's label and metadata without re-embedding it (Catalog.update_metadata)."""
    cat = open_catalog(catalog, home)
    changes: dict = {**_pairs(set_, "--set"), **{key: None for key in unset or ()}}
    new_label = None if clear_label else label if label is not None else ...
    try:
        item = cat.update_metadata(item_id, changes, label=new_label, replace=replace)
    except ItemNotFound as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc), 2)
    out.print(f"updated {item.id}: label {item.label!r}, metadata {item.metadata}")
