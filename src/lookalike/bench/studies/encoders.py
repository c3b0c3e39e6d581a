"""Compare encoders on a labelled CSV catalog: leave-one-out P@k / R@k / mAP@k / NDCG@k plus the
label-free colour proxy (mean CIEDE2000 between each query's dominant colour and its top 10).

    python -m lookalike.bench.studies.encoders --csv ../shared/datasets/clothing-small/catalog.csv \
        --encoders colour-hist tiny effnet-lite0 effnet-lite0-colour:0.3 [--limit 500] [--cache DIR]

Vectors are cached per encoder fingerprint under --cache so re-runs only evaluate. The numbers in
docs/encoders.md came from this script and the cached-feature experiments it describes.
"""
from __future__ import annotations

import argparse
import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from lookalike.encoders.colour import ciede2000, dominant_colour, dominant_colour_distance
from lookalike.encoders import get_encoder
from lookalike.evaluation.retrieval import evaluate_vectors, nearest_neighbours
from lookalike.data.artifacts import digest, save_npy
from lookalike.data.images import open_image

COLUMNS = ("P@1", "P@5", "R@10", "mAP@10", "NDCG@10")


def read_rows(path: Path, limit: int | None) -> list[dict]:
    rows = list(csv.DictReader(open(path, newline="")))
    if limit and limit < len(rows):  # a fixed random sample, the same for every encoder
        keep = np.sort(np.random.default_rng(0).choice(len(rows), limit, replace=False))
        rows = [rows[i] for i in keep]
    return rows


def cached(cache: Path | None, key: str, compute):
    if cache is None:
        return compute()
    path = cache / f"{digest(key)}.npy"
    if not path.exists():
        save_npy(path, compute())
    return np.load(path)


def embed(spec: str, paths: list[Path], batch: int = 32) -> np.ndarray:
    encoder = get_encoder(spec)
    out = []
    with ThreadPoolExecutor(2) as pool:
        prepare = lambda p: encoder.preprocess(open_image(p, draft_size=encoder.image_size))  # noqa: E731
        for start in track(range(0, len(paths), batch), description=spec):
            out.append(encoder.encode_batch(np.stack(list(pool.map(prepare, paths[start:start + batch])))))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--encoders", nargs="+", default=["colour-hist", "tiny", "effnet-lite0"])
    parser.add_argument("--label", default="label")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()

    rows = read_rows(args.csv, args.limit)
    paths = [args.csv.parent / r["image"] for r in rows]
    labels = [r[args.label] or None for r in rows]
    keys = "|".join(str(p) for p in paths)
    dominant = cached(args.cache, "dominant|" + keys,
                      lambda: np.stack([dominant_colour(open_image(p)) for p in track(paths, "dominant colours")]))

    table = Table(title=f"{args.csv.parent.name}: {len(rows)} images, leave-one-out, relevance = same {args.label}")
    for col in ("encoder", "dim", *COLUMNS, "ΔE00 top-10", "ΔE00<10 share"):
        table.add_column(col, justify="left" if col == "encoder" else "right")
    for spec in args.encoders:
        encoder = get_encoder(spec)
        vectors = cached(args.cache, f"{encoder.fingerprint()}|{keys}", lambda: embed(spec, paths))
        neighbours = nearest_neighbours(vectors, 10, encoder.metric)
        report = evaluate_vectors(vectors, labels, ks=(1, 5, 10), metric=encoder.metric)
        match = float((ciede2000(dominant[:, None], dominant[neighbours]) < 10).mean())
        table.add_row(spec, str(encoder.dim), *(f"{report.overall[c]:.3f}" for c in COLUMNS),
                      f"{dominant_colour_distance(dominant, neighbours):.1f}", f"{match:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
