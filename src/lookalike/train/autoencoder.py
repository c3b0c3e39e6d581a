"""Train an autoencoder or VAE on an array of images and save it as a registry encoder.

``train(pixels, out_dir, TrainConfig(...))`` holds out a validation split, trains with horizontal
flips, anneals the VAE's KL weight from 0 to β (warm-up, so the latent does not collapse), stops
early when the validation loss stops improving, checkpoints every epoch (``resume=True`` carries
on from the last one) and writes weights.pt, config.json, history.json, loss.png and
reconstructions.png into ``out_dir``. Every random choice (split, shuffles, flips, VAE noise)
is derived from (seed, epoch), so a run is deterministic and a resumed run equals an unbroken one.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lookalike.config import torch_threads
from lookalike.encoders.autoencoder import (
    ARCHS, CONFIG_FILE, WEIGHTS_FILE, build_model, to_tensor, to_uint8,
)

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainConfig:
    arch: str = "conv"            # dense | conv | vae
    latent: int = 16
    image_size: int = 64
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    beta: float = 1.0             # weight of the KL term (VAE only)
    warmup: int | None = None     # epochs of linear KL warm-up; None = a third of the epochs, at most 10
    val_fraction: float = 0.1
    patience: int = 5             # epochs without validation improvement before stopping
    seed: int = 0
    device: str = "auto"
    flip: bool = True             # random horizontal flips (product photos are mirror-symmetric)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown autoencoder kind {self.arch!r}; choose from {', '.join(ARCHS)}")
        if self.latent < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("latent, epochs and batch size must be positive")
        if self.warmup is None:
            self.warmup = min(10, self.epochs // 3) if self.arch in ("vae", "hybrid") else 0


@dataclass
class TrainResult:
    dir: Path
    epochs_run: int
    best_epoch: int
    best_val: float
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    model: object = None          # the trained network (best weights, eval mode)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/validation split (at least one item on each side when n >= 2)."""
    if n < 2:
        raise ValueError(f"need at least 2 images to train, got {n}")
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def kl_weight(cfg: TrainConfig, epoch: int) -> float:
    """β scaled linearly over the warm-up epochs (epoch counts from 1)."""
    if cfg.arch not in ("vae", "hybrid"):
        return 0.0
    if not cfg.warmup:
        return cfg.beta
    return cfg.beta * min(1.0, epoch / cfg.warmup)


def batch_loss(net, x: torch.Tensor, beta: float, generator=None) -> tuple[torch.Tensor, float, float]:
    """Per-image loss: Bernoulli reconstruction (summed over pixels) + β·KL(q(z|x) || N(0, I))."""
    logits, mu, logvar = net(x, generator=generator)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = torch.zeros((), device=x.device)
    if logvar is not None:
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    return recon + beta * kl, float(recon.detach()), float(kl.detach())


def _augment(x: torch.Tensor, rng: np.random.Generator, flip: bool) -> torch.Tensor:
    if not flip:
        return x
    mask = torch.from_numpy(rng.random(len(x)) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def evaluate_loss(net, pixels: np.ndarray, beta: float, device, batch_size: int, seed: int) -> float:
    net.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    total, n = 0.0, 0
    for start in range(0, len(pixels), batch_size):
        x = to_tensor(pixels[start:start + batch_size]).to(device)
        loss, _, _ = batch_loss(net, x, beta, gen)
        total, n = total + float(loss) * len(x), n + len(x)
    return total / max(n, 1)


def _train_epoch(net, opt, pixels, cfg: TrainConfig, epoch: int, device, bar) -> dict:
    net.train()
    rng = np.random.default_rng([cfg.seed, epoch])
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 100_003 + epoch)
    beta = kl_weight(cfg, epoch)
    order = rng.permutation(len(pixels))
    sums = np.zeros(3)
    for start in range(0, len(order), cfg.batch_size):
        idx = np.sort(order[start:start + cfg.batch_size])
        if len(idx) < 2 and start > 0:  # BatchNorm needs two samples; drop a lone straggler
            continue
        x = _augment(to_tensor(pixels[idx]).to(device), rng, cfg.flip)
        loss, recon, kl = batch_loss(net, x, beta, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums += np.array([loss.item(), recon, kl]) * len(idx)
        if bar is not None:
            bar.update(len(idx))
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.1f}")
    sums /= len(order)
    return {"epoch": epoch, "train_loss": sums[0], "train_recon": sums[1], "train_kl": sums[2], "kl_weight": beta}


