"""Fine-tune EfficientNet-Lite0 itself on a catalog: ``lookalike train finetune`` (labels) and
``lookalike train adapt`` (self-supervised, no labels). Both save a ``finetuned:NAME`` model
(:mod:`lookalike.encoders.finetuned`).

How it fits a CPU budget (measured in docs/fine-tuning.md): the stem and the first ``16 - blocks``
MBConv blocks stay frozen, so their activations are computed **once** per image view and cached
(fp16, ``<catalog>/cache/finetune/``); every epoch then runs only the last ``blocks`` blocks, the
head convolution and the projection head. The training views (:func:`training_views`) are the
centre crop the encoder serves, its mirror image and random square crops of 70-100 % of the centre
square (aspect kept, mild colour jitter: colour is signal in a shop), at the backbone's native side.
``blocks="all"`` trains end to end (the cached "views" are then the pixels: a GPU job).

Training is the one loop of :func:`lookalike.train.metric.fit_embedding` (P×K batches, AdamW,
one-cycle) with a loss from pytorch-metric-learning (:func:`lookalike.train.losses.make_pml_loss`,
default semi-hard triplets), in two stages (the head alone, then blocks + head). After every epoch
the validation items choose the epoch kept and the held-out items are scored leave-one-out
(mAP@10, the progress bar shows it); at the end the validation items choose the flip test-time
augmentation and the search re-ranking the model serves (:func:`choose_search`). ``time_budget``
covers the whole command: the epochs are planned from timed steps after caching, keeping the
measured cost of scoring and export aside. Every epoch writes a checkpoint; ``resume=True``
continues an interrupted run where it stopped (same final weights).

``adapt`` trains the same way with NT-Xent (SimCLR, Chen et al. 2020) on pairs of views of every
catalog image, no labels, and serves the pooled backbone features (``output="backbone"``).

The model folder ``<home>/models/finetuned/<name>/``: ``config.json``, ``weights.pt``,
``report.json`` (before/after table), ``loss.png``; its ONNX fp32 and calibrated int8 variants go
where every runtime variant goes (``<home>/models/onnx/finetuned-<name>-<hash>/``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageEnhance

from lookalike.config import check_name, model_dir
from lookalike.data.artifacts import KeyedCache, atomic_file, write_json
from lookalike.data.images import ImageError, open_image, resize_square
from lookalike.encoders.finetuned import (KIND, OUTPUTS, TTAS, WEIGHTS_FILE, FinetunedNet, Prefix, Tail, build_network,
                                          flip_average, load_network, n_blocks, runner_key)
from lookalike.encoders.pretrained import arch_image_size, backbone_key, preprocess_image
from lookalike.encoders.runtime import ModelRunner, OnnxModel, build_variant, onnx_available, variants_dir
from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.evaluation.tuning import EXPANSIONS, tune_options
from lookalike.train.base import EXPANSION_FILE, read_config, save_config
from lookalike.train.device import resolve_device, training_threads
from lookalike.train.losses import make_pml_loss, parse_pml_loss
from lookalike.train.metric import fit_embedding
from lookalike.train.probes import split_items
from lookalike.viz.charts import relative_loss_png

FORMAT_VERSION = 1
DEFAULT_EPOCHS = 6                 # without --time-budget (~6 min on 2 quiet cores at the defaults: docs/fine-tuning.md)
MAX_EPOCHS = 100                   # what --time-budget may plan when --epochs does not cap it
BLOCKS = {"lite0": 16, "lite1": 21, "lite2": 21}  # MBConv blocks per backbone (efficientnet_lite_pytorch)
KS = (1, 5, 10)
# int8: the projection head (BatchNorm + linear after the pooling: ~0.2 M of ~400 M multiply-adds)
# stays fp32 — int8 would not speed it up, but its rounding moves every output vector
INT8_KEEP_FP32 = ("/head/",)
CALIBRATION_IMAGES = 256           # training images (never scored ones) that set the int8 ranges
# a re-ranking must beat plain search by this much validation mAP@10 to become the model's default
EXPANSION_MIN_GAIN = 0.002
# flip test-time augmentation doubles every encoding: it must gain this much on validation to be kept
TTA_MIN_GAIN = 0.003
# --time-budget's plan for the work after training (plan_finishing; docs/fine-tuning.md, design item 9)
RUNTIME_SHARE = 0.15               # at most this share of the budget scores the ONNX fp32 / int8 variants
RUNTIME_MIN_ITEMS = 500            # ... unless fewer items than this would be scored (the deadline guard still holds)
INT8_BUILD_PASSES = 6.0            # int8 quantisation ~ this many fp32 passes per calibration image (measured 4.5)
CHOOSE_SECONDS = 5.0               # choosing TTA + re-ranking: 2 x 8 leave-one-out evaluations of the validation items
FINISH_MARGIN = 1.25               # every planned cost of the finishing stage, times this
END_RESERVE = 10.0                 # seconds kept for the loss PNG, report.json and the process's exit
STREAM_BATCH = 32                  # held-out images decoded and scored at a time (never all at once)


@dataclass
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning (or adaptation) run."""
    backbone: str = "lite0"        # EfficientNet-Lite variant: lite0 | lite1 | lite2 (encoders.pretrained.ARCHS)
    blocks: int | str = 3          # trailing MBConv blocks trained (0: only the head convolution), or "all"
    loss: str = "triplet"          # semi-hard triplets: the frozen-head winner (docs/metric-learning.md)
    dim: int = 64                  # projection head output
    dropout: float = 0.5
    epochs: int | None = None      # None: DEFAULT_EPOCHS, or with time_budget as many as it affords (<= MAX_EPOCHS)
    head_epochs: int = 40          # stage 1: the head alone on pooled features of the frozen blocks (0: skip)
    time_budget: float | None = None  # seconds for the whole run; sets the epochs from a timed step
    lr: float = 6e-4               # backbone blocks, one-cycle peak (validation: 2e-4 < 4e-4 < 6e-4 in 15 min; 1e-3 diverged)
    head_lr: float = 1e-2          # projection head and the loss's proxies
    weight_decay: float = 1e-4
    views: int = 4                 # cached per training image: centre crop, its mirror, then random crops
    size: int | None = None        # training resolution (None: the backbone's native side, what the encoder sees)
    crop_scale: float = 0.7        # random square crops: smallest fraction of the centre square's area
    jitter: float = 0.05           # random crops' brightness / contrast / saturation: factor in [1-j, 1+j]
    validation: float = 0.1        # fraction of the train items kept for model selection when no validation rows
    classes_per_batch: int = 10
    per_class: int = 16
    batch_size: int = 64           # self-supervised: images per batch (two views each)
    output: str = "head"           # what the encoder serves: head | backbone
    freeze_bn: bool = True         # backbone BatchNorm keeps its ImageNet statistics (encoders.finetuned.Tail)
    seed: int = 0
    device: str = "cpu"            # auto | cpu | cuda

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FinetuneReport:
    name: str
    catalog: str
    label: str | None
    objective: str                 # supervised | self-supervised
    protocol: str
    n_train: int
    n_test: int
    epochs: int
    before: dict[str, float]       # pretrained pooled features on the held-out items
    after: dict[str, float]        # this model (torch fp32)
    runtimes: dict[str, dict[str, float]] = field(default_factory=dict)  # onnx / onnx-int8 on the same items
    expansion: str = "none"        # search-time re-ranking chosen on the validation items (expansion.json)
    expansion_scores: dict[str, float] = field(default_factory=dict)  # validation mAP@10 of each candidate (with ``tta``)
    reranked: dict[str, float] = field(default_factory=dict)  # held-out scores with ``tta`` + ``expansion`` (torch fp32)
    tta: str = "none"              # test-time augmentation chosen with the re-ranking (config.json "tta")
    search_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # {tta: {re-ranking: validation mAP@10}}
    history: list[float] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    head_stage: dict[str, float] = field(default_factory=dict)  # held-out scores after stage 1 (head alone)
    head_history: list[float] = field(default_factory=list)     # stage 1's mean loss per epoch
    backbone: str = "lite0"
    n_validation: int = 0          # items that chose the epoch kept (0: the last epoch is kept)
    selected_epoch: int | None = None  # 0: the stage-1 head; e: after epoch e of stage 2
    seconds: dict[str, float] = field(default_factory=dict)
    budget: dict[str, float] = field(default_factory=dict)  # --time-budget's plan: estimated seconds, epochs
    skipped: list[dict] = field(default_factory=list)
    runtime_items: int = 0         # held-out items ``runtimes`` were scored on (n_test: all of them)
    notes: list[str] = field(default_factory=list)  # what the budget cut or skipped, and why
    path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def cut_of(blocks: int | str, total: int = 16) -> int:
    """Index of the first trained block for ``blocks`` of ``total`` (16 in Lite0, 21 in Lite1/2;
    -1: everything, stem included). ValueError outside [0, total]."""
    if str(blocks).lower() == "all":
        return -1
    blocks = int(blocks)
    if not 0 <= blocks <= total:
        raise ValueError(f"--blocks must be between 0 and {total}, or all (got {blocks})")
    return total - blocks


