"""Shop the look, measured on the shared people photos (not a test: numbers for docs/shop-the-look.md).

    LOOKALIKE_HOME=/work/tmp/home python -m lookalike.bench.studies.shop --catalog clothing

1. keypoint error vs the hand-labelled keypoints (pixels and fraction of torso height);
2. garment box IoU vs hand-drawn boxes (tests/shop/people_garment_boxes.json), with and without the mask;
3. category hit-rate of the top-5 with NO category restriction, per region per photo, next to the
   same search with the whole photo as the query (how much the crops help);
4. seconds per photo end to end (pose + boxes + embed + search) on 2 threads: cold first call and warm.

All with the fixed three boxes (``decide=False``); the probe-checked regions of issue #15 are measured
by ``python -m lookalike.bench.studies.shop_regions``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lookalike.catalog import Catalog
from lookalike.shop.pipeline import DEFAULT_CATEGORIES, shop_the_look
from lookalike.shop.pose import box_iou, get_detector
from lookalike.shop.regions import garment_regions

os.environ.setdefault("LOOKALIKE_THREADS", "2")
REPO = Path(__file__).resolve().parents[4]  # the repository (src/lookalike/bench/studies/shop.py)
PEOPLE = REPO.parent / "shared" / "datasets" / "people"
TRUTH_ROWS = {0: "woman-standing-illustration.png", 1: "businessman-suit.jpg"}


def keypoint_errors(detector, people: Path) -> dict:
    rows = list(csv.DictReader(open(people / "pose_landmark_truth.csv")))
    out = {}
    for row_index, photo in TRUTH_ROWS.items():
        truth = rows[row_index]
        person = detector.detect(Image.open(people / photo).convert("RGB"))[0]
        names = sorted({k[:-2] for k in truth})
        xy = {n: np.array([float(truth[f"{n}_x"]), float(truth[f"{n}_y"])]) for n in names}
        torso = np.linalg.norm((xy["left_shoulder"] + xy["right_shoulder"]) / 2 - (xy["left_hip"] + xy["right_hip"]) / 2)
        errors = {n: float(np.linalg.norm(np.array(person.point(n)[:2]) - xy[n])) for n in names}
        values = np.array(list(errors.values()))
        worst = max(errors, key=errors.get)
        out[photo] = {"points": len(names), "torso_px": round(float(torso), 1),
                      "mean_px": round(float(values.mean()), 1), "median_px": round(float(np.median(values)), 1),
                      "max_px": round(float(values.max()), 1), "worst": worst,
                      "mean_torso": round(float(values.mean() / torso), 3),
                      "median_torso": round(float(np.median(values) / torso), 3),
                      "max_torso": round(float(values.max() / torso), 3), "per_point_px": {k: round(v, 1) for k, v in errors.items()}}
    return out


def box_ious(detector, people: Path, truth_file: Path) -> dict:
    truth = json.loads(truth_file.read_text())["photos"]
    out = {}
    for photo, boxes in truth.items():
        image = Image.open(people / photo).convert("RGB")
        person = detector.detect(image)[0]
        row = {}
        for use_mask in (True, False):
            found, skipped = garment_regions(person, image.size, image=np.asarray(image), use_mask=use_mask)
            got = {r.name: r.box for r in found}
            for region in ("top", "bottom", "footwear"):
                key = f"{region}{'' if use_mask else '_nomask'}"
                if boxes[region] is None:
                    row[key] = "correctly skipped" if region not in got else "false box"
                else:
                    row[key] = round(box_iou(got[region], boxes[region]), 3) if region in got else "missed"
        out[photo] = row
    return out


def hit_rates(cat, people: Path, truth_file: Path, k: int = 5) -> dict:
    out = {}
    for photo in json.loads(truth_file.read_text())["photos"]:
        result = shop_the_look(cat, people / photo, k=k, restrict=False, attribute_filter=False, decide=False)
        whole = cat.search(image=people / photo, k=k)
        row = {}
        for region in result.people[0].regions:
            wanted = set(DEFAULT_CATEGORIES[region.name])
            row[region.name] = {
                "crop": round(sum(h["label"] in wanted for h in region.results) / k, 2),
                "whole_photo": round(sum(h.label in wanted for h in whole) / k, 2),
                "labels": [h["label"] for h in region.results]}
        out[photo] = row
    return out


def timings(cat, people: Path, repeats: int) -> dict:
    """Wall and CPU seconds per photo. On a shared box the wall time swings with other processes'
    load; process CPU time (all threads of this process) is the steadier figure."""
    photos = sorted(p for p in people.iterdir() if p.suffix in (".jpg", ".png"))
    full, detect = [], []
    for _ in range(repeats):
        for photo in photos:
            wall, cpu = time.perf_counter(), time.process_time()
            shop_the_look(cat, photo, k=5, decide=False)
            full.append((time.perf_counter() - wall, time.process_time() - cpu))
            image = Image.open(photo).convert("RGB")
            wall, cpu = time.perf_counter(), time.process_time()
            get_detector().detect(image, max_people=3)
            detect.append((time.perf_counter() - wall, time.process_time() - cpu))
    full, detect = np.array(full), np.array(detect)
    load = os.getloadavg()[0]
    return {"warm_wall_median_s": round(float(np.median(full[:, 0])), 3),
            "warm_wall_min_s": round(float(np.min(full[:, 0])), 3),
            "warm_cpu_median_s": round(float(np.median(full[:, 1])), 3),
            "detect_wall_median_s": round(float(np.median(detect[:, 0])), 3),
            "detect_cpu_median_s": round(float(np.median(detect[:, 1])), 3),
            "photos": len(photos), "repeats": repeats, "cpus": len(os.sched_getaffinity(0)),
            "load_average_1min": round(load, 1)}


def cold_cli(catalog: str, home: str | None, photo: Path, runs: int = 2) -> dict:
    """A fresh `lookalike shop` process per photo, as a user runs it: imports, model loading, PNG."""
    env = {**os.environ, "LOOKALIKE_THREADS": "2", **({"LOOKALIKE_HOME": home} if home else {})}
    command = [sys.executable, "-m", "lookalike", "shop", "--catalog", catalog, "--image", str(photo), "--json"]
    walls = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / runs
    return {"photo": photo.name, "runs": runs, "wall_s": [round(w, 2) for w in walls], "cpu_s": round(cpu, 2)}


def summary(report: dict) -> dict:
    """Means over photos: IoU per region (with/without mask) and hit-rate per region (crop vs whole photo)."""
    out = {}
    for region in ("top", "bottom", "footwear"):
        for key in (region, f"{region}_nomask"):
            values = [row[key] for row in report["iou"].values() if isinstance(row.get(key), float)]
            out[f"iou_{key}"] = round(float(np.mean(values)), 3)
        rates = [row[region] for row in report["hit_rate_top5_unrestricted"].values() if region in row]
        out[f"hit_{region}_crop"] = round(float(np.mean([r["crop"] for r in rates])), 3)
        out[f"hit_{region}_whole_photo"] = round(float(np.mean([r["whole_photo"] for r in rates])), 3)
        out[f"hit_{region}_n"] = len(rates)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="clothing")
    parser.add_argument("--home", default=None)
    parser.add_argument("--people", type=Path, default=PEOPLE)
    parser.add_argument("--truth", type=Path, default=REPO / "tests" / "shop" / "people_garment_boxes.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/work/tmp/shop/bench.json"))
    args = parser.parse_args()

    torch.set_num_threads(2)
    cat = Catalog.open(args.catalog, home=args.home)
    detector = get_detector()
    report = {"catalog": cat.name, "items": len(cat), "encoder": cat.default_encoder,
              "keypoints": keypoint_errors(detector, args.people),
              "iou": box_ious(detector, args.people, args.truth),
              "hit_rate_top5_unrestricted": hit_rates(cat, args.people, args.truth),
              "timing": timings(cat, args.people, args.repeats),
              "cold_cli": cold_cli(args.catalog, args.home, args.people / "skier.jpg")}
    report["summary"] = summary(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "keypoints"}, indent=1))
    print(json.dumps({p: {k: v for k, v in r.items() if k != "per_point_px"} for p, r in report["keypoints"].items()},
                     indent=1))


if __name__ == "__main__":
    main()
