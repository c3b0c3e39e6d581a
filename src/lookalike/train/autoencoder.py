"""Fit autoencoders on pixels: ``Autoencoder`` (dense, conv, VAE) and ``HybridAutoencoder``.

Both follow :mod:`lookalike.train.base`: ``Autoencoder(AutoencoderConfig(...)).fit(pixels)`` holds out
a validation split, trains with horizontal flips, anneals the VAE's KL weight from 0 to β (warm-up,
so the latent does not collapse) and stops early when the validation loss stops improving, keeping
the best weights; ``save(dir)`` writes weights.pt, config.json, history.json, loss.png and
reconstructions.png, which the inference encoders (:mod:`lookalike.encoders.autoencoder`,
:mod:`lookalike.encoders.hybrid`) read. With ``checkpoint_dir`` every epoch is checkpointed there
(``resume=True`` carries on from the last one). Every random choice (split, shuffles, flips, VAE
noise) is derived from (seed, epoch), so a run is deterministic and a resumed run equals an unbroken
one. Training only fits and saves: ``Catalog.train_autoencoder`` gathers a catalog's pixels and
writes the latent explorer's files after it.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lookalike.data.artifacts import atomic_file, save_npz, write_json
from lookalike.encoders.autoencoder import (
    ARCHS, DECODERS, ENCODER_INPUTS, PREPROCESS, WEIGHTS_FILE, LoadedModel, build_model, kind_dir, pixel_features,
    to_tensor, to_uint8,
)
from lookalike.encoders.hybrid import STATS_FILE, HybridModel, HybridVAE, standardise, unit_features
from lookalike.encoders.spec import EncoderSpec
from lookalike.train.base import read_config, save_config
from lookalike.train.device import resolve_device, training_threads
from lookalike.train.losses import (
    FeatureMatchLoss, PatchDiscriminator, PerceptualFeatureLoss, PerceptualLoss, adaptive_weight, colour_loss, hinge_d_loss,
    hinge_g_loss, latent_mmd,
)
from lookalike.viz.charts import epoch_loss_png, image_pairs_png

CHECKPOINT_FILE = "checkpoint.pt"


# 2: VAEs train on the foreground crop (config "preprocess") at 96 px with a perceptual loss, KL
# free bits and a time budget; a model saved without "preprocess" (format 1) keeps its padded photos.
# 3: config "decoder" (transpose | upsample) and "feature_match" (pooled-feature loss weight); models
# of formats 1-2 load with transposed convolutions and no feature matching.
# Config "latent_mmd" (a training-only loss weight, absent = 0) needs no new format.
# 4: config "width" (channels of the first stage, see encoders.autoencoder.default_channels); models
# of formats 1-3 load with 32.
# 5: config "encoder_input" (pixels | features: encoders.autoencoder.FeatureVAE); models of formats
# 1-4 load with pixels.
# 6: training-only settings "adversarial" (PatchGAN hinge term, VQGAN's adaptive weight), "colour"
# (thumbnail colour loss), "input_dropout" and flips for a FeatureVAE (the flipped images' vectors
# cached too); the saved network is format 5's, so models of formats 1-5 load as before (absent = 0).
# 7: training-only setting "ema" (the weights kept are their moving average; 0.999 for a VAE) and,
# once the adversarial term is on, the last epoch's weights are kept instead of the best by
# validation loss; the saved network is format 5's, so older models load as before (absent = 0).
FORMAT_VERSION = 7

# What None means per architecture: the VAE recipe behind the latent explorer (measured by
# lookalike.bench.studies.latent_quality, see docs/autoencoders.md); plain autoencoders keep theirs.
VAE_RECIPE = {"image_size": 64, "preprocess": "foreground", "perceptual": 1.0, "free_bits": 0.25,
              "time_budget": 140.0, "decoder": "upsample", "feature_match": 1.0, "latent_mmd": 1.0, "width": 16,
              "batch_size": 16, "lr": 2e-3, "encoder_input": "features", "adversarial": 0.5, "colour": 0.0,
              "input_dropout": 0.2, "ema": 0.999}
PLAIN_RECIPE = {"image_size": 64, "preprocess": "pad", "perceptual": 0.0, "free_bits": 0.0, "time_budget": None,
                "decoder": "transpose", "feature_match": 0.0, "latent_mmd": 0.0, "width": 32, "batch_size": 32,
                "lr": 1e-3, "encoder_input": "pixels", "adversarial": 0.0, "colour": 0.0, "input_dropout": 0.0,
                "ema": 0.0}
# format-1 models: what they were trained with (their config.json predates these keys)
LEGACY = {"preprocess": "pad", "perceptual": 0.0, "free_bits": 0.0, "time_budget": None}
# format-2 models: before the decoder choice and feature matching
LEGACY_2 = {"decoder": "transpose", "feature_match": 0.0}
# format-3 models: before the width choice (and a config without "latent_mmd" predates the term)
LEGACY_3 = {"width": 32, "latent_mmd": 0.0}
# format-4 models: every encoder read pixels
LEGACY_4 = {"encoder_input": "pixels"}
# format-5 models: no adversarial or colour term, no input dropout, no flips for a feature-reading encoder
LEGACY_5 = {"adversarial": 0.0, "colour": 0.0, "input_dropout": 0.0}
# format-6 models: no moving average of the weights
LEGACY_6 = {"ema": 0.0}


@dataclass
class AutoencoderConfig:
    arch: str = "conv"            # dense | conv | vae | hybrid
    latent: int = 16
    image_size: int | None = None  # square input side; None = the recipe's (64 px)
    epochs: int = 30
    batch_size: int | None = None  # images per step; None = the recipe's (16 for a VAE, 32 otherwise)
    lr: float | None = None        # Adam learning rate; None = the recipe's (2e-3 for a VAE, 1e-3 otherwise)
    beta: float = 1.0             # weight of the KL term (VAE only)
    warmup: int | None = None     # epochs of linear KL warm-up; None = a third of the epochs, at most 10
    val_fraction: float = 0.1
    patience: int = 5             # epochs without validation improvement before stopping
    seed: int = 0
    device: str = "auto"
    flip: bool = True             # random horizontal flips (product photos are mirror-symmetric)
    base: str = "effnet-lite0"    # hybrid: the pretrained encoder whose vectors it compresses
    app_latent: int = 0           # hybrid: extra appearance dimensions (from pixels) for the image decoder
    preprocess: str | None = None  # pad | foreground (product cropped onto white); None = foreground for a VAE
    perceptual: float | None = None  # weight of the EfficientNet-Lite0 feature loss; None = 1 for a VAE, else 0
    free_bits: float | None = None   # VAE: nats per latent dimension the KL term does not charge; None = 0.25
    time_budget: float | None = -1.0  # seconds of training before it stops; -1 = the recipe's (140 s for a VAE)
    decoder: str | None = None     # transpose | upsample (nearest x2 + 3x3 conv, no checkerboard); None = the recipe's
    feature_match: float | None = None  # VAE: weight of 1 - cos of EfficientNet-Lite0 pooled features; None = the recipe's
    latent_mmd: float | None = None  # VAE: weight of the MMD between the batch's codes and N(0, I); None = the recipe's
    width: int | None = None       # conv/VAE: channels of the first stage (doubling per stage); None = the recipe's
    encoder_input: str | None = None  # VAE: pixels (conv encoder) | features (MLP on the image's effnet-lite0 vector + thumbnail); None = the recipe's
    adversarial: float | None = None  # VAE: weight of the PatchGAN hinge term (x VQGAN's adaptive weight), on after the KL warm-up; None = the recipe's
    colour: float | None = None    # VAE: weight of the 8x8 colour-thumbnail loss; None = the recipe's
    input_dropout: float | None = None  # feature-reading VAE: share of the MLP's inputs dropped while training; None = the recipe's
    ema: float | None = None       # decay of the exponential moving average of the weights that is kept (0 = none); None = the recipe's

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown autoencoder kind {self.arch!r}; choose from {', '.join(ARCHS)}")
        recipe = VAE_RECIPE if self.arch == "vae" else PLAIN_RECIPE
        for key in ("image_size", "preprocess", "perceptual", "free_bits", "decoder", "feature_match", "latent_mmd",
                    "width", "batch_size", "lr", "encoder_input", "adversarial", "colour", "input_dropout", "ema"):
            if getattr(self, key) is None:
                setattr(self, key, recipe[key])
        if self.latent < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("latent, epochs and batch size must be positive")
        if self.lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {self.lr}")
        if self.time_budget is not None and self.time_budget < 0:
            self.time_budget = recipe["time_budget"]
        if self.preprocess not in PREPROCESS:
            raise ValueError(f"unknown preprocessing {self.preprocess!r}; choose from {', '.join(PREPROCESS)}")
        if min(self.perceptual, self.free_bits, self.feature_match, self.latent_mmd, self.adversarial, self.colour) < 0:
            raise ValueError("perceptual, feature-matching, latent MMD, adversarial and colour weights and free bits "
                             "must be >= 0")
        if not 0 <= self.ema < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {self.ema}")
        if not 0 <= self.input_dropout < 1:
            raise ValueError(f"input dropout must be in [0, 1), got {self.input_dropout}")
        if (self.adversarial or self.colour) and self.arch != "vae":
            raise ValueError("the adversarial and colour terms are VAE losses (--kind vae)")
        if self.width < 4:
            raise ValueError(f"width must be at least 4 channels, got {self.width}")
        if self.encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"unknown encoder input {self.encoder_input!r}; choose from {', '.join(ENCODER_INPUTS)}")
        if self.encoder_input == "features" and self.arch != "vae":
            raise ValueError("only a VAE can read backbone features (encoder_input='features' needs arch='vae')")
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; choose from {', '.join(DECODERS)}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError("time budget must be positive seconds (or None for no limit)")
        if self.arch == "hybrid" and (self.preprocess != "pad" or self.perceptual or self.feature_match or self.latent_mmd
                                      or self.input_dropout):
            raise ValueError("hybrid models train on padded photos without a perceptual loss")
        if self.warmup is None:
            self.warmup = min(10, self.epochs // 3) if self.arch in ("vae", "hybrid") else 0


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/validation split (at least one item on each side when n >= 2)."""
    if n < 2:
        raise ValueError(f"need at least 2 images to train, got {n}")
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def kl_weight(cfg: AutoencoderConfig, epoch: int, warmup: int | None = None) -> float:
    """β scaled linearly over the warm-up epochs (epoch counts from 1; ``warmup`` overrides
    ``cfg.warmup``, e.g. when a time budget shortens the run)."""
    if cfg.arch not in ("vae", "hybrid"):
        return 0.0
    warmup = cfg.warmup if warmup is None else warmup
    if not warmup:
        return cfg.beta
    return cfg.beta * min(1.0, epoch / warmup)