# -- augmentation ----------------------------------------------------------------------------------
def augment(image: Image.Image, size: int, rng: np.random.Generator, scale: float = 0.7,
            jitter: float = 0.05) -> Image.Image:
    """A random view of ``image`` (RGB) as a ``size`` x ``size`` RGB image, close to what the encoder
    sees (its centre square, :func:`lookalike.data.images.resize_square` ``crop``): a square crop
    whose area is a fraction in [scale, 1] of that centre square, anywhere in the photo (aspect
    preserved: no stretching), horizontal flip with probability 1/2, then brightness, contrast and
    saturation each scaled by a factor in [1 - jitter, 1 + jitter] (mild: colour is signal)."""
    width, height = image.size
    side = max(1, int(round(min(width, height) * np.sqrt(rng.uniform(scale, 1.0)))))
    left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    view = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhancer(view).enhance(float(rng.uniform(1 - jitter, 1 + jitter)))
    return view


def training_views(image: Image.Image, size: int, views: int, rng: np.random.Generator, scale: float = 0.7,
                   jitter: float = 0.05) -> list[np.ndarray]:
    """``views`` preprocessed (3, size, size) float32 views of one training image: the centre crop
    the encoder sees, its mirror image, then :func:`augment` crops. Training on the served view
    first matters: stretched 0.35-1 crops at 192 px capped the head at 0.71-0.73 mAP@10 on
    clothing-small where centre crops reach 0.78 (docs/fine-tuning.md)."""
    centre = resize_square(image, size, "crop")
    out = [centre, centre.transpose(Image.FLIP_LEFT_RIGHT)][:views]
    out += [augment(image, size, rng, scale, jitter) for _ in range(views - len(out))]
    return [preprocess_image(view, size, "stretch") for view in out]  # already square: no resize


def _item_rng(seed: int, sha: str) -> np.random.Generator:
    """One generator per (seed, image): a view never depends on which other images are cached."""
    return np.random.default_rng([seed, int(sha[:12], 16)])


# -- cached activations ----------------------------------------------------------------------------
def cached_views(cat, items, prefix: Prefix, key: str, config: FinetuneConfig, augmented: bool,
                 device, progress: Callable[[int], None] | None = None, batch: int = 32):
    """(n, v, c, h, w) float16 activations entering the first trained block, for each item: ``views``
    training views (:func:`training_views`, ``augmented``) at the config's training side (default
    the backbone's native one), or the centre crop at the native side and its mirror image
    (evaluation: what the encoder serves, v = 2; the mirror scores flip test-time augmentation). Cached in ``<catalog>/cache/finetune/`` by image hash (the stamp names the backbone,
    cut, views and augmentation). Unreadable images are left out: returns (array, kept positions,
    errors)."""
    size = training_size(config) if augmented else arch_image_size(config.backbone)
    views = config.views if augmented else 2
    recipe = (f"{key} views2={views} size={size} scale={config.crop_scale} jitter={config.jitter} seed={config.seed}"
              if augmented else f"{key} centre+mirror size={size}")
    stamp = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    # blocks=all caches pixels: recomputed per run rather than written (GBs, and decoding is cheap)
    path = cat.dir / "cache" / "finetune" / f"{stamp}.npz" if prefix.cut >= 0 else None
    cache = KeyedCache(path, ("views",), stamp=recipe)
    # onnxruntime runs the frozen part when it can (the same activations as torch, faster on CPU)
    runner = ModelRunner(prefix, f"{key}-{size}", size, runtime="auto" if device.type == "cpu" else "torch",
                         home=cat.home) if prefix.cut >= 0 else None
    errors: list[dict] = []
    todo = [it for it in items if it.sha256 not in cache]

    def load(item):
        try:
            image = open_image(item.path, draft_size=size)
        except ImageError as exc:
            return item, exc
        if not augmented:
            centre = resize_square(image, size, "crop")
            return item, [preprocess_image(v, size, "stretch") for v in (centre, centre.transpose(Image.FLIP_LEFT_RIGHT))]
        rng = _item_rng(config.seed, item.sha256)
        return item, training_views(image, size, views, rng, config.crop_scale, config.jitter)

    # decoding and augmenting run on threads (Pillow releases the GIL); each image has its own generator
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for start in range(0, len(todo), batch):
            chunk, pixels = [], []
            for item, result in pool.map(load, todo[start:start + batch]):
                if isinstance(result, ImageError):
                    errors.append({"id": item.id, "reason": result.reason, "message": result.message})
                    continue
                chunk.append(item)
                pixels.extend(result)
            if chunk:
                stacked = np.stack(pixels)
                if runner is not None:
                    if runner.runtime == "torch":
                        with torch.inference_mode():
                            acts = prefix.to(device)(torch.from_numpy(stacked).to(device)).cpu().numpy()
                    else:
                        acts = runner(stacked)
                else:
                    acts = stacked
                acts = acts.reshape(len(chunk), views, *acts.shape[1:]).astype(np.float16)
                for item, row in zip(chunk, acts):
                    cache[item.sha256] = row
            if progress:
                progress(len(todo[start:start + batch]))
    cache.save()
    kept = [i for i, it in enumerate(items) if it.sha256 in cache]
    stacked = np.stack([cache[items[i].sha256] for i in kept]) if kept else np.zeros((0, views), np.float16)
    return stacked, kept, errors