def train(pixels: np.ndarray, out_dir, cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          meta: dict | None = None) -> TrainResult:
    """Train on ``pixels`` ((n, S, S, 3) uint8 at ``cfg.image_size``) and save into ``out_dir``.
    Uses $LOOKALIKE_THREADS torch threads while it runs (one is fastest on an oversubscribed box)."""
    with threads_for_training():
        return _train(pixels, Path(out_dir), cfg, resume, progress, meta)


@contextmanager
def threads_for_training():
    """$LOOKALIKE_THREADS torch threads for the duration, then back to what they were."""
    previous = torch.get_num_threads()
    if torch_threads():
        torch.set_num_threads(torch_threads())
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(pixels: np.ndarray, out_dir: Path, cfg: TrainConfig, resume: bool, progress: bool, meta) -> TrainResult:
    ckpt_path = out_dir / CHECKPOINT_FILE
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"nothing to resume: no checkpoint at {ckpt_path}")
        saved = json.loads((out_dir / CONFIG_FILE).read_text())
        cfg = TrainConfig(**{**saved["train"], "epochs": cfg.epochs, "device": cfg.device})
    if pixels.ndim != 4 or pixels.shape[1:] != (cfg.image_size, cfg.image_size, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"expected (n, {cfg.image_size}, {cfg.image_size}, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.arch, cfg.image_size, cfg.latent).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    train_idx, val_idx = split_indices(len(pixels), cfg.val_fraction, cfg.seed)
    state = {"epoch": 0, "best_val": float("inf"), "best_epoch": 0, "bad_epochs": 0, "history": []}
    if resume:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_config(out_dir, cfg, meta, len(train_idx), len(val_idx), state)

    from tqdm import tqdm

    started, stopped_early = time.perf_counter(), False
    todo = max(0, cfg.epochs - state["epoch"])
    with tqdm(total=todo * len(train_idx), desc=f"train {cfg.arch}", unit="img", disable=not progress,
              leave=False) as bar:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            row = _train_epoch(net, opt, pixels[train_idx], cfg, epoch, device, bar)
            row["val_loss"] = evaluate_loss(net, pixels[val_idx], cfg.beta if cfg.arch == "vae" else 0.0,
                                            device, cfg.batch_size, cfg.seed)
            state["history"].append(row)
            state["epoch"] = epoch
            bar.set_postfix(epoch=epoch, train=f"{row['train_loss']:.1f}", val=f"{row['val_loss']:.1f}")
            if row["val_loss"] < state["best_val"]:
                state.update(best_val=row["val_loss"], best_epoch=epoch, bad_epochs=0)
                torch.save(net.state_dict(), out_dir / WEIGHTS_FILE)
            elif epoch > (cfg.warmup or 0):  # during KL warm-up the objective itself moves
                state["bad_epochs"] += 1
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "state": state}, ckpt_path)
            if state["bad_epochs"] >= cfg.patience:
                stopped_early = True
                break
    _write_config(out_dir, cfg, meta, len(train_idx), len(val_idx), state)
    (out_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
    net.load_state_dict(torch.load(out_dir / WEIGHTS_FILE, map_location=device, weights_only=True))
    net.eval()
    save_loss_curve(state["history"], out_dir / "loss.png", title=f"{cfg.arch} autoencoder, latent {cfg.latent}")
    save_reconstruction_grid(net, pixels[val_idx[:8]], out_dir / "reconstructions.png", device)
    return TrainResult(out_dir, state["epoch"], state["best_epoch"], state["best_val"], stopped_early,
                       state["history"], time.perf_counter() - started, net.cpu())


def _write_config(out_dir: Path, cfg: TrainConfig, meta, n_train: int, n_val: int, state: dict) -> None:
    config = {
        "arch": cfg.arch, "latent": cfg.latent, "image_size": cfg.image_size, "seed": cfg.seed,
        "train": asdict(cfg), "n_train": n_train, "n_val": n_val,
        "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
        "best_val_loss": None if state["best_val"] == float("inf") else state["best_val"],
        **(meta or {}),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def save_loss_curve(history: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def save_reconstruction_grid(net, pixels: np.ndarray, path: Path, device="cpu") -> None:
    """Inputs in the top row, their reconstructions (from µ for the VAE) below."""
    from PIL import Image

    net.eval()
    x = to_tensor(pixels).to(device)
    recon = to_uint8(torch.sigmoid(net.decode_logits(net.encode(x))))
    top, bottom = np.concatenate(list(pixels), axis=1), np.concatenate(list(recon), axis=1)
    Image.fromarray(np.concatenate([top, bottom], axis=0)).resize(
        (top.shape[1] * 2, top.shape[0] * 4), Image.NEAREST).save(path)


def train_catalog(cat, cfg: TrainConfig, name: str | None = None, *, split: str | None = None,
                  resume: bool = False, progress: bool = True, base: str = "effnet-lite0",
                  app_latent: int = 0) -> TrainResult:
    """Train on a catalog's images (optionally only items whose ``split`` metadata equals ``split``)
    and save as ``ae:NAME`` / ``vae:NAME`` / ``hvae:NAME`` (hybrid over ``base`` vectors, which the
    catalog must hold; ``app_latent`` adds appearance dimensions to its decoder). VAEs also get
    latent_stats.json and traversal.png."""
    from lookalike.encoders.autoencoder import kind_dir, model_dir
    from lookalike.data.pixel_cache import catalog_pixels

    name = name or f"{cat.name}-{cfg.arch}"
    data = catalog_pixels(cat, cfg.image_size, progress=progress)
    pixels, ids = data.pixels, data.ids
    if split is not None:
        keep = np.array([s == split for s in data.splits], dtype=bool)
        if not keep.any():
            raise ValueError(f"no items of catalog {cat.name!r} have split={split!r}")
        pixels, ids = pixels[keep], [i for i, k in zip(ids, keep) if k]
    meta = {"catalog": cat.name, "split": split, "n_images": int(len(pixels)), "skipped_images": len(data.errors)}
    out_dir = model_dir(cat.home, cfg.arch, name)
    if cfg.arch == "hybrid":
        from lookalike.encoders.hybrid import train_hybrid

        if resume:
            raise ValueError("--resume is not supported for hybrid models (they train in minutes)")
        features, found = _catalog_features(cat, base, ids)
        with threads_for_training():
            result = train_hybrid(features, pixels[found], out_dir, cfg, base, progress=progress, meta=meta,
                                  app_latent=app_latent)
    else:
        result = train(pixels, out_dir, cfg, resume=resume, progress=progress, meta=meta)
    if kind_dir(cfg.arch) in ("vae", "hvae"):
        from lookalike.explore.latent import LatentSpace

        space = LatentSpace.build(cat, name, progress=progress, kind=kind_dir(cfg.arch))
        (result.dir / "latent_stats.json").write_text(json.dumps(space.stats(), indent=1))
        space.traversal_grid(result.dir / "traversal.png")
    return result


def _catalog_features(cat, base: str, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The catalog's ``base`` vectors for ``ids`` (those that have one) and their positions in ``ids``."""
    if cat.store.encoder_info(base) is None:
        raise ValueError(f"catalog {cat.name!r} has no {base!r} vectors; index it with --encoder {base} first")
    vec_ids, matrix = cat.vectors(base)
    row = {item_id: i for i, item_id in enumerate(vec_ids)}
    found = np.array([i for i, item_id in enumerate(ids) if item_id in row], dtype=np.int64)
    if len(found) < 2:
        raise ValueError(f"too few items with {base!r} vectors to train on")
    return matrix[[row[ids[i]] for i in found]], found
