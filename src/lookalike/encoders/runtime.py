"""Run a torch image model with torch or onnxruntime: ONNX export, fp16 / int8 variants, the runner.

``runtime`` (encoder option ``runtime=...`` or ``$LOOKALIKE_RUNTIME``, :data:`RUNTIMES`):

* ``torch``     — eager PyTorch fp32.
* ``onnx``      — onnxruntime fp32 graph exported from the torch module (TorchScript exporter,
  dynamic batch): the same vectors as torch within 1e-4, faster on CPU. Exported on first use.
* ``onnx-fp16`` — weights and activations in float16, inputs/outputs kept float32
  (``onnxruntime.transformers.float16``). Halves the file; on CPUs without fp16 arithmetic it is
  usually *slower* than fp32 (casts), so it is mostly a size option. Converted on first use.
* ``onnx-int8`` — **static** QDQ int8 (``quant_pre_process`` + ``quantize_static``, per-channel
  convolution weights with as many bits (7.7-8) as cannot saturate AVX2's int16 pair sums, see
  :func:`quantize_int8`) calibrated on real
  catalog images, so it cannot be built
  on first use: ``lookalike index`` calibrates one per catalog and encoder on the catalog's own
  images and uses it when it loses at most 0.005 mAP@10 (``ModelRunner(..., int8_model=PATH)``,
  :meth:`lookalike.catalog.Catalog.index`); ``lookalike bench models`` writes the shared variant when
  it is missing (and never replaces one).
  Dynamic int8 is not offered: it turns convolutions into ConvInteger, which ran 4-5x slower than
  torch for conv nets (issue #5 measurements).
* ``auto`` (default) — a fixed rule, :func:`resolve_runtime`: ``onnx`` when onnxruntime is installed,
  else ``torch``. Both give the same vectors, so ``auto`` never changes what an index holds; the
  quantised variants are used when a spec names them, or when a catalog's first index measured its
  own calibrated int8 model good enough (the catalog then passes ``runtime``/``int8_model``).

Variant files live in ``<home>/models/onnx/<key>/<variant>.onnx`` (``key`` names the module and its
weights, e.g. :func:`lookalike.encoders.pretrained.backbone_key`). A runner may also start from an
ONNX file instead of a torch module (``ModelRunner(None, key, size, source=path)``, the ``onnx:``
encoder of lookalike.encoders.byo): ``onnx`` then runs that file as it is, ``onnx-fp16`` is converted
from it on first use, ``onnx-int8`` is calibrated from it by ``lookalike bench models``, and
``torch`` is refused. The runner's fingerprint names
the variant for fp16/int8 only: fp32 through onnxruntime gives the same vectors as torch, so
switching between them needs no re-index.

onnxruntime and onnx are the optional extra ``lookalike[onnx]``; :func:`onnx_available` says
whether they are installed. They are imported inside the functions that need them (an optional
extra), so torch alone is enough for the ``torch`` runtime.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from lookalike.config import model_dir, torch_threads
from lookalike.data.artifacts import atomic_path

VARIANTS = ("onnx", "onnx-fp16", "onnx-int8")
RUNTIMES = ("auto", "torch", *VARIANTS)
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
    path = Path(path)
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

    def __init__(self, images: np.ndarray, batch: int = 16, input_name: str = INPUT_NAME,
                 progress: Callable[[int], None] | None = None):
        self._batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])
        self._input_name = input_name
        self._progress, self._pending = progress, 0

    def get_next(self):
        if self._progress and self._pending:   # the previous batch has run through the model
            self._progress(self._pending)
        chunk = next(self._batches, None)
        self._pending = 0 if chunk is None else len(chunk)
        return None if chunk is None else {self._input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self):  # pragma: no cover - not used by the MinMax calibrator
        pass


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration: np.ndarray,
                  input_name: str | None = None, keep_fp32: Sequence[str] = (),
                  keep_first_conv: bool = True, progress: Callable[[int], None] | None = None) -> Path:
    """Static QDQ int8, calibrated (MinMax) on ``calibration`` — a stack of preprocessed real images,
    (n, c, s, s) float32 (or whatever layout the model's input ``input_name`` takes; default: the
    model's first input). Quantisation ranges come from these images, so use ones that look like the
    catalog (a few dozen to a few hundred). Raises ValueError when ``calibration`` is empty.

    Every option is set explicitly so the file does not depend on onnxruntime's defaults: asymmetric
    uint8 activations, symmetric int8 per-channel weights, MinMax ranges.

    **Convolution weights: as many bits as cannot saturate** (:func:`conv_weight_scales`). x86 CPUs
    without VNNI (AVX2 only) run onnxruntime's fused u8 x s8 QLinearConv with ``vpmaddubsw``, which
    adds the products of two neighbouring input channels in *saturating int16*: with full 8-bit
    weights a pair of large same-sign weights times large activation codes overflows (measured on
    this project's AVX2 EPYC: lowest cosine to fp32 0.75 on the fine-tuned Lite0), which is why
    onnxruntime recommends ``reduce_range`` (7-bit weights) — but 7 bits were the whole int8 loss
    (test mAP@10 −0.013; 16-bit weights: −0.0006). So each output channel's scale is the finest that
    keeps every pair sum within int16 *given the largest activation code each input channel reached
    on the calibration images* (an extra fp32 pass over them), and never finer than 8-bit MinMax:
    most channels get 7.7-8 bits, no pair can saturate on the calibration data, and the kernels stay
    the same. Depthwise convolutions (not the pair-summing GEMM) simply get 8 bits. On VNNI CPUs the
    bound is merely conservative. Other weights (MatMul/Gemm) keep ``reduce_range`` (7 bits).
    Every convolution's bias then absorbs the mean shift its rounded weights cause (empirical bias
    correction, Nagel et al., ICCV 2019, from the same pass). Measured in docs/fine-tuning.md,
    "int8 settings".

    ``keep_fp32``: nodes whose name contains any of these strings stay in fp32 (onnxruntime's
    ``nodes_to_exclude``) — for small, sensitive layers such as a projection head after the pooling,
    whose few FLOPs int8 would not speed up but whose rounding moves every vector.

    ``keep_first_conv``: the graph's first convolution (a CNN's stem, reading the pixels) stays fp32
    too — the standard mixed-precision choice of keeping the first layer at higher precision (e.g.
    Zhou et al., DoReFa-Net, 2016; Choi et al., PACT, 2018). Measured per layer (a layer-sensitivity
    sweep: everything int8 but one block) on the fine-tuned Lite0's validation items, the stem was by
    far the most sensitive layer (RMS error of pairwise similarities 0.0255 -> 0.0177 kept fp32; the
    last 1x1 conv, block 0, 1, 15: <= 0.0233) for a few per cent of the FLOPs (3 input channels:
    int8 gains little there). docs/fine-tuning.md, "int8 settings".

    ``progress(n)``: called as each batch of ``n`` calibration images has run through the model
    (the long part: a progress bar's advance).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("int8 quantisation needs calibration images")
    if input_name is None:
        input_name = _graph_inputs(onnx.load(str(src), load_external_data=False))[0]
    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(calibration, input_name=input_name,
                                                                      progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        excluded = [node.name for node in model.graph.node if any(part in node.name for part in keep_fp32)]
        convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
        if keep_first_conv and convs and convs[0] not in excluded:
            excluded.append(convs[0])
        overrides = conv_weight_scales(model, calibration, input_name, skip=excluded)
        onnx.save(model, str(prepared))   # with the corrected biases
        quantize_static(str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=True, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=excluded,
                        # no CalibMaxIntermediateOutputs: onnxruntime's MinMax calibrator *drops* the
                        # batches collected when that cap is reached (only the last partial group is
                        # used; a multiple of it raises "No data is collected"). The augmented model
                        # keeps only per-tensor min/max per batch, so memory stays small anyway.
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "TensorQuantOverrides": overrides})
    return Path(dst)


INT16_MAX = 32767


def conv_weight_scales(model, calibration: np.ndarray, input_name: str, skip: Sequence[str] = (),
                       batch: int = 16, correct_bias: bool = True) -> dict:
    """Per-output-channel int8 scales of every Conv weight of ``model`` (an onnx ModelProto, fp32),
    as onnxruntime ``TensorQuantOverrides`` (``{weight: [{"axis": 0, "scale", "zero_point": 0}, ...]}``),
    for :func:`quantize_int8`. Nodes named in ``skip`` (kept fp32) get none.

    Depthwise convolutions: 8-bit symmetric MinMax, ``max|w| / 127``. Every other convolution:
    ``max(max|w| / 127, B / (32767 - 255))`` where ``B`` is the largest sum, over the pairs of
    weights that AVX2's ``vpmaddubsw`` adds in int16, of ``code_max[c] * |w|`` for same-sign weights
    (an opposite-sign pair stays within ±255·128), ``code_max[c]`` being the largest uint8
    activation code input channel ``c`` reached on ``calibration`` under the per-tensor MinMax
    range quantize_int8 gives that input; the 255 leaves room for weight rounding. The pairs are
    neighbouring channels of one filter tap (channels-last im2col order, checked against
    onnxruntime 1.32's fused kernel); for an odd channel count per group (a stem on RGB) the bound
    takes the two largest products of the filter, which covers any pairing.

    ``correct_bias``: also subtract each convolution's expected rounding shift from its bias
    initializer (:func:`_correct_bias`) — this *modifies* ``model`` in place; save it before
    quantising it.
    """
    from onnx import numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv" and node.name not in skip
             and len(node.input) > 1 and node.input[1] in weights]
    grouped = [node for node in convs if not _is_depthwise(node, weights)]
    code_max, means = _channel_statistics(model, [node.input[0] for node in convs], calibration, input_name, batch)
    overrides = {}
    for node in convs:
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        w_max = np.abs(w).reshape(len(w), -1).max(axis=1)
        scale = np.where(w_max > 0, w_max, 1.0) / 127.0
        if node in grouped:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            bound = _pair_sum_bound(w, code_max[node.input[0]], group)
            scale = np.maximum(scale, bound / (INT16_MAX - 255))
        overrides[node.input[1]] = [{"axis": 0, "scale": np.float32(s), "zero_point": np.int8(0)} for s in scale]
        if correct_bias and len(node.input) > 2 and node.input[2] in weights:
            _correct_bias(weights[node.input[2]], w, scale, means[node.input[0]])
    return overrides