def training_size(config: "FinetuneConfig") -> int:
    """The side the views are cached at: ``config.size``, else the backbone's native input side."""
    return int(config.size) if config.size else arch_image_size(config.backbone)


def embed_cached(tail: Tail, acts: np.ndarray, device, batch: int = 128, serve: bool = True,
                 tta: str = "none") -> np.ndarray:
    """Unit vectors of the first view of each row of ``acts`` (n, v, ...) through ``tail`` (``serve``:
    what the encoder serves, else the pooled backbone features); ``tta="flip"``: the normalised
    mean with the second view's (the mirror image of held-out rows: :func:`cached_views`), as
    :func:`lookalike.encoders.finetuned.flip_average` serves it."""
    if tta == "flip":
        total = embed_cached(tail, acts, device, batch, serve) + embed_cached(tail, acts[:, 1:], device, batch, serve)
        return total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
    tail.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(acts), batch):
            x = torch.from_numpy(np.ascontiguousarray(acts[start:start + batch, 0], dtype=np.float32)).to(device)
            out.append((tail.embed(x) if serve else torch.nn.functional.normalize(tail.features(x), dim=1)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


# -- the learned component -------------------------------------------------------------------------
class Finetuned:
    """EfficientNet-Lite (``config.backbone``) with its last blocks and a projection head trained on
    a catalog.

    ``fit(train_views, labels, ...)`` trains from cached activations (``labels=None``: self-
    supervised) and keeps the epoch that scores best on the validation items (``select``);
    ``save(dir)`` writes config.json + weights.pt; ``Finetuned.load(dir)``; ``embed(pixels)`` gives
    the vectors the ``finetuned:NAME`` encoder gives."""

    kind = KIND
    version = FORMAT_VERSION

    def __init__(self, config: FinetuneConfig | None = None):
        self.config = config or FinetuneConfig()
        if self.config.output not in OUTPUTS:
            raise ValueError(f"output must be head or backbone, not {self.config.output!r}")
        self.network: FinetunedNet | None = None
        self.classes: list[str] = []
        self.info: dict = {}
        self.run = None
        self.head_run = None               # stage 1's FitRun (None: skipped or resumed past it)
        self.head_scores: dict = {}        # held-out scores after stage 1
        self.selected_epoch: int | None = None  # kept epoch (0: the stage-1 head; None: the last)

    @property
    def cut(self) -> int:
        total = n_blocks(self.network.tail.net) if self.network is not None else BLOCKS.get(self.config.backbone, 16)
        return cut_of(self.config.blocks, total)

    def start(self) -> "Finetuned":
        """The untrained network (ImageNet backbone + fresh head), seeded."""
        torch.manual_seed(self.config.seed)
        self.network = build_network({"in_dim": 1280, "dim": self.config.dim, "hidden": 0,
                                      "dropout": self.config.dropout}, self.config.output, self.config.backbone)
        return self

    def tail(self) -> Tail:
        net = self.network.tail.net
        return Tail(net, self.network.tail.head, self.cut, self.config.output, self.config.freeze_bn)

    def prefix(self) -> Prefix:
        return Prefix(self.network.tail.net, self.cut).eval()

    def fit(self, views: np.ndarray, labels=None, *, evaluate=None, progress=None, checkpoint=None,
            resume: bool = False, deadline: float | None = None, select: str | None = None) -> "Finetuned":
        """Train on ``views`` (n, v, ...) cached activations entering block ``cut`` with ``labels``
        (n strings; None: self-supervised NT-Xent). ``evaluate(tail) -> scores`` runs after stage 1
        and after each epoch; see :func:`lookalike.train.metric.fit_embedding` for ``checkpoint`` /
        ``resume``. ``select``: a key of those scores (the validation items' mAP@10, never the test
        items'): the network ends as it was at its best value — after stage 1 (``selected_epoch``
        0) or after epoch e (``selected_epoch`` e) — rather than after the last epoch. The best
        state is written next to ``checkpoint`` (``best.pt``) so a resumed run keeps it."""
        config = self.config
        best = _BestState(select, Path(checkpoint).with_name("best.pt") if checkpoint is not None else None,
                          resume)
        scored = (lambda epoch, tail: best.offer(epoch, evaluate(tail), self.network)) if evaluate else None
        if self.network is None:
            self.start()
        device = resolve_device(config.device)
        if labels is not None:
            self.classes = sorted(set(labels))
            index = {c: i for i, c in enumerate(self.classes)}
            targets = np.array([index[v] for v in labels], np.int64)
            if len(self.classes) < 2:
                raise ValueError("fine-tuning on labels needs at least two labels among the training items")
            loss_fn = make_pml_loss(config.loss, len(self.classes), config.dim)
        else:
            targets = None
            loss_fn = make_pml_loss("ntxent", 0, config.dim)
        tail = self.tail().to(device)
        if device.type == "cpu" and self.cut >= 0:
            # oneDNN's convolutions (and their backward) run ~20 % faster on NHWC tensors on a CPU
            tail.to(memory_format=torch.channels_last)
            tail.channels_last = True
        loss_fn.to(device)
        if config.head_epochs and targets is not None and not (resume and checkpoint is not None
                                                               and Path(checkpoint).exists()):
            self.head_run = self.fit_head(tail, views, targets, loss_fn, device)
            self.head_scores = scored(0, tail) if scored else {}
        for p in self.network.parameters():
            p.requires_grad_(False)
        trained = [p for block in (tail.net._blocks[max(self.cut, 0):] if self.cut >= 0 else [tail.net])
                   for p in block.parameters()]
        if self.cut >= 0:
            trained += [*tail.net._conv_head.parameters(), *tail.net._bn1.parameters()]
        for p in [*trained, *tail.head.parameters()]:
            p.requires_grad_(True)
        # after stage 1 the head and proxies are already fitted: they move at the blocks' small lr
        # (LP-FT: a large head lr would again pull the blocks towards a moving target)
        head_lr = config.lr if self.head_run is not None else config.head_lr
        groups = [{"params": [p for p in trained], "lr": config.lr},
                  {"params": [*tail.head.parameters(), *loss_fn.parameters()], "lr": head_lr}]
        self.run = fit_embedding(tail, views, targets, loss_fn, groups, epochs=config.epochs or DEFAULT_EPOCHS,
                                 seed=config.seed,
                                 device=device, classes_per_batch=config.classes_per_batch,
                                 per_class=config.per_class, batch_size=config.batch_size,
                                 weight_decay=config.weight_decay, progress=progress,
                                 evaluate=_EpochCounter(scored, _epochs_done(checkpoint, resume)) if scored else None,
                                 checkpoint=checkpoint, resume=resume, deadline=deadline)
        self.selected_epoch = best.restore(self.network)
        best.discard()
        self.network = self.network.cpu().to(memory_format=torch.contiguous_format).eval()
        return self

    def fit_head(self, tail: Tail, views: np.ndarray, targets, loss_fn, device):
        """Stage 1 of the two-stage fine-tune (linear probe, then fine-tune: Kumar et al., "Fine-tuning
        can distort pretrained features", ICLR 2022): the projection head and the loss's proxies train
        alone for ``head_epochs`` on the pooled features of the still-ImageNet blocks — one forward
        pass over the cached views, then seconds per epoch — so the blocks start stage 2 under a head
        that already separates the labels instead of a random one. Returns the stage's FitRun."""
        config = self.config
        tail.eval()
        pooled = []
        with torch.inference_mode():
            for start in range(0, len(views), 64):
                chunk = views[start:start + 64]
                x = torch.from_numpy(np.ascontiguousarray(chunk.reshape(-1, *chunk.shape[2:]), dtype=np.float32))
                pooled.append(tail.features(x.to(device)).cpu().numpy().reshape(len(chunk), chunk.shape[1], -1))
        pooled = np.concatenate(pooled)
        for p in self.network.parameters():
            p.requires_grad_(False)
        for p in tail.head.parameters():
            p.requires_grad_(True)
        groups = [{"params": [*tail.head.parameters(), *loss_fn.parameters()], "lr": config.head_lr}]
        return fit_embedding(tail.head, pooled, targets, loss_fn, groups, epochs=config.head_epochs, seed=config.seed,
                             device=device, classes_per_batch=config.classes_per_batch, per_class=config.per_class,
                             batch_size=config.batch_size, weight_decay=config.weight_decay)

    def embed(self, pixels: np.ndarray, batch: int = 64) -> np.ndarray:
        """(n, 3, s, s) preprocessed pixels -> (n, dim) float32 unit vectors (torch, CPU)."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), batch):
                out.append(self.network(torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch],
                                                                              dtype=np.float32))).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return self.config.dim if self.config.output == "head" else 1280

    def save(self, directory) -> Path:
        """Write weights.pt and config.json (the ``finetuned:NAME`` encoder reads both)."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(folder / WEIGHTS_FILE) as f:
            torch.save(self.network.state_dict(), f)
        save_config(folder, self.kind, self.version, self.config, **self.info, classes=self.classes,
                    head=dict(self.network.tail.head.config), output=self.config.output, dim=self.dim,
                    resize="crop")
        return folder

    @classmethod
    def load(cls, directory) -> "Finetuned":
        doc = read_config(directory, cls.kind, cls.version, "train one with `lookalike train finetune`")
        names = {f.name for f in fields(FinetuneConfig)}
        model = cls(FinetuneConfig(**{k: v for k, v in doc["config"].items() if k in names}))
        model.network, _ = load_network(Path(directory))
        model.classes = list(doc.get("classes", []))
        model.info = {k: v for k, v in doc.items() if k not in ("kind", "version", "config", "classes", "head",
                                                                "output", "dim", "resize")}
        return model


def _epochs_done(checkpoint, resume: bool) -> int:
    """Epochs an interrupted run's checkpoint holds (0 when starting afresh)."""
    if not resume or checkpoint is None or not Path(checkpoint).exists():
        return 0
    return len(torch.load(checkpoint, map_location="cpu", weights_only=False)["history"])


class _EpochCounter:
    """``evaluate(model)`` for :func:`fit_embedding` that passes the epoch number (1, 2, ...) on."""

    def __init__(self, scored, done: int):
        self.scored, self.epoch = scored, done

    def __call__(self, model) -> dict:
        self.epoch += 1
        return self.scored(self.epoch, model)


class _BestState:
    """The network's state at its best ``key`` score so far (early stopping's model selection:
    the epoch is chosen on validation items). Kept in memory and in ``path`` (a resumed run reads it)."""

    def __init__(self, key: str | None, path: Path | None, resume: bool):
        self.key, self.path = key, path
        self.score, self.epoch, self.state = -np.inf, None, None
        if resume and path is not None and path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=False)
            self.score, self.epoch, self.state = saved["score"], saved["epoch"], saved["state"]

    def offer(self, epoch: int, scores: dict, network: torch.nn.Module) -> dict:
        value = scores.get(self.key) if self.key else None
        if value is not None and value > self.score:
            self.score, self.epoch = float(value), epoch
            self.state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
            if self.path is not None:
                with atomic_file(self.path) as f:
                    torch.save({"score": self.score, "epoch": epoch, "state": self.state}, f)
        return scores

    def restore(self, network: torch.nn.Module) -> int | None:
        """Load the best state into ``network``; its epoch (None: nothing was selected)."""
        if self.state is None:
            return None
        network.load_state_dict(self.state)
        return self.epoch

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


# -- the commands ----------------------------------------------------------------------------------
def _column(item, column: str) -> str | None:
    if column == "label":
        return item.label
    value = item.metadata.get(column)
    return None if value in (None, "") else str(value)


def _pixels(items, size: int) -> np.ndarray:
    """Centre-crop pixels of ``items`` at ``size`` (what the encoder sees), stacked: only for the few
    hundred int8 calibration images; held-out images are streamed (:func:`stream_pixels`)."""
    return np.stack([preprocess_image(open_image(it.path, draft_size=size), size, "crop") for it in items])


def stream_pixels(items, size: int, batch: int = STREAM_BATCH):
    """Yield (positions, (b, 3, size, size) float32 centre-crop pixels) for ``items`` ``batch`` at a
    time, so a large held-out set never sits in memory as one float32 array (1,890 items at 224 px:
    1.1 GB). Unreadable images are left out of their batch."""
    for start in range(0, len(items), batch):
        positions, pixels = [], []
        for offset, item in enumerate(items[start:start + batch]):
            try:
                image = open_image(item.path, draft_size=size)
            except ImageError:
                continue
            positions.append(start + offset)
            pixels.append(preprocess_image(image, size, "crop"))
        if positions:
            yield np.array(positions, np.int64), np.stack(pixels)


@dataclass
class FinishCosts:
    """Seconds of each unit of the work after training, measured on this machine before training
    (:func:`_finishing_costs`), which :func:`plan_finishing` multiplies by the real counts."""
    view: float                    # one cached held-out view through the trained blocks + head (torch)
    decode: float = 0.0            # decoding + preprocessing one held-out image
    onnx: float = 0.0              # one image through the exported fp32 network (onnxruntime)
    int8: float = 0.0              # one image through int8: planned at the fp32 cost (measured 0.3-0.75 of it)
    export: float = 0.0            # one ONNX export of the whole network


def plan_finishing(costs: FinishCosts, n_test: int, n_valid: int, n_calibration: int, budget: float,
                   export: bool = True, tta_passes: int = 2) -> dict[str, float]:
    """Seconds to keep after training for everything that follows it, from measured unit ``costs``
    and the real counts: choosing TTA and re-ranking (the ``n_valid`` validation views, twice), the
    held-out scores (``n_test`` views, ``tta_passes`` times: flip TTA may be chosen), and with
    ``export`` the ONNX fp32 export, int8 calibration (``n_calibration`` images decoded and run
    :data:`INT8_BUILD_PASSES` times) and the fp32 + int8 scoring of held-out images, decoded and run
    ``tta_passes`` times each. That last check is the one part that scales with the held-out set and
    is not the product: it gets at most :data:`RUNTIME_SHARE` of ``budget`` seconds, so the plan
    scores the runtime variants on ``runtime_items`` held-out items (all when they fit, never fewer
    than :data:`RUNTIME_MIN_ITEMS` unless there are fewer). Every cost is multiplied by
    :data:`FINISH_MARGIN`; :data:`END_RESERVE` is added.

    Returns {"finishing": total seconds, "export": export + calibration seconds, "runtime_items":
    items, "runtime_per_item": seconds per scored item, "runtime": seconds for them} (seconds
    include the margin)."""
    choose = 2 * n_valid * costs.view + (CHOOSE_SECONDS if n_valid else 0.0)
    scoring = tta_passes * n_test * costs.view
    exporting = 2 * costs.export + n_calibration * (costs.decode + INT8_BUILD_PASSES * costs.onnx) if export else 0.0
    per_item = FINISH_MARGIN * (costs.decode + tta_passes * (costs.onnx + costs.int8)) if export else 0.0
    items = n_test if export else 0
    if per_item * items > RUNTIME_SHARE * budget:
        items = min(n_test, max(RUNTIME_MIN_ITEMS, int(RUNTIME_SHARE * budget / per_item)))
    runtime = per_item * items
    total = FINISH_MARGIN * (choose + scoring + exporting) + runtime + END_RESERVE
    return {"finishing": round(total, 1), "export": round(FINISH_MARGIN * exporting, 1), "runtime_items": int(items),
            "runtime_per_item": round(per_item, 4), "runtime": round(runtime, 1)}


def score_runtimes(runners: dict[str, Callable[[np.ndarray], np.ndarray]], items: list, labels: list,
                   reference: np.ndarray, size: int, *, tta: str = "none", order: np.ndarray | None = None,
                   deadline: float | None = None, batch_seconds: float = 0.0, batch: int = STREAM_BATCH,
                   clock: Callable[[], float] = time.time, progress: Callable[[int], None] | None = None
                   ) -> tuple[dict[str, dict[str, float]], int]:
    """Score each runtime (``runners``: name -> (n, 3, s, s) float32 pixels -> (n, d) vectors, e.g.
    the ONNX fp32 and int8 variants) on held-out ``items`` decoded ``batch`` at a time
    (:func:`stream_pixels`) in ``order`` (positions: a seeded permutation, or a prefix of one — a
    seeded random subset; None: all in order), as the encoder serves them (``tta``
    :func:`~lookalike.encoders.finetuned.flip_average`), leave-one-out mAP@10 etc. with ``labels``.

    Deadline guard: before each batch, when ``clock()`` plus one batch's time (the mean so far;
    ``batch_seconds`` before the first) would pass ``deadline``, it stops; the scores are then those
    of the items scored. ``reference`` (n, d): the trained torch model's vectors of all ``items``
    (same TTA), scored as ``"torch"`` on the same items so every runtime compares with it.
    ``progress(n)`` after each batch of ``n`` items. Returns ({runtime: scores}, items scored);
    ({}, 0) when no batch fitted."""
    order = np.arange(len(items)) if order is None else np.asarray(order, np.int64)
    chosen = [items[i] for i in order]
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    done: list[np.ndarray] = []
    spent, batches = 0.0, 0
    for start in range(0, len(chosen), batch):
        if deadline is not None:
            estimate = spent / batches if batches else batch_seconds
            if clock() + estimate > deadline:
                break
        began = clock()
        for positions, pixels in stream_pixels(chosen[start:start + batch], size, batch):
            for name, run in runners.items():
                out = flip_average(run, pixels) if tta == "flip" else np.asarray(run(pixels), np.float32)
                vectors[name].append(out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12))
            done.append(order[start + positions])
        spent, batches = spent + clock() - began, batches + 1
        if progress:
            progress(len(chosen[start:start + batch]))
    if not done:
        return {}, 0
    scored = np.concatenate(done)
    subset_labels = [labels[i] for i in scored]
    scores = {"torch": evaluate_vectors(reference[scored], subset_labels, KS, "cosine").overall}
    for name, parts in vectors.items():
        scores[name] = evaluate_vectors(np.concatenate(parts), subset_labels, KS, "cosine").overall
    return scores, len(scored)


