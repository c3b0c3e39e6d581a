"""Trainable encoders vs each other on a labelled catalog: dense AE, conv AE, VAE (four retrieval modes).

    .venv/bin/python benchmarks/bench_autoencoders.py --csv ../shared/datasets/clothing-small/catalog.csv \
        --home /work/tmp/autoencoder/home --catalog clothing-ae --epochs 15 --split train

Trains each model on the catalog's ``--split`` items (all items when omitted), indexes every item
with each encoder spec, and evaluates leave-one-out retrieval (relevance = same label) over all
labelled items and over the ``test`` split only. Prints a markdown table and writes JSON beside the
models. Pass ``--extra SPEC`` to add already-indexed encoders (e.g. effnet-lite0) to the same table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def evaluate_spec(cat, spec: str, subset_split: str | None = None) -> dict:
    from lookalike.catalog import _label_key
    from lookalike.evaluate import evaluate_vectors, nearest_neighbours
    from lookalike.index.scored import SCORED_METRICS, scored_neighbours

    info = cat.store.encoder_info(spec)
    rowids, matrix = cat.store.matrix(spec)
    items = cat.store.get_by_rowids(rowids)
    labels = [_label_key(items[int(r)], ["label"]) for r in rowids]
    subset = None
    if subset_split:
        subset = np.array([i for i, r in enumerate(rowids) if items[int(r)].metadata.get("split") == subset_split])
    pool = np.arange(len(labels)) if subset is None else subset
    pool = np.array([i for i in pool if labels[i] is not None], dtype=np.int64)
    if info["metric"] in SCORED_METRICS:
        neighbours = scored_neighbours(matrix, 10, info["metric"], pool)
    else:
        neighbours = nearest_neighbours(matrix, 10, info["metric"], pool)
    report = evaluate_vectors(matrix, labels, ks=(1, 5, 10), metric=info["metric"], subset=pool, neighbours=neighbours)
    return {"spec": spec, "dim": info["dim"], "metric": info["metric"], "n": report.n_queries, **report.overall}


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
    args = parser.parse_args()

    import torch

    from lookalike.catalog import Catalog
    from lookalike.encoders.train_ae import TrainConfig, train_catalog

    # One thread: on a shared, oversubscribed box two OpenMP threads ran 10-20x slower than one.
    os.environ.setdefault("LOOKALIKE_THREADS", "1")
    torch.set_num_threads(int(os.environ["LOOKALIKE_THREADS"]))
    cat = Catalog.open_or_create(args.catalog, home=args.home)
    if len(cat) == 0:
        cat.index(args.csv, encoder="colour-hist")  # cheap first ingest; the specs below add their vectors
    rows, timings = [], {}
    for arch in args.archs.split(","):
        name = f"{args.catalog}-{arch}"
        cfg = TrainConfig(arch=arch, latent=args.latent, image_size=args.image_size, epochs=args.epochs,
                          batch_size=args.batch_size, seed=args.seed, device="cpu")
        started = time.perf_counter()
        result = train_catalog(cat, cfg, name, split=args.split, progress=False)
        timings[arch] = {"train_s": round(time.perf_counter() - started, 1), "epochs_run": result.epochs_run,
                         "best_epoch": result.best_epoch, "best_val_loss": round(result.best_val, 2),
                         "stopped_early": result.stopped_early}
        print(arch, timings[arch], flush=True)
        kind = "vae" if arch == "vae" else "ae"
        specs = [f"{kind}:{name}"] + ([f"vae:{name}@z", f"vae:{name}@loglik", f"vae:{name}@sym"] if kind == "vae" else [])
        for spec in specs:
            cat.index(args.csv, encoder=spec)
            rows.append((spec, evaluate_spec(cat, spec), evaluate_spec(cat, spec, "test")))
    for spec in args.extra:
        rows.append((spec, evaluate_spec(cat, spec), evaluate_spec(cat, spec, "test")))

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
