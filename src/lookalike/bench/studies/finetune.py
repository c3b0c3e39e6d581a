"""Backbone fine-tuning and self-supervised adaptation: the before/after tables of issue #14.

    python -m lookalike.bench.studies.finetune --catalog clothing --home /tmp/ft-home \
        [--protocol split|half|adapt] [--backbone lite0] [--blocks N] [--time-budget 900] [--loss L]

Every option defaults to ``lookalike train finetune``'s default (:class:`FinetuneConfig`).

Protocols (relevance = same label, leave-one-out, the evaluation code of ``lookalike evaluate``):

* ``split`` — fit on the ``split`` column's train rows, score among its test rows (issue target);
* ``half``  — stratified half holdout of the whole catalog (fit on one half, score the other);
* ``adapt`` — self-supervised on every image, scored on every labelled one.

Each run trains and saves ``finetuned:<catalog>-ft-<protocol>`` through
:func:`lookalike.train.finetune.train_finetune` (the same call as ``lookalike train finetune``) and
prints pretrained vs fine-tuned vs its ONNX fp32 / int8 variants, with the seconds spent caching the
frozen activations, training and exporting, the process's CPU seconds (what a shared box's load
does not change much) and the load average before and after. A second run
with the same recipe reuses the cache (``--fresh`` deletes it first, so the time is the whole
command's).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from dataclasses import fields

from lookalike import Catalog
from lookalike.train.finetune import FinetuneConfig, adapt, train_finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="clothing")
    parser.add_argument("--home", default=None)
    parser.add_argument("--label", default="label")
    parser.add_argument("--protocol", choices=("split", "half", "adapt"), default="split")
    defaults = FinetuneConfig()
    parser.add_argument("--backbone", default=defaults.backbone, help="lite0 | lite1 | lite2")
    parser.add_argument("--blocks", default=str(defaults.blocks))
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help="default 6, or as many as --time-budget affords")
    parser.add_argument("--head-epochs", type=int, default=defaults.head_epochs)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds")
    parser.add_argument("--loss", default=defaults.loss)
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--views", type=int, default=defaults.views)
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX fp32 / int8 export and scores")
    parser.add_argument("--fresh", action="store_true", help="delete the catalog's cached activations first")
    args = parser.parse_args()

    cat = Catalog.open(args.catalog, home=args.home)
    if args.fresh:
        shutil.rmtree(cat.dir / "cache" / "finetune", ignore_errors=True)
    blocks = "all" if args.blocks == "all" else int(args.blocks)
    chosen = dict(backbone=args.backbone, blocks=blocks, epochs=args.epochs, head_epochs=args.head_epochs,
                  time_budget=args.time_budget, loss=args.loss, dim=args.dim, lr=args.lr, views=args.views,
                  size=args.size, device=args.device, seed=args.seed)
    config = FinetuneConfig(**{k: v for k, v in chosen.items() if k in {f.name for f in fields(FinetuneConfig)}})
    name = f"{args.catalog}-ft-{args.protocol}"
    started = time.time()
    load_before = os.getloadavg()

    def progress(stage, done, total, scores):
        if stage == "train" and done:
            shown = {k: round(v, 4) for k, v in scores.items() if k in ("loss", "val mAP@10", "mAP@10", "P@1")}
            print(f"[{time.time() - started:6.0f} s] epoch {done}/{total} {shown}", flush=True)

    if args.protocol == "adapt":
        report = adapt(cat, args.label, name=name, config=config, progress=progress, export=not args.no_export)
    else:
        split = "split" if args.protocol == "split" else None
        report = train_finetune(cat, args.label, split_column=split, holdout=0.5, name=name, config=config,
                                progress=progress, export=not args.no_export)
    load = os.getloadavg()
    print(f"\nfinetuned:{report.name} — {report.protocol}; {report.n_train} train / {report.n_validation} "
          f"validation / {report.n_test} scored; backbone={config.backbone} blocks={args.blocks} "
          f"loss={config.loss if args.protocol != 'adapt' else 'ntxent'} {report.epochs} epochs, kept "
          f"{'the stage-1 head' if report.selected_epoch == 0 else report.selected_epoch}; load average "
          f"{load_before[0]:.1f} before, {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} after")
    print(f"{'model':<44}{'P@1':>8}{'P@5':>8}{'mAP@10':>8}")
    rows = [(f"pretrained effnet-{config.backbone}", report.before), ("stage 1: head alone", report.head_stage),
            ("fine-tuned (torch)", report.after)]
    if report.reranked:
        served = " + ".join(p for p in (f"TTA {report.tta}" if report.tta != "none" else "",
                                        report.expansion if report.expansion != "none" else "") if p)
        rows.append((f"+ {served}", report.reranked))
    subset = report.runtimes and report.runtime_items < report.n_test
    of = f", {report.runtime_items} of {report.n_test} items" if subset else ""
    rows += [(f"fine-tuned ({k}{of})", v) for k, v in report.runtimes.items() if subset or k != "torch"]
    for title, scores in rows:
        if scores:
            print(f"{title:<44}{scores['P@1']:8.3f}{scores['P@5']:8.3f}{scores['mAP@10']:8.3f}")
    used = resource.getrusage(resource.RUSAGE_SELF)
    for note in report.notes:
        print("note:", note)
    print("budget:", json.dumps(report.budget))
    print("seconds:", json.dumps(report.seconds),
          f"| CPU seconds (user + system, all threads): {used.ru_utime + used.ru_stime:.0f}")


if __name__ == "__main__":
    main()
