"""Metric learning: projection heads on frozen backbone features, fitted so same-label items end up close.

``MetricHeads(MetricHeadConfig(...)).fit(views, labels, groups)`` trains one head per group (P×K
batches: P labels, K items each, so every anchor has positives and negatives to mine; a random cached
view — original or flipped — per step, a cheap augmentation) and, for several groups, a router;
``save(dir)`` / ``MetricHeads.load(dir)`` follow :mod:`lookalike.train.base` and write what the
``metric:NAME`` encoder (:mod:`lookalike.encoders.metric`) reads. The backbone is frozen, so its
pooled features are computed once and the heads train on them in seconds on a CPU.

``train_metric(cat, ...)`` is ``lookalike train metric``:

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

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import joblib
import numpy as np
import torch
from torch import nn

from lookalike.config import check_name, model_dir
from lookalike.data.artifacts import KeyedCache, atomic_file, write_json
from lookalike.data.images import ImageError, open_image
from lookalike.encoders.metric import ROUTER_FILE, MetricModel, ProjectionHead
from lookalike.encoders.pretrained import DEFAULTS, IMAGE_SIZE, backbone_runner, preprocess_image
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.index.distances import l2_normalize
from lookalike.train.base import read_config, save_config
from lookalike.train.device import resolve_device, training_threads
from lookalike.train.losses import LOSSES, make_loss
from lookalike.train.probes import split_items
from lookalike.viz.charts import relative_loss_png

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
    resize = resize or default_resize()
    # fp32 for training features (torch or onnxruntime: the same vectors), files under the catalog's home
    runner = runner or backbone_runner(runtime="auto", home=cat.home)
    cache = KeyedCache(cat.dir / "cache" / "metric-backbone" / f"{runner.key}-{resize}.npz", ("views",))
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
                cache[item.sha256] = row.astype(np.float32)
        if progress:
            progress(len(todo[start:start + batch_size]))
    cache.save()
    dim = next(iter(cache.rows.values()))[0].shape[-1] if len(cache) else 1280
    views = np.stack([cache.get(it.sha256, np.full((2, dim), np.nan, np.float32)) for it in items])
    return views.astype(np.float32), errors


def default_resize() -> str:
    """Preprocessing of training features and of the ``metric:NAME`` encoder: the pretrained
    encoder's default, so both sides of a model always see the same pixels."""
    return DEFAULTS["resize"]


# -- training --------------------------------------------------------------------------------------
FORMAT_VERSION = 1


@dataclass
class MetricHeadConfig:
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
    device: str = "cpu"  # auto | cpu | cuda (lookalike.train.device.resolve_device)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class HeadFit:
    """One fitted head and its mean loss per epoch."""
    head: ProjectionHead
    history: list[float] = field(default_factory=list)


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


def fit_head(views: np.ndarray, labels: np.ndarray, config: MetricHeadConfig, progress=None) -> HeadFit:
    """Train a head on ``views`` (n, v, in_dim) — v cached views per item — with integer ``labels``.

    ``progress(epoch, loss)`` is called after every epoch (for progress bars).
    """
    if views.ndim == 2:
        views = views[:, None, :]
    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError("metric learning needs at least two labels among the training items")
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    head = ProjectionHead(views.shape[2], config.dim, config.hidden, config.dropout).to(device)
    n_classes = int(labels.max()) + 1
    loss_fn, loss_params = make_loss(config.loss, n_classes, config.dim, config.margin)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    groups = [{"params": head.parameters(), "lr": config.lr}]
    if loss_params:
        groups.append({"params": loss_params, "lr": config.lr * config.proxy_lr_scale})
    run = fit_embedding(head, np.ascontiguousarray(views, dtype=np.float32), labels, loss_fn, groups,
                        epochs=config.epochs, seed=config.seed, device=device,
                        classes_per_batch=config.classes_per_batch, per_class=config.per_class,
                        weight_decay=config.weight_decay,
                        progress=(lambda epoch, loss, _score: progress(epoch, loss)) if progress else None)
    return HeadFit(head=head.cpu(), history=run.history)


@dataclass
class FitRun:
    """What :func:`fit_embedding` did: mean loss and held-out scores per epoch, epochs run."""
    history: list[float] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    epochs: int = 0
    seconds: float = 0.0


