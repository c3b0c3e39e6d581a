"""Hybrid encoder: a VAE over a pretrained encoder's features, plus an image decoder.

Pixel autoencoders learn colour and layout, not "what the product is", so they retrieve poorly;
pretrained CNN features retrieve well but cannot be decoded into an image. ``hvae:NAME`` joins
the two: a small MLP VAE compresses the catalog's pretrained vectors (effnet-lite0 by default) to
a 16-d latent (retrieval: Euclidean on µ, or ``hvae:NAME@loglik``), and a convolutional decoder
is trained on the same latents to draw images (generation, sliders, interpolation). The decoder
sees µ with gradients stopped, so pixels never pull the latent away from the features' semantics.

Trained with ``lookalike train autoencoder --kind hybrid --catalog C`` (the catalog must already
be indexed with the base encoder) by :class:`lookalike.train.autoencoder.HybridAutoencoder`; saved
under ``<home>/models/hvae/<name>/``. This module is the inference side: the network and the loader.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookalike.config import model_dir
from lookalike.encoders import get_encoder, register
from lookalike.encoders.autoencoder import (
    CONFIG_FILE, WEIGHTS_FILE, _conv_decoder, _conv_encoder, decode_latents, default_channels, to_tensor,
)
from lookalike.encoders.base import Encoder
from lookalike.encoders.spec import EncoderSpec

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


def unit_features(features: np.ndarray) -> np.ndarray:
    """(n, D) base features scaled to unit rows (torch: numpy's l2_normalize lives above encoders)."""
    return F.normalize(torch.from_numpy(np.asarray(features, np.float32)), dim=1).numpy()


def standardise(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((unit_features(features) - mean) / std).astype(np.float32)


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
        return cls(model_dir("hvae", name, home))

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
        self.name = str(EncoderSpec("hvae", name, None if mode == "mu" else mode))
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
def _make(spec: EncoderSpec, home=None, catalog=None, mode: str | None = None, **options) -> Encoder:
    if not spec.name:
        raise ValueError("hvae encoders need a model name: hvae:NAME")
    return HybridEncoder(HybridModel.open(spec.name, home=home), spec.name, spec.mode or mode or "mu", home, catalog)
