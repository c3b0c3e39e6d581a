"""The EfficientNet-Lite0 variant study behind docs/encoders.md: resize modes, pooling, PCA(-whitening)
and colour fusion weights, evaluated leave-one-out from cached backbone feature maps.

    python -m lookalike.bench.studies.encoder_variants --csv ../shared/datasets/clothing-small/catalog.csv \
        --cache /tmp/variants [--modes stretch pad crop] [--limit 800]

The CNN runs once per resize mode (feature maps cached as float16 under --cache); everything else
is pooling and linear algebra on the cache, so adding a variant costs seconds, not a CNN pass.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from lookalike.encoders.colour import ciede2000, colour_summary
from lookalike.index.distances import l2_normalize
from lookalike.encoders.pretrained import load_backbone, pool_features, preprocess_image
from lookalike.evaluation.retrieval import evaluate_vectors, nearest_neighbours
from lookalike.data.artifacts import save_npy, save_npz
from lookalike.data.images import open_image

COLUMNS = ("P@1", "P@5", "R@10", "mAP@10", "NDCG@10")


def feature_maps(paths: list[Path], mode: str, cache: Path) -> np.ndarray:
    target = cache / f"maps-{mode}.npy"
    if target.exists():
        return np.load(target)
    backbone, out = load_backbone(), []
    prepare = lambda p: preprocess_image(open_image(p, draft_size=224), 224, mode)  # noqa: E731
    with ThreadPoolExecutor(2) as pool, torch.inference_mode():
        for start in track(range(0, len(paths), 32), description=f"CNN ({mode})"):
            batch = torch.from_numpy(np.stack(list(pool.map(prepare, paths[start:start + 32]))))
            out.append(backbone.feature_maps(batch).numpy().astype(np.float16))
    maps = np.concatenate(out)
    save_npy(target, maps)
    return maps


def colours(paths: list[Path], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    target = cache / "colour.npz"
    if not target.exists():
        pairs = [colour_summary(open_image(p)) for p in track(paths, description="colour")]
        save_npz(target, descriptor=np.stack([d for d, _ in pairs]), dominant=np.stack([c for _, c in pairs]))
    data = np.load(target)
    return data["descriptor"], data["dominant"]


def pca(x: np.ndarray, dim: int, power: float) -> np.ndarray:
    """Project on the top ``dim`` principal axes, each divided by (singular value)^(2*power):
    power 0 = plain PCA, 0.5 = full whitening."""
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return l2_normalize(centred @ (vt[:dim].T / np.power(s[:dim] + 1e-6, 2 * power)))


def fuse(cnn: np.ndarray, colour: np.ndarray, w: float) -> np.ndarray:
    return np.concatenate([np.sqrt(1 - w) * l2_normalize(cnn), np.sqrt(w) * l2_normalize(colour)], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--modes", nargs="+", default=["stretch", "pad", "crop"])
    parser.add_argument("--limit", type=int, default=None, help="a fixed random sample (seed 0)")
    args = parser.parse_args()

    rows = list(csv.DictReader(open(args.csv, newline="")))
    if args.limit and args.limit < len(rows):
        rows = [rows[i] for i in np.sort(np.random.default_rng(0).choice(len(rows), args.limit, replace=False))]
    paths = [args.csv.parent / r["image"] for r in rows]
    labels = [r["label"] for r in rows]
    # one cache folder per image list, so changing --limit never mixes samples
    cache = args.cache / hashlib.sha1("|".join(map(str, paths)).encode()).hexdigest()[:12]
    descriptor, dominant = colours(paths, cache)

    table = Table(title=f"{len(rows)} images, leave-one-out, relevance = same label")
    for col in ("variant", *COLUMNS, "ΔE00 top-10"):
        table.add_column(col, justify="left" if col == "variant" else "right")

    def add(name: str, vectors: np.ndarray) -> None:
        report = evaluate_vectors(vectors, labels, ks=(1, 5, 10))
        nn = nearest_neighbours(vectors, 10)
        delta = ciede2000(dominant[:, None], dominant[nn]).mean()
        table.add_row(name, *(f"{report.overall[c]:.3f}" for c in COLUMNS), f"{delta:.1f}")

    for mode in args.modes:
        maps = torch.from_numpy(feature_maps(paths, mode, cache).astype(np.float32))
        avg = pool_features(maps, "avg").numpy()
        add(f"{mode} avg", l2_normalize(avg))
        add(f"{mode} GeM p=3", l2_normalize(pool_features(maps, "gem").numpy()))
        add(f"{mode} central 5x5 avg", l2_normalize(maps[:, :, 1:6, 1:6].mean((2, 3)).numpy()))
        for dim, power in ((256, 0.0), (256, 0.25), (256, 0.5)):
            add(f"{mode} avg + PCA {dim}-d, power {power}", pca(l2_normalize(avg), dim, power))
        for w in (0.1, 0.2, 0.3):
            add(f"{mode} avg + colour w={w}", fuse(avg, descriptor, w))
        del maps
    Console().print(table)


if __name__ == "__main__":
    main()
