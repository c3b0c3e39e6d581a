"""Bring your own model: any image model exported to ONNX, as the encoder ``onnx:/path/model.onnx``.

A CLIP, DINOv2 or SigLIP vision tower, or an in-house network, exported to one ONNX file (how:
docs/byo-model.md, scripts/export_onnx.py), runs through onnxruntime with the same threaded decode,
batching, fingerprint and runtime variants as the built-in encoders::

    onnx:/models/dinov2-s.onnx                                  defaults (below)
    onnx:/models/clip-b32.onnx,mean=clip,std=clip,output=image_embeds
    onnx:/models/net.onnx,size=256,resize=pad,pool=gem          a (n, c, h, w) feature map, pooled
    onnx:/models/vit.onnx,pool=cls                              (n, tokens, d): the first token
    onnx:/models/net.onnx,runtime=onnx-int8                     static int8 (built by `lookalike bench models`)

Options (all optional):

* ``size=S`` — input side in pixels; default the model's own when its input shape is fixed, else 224.
* ``mean=…``, ``std=…`` — per-channel normalisation of RGB pixels scaled to [0, 1]: a preset
  (``imagenet`` (default), ``clip``, ``half`` = 0.5 (SigLIP, Inception), ``none`` = 0 / 1) or three
  numbers joined by ``:`` (``mean=0.5:0.5:0.5``; ``,`` separates options), or one number for all.
* ``resize=crop|pad|stretch`` — how a photo becomes a square (default ``crop``, centre crop).
* ``layout=nchw|nhwc`` — the input layout; default read from the input shape (channels = 3 on
  axis 1 or 3), NCHW when the shape does not say.
* ``output=NAME`` — which graph output holds the embedding (default the first).
* ``pool=none|avg|max|gem|cls`` — how an output with more than (n, d) dimensions becomes a vector:
  ``avg``/``max``/``gem`` over the spatial axes of (n, c, h, w) (or (n, h, w, c) for NHWC models),
  ``avg``/``max``/``cls`` (first token) over the tokens of (n, tokens, d). Required for such
  outputs (ValueError names the shape otherwise).
* ``runtime=auto|onnx|onnx-fp16|onnx-int8`` — ``auto``/``onnx`` run the file itself; ``onnx-fp16``
  is converted on first use; ``onnx-int8`` is the static, catalog-calibrated int8 of
  :func:`lookalike.encoders.runtime.quantize_int8`, written by ``lookalike bench models --encoder
  onnx:…`` (``torch`` is refused: there is no torch module).

Vectors are L2-normalised, metric cosine. The fingerprint holds the model file's content hash, so
replacing the file under the same path re-embeds the catalog on the next ``lookalike index``.

**Paths.** The path is the spec's name, which cannot hold ``,`` ``@`` or ``=`` (they delimit the
spec). Write them percent-encoded: ``%2C`` for ``,``, ``%40`` for ``@``, ``%3D`` for ``=`` and
``%25`` for ``%`` itself (only these four are decoded). ``~`` is expanded; a relative path is read
from the working directory, so store catalogs with absolute paths. Windows paths (``C:\\m\\x.onnx``)
work as they are: only the first ``:`` separates kind and name.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.data.images import resize_square
from lookalike.encoders import register
from lookalike.encoders.base import Encoder
from lookalike.encoders.pretrained import file_identity
from lookalike.encoders.runtime import ModelRunner, OnnxModel, check_runtime, onnx_available
from lookalike.encoders.spec import EncoderSpec

DEFAULT_SIZE = 224
PRESETS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # OpenAI CLIP's preprocessing constants (open_clip / transformers CLIPImageProcessor)
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # SigLIP, Inception: pixels to [-1, 1]
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
POOLS_4D = ("avg", "max", "gem")
POOLS_3D = ("avg", "max", "cls")
OPTIONS = ("size", "mean", "std", "resize", "layout", "output", "pool", "runtime")
_ESCAPES = re.compile(r"%(2C|40|3D|25)", re.IGNORECASE)


def decode_path(name: str) -> Path:
    """The spec's name -> the model path: ``%2C %40 %3D %25`` decoded to ``, @ = %``, ``~`` expanded."""
    return Path(_ESCAPES.sub(lambda m: chr(int(m.group(1), 16)), name)).expanduser()