def _export_variants(model: Finetuned, name: str, folder: Path, home, size: int,
                     calibration: np.ndarray) -> dict[str, ModelRunner]:
    """Export fp32 ONNX and calibrated int8 into the model's variants folder (where the
    ``finetuned:NAME`` encoder finds them); {variant: its runner}."""
    out = variants_dir(runner_key(name, folder), home)
    runners = {}
    for variant in ("onnx", "onnx-int8"):
        build_variant(model.network, variant, out / f"{variant}.onnx", size,
                      calibration if variant == "onnx-int8" else None, keep_fp32=INT8_KEEP_FP32)
        runners[variant] = ModelRunner(model.network, runner_key(name, folder), size, runtime=variant, home=home)
    return runners


def choose_expansion(vectors: np.ndarray, labels: list, candidates=EXPANSIONS,
                     min_gain: float = EXPANSION_MIN_GAIN) -> tuple[str, dict[str, float]]:
    """The search-time re-ranking (centring / αQE / DBA, :mod:`lookalike.search.expansion`; the
    candidates ``lookalike tune`` tries, :data:`lookalike.evaluation.tuning.EXPANSIONS`) that scores
    the best leave-one-out mAP@10 on ``vectors`` (n, d) unit float32 — the **validation** items'
    embeddings, never the scored ones — with ``labels`` (n), scored by ``lookalike tune``'s own loop
    (:func:`lookalike.evaluation.tuning.tune_options`). Returns (setting, {setting: mAP@10});
    ``"none"`` unless the best beats plain search by ``min_gain`` (ties: the earlier candidate)."""
    candidates = [str(c) for c in candidates]
    try:
        rows = tune_options(None, labels, base=KIND, base_vectors=vectors, expansions=candidates).rows
    except ValueError:  # no validation item shares its label with another: nothing to choose on
        return "none", {c: 0.0 for c in candidates}
    scores = {c: row.metrics["mAP@10"] for c, row in zip(candidates, rows)}
    plain = scores.get("none", -np.inf)
    best = max(scores, key=lambda c: (scores[c], c == "none"))
    return (best if scores[best] >= plain + min_gain else "none"), scores


