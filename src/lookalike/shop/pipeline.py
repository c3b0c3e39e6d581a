"""Shop the look: from a photo of a dressed person to similar catalog products per garment.

    result = shop_the_look(Catalog.open("clothing"), "photo.jpg", k=5)
    result.to_dict()                                   # per person: body check, regions, top-k items

The pipeline follows Myntra's "Buy Me That Look": person keypoints (:mod:`lookalike.shop.pose`) → the
full-body check and garment boxes (:mod:`lookalike.shop.regions`) → optional attribute filter from a
probe (e.g. gender, :mod:`lookalike.train.probes`) → crop, embed, and search each region only among its
catalog categories. The mapping region → categories and the attribute columns come from
:data:`DEFAULT_CONFIG`, a JSON/TOML config file, or arguments.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from lookalike.data.images import ImageError, ImageSource, open_image
from lookalike.search import SearchResult
from lookalike.shop.pose import Person, PoseDetector, get_detector
from lookalike.shop.regions import REGIONS, body_check, garment_regions
from lookalike.train.probes import load_probe
from lookalike.viz.shop import render_shop

DEFAULT_CATEGORIES: dict[str, list[str]] = {
    "top": ["t-shirt", "shirt", "longsleeve", "outwear", "dress"],
    "bottom": ["pants", "shorts", "skirt"],
    "footwear": ["shoes"],
}
DEFAULT_CONFIG: dict[str, Any] = {"categories": DEFAULT_CATEGORIES, "category_column": "label",
                                  "attributes": ["gender"], "bottom_end": "auto"}
MIN_PHOTO_SIDE = 64      # px: below this no keypoint model finds a body
CANDIDATE_PEOPLE = 3     # people looked for when keeping only the largest
MAX_PEOPLE = 6           # with all_people=True


class ShopError(ValueError):
    """A photo or option the pipeline cannot work with; the message says why."""


class NoPersonFound(ShopError):
    pass


@dataclass
class RegionResult:
    name: str
    box: list[int]
    visibility: float
    categories: list[str] | None          # None = searched the whole catalog
    results: list[SearchResult] = field(default_factory=list)  # catalog.search hits, best first
    keypoints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class PersonResult:
    box: list[int]
    score: float
    body: dict
    regions: list[RegionResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    attributes: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ShopResult:
    catalog: str
    encoder: str
    detector: str
    image: dict
    people: list[PersonResult]
    notes: list[str] = field(default_factory=list)
    annotated: str | None = None

    def to_dict(self) -> dict:
        doc = asdict(self)
        for person in doc["people"]:
            for region in person["regions"]:  # the shape `lookalike shop --json` has always printed
                region["results"] = [{"rank": h["rank"], "id": h["id"], "score": round(h["score"], 4),
                                      "label": h["label"], "path": h["path"]} for h in region["results"]]
        return doc


# -- configuration -------------------------------------------------------------------------
def load_config(path: str | Path | None = None, *, category_options: Sequence[str] = (),
                **overrides) -> dict[str, Any]:
    """DEFAULT_CONFIG updated from a JSON or TOML file, then from non-None ``overrides``, then per
    region from ``category_options`` (``lookalike shop --category``, see :func:`parse_category_option`).

    The file holds ``{"categories": {"top": [...], ...}, "attributes": [...], "bottom_end": ...}``;
    a file with only region keys is read as the categories mapping. ShopError for an unknown
    region, a malformed option or an unreadable file."""
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    if path is not None:
        config.update(_read_config_file(Path(path)))
    config.update({k: v for k, v in overrides.items() if v is not None})
    if category_options:
        config["categories"] = {**(config.get("categories") or {}), **parse_category_option(category_options)}
    categories = config.get("categories") or {}
    bad = [r for r in categories if r not in REGIONS]
    if bad:
        raise ShopError(f"unknown region(s) in the category mapping: {', '.join(bad)} (known: {', '.join(REGIONS)})")
    config["categories"] = {r: [str(v) for v in _as_list(vals)] for r, vals in categories.items()}
    return config


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ShopError(f"config file not found: {path}")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(path.read_text())
        else:
            data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ShopError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ShopError(f"config file {path} must hold a mapping")
    if set(data) <= set(REGIONS):
        data = {"categories": data}
    return data


def parse_category_option(values: Sequence[str]) -> dict[str, list[str]]:
    """``["top=shirt,t-shirt", "footwear=shoes"]`` -> {"top": ["shirt", "t-shirt"], "footwear": ["shoes"]}."""
    mapping: dict[str, list[str]] = {}
    for value in values:
        region, sep, labels = value.partition("=")
        if not sep or region.strip() not in REGIONS:
            raise ShopError(f"--category takes REGION=label1,label2 with REGION one of {', '.join(REGIONS)}; got {value!r}")
        mapping[region.strip()] = [v.strip() for v in labels.split(",") if v.strip()]
    return mapping


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value or [])


def region_categories(cat, categories: dict[str, list[str]], column: str = "label") -> tuple[dict, list[str]]:
    """Region -> label values that exist in the catalog (None = search everything), plus notes."""
    present = {str(v) for v, _ in cat.label_values(column)}
    if not present:
        return {r: None for r in REGIONS}, [f"catalog has no {column!r} values: every region searches the whole catalog"]
    out, notes = {}, []
    for region in REGIONS:
        wanted = categories.get(region)
        if wanted is None:
            out[region] = None
            notes.append(f"{region}: no categories mapped, searches the whole catalog")
            continue
        kept = [v for v in wanted if v in present]
        missing = [v for v in wanted if v not in present]
        if missing and kept:
            notes.append(f"{region}: categories not in this catalog: {', '.join(missing)}")
        if not kept:
            notes.append(f"{region}: none of {', '.join(wanted) or '(empty)'} is a {column!r} value in this catalog; "
                         "searches the whole catalog")
        out[region] = kept or None
    return out, notes


# -- the pipeline --------------------------------------------------------------------------
def shop_the_look(catalog, image: ImageSource, *, k: int = 5, regions: Sequence[str] = REGIONS,
                  config: dict[str, Any] | None = None, attribute_filter: bool = True,
                  probes: Sequence[str] | None = None, all_people: bool = False, use_mask: bool = True,
                  detector: PoseDetector | None = None, encoder: str | None = None,
                  restrict: bool = True, annotate: bool | str | Path = False) -> ShopResult:
    """Similar catalog items for each garment of the person (or every person) in ``image``.

    ``restrict=False`` searches the whole catalog for every region (used to measure crop quality).
    ``annotate``: write the annotated PNG (True: ``<catalog>/artifacts/shop/<photo stem>.png``).
    Raises :class:`ShopError` (or :class:`NoPersonFound`) with a readable message on bad input.
    """
    if k < 1:
        raise ShopError("k must be at least 1")
    unknown = [r for r in regions if r not in REGIONS]
    if unknown or not regions:
        raise ShopError(f"regions must be a non-empty subset of {', '.join(REGIONS)}; got {', '.join(regions) or 'none'}")
    config = config or load_config()
    photo = load_photo(image)
    detector = detector or get_detector()
    people = find_people(detector, photo, all_people)
    spec = encoder or catalog.default_encoder
    mapping, notes = region_categories(catalog, config["categories"], config.get("category_column", "label"))
    if not restrict:
        mapping, notes = {r: None for r in REGIONS}, ["category restriction off: every region searches the whole catalog"]
    if len(people) > 1 and not all_people:
        notes.append(f"{len(people)} people found: kept the largest (use all_people / --all-people for every one)")
        people = people[:1]
    pixels = np.asarray(photo)
    out = []
    for person in people:
        out.append(_shop_person(catalog, photo, pixels, person, k, regions, config, mapping, spec,
                                attribute_filter, probes, use_mask))
    result = ShopResult(catalog=catalog.name, encoder=spec, detector=getattr(detector, "name", "custom"),
                        image={"path": str(image) if isinstance(image, (str, Path)) else None,
                               "width": photo.width, "height": photo.height},
                        people=out, notes=notes)
    if annotate:
        stem = Path(str(image)).stem if isinstance(image, (str, Path)) else "photo"
        target = catalog.artifacts_dir / "shop" / f"{stem}.png" if annotate is True else Path(annotate)
        result.annotated = str(render_shop(photo, result, target))
    return result


def load_photo(image: ImageSource) -> Image.Image:
    try:
        photo = open_image(image)
    except ImageError as exc:
        raise ShopError(f"cannot use this photo ({exc.reason}): {exc.message}") from None
    if min(photo.size) < MIN_PHOTO_SIDE:
        raise ShopError(f"photo is too small ({photo.width}x{photo.height} px); shop the look needs at least "
                        f"{MIN_PHOTO_SIDE} px on the short side")
    return photo


def find_people(detector: PoseDetector, photo: Image.Image, all_people: bool) -> list[Person]:
    """Detected people, largest first; NoPersonFound when there is none."""
    people = detector.detect(photo, max_people=MAX_PEOPLE if all_people else CANDIDATE_PEOPLE)
    if not people:
        raise NoPersonFound("no person found in the photo: shop the look needs a photo of a dressed person "
                            "(for a product photo use `lookalike search --image`)")
    return sorted(people, key=lambda p: -person_area(p, photo.size))


def person_area(person: Person, size: tuple[int, int]) -> float:
    if person.mask is not None and (person.mask > 0.5).any():
        return float((person.mask > 0.5).sum())
    box = person_box(person, size)
    return float((box[2] - box[0]) * (box[3] - box[1]))


def person_box(person: Person, size: tuple[int, int], pad: float = 0.08) -> list[int]:
    """The person's visible keypoints (and mask) bounds, padded, clamped to the image."""
    w, h = size
    box = person.box() or (0, 0, w, h)
    if person.mask is not None and (person.mask > 0.5).any():
        ys, xs = np.nonzero(person.mask > 0.5)
        box = (min(box[0], xs.min()), min(box[1], ys.min()), max(box[2], xs.max()), max(box[3], ys.max()))
    px, py = pad * (box[2] - box[0]), pad * (box[3] - box[1])
    return [max(0, int(box[0] - px)), max(0, int(box[1] - py)), min(w, int(box[2] + px) + 1), min(h, int(box[3] + py) + 1)]