def fit_embedding(model: nn.Module, views: np.ndarray, labels: np.ndarray | None, loss_fn, groups: list[dict], *,
                  epochs: int, seed: int, device, classes_per_batch: int = 10, per_class: int = 32,
                  batch_size: int = 64, weight_decay: float = 1e-4, progress=None, evaluate=None,
                  checkpoint: Path | None = None, resume: bool = False, deadline: float | None = None) -> FitRun:
    """The one training loop of every embedding trainer (metric heads, backbone fine-tuning, self-
    supervised adaptation): AdamW + one-cycle learning rate over ``epochs`` epochs.

    ``views`` (n, v, ...) holds v cached inputs per item (features, activations; any float dtype,
    converted per batch); each step takes a random view per item. With ``labels`` (n,) int64 batches
    are P×K (:func:`pk_batches`); with ``labels=None`` (self-supervised) batches are ``batch_size``
    random items seen through two different views, labelled by item (what NT-Xent expects).
    ``groups`` are the optimiser's parameter groups (each with its ``lr``, the one-cycle peak).
    ``evaluate(model) -> dict`` (held-out scores) runs after each epoch, ``progress(epoch, loss,
    scores)`` then. ``checkpoint``: a file written atomically after every epoch (model, loss,
    optimiser, schedule and random states); ``resume=True`` continues from it when it exists, so a
    resumed run ends with the same weights as an uninterrupted one. ``deadline`` (time.time())
    stops after the epoch that passes it. Callers seed torch before building the model.
    """
    rng = np.random.default_rng(seed)
    n_views = views.shape[1]
    if labels is None and n_views < 2:
        raise ValueError("self-supervised training needs at least two views per item")

    def epoch_batches() -> list[np.ndarray]:
        if labels is not None:
            return pk_batches(labels, classes_per_batch, per_class, rng)
        order = rng.permutation(len(views))
        size = min(batch_size, len(views))
        return [order[i:i + size] for i in range(0, len(order) - size + 1, size)]

    optimiser = torch.optim.AdamW(groups, weight_decay=weight_decay)
    steps_per_epoch = len(epoch_batches())
    total = epochs * steps_per_epoch
    # 10 % warm-up; at least 2.5 steps of it on very short runs (torch divides by warm-up steps - 1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[g["lr"] for g in groups], total_steps=max(total, 6),
        pct_start=max(0.1, min(0.5, 2.5 / max(total, 1))))
    run, first = FitRun(epochs=epochs), 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        if isinstance(loss_fn, nn.Module):
            loss_fn.load_state_dict(state["loss"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        run = FitRun(history=state["history"], scores=state["scores"], epochs=epochs, seconds=state["seconds"])
        first = len(run.history)
    targets = torch.from_numpy(np.asarray(labels, np.int64)).to(device) if labels is not None else None
    for epoch in range(first, epochs):
        started = time.time()
        model.train()
        losses = []
        for batch in epoch_batches()[:steps_per_epoch]:
            if labels is not None:
                view = rng.integers(0, n_views, len(batch))
                x = torch.from_numpy(np.ascontiguousarray(views[batch, view], dtype=np.float32)).to(device)
                y = targets[torch.from_numpy(batch).to(device)]
            else:
                a = rng.integers(0, n_views, len(batch))
                b = (a + rng.integers(1, n_views, len(batch))) % n_views  # a different view
                pair = np.concatenate([views[batch, a], views[batch, b]])
                x = torch.from_numpy(np.ascontiguousarray(pair, dtype=np.float32)).to(device)
                y = torch.arange(len(batch), device=device).repeat(2)
            loss = loss_fn(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        model.eval()
        run.history.append(float(np.mean(losses)))
        run.scores.append(evaluate(model) if evaluate else {})
        run.seconds += time.time() - started
        if checkpoint is not None:
            with atomic_file(Path(checkpoint)) as f:
                torch.save({"model": model.state_dict(),
                            "loss": loss_fn.state_dict() if isinstance(loss_fn, nn.Module) else {},
                            "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                            "history": run.history, "scores": run.scores, "seconds": run.seconds}, f)
        if progress:
            progress(epoch, run.history[-1], run.scores[-1])
        if deadline is not None and time.time() > deadline and epoch + 1 < epochs:
            run.epochs = epoch + 1
            break
    model.eval()
    return run


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



def _column(item, column: str) -> str | None:
    if column == "label":
        return item.label
    value = item.metadata.get(column)
    return None if value in (None, "") else str(value)


class MetricHeads:
    """One projection head per group (a single ``"all"`` group by default) and, for several groups, a
    router (logistic regression on pooled backbone features) that picks the group of any image.
    ``embed`` gives block vectors: group g's unit vector in block g, zeros elsewhere."""

    kind = "metric"
    version = FORMAT_VERSION

    def __init__(self, config: MetricHeadConfig | None = None):
        self.config = config or MetricHeadConfig()
        self.model: MetricModel | None = None
        self.histories: dict[str, list[float]] = {}   # group -> mean loss per epoch
        self.info: dict = {}                          # catalog, label, backbone... stored in config.json

    def fit(self, views: np.ndarray, labels: Sequence[str], groups: Sequence[str] | None = None,
            rows: np.ndarray | None = None, progress: Callable[[int, float], None] | None = None) -> "MetricHeads":
        """Fit on ``views`` ((n, v, in_dim) float32: v cached views per item, or (n, in_dim)) with
        string ``labels`` and ``groups`` per item, using only positions ``rows`` (default all).
        ValueError when a group has a single label among its rows."""
        views = views[:, None, :] if views.ndim == 2 else views
        groups = list(groups) if groups is not None else ["all"] * len(labels)
        rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
        heads = {}
        for group in sorted(set(groups[i] for i in rows)):
            members = np.array([i for i in rows if groups[i] == group])
            values = sorted(set(labels[i] for i in members))
            if len(values) < 2:
                raise ValueError(f"group {group!r} has a single label ({values[0]!r}) among its train items; "
                                 "metric learning needs two or more per group")
            codes = np.array([values.index(labels[i]) for i in members])
            result = fit_head(views[members], codes, self.config, progress)
            heads[group], self.histories[group] = result.head, result.history
        router = None
        if len(heads) > 1:
            # scikit-learn (~6 s to import) is needed only for the router of a multi-group model
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            y = np.array(groups, dtype=object)
            router = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(
                views.mean(axis=1)[rows], y[rows])
        self.model = MetricModel(heads, {}, router)
        return self

    def embed(self, features: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """(n, in_dim) pooled features -> (n, heads * dim) float32 block vectors (``MetricModel.embed``)."""
        return self.model.embed(features, groups)

    def save(self, directory) -> Path:
        """Write head-<i>.pt per group, router.joblib (several groups) and config.json."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in [*folder.glob("head-*.pt"), folder / ROUTER_FILE]:  # from an earlier model of this name
            stale.unlink(missing_ok=True)
        files = {}
        for i, (group, head) in enumerate(self.model.heads.items()):
            files[group] = f"head-{i}.pt"
            with atomic_file(folder / files[group]) as f:
                torch.save({"config": head.config, "state": head.state_dict()}, f)
        if self.model.router is not None:
            with atomic_file(folder / ROUTER_FILE) as f:
                joblib.dump(self.model.router, f)
        save_config(folder, self.kind, self.version, self.config, **self.info, groups=list(self.model.heads),
                    head_files=files)
        self.model = MetricModel.load(folder)
        return folder

    @classmethod
    def load(cls, directory) -> "MetricHeads":
        doc = read_config(directory, cls.kind, cls.version, "train one with `lookalike train metric`")
        saved = doc.get("config") or doc.get("train") or {}
        names = {f.name for f in fields(MetricHeadConfig)}
        heads = cls(MetricHeadConfig(**{k: v for k, v in saved.items() if k in names}))
        heads.model = MetricModel.load(Path(directory))
        heads.info = {k: v for k, v in doc.items() if k not in ("kind", "version", "config", "train", "groups",
                                                                "head_files")}
        return heads


# Metric training has always run single-threaded unless $LOOKALIKE_THREADS says otherwise.
@training_threads(default=1)
def train_metric(cat, label: str = "label", *, group_column: str | None = None, loss: str = "triplet-semihard",
                 compare_losses: bool = False, holdout: float = 0.5, split_column: str | None = None,
                 name: str | None = None, config: MetricHeadConfig | None = None, seed: int = 0,
                 progress: Callable[[str, int, int], None] | None = None) -> MetricReport:
    """Train, evaluate against the pretrained encoder on the held-out items, save ``metric:NAME``
    under ``model_dir("metric", NAME, cat.home)`` (with loss.png and report.json). ``config.device``
    may be ``"auto"`` (:func:`lookalike.train.device.resolve_device`: ValueError for an unknown
    device or CUDA without a GPU, before any work)."""
    config = MetricHeadConfig(**{**(config or MetricHeadConfig()).to_dict(), "loss": loss, "seed": seed})
    config = replace(config, device=str(resolve_device(config.device)))
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
        run = MetricHeadConfig(**{**config.to_dict(), "loss": candidate})
        tick = (lambda e, _l, c=candidate, n=run.epochs: progress(f"train {c}", e + 1, n)) if progress else None
        models[candidate] = MetricHeads(run).fit(views, labels, groups, train, tick)
        histories[candidate] = models[candidate].histories
        compared[candidate] = evaluate_vectors(models[candidate].embed(pooled), labels, KS, "cosine",
                                               subset=test).overall
    chosen, model = loss, models[loss]
    baseline = evaluate_vectors(l2_normalize(views[:, 0]), labels, KS, "cosine", subset=test).overall
    router_accuracy = None
    if model.model.router is not None:
        router_accuracy = float(np.mean(model.model.router.predict(pooled[test])
                                        == np.array(groups, dtype=object)[test]))

    model.info = {"name": name, "catalog": cat.name, "label": label, "group_column": group_column, "loss": chosen,
                  "backbone": {"weights": None, "pool": "avg", "resize": resize, "flip": True},
                  "split_column": split_column, "holdout": holdout}
    folder = model.save(model_dir("metric", name, cat.home))
    relative_loss_png(histories, folder / "loss.png")
    report = MetricReport(
        name=name, catalog=cat.name, label=label, loss=chosen, group_column=group_column,
        n_train=len(train), n_test=len(test), baseline=baseline, trained=compared[chosen],
        groups=list(model.model.heads), router_accuracy=router_accuracy,
        losses_compared=compared if compare_losses else {}, train_seconds=time.time() - started,
        skipped=errors, path=str(folder))
    write_json(folder / "report.json", report.to_dict(), indent=2, default=str)
    return report
