"""Measure the steering stages of search on a labelled catalog: multi-example queries, MMR
diversity and the "no close match" threshold.

    LOOKALIKE_HOME=/tmp/home python -m lookalike.bench.studies.steering --catalog clothing \
        --triples 1000 --queries 500 --out /tmp/steering.json

1. **Examples** — random triples (A, B positives of one label L, C a negative of another label):
   P@10 of label L (the examples themselves excluded) for A alone, A+B, and A+B−C, under each
   combination rule of :mod:`lookalike.search.examples` (``mean``: Rocchio; ``max``: best-score
   fusion over the union of each positive's top ``--depth`` candidates).
2. **Diversity** — leave-one-out queries: top 10 of the plain ranking vs MMR (λ grid) over the top
   ``--depth`` candidates, and near-duplicate collapse: P@10 (same label) and intra-list similarity.
3. **No close match** — the catalog minus its ``test`` split is calibrated (both methods); the
   held-out ``test`` photos are in-catalog queries, generated off-domain images
   (:func:`offdomain_images`) the others: the rate of each flagged. The same on a generated shapes
   catalog (:func:`shape_images`: 9 shape/colour classes, held-out shapes drawn with other seeds).
Prints markdown tables; ``--out`` writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from lookalike.catalog import Catalog
from lookalike.index.distances import distance_to_score, exact_knn, l2_normalize
from lookalike.search.calibration import DEFAULT_MISS_RATE, METHODS, calibrate
from lookalike.search.diversity import NEAR_DUPLICATE_DISTANCE, collapse_duplicates, intra_list_similarity, mmr
from lookalike.search.examples import fuse_scores, weighted_mean

OFFDOMAIN_KINDS = ("landscape", "noise", "blank", "face", "text", "pattern")


# -- generated images -----------------------------------------------------------------------------
def offdomain_images(per_kind: int = 20, size: int = 256, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    """Images unlike product photos, ``per_kind`` of each of :data:`OFFDOMAIN_KINDS`: landscape-like
    gradients (sky over ground, a sun, hills), noise (uniform, Gaussian, blurred), blank (one
    colour), face-like drawings, text, and geometric patterns (stripes, checkerboards)."""
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    for kind in OFFDOMAIN_KINDS:
        for _ in range(per_kind):
            images.append(_draw(kind, size, rng))
            kinds.append(kind)
    return images, kinds


def _colour(rng, low=0, high=256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _draw(kind: str, s: int, rng: np.random.Generator) -> Image.Image:
    if kind == "landscape":
        horizon = int(s * rng.uniform(0.4, 0.7))
        t = np.linspace(0, 1, horizon)[:, None, None]
        sky_top, sky_low = np.array(_colour(rng, 20, 140)), np.array(_colour(rng, 150, 256))
        a = np.zeros((s, s, 3), np.float64)
        a[:horizon] = sky_top * (1 - t) + sky_low * t
        ground = np.array(_colour(rng, 20, 160))
        a[horizon:] = ground * np.linspace(1, 0.6, s - horizon)[:, None, None]
        img = Image.fromarray(a.astype(np.uint8))
        d = ImageDraw.Draw(img)
        if rng.random() < 0.6:
            r, cx, cy = rng.integers(10, 30), rng.integers(30, s - 30), rng.integers(15, max(16, horizon - 20))
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_colour(rng, 200, 256))
        xs = np.linspace(0, s, 8)
        hills = [(float(x), float(horizon - rng.integers(0, s // 5))) for x in xs]
        d.polygon([(0, horizon)] + hills + [(s, horizon)], fill=tuple(int(c * 0.8) for c in ground))
        return img
    if kind == "noise":
        style = rng.integers(3)
        if style == 0:
            return Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8))
        a = np.clip(rng.normal(128, rng.uniform(20, 80), (s, s, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(a)
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6))) if style == 2 else img
    if kind == "blank":
        return Image.new("RGB", (s, s), _colour(rng))
    if kind == "face":
        img = Image.new("RGB", (s, s), _colour(rng, 150, 256))
        d = ImageDraw.Draw(img)
        w, h = s * rng.uniform(0.45, 0.6), s * rng.uniform(0.6, 0.75)
        x0, y0 = (s - w) / 2, (s - h) / 2
        d.ellipse([x0, y0, x0 + w, y0 + h], fill=_colour(rng, 150, 240), outline=(60, 40, 30), width=3)
        d.pieslice([x0, y0 - h * 0.05, x0 + w, y0 + h * 0.4], 180, 360, fill=_colour(rng, 0, 120))   # hair
        ey, er = y0 + h * 0.42, s * 0.035
        for ex in (x0 + w * 0.3, x0 + w * 0.7):
            d.ellipse([ex - er * 1.8, ey - er, ex + er * 1.8, ey + er], fill=(250, 250, 250))
            d.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(30, 30, 30))
        d.line([(s / 2, ey + er), (s / 2 - 6, y0 + h * 0.62), (s / 2 + 4, y0 + h * 0.64)], fill=(90, 60, 50), width=3)
        d.arc([x0 + w * 0.3, y0 + h * 0.62, x0 + w * 0.7, y0 + h * 0.82], 20, 160, fill=(150, 30, 30), width=4)
        return img
    if kind == "text":
        img = Image.new("RGB", (s, s), _colour(rng, 200, 256))
        d = ImageDraw.Draw(img)
        words = ["lorem", "ipsum", "dolor", "sit", "amet", "invoice", "total", "page", "chapter", "2024"]
        for y in range(int(rng.integers(4, 14)), s - 10, int(rng.integers(12, 24))):
            d.text((8, y), " ".join(rng.choice(words, 5)), fill=_colour(rng, 0, 90))
        return img
    # pattern: stripes or a checkerboard of two colours
    a, b = np.array(_colour(rng)), np.array(_colour(rng))
    period = int(rng.integers(8, 48))
    yy, xx = np.mgrid[0:s, 0:s]
    mask = ((xx // period + yy // period) % 2 == 0) if rng.random() < 0.5 else ((xx + yy) // period % 2 == 0)
    return Image.fromarray(np.where(mask[..., None], a, b).astype(np.uint8))


SHAPES = ("circle", "square", "triangle")
SHAPE_COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220)}


def shape_images(per_class: int, size: int = 128, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    """A generated catalog: ``per_class`` images of each of 9 classes (circle/square/triangle x
    red/green/blue), a jittered shape on a light noisy background; labels like ``circle-red``."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for shape in SHAPES:
        for name, rgb in SHAPE_COLOURS.items():
            for _ in range(per_class):
                bg = rng.integers(215, 256, (size, size, 3), dtype=np.uint8)
                img = Image.fromarray(bg, "RGB")
                d = ImageDraw.Draw(img)
                r = size * rng.uniform(0.22, 0.34)
                cx, cy = size / 2 + rng.uniform(-10, 10), size / 2 + rng.uniform(-10, 10)
                fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in rgb)
                if shape == "circle":
                    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
                elif shape == "square":
                    d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
                else:
                    d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
                images.append(img)
                labels.append(f"{shape}-{name}")
    return images, labels