def choose_search(vectors: dict[str, np.ndarray], labels: list, candidates=EXPANSIONS,
                  min_gain: float = EXPANSION_MIN_GAIN, tta_gain: float = TTA_MIN_GAIN
                  ) -> tuple[str, str, dict[str, dict[str, float]]]:
    """The test-time augmentation and search re-ranking a model serves, chosen together on the
    **validation** items: ``vectors`` maps each TTA (``"none"``, ``"flip"``) to the validation items'
    (n, d) unit vectors under it; for each, :func:`choose_expansion` picks the re-ranking; a TTA other
    than ``"none"`` is kept only when its best validation mAP@10 beats the best without it by
    ``tta_gain`` (it doubles every encoding). Returns (tta, expansion, {tta: {expansion: mAP@10}})."""
    chosen = {tta: choose_expansion(v, labels, candidates, min_gain) for tta, v in vectors.items()}
    best = {tta: scores[setting] for tta, (setting, scores) in chosen.items()}
    tta = "none" if "none" in chosen else next(iter(chosen))
    for other in chosen:
        if other != tta and best[other] >= best[tta] + tta_gain:
            tta = other
    return tta, chosen[tta][0], {t: scores for t, (_, scores) in chosen.items()}


def split_validation(labels: list, train: np.ndarray, splits: list | None, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions for model selection: the split column's ``validation`` rows
    when it has some, else a stratified ``fraction`` of ``train`` per label (labels with fewer than
    five train items stay whole; ``fraction`` 0: no validation)."""
    if splits is not None:
        values = np.array([str(v).lower() if v is not None else "" for v in splits])
        rows = np.flatnonzero(values == "validation")
        if len(rows):
            return train, rows
    if fraction <= 0:
        return train, np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, 1])
    labels_arr = np.array(labels, dtype=object)
    keep, held = [], []
    for value in sorted(set(labels_arr[train])):
        members = rng.permutation(train[labels_arr[train] == value])
        n = int(round(len(members) * fraction)) if len(members) >= 5 else 0
        held.extend(members[:n])
        keep.extend(members[n:])
    return np.sort(np.array(keep, np.int64)), np.sort(np.array(held, np.int64))


@training_threads()
def train_finetune(cat, label: str | None = "label", *, holdout: float = 0.5, split_column: str | None = None,
                   name: str | None = None, config: FinetuneConfig | None = None, resume: bool = False,
                   export: bool = True, progress: Callable[[str, int, int, dict], None] | None = None,
                   started: float | None = None) -> FinetuneReport:
    """Fine-tune on ``label`` (``label=None``: self-supervised adaptation on every image), evaluate
    before/after on the held-out items, save ``finetuned:NAME`` under ``model_dir("finetuned", NAME)``
    with report.json and loss.png, export ONNX fp32 + calibrated int8 and score them too (``export``).

    Held-out items: the ``split_column``'s ``test`` rows (fit on ``train`` rows), else a stratified
    ``holdout`` fraction; the epoch kept is the best on validation items (the split column's
    ``validation`` rows, else ``config.validation`` of the train items: :func:`split_validation`),
    never on the held-out ones. Self-supervised runs fit on every image and report on every labelled
    one (``label`` only scores). ``progress(stage, done, total, scores)``.

    ``config.time_budget`` (seconds, counted from ``started``, a ``time.time()``; default: the call —
    the CLI passes its process's start) is kept: the work after training is planned from timed unit
    costs and the real counts (:func:`plan_finishing`), training gets the rest, and the ONNX fp32 /
    int8 check runs on a seeded random subset of the held-out items when they do not all fit
    (``report.runtime_items``; :func:`score_runtimes` also stops at the deadline); ``report.notes``
    says what was cut. ValueError for an unknown
    column, loss, backbone or device, or too few labelled items; ImportError naming the package when
    the backbone's weights are not installed."""
    config = config or FinetuneConfig()
    supervised = label is not None and config.loss != "ntxent"
    if supervised:
        parse_pml_loss(config.loss)
    if config.backbone not in BLOCKS:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose from {', '.join(BLOCKS)}")
    cut_of(config.blocks, BLOCKS[config.backbone])
    device = resolve_device(config.device)
    config = replace(config, device=device.type, output=config.output if supervised else "backbone")
    name = check_name(name or f"{cat.name}-{label if supervised else 'adapt'}", "model")
    started = time.time() if started is None else float(started)
    deadline = started + config.time_budget if config.time_budget else None
    every = cat.items()
    if label is not None and label != "label" and label not in cat.metadata_columns():
        raise ValueError(f"unknown column {label!r}; columns: label, {', '.join(cat.metadata_columns())}")
    labelled = [it for it in every if label is not None and _column(it, label) is not None]
    items = labelled if supervised else every
    if len(items) < 4:
        raise ValueError(f"catalog {cat.name!r} has fewer than 4 items" + (f" with a {label!r} value" if label else ""))
    valid = np.zeros(0, np.int64)
    if supervised:
        labels = [_column(it, label) for it in items]
        splits = [_column(it, split_column) for it in items] if split_column else None
        train, test = split_items(labels, holdout, splits, config.seed)
        train, valid = split_validation(labels, train, splits, config.validation, config.seed)
        protocol = (f"fit on {split_column}=train, leave-one-out among {split_column}=test" if split_column
                    else f"stratified holdout {holdout}, leave-one-out among the held-out items")
    else:
        labels = [_column(it, label) if label else None for it in items]
        train, test = np.arange(len(items)), np.array([i for i, v in enumerate(labels) if v is not None], np.int64)
        protocol = "self-supervised on every image; leave-one-out among all labelled items"
    model = Finetuned(config).start()
    cut = model.cut
    size = training_size(config)
    key = f"{backbone_key(arch=config.backbone)}-cut{cut}"
    tick = lambda stage, total: (lambda n: progress(stage, n, total, {})) if progress else None  # noqa: E731
    train_items = [items[i] for i in train]
    train_views, kept, errors = cached_views(cat, train_items, model.prefix(), key, config, True, device,
                                             tick("views", len(train_items)))
    train_labels = [labels[train[i]] for i in kept] if supervised else None
    held = [items[i] for i in test] + [items[i] for i in valid]
    held_views, held_kept, more = cached_views(cat, held, model.prefix(), key, config, False, device,
                                               tick("held-out", len(held)))
    errors += [e for e in more if e not in errors]
    held_labels = [labels[test[i]] if i < len(test) else labels[valid[i - len(test)]] for i in held_kept]
    is_test = np.array([i < len(test) for i in held_kept], bool)
    test_views, test_labels = held_views[is_test], [v for v, t in zip(held_labels, is_test) if t]
    valid_views, valid_labels = held_views[~is_test], [v for v, t in zip(held_labels, is_test) if not t]
    test_items = [held[i] for i in held_kept if i < len(test)]
    cached_at = time.time()

    tail = model.tail().to(device)
    before = evaluate_vectors(embed_cached(tail, test_views, device, serve=False), test_labels, KS, "cosine").overall
    select = "val mAP@10" if len(set(valid_labels)) > 1 and len(valid_labels) > 1 else None

    def evaluate(trained_tail) -> dict:
        scores = {}
        if test_labels:
            scores.update(evaluate_vectors(embed_cached(trained_tail, test_views, device), test_labels, KS,
                                           "cosine").overall)
        if select:
            found = evaluate_vectors(embed_cached(trained_tail, valid_views, device), valid_labels, KS, "cosine")
            scores.update({f"val {k}": v for k, v in found.overall.items()})
        return scores

    folder = model_dir(KIND, name, cat.home)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, plan = folder / "checkpoint.pt", folder / "plan.json"
    if resume and checkpoint.exists() and plan.exists():
        # a resumed run keeps the epochs its budget planned: the schedule's length is in the checkpoint
        config = replace(config, epochs=int(json.loads(plan.read_text())["epochs"]))
    elif not config.epochs:
        config = replace(config, epochs=MAX_EPOCHS if config.time_budget else DEFAULT_EPOCHS)
    model.config = config
    exporting = export and bool(test_labels) and onnx_available()
    n_calibration = min(CALIBRATION_IMAGES, len(kept)) if exporting else 0
    n_valid = len(valid_labels) if select and supervised else 0
    train_deadline, budget, stop_by, costs = deadline, {}, deadline, None
    if config.time_budget:
        # what follows training — choosing TTA and re-ranking, the held-out scores, the ONNX export,
        # int8 calibration and the runtime variants' scores — is planned from unit costs timed now and
        # the real counts, and kept out of the training time, so the whole command ends inside the budget
        costs = _finishing_costs(model, test_items, held_views, tail, device, exporting)
        finishing = plan_finishing(costs, len(test_labels), n_valid, n_calibration, config.time_budget, exporting)
        train_deadline = deadline - finishing["finishing"]
        budget = {"budget": config.time_budget, "cache": round(time.time() - started, 1), **finishing}
    if config.time_budget and not (resume and checkpoint.exists()):
        # the epochs the budget left after caching affords, from one timed epoch's worth of steps
        left = max(0.0, train_deadline - time.time())
        per_epoch = _epoch_seconds(model, train_views, train_labels, device) + costs.view * len(held_views)
        # stage 1 (head alone): a forward pass over every cached view, then seconds per head epoch
        stage1 = costs.view * train_views.shape[0] * train_views.shape[1] + 10 if config.head_epochs and supervised else 0.0
        epochs = int(max(1, min(config.epochs, (left * 0.95 - stage1) // max(per_epoch, 1e-3))))
        budget.update({"stage1": round(stage1, 1), "per_epoch": round(per_epoch, 1), "epochs": epochs})
        write_json(plan, {"epochs": epochs})
        # a slower epoch than planned (a busier machine) ends the run one epoch early rather than past
        # the budget (the epoch kept is the best on validation anyway): stop after an epoch that ends
        # later than one planned epoch before the training deadline
        stop_by = train_deadline - per_epoch
        config = replace(config, epochs=epochs)
        model.config = config
    if progress:
        progress("train", 0, config.epochs, {})
    model.fit(train_views, train_labels, evaluate=evaluate, checkpoint=checkpoint, resume=resume, deadline=stop_by,
              select=select, progress=(lambda e, loss, s: progress("train", e + 1, config.epochs, {"loss": loss, **s}))
              if progress else None)
    trained_at = time.time()
    tail = model.tail().to(device)
    tta, expansion, search_scores = "none", "none", {}
    if n_valid:
        # the test-time augmentation and re-ranking searches use by default, chosen on the validation
        # items like the epoch
        tta, expansion, search_scores = choose_search(_tta_vectors(tail, valid_views, device), valid_labels)
    # the held-out vectors, plain and as served (TTA), from the cached views: one pass each
    vectors = _tta_vectors(tail, test_views, device, ("none", tta)) if test_labels else {}
    model.network.cpu()
    model.info = {"name": name, "catalog": cat.name, "label": label if supervised else None,
                  "objective": "supervised" if supervised else "self-supervised", "split_column": split_column,
                  "holdout": holdout, "backbone": config.backbone, "cut": cut, "selected_epoch": model.selected_epoch,
                  "tta": tta}
    model.save(folder)
    if n_valid:
        write_json(folder / EXPANSION_FILE, {"expansion": expansion, "tta": tta, "chosen_on": "validation items",
                                             "n_validation": len(valid_labels),
                                             "validation mAP@10": search_scores.get(tta, {}),
                                             "validation mAP@10 by tta": search_scores}, indent=2)
    else:
        (folder / EXPANSION_FILE).unlink(missing_ok=True)   # a retrained model does not keep an old choice
    checkpoint.unlink(missing_ok=True)
    plan.unlink(missing_ok=True)
    after, reranked, runtimes, runtime_items, notes = {}, {}, {}, 0, []
    if test_labels:
        after = evaluate_vectors(vectors["none"], test_labels, KS, "cosine").overall
        if expansion != "none" or tta != "none":
            reranked = evaluate_vectors(vectors[tta], test_labels, KS, "cosine", expansion=expansion).overall
        finish_by = deadline - END_RESERVE if deadline else None
        if export and not exporting:
            notes.append("no ONNX export: onnxruntime / onnx are not installed (pip install lookalike[onnx])")
        elif exporting and finish_by is not None and time.time() + budget.get("export", 0.0) > finish_by:
            notes.append(f"no ONNX export: its planned {budget['export']:.0f} s would end past the time budget "
                         f"({max(0.0, finish_by - time.time()):.0f} s left); the encoder exports fp32 on first use")
        elif exporting:
            size = arch_image_size(config.backbone)
            # int8 ranges from training images, never the scored ones
            chosen = np.random.default_rng(config.seed).permutation(kept)[:n_calibration]
            runners = _export_variants(model, name, folder, cat.home, size,
                                       _pixels([train_items[i] for i in chosen], size))
            # the runtime variants' check, on a seeded random subset of the held-out items when the
            # budget does not hold them all (planned now that the TTA is known; guarded batch by batch)
            planned, per_item = len(test_items), 0.0
            if costs is not None:
                replanned = plan_finishing(costs, len(test_items), 0, 0, config.time_budget, True,
                                           2 if tta == "flip" else 1)
                planned, per_item = replanned["runtime_items"], replanned["runtime_per_item"]
            order = np.random.default_rng([config.seed, 2]).permutation(len(test_items))[:planned]
            runtimes, runtime_items = score_runtimes(runners, test_items, test_labels, vectors[tta], size, tta=tta,
                                                     order=order, deadline=finish_by,
                                                     batch_seconds=STREAM_BATCH * per_item,
                                                     progress=tick("check", len(order)))
            if runtime_items < len(test_items):
                reason = ("the time budget's share for this check" if runtime_items >= planned
                          else "the time budget's deadline")
                notes.append(f"ONNX fp32 / int8 scored on {runtime_items} of the {len(test_items)} held-out items "
                             f"(a seeded random subset: {reason}); `torch` on the same items" if runtime_items else
                             f"ONNX fp32 / int8 exported but not scored: the time budget's deadline came first")
    relative_loss_png({"fine-tune" if supervised else "adapt": {"all": model.run.history}}, folder / "loss.png",
                      title=f"finetuned:{name}: training loss")
    total = time.time() - started
    if config.time_budget and total > config.time_budget:
        notes.append(f"over the time budget: {total:.0f} s of {config.time_budget:.0f} s")
    report = FinetuneReport(
        name=name, catalog=cat.name, label=label, objective=model.info["objective"], protocol=protocol,
        n_train=len(kept), n_test=len(test_labels), epochs=len(model.run.history), before=before, after=after,
        runtimes=runtimes, expansion=expansion, expansion_scores=search_scores.get(tta, {}), reranked=reranked,
        tta=tta, search_scores=search_scores,
        history=model.run.history, scores=model.run.scores,
        head_stage=model.head_scores, head_history=model.head_run.history if model.head_run else [],
        backbone=config.backbone, n_validation=n_valid, selected_epoch=model.selected_epoch,
        seconds={"cache": round(cached_at - started, 1), "train": round(trained_at - cached_at, 1),
                 "export": round(time.time() - trained_at, 1), "total": round(total, 1)},
        budget=budget, skipped=errors, runtime_items=runtime_items, notes=notes, path=str(folder))
    write_json(folder / "report.json", report.to_dict(), indent=2, default=str)
    return report


def _tta_vectors(tail: Tail, views: np.ndarray, device, ttas=TTAS) -> dict[str, np.ndarray]:
    """{tta: (n, d) unit vectors of the held-out ``views`` under it} (see :func:`embed_cached`), with one
    pass over the centre crops and, for ``flip``, one over their mirror images."""
    out = {"none": embed_cached(tail, views, device)}
    if "flip" in ttas:
        total = out["none"] + embed_cached(tail, views[:, 1:], device)
        out["flip"] = total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
    return {t: out[t] for t in dict.fromkeys(ttas)}


def _epoch_seconds(model: Finetuned, views: np.ndarray, labels, device, steps: int = 2) -> float:
    """Seconds one epoch takes, from ``steps`` timed forward/backward passes of one batch in the
    memory layout training uses (channels_last on a CPU), after an untimed one (oneDNN builds its
    kernels on the first call: timing it doubled the estimate); eval mode, no update, so the run
    itself is untouched."""
    tail = model.tail().to(device).eval()
    if device.type == "cpu" and model.cut >= 0:
        tail.to(memory_format=torch.channels_last)
        tail.channels_last = True
    config = model.config
    size = config.classes_per_batch * config.per_class if labels is not None else 2 * config.batch_size
    size = min(size, len(views))
    n_steps = max(1, len(views) // max(1, size if labels is not None else config.batch_size))
    x = torch.from_numpy(np.ascontiguousarray(views[:size, 0], dtype=np.float32)).to(device)
    for step in range(steps + 1):
        if step == 1:
            started = time.time()
        tail(x).sum().backward()
    elapsed = time.time() - started
    tail.zero_grad(set_to_none=True)
    model.network.to(memory_format=torch.contiguous_format)
    # the loss, its miner and the optimiser steps add little (clothing-small: 75 s planned at x1.1
    # for 61 s measured per epoch, scoring included)
    return elapsed / steps * n_steps


def _finishing_costs(model: Finetuned, test_items: list, held_views: np.ndarray, tail: Tail, device,
                     export: bool, sample: int = STREAM_BATCH) -> FinishCosts:
    """Unit costs of the work after training (:class:`FinishCosts`), each timed after an untimed
    warm-up call (oneDNN and onnxruntime build their kernels on the first one): the trained part
    over the cached held-out views (up to 128), and with ``export`` decoding ``sample`` held-out
    images, exporting the still-untrained network to ONNX (the trained one has the same graph and
    speed) and running it on them. The int8 variant cannot be timed before it is calibrated: it is
    planned at the fp32 cost. Session 7's estimate timed 8 images through torch and missed the
    runtime scoring of a large held-out set by minutes (docs/fine-tuning.md)."""
    costs = FinishCosts(view=_eval_seconds(tail, held_views, device) / max(1, len(held_views)))
    if not export or not test_items:
        return costs
    started = time.time()
    pixels = np.concatenate([p for _, p in stream_pixels(test_items[:sample], arch_image_size(model.config.backbone))])
    costs.decode = (time.time() - started) / max(1, len(pixels))
    with tempfile.TemporaryDirectory() as tmp:
        model.network.eval()
        started = time.time()
        build_variant(model.network, "onnx", Path(tmp) / "onnx.onnx", pixels.shape[-1])
        costs.export = time.time() - started
        runner = OnnxModel(Path(tmp) / "onnx.onnx")
        runner(pixels[:2])
        started = time.time()
        for start in range(0, len(pixels), STREAM_BATCH):
            runner(pixels[start:start + STREAM_BATCH])
        costs.onnx = costs.int8 = (time.time() - started) / max(1, len(pixels))
    return costs


def _eval_seconds(tail: Tail, views: np.ndarray, device) -> float:
    """Seconds :func:`embed_cached` takes over ``views``, timed on up to 128 rows after a warm-up."""
    embed_cached(tail, views[:8], device)
    started = time.time()
    embed_cached(tail, views[: min(len(views), 128)], device)
    return (time.time() - started) * len(views) / max(1, min(len(views), 128))


def adapt(cat, label: str | None = None, **options) -> FinetuneReport:
    """``lookalike train adapt``: :func:`train_finetune` without labels (NT-Xent on two views of
    every image); ``label`` only scores the result."""
    config = replace(options.pop("config", None) or FinetuneConfig(), loss="ntxent", output="backbone")
    return train_finetune(cat, label, config=config, **options)
