"""``finetuned:NAME`` — an EfficientNet-Lite (Lite0, Lite1 or Lite2: the model's ``backbone``) whose
last blocks were trained on a catalog, end to end
with its projection head (``lookalike train finetune``, on labels, or ``lookalike train adapt``,
self-supervised). One kind for both: the model folder says how it was trained.

A model is a folder ``<home>/models/finetuned/<name>/`` with ``config.json`` (written by
:class:`lookalike.train.finetune.Finetuned`), ``weights.pt`` (the whole network's state dict) and
``report.json`` / ``loss.png``. The network maps preprocessed pixels (n, 3, s, s) float32 at the
backbone's native side s (224 / 240 / 260 for lite0 / lite1 / lite2; centre crop, ImageNet
normalisation: :func:`lookalike.encoders.pretrained.preprocess_image`) to
unit vectors: the projection head's output (``output="head"``) or the pooled 1280-d backbone
features (``output="backbone"``, what a self-supervised model serves: SimCLR, Chen et al. 2020,
retrieves with the representation before its projector).

It runs through :class:`lookalike.encoders.runtime.ModelRunner` like the pretrained backbone:
``finetuned:NAME,runtime=onnx`` (fp32, the ``auto`` choice when onnxruntime is installed) or
``runtime=onnx-int8`` (calibrated at training time on the catalog's own images).

Test-time augmentation (``tta``): ``flip`` embeds every image and its mirror image and serves the
normalised mean of the two unit vectors (:func:`flip_average`; the standard horizontal-flip TTA of
image retrieval, e.g. Radenović et al., "Fine-tuning CNN image retrieval with no human annotation",
TPAMI 2018, average multiple views of the query). It costs two network passes per image. ``train
finetune`` chooses it on the validation items with the search re-ranking and records it in
``config.json`` (``"tta"``); ``finetuned:NAME,tta=none`` (or ``tta=flip``) overrides the record.

This module is the inference side (the network classes and the encoder);
:mod:`lookalike.train.finetune` trains and saves models.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lookalike.config import model_dir
from lookalike.encoders import register
from lookalike.encoders.base import Encoder
from lookalike.encoders.metric import ProjectionHead
from lookalike.encoders.pretrained import ARCHS, arch_image_size, load_backbone, preprocess_image
from lookalike.encoders.runtime import ModelRunner, trained_model_runtime, use_thread_setting
from lookalike.encoders.spec import EncoderSpec

KIND = "finetuned"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "weights.pt"
OUTPUTS = ("head", "backbone")
TTAS = ("none", "flip")            # test-time augmentation: the centre crop alone, or averaged with its mirror
BACKBONES = tuple(ARCHS)           # lite0 | lite1 | lite2


def n_blocks(net: nn.Module) -> int:
    """Number of MBConv blocks of an EfficientNet (16 for Lite0)."""
    return len(net._blocks)


def run_prefix(net: nn.Module, pixels: torch.Tensor, cut: int) -> torch.Tensor:
    """Activations entering block ``cut``: stem + blocks ``[0, cut)`` (``cut = -1``: the pixels)."""
    if cut < 0:
        return pixels
    x = net._swish(net._bn0(net._conv_stem(pixels)))
    for block in net._blocks[:cut]:
        x = block(x, drop_connect_rate=_drop_rate(net, block))
    return x


def run_tail(net: nn.Module, x: torch.Tensor, cut: int) -> torch.Tensor:
    """Blocks ``[cut, end)`` + head convolution + average pooling -> (n, 1280) (not normalised);
    ``run_tail(run_prefix(x, c), c)`` is the whole backbone for every ``c``."""
    if cut < 0:
        x, cut = net._swish(net._bn0(net._conv_stem(x))), 0
    for block in net._blocks[cut:]:
        x = block(x, drop_connect_rate=_drop_rate(net, block))
    return net._swish(net._bn1(net._conv_head(x))).mean(dim=(2, 3))


def _drop_rate(net: nn.Module, block: nn.Module) -> float | None:
    # the package's own rule (EfficientNet.extract_features): the rate grows with depth; train mode only
    rate = net._global_params.drop_connect_rate
    if not rate:
        return None
    index = next(i for i, b in enumerate(net._blocks) if b is block)
    return rate * float(index) / len(net._blocks)


class Prefix(nn.Module):
    """The frozen part: pixels -> activations entering block ``cut`` (what training caches)."""

    def __init__(self, net: nn.Module, cut: int):
        super().__init__()
        self.net, self.cut = net, cut

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return run_prefix(self.net, pixels, self.cut)


class Tail(nn.Module):
    """The trained part: activations entering block ``cut`` -> unit vectors (``output`` head or backbone)."""

    def __init__(self, net: nn.Module, head: ProjectionHead, cut: int, output: str = "head",
                 freeze_bn: bool = False):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be head or backbone, not {output!r}")
        self.net, self.head, self.cut, self.output = net, head, cut, output
        self.freeze_bn = freeze_bn
        self.channels_last = False     # training sets it with the weights' layout (faster CPU convolutions)

    def train(self, mode: bool = True) -> "Tail":
        """``freeze_bn``: the backbone's BatchNorm layers stay in eval mode while training — they
        normalise with their ImageNet running statistics instead of the batch's, and do not update
        them (their scale and shift still learn). EfficientNet-Lite's BatchNorm momentum is 0.01,
        so a short fine-tune otherwise serves running statistics that lag the trained weights (and
        were gathered on training crops, not the served centre crops). The projection head's own
        BatchNorm is new and trains normally."""
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return run_tail(self.net, x, self.cut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """What training optimises: always the projection head's unit vectors."""
        return self.head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder serves: the head's vectors, or the unit pooled backbone features."""
        features = self.features(x)
        return self.head(features) if self.output == "head" else F.normalize(features, dim=1)


