"""The torch/ONNX runtime layer: ONNX export and quantised variants agree with torch, runtime
selection is a fixed rule (tests/bench/test_bench_models.py: a benchmark run changes nothing)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from lookalike.encoders.runtime import OnnxModel, build_variant, onnx_available

from fakes import COLOURS, SHAPES, draw_shape

pytestmark = [pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed (extra [onnx])"),
              pytest.mark.usefixtures("one_torch_thread")]
SIZE = 32


class TinyConvEncoder(nn.Module):
    """A small conv net shaped like the real backbone: convs, BN, activation, global pool."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU6())

    def forward(self, x):
        return self.body(x).mean(dim=(2, 3))


def generated_images(n=24, seed=0):
    """Coloured shapes (the shared test drawing), as normalised float arrays."""
    images = []
    for i in range(n):
        shape, colour = SHAPES[i % 3], list(COLOURS.values())[(i // 3) % 3]
        img = draw_shape(shape, colour, size=SIZE, seed=seed + i)
        images.append((np.asarray(img, np.float32) / 255.0 - 0.5).transpose(2, 0, 1) / 0.25)
    return np.stack(images).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return TinyConvEncoder().eval()


def torch_features(model, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def test_onnx_fp32_matches_torch(model, tmp_path):
    x = generated_images()
    path = build_variant(model, "onnx", tmp_path / "m.onnx", SIZE)
    onnx_out = OnnxModel(path, threads=1)(x)
    assert onnx_out.shape == (len(x), 32)
    assert np.allclose(onnx_out, torch_features(model, x), atol=1e-4, rtol=1e-4)
    assert np.allclose(OnnxModel(path, threads=1)(x[:1]), onnx_out[:1], atol=1e-5)  # dynamic batch


def _top1(vectors):
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


@pytest.mark.parametrize("variant", ["onnx-fp16", "onnx-int8"])
def test_quantised_variant_loads_and_ranks_top1_like_fp32(model, tmp_path, variant):
    x = generated_images(24, seed=0)
    calibration = generated_images(32, seed=100)  # other images than the queries
    path = build_variant(model, variant, tmp_path / f"{variant}.onnx", SIZE, calibration)
    quantised = OnnxModel(path, threads=1)(x)
    reference = torch_features(model, x)
    assert quantised.shape == reference.shape and np.isfinite(quantised).all()
    cos = (quantised * reference).sum(1) / np.linalg.norm(quantised, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() > 0.98, cos.min()
    query = 0  # a sample query: its nearest neighbour is the same item under both models
    assert _top1(quantised)[query] == _top1(reference)[query]
    assert np.mean(_top1(quantised) == _top1(reference)) >= 0.9


def test_int8_needs_calibration(model, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        build_variant(model, "onnx-int8", tmp_path / "q.onnx", SIZE, None)
    with pytest.raises(ValueError, match="unknown ONNX variant"):
        build_variant(model, "onnx-int4", tmp_path / "q.onnx", SIZE)


def test_runtime_auto_is_a_fixed_rule(tmp_path):
    """auto = onnx fp32 when onnxruntime is installed; no file (not even a benchmark's old
    choice.json next to an int8 variant) changes that."""
    from lookalike.encoders.runtime import resolve_runtime, variants_dir

    assert resolve_runtime("auto") == "onnx" and resolve_runtime(None) == "onnx"
    folder = variants_dir("some-backbone", tmp_path)
    folder.mkdir(parents=True)
    (folder / "choice.json").write_text(json.dumps({"variant": "onnx-int8"}))  # written by older versions
    (folder / "onnx-int8.onnx").write_bytes(b"x")
    assert resolve_runtime("auto") == "onnx"
    assert resolve_runtime("torch") == "torch" and resolve_runtime("ONNX-INT8") == "onnx-int8"
    with pytest.raises(ValueError, match="unknown runtime"):
        resolve_runtime("tensorrt")


def test_trained_model_specs_share_one_runtime_option(monkeypatch):
    """metric:NAME / finetuned:NAME take one option, runtime=, else $LOOKALIKE_RUNTIME (one helper)."""
    from lookalike.encoders.runtime import check_runtime, trained_model_runtime
    from lookalike.encoders.spec import EncoderSpec

    monkeypatch.delenv("LOOKALIKE_RUNTIME", raising=False)
    assert trained_model_runtime(EncoderSpec.parse("metric:shop"), {}, "lookalike train metric") is None
    assert trained_model_runtime(EncoderSpec.parse("metric:shop,runtime=onnx-int8"), {}, "x") == "onnx-int8"
    monkeypatch.setenv("LOOKALIKE_RUNTIME", "torch")
    assert trained_model_runtime(EncoderSpec.parse("finetuned:shop"), {}, "x") == "torch"
    assert trained_model_runtime(EncoderSpec.parse("finetuned:shop"), {"runtime": "onnx"}, "x") == "onnx"
    for spec, words in [("metric", "name the trained model: metric:NAME (see `lookalike train metric`)"),
                        ("finetuned:shop@z", "finetuned encoders have no retrieval modes"),
                        ("metric:shop,colour=0.2", "unknown metric encoder options: colour (runtime=...)")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            trained_model_runtime(EncoderSpec.parse(spec), {}, "lookalike train metric")
    assert check_runtime(None, default="onnx") == "onnx" and check_runtime("ONNX-FP16") == "onnx-fp16"
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        check_runtime("tensorrt")


def test_model_runner_exports_on_first_use_and_names_quantised_variants(model, tmp_path):
    from lookalike.encoders.runtime import ModelRunner

    x = generated_images(4)
    onnx = ModelRunner(model, "tiny-conv", SIZE, runtime="onnx", home=tmp_path)
    assert not onnx.path.exists()
    assert np.allclose(onnx(x), torch_features(model, x), atol=1e-4)
    assert onnx.path == tmp_path / "models" / "onnx" / "tiny-conv" / "onnx.onnx" and onnx.path.exists()
    assert onnx.fingerprint() == ModelRunner(model, "tiny-conv", SIZE, runtime="torch").fingerprint() == ""
    fp16 = ModelRunner(model, "tiny-conv", SIZE, runtime="onnx-fp16", home=tmp_path)
    assert fp16.fingerprint() == "runtime=onnx-fp16"
    with pytest.raises(FileNotFoundError, match="bench models"):
        ModelRunner(model, "tiny-conv", SIZE, runtime="onnx-int8", home=tmp_path)(x)


@pytest.mark.slow  # 14-50 s here; the ONNX export/agreement tests above cover the runtimes on a tiny net
def test_effnet_encoder_runtimes_agree(tmp_path):
    from lookalike.encoders import get_encoder

    images = [draw_shape("circle", rgb, 96, seed=i) for i, rgb in enumerate(COLOURS.values())]
    torch_enc = get_encoder("effnet-lite0", home=tmp_path, runtime="torch")
    onnx_enc = get_encoder("effnet-lite0", home=tmp_path, runtime="onnx")
    fp16_enc = get_encoder("effnet-lite0", home=tmp_path, runtime="onnx-fp16")
    reference = torch_enc.encode(images)
    assert np.allclose(onnx_enc.encode(images), reference, atol=1e-4)
    assert np.allclose(fp16_enc.encode(images), reference, atol=1e-2)
    # fp32 on either runtime gives the same vectors: same fingerprint, no re-index when switching
    assert onnx_enc.fingerprint() == torch_enc.fingerprint()
    assert "runtime=onnx-fp16" in fp16_enc.fingerprint()
    with pytest.raises(FileNotFoundError, match="bench models"):
        get_encoder("effnet-lite0", home=tmp_path, runtime="onnx-int8").encode(images)


def test_encoder_with_onnx_session_pickles(tmp_path):
    import pickle

    from lookalike.encoders import get_encoder

    encoder = get_encoder("effnet-lite0", home=tmp_path, runtime="onnx")
    image = [draw_shape("square", (200, 30, 30), 64)]
    before = encoder.encode(image)  # the session now exists
    copy = pickle.loads(pickle.dumps(encoder))
    assert np.allclose(copy.encode(image), before, atol=1e-6)



class TinyWithHead(nn.Module):
    """TinyConvEncoder + a linear head after the pooling (like finetuned:NAME's projection head)."""

    def __init__(self):
        super().__init__()
        self.body = TinyConvEncoder()
        torch.manual_seed(1)
        self.head = nn.Linear(32, 8)

    def forward(self, x):
        return self.head(self.body(x))


def test_int8_keeps_the_named_layers_in_fp32(tmp_path):
    import onnx

    model = TinyWithHead().eval()
    calibration = generated_images(32, seed=100)
    whole = build_variant(model, "onnx-int8", tmp_path / "all.onnx", SIZE, calibration)
    kept = build_variant(model, "onnx-int8", tmp_path / "kept.onnx", SIZE, calibration, keep_fp32=("/head/",))

    def head_weight_quantised(path):  # a QDQ model feeds the Gemm/MatMul from a DequantizeLinear
        graph = onnx.load(str(path)).graph
        producers = {out: node.op_type for node in graph.node for out in node.output}
        heads = [node for node in graph.node if "/head/" in node.name and node.op_type in ("Gemm", "MatMul")]
        assert heads, [node.name for node in graph.node]
        return any(producers.get(name) == "DequantizeLinear" for node in heads for name in node.input)

    assert head_weight_quantised(whole) and not head_weight_quantised(kept)
    x = generated_images(24, seed=0)
    reference = torch_features(model, x)
    err = lambda path: np.abs(OnnxModel(path, threads=1)(x) - reference).max()  # noqa: E731
    assert np.isfinite(err(kept)) and err(kept) <= err(whole) * 1.5  # the convs are still int8
    assert any(node.op_type == "DequantizeLinear" for node in onnx.load(str(kept)).graph.node)


def test_int8_keeps_the_stem_in_fp32(tmp_path):
    """The graph's first convolution (the stem, reading the pixels) keeps fp32 weights and float
    arithmetic unless ``keep_first_conv=False``; every later convolution is int8, and the fused int8
    kernels still compute what the unfused QDQ graph computes."""
    import onnx
    import onnxruntime as ort

    from lookalike.encoders.runtime import export_onnx, quantize_int8

    model = TinyConvEncoder().eval()
    calibration = generated_images(32, seed=100)
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", SIZE)
    kept = quantize_int8(fp32, tmp_path / "kept.onnx", calibration)
    every = quantize_int8(fp32, tmp_path / "every.onnx", calibration, keep_first_conv=False)

    def quantised_convs(path):  # a QDQ conv reads its weight from a DequantizeLinear
        graph = onnx.load(str(path)).graph
        producers = {out: node.op_type for node in graph.node for out in node.output}
        convs = [node for node in graph.node if node.op_type == "Conv"]
        assert len(convs) == 3
        return [producers.get(node.input[1]) == "DequantizeLinear" for node in convs]

    assert quantised_convs(kept) == [False, True, True]
    assert quantised_convs(every) == [True, True, True]
    x = generated_images(16, seed=50)
    reference = torch_features(model, x)
    err = lambda path: np.abs(OnnxModel(path, threads=1)(x) - reference).max()  # noqa: E731
    assert err(kept) <= err(every) * 1.5 and err(kept) <= 0.05 * np.abs(reference).max()
    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(kept), options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    assert np.abs(outputs[0] - outputs[1]).max() <= 0.02 * np.abs(reference).max()


def test_int8_calibration_uses_every_batch(model, tmp_path):
    """Every calibration image counts (a run of batches that drops the early ones, as onnxruntime's
    CalibMaxIntermediateOutputs does, gives the same model whatever those images were — and raises
    when the batch count is a multiple of its cap)."""
    import onnx
    from onnx import numpy_helper

    calibration = generated_images(80, seed=3)   # 5 batches of 16
    wider = calibration.copy()
    wider[:16] *= 4.0                             # only the first batch differs
    build_variant(model, "onnx-int8", tmp_path / "four.onnx", SIZE, calibration[:64])  # 4 batches: no error
    scales = []
    for name, data in (("a", calibration), ("b", wider)):
        path = build_variant(model, "onnx-int8", tmp_path / f"{name}.onnx", SIZE, data)
        graph = onnx.load(str(path)).graph
        scales.append(np.concatenate([numpy_helper.to_array(t).ravel() for t in graph.initializer
                                      if t.name.endswith("_scale")]))
    assert scales[0].shape == scales[1].shape and not np.allclose(scales[0], scales[1])


def test_int8_calibration_reports_progress(model, tmp_path):
    """Calibration is long work: every calibration image is reported once, as its batch is done."""
    calibration = generated_images(40, seed=3)
    done = []
    build_variant(model, "onnx-int8", tmp_path / "q.onnx", SIZE, calibration, progress=done.append)
    assert sum(done) == 40 and len(done) == 3 and max(done) == 16   # batches of 16


def test_int8_keeps_8_bit_depthwise_weights_and_at_least_7_bit_others(model, tmp_path):
    """Depthwise convolutions (not the saturating pair-summing GEMM) get all 8 bits; the others as
    many as cannot saturate (at least 7: reduce_range)."""
    import onnx
    from onnx import numpy_helper

    path = build_variant(model, "onnx-int8", tmp_path / "q.onnx", SIZE, generated_images(32, seed=4))
    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights = {n.output[0]: values[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] in values and values[n.input[0]].dtype == np.int8}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    depthwise = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(convs) == 3 and len(depthwise) == 1
    assert convs[0].input[1] not in weights   # the stem stays fp32 (test_int8_keeps_the_stem_in_fp32)
    for node in convs[1:]:
        bits = np.abs(weights[node.input[1]]).max()
        assert bits == 127 if node in depthwise else 63 <= bits <= 127


class PairSaturating(nn.Module):
    """ReLU6 channels 0-7 pinned at 6 (uint8 code 255), channels 8-15 small; a 1x1 conv whose output
    channels 0-3 weigh the pinned channels with large same-sign weights (8-bit weights would
    overflow AVX2's int16 pair sums) and channels 4-7 only the small ones (8 bits are safe)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.first = nn.Conv2d(3, 16, 3, padding=1)
        self.second = nn.Conv2d(16, 8, 1)
        with torch.no_grad():
            self.first.weight.mul_(0.1)
            self.first.bias[:8] = 10.0
            self.first.bias[8:] = 0.0
            self.second.weight.zero_()
            self.second.weight[:4, :8] = 1.0
            self.second.weight[4:, 8:] = 1.0 + torch.rand(4, 8, 1, 1)

    def forward(self, x):
        return self.second(torch.clamp(self.first(x), 0, 6)).mean(dim=(2, 3))


def test_int8_weights_get_every_bit_that_cannot_saturate(tmp_path):
    """Convolution weights take 8 bits where no int16 pair sum of calibrated activation codes x
    weights can overflow, fewer where it could, and the fused int8 kernels then compute what the
    unfused QDQ graph (float arithmetic, no saturation) computes."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = PairSaturating().eval()
    calibration = generated_images(32, seed=7)
    path = build_variant(model, "onnx-int8", tmp_path / "q.onnx", SIZE, calibration)
    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    second = [n for n in graph.node if n.op_type == "Conv" and "second" in n.name][0]
    q = values[producer[second.input[1]].input[0]].reshape(8, -1)
    peak = np.abs(q).max(axis=1)
    assert (peak[:4] <= 64).all() and (peak[4:] == 127).all(), peak
    x = generated_images(16, seed=50)
    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    reference = torch_features(model, x)
    assert np.abs(outputs[0] - outputs[1]).max() <= 0.02 * np.abs(reference).max()
    assert np.abs(outputs[0] - reference).max() <= 0.05 * np.abs(reference).max()


def test_int8_bias_correction_removes_the_mean_shift_of_rounded_weights():
    """Nagel et al.'s empirical bias correction: the bias absorbs sum((w_q - w) * E[x])."""
    from onnx import numpy_helper

    from lookalike.encoders.runtime import _correct_bias

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 6, 3, 3))
    scale = np.abs(w).reshape(4, -1).max(axis=1) / 7.0        # coarse steps: a visible shift
    mean = rng.uniform(0, 2, size=6)
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    _correct_bias(bias, w, scale, mean)
    step = scale[:, None, None, None]
    rounded = np.clip(np.round(w / step), -127, 127) * step
    x = np.broadcast_to(mean[:, None, None], (6, 3, 3))
    exact = (w * x).sum(axis=(1, 2, 3))
    corrected = (rounded * x).sum(axis=(1, 2, 3)) + numpy_helper.to_array(bias)
    assert np.allclose(corrected, exact, atol=1e-5) and not np.allclose((rounded * x).sum(axis=(1, 2, 3)), exact)
