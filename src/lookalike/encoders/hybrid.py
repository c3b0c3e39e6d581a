"""Hybrid encoder: a VAE over a pretrained encoder's features, plus an image decoder.

Pixel autoencoders learn colour and layout, not "what the product is", so they retrieve poorly;
pretrained CNN features retrieve well but cannot be decoded into an image. ``hvae:NAME`` joins
the two: a small MLP VAE compresses the catalog's pretrained vectors (effnet-lite0 by default) to
a 16-d latent (retrieval: Euclidean on µ, or ``hvae:NAME@loglik``), and a convolutional decoder
is trained on the same latents to draw images (generation, sliders, interpolation). The decoder
sees µ with gradients stopped, so pixels never pull the latent away from the features' semantics.

Trained with ``lookalike train autoencoder --kind hybrid --catalog C`` (the catalog must already
be indexed with the base encoder); saved under ``<home>/models/hvae/<name>/``.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookalike.encoders import get_encoder, register
from lookalike.encoders.autoencoder import (
    CONFIG_FILE, WEIGHTS_FILE, _conv_decoder, _conv_encoder, decode_latents, default_channels, model_dir, to_tensor,
)
from lookalike.encoders.base import Encoder, l2_normalize

STATS_FILE = "feature_stats.npz"


class HybridVAE(nn.Module):
    variational = True

    def __init__(self, in_dim: int, latent: int = 16, image_size: int = 64, hidden: int = 512, app_latent: int = 0):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.feat_dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, in_dim))
        channels = default_channels(image_size)
        self.channels, self.side = channels, image_size // 2 ** len(channels)
        self.app_latent = app_latent
        if app_latent:  # appearance: a small conv VAE posterior from the pixels themselves
            self.app_enc = _conv_encoder(channels)
            self.app_head = nn.Linear(channels[-1] * self.side ** 2, 2 * app_latent)
        self.fc_img = nn.Sequential(nn.Linear(latent + app_latent, channels[-1] * self.side ** 2), nn.LeakyReLU(0.2))
        self.img_dec = _conv_decoder(channels)

    def posterior(self, x: torch.Tensor):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def app_posterior(self, pixels: torch.Tensor):
        mu, logvar = self.app_head(self.app_enc(pixels)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.img_dec(self.fc_img(z).view(-1, self.channels[-1], self.side, self.side))

    def losses(self, x, pixels, generator=None):
        """(feature reconstruction, KL, image reconstruction), each per item. The image decoder gets
        the semantic µ with gradients stopped, plus a sampled appearance z when there is one."""
        mu, logvar = self.posterior(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=mu.device)
        feat = 0.5 * (self.feat_dec(z) - x).pow(2).sum(1).mean()
        kl = _kl(mu, logvar)
        code = mu.detach()
        if self.app_latent:
            mu_a, logvar_a = self.app_posterior(pixels)
            z_a = mu_a + torch.exp(0.5 * logvar_a) * torch.randn(mu_a.shape, generator=generator, device=mu.device)
            kl = kl + _kl(mu_a, logvar_a)
            code = torch.cat([code, z_a], dim=1)
        image = F.binary_cross_entropy_with_logits(self.decode_logits(code), pixels, reduction="sum") / len(x)
        return feat, kl, image


def _kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


def standardise(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((l2_normalize(features) - mean) / std).astype(np.float32)


def train_hybrid(features: np.ndarray, pixels: np.ndarray, out_dir, cfg, base: str, progress: bool = True,
                 meta: dict | None = None, app_latent: int = 0):
    """Train on aligned (n, D) base features and (n, S, S, 3) pixels; early stopping on validation loss.
    ``app_latent`` > 0 adds that many appearance dimensions (from the pixels) to the image decoder's
    input: retrieval still uses the semantic µ only."""
    from tqdm import tqdm

    from lookalike.train.autoencoder import TrainResult, kl_weight, save_loss_curve, split_indices

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    unit = l2_normalize(features)
    mean, std = unit.mean(0), unit.std(0) + 1e-6
    x_all = torch.from_numpy(standardise(features, mean, std))
    net = HybridVAE(features.shape[1], cfg.latent, cfg.image_size, app_latent=app_latent)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    train_idx, val_idx = split_indices(len(features), cfg.val_fraction, cfg.seed)
    history, best, best_epoch, bad, started = [], float("inf"), 0, 0, time.perf_counter()
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
            vf, vk, vi = net.losses(x_all[val_idx], to_tensor(pixels[val_idx]), torch.Generator().manual_seed(cfg.seed))
        val = float(vf + cfg.beta * vk + vi)
        history.append({"epoch": epoch, "train_loss": float(sums[0] + cfg.beta * sums[1] + sums[2]), "val_loss": val,
                        "train_feature": sums[0], "train_kl": sums[1], "train_image": sums[2],
                        "val_image": float(vi), "kl_weight": kl_weight(cfg, epoch)})
        if val < best:
            best, best_epoch, bad = val, epoch, 0
            torch.save(net.state_dict(), out_dir / WEIGHTS_FILE)
        elif epoch > (cfg.warmup or 0):
            bad += 1
            if bad >= cfg.patience:
                break
    np.savez(out_dir / STATS_FILE, mean=mean, std=std)
    config = {"arch": "hybrid", "base": base, "in_dim": int(features.shape[1]), "latent": cfg.latent,
              "app_latent": app_latent,
              "image_size": cfg.image_size, "seed": cfg.seed, "epochs_run": len(history), "best_epoch": best_epoch,
              "best_val_loss": best, "n_train": len(train_idx), "n_val": len(val_idx), **(meta or {})}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    save_loss_curve(history, out_dir / "loss.png", title=f"hybrid VAE on {base}, latent {cfg.latent}")
    model = HybridModel(out_dir)
    mu, _ = model.posterior(features[val_idx[:8]], pixels[val_idx[:8]])
    recon = model.decode(mu)
    grid = np.concatenate([np.concatenate(list(pixels[val_idx[:8]]), 1), np.concatenate(list(recon), 1)], 0)
    from PIL import Image

    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out_dir / "reconstructions.png")
    return TrainResult(out_dir, len(history), best_epoch, best, bad >= cfg.patience, history,
                       time.perf_counter() - started, net)


class HybridModel:
    """A trained hybrid, with the same inference surface as ``autoencoder.LoadedModel``
    (``decode``, ``latent``, ``image_size``, ``config``). ``latent`` counts every decodable dimension
    (semantic, then appearance); ``sem_latent`` only the semantic ones the encoder retrieves with."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        if not (self.dir / WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"no trained model at {self.dir} (train one with `lookalike train autoencoder --kind hybrid`)")
        self.config = json.loads((self.dir / CONFIG_FILE).read_text())
        self.arch, self.base = "hybrid", self.config["base"]
        self.sem_latent, self.image_size = int(self.config["latent"]), int(self.config["image_size"])
        self.app_latent = int(self.config.get("app_latent", 0))
        self.latent = self.sem_latent + self.app_latent
        self.net = HybridVAE(int(self.config["in_dim"]), self.sem_latent, self.image_size, app_latent=self.app_latent)
        self.net.load_state_dict(torch.load(self.dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        self.net.eval()
        with np.load(self.dir / STATS_FILE) as stats:
            self.mean, self.std = stats["mean"], stats["std"]
        self.weights_hash = hashlib.sha256((self.dir / WEIGHTS_FILE).read_bytes()).hexdigest()[:12]

    @classmethod
    def open(cls, name: str, home=None) -> "HybridModel":
        return cls(model_dir(home, "hvae", name))

    @torch.no_grad()
    def posterior_features(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, logvar = self.net.posterior(torch.from_numpy(standardise(features, self.mean, self.std)))
        return mu.numpy(), logvar.numpy()

    @torch.no_grad()
    def posterior(self, features: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full decodable posterior: [semantic µ, appearance µ] and the matching log σ²."""
        mu, logvar = self.posterior_features(features)
        if self.app_latent:
            mu_a, logvar_a = self.net.app_posterior(to_tensor(pixels))
            mu, logvar = np.concatenate([mu, mu_a.numpy()], 1), np.concatenate([logvar, logvar_a.numpy()], 1)
        return mu, logvar

    def decode(self, z: np.ndarray) -> np.ndarray:
        return decode_latents(self.net, self.latent, z)


class HybridEncoder(Encoder):
    """``hvae:NAME`` (µ, L2) or ``hvae:NAME@loglik`` ([µ, log σ²], log-likelihood)."""

    def __init__(self, model: HybridModel, name: str, mode: str, home=None, catalog=None):
        if mode not in ("mu", "loglik"):
            raise ValueError(f"unknown hybrid retrieval mode {mode!r}; choose mu or loglik")
        self.model, self.mode = model, mode
        self.base = get_encoder(model.base, home=home, catalog=catalog)
        self.name = f"hvae:{name}" + ("" if mode == "mu" else "@loglik")
        self.image_size = self.base.image_size
        self.dim = model.sem_latent * (2 if mode == "loglik" else 1)
        self.metric = "loglik" if mode == "loglik" else "l2"

    def preprocess(self, image) -> np.ndarray:
        return self.base.preprocess(image)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        mu, logvar = self.model.posterior_features(self.base.encode_batch(batch))
        return mu if self.mode == "mu" else np.concatenate([mu, logvar], 1).astype(np.float32)

    def fingerprint(self) -> str:
        return f"{self.name}#{self.model.weights_hash}<{self.base.fingerprint()}>"


@register("hvae", "hybrid: VAE over pretrained features + image decoder (hvae:NAME, hvae:NAME@loglik)")
def _make(arg: str | None, home=None, catalog=None, mode: str | None = None, **options) -> Encoder:
    if not arg:
        raise ValueError("hvae encoders need a model name: hvae:NAME")
    name, _, spec_mode = arg.partition("@")
    return HybridEncoder(HybridModel.open(name, home=home), name, spec_mode or mode or "mu", home, catalog)
