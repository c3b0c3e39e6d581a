"""Trainable encoders vs each other on a labelled catalog: dense AE, conv AE, VAE (four retrieval modes).

    python -m lookalike.bench.studies.autoencoders --csv ../shared/datasets/clothing-small/catalog.csv \
        --home /work/tmp/autoencoder/home --catalog clothing-ae --epochs 15 --split train

Trains each model on the catalog's ``--split`` items (all items when omitted), indexes every item
with each encoder spec, and evaluates leave-one-out retrieval (relevance = same label) over all
labelled items and over the ``test`` split only, and reports each model's reconstruction RMSE on the
test split. Prints a markdown table and writes JSON beside the
models. Pass ``--extra SPEC`` to add already-indexed encoders (e.g. effnet-lite0) to the same table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from lookalike.catalog import Catalog
from lookalike.data.images import open_image
from lookalike.data.pixel_cache import catalog_pixels
from lookalike.encoders import get_encoder
from lookalike.encoders.autoencoder import LoadedModel, kind_dir
from lookalike.encoders.hybrid import HybridModel
from lookalike.evaluation.retrieval import evaluate_vectors, nearest_neighbours
from lookalike.train.autoencoder import AutoencoderConfig


def evaluate_matrix(matrix: np.ndarray, metric: str, labels: list, splits: list, subset_split: str | None = None) -> dict:
    """Leave-one-out P@k / mAP@10 of one (n, d) matrix; relevance = same label."""
    pool = np.array([i for i, (lab, sp) in enumerate(zip(labels, splits))
                     if lab is not None and (subset_split is None or sp == subset_split)], dtype=np.int64)
    neighbours = nearest_neighbours(matrix, 10, metric, pool)   # scored metrics are routed to numpy
    report = evaluate_vectors(matrix, labels, ks=(1, 5, 10), metric=metric, subset=pool, neighbours=neighbours)
    return {"dim": int(matrix.shape[1]), "metric": metric, "n": report.n_queries, **report.overall}


def store_matrix(cat, spec: str):
    """(ids, matrix, labels, splits, metric) of an indexed encoder."""
    _, ids, matrix, metric = cat.vectors_with_metric(spec)
    splits = cat.labels("split", spec) if "split" in cat.columns() else [None] * len(ids)  # split is optional
    return ids, matrix, cat.labels("label", spec), splits, metric


def evaluate_spec(cat, spec: str) -> tuple[dict, dict]:
    _, matrix, labels, splits, metric = store_matrix(cat, spec)
    return evaluate_matrix(matrix, metric, labels, splits), evaluate_matrix(matrix, metric, labels, splits, "test")


def reconstruction_rmse(cat, kind: str, name: str, split: str = "test", base: str = "effnet-lite0") -> float:
    """RMSE (0-255 scale) of decoding each ``split`` image from its µ, at the model's image size."""
    if kind == "hvae":
        model = HybridModel.open(name, home=cat.home)
    else:
        model = LoadedModel.open(kind, name, home=cat.home)
    data = catalog_pixels(cat, model.image_size, progress=False)
    keep = [i for i, s in enumerate(data.splits) if s == split]
    pixels = data.pixels[keep]
    if kind == "hvae":
        vec_ids, matrix = cat.vectors(base)
        row = {item_id: i for i, item_id in enumerate(vec_ids)}
        mu, _ = model.posterior(matrix[[row[data.ids[i]] for i in keep]], pixels)
    else:
        mu, _ = model.posterior(pixels)
    diff = model.decode(mu).astype(np.float32) - pixels.astype(np.float32)
    return round(float(np.sqrt((diff ** 2).mean())), 2)


