"""Shop the look's regions, before / after issue #15: does each garment end up in a region of the
right category, and do its top-5 results have that category?

    LOOKALIKE_HOME=/tmp/home python -m lookalike.bench.studies.shop_regions --catalog clothing

Two sets of looks, each with a truth list of (slot, catalog label) per look:

1. **composites** (``--composites N``, seeded): catalog items of the test split pasted on a
   person-shaped layout (a 400 x 880 canvas, the keypoints of tests/fakes.py's upright person scaled
   x2), one of: top + bottom, outerwear + bottom, dress; shoes; a hat on half of them (trousers and
   shorts get a background gap between the legs below the crotch, as on a person). The keypoints
   are given (a fixed detector), so this measures the region decisions and the categories, not the
   pose model.
2. **people**: the shared photos (/work/shared/datasets/people) with the MediaPipe pose model and
   the garments labelled by hand in :data:`PEOPLE_TRUTH` (in clothing-small's label names).

Per truth slot (top, outerwear, onepiece, bottom, footwear, head), for **before** (``decide=False``:
the fixed top / bottom / footwear boxes and the static mapping, main before #15; a dress or a coat is
what its "top" box shows, a hat has no region) and **after** (``decide=True``):

* ``category_acc`` — the region's category equals the truth label (after: the label probe's category;
  before, which names none: the label of its first result). A slot with no region counts as wrong.
* ``hit@5`` — share of the region's top-5 results with the truth label (0 without a region). The
  pasted item itself is never counted (its id is dropped from the results before the top 5).
* ``found`` — share of truth garments that got a region; ``extra`` — regions kept with no garment of
  their slot in the look (e.g. a head region on a bare head).

``--split validation --sweep`` replays :func:`lookalike.shop.categories.final_category` for each
``PROBE_TRUSTED`` value on validation composites (how it was chosen); the default run reports on the
test composites with the shipped value (``--probe-trusted 0``: the probe's category always, as before
the rule). Pasted items are excluded from every region's results
(``shop_the_look(exclude=...)``), so they neither count in hit@5 nor vote for a category.

The label probe used for the checks is trained here on the catalog's **train** split only
(``--split-column``; named ``<catalog>-label-train``), so no composite item was seen by it.
Writes JSON (``--out``) and prints the tables; report the load average with the timings.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lookalike.catalog import Catalog
from lookalike.shop import categories as cats
from lookalike.shop.pipeline import load_config, shop_the_look
from lookalike.shop.pose import INDEX, LANDMARKS, Person

os.environ.setdefault("LOOKALIKE_THREADS", "2")
REPO = Path(__file__).resolve().parents[4]
PEOPLE = Path(os.environ.get("LOOKALIKE_SHARED", REPO.parent / "shared")) / "datasets" / "people"
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(11)) + (1.01,)  # 0: always the probe; 1.01: always the results
SLOTS = ("top", "outerwear", "onepiece", "bottom", "footwear", "head")
# Where "before" (the fixed three boxes) shows each slot's garment.
BEFORE_REGION = {"top": "top", "outerwear": "top", "onepiece": "top", "bottom": "bottom", "footwear": "footwear",
                 "head": None}
# Hand labels of the shared people photos, in clothing-small's label names (looked at, not guessed).
PEOPLE_TRUTH = {
    "businessman-suit.jpg": {"outerwear": "outwear", "bottom": "pants", "footwear": "shoes"},
    "boy-cap-upper-body.jpg": {"head": "hat", "top": "shirt"},
    "skier.jpg": {"outerwear": "outwear", "bottom": "pants", "footwear": "shoes", "head": "hat"},
    "woman-standing-illustration.png": {"top": "t-shirt", "bottom": "pants", "footwear": "shoes"},
    "yoga-tree-pose.jpg": {"top": "longsleeve", "bottom": "pants"},
}

# The upright person of tests/fakes.py, x2, 80 px down: shoulders y=240, hips 440, knees 600, ankles 760.
_UPRIGHT = {
    "nose": (100, 40), "left_eye": (105, 35), "right_eye": (95, 35), "left_ear": (110, 40), "right_ear": (90, 40),
    "left_shoulder": (120, 80), "right_shoulder": (80, 80), "left_elbow": (130, 130), "right_elbow": (70, 130),
    "left_wrist": (135, 170), "right_wrist": (65, 170), "left_hip": (112, 180), "right_hip": (88, 180),
    "left_knee": (112, 260), "right_knee": (88, 260), "left_ankle": (112, 340), "right_ankle": (88, 340),
    "left_heel": (110, 350), "right_heel": (86, 350), "left_foot_index": (122, 356), "right_foot_index": (98, 356),
}
CANVAS = (400, 880)
SKIN = (224, 180, 150)
# Paste boxes (x0, y0, x1, y1) on the canvas per slot.
PASTE = {"head": (140, 10, 260, 130), "top": (110, 220, 290, 470), "outerwear": (100, 215, 300, 500),
         "onepiece": (110, 220, 290, 640), "pants": (140, 430, 260, 775), "short": (140, 430, 260, 630),
         "footwear": (140, 745, 270, 810)}


def layout_person() -> Person:
    kp = np.zeros((len(LANDMARKS), 3), np.float32)
    for name in LANDMARKS:
        kp[INDEX[name]] = (200, 160, 0.0)
    for name, (x, y) in _UPRIGHT.items():
        kp[INDEX[name]] = (2 * x, 2 * y + 80, 0.99)
    return Person(keypoints=kp)


class LayoutDetector:
    name = "layout"

    def detect(self, image, max_people: int = 1):
        return [layout_person()]


def _paste(canvas: Image.Image, path: str, box) -> None:
    x0, y0, x1, y1 = box
    item = Image.open(path).convert("RGB")
    scale = max((x1 - x0) / item.width, (y1 - y0) / item.height)  # fill the box, centre-crop the rest
    item = item.resize((max(1, round(item.width * scale)), max(1, round(item.height * scale))))
    left, top = (item.width - (x1 - x0)) // 2, (item.height - (y1 - y0)) // 2
    canvas.paste(item.crop((left, top, left + x1 - x0, top + y1 - y0)), (x0, y0))


def composites(cat: Catalog, n: int, seed: int, column: str, split_column: str | None,
               split: str = "test") -> list[dict]:
    """``n`` looks of items of the ``split`` rows: {"image", "truth": {slot: label}, "ids": pasted item ids}."""
    rng = np.random.default_rng(seed)
    ids, _ = cat.vectors()
    labels = cat.labels(column)
    splits = cat.labels(split_column) if split_column else [None] * len(ids)
    pool: dict[str, list[tuple[str, str]]] = defaultdict(list)  # slot -> (id, label)
    for item_id, label, row_split in zip(ids, labels, splits):
        if label is None or (split_column and str(row_split).lower() != split):
            continue
        for slot in cats.slots_of(label):
            pool[slot].append((item_id, label))
    short = {"shorts", "skirt"}
    looks = []
    for i in range(n):
        kind = ("two", "outer", "dress")[i % 3]
        if kind == "dress" and not pool["onepiece"]:
            kind = "two"
        if kind == "outer" and not pool["outerwear"]:
            kind = "two"
        canvas = Image.new("RGB", CANVAS, (236, 236, 232))
        draw = ImageDraw.Draw(canvas)
        draw.ellipse((165, 40, 235, 130), fill=SKIN)                         # face
        draw.rectangle((165, 600, 195, 760), fill=SKIN)                      # shins (covered by trousers)
        draw.rectangle((205, 600, 235, 760), fill=SKIN)
        truth, pasted = {}, []

        def put(slot: str, box_key: str, choices) -> str:
            item_id, label = choices[int(rng.integers(len(choices)))]
            _paste(canvas, cat.get(item_id).path, PASTE[box_key])
            truth[slot] = label
            pasted.append(item_id)
            return label

        if kind == "dress":
            put("onepiece", "onepiece", pool["onepiece"])
        else:
            bottoms = pool["bottom"]
            item_id, label = bottoms[int(rng.integers(len(bottoms)))]
            box = PASTE["short" if label in short else "pants"]
            _paste(canvas, cat.get(item_id).path, box)
            if label != "skirt":  # two legs: the background shows between them below the crotch
                draw.rectangle((196, 500, 204, box[3]), fill=(236, 236, 232))
            truth["bottom"], pasted = label, pasted + [item_id]
            put("outerwear" if kind == "outer" else "top", "outerwear" if kind == "outer" else "top",
                pool["outerwear"] if kind == "outer" else pool["top"])
        if pool["footwear"]:
            put("footwear", "footwear", pool["footwear"])
        if pool["head"] and rng.random() < 0.5:
            put("head", "head", pool["head"])
        looks.append({"image": canvas, "truth": truth, "ids": pasted, "kind": kind})
    return looks


def score_look(result, truth: dict, pasted: set, decide: bool, k: int = 5) -> dict:
    """Per truth slot: region found, category right, hit@5; plus the extra regions."""
    person = result.people[0] if result.people else None
    regions = {}
    for region in (person.regions if person else []):
        regions.setdefault(region.name, region)
    out = {"slots": {}, "extra": []}
    used = set()
    for slot, label in truth.items():
        name = slot if decide else BEFORE_REGION[slot]
        region = regions.get(name) if name else None
        if region is None:
            out["slots"][slot] = {"found": 0, "category": 0, "hit5": 0.0, "predicted": None, "confidence": None,
                                  "hits": []}
            continue
        used.add(name)
        hits = [h for h in region.results if h.id not in pasted][:k]
        predicted = region.category if decide else (hits[0].label if hits else None)
        out["slots"][slot] = {"found": 1, "category": int(predicted == label),
                              "hit5": float(np.mean([h.label == label for h in hits])) if hits else 0.0,
                              "predicted": predicted, "confidence": region.confidence if decide else None, "fit": region.fit,
                              "hits": [h.label for h in hits]}
    out["extra"] = sorted(set(regions) - used)
    return out


def summarise(scored: list[dict]) -> dict:
    table = {}
    for slot in SLOTS:
        rows = [s["slots"][slot] for s in scored if slot in s["slots"]]
        if rows:
            table[slot] = {"n": len(rows), "found": round(float(np.mean([r["found"] for r in rows])), 3),
                           "category_acc": round(float(np.mean([r["category"] for r in rows])), 3),
                           "hit@5": round(float(np.mean([r["hit5"] for r in rows])), 3)}
    every = [r for s in scored for r in s["slots"].values()]
    table["all"] = {"n": len(every), "found": round(float(np.mean([r["found"] for r in every])), 3),
                    "category_acc": round(float(np.mean([r["category"] for r in every])), 3),
                    "hit@5": round(float(np.mean([r["hit5"] for r in every])), 3)}
    extra = defaultdict(int)
    for s in scored:
        for name in s["extra"]:
            extra[name] += 1
    table["extra_regions"] = dict(extra)
    return table


def sweep(looks: list[dict], thresholds=THRESHOLDS) -> dict:
    """Category accuracy per ``PROBE_TRUSTED`` value, from "after" looks scored with the probe always
    trusted (``probe_trusted=0``: ``predicted``/``confidence`` are the probe's; its share is
    confidence / fit, exact when every label is named for the region, π = 1): the rule of
    :func:`lookalike.shop.categories.final_category` replayed on each region's recorded results."""
    out = {}
    for t in thresholds:
        rows = defaultdict(list)
        for look in looks:
            for slot, r in look["slots"].items():
                if not r["found"]:
                    correct = 0
                else:
                    share = min(1.0, (r["confidence"] or 0.0) / r["fit"]) if r["fit"] else 0.0  # p / fit (π = 1)
                    label = cats.final_category((r["predicted"], share), r["hits"], t)[0]
                    correct = int(label == look["truth"][slot])
                rows[slot].append(correct)
                rows["all"].append(correct)
        out[f"{t:.2f}"] = {slot: round(float(np.mean(v)), 3) for slot, v in rows.items()}
    return out


