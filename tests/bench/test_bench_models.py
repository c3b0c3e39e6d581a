"""``lookalike bench models`` (lookalike.bench.models): the recommendation rule, and a run that
measures every backbone variant while changing nothing that indexing uses."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lookalike.encoders.runtime import onnx_available

pytestmark = pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed (extra [onnx])")


def test_bench_choice_is_fastest_within_the_quality_threshold():
    from lookalike.bench.models import VariantResult, choose_variant

    def result(variant, speed, quality):
        return VariantResult(variant, 10.0, speed, speed, quality, quality, 0.0)

    results = [result("torch", 10, 0.600), result("onnx", 20, 0.600), result("onnx-fp16", 15, 0.599),
               result("onnx-int8", 40, 0.590)]
    assert choose_variant(results, 0.005) == "onnx"  # int8 is fastest but loses 0.010
    assert choose_variant(results, 0.02) == "onnx-int8"
    results[1] = result("onnx", 5, 0.600)
    assert choose_variant(results, 0.005) == "onnx-fp16"


@pytest.mark.slow
def test_bench_models_measures_and_changes_nothing_index_uses(tmp_path, shapes_folder):
    from PIL import Image

    from lookalike import Catalog
    from lookalike.bench.models import bench_models
    from lookalike.encoders import get_encoder
    from lookalike.encoders.pretrained import backbone_key
    from lookalike.encoders.runtime import variants_dir

    home = tmp_path / "home"
    cat = Catalog.create("shapes", home=home)
    cat.index(shapes_folder, encoder="tiny")
    first = cat.index(shapes_folder, encoder="effnet-lite0")  # runtime auto
    encoder = get_encoder("effnet-lite0", home=home)
    before = (encoder.runner.runtime, encoder.fingerprint(), cat.vectors("effnet-lite0")[1].copy())
    folder = variants_dir(backbone_key(), home)
    files_before = sorted(p.name for p in folder.iterdir())

    bench = bench_models(cat, n=27, n_calibration=16, rounds=1)
    assert [r.variant for r in bench.results] == ["torch", "onnx", "onnx-fp16", "onnx-int8"]
    by_name = {r.variant: r for r in bench.results}
    assert by_name["onnx"].max_abs_diff < 1e-3
    assert by_name["onnx-fp16"].size_mb < 0.6 * by_name["onnx"].size_mb
    assert by_name["onnx-int8"].size_mb < 0.4 * by_name["onnx"].size_mb
    assert bench.spec == f"effnet-lite0:runtime={bench.chosen}"
    report = cat.artifacts_dir / "bench-models"
    assert json.loads((report / "report.json").read_text())["spec"] == bench.spec
    assert (report / "report.png").stat().st_size > 0
    # The home gains only the int8 variant it lacked; nothing it already had changed.
    assert sorted(p.name for p in folder.iterdir()) == sorted(files_before + ["onnx-int8.onnx"])
    assert bench.installed_int8 == str(folder / "onnx-int8.onnx")
    int8_bytes = (folder / "onnx-int8.onnx").read_bytes()

    # What indexing uses is unchanged: same runtime, fingerprint and vectors, nothing re-embedded.
    from lookalike.encoders import _CACHE

    _CACHE.clear()
    encoder = get_encoder("effnet-lite0", home=home)
    assert (encoder.runner.runtime, encoder.fingerprint()) == before[:2]
    again = cat.index(shapes_folder, encoder="effnet-lite0")
    assert again.embedded == 0 and first.embedded == len(cat)
    assert np.array_equal(cat.vectors("effnet-lite0")[1], before[2])
    # The recommended spec works, and a second run never replaces the home's int8 variant.
    red = Image.new("RGB", (64, 64), "red")
    assert get_encoder("effnet-lite0,runtime=onnx-int8", home=home).encode([red]).shape == (1, 1280)
    assert get_encoder(bench.spec, home=home).encode([red]).shape == (1, 1280)
    bench_models(cat, n=27, n_calibration=8, rounds=1, seed=1)
    assert (folder / "onnx-int8.onnx").read_bytes() == int8_bytes


def test_bench_models_of_a_bring_your_own_onnx_model(tmp_path, shapes_folder):
    """``--encoder onnx:FILE``: no torch row (the file is the fp32 reference), fp16/int8 derived from
    the file, preprocessed and pooled as the encoder does; the int8 it installs is what
    ``onnx:FILE,runtime=onnx-int8`` then reads."""
    import warnings

    import torch

    from lookalike import Catalog
    from lookalike.bench.models import bench_models
    from lookalike.encoders import clear_cache, get_encoder

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU()).eval()  # a feature map
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 48, 48),), str(path), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "n"}}, opset_version=17)
    home = tmp_path / "home"
    cat = Catalog.create("shapes", home=home)
    cat.index(shapes_folder, encoder="tiny")
    spec = f"onnx:{path},pool=avg"
    bench = bench_models(cat, n=27, n_calibration=16, rounds=1, encoder=spec)
    assert [r.variant for r in bench.results] == ["onnx", "onnx-fp16", "onnx-int8"]
    by_name = {r.variant: r for r in bench.results}
    assert by_name["onnx"].max_abs_diff == 0 and by_name["onnx-fp16"].max_abs_diff < 1e-2
    assert bench.spec == f"{spec},runtime={bench.chosen}"
    clear_cache()
    int8 = get_encoder(f"{spec},runtime=onnx-int8", home=home)
    assert bench.installed_int8 == str(int8.runner.path)
    assert int8.encode([]).shape == (0, 8)
    with pytest.raises(ValueError, match="effnet-lite0/1/2 backbones and onnx"):
        bench_models(cat, n=27, encoder="tiny")