def hybrid_rows(cat, name: str, base: str) -> list:
    """hvae vectors computed from the catalog's stored base vectors: the same numbers indexing would
    store (checked on 8 images), without re-running the CNN over every image."""
    model = HybridModel.open(name, home=cat.home)
    ids, base_matrix, labels, splits, _ = store_matrix(cat, base)
    mu, logvar = model.posterior_features(base_matrix)
    enc = get_encoder(f"hvae:{name}", home=cat.home)
    check = enc.encode([open_image(cat.get(i).path, draft_size=enc.image_size) for i in ids[:8]])
    assert np.allclose(check, mu[:8], atol=1e-3), "stored-vector shortcut differs from the encoder"
    rows = []
    for spec, matrix, metric in ((f"hvae:{name}", mu, "l2"),
                                 (f"hvae:{name}@loglik", np.concatenate([mu, logvar], 1), "loglik")):
        rows.append((spec, evaluate_matrix(matrix, metric, labels, splits),
                     evaluate_matrix(matrix, metric, labels, splits, "test")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--catalog", default="bench-ae")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--split", default=None, help="train only on items with this split value")
    parser.add_argument("--archs", default="dense,conv,vae")
    parser.add_argument("--extra", action="append", default=[], help="already-indexed encoder specs to add")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", default="effnet-lite0", help="hybrid: the indexed encoder it compresses")
    parser.add_argument("--app-latent", type=int, default=0, help="hybrid: appearance dimensions for the decoder")
    parser.add_argument("--name-suffix", default="", help="appended to model names (keep several variants)")
    parser.add_argument("--no-ingest", action="store_true", help="the catalog is already indexed (e.g. a copy)")
    args = parser.parse_args()

    # One thread: on a shared, oversubscribed box two OpenMP threads ran 10-20x slower than one.
    os.environ.setdefault("LOOKALIKE_THREADS", "1")
    torch.set_num_threads(int(os.environ["LOOKALIKE_THREADS"]))
    cat = Catalog.open_or_create(args.catalog, home=args.home)
    if len(cat) == 0 and not args.no_ingest:
        cat.index(args.csv, encoder="colour-hist")  # cheap first ingest; the specs below add their vectors
    rows, timings = [], {}
    for arch in [a for a in args.archs.split(",") if a]:
        name = f"{args.catalog}-{arch}{args.name_suffix}"
        cfg = AutoencoderConfig(arch=arch, latent=args.latent, image_size=args.image_size, epochs=args.epochs,
                                batch_size=args.batch_size, seed=args.seed, device="cpu", base=args.base,
                                app_latent=args.app_latent)
        started = time.perf_counter()
        result = cat.train_autoencoder(cfg, name, split=args.split, progress=False)
        timings[arch] = {"train_s": round(time.perf_counter() - started, 1), "epochs_run": result.epochs_run,
                         "best_epoch": result.best_epoch, "best_val_loss": round(result.best_val, 2),
                         "stopped_early": result.stopped_early}
        timings[arch]["test_rmse"] = reconstruction_rmse(cat, kind_dir(arch), name, base=args.base)
        print(arch, timings[arch], flush=True)
        if arch == "hybrid":
            rows += hybrid_rows(cat, name, args.base)
            continue
        kind = "vae" if arch == "vae" else "ae"
        specs = [f"{kind}:{name}"] + ([f"vae:{name}@z", f"vae:{name}@loglik", f"vae:{name}@sym"] if kind == "vae" else [])
        for spec in specs:
            cat.index(args.csv, encoder=spec)
            rows.append((spec, *evaluate_spec(cat, spec)))
    for spec in args.extra:
        rows.append((spec, *evaluate_spec(cat, spec)))

    print("\n| encoder | metric | dim | P@1 | P@5 | mAP@10 | test-split mAP@10 |")
    print("|---|---|---|---|---|---|---|")
    for spec, full, test in rows:
        print(f"| {spec} | {full['metric']} | {full['dim']} | {full['P@1']:.3f} | {full['P@5']:.3f} | "
              f"{full['mAP@10']:.3f} | {test['mAP@10']:.3f} |")
    out = Path(args.home) / "models" / f"bench-{args.catalog}.json"
    out.write_text(json.dumps({"args": vars(args), "timings": timings,
                               "results": [{"all": f, "test": t} for _, f, t in rows]}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
