"""Train a projection head on cached backbone features so same-label items end up close.

The backbone is frozen, so its pooled features are computed once (see
:mod:`lookalike.encoders.metric`) and the head trains on them in seconds on a CPU. Batches are
P×K (P labels, K items each) so every anchor has positives and negatives to mine. Training views:
each item may have several cached views (original, horizontal flip); a random one is drawn per
step, a cheap augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookalike.train.losses import make_loss


class ProjectionHead(nn.Module):
    """Backbone features -> unit-length embedding. ``hidden=0``: one linear layer (after a
    standardising BatchNorm); otherwise a two-layer MLP."""

    def __init__(self, in_dim: int, dim: int = 256, hidden: int = 0, dropout: float = 0.2):
        super().__init__()
        self.config = {"in_dim": in_dim, "dim": dim, "hidden": hidden, "dropout": dropout}
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim), nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = hidden
        layers.append(nn.Linear(in_dim, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features), dim=1)


@dataclass
class TrainConfig:
    # Defaults: the best measured on clothing-small (docs/metric-learning.md).
    loss: str = "triplet-semihard"
    dim: int = 64
    hidden: int = 0
    dropout: float = 0.5
    epochs: int = 80
    lr: float = 1e-2
    proxy_lr_scale: float = 1.0  # proxies move at lr * this (x100 in the paper, whose lr is 1e-4)
    weight_decay: float = 1e-4
    margin: float = 0.2
    classes_per_batch: int = 10
    per_class: int = 32
    seed: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    head: ProjectionHead
    history: list[float] = field(default_factory=list)  # mean loss per epoch


def pk_batches(labels: np.ndarray, p: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of P×K batches: every item appears about once; small classes are re-sampled."""
    classes = np.unique(labels)
    by_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    steps = max(1, int(np.ceil(len(labels) / (min(p, len(classes)) * k))))
    batches = []
    for _ in range(steps):
        chosen = rng.choice(classes, size=min(p, len(classes)), replace=False)
        batch = [rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k) for c in chosen]
        batches.append(np.concatenate(batch))
    return batches


def fit_head(views: np.ndarray, labels: np.ndarray, config: TrainConfig, progress=None) -> TrainResult:
    """Train a head on ``views`` (n, v, in_dim) — v cached views per item — with integer ``labels``.

    ``progress(epoch, loss)`` is called after every epoch (for progress bars).
    """
    if views.ndim == 2:
        views = views[:, None, :]
    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError("metric learning needs at least two labels among the training items")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = torch.device(config.device)
    head = ProjectionHead(views.shape[2], config.dim, config.hidden, config.dropout).to(device)
    n_classes = int(labels.max()) + 1
    loss_fn, loss_params = make_loss(config.loss, n_classes, config.dim, config.margin)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    groups = [{"params": head.parameters(), "lr": config.lr}]
    if loss_params:
        groups.append({"params": loss_params, "lr": config.lr * config.proxy_lr_scale})
    optimiser = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps_per_epoch = len(pk_batches(labels, config.classes_per_batch, config.per_class, rng))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[g["lr"] for g in groups], total_steps=config.epochs * steps_per_epoch,
        pct_start=0.1)
    data = torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32)).to(device)
    targets = torch.from_numpy(labels).to(device)
    history = []
    head.train()
    for epoch in range(config.epochs):
        losses = []
        for batch in pk_batches(labels, config.classes_per_batch, config.per_class, rng)[:steps_per_epoch]:
            idx = torch.from_numpy(batch).to(device)
            view = torch.from_numpy(rng.integers(0, views.shape[1], len(batch))).to(device)
            loss = loss_fn(head(data[idx, view]), targets[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        if progress:
            progress(epoch, history[-1])
    head.eval()
    return TrainResult(head=head.cpu(), history=history)


def embed(head: ProjectionHead, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Apply a trained head to (n, in_dim) or (n, v, in_dim) features (views are averaged first)."""
    if features.ndim == 3:
        features = features.mean(axis=1)
    head.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(features), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(features[start:start + batch], dtype=np.float32))
            out.append(head(chunk).numpy())
    return np.concatenate(out) if out else np.zeros((0, head.config["dim"]), np.float32)
