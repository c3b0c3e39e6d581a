"""Bring your own model (lookalike.encoders.byo): ``onnx:/path/model.onnx`` on models the tests export
from small torch networks, end to end (index -> search), the same vectors as ``effnet-lite0`` when
EfficientNet-Lite0 itself goes through this path, and clear errors for models that do not fit."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fakes import shape_images
from lookalike.encoders import clear_cache, get_encoder
from lookalike.encoders.runtime import onnx_available

pytestmark = pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed (extra [onnx])")
ROOT = Path(__file__).resolve().parents[2]


class SmallNet(nn.Module):
    """A tiny conv net: (n, 3, s, s) -> (n, 8, s/4, s/4) map, or (n, 8) with ``pooled``; NHWC input
    with ``nhwc``; (n, tokens, 8) with ``tokens``."""

    def __init__(self, pooled=True, nhwc=False, tokens=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.pooled, self.nhwc, self.tokens = pooled, nhwc, tokens

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        maps = self.body(x)
        if self.tokens:
            return maps.flatten(2).transpose(1, 2)
        return maps.mean(dim=(2, 3)) if self.pooled else maps


def export(module, path, shape=(2, 3, 32, 32), dynamic=True, output="embedding"):
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(*shape),), str(path), input_names=["image"],
                          output_names=[output], opset_version=17, dynamo=False,
                          dynamic_axes={"image": {0: "n"}, output: {0: "n"}} if dynamic else None)
    return path


@pytest.fixture(autouse=True)
def fresh_encoders():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module")
def images():
    # portrait photos, so crop, pad and stretch differ
    return [im.resize((40, 64)) for im in shape_images(per_class=1, size=40)[0][:5]]


def test_vector_model_runs_with_its_fixed_size(tmp_path, images):
    path = export(SmallNet(), tmp_path / "net.onnx")
    encoder = get_encoder(f"onnx:{path}", home=tmp_path)
    assert (encoder.image_size, encoder.dim, encoder.layout, encoder.pool) == (32, 8, "nchw", "none")
    vectors = encoder.encode(images)
    assert vectors.shape == (5, 8) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # the same as the torch network on the same preprocessed pixels
    pixels = np.stack([encoder.preprocess(im) for im in images])
    expected = SmallNet()(torch.from_numpy(pixels)).detach().numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(vectors - expected).max() < 1e-5


def test_feature_maps_tokens_and_nhwc(tmp_path, images):
    maps = export(SmallNet(pooled=False), tmp_path / "maps.onnx", dynamic=False, shape=(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"feature map of shape \(1, 8, 8, 8\), not a vector: add pool=avg\|max\|gem"):
        get_encoder(f"onnx:{maps}")
    for pool in ("avg", "max", "gem"):
        encoder = get_encoder(f"onnx:{maps},pool={pool}")
        assert encoder.batch_size == 1 and encoder.encode(images).shape == (5, 8)  # fixed batch 1, looped
    with pytest.raises(ValueError, match="pool=cls does not apply"):
        get_encoder(f"onnx:{maps},pool=cls")

    tokens = export(SmallNet(tokens=True), tmp_path / "tokens.onnx")
    cls = get_encoder(f"onnx:{tokens},pool=cls").encode(images)
    avg = get_encoder(f"onnx:{tokens},pool=avg").encode(images)
    assert cls.shape == avg.shape == (5, 8) and not np.allclose(cls, avg)

    nhwc = export(SmallNet(nhwc=True), tmp_path / "nhwc.onnx", shape=(2, 32, 32, 3))
    encoder = get_encoder(f"onnx:{nhwc}")
    assert encoder.layout == "nhwc" and encoder.preprocess(images[0]).shape == (32, 32, 3)
    # NHWC and NCHW exports of the same weights give the same vectors
    nchw = get_encoder(f"onnx:{export(SmallNet(), tmp_path / 'nchw.onnx')}")
    assert np.abs(encoder.encode(images) - nchw.encode(images)).max() < 1e-5


def test_options_change_vectors_and_fingerprint(tmp_path, images):
    path = export(SmallNet(), tmp_path / "net.onnx")
    base = get_encoder(f"onnx:{path}")
    for option in ("mean=clip,std=clip", "mean=0.5:0.5:0.5,std=half", "resize=pad", "std=0.25"):
        other = get_encoder(f"onnx:{path},{option}")
        assert other.fingerprint() != base.fingerprint(), option
        assert not np.allclose(other.encode(images), base.encode(images)), option
    # a new file under the same path: new fingerprint (the catalog re-embeds)
    before = base.fingerprint()
    export(SmallNet(seed=1), path)
    clear_cache()
    assert get_encoder(f"onnx:{path}").fingerprint() != before


def test_dynamic_size_and_fp16(tmp_path, images):
    path = tmp_path / "dyn.onnx"
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(SmallNet().eval(), (torch.zeros(2, 3, 32, 32),), str(path), input_names=["image"],
                          output_names=["e"], opset_version=17, dynamo=False,
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "e": {0: "n"}})
    assert get_encoder(f"onnx:{path}").image_size == 224  # the default when the model does not fix it
    small = get_encoder(f"onnx:{path},size=48")
    fp16 = get_encoder(f"onnx:{path},size=48,runtime=onnx-fp16", home=tmp_path)
    assert small.image_size == 48 and fp16.fingerprint() == small.fingerprint() + " runtime=onnx-fp16"
    assert np.abs(fp16.encode(images) - small.encode(images)).max() < 1e-2
    assert (tmp_path / "models" / "onnx").is_dir()  # the fp16 variant lives under the home


def test_int8_from_a_calibrated_file(tmp_path, images):
    """``runtime=onnx-int8`` reads the variant ``bench models`` writes; here built directly."""
    from lookalike.encoders.runtime import build_variant

    path = export(SmallNet(), tmp_path / "net.onnx")
    with pytest.raises(FileNotFoundError, match="lookalike bench models"):
        get_encoder(f"onnx:{path},runtime=onnx-int8", home=tmp_path).encode(images)
    clear_cache()
    fp32 = get_encoder(f"onnx:{path}", home=tmp_path)
    calibration = np.stack([fp32.preprocess(im) for im in shape_images(per_class=3, size=40)[0]])
    build_variant(None, "onnx-int8", fp32.runner.folder / "onnx-int8.onnx", 32, calibration, source=path)
    int8 = get_encoder(f"onnx:{path},runtime=onnx-int8", home=tmp_path)
    assert int8.fingerprint().endswith("runtime=onnx-int8")
    cosines = (int8.encode(images) * fp32.encode(images)).sum(axis=1)
    assert cosines.min() > 0.98


@pytest.mark.parametrize("spec, error, match", [
    ("onnx:{missing}", FileNotFoundError, "ONNX model not found"),
    ("onnx", ValueError, "needs a model file"),
    ("onnx:{net},pool=avg", ValueError, "already a vector"),
    ("onnx:{net},size=64", ValueError, "fixed at 32x32, not size=64"),
    ("onnx:{net},output=nope", ValueError, "no output named 'nope'; outputs: embedding"),
    ("onnx:{net},layout=nhwc", ValueError, "layout=nhwc but input 'image'"),
    ("onnx:{net},mean=red", ValueError, "neither a preset"),
    ("onnx:{net},std=0", ValueError, "std must be positive"),
    ("onnx:{net},runtime=torch", ValueError, "not torch"),
    ("onnx:{net},colour=0.2", ValueError, "unknown onnx option 'colour'"),
    ("onnx:{net}@z", ValueError, "no retrieval modes"),
    ("onnx:{text}", ValueError, "cannot read ONNX model"),
    ("onnx:{rank3}", ValueError, "has rank 3"),
    ("onnx:{grey}", ValueError, "no RGB axis"),
    ("onnx:{two}", ValueError, "takes 2"),
])
def test_models_that_do_not_fit_are_refused_clearly(tmp_path, spec, error, match):
    net = export(SmallNet(), tmp_path / "net.onnx")
    text = tmp_path / "text.onnx"
    text.write_text("not a model")

    class Flat(nn.Module):
        def forward(self, x):
            return x.mean(dim=2)

    class Two(nn.Module):
        def forward(self, x, y):
            return (x + y).mean(dim=(2, 3))

    rank3 = export(Flat(), tmp_path / "rank3.onnx", shape=(2, 3, 32), output="e")
    grey = export(SmallNet(), tmp_path / "grey.onnx", shape=(2, 3, 32, 32))
    import onnx

    model = onnx.load(str(grey))  # the same net declared with one channel: no RGB axis
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    onnx.save(model, str(grey))
    two = tmp_path / "two.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Two(), (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)), str(two),
                          input_names=["a", "b"], opset_version=17, dynamo=False)
    paths = dict(missing=tmp_path / "missing.onnx", net=net, text=text, rank3=rank3, grey=grey, two=two)
    with pytest.raises(error, match=match):
        get_encoder(spec.format(**paths))


def test_paths_with_spec_delimiters_are_percent_encoded(tmp_path, images):
    from lookalike.encoders.byo import decode_path, encode_path

    odd = tmp_path / "a,b@c=d%2C e"
    odd.mkdir()
    path = export(SmallNet(), odd / "net.onnx")
    spec = f"onnx:{encode_path(path)},pool=none"
    assert decode_path(encode_path(path)) == path
    encoder = get_encoder(spec)
    assert encoder.name == spec and encoder.path == path
    assert encoder.encode(images).shape == (5, 8)


def test_index_and_search_end_to_end(tmp_path, shapes_folder):
    """A catalog indexed with a BYO model: its own vectors, found back first by search."""
    from lookalike import Catalog

    path = export(SmallNet(), tmp_path / "net.onnx")
    spec = f"onnx:{path},resize=pad"
    cat = Catalog.create("byo", home=tmp_path / "home")
    report = cat.index(shapes_folder, encoder=spec)
    assert report.failed == 0 and report.added > 0
    ids, vectors = cat.vectors(spec)
    assert vectors.shape == (report.added, 8)
    hits = cat.search(ids[3], k=3, encoder=spec)
    assert len(hits) == 3 and ids[3] not in [h.id for h in hits]  # the query item itself is excluded
    # a photo of an item, uploaded: that item first, at distance ~0 (same decode, same model)
    by_image = cat.search(image=cat.get(ids[3]).path, k=3, encoder=spec)
    assert by_image[0].id == ids[3] and by_image[0].score > 0.9999
    again = cat.index(shapes_folder, encoder=spec)
    assert again.unchanged == report.added  # same file, same fingerprint: nothing re-embedded


def test_effnet_lite0_exported_through_this_path_gives_the_builtin_vectors(tmp_path, images):
    """EfficientNet-Lite0's feature map exported to ONNX and pooled by ``pool=avg`` gives the vectors
    of the built-in ``effnet-lite0`` (torch): max |Δ| < 1e-4 on unit vectors."""
    from lookalike.encoders.pretrained import load_backbone

    class Maps(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = load_backbone()

        def forward(self, x):
            return self.backbone.feature_maps(x)

    path = export(Maps(), tmp_path / "lite0.onnx", shape=(1, 3, 224, 224))
    byo = get_encoder(f"onnx:{path},mean=imagenet,std=imagenet,resize=crop,pool=avg", home=tmp_path)
    builtin = get_encoder("effnet-lite0,runtime=torch", home=tmp_path)
    assert byo.dim == builtin.dim == 1280 and byo.image_size == builtin.image_size
    assert np.abs(byo.encode(images) - builtin.encode(images)).max() < 1e-4


def test_export_script_writes_a_model_the_encoder_reads(tmp_path, images):
    """scripts/export_onnx.py (what a user runs where the weights are), torch mode."""
    module = tmp_path / "mynet.py"
    module.write_text("import torch\nfrom torch import nn\n\n"
                      "def build():\n    torch.manual_seed(0)\n"
                      "    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n")
    out = tmp_path / "mynet.onnx"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_onnx.py"), "torch", "mynet:build",
                          str(out), "--size", "64"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "--encoder 'onnx:" in run.stdout
    encoder = get_encoder(f"onnx:{out}")
    assert encoder.image_size == 64 and encoder.encode(images).shape == (5, 4)


def test_cli_index_reports_an_unusable_model_in_one_line(tmp_path, shapes_folder):
    """`lookalike index --encoder onnx:…` with a model that does not fit: exit 1 and the reason, no traceback."""
    from typer.testing import CliRunner

    from lookalike.cli import app

    maps = export(SmallNet(pooled=False), tmp_path / "maps.onnx")
    for spec, reason in [(f"onnx:{tmp_path / 'nope.onnx'}", "ONNX model not found"),
                         (f"onnx:{maps}", "add pool=avg|max|gem")]:
        result = CliRunner().invoke(app, ["index", str(shapes_folder), "--catalog", "c", "--encoder", spec,
                                          "--home", str(tmp_path / "home")])
        assert result.exit_code == 1 and reason in result.output and "Traceback" not in result.output


def test_snapshots_carry_the_byo_model_file(tmp_path, shapes_folder):
    """`lookalike export` of a catalog with an ``onnx:/path`` encoder carries the model file
    (checksummed, listed with the path its spec names); an import where that path lacks the file is
    refused naming the member to put there, and succeeds once it is there. A missing file at export
    is a clear FileNotFoundError, not a snapshot that silently cannot embed queries."""
    import shutil
    import tarfile

    from lookalike import Catalog
    from lookalike.catalog import import_catalog
    from lookalike.data.snapshot import IncompatibleSnapshot

    (tmp_path / "models").mkdir()
    path = export(SmallNet(), tmp_path / "models" / "net.onnx")
    spec = f"onnx:{path}"
    cat = Catalog.create("byo", home=tmp_path / "home")
    assert cat.index(shapes_folder, encoder=spec).failed == 0
    info = cat.export(tmp_path / "byo.tar")
    [carried] = info.manifest["byo_models"]
    assert carried["encoder"] == spec and carried["path"] == str(path)
    assert info.manifest["files"][carried["member"]]["sha256"] == carried["sha256"]

    moved = tmp_path / "elsewhere.onnx"
    shutil.move(path, moved)   # the other machine: no file at the spec's path
    with pytest.raises(FileNotFoundError, match="net.onnx"):
        cat.export(tmp_path / "again.tar")
    with pytest.raises(IncompatibleSnapshot, match=carried["member"].replace(".", r"\.")):
        import_catalog(info.path, tmp_path / "other")
    with tarfile.open(info.path) as tar:   # what the message says to do
        path.write_bytes(tar.extractfile(carried["member"]).read())
    imported = import_catalog(info.path, tmp_path / "other")
    other = Catalog.open(imported.catalog, home=tmp_path / "other")
    assert other.search(image=shapes_folder / "circle-red" / "circle-red-1.png", k=1, encoder=spec)[0].score > 0.999