# -- 1. examples ----------------------------------------------------------------------------------
def _top(scores: np.ndarray, k: int, exclude) -> np.ndarray:
    scores = scores.astype(np.float64).copy()
    scores[list(exclude)] = -np.inf
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def study_examples(unit: np.ndarray, labels: np.ndarray, triples: int, depth: int, seed: int = 0,
                   negative_weights=(0.5, 1.0)) -> dict:
    """P@10 of the positives' label for random (A, B, C) triples; ``unit`` is (n, d) normalised."""
    rng = np.random.default_rng(seed)
    names = sorted(set(labels))
    by_label = {lab: np.flatnonzero(labels == lab) for lab in names}
    rows: dict[str, list[float]] = {}

    def add(name, top, target):
        rows.setdefault(name, []).append(float(np.mean(labels[top[:10]] == target)))

    for _ in tqdm(range(triples), desc="triples", leave=False):
        target = names[rng.integers(len(names))]
        other = names[rng.integers(len(names))]
        while other == target:
            other = names[rng.integers(len(names))]
        a, b = rng.choice(by_label[target], 2, replace=False)
        c = rng.choice(by_label[other])
        ex = {a, b, c}
        sims = unit @ unit[[a, b, c]].T                      # (n, 3) cosine scores
        add("single A", _top(sims[:, 0], 10, ex), target)
        pos_cands = np.union1d(_top(sims[:, 0], depth, ex), _top(sims[:, 1], depth, ex))
        for wn in (0.0,) + tuple(negative_weights):
            w = [1.0, 1.0] + ([-wn] if wn else [])
            tag = "A+B" if not wn else f"A+B-{wn:g}C"
            q = weighted_mean(unit[[a, b, c][:len(w)]], w)
            add(f"mean {tag}", _top(unit @ q, 10, ex), target)
            fused = fuse_scores(sims[pos_cands, :len(w)].T, w)
            add(f"max {tag}", pos_cands[np.argsort(-fused, kind="stable")[:10]], target)
    return {name: {"P@10": float(np.mean(v)), "se": float(np.std(v) / np.sqrt(len(v))), "n": len(v)}
            for name, v in rows.items()}


