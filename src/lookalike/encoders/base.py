"""The one interface every encoder implements.

An encoder turns RGB images into float32 vectors. Work is split in two so the indexing pipeline
can overlap them: ``preprocess`` (PIL image -> array, runs in worker threads, must be thread-safe)
and ``encode_batch`` (stacked arrays -> vectors, the model call). ``encode`` does both.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
from PIL import Image


class Encoder(ABC):
    #: registry spec that recreates this encoder, e.g. "effnet-lite0" or "vae:mymodel"
    name: str
    #: length of the vectors it returns
    dim: int
    #: square input side the model wants (pixels); also the JPEG draft size
    image_size: int
    #: the metric its vectors are meant for: "cosine", "l2" or "l1"
    metric: str = "cosine"
    #: trailing values search-time re-ranking (αQE/DBA, lookalike.search.expansion) leaves as
    #: they are: a fused colour part; 0 = the whole vector is one descriptor
    unexpanded_dims: int = 0
    #: how many ``encode_batch`` calls the ingest pipeline may run at once (1: the model's own
    #: threads already fill the cores, as onnxruntime's and torch's intra-op pools do)
    encode_workers: int = 1

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> one array ready to stack into a batch (thread-safe)."""

    @abstractmethod
    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        """Stacked ``preprocess`` outputs -> (n, dim) float32."""

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_batch(np.stack([self.preprocess(im) for im in images]))

    def fingerprint(self) -> str:
        """Changes whenever the vectors would change (weights, options). Stored with every vector so
        a re-index re-embeds items whose vectors came from a different model."""
        return self.name

    def fit(self, vectors: np.ndarray) -> None:  # pragma: no cover - default is stateless
        """Optional catalog-level post-processing learned at index time (e.g. PCA-whitening)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, metric={self.metric!r})"

