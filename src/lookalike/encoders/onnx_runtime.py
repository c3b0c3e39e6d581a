"""Export image encoders to ONNX, make fp16 / int8 variants, and run them with onnxruntime.

Variants (``VARIANTS``):

* ``onnx``      — fp32 graph exported from the torch module (TorchScript exporter, dynamic batch).
* ``onnx-fp16`` — weights and activations in float16, inputs/outputs kept float32
  (``onnxruntime.transformers.float16``). Halves the file; on CPUs without fp16 arithmetic it is
  usually *slower* than fp32 (casts), so it is mostly a size option.
* ``onnx-int8`` — **static** QDQ int8 (``quant_pre_process`` + ``quantize_static``, per-channel
  7-bit weights, see :func:`quantize_int8`) calibrated on real catalog images. Dynamic int8 is not offered: it turns convolutions
  into ConvInteger, which ran 4-5x slower than torch for conv nets (issue #5 measurements).

onnxruntime and onnx are the optional extra ``lookalike[onnx]``; :func:`onnx_available` says
whether they are installed, and callers fall back to torch when they are not.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from lookalike.config import torch_threads
from lookalike.data.artifacts import atomic_path

VARIANTS = ("onnx", "onnx-fp16", "onnx-int8")
INPUT_NAME, OUTPUT_NAME = "pixels", "features"
OPSET = 17


def onnx_available() -> bool:
    """True when onnxruntime and onnx can be imported (the ``[onnx]`` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except Exception:  # ImportError, or a protobuf mismatch inside onnx
        return False
    return True


def export_onnx(module, path: str | os.PathLike, image_size: int, channels: int = 3) -> Path:
    """Export a torch module mapping (n, c, s, s) float32 -> (n, d) to an ONNX file (batch dynamic)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    dummy = torch.zeros(2, channels, image_size, image_size)
    with atomic_path(path) as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation + constant-folding notices
        torch.onnx.export(module, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return path


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """fp16 weights/compute with float32 inputs and outputs, so callers need not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return Path(dst)


class _Calibration:
    """Feeds calibration batches to ``quantize_static`` (an ``onnxruntime`` CalibrationDataReader)."""

    def __init__(self, images: np.ndarray, batch: int = 16):
        self._batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

    def get_next(self):
        chunk = next(self._batches, None)
        return None if chunk is None else {INPUT_NAME: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self):  # pragma: no cover - not used by the MinMax calibrator
        pass


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration: np.ndarray) -> Path:
    """Static QDQ int8, calibrated (MinMax) on ``calibration`` — a stack of preprocessed real images,
    (n, c, s, s) float32. Quantisation ranges come from these images, so use ones that look like the
    catalog (a few dozen to a few hundred). Raises ValueError when ``calibration`` is empty.

    Every option is set explicitly so the file does not depend on onnxruntime's defaults: asymmetric
    uint8 activations, symmetric int8 per-channel weights, MinMax ranges. ``reduce_range=True``
    (7-bit weights) is what keeps int8 exact on x86 CPUs without VNNI (AVX2 only): their u8 x s8
    kernels add pairs of products in saturating int16, and full 8-bit weights overflow it once
    onnxruntime fuses the QDQ pairs into QLinearConv (``ORT_ENABLE_ALL``). Measured on the test's
    small conv net with onnxruntime 1.20.1 and 1.32.0 alike on an AVX2-only EPYC: 8-bit weights
    kept the top-1 neighbour of 79 % of queries, 7-bit weights of 100 % (the unfused graph: 100 %
    either way). On VNNI CPUs 7-bit weights cost a negligible amount of precision.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("int8 quantisation needs calibration images")
    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(calibration)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=True, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return Path(dst)


def build_variant(module, variant: str, path: str | os.PathLike, image_size: int,
                  calibration: np.ndarray | None = None) -> Path:
    """Write ``variant`` of ``module`` to ``path`` (fp32 export first, then convert)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant == "onnx-int8" and calibration is None:
        raise ValueError("onnx-int8 needs calibration images")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if variant == "onnx":
        return export_onnx(module, path, image_size)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(module, Path(tmp) / "fp32.onnx", image_size)
        out = Path(tmp) / "variant.onnx"
        if variant == "onnx-fp16":
            convert_fp16(fp32, out)
        else:
            quantize_int8(fp32, out, calibration)
        shutil.move(str(out), path)  # atomic-ish: a half-written file never has the final name
    return path


class OnnxModel:
    """An onnxruntime session over one model file: ``model(batch)`` -> (n, d) float32."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        threads = threads or torch_threads()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float32)

    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6