def _shop_person(catalog, photo, pixels, person, k, regions, config, mapping, spec, attribute_filter,
                 probes, use_mask) -> PersonResult:
    check = body_check(person, photo.size)
    found, skipped = garment_regions(person, photo.size, regions, config.get("bottom_end", "auto"),
                                     image=pixels, use_mask=use_mask)
    result = PersonResult(box=person_box(person, photo.size), score=round(person.score, 3), body=check.to_dict(),
                          skipped=[{"name": s.name, "reason": s.reason} for s in skipped])
    if not check.full_body:
        result.notes.append(f"not a full-body photo ({', '.join(check.missing())} not visible): "
                            "results only for the visible regions")
    where: dict[str, Any] = {}
    if attribute_filter:
        person_crop = photo.crop(result.box)
        result.attributes, notes = predict_attributes(catalog, person_crop, config.get("attributes", []), probes)
        result.notes += notes
        where = {a["column"]: a["value"] for a in result.attributes}
    else:
        result.notes.append("attribute filter off")
    if not found:
        return result
    crops = [photo.crop(tuple(r.box)) for r in found]
    vectors = catalog.embed_images(crops, spec)
    for region, vector in zip(found, vectors):
        filters = dict(where)
        if mapping.get(region.name):
            filters[config.get("category_column", "label")] = mapping[region.name]
        hits = catalog.search(vector=vector, k=k, where=filters or None, encoder=spec)
        result.regions.append(RegionResult(
            name=region.name, box=region.box, visibility=region.visibility, categories=mapping.get(region.name),
            results=hits,
            keypoints=region.keypoints, notes=region.notes))
    return result


