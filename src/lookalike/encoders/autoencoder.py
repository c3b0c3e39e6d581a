"""Trainable encoders: a dense autoencoder, a convolutional autoencoder and two VAEs: a convolutional
one (:class:`ConvVAE`, ``encoder_input="pixels"``) and :class:`FeatureVAE`, whose encoder reads the
image's effnet-lite0 vector and colour thumbnail (``encoder_input="features"``, the latent explorer's
default since model format 5); both decode with the same convolutional decoder.

Specs (models live under ``model_dir(kind, name, home)`` = ``<home>/models/<kind>/<name>/``, written by
:class:`lookalike.train.autoencoder.Autoencoder`; this module is the inference side):

* ``ae:NAME``           the bottleneck of a dense or conv autoencoder, L2.
* ``vae:NAME``          the VAE posterior mean µ, L2.
* ``vae:NAME@z``        z = µ + σ·ε with ε fixed per image (drawn from a seed derived from the
                        image's pixels), so an item's sampled position is reproducible, L2.
* ``vae:NAME@loglik``   [µ, log σ²]; ranked by log N(µ_query | µ_i, diag σ_i²) (``latent.loglik_scores``).
* ``vae:NAME@sym``      [µ, log σ²]; ranked by the symmetric expected-likelihood kernel
                        log N(µ_q | µ_i, diag(σ_q² + σ_i²)).

The two likelihood modes are not faiss metrics: their encoders declare the metrics ``loglik`` and
``loglik-sym``, which ``lookalike.index.scored`` serves exactly in numpy (score = log-likelihood).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import ndimage
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lookalike.config import model_dir
from lookalike.encoders import get_encoder, register
from lookalike.encoders.base import Encoder
from lookalike.encoders.colour import border_likeness, foreground_weights, lab_thumbnail
from lookalike.encoders.spec import EncoderSpec
from lookalike.data.images import resize_square

ARCHS = ("dense", "conv", "vae", "hybrid")  # hybrid: see encoders/hybrid.py
VAE_MODES = ("mu", "z", "loglik", "sym")
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"


# ----------------------------------------------------------------------------- architectures
def _conv_encoder(channels: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out in zip([3] + channels[:-1], channels):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Flatten())


DECODERS = ("transpose", "upsample")


def _upsample_conv(c_in: int, c_out: int) -> list[nn.Module]:
    # nearest-neighbour x2 then a 3x3 convolution: every output pixel sees the same number of
    # kernel taps, so no checkerboard (Odena, Dumoulin & Olah, "Deconvolution and checkerboard
    # artifacts", Distill 2016), unlike a stride-2 4x4 transposed convolution
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]


def _conv_decoder(channels: list[int], decoder: str = "transpose") -> nn.Sequential:
    """The decoder mirroring :func:`_conv_encoder`: ``transpose`` (stride-2 4x4 transposed
    convolutions, models before format 3) or ``upsample`` (nearest x2 + 3x3 convolution)."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")

    def up(c_in: int, c_out: int) -> list[nn.Module]:
        if decoder == "upsample":
            return _upsample_conv(c_in, c_out)
        return [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]

    layers: list[nn.Module] = []
    rev = channels[::-1]
    for c_in, c_out in zip(rev[:-1], rev[1:]):
        layers += [*up(c_in, c_out), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
    layers += up(rev[-1], 3)  # logits; sigmoid in decode()
    return nn.Sequential(*layers)


class DenseAE(nn.Module):
    """Flattened pixels -> MLP -> latent -> MLP -> pixels."""

    variational = False

    def __init__(self, image_size: int = 64, latent: int = 16, hidden: int = 512):
        super().__init__()
        self.image_size = image_size
        n = 3 * image_size * image_size
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 4),
                                 nn.ReLU(), nn.Linear(hidden // 4, latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden // 4), nn.ReLU(), nn.Linear(hidden // 4, hidden),
                                 nn.ReLU(), nn.Linear(hidden, n))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        return self.dec(z).view(-1, 3, s, s)

    def forward(self, x, generator=None):
        z = self.encode(x)
        return self.decode_logits(z), z, None


