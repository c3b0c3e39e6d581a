"""The quality page's pictures: per-label bars, the top-1 confusion image and strips of failed queries.

Renderers take plain numbers and image paths (what :mod:`lookalike.evaluation.quality` computed)
and a target path, and return the path written. matplotlib is loaded through
:func:`lookalike.viz.charts._pyplot` (Agg backend, only when a chart is drawn).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lookalike.viz.charts import _pyplot, _save
from lookalike.viz.tiles import PAD, caption, captioned_grid, font, save_png

MISS = (200, 40, 40)   # caption colour of a hit whose label is not the query's


def label_bars_png(labels: Sequence[str], p_at_1: Sequence[float], map_at_k: Sequence[float], path: str | Path,
                   k: int = 10, title: str = "") -> Path:
    """Horizontal bars of P@1 and mAP@``k`` per label, in the order given (worst first = top).
    Values in [0, 1]. Returns ``path``."""
    plt = _pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.38 * n + 1.3)), dpi=100)
    y = np.arange(n)
    ax.barh(y - 0.2, p_at_1, height=0.4, label="P@1", color="#2563eb")
    ax.barh(y + 0.2, map_at_k, height=0.4, label=f"mAP@{k}", color="#f59e0b")
    for yi, a, b in zip(y, p_at_1, map_at_k):
        ax.text(a + 0.01, yi - 0.2, f"{a:.2f}", va="center", fontsize=7)
        ax.text(b + 0.01, yi + 0.2, f"{b:.2f}", va="center", fontsize=7)
    ax.set_yticks(y, [str(label)[:24] for label in labels], fontsize=8)
    ax.invert_yaxis()          # worst (first) at the top
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("leave-one-out, relevant = same label")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "per label, worst first", fontsize=9, loc="left")
    fig.tight_layout()
    return _save(fig, path)


def top1_confusion_png(labels: Sequence[str], counts: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Query label (rows) x label of the nearest neighbour (columns): ``counts`` (n, n) ints,
    shaded by each row's share (a row sums to 1), counts written in the cells. Returns ``path``."""
    plt = _pyplot()
    counts = np.asarray(counts)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(4.5, 0.5 * len(labels) + 2.2)
    fig, ax = plt.subplots(figsize=(side + 0.8, side), dpi=100)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
    names = [str(label)[:14] for label in labels]
    ax.set_xticks(range(len(labels)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), names, fontsize=8)
    ax.set_xlabel("label of the nearest neighbour (top-1)")
    ax.set_ylabel("query label")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_title(title or "top-1 confusion", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def failure_strips_png(rows: Sequence[tuple[tuple[object, str], Sequence[tuple[object, str | None]]]],
                       path: str | Path, size: int = 96, title: str = "") -> Path:
    """One strip per failed query: the query (blue frame) then what came back, nearest first.
    ``rows`` holds ((query image path, query label), [(hit image path, hit label), ...]); a hit
    whose label differs from the query's is captioned in red. Returns ``path``."""
    strips = []
    for (query, label), hits in rows:
        cells = [(query, [f"query: {label}"[:16]])] + [(p, [f"#{i + 1} {lab or '-'}"[:16]]) for i, (p, lab) in enumerate(hits)]
        strip = captioned_grid(cells, len(cells), size, caption_height=18, font_size=10, framed=(0,))
        draw = ImageDraw.Draw(strip)
        for i, (_, lab) in enumerate(hits, start=1):   # rewrite wrong labels in red
            if lab != label:
                x = PAD + i * (size + PAD)
                draw.rectangle([x, PAD + size + 2, x + size, PAD + size + 18], fill="white")
                caption(draw, (x + 2, PAD + size + 4), [f"#{i} {lab or '-'}"[:16]], font(10), MISS)
        strips.append(strip)
    head = 20 if title else 0
    width = max([s.width for s in strips] + [200])
    canvas = Image.new("RGB", (width, head + sum(s.height for s in strips)), "white")
    if title:
        caption(ImageDraw.Draw(canvas), (PAD, 4), [title], font(12))
    y = head
    for strip in strips:
        canvas.paste(strip, (0, y))
        y += strip.height
    return save_png(canvas, path)