def run(cat: Catalog, looks: list[dict], detector, probe: str, k: int = 5, modes=("before", "after"),
        probe_trusted: float | None = None) -> dict:
    out = {}
    config = load_config(probe_trusted=probe_trusted)
    for mode, decide in (("before", False), ("after", True)):
        if mode not in modes:
            continue
        scored, start = [], time.perf_counter()
        for look in looks:
            result = shop_the_look(cat, look["image"], k=k, detector=detector, config=config, exclude=look["ids"],
                                   attribute_filter=False, decide=decide, label_probe=probe if decide else None)
            scored.append({**score_look(result, look["truth"], set(look["ids"]), decide, k), "kind": look.get("kind")})
        out[mode] = {"summary": summarise(scored), "seconds_per_look": round((time.perf_counter() - start) / len(looks), 2),
                     "looks": [{"truth": look["truth"], **{k_: v for k_, v in s.items()}} for look, s in zip(looks, scored)]}
    return out


def print_table(title: str, report: dict) -> None:
    print(f"\n{title}")
    print(f"{'slot':10} {'n':>4}  {'found b/a':>11}  {'category acc b/a':>17}  {'hit@5 b/a':>11}")
    if "before" not in report:
        return
    before, after = report["before"]["summary"], report["after"]["summary"]
    for slot in (*SLOTS, "all"):
        if slot in after:
            b, a = before[slot], after[slot]
            print(f"{slot:10} {a['n']:>4}  {b['found']:.2f}/{a['found']:.2f}  {b['category_acc']:>8.2f}/{a['category_acc']:.2f}"
                  f"  {b['hit@5']:>5.2f}/{a['hit@5']:.2f}")
    print(f"extra regions (no garment of their slot) before {before['extra_regions']} after {after['extra_regions']}")
    print(f"seconds per look: before {report['before']['seconds_per_look']}, after {report['after']['seconds_per_look']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="clothing")
    parser.add_argument("--home", default=None)
    parser.add_argument("--column", default="label")
    parser.add_argument("--split-column", default="split", help="probe trained on 'train' rows, composites from 'test'")
    parser.add_argument("--composites", type=int, default=60)
    parser.add_argument("--split", default="test", help="split whose items are pasted (validation: to choose rules)")
    parser.add_argument("--sweep", action="store_true",
                        help="choose PROBE_TRUSTED: 'after' only, probe always trusted, accuracy per threshold")
    parser.add_argument("--probe-trusted", type=float, default=None,
                        help="override categories.PROBE_TRUSTED (0: the probe's category always, as before the rule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--people", type=Path, default=PEOPLE)
    parser.add_argument("--no-people", action="store_true", help="skip the photos (no MediaPipe)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/shop_regions.json"))
    parser.add_argument("--save-examples", type=int, default=3, help="composite PNGs written beside --out")
    args = parser.parse_args()

    import torch  # the bench measures on the 2 threads a user gets

    torch.set_num_threads(2)
    cat = Catalog.open(args.catalog, home=args.home)
    split = args.split_column if args.split_column in cat.metadata_columns() else None
    probe = f"{cat.name}-{args.column}-train"
    report = cat.train_probe(args.column, name=probe, split_column=split, refit=False) if split else \
        cat.train_probe(args.column, name=probe)
    looks = composites(cat, args.composites, args.seed, args.column, split, args.split)
    trusted = cats.PROBE_TRUSTED if args.probe_trusted is None else args.probe_trusted
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i, look in enumerate(looks[:args.save_examples]):
        look["image"].save(args.out.parent / f"shop_regions_composite_{i}.png")
    out = {"catalog": cat.name, "items": len(cat), "encoder": cat.default_encoder,
           "probe": {"name": probe, "trained_on": "train split" if split else "all (holdout scored)",
                     "held_out_accuracy": round(report.accuracy, 3)},
           "composite_split": args.split, "probe_trusted": 0.0 if args.sweep else trusted}
    if args.sweep:
        out["composites"] = run(cat, looks, LayoutDetector(), probe, modes=("after",), probe_trusted=0.0)
        out["sweep"] = sweep(out["composites"]["after"]["looks"])
        print(f"category accuracy per PROBE_TRUSTED on {len(looks)} {args.split} composites:")
        for t, row in out["sweep"].items():
            print(f"  {t}: " + "  ".join(f"{slot} {v:.3f}" for slot, v in row.items()))
    else:
        out["composites"] = run(cat, looks, LayoutDetector(), probe, probe_trusted=trusted)
    if not args.no_people and not args.sweep and args.people.is_dir():
        photos = [{"image": args.people / name, "truth": truth, "ids": []} for name, truth in PEOPLE_TRUTH.items()
                  if (args.people / name).exists()]
        out["people"] = run(cat, photos, None, probe, probe_trusted=trusted)
    out["load_average_1min"] = round(os.getloadavg()[0], 1)
    args.out.write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps({k: v for k, v in out.items() if k not in ("composites", "people")}, indent=1))
    print_table(f"composites ({len(looks)} looks, {cat.name} {args.split} items on a person layout)", out["composites"])
    if "people" in out:
        print_table(f"people photos ({len(out['people']['before']['looks'])}, MediaPipe keypoints)", out["people"])
    print(f"\nload average (1 min): {out['load_average_1min']}; JSON: {args.out}")


if __name__ == "__main__":
    main()