def encode_path(path: str | Path) -> str:
    """A path -> the spec name that :func:`decode_path` reads back (``onnx:`` + this)."""
    return str(path).replace("%", "%25").replace(",", "%2C").replace("@", "%40").replace("=", "%3D")


def _triplet(value: str, what: str) -> tuple[float, float, float]:
    parts = value.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"onnx encoder: {what}={value!r} is neither a preset ({', '.join(PRESETS)}) "
                         f"nor numbers joined by ':' (e.g. {what}=0.5:0.5:0.5)") from None
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        raise ValueError(f"onnx encoder: {what} needs 1 or 3 finite numbers, got {value!r}")
    if what == "std" and min(numbers) <= 0:
        raise ValueError(f"onnx encoder: std must be positive, got {value!r}")
    return tuple(numbers)


def _normalisation(mean: str, std: str) -> tuple[tuple, tuple]:
    m = PRESETS[mean][0] if mean in PRESETS else _triplet(mean, "mean")
    s = PRESETS[std][1] if std in PRESETS else _triplet(std, "std")
    return m, s


def _dims(value_info) -> list:
    """ONNX shape -> list of ints (fixed) or None (symbolic/unknown)."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def inspect_model(path: Path) -> dict:
    """The model's one image input and its outputs: ``{"input": (name, dims, elem_type), "outputs":
    {name: dims}}`` (dims: int or None). FileNotFoundError / ValueError with the reason otherwise."""
    import onnx  # the [onnx] extra

    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, truncated file, not an ONNX file at all
        raise ValueError(f"cannot read ONNX model {path}: {exc}") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ValueError(f"{path}: an image model takes one input tensor, this one takes {len(inputs)} ({names}); "
                         "export the vision tower alone (docs/byo-model.md)")
    first = inputs[0]
    elem = first.type.tensor_type.elem_type
    return {"input": (first.name, _dims(first), elem),
            "outputs": {o.name: _dims(o) for o in model.graph.output}}


class OnnxEncoder(Encoder):
    """Any ONNX image model: ``preprocess`` (resize, scale to [0, 1], normalise, NCHW/NHWC) ->
    ``runner`` -> optional pooling -> L2-normalised (n, dim) float32, metric cosine.

    Raises FileNotFoundError (no such file), ValueError (an input that is not one 4-d float image
    tensor with 3 channels, a fixed input size other than ``size``, an unknown output, an output
    that is not a vector without ``pool``, a bad option) or RuntimeError (onnxruntime missing).
    """

    metric = "cosine"

    def __init__(self, path: str | Path, *, name: str, size: int | None = None, mean: str = "imagenet",
                 std: str = "imagenet", resize: str = "crop", layout: str | None = None, output: str | None = None,
                 pool: str | None = None, runtime: str | None = None, home=None):
        if not onnx_available():
            raise RuntimeError("the onnx encoder needs onnxruntime and onnx: pip install 'lookalike[onnx]'")
        import onnx  # the [onnx] extra (checked above)

        self.path = Path(path).expanduser().absolute()
        self.name = name
        info = inspect_model(self.path)
        input_name, dims, elem = info["input"]
        if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            raise ValueError(f"{self.path}: input {input_name!r} is {onnx.TensorProto.DataType.Name(elem)}, "
                             "expected float32 or float16 pixels")
        if len(dims) != 4:
            raise ValueError(f"{self.path}: input {input_name!r} has rank {len(dims)} {dims}, expected a 4-d "
                             "image batch (n, 3, h, w) or (n, h, w, 3)")
        self.layout = self._layout(dims, layout, input_name)
        h, w = (dims[2], dims[3]) if self.layout == "nchw" else (dims[1], dims[2])
        if h is not None and w is not None and h != w:
            raise ValueError(f"{self.path}: input {input_name!r} is {h}x{w}; only square inputs are supported")
        fixed = h if h is not None else w
        if size is not None and fixed is not None and int(size) != fixed:
            raise ValueError(f"{self.path}: the model's input is fixed at {fixed}x{fixed}, not size={size}")
        self.image_size = int(size or fixed or DEFAULT_SIZE)
        if not 8 <= self.image_size <= 2048:
            raise ValueError(f"onnx encoder: size must be within 8..2048 pixels, got {self.image_size}")
        self.batch_size = dims[0]  # a fixed batch (many exports fix it at 1) or None (dynamic)
        if resize not in ("crop", "pad", "stretch"):
            raise ValueError(f"onnx encoder: resize must be crop, pad or stretch, not {resize!r}")
        self.resize = resize
        self.mean_name, self.std_name = mean, std
        m, s = _normalisation(mean, std)
        self._mean, self._std = np.array(m, np.float32), np.array(s, np.float32)
        outputs = info["outputs"]
        if output is not None and output not in outputs:
            raise ValueError(f"{self.path}: no output named {output!r}; outputs: {', '.join(outputs)}")
        self.output = output or next(iter(outputs))
        runtime = check_runtime(runtime, default="onnx")
        self.runner = ModelRunner(None, f"byo-{file_identity(self.path)}", self.image_size, runtime=runtime,
                                  home=home, source=self.path, output=self.output)
        # One dummy image through the fp32 file: checks the model runs at this size and gives the
        # output's shape (symbolic in most exports), hence the pooling and the dimension.
        probe = np.zeros((self.batch_size or 1, *self._input_shape()), np.float32)
        try:
            sample = (self.runner if self.runner.runtime == "onnx" else OnnxModel(self.path, output=self.output))(probe)
        except Exception as exc:  # onnxruntime's errors: wrong size for a reshape, a bad graph...
            raise ValueError(f"{self.path}: the model does not run on a {self.layout.upper()} input of "
                             f"{self.image_size}x{self.image_size}: {exc}") from None
        self.pool = self._check_pool(pool, sample.shape)
        self.dim = int(self.pool_output(sample).shape[1])

    # -- validation ------------------------------------------------------------------------------
    def _layout(self, dims: list, layout: str | None, input_name: str) -> str:
        if layout is not None and layout not in ("nchw", "nhwc"):
            raise ValueError(f"onnx encoder: layout must be nchw or nhwc, not {layout!r}")
        channels = {"nchw": dims[1], "nhwc": dims[3]}
        if layout is not None:
            if channels[layout] not in (3, None):
                raise ValueError(f"{self.path}: layout={layout} but input {input_name!r} {dims} has "
                                 f"{channels[layout]} channels there, not 3")
            return layout
        if dims[1] == 3:
            return "nchw"
        if dims[3] == 3:
            return "nhwc"
        if dims[1] is None and dims[3] is None:
            return "nchw"
        raise ValueError(f"{self.path}: input {input_name!r} {dims} has no RGB axis (3 channels on axis 1 "
                         "for NCHW or axis 3 for NHWC)")

    def _check_pool(self, pool: str | None, shape: tuple) -> str:
        rank = len(shape)
        if rank == 2:
            if pool not in (None, "none"):
                raise ValueError(f"{self.path}: output {self.output!r} is already a vector {shape}; drop pool={pool}")
            return "none"
        allowed = {3: POOLS_3D, 4: POOLS_4D}.get(rank)
        if allowed is None:
            raise ValueError(f"{self.path}: output {self.output!r} has shape {shape}; expected (n, d), "
                             "(n, tokens, d) or a feature map (n, c, h, w)")
        what = "(n, tokens, d)" if rank == 3 else "a feature map"
        if pool in (None, "none"):
            raise ValueError(f"{self.path}: output {self.output!r} is {what} of shape {shape}, not a vector: "
                             f"add pool={'|'.join(allowed)} (or output=NAME for another output)")
        if pool not in allowed:
            raise ValueError(f"onnx encoder: pool={pool} does not apply to {what}; choose {', '.join(allowed)}")
        return pool

    def _input_shape(self) -> tuple:
        s = self.image_size
        return (3, s, s) if self.layout == "nchw" else (s, s, 3)

    # -- the Encoder interface -------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> np.ndarray:
        square = resize_square(image.convert("RGB"), self.image_size, self.resize)
        pixels = (np.asarray(square, dtype=np.float32) / 255.0 - self._mean) / self._std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1) if self.layout == "nchw" else pixels)

    def pool_output(self, out: np.ndarray) -> np.ndarray:
        """The model's output (n, …) -> (n, dim) float32 by ``pool`` (not normalised)."""
        out = np.asarray(out, np.float32)
        if self.pool == "none":
            return out.reshape(len(out), -1)
        if out.ndim == 3:
            return out[:, 0] if self.pool == "cls" else (out.mean(axis=1) if self.pool == "avg" else out.max(axis=1))
        axes = (2, 3) if self.layout == "nchw" else (1, 2)
        if self.pool == "gem":  # generalised mean, p = 3 (Radenović et al. 2018), like effnet-lite0's pool=gem
            return np.power(np.power(np.clip(out, 1e-6, None), 3.0).mean(axis=axes), 1.0 / 3.0)
        return out.mean(axis=axes) if self.pool == "avg" else out.max(axis=axes)

    def run_model(self, model, batch: np.ndarray) -> np.ndarray:
        """Preprocessed ``batch`` through ``model`` (this encoder's runner, or another variant of the
        file: any callable batch -> output) in chunks of the file's fixed batch size (padded), then
        pooled: (n, dim) float32, not normalised."""
        batch = np.asarray(batch, np.float32)
        step = self.batch_size or max(len(batch), 1)
        parts = []
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            if self.batch_size and len(chunk) < step:  # a model exported with a fixed batch: pad it
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), np.float32)])
            parts.append(self.pool_output(model(chunk))[: len(batch) - start])
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.run_model(self.runner, batch)
        return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def fingerprint(self) -> str:
        parts = [f"onnx/v1 model={file_identity(self.path)} output={self.output} size={self.image_size}",
                 f"layout={self.layout} mean={':'.join(f'{v:g}' for v in self._mean)}",
                 f"std={':'.join(f'{v:g}' for v in self._std)} resize={self.resize} pool={self.pool}"]
        if self.runner.fingerprint():  # fp16/int8 change the vectors; the file itself is fp32
            parts.append(self.runner.fingerprint())
        return " ".join(parts)


@register("onnx", "your own image model exported to ONNX: onnx:/path/model.onnx[,size=,mean=,std=,output=,pool=]")
def _onnx(spec: EncoderSpec, home=None, catalog=None, **options) -> OnnxEncoder:
    if not spec.name:
        raise ValueError("the onnx encoder needs a model file: onnx:/path/to/model.onnx (docs/byo-model.md)")
    if spec.mode:
        raise ValueError(f"onnx has no retrieval modes (got @{spec.mode}); write '@' in a path as %40")
    settings = {**spec.options, **{k: str(v) for k, v in options.items()}}
    unknown = sorted(set(settings) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown onnx option {unknown[0]!r} ({', '.join(OPTIONS)})")
    if "size" in settings:
        try:
            settings["size"] = int(settings["size"])
        except ValueError:
            raise ValueError(f"onnx encoder: size must be an integer, got {settings['size']!r}") from None
    return OnnxEncoder(decode_path(spec.name), name=str(spec), home=home, **settings)
