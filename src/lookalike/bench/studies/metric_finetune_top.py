"""Experiment: does fine-tuning EfficientNet-Lite0's last block help metric learning on CPU?

    python -m lookalike.bench.studies.metric_finetune_top \
        --csv ../shared/datasets/clothing-small/catalog.csv --cache /work/tmp/metric/ft_b14.npy --epochs 12

The frozen-backbone head of ``lookalike train metric`` is capped by the ImageNet features. Here the
input of the last MBConv block (192 x 7 x 7, original + mirrored view) is computed once for the
train and test rows and cached; the last block, the 1x1 head convolution and its BatchNorm are
then trained together with the projection head (triplet loss, semi-hard mining) at a small
learning rate. Prints held-out mAP@10 (leave-one-out among the test rows, relevant = same label)
after every epoch — a learning curve, not a model choice. Not yet wired into
``lookalike train metric``.
"""
from __future__ import annotations

import argparse
import copy
import csv
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lookalike.data.artifacts import save_npy
from lookalike.encoders.pretrained import load_backbone, preprocess_image
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.train.losses import make_loss
from lookalike.encoders.metric import ProjectionHead
from lookalike.train.metric import pk_batches

LAST_BLOCK = 15  # EfficientNet-Lite0 has 16 MBConv blocks; the last one is tuned


def block_inputs(net, rows, root: Path, cache: Path) -> np.ndarray:
    """(n, 2, 192, 7, 7) float16 activations entering the last block, original and mirrored."""
    if cache.exists():
        return np.load(cache)
    out, started = [], time.time()
    for i in range(0, len(rows), 32):
        x = torch.from_numpy(np.stack([preprocess_image(Image.open(root / r["image"]).convert("RGB"))
                                       for r in rows[i:i + 32]]))
        x = torch.cat([x, x.flip(-1)])
        with torch.inference_mode():
            h = net._swish(net._bn0(net._conv_stem(x)))
            for block in net._blocks[:LAST_BLOCK]:
                h = block(h)
        b = len(x) // 2
        out.append(np.stack([h[:b].half().numpy(), h[b:].half().numpy()], 1))
        print(f"activations {min(i + 32, len(rows))}/{len(rows)} {time.time() - started:.0f}s", flush=True)
    acts = np.concatenate(out)
    save_npy(cache, acts)
    return acts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr-top", type=float, default=1e-4)
    parser.add_argument("--lr-head", type=float, default=1e-2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    net = load_backbone().net
    rows = [r for r in csv.DictReader(open(args.csv)) if r["split"] in ("train", "test")]
    acts = block_inputs(net, rows, args.csv.parent, args.cache)
    labels = [r["label"] for r in rows]
    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels])
    split = np.array([r["split"] for r in rows])
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")

    top = torch.nn.ModuleDict({"block": copy.deepcopy(net._blocks[LAST_BLOCK]),
                               "conv": copy.deepcopy(net._conv_head), "bn": copy.deepcopy(net._bn1)})
    head = ProjectionHead(1280, 64, 0, 0.5)
    loss_fn, _ = make_loss("triplet-semihard", len(classes), 64)
    optimiser = torch.optim.AdamW([{"params": top.parameters(), "lr": args.lr_top},
                                   {"params": head.parameters(), "lr": args.lr_head}], weight_decay=1e-4)

    def features(x: torch.Tensor) -> torch.Tensor:
        h = top["block"](x)
        return net._swish(top["bn"](top["conv"](h))).mean(dim=(2, 3))

    def held_out_map() -> float:
        top.eval(), head.eval()
        vectors = np.zeros((len(rows), 64), np.float32)
        with torch.inference_mode():
            for i in range(0, len(test), 128):
                idx = test[i:i + 128]
                pooled = sum(features(torch.from_numpy(acts[idx, v].astype(np.float32))) for v in (0, 1)) / 2
                vectors[idx] = head(pooled).numpy()
        return evaluate_vectors(vectors, labels, (10,), subset=test).overall["mAP@10"]

    rng = np.random.default_rng(0)
    started = time.time()
    print(f"epoch 0 (pretrained top, untrained head): test mAP@10 {held_out_map():.4f}", flush=True)
    for epoch in range(1, args.epochs + 1):
        top.train(), head.train()
        for batch in pk_batches(y[train], 10, 16, rng):
            idx = train[batch]
            x = torch.from_numpy(acts[idx, rng.integers(0, 2, len(idx))].astype(np.float32))
            loss = loss_fn(head(features(x)), torch.from_numpy(y[idx]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}, test mAP@10 {held_out_map():.4f}, "
              f"{time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
