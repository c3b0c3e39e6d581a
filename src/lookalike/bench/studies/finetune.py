"""Backbone fine-tuning and self-supervised adaptation: the before/after tables of issue #14.

    python -m lookalike.bench.studies.finetune --catalog clothing --home /tmp/ft-home \
        [--protocol split|half|adapt] [--blocks 2] [--time-budget 900] [--loss proxy-anchor+normalized-softmax]

Protocols (relevance = same label, leave-one-out, the evaluation code of ``lookalike evaluate``):

* ``split`` — fit on the ``split`` column's train rows, score among its test rows (issue target);
* ``half``  — stratified half holdout of the whole catalog (fit on one half, score the other);
* ``adapt`` — self-supervised on every image, scored on every labelled one.

Each run trains and saves ``finetuned:<catalog>-ft-<protocol>`` through
:func:`lookalike.train.finetune.train_finetune` (the same call as ``lookalike train finetune``) and
prints pretrained vs fine-tuned vs its ONNX fp32 / int8 variants, with the seconds spent caching the
frozen activations, training and exporting. A second run with the same recipe reuses the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from lookalike import Catalog
from lookalike.train.finetune import FinetuneConfig, adapt, train_finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="clothing")
    parser.add_argument("--home", default=None)
    parser.add_argument("--label", default="label")
    parser.add_argument("--protocol", choices=("split", "half", "adapt"), default="split")
    parser.add_argument("--blocks", default="2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds")
    parser.add_argument("--loss", default=FinetuneConfig.loss)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cat = Catalog.open(args.catalog, home=args.home)
    blocks = "all" if args.blocks == "all" else int(args.blocks)
    config = FinetuneConfig(blocks=blocks, epochs=args.epochs, time_budget=args.time_budget, loss=args.loss,
                            views=args.views, size=args.size, device=args.device, seed=args.seed)
    name = f"{args.catalog}-ft-{args.protocol}"
    started = time.time()

    def progress(stage, done, total, scores):
        if stage == "train" and done:
            shown = {k: round(v, 4) for k, v in scores.items() if k in ("loss", "mAP@10", "P@1")}
            print(f"[{time.time() - started:6.0f} s] epoch {done}/{total} {shown}", flush=True)

    if args.protocol == "adapt":
        report = adapt(cat, args.label, name=name, config=config, progress=progress)
    else:
        split = "split" if args.protocol == "split" else None
        report = train_finetune(cat, args.label, split_column=split, holdout=0.5, name=name, config=config,
                                progress=progress)
    load = os.getloadavg()[0]
    print(f"\nfinetuned:{report.name} — {report.protocol}; {report.n_train} train / {report.n_test} scored; "
          f"blocks={args.blocks} loss={config.loss if args.protocol != 'adapt' else 'ntxent'} "
          f"{report.epochs} epochs; load average {load:.1f}")
    print(f"{'model':<28}{'P@1':>8}{'P@5':>8}{'mAP@10':>8}")
    rows = [("pretrained effnet-lite0", report.before), ("fine-tuned (torch)", report.after)]
    rows += [(f"fine-tuned ({k})", v) for k, v in report.runtimes.items() if k != "torch"]
    for title, scores in rows:
        if scores:
            print(f"{title:<28}{scores['P@1']:8.3f}{scores['P@5']:8.3f}{scores['mAP@10']:8.3f}")
    print("seconds:", json.dumps(report.seconds))


if __name__ == "__main__":
    main()