# -- attribute filter ----------------------------------------------------------------------
def predict_attributes(catalog, person_crop: Image.Image, columns: Sequence[str],
                       probes: Sequence[str] | None = None) -> tuple[list[dict], list[str]]:
    """Predicted catalog attributes (e.g. gender) of the person, each to filter results by, and notes
    saying which attributes could not be used and why. ``probes`` names probes explicitly; otherwise
    a probe named ``<catalog>-<column>`` (the `lookalike train probe` default) is used per column."""
    notes, chosen = [], []
    if probes:
        for name in probes:
            try:
                chosen.append(load_probe(name, catalog.home))
            except FileNotFoundError as exc:
                raise ShopError(str(exc)) from None
    else:
        columns_present = set(catalog.metadata_columns()) | {"label"}
        for column in columns:
            if column not in columns_present:
                notes.append(f"no {column!r} column in the catalog: not filtered by {column}")
                continue
            try:
                chosen.append(load_probe(f"{catalog.name}-{column}", catalog.home))
            except FileNotFoundError:
                notes.append(f"no probe for {column!r}: not filtered by {column} (train one with "
                             f"`lookalike train probe --catalog {catalog.name} --label {column}`)")
    found = []
    for probe in chosen:
        vector = catalog.embed_images([person_crop], probe.encoder)
        values, probabilities = probe.predict(vector)
        found.append({"column": probe.label, "value": values[0], "probe": probe.name,
                      "probability": round(float(probabilities[0].max()), 3)})
    return found, notes
