"""``lookalike train metric``: fit projection heads on a catalog's labels and measure them.

1. Pooled backbone features of every labelled item (original + horizontally flipped view, with
   the pretrained encoder's preprocessing: centre crop) are computed once and cached in
   ``<catalog>/cache/metric-backbone/`` keyed by image hash.
2. Items are split into train / held-out (stratified ``holdout`` fraction, or the catalog's own
   split column: train rows fit, test rows report).
3. One head per group (``group_column``; a single head otherwise) is trained on the train items.
   Per-group models also get a router (logistic regression on backbone features) that picks the
   group of any image at index and search time.
4. Held-out items are evaluated leave-one-out among themselves (relevant = same label) with the
   trained model *and* with the pretrained encoder's vectors, in the same run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lookalike.config import check_name
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.train.losses import LOSSES
from lookalike.train.metric_head import TrainConfig, fit_head
from lookalike.train.probes import split_items

KS = (1, 5, 10)


@dataclass
class MetricReport:
    name: str
    catalog: str
    label: str
    loss: str
    group_column: str | None
    n_train: int
    n_test: int
    baseline: dict[str, float]  # pretrained pooled features on the held-out items
    trained: dict[str, float]  # this model on the same items
    groups: list[str] = field(default_factory=list)
    router_accuracy: float | None = None
    losses_compared: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)
    path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# -- backbone features ---------------------------------------------------------------------------
def backbone_features(cat, items, resize: str | None = None, runner=None, batch_size: int = 32,
                      progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[dict]]:
    """(n, 2, 1280) features (original, flipped) for ``items``, cached by image hash; rows of items
    whose image cannot be read are NaN and listed in the returned errors. ``resize`` defaults to the
    pretrained encoder's (centre crop: +0.02 test mAP@10 for the trained head, docs/metric-learning.md)."""
    from lookalike.encoders.runtime import BackboneRunner, backbone_key
    from lookalike.encoders.pretrained import IMAGE_SIZE, preprocess_image
    from lookalike.data.images import ImageError, open_image

    resize = resize or default_resize()
    # fp32 for training features (torch or onnxruntime: the same vectors), files under the catalog's home
    runner = runner or BackboneRunner(runtime="onnx" if _has_onnx() else "torch", home=cat.home)
    cache_file = cat.dir / "cache" / "metric-backbone" / f"{backbone_key(runner.weights, runner.pool)}-{resize}.npz"
    cache = _read_cache(cache_file)
    todo = [it for it in items if it.sha256 not in cache]
    errors: list[dict] = []
    for start in range(0, len(todo), batch_size):
        chunk, pixels = [], []
        for item in todo[start:start + batch_size]:
            try:
                pixels.append(preprocess_image(open_image(item.path, draft_size=IMAGE_SIZE), IMAGE_SIZE, resize))
                chunk.append(item)
            except ImageError as exc:
                errors.append({"id": item.id, "reason": exc.reason, "message": exc.message})
        if pixels:
            batch = np.stack(pixels)
            features = np.stack([runner(batch), runner(np.ascontiguousarray(batch[..., ::-1]))], axis=1)
            for item, row in zip(chunk, features):
                cache[item.sha256] = row
        if progress:
            progress(len(todo[start:start + batch_size]))
    if todo:
        _write_cache(cache_file, cache)
    dim = next(iter(cache.values())).shape[-1] if cache else 1280
    views = np.stack([cache.get(it.sha256, np.full((2, dim), np.nan, np.float32)) for it in items])
    return views.astype(np.float32), errors


def default_resize() -> str:
    """Preprocessing of training features and of the ``metric:NAME`` encoder: the pretrained
    encoder's default, so both sides of a model always see the same pixels."""
    from lookalike.encoders.pretrained import DEFAULTS

    return DEFAULTS["resize"]


def _has_onnx() -> bool:
    from lookalike.encoders.onnx_runtime import onnx_available

    return onnx_available()


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    data = np.load(path)
    return dict(zip(data["hashes"].tolist(), data["views"]))


def _write_cache(path: Path, cache: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, hashes=np.array(list(cache)), views=np.stack(list(cache.values())).astype(np.float32))
    tmp.replace(path)


# -- training --------------------------------------------------------------------------------------
def _column(item, column: str) -> str | None:
    if column == "label":
        return item.label
    value = item.metadata.get(column)
    return None if value in (None, "") else str(value)


