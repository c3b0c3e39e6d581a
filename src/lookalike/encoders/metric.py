"""``metric:NAME`` — EfficientNet-Lite0 features through a projection head trained on catalog labels.

A model is a folder ``<home>/models/metric/<name>/`` with ``config.json``, one ``head-<i>.pt``
per group and, for per-group models, ``router.joblib``: a logistic regression on backbone features
that picks the group of any image. Per-group vectors are block vectors: group ``g`` writes its head's
unit vector into block ``g`` and zeros elsewhere, so the cosine between items of different groups
is 0 and a plain cosine index searches within the item's own group first.

This module is the inference side (the ``ProjectionHead`` network, ``MetricModel.load`` and the
encoder); :class:`lookalike.train.metric.MetricHeads` fits and saves models.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import joblib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lookalike.config import model_dir
from lookalike.encoders import register
from lookalike.encoders.base import Encoder
from lookalike.encoders.pretrained import IMAGE_SIZE, backbone_runner, preprocess_image
from lookalike.encoders.runtime import trained_model_runtime, use_thread_setting
from lookalike.encoders.spec import EncoderSpec

CONFIG_FILE, ROUTER_FILE = "config.json", "router.joblib"


class ProjectionHead(nn.Module):
    """Backbone features -> unit-length embedding. ``hidden=0``: one linear layer (after a
    standardising BatchNorm); otherwise a two-layer MLP."""

    def __init__(self, in_dim: int, dim: int = 256, hidden: int = 0, dropout: float = 0.2):
        super().__init__()
        self.config = {"in_dim": in_dim, "dim": dim, "hidden": hidden, "dropout": dropout}
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim), nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = hidden
        layers.append(nn.Linear(in_dim, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features), dim=1)



class MetricModel:
    """Trained heads (+ group router) applied to pooled backbone features, as saved in a model folder."""

    def __init__(self, heads: dict[str, ProjectionHead], config: dict, router=None, folder: Path | None = None):
        self.heads = heads
        self.groups = list(heads)
        self.config = config
        self.router = router
        self.folder = folder
        self.head_dim = next(iter(heads.values())).config["dim"]
        self.dim = self.head_dim * len(self.groups)

    @property
    def per_group(self) -> bool:
        return len(self.groups) > 1

    def route(self, features: np.ndarray) -> np.ndarray:
        """Group index of every row (0 for single-group models)."""
        if not self.per_group:
            return np.zeros(len(features), np.int64)
        predicted = self.router.predict(np.asarray(features, np.float32))
        lookup = {g: i for i, g in enumerate(self.groups)}
        return np.array([lookup[str(p)] for p in predicted], np.int64)

    def embed(self, features: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """(n, in_dim) backbone features -> (n, dim) vectors; ``groups`` overrides the router."""
        features = np.asarray(features, np.float32)
        groups = self.route(features) if groups is None else np.asarray(groups, np.int64)
        out = np.zeros((len(features), self.dim), np.float32)
        with torch.inference_mode():
            for g, name in enumerate(self.groups):
                rows = np.flatnonzero(groups == g)
                if len(rows):
                    vectors = self.heads[name](torch.from_numpy(features[rows])).numpy()
                    out[rows, g * self.head_dim:(g + 1) * self.head_dim] = vectors
        return out

    @classmethod
    def load(cls, folder: Path) -> "MetricModel":
        if not (folder / CONFIG_FILE).exists():
            raise FileNotFoundError(f"no metric model in {folder}; train one with `lookalike train metric`")
        config = json.loads((folder / CONFIG_FILE).read_text())
        heads = {}
        for group, filename in config["head_files"].items():
            saved = torch.load(folder / filename, map_location="cpu", weights_only=True)
            head = ProjectionHead(**saved["config"])
            head.load_state_dict(saved["state"])
            heads[group] = head.eval()
        router = None
        if len(heads) > 1:
            router = joblib.load(folder / ROUTER_FILE)
        return cls(heads, config, router, folder)

    def identity(self) -> str:
        """Short hash of the saved files: the encoder fingerprint changes when the model does."""
        digest = hashlib.sha256()
        for path in sorted(self.folder.iterdir()) if self.folder else []:
            if path.suffix in (".pt", ".joblib", ".json") and path.name != "report.json":
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


class MetricEncoder(Encoder):
    """Backbone (torch or onnxruntime, see :mod:`lookalike.encoders.runtime`) + trained heads."""

    metric = "cosine"

    def __init__(self, name: str, home=None, runtime: str | None = None):
        use_thread_setting()
        self.model_name = name
        self.model = MetricModel.load(model_dir("metric", name, home))
        backbone = self.model.config["backbone"]
        self.resize = backbone.get("resize", "stretch")  # models saved before the key existed stretched
        self.flip = bool(backbone.get("flip", False))
        self.image_size = IMAGE_SIZE
        self.runner = backbone_runner(weights=backbone.get("weights"), pool=backbone.get("pool", "avg"),
                                      runtime=runtime, home=home)
        self.name = str(EncoderSpec("metric", name))
        self.dim = self.model.dim

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return preprocess_image(image, self.image_size, self.resize)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        features = self.runner(batch)
        if self.flip:
            features = (features + self.runner(np.ascontiguousarray(batch[..., ::-1]))) / 2
        return self.model.embed(features)

    def fingerprint(self) -> str:
        return (f"metric/v1 {self.model_name} model={self.model.identity()} resize={self.resize} "
                f"flip={int(self.flip)} backbone={self.runner.fingerprint()}")


@register("metric", "projection head trained on catalog labels (lookalike train metric); metric:NAME[,runtime=...]")
def _metric(spec: EncoderSpec, home=None, catalog=None, **options) -> MetricEncoder:
    """``metric:NAME`` or ``metric:NAME,runtime=onnx-int8`` (backbone runtime, see encoders.runtime)."""
    runtime = trained_model_runtime(spec, options, "lookalike train metric")
    encoder = MetricEncoder(spec.name, home=home, runtime=runtime)
    encoder.name = str(spec)
    return encoder
