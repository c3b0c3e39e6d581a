"""Run the EfficientNet-Lite0 backbone with torch or onnxruntime, picking the variant.

``runtime`` (encoder option ``runtime=...`` or ``$LOOKALIKE_RUNTIME``):

* ``torch``      — eager PyTorch fp32.
* ``onnx``       — onnxruntime fp32 (same vectors as torch within 1e-4; faster on CPU).
* ``onnx-fp16`` / ``onnx-int8`` — the quantised variants (fp16 is converted on first use; int8 is
  calibrated on catalog images by ``lookalike bench models``, which must have been run first).
* ``auto`` (default) — the variant ``lookalike bench models`` chose for this backbone: the fastest
  whose mAP@10 drop against torch fp32 is at most ``QUALITY_THRESHOLD``. Before any benchmark:
  ``onnx`` when onnxruntime is installed, else ``torch``.

ONNX files live in ``<home>/models/onnx/<backbone-key>/<variant>.onnx``; fp32 is exported on
first use (a few seconds). The fingerprint names the variant for fp16/int8 only: fp32 through
onnxruntime gives the same vectors as torch, so switching between them needs no re-index.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from lookalike.config import model_dir

RUNTIMES = ("auto", "torch", "onnx", "onnx-fp16", "onnx-int8")
# Largest mAP@10 drop (absolute, against torch fp32 on the same items) a variant may cost and still
# be chosen by runtime=auto.
QUALITY_THRESHOLD = 0.005
CHOICE_FILE = "choice.json"


def backbone_key(weights: str | os.PathLike | None, pool: str) -> str:
    from lookalike.encoders.pretrained import default_weights_path, file_identity

    return f"effnet-lite0-{file_identity(Path(weights) if weights else default_weights_path())}-{pool}"


def variants_dir(weights, pool: str, home=None) -> Path:
    """``model_dir("onnx", <backbone key>, home)``: the backbone's ONNX variants and the benchmark's choice."""
    return model_dir("onnx", backbone_key(weights, pool), home)


def read_choice(folder: Path) -> str | None:
    path = folder / CHOICE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get("variant")
    except (OSError, ValueError):
        return None


def write_choice(folder: Path, variant: str, details: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CHOICE_FILE).write_text(json.dumps({"variant": variant, **details}, indent=2))


def resolve_runtime(runtime: str | None, folder: Path) -> str:
    from lookalike.encoders.onnx_runtime import onnx_available

    runtime = (runtime or "auto").lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime == "auto":
        if not onnx_available():
            return "torch"
        chosen = read_choice(folder)
        if chosen and (chosen in ("torch", "onnx") or (folder / f"{chosen}.onnx").exists()):
            return chosen
        return "onnx"
    if runtime != "torch" and not onnx_available():
        raise RuntimeError(f"runtime {runtime!r} needs onnxruntime: pip install 'lookalike[onnx]'")
    return runtime


class BackboneRunner:
    """``runner(batch (n,3,224,224) float32) -> (n,1280) float32`` pooled, unnormalised features."""

    def __init__(self, backbone=None, *, weights=None, pool: str = "avg", runtime: str | None = None,
                 home=None):
        from lookalike.encoders.pretrained import load_backbone

        self.weights, self.pool = weights, pool
        self.backbone = backbone if backbone is not None else load_backbone(weights, pool)
        self.folder = variants_dir(weights, pool, home)
        self.runtime = resolve_runtime(runtime, self.folder)
        self._session = None
        self._lock = threading.Lock()

    def __getstate__(self):  # picklable (e.g. shipped to ray workers): the session is rebuilt there
        state = dict(self.__dict__)
        state["_session"], state["_lock"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _onnx_session(self):
        from lookalike.encoders.pretrained import IMAGE_SIZE
        from lookalike.encoders.onnx_runtime import OnnxModel, build_variant

        with self._lock:
            if self._session is None:
                path = self.folder / f"{self.runtime}.onnx"
                if not path.exists():
                    if self.runtime == "onnx-int8":  # needs calibration images from a catalog
                        raise FileNotFoundError(
                            f"{path} is missing: build the int8 variant with `lookalike bench models`")
                    build_variant(self.backbone, self.runtime, path, IMAGE_SIZE)
                self._session = OnnxModel(path)
        return self._session

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                return self.backbone(torch.from_numpy(batch)).numpy()
        return self._onnx_session()(batch)

    def fingerprint(self) -> str:
        """Part of the encoder fingerprint: empty for fp32 (torch and onnxruntime agree)."""
        return "" if self.runtime in ("torch", "onnx") else f"runtime={self.runtime}"
