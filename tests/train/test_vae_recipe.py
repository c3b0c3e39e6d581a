"""The latent explorer's VAE recipe (formats 2-3): foreground crops, perceptual and feature-matching
losses, free bits, time budget, the upsample decoder, and format-1/2 models that still load as they were
trained. Tiny generated images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lookalike.encoders.autoencoder import LoadedModel, to_pixels, to_tensor
from lookalike.train.autoencoder import (
    FORMAT_VERSION, LEGACY, LEGACY_2, VAE_RECIPE, Autoencoder, AutoencoderConfig, batch_loss, reconstructions,
)
from lookalike.encoders.autoencoder import build_model
from lookalike.train.losses import FeatureMatchLoss, PerceptualLoss

from fakes import shape_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 16


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.stack([to_pixels(im, SIZE, "foreground") for im in shape_images(per_class=3)[0]])


@pytest.fixture(scope="module")
def perceptual() -> PerceptualLoss:
    return PerceptualLoss()


def test_the_vae_recipe_is_the_default_and_plain_autoencoders_keep_theirs():
    vae, conv = AutoencoderConfig(arch="vae"), AutoencoderConfig(arch="conv")
    assert (vae.image_size, vae.preprocess, vae.perceptual, vae.free_bits, vae.time_budget) == (
        96, "foreground", VAE_RECIPE["perceptual"], VAE_RECIPE["free_bits"], VAE_RECIPE["time_budget"])
    assert vae.latent == 16  # one slider per dimension
    assert (conv.image_size, conv.preprocess, conv.perceptual, conv.time_budget) == (64, "pad", 0.0, None)
    with pytest.raises(ValueError, match="preprocessing"):
        AutoencoderConfig(arch="vae", preprocess="blur")
    with pytest.raises(ValueError, match="hybrid"):
        AutoencoderConfig(arch="hybrid", perceptual=1.0)


def test_perceptual_loss_is_zero_for_the_same_image_and_pulls_a_different_one(perceptual, pixels):
    x = to_tensor(pixels[:4])
    assert perceptual(x, x).abs().max() < 1e-6
    other = x.flip(0).clone().requires_grad_(True)
    loss = perceptual(other, x)
    assert loss.shape == (4,) and (loss[[0, 3]] > 0.01).all()
    loss.sum().backward()
    assert other.grad is not None and other.grad.abs().sum() > 0
    assert all(p.grad is None for p in perceptual.parameters())  # the backbone stays frozen


def test_free_bits_charge_at_least_lambda_per_dimension():
    class Fixed(torch.nn.Module):  # posterior N(0, I): KL is exactly 0
        def forward(self, x, generator=None):
            n = len(x)
            return torch.zeros_like(x), torch.zeros(n, 4), torch.zeros(n, 4)

    x = torch.full((2, 3, 8, 8), 0.5)
    plain, _, kl = batch_loss(Fixed(), x, beta=1.0)
    free, _, kl_free = batch_loss(Fixed(), x, beta=1.0, free_bits=0.5)
    assert kl == kl_free == 0.0
    assert float(free - plain) == pytest.approx(4 * 0.5)


def test_training_with_the_recipe_lowers_the_loss(pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=6, batch_size=9, lr=3e-3, device="cpu",
                            patience=10, time_budget=None)
    model = Autoencoder(cfg).fit(pixels, progress=False)
    losses = [row["train_loss"] for row in model.history]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]


def test_save_load_decodes_identically_and_records_the_preprocessing(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=2, batch_size=9, device="cpu")
    model = Autoencoder(cfg).fit(pixels, progress=False)
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["version"] == FORMAT_VERSION == 3 and doc["preprocess"] == "foreground"
    assert doc["decoder"] == VAE_RECIPE["decoder"] and doc["config"]["feature_match"] == VAE_RECIPE["feature_match"]
    loaded = Autoencoder.load(tmp_path / "m")
    z = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    inference = LoadedModel(tmp_path / "m")
    with torch.no_grad():
        expected = torch.sigmoid(model.net.decode_logits(torch.from_numpy(z)))
        again = torch.sigmoid(loaded.net.decode_logits(torch.from_numpy(z)))
    assert torch.equal(expected, again)
    assert np.array_equal(inference.decode(z), (expected.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
    assert np.array_equal(reconstructions(loaded.net, pixels[:3]), reconstructions(model.net, pixels[:3]))
    assert inference.preprocess == "foreground" and loaded.config.preprocess == "foreground"


def test_a_format_1_model_loads_with_its_padded_photos_and_a_newer_one_is_refused(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=1, batch_size=9, device="cpu", **LEGACY)
    Autoencoder(cfg).fit(pixels, progress=False).save(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    doc = json.loads(path.read_text())
    # what lookalike wrote before format 2: no preprocessing keys anywhere
    for key in ("preprocess", "perceptual", "free_bits", "time_budget"):
        doc["config"].pop(key)
    doc.pop("preprocess")
    path.write_text(json.dumps({**doc, "version": 1}))
    old = Autoencoder.load(tmp_path / "old")
    assert old.config.preprocess == "pad" and old.config.perceptual == 0.0 and old.config.image_size == SIZE
    assert LoadedModel(tmp_path / "old").preprocess == "pad"
    path.write_text(json.dumps({**doc, "version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="newer lookalike"):
        Autoencoder.load(tmp_path / "old")


def test_the_time_budget_cuts_training_short(pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=50, batch_size=3, device="cpu",
                            time_budget=0.01)
    model = Autoencoder(cfg).fit(pixels, progress=False)
    assert model.epochs_run == 1 and model.stopped_early and model.meta["time_budget_stop"]
    assert model.history[0]["images"] < len(pixels)  # the first epoch itself was cut at the deadline


def test_feature_matching_is_zero_for_the_same_image_and_pulls_a_different_one(pixels):
    loss_fn = FeatureMatchLoss(size=32)
    x = to_tensor(pixels[:4])
    assert loss_fn(x, x).abs().max() < 1e-5
    other = x.flip(0).clone().requires_grad_(True)
    loss = loss_fn(other, x)
    assert loss.shape == (4,) and (loss[[0, 3]] > 1e-3).all() and (loss <= 2.0).all()
    loss.sum().backward()
    assert other.grad is not None and other.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())


@pytest.mark.parametrize("decoder", ["transpose", "upsample"])
def test_both_decoders_draw_the_input_size(decoder):
    net = build_model("vae", 32, 5, decoder)
    assert net.decode_logits(torch.zeros(2, 5)).shape == (2, 3, 32, 32)
    assert any(isinstance(m, torch.nn.Upsample) for m in net.modules()) == (decoder == "upsample")
    with pytest.raises(ValueError, match="decoder"):
        AutoencoderConfig(arch="vae", decoder="pixelshuffle")


def test_a_format_2_model_loads_with_transposed_convolutions(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=1, batch_size=9, device="cpu", **LEGACY_2)
    model = Autoencoder(cfg).fit(pixels, progress=False)
    model.save(tmp_path / "v2")
    path = tmp_path / "v2" / "config.json"
    doc = json.loads(path.read_text())
    for key in ("decoder", "feature_match"):  # what lookalike wrote before format 3
        doc["config"].pop(key)
    doc.pop("decoder")
    path.write_text(json.dumps({**doc, "version": 2}))
    old, inference = Autoencoder.load(tmp_path / "v2"), LoadedModel(tmp_path / "v2")
    assert (old.config.decoder, old.config.feature_match, inference.decoder) == ("transpose", 0.0, "transpose")
    assert np.array_equal(reconstructions(old.net, pixels[:3]), reconstructions(model.net, pixels[:3]))