# -- 2. diversity ---------------------------------------------------------------------------------
def study_diversity(unit: np.ndarray, labels: np.ndarray, queries: int, depth: int, seed: int = 0,
                    lambdas=(0.1, 0.2, 0.3, 0.5), pools=(20, 30)) -> dict:
    """Mean P@10 and ILS@10 of the plain top 10 vs MMR(λ) and duplicate collapse over ``depth``
    leave-one-out candidates of ``queries`` random items."""
    rng = np.random.default_rng(seed)
    qs = rng.choice(len(unit), min(queries, len(unit)), replace=False) if queries > 0 else np.arange(len(unit))
    rows: dict[str, dict[str, list[float]]] = {}

    def add(name, cands, order, target):
        top = cands[order[:10]]
        r = rows.setdefault(name, {"P@10": [], "ILS@10": []})
        r["P@10"].append(float(np.mean(labels[top] == target)))
        r["ILS@10"].append(intra_list_similarity(unit[top] @ unit[top].T))

    folded = []
    for q in tqdm(qs, desc="diversity", leave=False):
        scores = unit @ unit[q]
        cands = _top(scores, depth, {q})
        rel, sim = scores[cands], unit[cands] @ unit[cands].T
        add("plain", cands, np.arange(len(cands)), labels[q])
        for lam in lambdas:
            add(f"MMR λ={lam:g}", cands, np.array(mmr(rel, sim, 10, lam)), labels[q])
            for pool in pools:
                add(f"MMR λ={lam:g} over top {pool}", cands, np.array(mmr(rel[:pool], sim[:pool, :pool], 10, lam)), labels[q])
        kept = collapse_duplicates(1.0 - sim, NEAR_DUPLICATE_DISTANCE)
        folded.append(sum(len(f) for _, f in kept[:10]))
        add("collapse duplicates", cands, np.array([p for p, _ in kept]), labels[q])
    out = {name: {m: float(np.mean(v)) for m, v in r.items()} for name, r in rows.items()}
    out["collapse duplicates"]["folded per query (top 10)"] = float(np.mean(folded))
    out["collapse duplicates"]["queries with a fold"] = float(np.mean(np.array(folded) > 0))
    return out


