"""Shop the look: from a photo of a dressed person to similar catalog products per garment.

    result = shop_the_look(Catalog.open("clothing"), "photo.jpg", k=5)
    result.to_dict()                                   # per person: body check, regions, top-k items

The pipeline follows Myntra's "Buy Me That Look": person keypoints (:mod:`lookalike.shop.pose`) → the
full-body check and candidate boxes (:mod:`lookalike.shop.regions`: top, bottom, footwear, one-piece,
outerwear, head, hands) → each candidate crop classified by the catalog's own label probe
(:mod:`lookalike.shop.categories`): one garment or top + bottom, and every region kept only when the
catalog's categories fit it → optional attribute filter from a probe (e.g. gender,
:mod:`lookalike.train.probes`) → crop, embed, and search each region only among its categories.
Without labels, a documented colour rule decides one-piece vs two-piece and only top, bottom,
one-piece and footwear are looked for. ``decide=False`` is the fixed three boxes with the static
:data:`DEFAULT_CATEGORIES` mapping (the behaviour before issue #15, kept for comparison).
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
from PIL import Image

from lookalike.data.images import ImageError, ImageSource, open_image
from lookalike.search import SearchResult
from lookalike.shop.pose import Person, PoseDetector, get_detector
from lookalike.shop import categories as cats
from lookalike.shop.regions import (ALL_REGIONS, BARE_HEAD_SKIN, ONEPIECE_COLOUR, REGIONS, Region, Skipped,
                                    bare_head, body_check, fabric_colours, garment_regions, onepiece_by_colour)
from lookalike.train.probes import load_probe
from lookalike.viz.shop import render_shop

# The static mapping of the fixed three boxes (``decide=False``); the probe-led path uses the synonym
# prior of lookalike.shop.categories instead, so other catalogs' label names work too.
DEFAULT_CATEGORIES: dict[str, list[str]] = {
    "top": ["t-shirt", "shirt", "longsleeve", "outwear", "dress"],
    "bottom": ["pants", "shorts", "skirt"],
    "footwear": ["shoes"],
}
DEFAULT_CONFIG: dict[str, Any] = {"categories": {}, "category_column": "label",
                                  "attributes": ["gender"], "bottom_end": "auto",
                                  "probe_trusted": cats.PROBE_TRUSTED}
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
    category: str | None = None           # the label probe's best category for this crop
    confidence: float | None = None       # its probability on this crop
    fit: float | None = None              # probe mass on the categories this region may hold


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
        for person_doc, person in zip(doc["people"], self.people):
            for region_doc, region in zip(person_doc["regions"], person.regions):  # what `lookalike shop --json` prints
                region_doc["results"] = [h.to_dict(("rank", "id", "score", "label", "path"), digits=4)
                                         for h in region.results]
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
    bad = [r for r in categories if r not in ALL_REGIONS]
    if bad:
        raise ShopError(f"unknown region(s) in the category mapping: {', '.join(bad)} (known: {', '.join(ALL_REGIONS)})")
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
    if set(data) <= set(ALL_REGIONS):
        data = {"categories": data}
    return data


def parse_category_option(values: Sequence[str]) -> dict[str, list[str]]:
    """``["top=shirt,t-shirt", "footwear=shoes"]`` -> {"top": ["shirt", "t-shirt"], "footwear": ["shoes"]}."""
    mapping: dict[str, list[str]] = {}
    for value in values:
        region, sep, labels = value.partition("=")
        if not sep or region.strip() not in ALL_REGIONS:
            raise ShopError(f"--category takes REGION=label1,label2 with REGION one of {', '.join(ALL_REGIONS)}; got {value!r}")
        mapping[region.strip()] = [v.strip() for v in labels.split(",") if v.strip()]
    return mapping


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value or [])


def region_categories(cat, categories: dict[str, list[str]], column: str = "label",
                      regions: Sequence[str] = REGIONS) -> tuple[dict, list[str]]:
    """Region -> label values that exist in the catalog (None = search everything), plus notes."""
    present = {str(v) for v, _ in cat.label_values(column)}
    if not present:
        return {r: None for r in regions}, [f"catalog has no {column!r} values: every region searches the whole catalog"]
    out, notes = {}, []
    for region in regions:
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
def shop_the_look(catalog, image: ImageSource, *, k: int = 5, regions: Sequence[str] | None = None,
                  config: dict[str, Any] | None = None, attribute_filter: bool = True,
                  probes: Sequence[str] | None = None, all_people: bool = False, use_mask: bool = True,
                  detector: PoseDetector | None = None, encoder: str | None = None,
                  restrict: bool = True, decide: bool = True, label_probe: str | None = None,
                  annotate: bool | str | Path = False, exclude: Collection[str] = ()) -> ShopResult:
    """Similar catalog items for each garment of the person (or every person) in ``image``.

    ``regions``: candidate regions to look for (default: all of :data:`ALL_REGIONS` with ``decide``,
    the classic three without). ``decide=True`` classifies every candidate crop with the catalog's
    label probe (``<catalog>-<category_column>``, trained once on first use when the catalog has
    labels; see :mod:`lookalike.shop.categories`) and keeps a region only when the catalog's
    categories fit it; ``decide=False`` searches the fixed boxes with :data:`DEFAULT_CATEGORIES`.
    ``label_probe`` names another probe for those checks (e.g. one trained on a train split only).
    ``restrict=False`` searches the whole catalog for every region (used to measure crop quality).
    ``annotate``: write the annotated PNG (True: ``<catalog>/artifacts/shop/<photo stem>.png``).
    ``exclude``: item ids never returned (a benchmark's pasted catalog items).
    With ``decide``, a region's ``category`` follows :func:`lookalike.shop.categories.final_category`:
    the probe's label when its share of the region's fit reaches ``config["probe_trusted"]``, else the majority
    label of the region's top results.
    Raises :class:`ShopError` (or :class:`NoPersonFound`) with a readable message on bad input.
    """
    if k < 1:
        raise ShopError("k must be at least 1")
    known = ALL_REGIONS if decide else REGIONS
    regions = list(regions) if regions is not None else list(known)
    unknown = [r for r in regions if r not in known]
    if unknown or not regions:
        raise ShopError(f"regions must be a non-empty subset of {', '.join(known)}; got {', '.join(regions) or 'none'}")
    config = config or load_config()
    photo = load_photo(image)
    detector = detector or get_detector()
    people = find_people(detector, photo, all_people)
    spec = encoder or catalog.default_encoder
    column = config.get("category_column", "label")
    if decide:
        chooser, notes = RegionChooser.for_catalog(catalog, column, config.get("categories") or {}, restrict,
                                                   label_probe or config.get("label_probe"))
    else:
        mapping, notes = region_categories(catalog, config.get("categories") or DEFAULT_CATEGORIES, column)
        if not restrict:
            mapping = {r: None for r in REGIONS}
        chooser = None
    if not restrict:
        notes = ["category restriction off: every region searches the whole catalog"]
    if len(people) > 1 and not all_people:
        notes.append(f"{len(people)} people found: kept the largest (use all_people / --all-people for every one)")
        people = people[:1]
    pixels = np.asarray(photo)
    out = []
    for person in people:
        out.append(_shop_person(catalog, photo, pixels, person, k, regions, config,
                                chooser if decide else _StaticChooser(mapping), spec, attribute_filter, probes,
                                use_mask, set(exclude)))
    result = ShopResult(catalog=catalog.name, encoder=spec, detector=getattr(detector, "name", "custom"),
                        image={"path": str(image) if isinstance(image, (str, Path)) else None,
                               "width": photo.width, "height": photo.height},
                        people=out, notes=notes)
    if annotate:
        stem = Path(str(image)).stem if isinstance(image, (str, Path)) else "photo"
        target = catalog.artifacts_dir / "shop" / f"{stem}.png" if annotate is True else Path(annotate)
        result.annotated = str(render_shop(photo, result, target))
    return result


@dataclass
class Decision:
    """What the chooser says about one candidate region."""
    keep: bool
    categories: list[str] | None          # labels to search among (None: the whole catalog)
    category: str | None = None
    confidence: float | None = None
    fit: float | None = None
    reason: str = ""
    share: float | None = None            # the category's probability among the region's labels


class _StaticChooser:
    """``decide=False``: every box is kept and searched with the fixed mapping."""

    def __init__(self, mapping: dict):
        self.mapping = mapping

    def decide(self, catalog, photo, person, pixels, found, skipped):
        return found, skipped, [Decision(True, self.mapping.get(r.name)) for r in found], []


class RegionChooser:
    """Keeps or drops candidate regions and picks the categories each is searched among.

    With a label probe: every candidate crop is classified (:mod:`lookalike.shop.categories`); the
    one-piece region wins over top + bottom when its fit (probe mass on one-piece and outerwear
    labels, on the shoulders-to-knees crop) beats the mean of the top's fit (or the outerwear's,
    whichever is higher) and the bottom's fit, unless the thighs are apart (colour); one-piece and
    outerwear are kept at ``categories.MIN_FIT``, head and hands at ``EXTRA_FIT`` (and a head whose
    forehead band is skin is bare); top, bottom and footwear are kept when the catalog has labels
    they may hold, except a top under a kept outerwear whose own fit is below ``MIN_FIT``. Without a probe (no labels): head, hands and outerwear are not looked
    for, and :func:`lookalike.shop.regions.onepiece_by_colour` decides one-piece vs two-piece.
    """

    def __init__(self, probe, prior: dict, explicit: dict, present: set[str], restrict: bool = True):
        self.probe, self.prior, self.explicit, self.present, self.restrict = probe, prior, explicit, present, restrict

    @classmethod
    def for_catalog(cls, catalog, column: str, explicit: dict, restrict: bool = True,
                    probe_name: str | None = None) -> tuple["RegionChooser", list[str]]:
        notes: list[str] = []
        present = [str(v) for v, _ in catalog.label_values(column)]
        probe = None
        if probe_name:
            try:
                probe = load_probe(probe_name, catalog.home)
            except FileNotFoundError as exc:
                raise ShopError(str(exc)) from None
        elif len(present) >= 2:
            probe, note = region_probe(catalog, column)
            if note:
                notes.append(note)
        else:
            notes.append(f"catalog has no {column!r} values: no label probe, so head, hands and outerwear are not "
                         "looked for and a colour rule decides one garment or two; regions search the whole catalog")
        labels = list(probe.classes) if probe is not None else present
        missing = {r: [v for v in vals if v not in present] for r, vals in explicit.items()}
        for region, gone in missing.items():
            if gone:
                notes.append(f"{region}: categories not in this catalog: {', '.join(gone)}")
        return cls(probe, cats.region_prior(labels, explicit), explicit, set(present), restrict), notes

    def _search_set(self, region: str, probabilities: dict | None) -> list[str] | None:
        if not self.restrict or not self.present:
            return None
        if region in self.explicit:
            kept = [v for v in self.explicit[region] if v in self.present]
            return kept or None
        if probabilities is None:
            chosen = [label for label, w in self.prior[region].items() if w >= 1.0]
        else:
            chosen = cats.searched_categories(region, probabilities, self.prior)
        return [c for c in chosen if c in self.present] or None

    def decide(self, catalog, photo, person, pixels, found: list[Region], skipped: list[Skipped]):
        """(kept regions, skipped, a Decision per kept region, notes)."""
        names = {r.name for r in found}
        notes: list[str] = []
        if self.probe is None:
            extra = [r for r in found if r.name in ("outerwear", "head", "hands")]
            for name in dict.fromkeys(r.name for r in extra):
                skipped.append(Skipped(name, "needs the catalog's label probe (none: no labels, or it could not be trained)"))
            found = [r for r in found if r not in extra]
            if "onepiece" in names and names & {"top", "bottom"}:
                one, why = onepiece_by_colour(person, photo.size, pixels)
                found, skipped = _one_or_two(found, skipped, one, f"colour rule: {why}")
            return found, skipped, [Decision(True, self._search_set(r.name, None)) for r in found], notes
        # More regions only when the catalog has them: a region beyond the classic three needs at
        # least one label named for it (synonym table or config), else it is not looked for.
        absent = [name for name in dict.fromkeys(r.name for r in found)
                  if name in cats.NEEDS_NAMED_LABEL and not any(w >= 1.0 for w in self.prior[name].values())]
        for name in absent:
            skipped.append(Skipped(name, f"the catalog has no {name} categories (no label is named like "
                                         f"{', '.join(cats.SYNONYMS[name][:4])}, ...)"))
        found = [r for r in found if r.name not in absent]
        crops = [photo.crop(tuple(r.box)) for r in found]
        probabilities = cats.probabilities_of(self.probe.classes, self.probe.predict(
            catalog.embed_images(crops, self.probe.encoder))[1]) if crops else []
        fits = [cats.region_fit(r.name, p, self.prior) for r, p in zip(found, probabilities)]
        best = {r.name: max(f for q, f in zip(found, fits) if q.name == r.name) for r in found}
        if "onepiece" in best and {"top", "bottom"} & set(best):
            upper = max(best.get("top", 0.0), best.get("outerwear", 0.0))
            two = float(np.mean([upper, best["bottom"]])) if "bottom" in best else upper
            one = best["onepiece"] > two
            why = f"label probe: one-piece fit {best['onepiece']:.2f} vs top + bottom {two:.2f}"
            colours = fabric_colours(person, photo.size, pixels)
            if one and colours is not None and colours[1] >= ONEPIECE_COLOUR:
                # the probe sees a dress in the long crop, but the gap between the thighs is not
                # the fabric below the waist: two legs in trousers, so not one garment
                one, why = False, f"{why}, but the thighs are apart (colour change {colours[1]:.0f})"
            found_one, skipped = _one_or_two(found, skipped, one, why)
            keep = [r in found_one for r in found]
            found = [r for r, k in zip(found, keep) if k]
            probabilities = [p for p, k in zip(probabilities, keep) if k]
            fits = [f for f, k in zip(fits, keep) if k]
        kept, decisions = [], []
        for region, p, fit in zip(found, probabilities, fits):
            guess = cats.best_category(region.name, p, self.prior)
            needed = cats.min_fit(region.name)
            if guess is None:
                skipped.append(Skipped(region.name, f"the catalog has no {region.name} categories (every label is "
                                                    "named for another region)"))
                continue
            if fit < needed:
                top = max(p, key=p.get)
                skipped.append(Skipped(region.name, f"the catalog's categories do not fit this region: the label probe "
                                                    f"sees {top} (p={p[top]:.2f}); fit {fit:.2f} < {needed}"))
                continue
            skin = bare_head(region.box, pixels) if region.name == "head" else None
            if skin is not None and skin >= BARE_HEAD_SKIN:
                # the probe has no "nothing" class: a bare head still looks most like a hat to it
                skipped.append(Skipped(region.name, f"bare head: {skin:.0%} of the forehead band is skin "
                                                    f"(a hat covers it; >= {BARE_HEAD_SKIN:.0%} means none)"))
                continue
            kept.append(region)
            decisions.append(Decision(True, self._search_set(region.name, p), guess[0], round(guess[1], 3),
                                      round(fit, 3), share=cats.region_share(guess[0], p, self.prior, region.name)))
        names = [r.name for r in kept]
        if "outerwear" in names and "top" in names:
            top, outer = names.index("top"), names.index("outerwear")
            if decisions[top].fit < cats.MIN_FIT <= decisions[outer].fit:
                skipped.append(Skipped("top", f"covered by the outerwear: the label probe sees {decisions[outer].category} "
                                              f"on the torso (top fit {decisions[top].fit:.2f} < {cats.MIN_FIT})"))
                del kept[top], decisions[top]
        for region, decision in zip(kept, decisions):
            if decision.fit is not None and decision.fit < cats.MIN_FIT:
                region.notes = region.notes + [f"the label probe doubts this region (fit {decision.fit:.2f}; "
                                               f"sees {decision.category} at p={decision.confidence:.2f})"]
        return kept, skipped, decisions, notes


def _one_or_two(found: list[Region], skipped: list[Skipped], one: bool, why: str):
    """Drop the one-piece candidate or the top and bottom ones, saying why."""
    if one:
        gone = [r for r in found if r.name in ("top", "bottom")]
        found = [r for r in found if r.name not in ("top", "bottom")]
        for region in gone:
            skipped.append(Skipped(region.name, f"one garment from the shoulders down ({why})"))
        for region in found:
            if region.name == "onepiece":
                region.notes = region.notes + [f"one garment ({why})"]
    else:
        if any(r.name == "onepiece" for r in found):
            skipped.append(Skipped("onepiece", f"top and bottom are separate garments ({why})"))
        found = [r for r in found if r.name != "onepiece"]
    return found, skipped


def region_probe(catalog, column: str = "label"):
    """The catalog's label probe ``<catalog>-<column>`` and a note: loaded, or trained (and saved) on
    first use. (None, why) when it cannot be trained."""
    name = f"{catalog.name}-{column}"
    try:
        return load_probe(name, catalog.home), None
    except FileNotFoundError:
        pass
    try:
        report = catalog.train_probe(column)
    except (ValueError, LookupError, OSError) as exc:  # OSError: a read-only home cannot store it
        return None, f"no label probe ({exc}): regions are decided without it"
    return load_probe(name, catalog.home), (f"trained the label probe {name!r} for the region checks once "
                                            f"(held-out accuracy {report.accuracy:.2f})")


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


def _shop_person(catalog, photo, pixels, person, k, regions, config, chooser, spec, attribute_filter,
                 probes, use_mask, exclude: set[str] = frozenset()) -> PersonResult:
    check = body_check(person, photo.size)
    found, skipped = garment_regions(person, photo.size, regions, config.get("bottom_end", "auto"),
                                     image=pixels, use_mask=use_mask)
    found, skipped, decisions, notes = chooser.decide(catalog, photo, person, pixels, found, skipped)
    result = PersonResult(box=person_box(person, photo.size), score=round(person.score, 3), body=check.to_dict(),
                          skipped=[{"name": s.name, "reason": s.reason} for s in skipped], notes=notes)
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
    for region, decision, vector in zip(found, decisions, vectors):
        filters = dict(where)
        if decision.categories:
            filters[config.get("category_column", "label")] = decision.categories
        hits = catalog.search(vector=vector, k=k + len(exclude), where=filters or None, encoder=spec)
        hits = [h for h in hits if h.id not in exclude][:k]
        category, confidence, notes = decision.category, decision.confidence, region.notes
        if decision.category is not None:  # probe-led: weak probe evidence gives way to the results' labels
            guess = (decision.category, decision.share if decision.share is not None else decision.confidence or 0.0)
            category, share, source = cats.final_category(
                guess, [h.label for h in hits], float(config.get("probe_trusted", cats.PROBE_TRUSTED)))
            if category != decision.category:  # confidence: the results' vote share
                confidence = round(share, 3)
                notes = notes + [f"category from the top {min(len(hits), cats.VOTES)} results ({category}, "
                                 f"{confidence:.0%} of them); the label probe saw {decision.category} at "
                                 f"p={decision.confidence:.2f}, {guess[1]:.0%} of this region's mass "
                                 f"< {config.get('probe_trusted', cats.PROBE_TRUSTED)}"]
        result.regions.append(RegionResult(
            name=region.name, box=region.box, visibility=region.visibility, categories=decision.categories,
            results=hits, keypoints=region.keypoints, notes=notes, category=category,
            confidence=confidence, fit=decision.fit))
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
