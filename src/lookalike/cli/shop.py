"""``lookalike shop``: similar catalog products for each garment worn in a photo."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from lookalike.cli.app import CatalogOption, HomeOption, app, console, fail, open_catalog, out, print_json
from lookalike.shop import pipeline as stl
from lookalike.shop.pose import DetectorUnavailable


@app.command("shop")
def shop(
    catalog: str = CatalogOption,
    image: Path = typer.Option(..., "--image", "-i", help="Photo of a dressed person."),
    k: int = typer.Option(5, "-k", min=1, max=100, help="Results per garment region."),
    regions: Optional[str] = typer.Option(None, "--regions", help="Comma-separated candidate regions (default: all; "
                                          "top, bottom, footwear, onepiece, outerwear, head, hands)."),
    decide: bool = typer.Option(True, "--decide/--fixed-boxes",
                                help="Check every candidate region with the catalog's label probe (one garment or two, "
                                     "hats, bags, outerwear); --fixed-boxes: the top/bottom/footwear boxes only."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="JSON/TOML: region categories, attribute columns, bottom_end."),
    category: Optional[List[str]] = typer.Option(None, "--category", help="REGION=label1,label2 (repeatable); overrides the config."),
    bottom_end: Optional[str] = typer.Option(None, "--bottom-end", help="Where the bottom box ends: auto, ankles or knees."),
    attribute_filter: bool = typer.Option(True, "--attribute-filter/--no-attribute-filter",
                                          help="Filter by attributes (e.g. gender) predicted by a probe, when one exists."),
    probe: Optional[List[str]] = typer.Option(None, "--probe", help="Probe name(s) to use instead of <catalog>-<column>."),
    all_people: bool = typer.Option(False, "--all-people", help="Every person found, not only the largest."),
    mask: bool = typer.Option(True, "--mask/--no-mask", help="Tighten boxes with the person segmentation mask."),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e"),
    png: Optional[Path] = typer.Option(None, "--out", "-o", help="Annotated PNG path (default: the catalog's artifacts/shop/)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    home: Optional[Path] = HomeOption,
):
    """Shop the look: find the person, box each garment, search the catalog for each box."""
    known = stl.ALL_REGIONS if decide else stl.REGIONS
    wanted = None if regions is None else [r.strip() for r in regions.split(",") if r.strip()]
    bad = [r for r in wanted or [] if r not in known]
    if bad or wanted == []:
        fail(f"--regions takes a comma-separated subset of {', '.join(known)}; got {regions!r}")
    if bottom_end is not None and bottom_end not in ("auto", "ankles", "knees"):
        fail("--bottom-end must be auto, ankles or knees")
    cat = open_catalog(catalog, home)
    try:
        config = stl.load_config(config_file, bottom_end=bottom_end, category_options=category or ())
        with console.status("finding the person and searching each garment..."):
            result = stl.shop_the_look(cat, image, k=k, regions=wanted, config=config,
                                       attribute_filter=attribute_filter, probes=probe, all_people=all_people,
                                       use_mask=mask, encoder=encoder, decide=decide, annotate=png or True)
    except (stl.ShopError, DetectorUnavailable, LookupError) as exc:
        fail(escape(str(exc)))  # messages hold literal brackets, e.g. "lookalike[shop]"
    if json_out:
        print_json(result.to_dict())
        return
    _print(result)


def _print(result) -> None:
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for n, person in enumerate(result.people, 1):
        body = person.body
        status = "full body" if body["full_body"] else "partial: " + ", ".join(
            p for p in ("head", "hips", "ankles") if not body[p]) + " not visible"
        out.print(f"[bold]person {n}[/] box {person.box}  ({status})", highlight=False)
        for attribute in person.attributes:
            out.print(f"  filtered by {attribute['column']} = {attribute['value']} "
                      f"(p={attribute['probability']:.2f}, probe {attribute['probe']})", highlight=False)
        for note in person.notes:
            console.print(f"  [yellow]note:[/] {escape(note)}", highlight=False)
        for region in person.regions:
            cats = ", ".join(region.categories) if region.categories else "whole catalog"
            seen = (f"  looks like {region.category} (p={region.confidence:.2f}, fit {region.fit:.2f})"
                    if region.category else "")
            table = Table(title=escape(f"{region.name}  box {region.box}{seen}  visibility {region.visibility:.2f}  "
                                       f"[{cats}]"), title_justify="left")
            for column in ("#", "id", "score", "label"):
                table.add_column(column)
            for hit in region.results:
                table.add_row(str(hit.rank), escape(hit.id), f"{hit.score:.3f}", escape(str(hit.label or "")))
            out.print(table)
            for note in region.notes:
                out.print(f"  [dim]{escape(note)}[/]")
        for skipped in person.skipped:
            out.print(f"  [yellow]{skipped['name']} skipped:[/] {escape(skipped['reason'])}", highlight=False)
    if result.annotated:
        out.print(f"annotated PNG: {escape(result.annotated)}", highlight=False)