def _correct_bias(bias, w: np.ndarray, scale: np.ndarray, mean: np.ndarray) -> None:
    """Empirical bias correction (Nagel et al., "Data-Free Quantization Through Weight Equalization
    and Bias Correction", ICCV 2019, section 4.2): rounding the weights shifts each output channel's
    expected value by ``sum((w_q - w) * E[x])``; subtract that from the bias initializer ``bias``
    (in place). ``w``: (O, C/group, kh, kw) fp32 weights; ``scale``: (O,) their int8 scales;
    ``mean``: (C,) mean of each input channel on the calibration images (zero padding ignored)."""
    from onnx import numpy_helper

    out_channels, per_group = w.shape[:2]
    step = scale[:, None, None, None]
    error = (np.clip(np.round(w / step), -127, 127) * step - w).sum(axis=(2, 3))    # (O, C/group)
    group = len(mean) // per_group
    mean = mean.reshape(group, per_group)[np.arange(out_channels) // (out_channels // group)]
    shift = (error * mean).sum(axis=1)
    corrected = numpy_helper.to_array(bias).astype(np.float64) - shift
    bias.CopyFrom(numpy_helper.from_array(corrected.astype(np.float32), bias.name))


def _is_depthwise(node, weights) -> bool:
    """A Conv whose every filter sees one input channel (``group`` = channels): depthwise."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return group > 1 and tuple(weights[node.input[1]].dims)[1] == 1


def _channel_statistics(model, tensors: Sequence[str], calibration: np.ndarray, input_name: str,
                        batch: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """For each tensor (n, c, ...) of ``model`` over ``calibration``: the largest uint8 code per
    channel c, quantised with the tensor's own MinMax range (zero included) as onnxruntime's MinMax
    calibration sets it (``{name: (c,) float64 in [0, 255]}``), and the mean per channel (fp32
    values, ``{name: (c,) float64}``)."""
    import onnx
    import onnxruntime as ort

    tensors = sorted(set(tensors))
    if not tensors:
        return {}, {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the tensors as named
    if torch_threads():
        options.intra_op_num_threads = torch_threads()
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low, high, total, count = {}, {}, {}, {}
    for start in range(0, len(calibration), batch):
        chunk = np.ascontiguousarray(calibration[start:start + batch], dtype=np.float32)
        for name, x in zip(tensors, session.run(tensors, {input_name: chunk})):
            axes = tuple(i for i in range(x.ndim) if i != 1)
            lo, hi, sums = x.min(axis=axes), x.max(axis=axes), x.sum(axis=axes, dtype=np.float64)
            low[name] = np.minimum(low[name], lo) if name in low else lo
            high[name] = np.maximum(high[name], hi) if name in high else hi
            total[name] = total.get(name, 0.0) + sums
            count[name] = count.get(name, 0) + x.size // x.shape[1]
    codes, means = {}, {name: total[name] / count[name] for name in tensors}
    for name in tensors:
        lo, hi = min(float(low[name].min()), 0.0), max(float(high[name].max()), 0.0)
        scale = max(hi - lo, 1e-12) / 255.0
        zero = round(-lo / scale)
        codes[name] = np.clip(np.ceil(high[name].astype(np.float64) / scale) + zero, 0, 255)
    return codes, means


def _pair_sum_bound(w: np.ndarray, code_max: np.ndarray, group: int) -> np.ndarray:
    """(O,) largest |sum| of one int16 pair ``code_max[c] * w`` per output channel, in weight units
    (see :func:`conv_weight_scales`). ``w``: (O, C/group, kh, kw); ``code_max``: (C,)."""
    out_channels, per_group = w.shape[:2]
    codes = code_max.reshape(group, per_group)[np.arange(out_channels) // (out_channels // group)]
    products = w * codes[:, :, None, None]                      # (O, C/g, kh, kw), signed
    flat = products.transpose(0, 2, 3, 1).reshape(out_channels, -1)   # channels-last: (kh, kw, c)
    bounds = []
    for part in (np.clip(flat, 0, None), np.clip(-flat, 0, None)):   # same-sign pairs only
        if per_group % 2 == 0:
            bounds.append((part[:, 0::2] + part[:, 1::2]).max(axis=1))
        else:   # pairing unknown across taps: the two largest products
            top = np.sort(part, axis=1)[:, -2:] if part.shape[1] > 1 else part
            bounds.append(top.sum(axis=1))
    return np.maximum(*bounds)


def _graph_inputs(model) -> list[str]:
    """Names of a model's real inputs (initializers listed as inputs by old exporters excluded)."""
    initializers = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def build_variant(module, variant: str, path: str | os.PathLike, image_size: int,
                  calibration: np.ndarray | None = None, source: str | os.PathLike | None = None,
                  keep_fp32: Sequence[str] = (), progress: Callable[[int], None] | None = None) -> Path:
    """Write ``variant`` of ``module`` to ``path`` (fp32 export first, then convert). With ``source``
    (an fp32 ONNX file) and ``module=None`` the conversions start from that file instead.
    ``keep_fp32``, ``progress`` (calibration images done): int8 only, see :func:`quantize_int8`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant == "onnx-int8" and calibration is None:
        raise ValueError("onnx-int8 needs calibration images")
    if module is None and source is None:
        raise ValueError("build_variant needs a torch module or a source ONNX file")
    path = Path(path)
    if variant == "onnx" and module is not None:
        return export_onnx(module, path, image_size)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(path) as out:
        fp32 = Path(source) if module is None else export_onnx(module, Path(tmp) / "fp32.onnx", image_size)
        if variant == "onnx":
            shutil.copyfile(fp32, out)
        elif variant == "onnx-fp16":
            convert_fp16(fp32, out)
        else:
            quantize_int8(fp32, out, calibration, keep_fp32=keep_fp32, progress=progress)
    return path


class OnnxModel:
    """An onnxruntime session over one model file: ``model(batch)`` -> (n, d) float32 (the first
    output, or the one named ``output``; a float16 input is fed float16)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, output: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        threads = threads or torch_threads()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads sleep instead of spinning: spinning burnt ~25% more CPU per image
        # while decode threads shared the cores (ingest), for no gain in a model-only loop.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self._input_dtype = np.float16 if self.session.get_inputs()[0].type == "tensor(float16)" else np.float32
        self._outputs = [output] if output else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=self._input_dtype)
        return np.asarray(self.session.run(self._outputs, {self.input_name: batch})[0], dtype=np.float32)

    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def resolve_runtime(runtime: str | None) -> str:
    """``runtime`` (None = ``auto``) -> the runtime to use. ``auto`` is the fixed rule ``onnx`` when
    onnxruntime is installed, else ``torch`` (same vectors either way). ValueError for an unknown
    runtime; RuntimeError for an ONNX runtime without onnxruntime installed."""
    runtime = (runtime or "auto").lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnx" if onnx_available() else "torch"
    if runtime != "torch" and not onnx_available():
        raise RuntimeError(f"runtime {runtime!r} needs onnxruntime: pip install 'lookalike[onnx]'")
    return runtime