class ConvAE(nn.Module):
    """Strided convolutions down to 4x4, a linear bottleneck, transposed convolutions back up."""

    variational = False

    def __init__(self, image_size: int = 64, latent: int = 16, channels: list[int] | None = None,
                 decoder: str = "transpose", width: int = 32):
        super().__init__()
        self.image_size = image_size
        self.channels = channels or default_channels(image_size, width)
        self.side = image_size // 2 ** len(self.channels)
        flat = self.channels[-1] * self.side * self.side
        self.enc = _conv_encoder(self.channels)
        self.head = nn.Linear(flat, self._head_out(latent))
        self.fc_dec = nn.Sequential(nn.Linear(latent, flat), nn.LeakyReLU(0.2))
        self.dec = _conv_decoder(self.channels, decoder)

    def _head_out(self, latent: int) -> int:
        return latent

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc_dec(z).view(-1, self.channels[-1], self.side, self.side)
        return self.dec(h)

    def forward(self, x, generator=None):
        z = self.encode(x)
        return self.decode_logits(z), z, None


class FeatureVAE(nn.Module):
    """A VAE whose encoder reads what the image *is* rather than its pixel layout: the ``effnet-lite0``
    vector of the input image (EfficientNet-Lite0's pooled, L2-normalised 1280-d feature, computed
    by :func:`pixel_features`; frozen, so training caches it once per image) plus the image's
    ``thumb`` x ``thumb`` colour thumbnail (area average; the backbone's vector keeps little colour),
    each standardised with its training mean and spread, then an MLP (-> ``hidden`` -> µ, log σ²);
    the decoder is :class:`ConvAE`'s. The 16 latents so carry garment type and colour, what a probe
    on backbone features reads: the hybrid model's idea (:mod:`lookalike.encoders.hybrid`), with
    the image losses reaching the encoder. ``encode`` / ``posterior`` take (n, 3, S, S) image tensors
    in [0, 1] like :class:`ConvVAE` (``features=`` the images' (n, 1280) vectors, when known, skips
    the backbone)."""

    variational = True
    feature_input = True

    def __init__(self, image_size: int = 64, latent: int = 16, decoder: str = "upsample", width: int = 16,
                 hidden: int = 512, thumb: int = 8):
        super().__init__()
        self.image_size, self.thumb = image_size, thumb
        self.channels = default_channels(image_size, width)
        self.side = image_size // 2 ** len(self.channels)
        flat = self.channels[-1] * self.side * self.side
        # the training features' mean and spread (fitted once, saved with the weights)
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_std", torch.ones(FEATURE_DIM))
        self.register_buffer("thumb_mean", torch.zeros(3 * thumb * thumb))
        self.register_buffer("thumb_std", torch.ones(3 * thumb * thumb))
        self.head = nn.Sequential(nn.Linear(FEATURE_DIM + 3 * thumb * thumb, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2 * latent))
        self.fc_dec = nn.Sequential(nn.Linear(latent, flat), nn.LeakyReLU(0.2))
        self.dec = _conv_decoder(self.channels, decoder)

    def thumbnail(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) -> (n, 3 * thumb²) area-averaged colours."""
        return F.adaptive_avg_pool2d(x, self.thumb).flatten(1)

    @torch.no_grad()
    def set_input_stats(self, features: np.ndarray, pixels: np.ndarray, batch_size: int = 256) -> None:
        """Standardise the encoder's inputs with the mean and spread of the training images' (n, 1280)
        vectors and thumbnails (``pixels``: (n, S, S, 3) uint8)."""
        f = torch.as_tensor(np.asarray(features, np.float32))
        t = torch.cat([self.thumbnail(to_tensor(pixels[s:s + batch_size])) for s in range(0, len(pixels), batch_size)])
        self.feature_mean.copy_(f.mean(0))
        self.feature_std.copy_(f.std(0) + 1e-4)
        self.thumb_mean.copy_(t.mean(0))
        self.thumb_std.copy_(t.std(0) + 1e-2)

    input_dropout = 0.0  # training only: share of the standardised inputs zeroed (set by the trainer)

    def posterior(self, x: torch.Tensor, features: torch.Tensor | None = None, generator=None):
        if features is None:
            features = torch.from_numpy(pixel_features(to_uint8(x)))
        h = torch.cat([(features.to(self.feature_mean) - self.feature_mean) / self.feature_std,
                       (self.thumbnail(x) - self.thumb_mean) / self.thumb_std], dim=1)
        if self.training and self.input_dropout > 0:
            # a small catalog's 1472 inputs let the MLP memorise its images (the demo's 288 stopped
            # early at epoch 9); functional dropout keeps the state dict of format 5
            keep = torch.rand(h.shape, generator=generator, dtype=h.dtype, device=h.device) >= self.input_dropout
            h = h * keep / (1.0 - self.input_dropout)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def encode(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        return self.posterior(x, features)[0]

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(self.fc_dec(z).view(-1, self.channels[-1], self.side, self.side))

    def forward(self, x, generator=None, features: torch.Tensor | None = None):
        mu, logvar = self.posterior(x, features, generator)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return self.decode_logits(mu + torch.exp(0.5 * logvar) * eps), mu, logvar


FEATURE_DIM = 1280  # EfficientNet-Lite0's pooled feature
FEATURE_ENCODER = "effnet-lite0"
_feature_encoder: list = []  # the one effnet-lite0 encoder pixel_features loads on first use


def pixel_features(pixels: np.ndarray, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(n, S, S, 3) uint8 images -> (n, 1280) float32: their ``effnet-lite0`` vectors, exactly as that
    encoder embeds each image as a photo (resized to 224 px, ImageNet-normalised, pooled,
    L2-normalised): what a :class:`FeatureVAE` encodes."""
    if not _feature_encoder:
        _feature_encoder.append(get_encoder(FEATURE_ENCODER))
    encoder = _feature_encoder[0]
    out = [np.zeros((0, FEATURE_DIM), np.float32)]
    for s in tqdm(range(0, len(pixels), batch_size), desc="backbone features", disable=not progress, leave=False):
        out.append(encoder.encode([Image.fromarray(p) for p in pixels[s:s + batch_size]]).astype(np.float32))
    return np.concatenate(out)