class FinetunedNet(nn.Module):
    """Pixels (n, 3, s, s) float32 -> (n, dim) unit vectors: the whole network the encoder runs
    (and exports to ONNX)."""

    def __init__(self, net: nn.Module, head: ProjectionHead, output: str = "head"):
        super().__init__()
        self.tail = Tail(net, head, -1, output)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tail.embed(pixels)


def build_network(head_config: dict, output: str = "head", backbone: str = "lite0") -> FinetunedNet:
    """An untrained-head network over ImageNet EfficientNet-Lite weights (the starting point);
    ``backbone`` lite0 | lite1 | lite2 (ValueError otherwise; ImportError naming the package when
    its weights are not installed)."""
    return FinetunedNet(load_backbone(arch=backbone).net, ProjectionHead(**head_config), output)


def load_network(folder: Path) -> tuple[FinetunedNet, dict]:
    """(network in eval mode, config.json) of a saved model. FileNotFoundError when there is none."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
        raise FileNotFoundError(f"no fine-tuned model in {folder}; train one with `lookalike train finetune` "
                                "or `lookalike train adapt`")
    config = json.loads((folder / CONFIG_FILE).read_text())
    # models saved before the backbone option are Lite0
    network = build_network(config["head"], config.get("output", "head"), config.get("backbone", "lite0"))
    network.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return network.eval(), config


def flip_average(run, pixels: np.ndarray) -> np.ndarray:
    """Flip test-time augmentation: ``run`` (a function (n, 3, s, s) float32 pixels -> (n, d) vectors)
    on ``pixels`` and on their mirror images (width axis reversed), each row scaled to unit length,
    summed and scaled to unit length again -> (n, d) float32."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    total = np.zeros((len(pixels), 0), np.float32)
    for view in (pixels, np.ascontiguousarray(pixels[..., ::-1])):
        vectors = np.asarray(run(view), np.float32)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        total = vectors if total.shape[1] == 0 else total + vectors
    return (total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def check_tta(value: str | None) -> str:
    """``value`` as a test-time augmentation name (None -> ``"none"``); ValueError for an unknown one."""
    value = "none" if value in (None, "") else str(value).lower()
    if value not in TTAS:
        raise ValueError(f"tta must be one of {', '.join(TTAS)}, not {value!r}")
    return value


def identity(folder: Path) -> str:
    """Short hash of the weights and config: names the ONNX variants and the encoder fingerprint."""
    digest = hashlib.sha256()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        digest.update((Path(folder) / name).read_bytes())
    return digest.hexdigest()[:16]


def runner_key(name: str, folder: Path) -> str:
    """Folder name of the model's ONNX variants under ``<home>/models/onnx/``."""
    return f"{KIND}-{name}-{identity(folder)}"


class FinetunedEncoder(Encoder):
    """A fine-tuned (or adapted) network, centre crop at its backbone's native side, run with torch
    or onnxruntime; ``tta`` ``flip`` also runs the mirror image and averages (None: what the model
    recorded in ``config.json``, ``none`` for models without a record)."""

    metric = "cosine"

    def __init__(self, name: str, home=None, runtime: str | None = None, tta: str | None = None):
        use_thread_setting()
        folder = model_dir(KIND, name, home)
        self.model_name = name
        self.network, self.config = load_network(folder)
        self.resize = self.config.get("resize", "crop")
        self.image_size = arch_image_size(self.config.get("backbone", "lite0"))
        self.key = runner_key(name, folder)
        self.runner = ModelRunner(self.network, self.key, self.image_size, runtime=runtime, home=home)
        self.name = str(EncoderSpec(KIND, name))
        self.dim = int(self.config["dim"])
        self.tta = check_tta(tta if tta is not None else self.config.get("tta"))

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return preprocess_image(image, self.image_size, self.resize)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        if self.tta == "flip":
            return flip_average(self.runner, batch)
        vectors = self.runner(np.ascontiguousarray(batch, dtype=np.float32))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # unit already; int8 drifts slightly
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def fingerprint(self) -> str:
        tta = " tta=flip" if self.tta != "none" else ""   # models without TTA keep their old fingerprint
        return f"{KIND}/v1 {self.model_name} key={self.key} resize={self.resize}{tta} {self.runner.fingerprint()}".strip()


@register(KIND, "EfficientNet-Lite fine-tuned on a catalog (lookalike train finetune / adapt); "
                "finetuned:NAME[,runtime=...][,tta=none|flip]")
def _finetuned(spec: EncoderSpec, home=None, catalog=None, **options) -> FinetunedEncoder:
    """``finetuned:NAME``, ``finetuned:NAME,runtime=onnx-int8`` (see encoders.runtime),
    ``finetuned:NAME,tta=none`` (override the model's recorded test-time augmentation)."""
    tta = options.pop("tta", spec.options.get("tta"))
    rest = EncoderSpec(spec.kind, spec.name, spec.mode, {k: v for k, v in spec.options.items() if k != "tta"})
    runtime = trained_model_runtime(rest, options, "lookalike train finetune")
    encoder = FinetunedEncoder(spec.name, home=home, runtime=runtime, tta=check_tta(tta) if tta is not None else None)
    encoder.name = str(spec)
    return encoder