def batch_loss(net, x: torch.Tensor, beta: float, generator=None, perceptual=None, weight: float = 0.0,
               free_bits: float = 0.0, feature=None, feature_weight: float = 0.0,
               mmd_weight: float = 0.0, features: torch.Tensor | None = None, colour_weight: float = 0.0,
               outputs: dict | None = None) -> tuple[torch.Tensor, float, float]:
    """Per-image loss: Bernoulli reconstruction (summed over pixels) + ``weight`` x the perceptual
    loss (:class:`lookalike.train.losses.PerceptualLoss`) + ``feature_weight`` x the pooled-feature
    loss (:class:`lookalike.train.losses.FeatureMatchLoss`), both scaled by the pixel count so every
    term is per image, + β·KL(q(z|x) || N(0, I)) + ``mmd_weight`` x pixel count x the MMD between the
    batch's sampled codes and as many draws from N(0, I) (:func:`lookalike.train.losses.latent_mmd`,
    InfoVAE). ``perceptual`` may be a :class:`~lookalike.train.losses.PerceptualFeatureLoss`, which
    gives both feature terms from one backbone pass (``feature`` is then ignored). With ``free_bits``
    λ > 0 the KL term charges each dimension max(λ, its batch-mean KL) (Kingma et al., "Improved
    variational inference with inverse autoregressive flow", NeurIPS 2016), so no slider is pushed
    to collapse. ``features``: the batch's cached backbone vectors for a
    :class:`~lookalike.encoders.autoencoder.FeatureVAE`. ``colour_weight`` x pixel count x
    :func:`lookalike.train.losses.colour_loss` (the 8x8 colour thumbnails' squared difference).
    ``outputs``, when given, receives ``decoded`` (the (n, 3, S, S) reconstruction in [0, 1], in the
    graph) for the adversarial term. Returns (loss, reconstruction part, KL in nats without free bits)."""
    logits, mu, logvar = net(x, generator=generator, **({} if features is None else {"features": features}))
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    loss = recon
    decoded = torch.sigmoid(logits)
    if outputs is not None:
        outputs["decoded"] = decoded
    if colour_weight > 0:
        loss = loss + colour_weight * x[0].numel() * colour_loss(decoded, x).mean()
    if isinstance(perceptual, PerceptualFeatureLoss):
        per_image, feature_loss = perceptual(decoded, x)
        loss = loss + x[0].numel() * (weight * per_image.mean() + feature_weight * feature_loss.mean())
    elif (perceptual is not None and weight > 0) or (feature is not None and feature_weight > 0):
        if perceptual is not None and weight > 0:
            loss = loss + weight * x[0].numel() * perceptual(decoded, x).mean()
        if feature is not None and feature_weight > 0:
            loss = loss + feature_weight * x[0].numel() * feature(decoded, x).mean()
    kl = torch.zeros((), device=x.device)
    if logvar is not None:
        per_dim = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean(dim=0)
        kl = per_dim.sum()
        loss = loss + beta * (per_dim.clamp(min=free_bits).sum() if free_bits > 0 else kl)
        if mmd_weight > 0 and len(x) >= 2:
            # a fresh code from each item's posterior, against as many prior draws
            draws = torch.randn((2, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
            z = mu + torch.exp(0.5 * logvar) * draws[0]
            loss = loss + mmd_weight * x[0].numel() * latent_mmd(z, draws[1])
    return loss, float(recon.detach()), float(kl.detach())


def _augment(x: torch.Tensor, rng: np.random.Generator, flip: bool, features: torch.Tensor | None = None,
             flipped: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random horizontal flips of a batch (and, for a feature-reading encoder, the same rows' vectors
    swapped for the flipped images' cached ones)."""
    if not flip:
        return x, features
    mask = torch.from_numpy(rng.random(len(x)) < 0.5).to(x.device)
    x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if features is not None:
        features = torch.where(mask[:, None], flipped, features)
    return x, features


@torch.no_grad()
def evaluate_loss(net, pixels: np.ndarray, beta: float, device, batch_size: int, seed: int, perceptual=None,
                  weight: float = 0.0, free_bits: float = 0.0, feature=None, feature_weight: float = 0.0,
                  mmd_weight: float = 0.0, features: np.ndarray | None = None, colour_weight: float = 0.0) -> float:
    net.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    total, n = 0.0, 0
    for start in range(0, len(pixels), batch_size):
        x = to_tensor(pixels[start:start + batch_size]).to(device)
        f = None if features is None else torch.from_numpy(features[start:start + batch_size]).to(device)
        loss, _, _ = batch_loss(net, x, beta, gen, perceptual, weight, free_bits, feature, feature_weight, mmd_weight, f,
                                colour_weight)
        total, n = total + float(loss) * len(x), n + len(x)
    return total / max(n, 1)


class Adversary:
    """The adversarial term of a VAE-GAN (Larsen et al., ICML 2016) as VQGAN trains it (Esser et al.,
    CVPR 2021): a :class:`~lookalike.train.losses.PatchDiscriminator` with its own Adam (lr, betas
    (0.5, 0.9)) and hinge loss; the decoder gets ``weight`` x the adaptive weight
    (:func:`~lookalike.train.losses.adaptive_weight`, measured at the decoder's last layer) x the
    generator's hinge loss. Only ``step`` uses it; it is saved in the checkpoint, not with the model."""

    def __init__(self, weight: float, lr: float, device, width: int = 16):
        self.weight = weight
        self.disc = PatchDiscriminator(width).to(device)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.9))
        self.last_weight = 0.0

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])

    def step(self, net, opt, loss: torch.Tensor, decoded: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
        """One generator update (``loss`` + the weighted adversarial term) and one discriminator update;
        returns (the generator's hinge loss, the discriminator's). The adversarial gradient is taken
        alone first (it does not pass through the frozen backbone of the feature losses, so it is
        cheap), then ``loss`` is back-propagated as usual and the adversarial gradient added, scaled
        by the adaptive weight read from the two gradients at the decoder's last layer."""
        params = [p for p in net.parameters() if p.requires_grad]
        last = _last_layer(net)
        self.disc.requires_grad_(False)
        g_loss = hinge_g_loss(self.disc(decoded))
        adv_grads = torch.autograd.grad(g_loss, params, retain_graph=True, allow_unused=True)
        self.disc.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        at_last = next(g for p, g in zip(params, adv_grads) if p is last)
        # the losses are per-image sums over pixels, so the clip scales with the pixel count
        self.last_weight = self.weight * adaptive_weight(last.grad, at_last, limit=1e4 * x[0].numel())
        for p, g in zip(params, adv_grads):
            if g is not None:
                p.grad = g * self.last_weight if p.grad is None else p.grad.add_(g, alpha=self.last_weight)
        opt.step()
        d_loss = hinge_d_loss(self.disc(x), self.disc(decoded.detach()))
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()
        return float(g_loss.detach()), float(d_loss.detach())


def weight_average(net, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``net``'s weights and BatchNorm statistics (torch's
    ``AveragedModel``), the generator average GANs keep (Karras et al., ICLR 2018; Yazıcı et al., "The
    unusual effectiveness of averaging in GAN training", ICLR 2019). The decay ramps up as
    min(decay, (1 + t) / (10 + t)) over the t updates so far (TensorFlow's ``ExponentialMovingAverage``
    with ``num_updates``), so a short run is not an average dominated by its first, untrained steps."""
    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged * d + current.detach() * (1.0 - d)

    return torch.optim.swa_utils.AveragedModel(net, avg_fn=avg_fn, use_buffers=True)


def _last_layer(net) -> torch.nn.Parameter:
    """The weight of the decoder's output convolution (where VQGAN measures the adaptive weight)."""
    return [m for m in net.dec if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1].weight


def _train_epoch(net, opt, pixels, cfg: AutoencoderConfig, epoch: int, device, bar, perceptual=None,
                 warmup: int | None = None, deadline: float | None = None, feature=None,
                 features: np.ndarray | None = None, flipped: np.ndarray | None = None,
                 adversary: Adversary | None = None, averaged=None) -> dict:
    """One pass over ``pixels`` (cut short once ``time.perf_counter()`` passes ``deadline``); ``features``:
    the aligned cached backbone vectors a :class:`~lookalike.encoders.autoencoder.FeatureVAE` reads,
    ``flipped`` those of the horizontally flipped images (without them, no flips: the vector is the
    unflipped image's); ``adversary``: the adversarial term, when it is on this epoch; ``averaged``: the
    weights' moving average (:func:`weight_average`), updated after every step."""
    net.train()
    rng = np.random.default_rng([cfg.seed, epoch])
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 100_003 + epoch)
    beta = kl_weight(cfg, epoch, warmup)
    free_bits = cfg.free_bits if cfg.arch == "vae" else 0.0
    order = rng.permutation(len(pixels))
    sums, seen = np.zeros(5), 0
    flip = cfg.flip and (features is None or flipped is not None)
    for start in range(0, len(order), cfg.batch_size):
        idx = np.sort(order[start:start + cfg.batch_size])
        if len(idx) < 2 and start > 0:  # BatchNorm needs two samples; drop a lone straggler
            continue
        if deadline is not None and start > 0 and time.perf_counter() > deadline:
            break
        f = None if features is None else torch.from_numpy(features[idx]).to(device)
        f_flip = None if flipped is None else torch.from_numpy(flipped[idx]).to(device)
        x, f = _augment(to_tensor(pixels[idx]).to(device), rng, flip, f, f_flip)
        outputs = {}
        loss, recon, kl = batch_loss(net, x, beta, gen, perceptual, cfg.perceptual, free_bits, feature,
                                     cfg.feature_match, cfg.latent_mmd if cfg.arch == "vae" else 0.0, f,
                                     cfg.colour if cfg.arch == "vae" else 0.0, outputs)
        g_loss = d_loss = 0.0
        if adversary is None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            g_loss, d_loss = adversary.step(net, opt, loss, outputs["decoded"], x)
        if averaged is not None:
            averaged.update_parameters(net)
        sums += np.array([loss.item(), recon, kl, g_loss, d_loss]) * len(idx)
        seen += len(idx)
        if bar is not None:
            bar.update(len(idx))
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.1f}")
    sums /= max(seen, 1)
    row = {"epoch": epoch, "train_loss": sums[0], "train_recon": sums[1], "train_kl": sums[2], "kl_weight": beta,
           "images": seen}
    if adversary is not None:
        row.update(train_gan_g=sums[3], train_gan_d=sums[4], gan_weight=adversary.last_weight)
    return row


