"""Matplotlib charts saved as PNG: clusters-vs-labels confusion matrix, training loss curves, speed vs quality.

Callers pass plain numbers (histories, count matrices); nothing here trains or computes metrics.
matplotlib is imported inside each function with the Agg backend, so importing this module stays
cheap and never opens a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from lookalike.data.artifacts import atomic_path
from lookalike.viz.tiles import save_png


def _pyplot():
    # matplotlib takes ~1.6 s to import: loaded when a chart is drawn, not at CLI start
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, **options) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **options)
    _pyplot().close(fig)
    return Path(path)


def confusion_png(agreement, path: str | Path, title: str = "") -> Path:
    """Labels (rows) x clusters (columns) heat map with counts; columns named by their majority label.

    ``agreement`` is a ``lookalike.explore.clusters.Agreement``: its ``confusion`` (labels x
    clusters int counts), ``label_names``, ``cluster_ids``, ``cluster_to_label`` and the
    ``purity``/``nmi``/``ari`` used for the default title are read. Returns ``path``.
    """
    plt = _pyplot()
    counts = agreement.confusion
    # order columns by their mapped label so the diagonal structure is visible
    order = sorted(range(len(agreement.cluster_ids)),
                   key=lambda j: (agreement.label_names.index(agreement.cluster_to_label[agreement.cluster_ids[j]]),
                                  -counts[:, j].max()))
    counts = counts[:, order]
    clusters = [agreement.cluster_ids[j] for j in order]
    fig_w = max(6.0, 0.55 * len(clusters) + 3)
    fig_h = max(4.5, 0.45 * len(agreement.label_names) + 2)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=110)
    share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_yticks(range(len(agreement.label_names)), agreement.label_names)
    ax.set_xticks(range(len(clusters)),
                  [f"{c}\n{agreement.cluster_to_label[c][:9]}" for c in clusters], fontsize=7)
    ax.set_xlabel("cluster (majority label); shading = share of the cluster")
    ax.set_ylabel("label")
    ax.set_title(title or f"clusters vs labels: purity {agreement.purity:.3f}, NMI {agreement.nmi:.3f}, "
                          f"ARI {agreement.ari:.3f}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def epoch_loss_png(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Train and validation loss per epoch (autoencoders): ``history`` holds one dict per epoch
    with ``epoch``, ``train_loss`` and ``val_loss``. Returns ``path``."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per image (reconstruction + β·KL)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def relative_loss_png(histories: dict[str, dict[str, Sequence[float]]], path: str | Path,
                      title: str = "metric learning: training loss") -> Path:
    """Training loss per epoch divided by the first epoch's, one line per (loss name, group):
    ``histories[loss][group]`` is the list of epoch losses (metric learning). Returns ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for loss_name, groups in histories.items():
        for group, history in groups.items():
            label = loss_name if group == "all" else f"{loss_name} / {group}"
            ax.plot(np.arange(1, len(history) + 1), np.asarray(history) / max(history[0], 1e-12), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / first-epoch loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def image_pairs_png(top: np.ndarray, bottom: np.ndarray, path: str | Path, scale: tuple[int, int] = (2, 4)) -> Path:
    """Two rows of images (e.g. inputs over their reconstructions): ``top`` and ``bottom`` are
    (n, S, S, 3) uint8 arrays, concatenated side by side and enlarged ``scale`` = (x, y) times
    with nearest-neighbour resampling. Returns ``path``."""
    upper, lower = np.concatenate(list(top), axis=1), np.concatenate(list(bottom), axis=1)
    return save_png(Image.fromarray(np.concatenate([upper, lower], axis=0)).resize(
        (upper.shape[1] * scale[0], upper.shape[0] * scale[1]), Image.NEAREST), path)


def speed_quality_png(rows: Sequence[tuple[str, float, float]], path: str | Path, title: str = "") -> Path:
    """Speed against quality, one labelled point per variant: ``rows`` holds (name, images per
    second, mAP@10) (``lookalike bench models``). Returns ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, speed, quality in rows:
        ax.scatter([speed], [quality], s=40)
        ax.annotate(name, (speed, quality), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("images / s (batch 32)")
    ax.set_ylabel("mAP@10 (leave-one-out)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