def variants_dir(key: str, home=None) -> Path:
    """Folder of the ONNX variants of the model named ``key``: ``<home>/models/onnx/<key>/``."""
    return model_dir("onnx", key, home)


class ModelRunner:
    """``runner(batch (n, c, s, s) float32) -> (n, d) float32``: ``module`` run with torch or with
    its ONNX variant ``<variants_dir(key, home)>/<runtime>.onnx`` (exported on first use, except
    int8, see the module docstring). Thread-safe; picklable (the session is rebuilt after unpickling,
    e.g. on ray workers).

    ``module=None, source=PATH``: the model is an fp32 ONNX file; ``runtime=onnx`` (and ``auto``)
    runs it in place, fp16/int8 variants are derived from it, ``torch`` raises ValueError. The
    batch then has whatever layout and output the file's graph has (``(n, d)`` or more dimensions)."""

    def __init__(self, module, key: str, image_size: int, *, runtime: str | None = None, home=None,
                 source: str | os.PathLike | None = None, output: str | None = None,
                 int8_model: str | os.PathLike | None = None):
        if module is None and source is None:
            raise ValueError("ModelRunner needs a torch module or an ONNX source file")
        self.module = module.eval() if module is not None else None
        self.source = Path(source) if source is not None else None
        self.key, self.image_size, self.output = key, image_size, output
        self.folder = variants_dir(key, home)
        self.runtime = resolve_runtime(runtime)
        if self.module is None and self.runtime == "torch":
            raise ValueError(f"{self.source} is an ONNX model: it runs with runtime onnx, onnx-fp16 or "
                             f"onnx-int8, not torch")
        # an int8 file calibrated elsewhere (a catalog's own, lookalike.catalog): used by runtime
        # onnx-int8 instead of the shared variant, and named by its content in the fingerprint
        self.int8_model = Path(int8_model) if int8_model else None
        if self.int8_model is not None and not self.int8_model.is_file():
            raise FileNotFoundError(f"int8 model not found: {self.int8_model}")
        self._session = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_session"], state["_lock"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The ONNX file this runner uses (meaningless for ``torch``)."""
        if self.module is None and self.runtime == "onnx":
            return self.source
        if self.runtime == "onnx-int8" and self.int8_model is not None:
            return self.int8_model
        return self.folder / f"{self.runtime}.onnx"

    def _onnx_session(self) -> "OnnxModel":
        with self._lock:
            if self._session is None:
                if not self.path.exists():
                    if self.runtime == "onnx-int8":  # needs calibration images from a catalog
                        raise FileNotFoundError(
                            f"{self.path} is missing: build the int8 variant with `lookalike bench models`")
                    build_variant(self.module, self.runtime, self.path, self.image_size, source=self.source)
                self._session = OnnxModel(self.path, output=self.output)
        return self._session

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.runtime == "torch":
            with torch.inference_mode():
                return self.module(torch.from_numpy(batch)).numpy()
        return self._onnx_session()(batch)

    def fingerprint(self) -> str:
        """Part of the encoder fingerprint: empty for fp32 (torch and onnxruntime agree);
        ``runtime=onnx-int8`` (plus ``int8=<content hash>`` for a catalog-calibrated file: another
        calibration gives other vectors) or ``runtime=onnx-fp16``."""
        if self.runtime in ("torch", "onnx"):
            return ""
        if self.runtime == "onnx-int8" and self.int8_model is not None:
            return f"runtime={self.runtime} int8={_file_digest(self.int8_model)}"
        return f"runtime={self.runtime}"