class _Fitted:
    """What a fit leaves behind, shared by both autoencoders (history rows: epoch, train_loss, val_loss...)."""

    version = FORMAT_VERSION
    config: AutoencoderConfig
    net: torch.nn.Module | None = None
    history: list[dict]
    epochs_run = best_epoch = n_train = n_val = 0
    best_val = float("inf")
    stopped_early = False
    seconds = 0.0
    meta: dict
    dir: Path | None = None                 # set by save() and load()
    _preview: np.ndarray | None = None      # up to 8 validation images for reconstructions.png

    @property
    def kind(self) -> str:
        """models/<kind>/: ``ae``, ``vae`` or ``hvae``."""
        return kind_dir(self.config.arch)

    @property
    def spec(self) -> str:
        """The encoder spec that embeds with this model, ``KIND:NAME`` (e.g. ``vae:shop-vae``); NAME is
        its folder's, so only a saved or loaded model has one (ValueError otherwise)."""
        if self.dir is None:
            raise ValueError("the model has no folder yet: save() it first")
        return str(EncoderSpec(self.kind, Path(self.dir).name))

    def report(self) -> dict:
        """What a training run reports (``lookalike train autoencoder`` prints it): ``encoder`` spec,
        ``dir``, ``epochs_run``, ``best_epoch``, ``best_val_loss`` (3 decimals), ``stopped_early``,
        ``seconds`` (wall time of fit, 1 decimal) and ``files``: the folder's .png/.json/.pt names, sorted."""
        files = sorted(p.name for p in Path(self.dir).iterdir() if p.suffix in (".png", ".json", ".pt"))
        return {"encoder": self.spec, "dir": str(self.dir), "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch, "best_val_loss": round(self.best_val, 3),
                "stopped_early": self.stopped_early, "seconds": round(self.seconds, 1), "files": files}

    def _summary(self) -> dict:
        return {"n_train": self.n_train, "n_val": self.n_val, "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch,
                "best_val_loss": None if self.best_val == float("inf") else self.best_val, **self.meta}

    def _restore(self, doc: dict) -> None:
        for key in ("n_train", "n_val", "epochs_run", "best_epoch"):
            setattr(self, key, int(doc.get(key) or 0))
        self.best_val = float("inf") if doc.get("best_val_loss") is None else float(doc["best_val_loss"])
        known = {"kind", "version", "config", "arch", "latent", "image_size", "preprocess", "decoder", "width", "encoder_input", "seed", "base", "in_dim", "app_latent",
                 "train", "n_train", "n_val", "epochs_run", "best_epoch", "best_val_loss"}
        self.meta = {k: v for k, v in doc.items() if k not in known}
        history = Path(self.dir) / "history.json"
        self.history = json.loads(history.read_text()) if history.exists() else []