class ConvVAE(ConvAE):
    """ConvAE whose head outputs µ and log σ²; training decodes z = µ + σ·ε (reparameterisation)."""

    variational = True

    def _head_out(self, latent: int) -> int:
        return 2 * latent

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.enc(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)  # keeps exp() finite on odd inputs

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def forward(self, x, generator=None):
        mu, logvar = self.posterior(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode_logits(z), mu, logvar


def default_channels(image_size: int, width: int = 32) -> list[int]:
    """Stride-2 stages while the side stays even and above 6 (64 px -> 4 stages to 4x4, as before;
    96 px -> 4 stages to 6x6; 128 px -> 5 stages to 4x4), ``width`` channels in the first stage,
    doubling per stage up to 8 x ``width`` (32 -> 32, 64, 128, 256; 16 -> 16, 32, 64, 128: about a
    quarter of the multiply-adds). ValueError for sizes that do not divide down to a side of 3..6
    (e.g. 100) or a width under 4."""
    side, stages = image_size, 0
    while side > 6 and side % 2 == 0:
        side, stages = side // 2, stages + 1
    if image_size < 8 or not 3 <= side <= 6:
        raise ValueError(f"image size must be >= 8 and halve down to 3..6 px (64, 96, 128...), got {image_size}")
    if width < 4:
        raise ValueError(f"width must be at least 4 channels, got {width}")
    return [min(width * 2**i, 8 * width) for i in range(stages)]


ENCODER_INPUTS = ("pixels", "features")  # what a VAE's encoder reads: ConvVAE | FeatureVAE


def build_model(arch: str, image_size: int = 64, latent: int = 16, decoder: str = "transpose",
                width: int = 32, encoder_input: str = "pixels") -> nn.Module:
    """The network of ``arch`` (``decoder``: see :func:`_conv_decoder`; ``width``: see
    :func:`default_channels`; the dense model has neither; ``encoder_input``: a VAE's encoder reads
    ``pixels`` (:class:`ConvVAE`) or the image's backbone ``features`` (:class:`FeatureVAE`))."""
    if encoder_input not in ENCODER_INPUTS:
        raise ValueError(f"unknown encoder input {encoder_input!r}; choose from {', '.join(ENCODER_INPUTS)}")
    if encoder_input == "features":
        if arch != "vae":
            raise ValueError("only a VAE can read backbone features (--encoder-input features needs --kind vae)")
        return FeatureVAE(image_size, latent, decoder, width)
    if arch == "dense":
        return DenseAE(image_size, latent)
    if arch == "conv":
        return ConvAE(image_size, latent, decoder=decoder, width=width)
    if arch == "vae":
        return ConvVAE(image_size, latent, decoder=decoder, width=width)
    if arch == "hybrid":
        raise ValueError("hybrid models are built by lookalike.encoders.hybrid (they need the feature size)")
    raise ValueError(f"unknown autoencoder kind {arch!r}; choose from {', '.join(ARCHS)}")


def kind_dir(arch: str) -> str:
    """Registry kind (and models/ sub-folder) for an architecture."""
    return {"vae": "vae", "hybrid": "hvae"}.get(arch, "ae")


# ----------------------------------------------------------------------------- pixels <-> tensors
PREPROCESS = ("pad", "foreground")   # how a photo becomes the model's square input
_FG_THUMB = 48                      # the foreground is estimated on a thumbnail this size (as colour does)
_FG_MIN_AREA = 0.04                 # a mask smaller than this share of the photo is not trusted
_FG_MIN_SOLIDITY = 0.35             # nor one filling less than this share of its own bounding box


def foreground_mask(image: Image.Image) -> np.ndarray | None:
    """(48, 48) float32 alpha in [0, 1] of the product in a photo, or None when no foreground is found.

    Reuses the colour encoder's estimate (:func:`lookalike.encoders.colour.border_likeness` on the Lab
    thumbnail: colours that fill the photo's border are background): pixels unlike the border form
    the mask; connected parts carrying less than a fifth of the centre-weighted foreground mass of the
    largest one are dropped (stray bits of a bed or floor), holes are filled (a logo or a white
    stripe inside a garment stays), and the edge is softened by one thumbnail pixel. None when the
    mask covers under 4 % of the photo or under 35 % of its own bounding box (scattered fragments:
    a product the colour of its background)."""
    lab = lab_thumbnail(image, _FG_THUMB)
    unlike = 1.0 - border_likeness(lab, min_share=0.2)  # the frame's common colours are the background
    mask = unlike > 0.5
    if mask.mean() < _FG_MIN_AREA:
        return None
    parts, n = ndimage.label(mask)
    if n > 1:
        weight = foreground_weights(lab)  # centre prior x unlike the border
        mass = ndimage.sum(weight, parts, index=np.arange(1, n + 1))
        mask = np.isin(parts, 1 + np.flatnonzero(mass >= 0.2 * mass.max()))
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    ys, xs = np.nonzero(mask)
    if mask.mean() < _FG_MIN_AREA or len(xs) == 0:
        return None
    solidity = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    if solidity < _FG_MIN_SOLIDITY:  # scattered fragments: the product is not separable from its background
        return None
    return np.clip(ndimage.gaussian_filter(mask.astype(np.float32), 0.7), 0.0, 1.0)


def foreground_square(image: Image.Image, size: int, margin: float = 0.06,
                      background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The product cropped to its foreground and centred on a uniform ``background``, ``size`` square.

    The bounding box of :func:`foreground_mask` (plus ``margin`` of its long side) is cropped from the
    photo, everything outside the soft mask is blended into ``background``, and the crop is padded
    to a square. A photo with no usable foreground (a flat image, a product that fills the frame
    edge to edge) falls back to the whole photo padded on white, like ``resize_square(..., "pad")``."""
    image = image.convert("RGB")
    alpha = foreground_mask(image)
    if alpha is None:
        return resize_square(image, size, "pad")
    w, h = image.size
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) == 0:
        return resize_square(image, size, "pad")
    sx, sy = w / _FG_THUMB, h / _FG_THUMB
    x0, x1, y0, y1 = xs.min() * sx, (xs.max() + 1) * sx, ys.min() * sy, (ys.max() + 1) * sy
    pad = margin * max(x1 - x0, y1 - y0)
    box = (int(max(0, x0 - pad)), int(max(0, y0 - pad)), int(min(w, np.ceil(x1 + pad))), int(min(h, np.ceil(y1 + pad))))
    # work at about twice the output size: enough for a clean downscale, cheap for big photos
    scale = min(1.0, 2 * size / max(box[2] - box[0], box[3] - box[1]))
    crop_size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
    crop = image.crop(box).resize(crop_size, Image.BILINEAR)
    matte = Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L").resize((w, h), Image.BILINEAR)
    matte = matte.crop(box).resize(crop_size, Image.BILINEAR)
    composed = Image.composite(crop, Image.new("RGB", crop_size, background), matte)
    return ImageOps.pad(composed, (size, size), Image.BILINEAR, color=background)


FOREGROUND_VERSION = "fg2"  # names the pixel cache of foreground crops; bump when foreground_square changes


def pixel_transform(preprocess: str):
    """(transform, cache key) for :func:`lookalike.data.pixel_cache.catalog_pixels`: (None, "") for
    ``pad`` (its own default), (:func:`foreground_square`, ``fg1``) for ``foreground``."""
    if preprocess == "pad":
        return None, ""
    if preprocess == "foreground":
        return foreground_square, FOREGROUND_VERSION
    raise ValueError(f"unknown preprocessing {preprocess!r}; choose from {', '.join(PREPROCESS)}")


def to_pixels(img, image_size: int, preprocess: str = "pad") -> np.ndarray:
    """PIL RGB image -> (S, S, 3) uint8: ``pad`` = the whole photo padded to a square on white (like
    the catalog grids; models before format 2), ``foreground`` = :func:`foreground_square`."""
    if preprocess == "foreground":
        return np.asarray(foreground_square(img, image_size), dtype=np.uint8)
    if preprocess != "pad":
        raise ValueError(f"unknown preprocessing {preprocess!r}; choose from {', '.join(PREPROCESS)}")
    return np.asarray(resize_square(img, image_size, "pad"), dtype=np.uint8)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(n, S, S, 3) uint8 -> (n, 3, S, S) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def decode_latents(net: nn.Module, latent: int, z: np.ndarray) -> np.ndarray:
    """Latent vectors (n, latent) -> (n, S, S, 3) uint8 images through ``net.decode_logits``."""
    z = torch.as_tensor(np.atleast_2d(np.asarray(z, np.float32)))
    if z.shape[1] != latent:
        raise ValueError(f"latent vectors must have {latent} values, got {z.shape[1]}")
    return to_uint8(torch.sigmoid(net.decode_logits(z)))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(n, 3, S, S) float in [0, 1] -> (n, S, S, 3) uint8."""
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------- saved models
class LoadedModel:
    """A trained model plus its config, ready for inference (eval mode, CPU)."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        if not (self.dir / WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"no trained model at {self.dir} (train one with `lookalike train autoencoder`)")
        self.config = json.loads((self.dir / CONFIG_FILE).read_text())
        self.arch = self.config["arch"]
        self.image_size = int(self.config["image_size"])
        self.latent = int(self.config["latent"])
        self.preprocess = self.config.get("preprocess", "pad")  # format < 2: the padded photo
        self.decoder = self.config.get("decoder", "transpose")  # format < 3: transposed convolutions
        self.width = int(self.config.get("width", 32))  # format < 4: 32 channels in the first stage
        self.encoder_input = self.config.get("encoder_input", "pixels")  # format < 5: pixels
        self.net = build_model(self.arch, self.image_size, self.latent, self.decoder, self.width, self.encoder_input)
        self.net.load_state_dict(torch.load(self.dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        self.net.eval()
        self.weights_hash = hashlib.sha256((self.dir / WEIGHTS_FILE).read_bytes()).hexdigest()[:12]

    @classmethod
    def open(cls, kind: str, name: str, home=None) -> "LoadedModel":
        return cls(model_dir(kind, name, home))

    @torch.no_grad()
    def posterior(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 pixels -> (µ or code, log σ² or None) as float32 numpy arrays."""
        x = to_tensor(pixels)
        if self.net.variational:
            mu, logvar = self.net.posterior(x)
            return mu.numpy().astype(np.float32), logvar.numpy().astype(np.float32)
        return self.net.encode(x).numpy().astype(np.float32), None

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(n, latent) -> (n, S, S, 3) uint8 images."""
        return decode_latents(self.net, self.latent, z)


def pixel_epsilon(pixels: np.ndarray, latent: int, seed: int = 0) -> np.ndarray:
    """A fixed standard-normal ε per image, seeded by a hash of its pixels (and the model seed):
    the same image always lands on the same z, whichever batch or process encodes it."""
    out = np.empty((len(pixels), latent), np.float32)
    for i, p in enumerate(pixels):
        digest = hashlib.blake2b(np.ascontiguousarray(p).tobytes(), digest_size=8).digest()
        rng = np.random.default_rng([int.from_bytes(digest, "little"), seed])
        out[i] = rng.standard_normal(latent, dtype=np.float32)
    return out


# ----------------------------------------------------------------------------- Encoder wrappers
class AutoencoderEncoder(Encoder):
    """An ``ae:NAME`` / ``vae:NAME[@mode]`` encoder over a trained model."""

    def __init__(self, model: LoadedModel, kind: str, name: str, mode: str = "mu"):
        if mode not in VAE_MODES:
            raise ValueError(f"unknown VAE retrieval mode {mode!r}; choose from {', '.join(VAE_MODES)}")
        if mode != "mu" and not model.net.variational:
            raise ValueError(f"retrieval mode @{mode} needs a VAE; {kind}:{name} is a plain autoencoder")
        self.model = model
        self.mode = mode
        self.name = str(EncoderSpec(kind, name, None if mode == "mu" else mode))
        self.image_size = model.image_size
        self.dim = model.latent * (2 if mode in ("loglik", "sym") else 1)
        # The likelihood modes are served by lookalike.index.scored (numpy), not by faiss.
        self.metric = {"loglik": "loglik", "sym": "loglik-sym"}.get(mode, "l2")
        self.seed = int(model.config.get("seed", 0))

    def preprocess(self, image) -> np.ndarray:
        return to_pixels(image, self.image_size, self.model.preprocess)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        mu, logvar = self.model.posterior(batch)
        if self.mode == "mu":
            return mu
        if self.mode == "z":
            eps = pixel_epsilon(batch, self.model.latent, self.seed)
            return (mu + np.exp(0.5 * logvar) * eps).astype(np.float32)
        return np.concatenate([mu, logvar], axis=1).astype(np.float32)

    def fingerprint(self) -> str:
        suffix = "" if self.model.preprocess == "pad" else f"+{self.model.preprocess}"  # unchanged for old models
        return f"{self.name}#{self.model.weights_hash}{suffix}"


def _factory(kind: str):
    def make(spec: EncoderSpec, home=None, catalog=None, mode: str | None = None, **options) -> Encoder:
        if not spec.name:
            raise ValueError(f"{kind} encoders need a model name: {kind}:NAME")
        model = LoadedModel.open(kind, spec.name, home=home)
        return AutoencoderEncoder(model, kind, spec.name, mode=spec.mode or mode or "mu")

    return make


register("ae", "dense or convolutional autoencoder trained on a catalog (ae:NAME)")(_factory("ae"))
register("vae", "convolutional VAE trained on a catalog (vae:NAME, vae:NAME@z|@loglik|@sym)")(_factory("vae"))