def train_heads(views: np.ndarray, labels: list[str], groups: list[str], train: np.ndarray,
                config: TrainConfig, progress=None, histories: dict | None = None) -> dict:
    """One head per group value, each trained on that group's train items (``histories`` collects
    each group's per-epoch loss)."""
    heads = {}
    for group in sorted(set(groups[i] for i in train)):
        rows = np.array([i for i in train if groups[i] == group])
        values = sorted(set(labels[i] for i in rows))
        if len(values) < 2:
            raise ValueError(f"group {group!r} has a single label ({values[0]!r}) among its train items; "
                             "metric learning needs two or more per group")
        codes = np.array([values.index(labels[i]) for i in rows])
        result = fit_head(views[rows], codes, config, progress)
        heads[group] = result.head
        if histories is not None:
            histories[group] = result.history
    return heads


def fit_router(features: np.ndarray, groups: list[str], train: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array(groups, dtype=object)
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(features[train], y[train])


def train_metric(cat, label: str = "label", *, group_column: str | None = None, loss: str = "triplet-semihard",
                 compare_losses: bool = False, holdout: float = 0.5, split_column: str | None = None,
                 name: str | None = None, config: TrainConfig | None = None, seed: int = 0,
                 progress: Callable[[str, int, int], None] | None = None) -> MetricReport:
    """Train, evaluate against the pretrained encoder on the held-out items, save ``metric:NAME``."""
    from lookalike.encoders.base import l2_normalize
    from lookalike.encoders.metric import MetricModel, model_dir

    config = TrainConfig(**{**(config or TrainConfig()).to_dict(), "loss": loss, "seed": seed})
    name = check_name(name or f"{cat.name}-{label}" + (f"-by-{group_column}" if group_column else ""), "model")
    items = [it for it in cat.items() if _column(it, label) is not None
             and (group_column is None or _column(it, group_column) is not None)]
    if len(items) < 4:
        raise ValueError(f"catalog {cat.name!r} has fewer than 4 items with a {label!r} value")
    tick = (lambda n: progress("features", n, len(items))) if progress else None
    resize = default_resize()
    views, errors = backbone_features(cat, items, resize, progress=tick)
    ok = ~np.isnan(views).any(axis=(1, 2))
    items, views = [it for it, k in zip(items, ok) if k], views[ok]
    labels = [_column(it, label) for it in items]
    groups = [_column(it, group_column) if group_column else "all" for it in items]
    splits = [_column(it, split_column) for it in items] if split_column else None
    train, test = split_items(labels, holdout, splits, seed)
    pooled = views.mean(axis=1)

    started = time.time()
    compared: dict[str, dict[str, float]] = {}
    # Comparing losses reports each on the held-out items; the saved model is always ``loss``'s
    # (choosing by held-out score would leak the test set into the model choice).
    candidates = list(dict.fromkeys([loss] + (list(LOSSES) if compare_losses else [])))
    models, histories = {}, {}
    for candidate in candidates:
        run = TrainConfig(**{**config.to_dict(), "loss": candidate})
        tick = (lambda e, _l, c=candidate, n=run.epochs: progress(f"train {c}", e + 1, n)) if progress else None
        histories[candidate] = {}
        heads = train_heads(views, labels, groups, train, run, tick, histories[candidate])
        router = fit_router(pooled, groups, train) if len(heads) > 1 else None
        models[candidate] = MetricModel(heads, {}, router)
        compared[candidate] = evaluate_vectors(models[candidate].embed(pooled), labels, KS, "cosine",
                                               subset=test).overall
    chosen, model = loss, models[loss]
    baseline = evaluate_vectors(l2_normalize(views[:, 0]), labels, KS, "cosine", subset=test).overall
    router_accuracy = None
    if model.router is not None:
        router_accuracy = float(np.mean(model.router.predict(pooled[test]) == np.array(groups, dtype=object)[test]))

    model.config = {
        "name": name, "catalog": cat.name, "label": label, "group_column": group_column, "loss": chosen,
        "train": TrainConfig(**{**config.to_dict(), "loss": chosen}).to_dict(),
        "backbone": {"weights": None, "pool": "avg", "resize": resize, "flip": True},
        "groups": list(model.heads), "split_column": split_column, "holdout": holdout,
    }
    folder = model_dir(name, cat.home)
    model.save(folder)
    plot_losses(histories, folder / "loss.png")
    report = MetricReport(
        name=name, catalog=cat.name, label=label, loss=chosen, group_column=group_column,
        n_train=len(train), n_test=len(test), baseline=baseline, trained=compared[chosen],
        groups=list(model.heads), router_accuracy=router_accuracy,
        losses_compared=compared if compare_losses else {}, train_seconds=time.time() - started,
        skipped=errors, path=str(folder))
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


def plot_losses(histories: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Training loss per epoch, one line per (loss, group), saved as a PNG beside the model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for loss_name, groups in histories.items():
        for group, history in groups.items():
            label = loss_name if group == "all" else f"{loss_name} / {group}"
            ax.plot(np.arange(1, len(history) + 1), np.asarray(history) / max(history[0], 1e-12), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / first-epoch loss")
    ax.set_title("metric learning: training loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