def _config_from(doc: dict) -> AutoencoderConfig:
    """The config of a saved model (``train`` in files written before the contract). Keys a format-1
    model predates read as what it was trained with (:data:`LEGACY`: padded photos, pixel loss only)."""
    saved = doc.get("config") or doc.get("train") or {}
    names = {f.name for f in fields(AutoencoderConfig)}
    version = int(doc.get("version", 0))
    legacy = {**(LEGACY if version < 2 else {}), **(LEGACY_2 if version < 3 else {}), **(LEGACY_3 if version < 4 else {}),
              **(LEGACY_4 if version < 5 else {}), **(LEGACY_5 if version < 6 else {}), **(LEGACY_6 if version < 7 else {})}
    config = AutoencoderConfig(**{**legacy, **{k: v for k, v in saved.items() if k in names}})
    if version < 6 and config.encoder_input == "features":
        config.flip = False  # format 5's feature-reading encoder never flipped (no flipped vectors cached)
    return config


class Autoencoder(_Fitted):
    """A dense / convolutional autoencoder or a convolutional VAE (``config.arch``) over pixels.

    ``fit(pixels)`` takes (n, S, S, 3) uint8 at ``config.image_size`` (ValueError otherwise);
    ``encode(pixels)`` gives the float32 (n, latent) code (the posterior mean µ for the VAE).
    """

    def __init__(self, config: AutoencoderConfig | None = None):
        self.config = config or AutoencoderConfig()
        if self.config.arch == "hybrid":
            raise ValueError("hybrid models are fitted by HybridAutoencoder (they need base features)")
        self.history, self.meta = [], {}

    def fit(self, pixels: np.ndarray, *, checkpoint_dir=None, resume: bool = False, progress: bool = True,
            meta: dict | None = None, features: np.ndarray | None = None,
            flipped_features: np.ndarray | None = None) -> "Autoencoder":
        """Train on ``pixels``, keeping the best weights by validation loss. ``checkpoint_dir``: write
        checkpoint.pt there after every epoch; ``resume``: continue from it (its config wins, except
        ``epochs`` and ``device``). ``meta`` is stored in config.json as is (catalog, split...).
        Uses $LOOKALIKE_THREADS torch threads while it runs (one is fastest on an oversubscribed box).
        With ``encoder_input="features"`` the encoder reads each image's (n, 1280) effnet-lite0 vector:
        ``features`` when given (aligned with ``pixels``, as :func:`~lookalike.encoders.autoencoder.pixel_features`
        computes them), else computed once here (about as long as embedding the images); with
        ``config.flip`` the flipped images' vectors too (``flipped_features``, else computed: twice the
        one-off cost), so the encoder sees mirrored products as well."""
        with training_threads():
            self._fit(pixels, None if checkpoint_dir is None else Path(checkpoint_dir), resume, progress, features,
                      flipped_features)
        self.meta = {**dict(meta or {}), **self.meta_fit}
        return self

    def _fit(self, pixels: np.ndarray, ckpt_dir: Path | None, resume: bool, progress: bool,
             features: np.ndarray | None = None, flipped: np.ndarray | None = None) -> None:
        ckpt_path = ckpt_dir / CHECKPOINT_FILE if ckpt_dir is not None else None
        ckpt = None
        if resume:
            if ckpt_path is None or not ckpt_path.exists():
                raise FileNotFoundError(f"nothing to resume: no checkpoint at {ckpt_path}")
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            saved = ckpt.get("config") or asdict(_config_from(json.loads((ckpt_dir / "config.json").read_text())))
            self.config = AutoencoderConfig(**{**saved, "epochs": self.config.epochs, "device": self.config.device})
        cfg = self.config
        if pixels.ndim != 4 or pixels.shape[1:] != (cfg.image_size, cfg.image_size, 3) or pixels.dtype != np.uint8:
            raise ValueError(f"expected (n, {cfg.image_size}, {cfg.image_size}, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        feature_match = cfg.feature_match > 0 and cfg.arch == "vae"
        perceptual = feature = None
        if cfg.perceptual > 0 and feature_match and cfg.image_size >= FeatureMatchLoss.MIN_SIDE:
            perceptual = PerceptualFeatureLoss().to(device)  # both terms from one backbone pass
        else:
            perceptual = PerceptualLoss().to(device) if cfg.perceptual > 0 else None
            feature = FeatureMatchLoss().to(device) if feature_match else None
        net = build_model(cfg.arch, cfg.image_size, cfg.latent, cfg.decoder, cfg.width, cfg.encoder_input).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        train_idx, val_idx = split_indices(len(pixels), cfg.val_fraction, cfg.seed)
        if cfg.encoder_input == "features":
            if features is None:
                features = pixel_features(pixels, progress=progress)
            features = np.asarray(features, np.float32)
            if features.shape != (len(pixels), net.feature_mean.shape[0]):
                raise ValueError(f"expected ({len(pixels)}, {net.feature_mean.shape[0]}) features, got {features.shape}")
            net.set_input_stats(features[train_idx], pixels[train_idx])
            net.input_dropout = cfg.input_dropout
            if cfg.flip:
                if flipped is None:
                    flipped = pixel_features(np.ascontiguousarray(pixels[:, :, ::-1]), progress=progress)
                flipped = np.asarray(flipped, np.float32)
                if flipped.shape != features.shape:
                    raise ValueError(f"expected {features.shape} flipped features, got {flipped.shape}")
            else:
                flipped = None
        else:
            features = flipped = None
        adversary = Adversary(cfg.adversarial, cfg.lr, device) if cfg.arch == "vae" and cfg.adversarial > 0 else None
        averaged = weight_average(net, cfg.ema) if cfg.ema > 0 else None
        kept = net if averaged is None else averaged.module  # the weights validated and saved
        state = {"epoch": 0, "best_val": float("inf"), "best_epoch": 0, "bad_epochs": 0, "history": []}
        best = None
        if ckpt is not None:
            net.load_state_dict(ckpt["model"])
            if averaged is not None and ckpt.get("averaged") is not None:
                averaged.load_state_dict(ckpt["averaged"])
            opt.load_state_dict(ckpt["optimizer"])
            state = ckpt["state"]
            best = ckpt.get("best")
            if adversary is not None and ckpt.get("adversary") is not None:
                adversary.load_state_dict(ckpt["adversary"])
            if best is None and (ckpt_dir / WEIGHTS_FILE).exists():  # checkpoints written before "best" was kept
                best = torch.load(ckpt_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)

        started, stopped_early = time.perf_counter(), False
        state.setdefault("seconds", 0.0)
        todo = max(0, cfg.epochs - state["epoch"])
        val_args = dict(beta=cfg.beta if cfg.arch == "vae" else 0.0, device=device, batch_size=cfg.batch_size,
                        seed=cfg.seed, perceptual=perceptual, weight=cfg.perceptual,
                        free_bits=cfg.free_bits if cfg.arch == "vae" else 0.0, feature=feature,
                        feature_weight=cfg.feature_match, mmd_weight=cfg.latent_mmd if cfg.arch == "vae" else 0.0,
                        features=None if features is None else features[val_idx],
                        colour_weight=cfg.colour if cfg.arch == "vae" else 0.0)
        with tqdm(total=todo * len(train_idx), desc=f"train {cfg.arch}", unit="img", disable=not progress,
                  leave=False) as bar:
            for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
                epoch_started = time.perf_counter()
                deadline = None if cfg.time_budget is None else epoch_started + cfg.time_budget - state["seconds"]
                # the adversarial term starts once the KL warm-up is over, never in the first epoch
                # (VQGAN's "disc_start": the discriminator only helps once the reconstructions have
                # their shape)
                adversarial = adversary is not None and epoch > max(1, state.get("warmup", cfg.warmup) or 0)
                if adversarial and not state.get("adversarial_from"):
                    state.update(adversarial_from=epoch, bad_epochs=0)
                row = _train_epoch(net, opt, pixels[train_idx], cfg, epoch, device, bar, perceptual,
                                   state.get("warmup"), deadline, feature,
                                   None if features is None else features[train_idx],
                                   None if flipped is None else flipped[train_idx],
                                   adversary if adversarial else None, averaged)
                row["val_loss"] = evaluate_loss(kept, pixels[val_idx], **val_args)
                state["history"].append(row)
                state["epoch"] = epoch
                state["seconds"] += time.perf_counter() - epoch_started
                bar.set_postfix(epoch=epoch, train=f"{row['train_loss']:.1f}", val=f"{row['val_loss']:.1f}")
                # the validation loss leaves out the adversarial term, which trades pixel likelihood
                # for sharpness: it rises while the decodes get sharper and more recognisable
                # (docs/autoencoders.md, format 7), so once the term is on the latest weights are kept
                # and only the budget or the epochs end the run (what GANs do; with ``ema``, the average)
                if adversarial or row["val_loss"] < state["best_val"]:
                    state.update(best_val=row["val_loss"], best_epoch=epoch, bad_epochs=0)
                    best = {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}
                elif epoch > (state.get("warmup", cfg.warmup) or 0):  # during KL warm-up the objective itself moves
                    state["bad_epochs"] += 1
                if cfg.time_budget is not None:
                    if "warmup" not in state:  # first epoch timed: fit the KL warm-up into the epochs the budget allows
                        planned = max(1, min(cfg.epochs, int(cfg.time_budget // max(state["seconds"], 1e-6))))
                        state["warmup"] = min(cfg.warmup or 0, max(1, planned // 3))
                    # the deadline cuts the epoch that runs past the budget; that one is the last
                    if row["images"] < len(train_idx) or state["seconds"] >= cfg.time_budget:
                        stopped_early = True
                        state["budget_stop"] = True
                if ckpt_path is not None:
                    ckpt_dir.mkdir(parents=True, exist_ok=True)
                    # atomic: a run killed while it writes must still resume from the previous epoch
                    with atomic_file(ckpt_path) as f:
                        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "state": state,
                                    "best": best, "config": asdict(cfg),
                                    "averaged": None if averaged is None else averaged.state_dict(),
                                    "adversary": None if adversary is None else adversary.state_dict()}, f)
                if state["bad_epochs"] >= cfg.patience or state.get("budget_stop"):
                    stopped_early = True
                    break
        net.load_state_dict(best)
        self.net = net.cpu().eval()
        self.history, self.epochs_run, self.best_epoch = state["history"], state["epoch"], state["best_epoch"]
        self.best_val, self.stopped_early = state["best_val"], stopped_early
        self.n_train, self.n_val = len(train_idx), len(val_idx)
        self.seconds = time.perf_counter() - started
        self.meta_fit = {"time_budget_stop": bool(state.get("budget_stop")), "train_seconds": round(state["seconds"], 1)}
        self._preview = pixels[val_idx[:8]]

    @torch.no_grad()
    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 -> (n, latent) float32: the code (µ for the VAE), what ``ae:``/``vae:`` index."""
        return self.net.eval().encode(to_tensor(pixels)).numpy().astype(np.float32)

    def save(self, directory) -> Path:
        """Write weights.pt, config.json, history.json, loss.png and (after a fit) reconstructions.png."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        with atomic_file(directory / WEIGHTS_FILE) as f:
            torch.save(self.net.state_dict(), f)
        write_json(directory / "history.json", self.history, indent=1, default=str)
        save_config(directory, self.kind, FORMAT_VERSION, cfg, arch=cfg.arch, latent=cfg.latent,
                    image_size=cfg.image_size, preprocess=cfg.preprocess, decoder=cfg.decoder, width=cfg.width,
                    encoder_input=cfg.encoder_input, seed=cfg.seed,
                    **self._summary())
        if self.history:
            epoch_loss_png(self.history, directory / "loss.png", title=f"{cfg.arch} autoencoder, latent {cfg.latent}")
        if self._preview is not None:
            # inputs in the top row, their reconstructions below
            image_pairs_png(self._preview, reconstructions(self.net, self._preview), directory / "reconstructions.png")
        self.dir = directory
        return directory

    @classmethod
    def load(cls, directory) -> "Autoencoder":
        """The model ``save`` wrote (FileNotFoundError when there is none)."""
        doc = read_config(directory, ("ae", "vae"), FORMAT_VERSION, "train one with `lookalike train autoencoder`")
        model = cls(_config_from(doc) if doc.get("config") or doc.get("train") else
                    AutoencoderConfig(arch=doc["arch"], latent=int(doc["latent"]), image_size=int(doc["image_size"]),
                                      **LEGACY, **LEGACY_2, **LEGACY_3, **LEGACY_4, **LEGACY_5))
        model.net = LoadedModel(directory).net
        model.dir = Path(directory)
        model._restore(doc)
        return model


@torch.no_grad()
def reconstructions(net, pixels: np.ndarray) -> np.ndarray:
    """(n, S, S, 3) uint8 -> the network's reconstructions (decoded from µ for the VAE), same shape."""
    net.eval()
    return to_uint8(torch.sigmoid(net.decode_logits(net.encode(to_tensor(pixels)))))


class HybridAutoencoder(_Fitted):
    """``hvae``: an MLP VAE over a pretrained encoder's vectors plus a convolutional image decoder
    (:class:`lookalike.encoders.hybrid.HybridVAE`). ``config.base`` names the base encoder and
    ``config.app_latent`` > 0 adds that many appearance dimensions (from the pixels) to the decoder's
    input; retrieval still uses the semantic µ only."""

    def __init__(self, config: AutoencoderConfig | None = None):
        self.config = config or AutoencoderConfig(arch="hybrid")
        if self.config.arch != "hybrid":
            raise ValueError(f"HybridAutoencoder needs arch='hybrid', not {self.config.arch!r}")
        self.history, self.meta = [], {}
        self.mean = self.std = None

    def fit(self, features: np.ndarray, pixels: np.ndarray, *, progress: bool = True,
            meta: dict | None = None) -> "HybridAutoencoder":
        """Train on aligned (n, D) base features and (n, S, S, 3) uint8 pixels; early stopping on the
        validation loss, best weights kept. No checkpoints: hybrids train in minutes."""
        with training_threads():
            self._fit(np.asarray(features, np.float32), pixels, progress)
        self.meta = dict(meta or {})
        return self

    def _fit(self, features: np.ndarray, pixels: np.ndarray, progress: bool) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        unit = unit_features(features)  # the same unit rows standardise() makes at inference
        self.mean, self.std = unit.mean(0), unit.std(0) + 1e-6
        x_all = torch.from_numpy(standardise(features, self.mean, self.std))
        net = HybridVAE(features.shape[1], cfg.latent, cfg.image_size, app_latent=cfg.app_latent)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        train_idx, val_idx = split_indices(len(features), cfg.val_fraction, cfg.seed)
        history, best, best_epoch, bad, started = [], float("inf"), 0, 0, time.perf_counter()
        best_state = None
        for epoch in tqdm(range(1, cfg.epochs + 1), desc="train hybrid", disable=not progress, leave=False):
            net.train()
            rng = np.random.default_rng([cfg.seed, epoch])
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            order, sums = rng.permutation(train_idx), np.zeros(3)
            for s in range(0, len(order), cfg.batch_size):
                idx = np.sort(order[s:s + cfg.batch_size])
                if len(idx) < 2 and s > 0:
                    continue
                feat, kl, image = net.losses(x_all[idx], to_tensor(pixels[idx]), gen)
                loss = feat + kl_weight(cfg, epoch) * kl + image
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += np.array([feat.item(), kl.item(), image.item()]) * len(idx)
            sums /= len(order)
            net.eval()
            with torch.no_grad():
                vf, vk, vi = net.losses(x_all[val_idx], to_tensor(pixels[val_idx]),
                                        torch.Generator().manual_seed(cfg.seed))
            val = float(vf + cfg.beta * vk + vi)
            history.append({"epoch": epoch, "train_loss": float(sums[0] + cfg.beta * sums[1] + sums[2]),
                            "val_loss": val, "train_feature": sums[0], "train_kl": sums[1], "train_image": sums[2],
                            "val_image": float(vi), "kl_weight": kl_weight(cfg, epoch)})
            if val < best:
                best, best_epoch, bad = val, epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif epoch > (cfg.warmup or 0):
                bad += 1
                if bad >= cfg.patience:
                    break
        net.load_state_dict(best_state)
        self.net = net.eval()
        self.in_dim = int(features.shape[1])
        self.history, self.epochs_run, self.best_epoch, self.best_val = history, len(history), best_epoch, best
        self.stopped_early, self.seconds = bad >= cfg.patience, time.perf_counter() - started
        self.n_train, self.n_val = len(train_idx), len(val_idx)
        self._preview = (features[val_idx[:8]], pixels[val_idx[:8]])

    @torch.no_grad()
    def encode(self, features: np.ndarray) -> np.ndarray:
        """(n, D) base features -> (n, latent) float32 semantic µ: what ``hvae:NAME`` indexes."""
        mu, _ = self.net.eval().posterior(torch.from_numpy(standardise(features, self.mean, self.std)))
        return mu.numpy().astype(np.float32)

    def save(self, directory) -> Path:
        """Write weights.pt, feature_stats.npz, config.json, history.json, loss.png and (after a fit)
        reconstructions.png (validation inputs above their decoded µ)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        with atomic_file(directory / WEIGHTS_FILE) as f:
            torch.save(self.net.state_dict(), f)
        save_npz(directory / STATS_FILE, mean=self.mean, std=self.std)
        write_json(directory / "history.json", self.history, indent=1, default=str)
        save_config(directory, "hvae", FORMAT_VERSION, cfg, arch="hybrid", base=cfg.base, in_dim=self.in_dim,
                    latent=cfg.latent, app_latent=cfg.app_latent, image_size=cfg.image_size, seed=cfg.seed,
                    **self._summary())
        if self.history:
            epoch_loss_png(self.history, directory / "loss.png", title=f"hybrid VAE on {cfg.base}, latent {cfg.latent}")
        if self._preview is not None:  # validation inputs above the images decoded from their µ
            features, pixels = self._preview
            model = HybridModel(directory)
            mu, _ = model.posterior(features, pixels)
            image_pairs_png(pixels, model.decode(mu), directory / "reconstructions.png", scale=(2, 2))
        self.dir = directory
        return directory

    @classmethod
    def load(cls, directory) -> "HybridAutoencoder":
        doc = read_config(directory, "hvae", FORMAT_VERSION, "train one with `lookalike train autoencoder --kind hybrid`")
        names = {f.name for f in fields(AutoencoderConfig)}
        saved = doc.get("config") or {"arch": "hybrid", "latent": doc["latent"], "image_size": doc["image_size"],
                                      "seed": doc.get("seed", 0), "base": doc["base"],
                                      "app_latent": doc.get("app_latent", 0)}
        model = cls(AutoencoderConfig(**{k: v for k, v in saved.items() if k in names}))
        loaded = HybridModel(directory)
        model.net, model.mean, model.std, model.in_dim = loaded.net, loaded.mean, loaded.std, int(doc["in_dim"])
        model.dir = Path(directory)
        model._restore(doc)
        return model