# -- 3. no close match ----------------------------------------------------------------------------
def best_scores(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    dist, _ = exact_knn(queries, vectors, 1, metric)
    return distance_to_score(dist[:, 0], metric)


def study_no_match(catalog_vectors, catalog_labels, held_out, offdomain, offdomain_kinds, metric: str,
                   miss_rate: float = DEFAULT_MISS_RATE) -> dict:
    """Flag rates of held-out in-catalog queries and off-domain queries, for each method."""
    s_in, s_off = best_scores(held_out, catalog_vectors, metric), best_scores(offdomain, catalog_vectors, metric)
    kinds = np.asarray(offdomain_kinds)
    out = {}
    for method in METHODS:
        try:
            t = calibrate(catalog_vectors, metric, catalog_labels, miss_rate=miss_rate, method=method)
        except ValueError as exc:   # too few labelled neighbours for the labelled method
            out[method] = {"error": str(exc)}
            continue
        out[method] = {"threshold": t.threshold, "in_catalog_flagged": float(np.mean(s_in < t.threshold)),
                       "offdomain_flagged": float(np.mean(s_off < t.threshold)),
                       "by_kind": {k: float(np.mean(s_off[kinds == k] < t.threshold)) for k in OFFDOMAIN_KINDS},
                       "stats": t.stats}
    out["best_score"] = {"in_catalog_q05": float(np.quantile(s_in, 0.05)), "offdomain_max": float(s_off.max())}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", default="clothing")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--triples", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=0, help="diversity queries (0: every item)")
    parser.add_argument("--depth", type=int, default=200, help="candidates per query (pipeline: max(10k, 200))")
    parser.add_argument("--per-kind", type=int, default=20, help="off-domain images per kind")
    parser.add_argument("--shapes-per-class", type=int, default=30)
    parser.add_argument("--parts", default="examples,diversity,no-match")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    cat = Catalog.open(args.catalog)
    encoder, ids, matrix, metric = cat.vectors_with_metric(args.encoder)
    labels = np.array([str(v) for v in cat.labels("label", encoder)])
    unit = l2_normalize(matrix)
    report: dict = {"catalog": cat.name, "encoder": encoder, "metric": metric, "items": len(ids),
                    "load_average": os.getloadavg()}
    started = time.time()
    if "examples" in parts:
        report["examples"] = study_examples(unit, labels, args.triples, args.depth)
        print("\n| query (A, B: label L; C: another label) | rule | P@10 of L | ±se |\n|---|---|---|---|")
        for name, r in report["examples"].items():
            rule, _, query = name.rpartition(" ") if not name.startswith("single") else ("—", "", name)
            print(f"| {query} | {rule} | {r['P@10']:.3f} | {r['se']:.3f} |")
    if "diversity" in parts:
        report["diversity"] = study_diversity(unit, labels, args.queries, args.depth)
        print("\n| ranking | P@10 | ILS@10 |\n|---|---|---|")
        for name, r in report["diversity"].items():
            print(f"| {name} | {r['P@10']:.3f} | {r['ILS@10']:.3f} |")
    if "no-match" in parts:
        splits = np.array([str(v) for v in cat.labels("split", encoder)]) if "split" in cat.columns() else None
        held = splits == "test" if splits is not None else np.arange(len(ids)) % 10 == 0
        off, kinds = offdomain_images(args.per_kind)
        off_vec = cat.embed_images(off, encoder)
        report["no_match"] = {"clothing": study_no_match(matrix[~held], labels[~held], matrix[held], off_vec, kinds, metric)}
        shapes, shape_labels = shape_images(args.shapes_per_class, seed=1)
        held_shapes, _ = shape_images(max(2, args.shapes_per_class // 5), seed=2)
        shape_vec = cat.embed_images(shapes + held_shapes, encoder)
        report["no_match"]["shapes"] = study_no_match(shape_vec[:len(shapes)], shape_labels, shape_vec[len(shapes):],
                                                      off_vec, kinds, metric)
        print("\n| catalog | method | threshold | in-catalog flagged | off-domain flagged |\n|---|---|---|---|---|")
        for name, r in report["no_match"].items():
            for method in METHODS:
                m = r[method]
                if "error" in m:
                    continue
                print(f"| {name} | {method} | {m['threshold']:.3f} | {m['in_catalog_flagged']:.1%} | "
                      f"{m['offdomain_flagged']:.1%} |  {m['by_kind']}")
    report["seconds"] = time.time() - started
    report["load_average_end"] = os.getloadavg()
    print(f"\n{report['seconds']:.0f} s, load average {report['load_average']} -> {report['load_average_end']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