def _file_digest(path: Path) -> str:
    """First 16 hex digits of the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# -- what every encoder that runs a model through a ModelRunner does -------------------------------
def use_thread_setting() -> None:
    """Apply ``$LOOKALIKE_THREADS`` to torch's intra-op threads (onnxruntime sessions read it in
    :class:`OnnxModel`); every model-running encoder calls it on construction."""
    if torch_threads():
        torch.set_num_threads(torch_threads())


def check_runtime(runtime: str | None, default: str = "auto") -> str:
    """A ``runtime=`` option, lower-cased (None: ``default``); ValueError naming the choices for an
    unknown one. (Whether it can run is :func:`resolve_runtime`'s and :class:`ModelRunner`'s question.)"""
    runtime = (runtime or default).lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    return runtime


def trained_model_runtime(spec, options: dict, train_command: str) -> str | None:
    """For a ``kind:NAME[,runtime=...]`` encoder of a trained model (``metric:``, ``finetuned:``): checks
    the spec names the model (``train_command`` trains one), has no ``@mode`` and no option but
    ``runtime`` (ValueError otherwise), and returns that runtime, else ``$LOOKALIKE_RUNTIME``
    (None: the ``auto`` rule of :func:`resolve_runtime`)."""
    if not spec.name:
        raise ValueError(f"name the trained model: {spec.kind}:NAME (see `{train_command}`)")
    if spec.mode:
        raise ValueError(f"{spec.kind} encoders have no retrieval modes (got @{spec.mode})")
    options = {**spec.options, **options}
    runtime = options.pop("runtime", None)
    if options:
        raise ValueError(f"unknown {spec.kind} encoder options: {', '.join(options)} (runtime=...)")
    return runtime or os.environ.get("LOOKALIKE_RUNTIME")
