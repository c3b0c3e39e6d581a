"""The latent explorer's VAE recipe (formats 2-6): foreground crops, perceptual and feature-matching
losses (apart and from one backbone pass), free bits, the latent MMD term, time budget, the upsample
decoder, the width, the feature-reading encoder with flips and input dropout, the adversarial and colour
terms, and models of formats 1-5 that still load as they were trained. Tiny generated images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lookalike.encoders.autoencoder import LoadedModel, to_pixels, to_tensor
from lookalike.train.autoencoder import (
    FORMAT_VERSION, LEGACY, LEGACY_2, LEGACY_3, LEGACY_4, LEGACY_5, LEGACY_6, PLAIN_RECIPE, VAE_RECIPE, Adversary, Autoencoder,
    AutoencoderConfig, batch_loss, reconstructions, weight_average,
)
from lookalike.encoders.autoencoder import FeatureVAE, build_model, pixel_features
from lookalike.train.losses import (
    FeatureMatchLoss, PatchDiscriminator, PerceptualFeatureLoss, PerceptualLoss, adaptive_weight, colour_loss, hinge_d_loss,
    hinge_g_loss, latent_mmd,
)

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
    for key, value in VAE_RECIPE.items():
        assert getattr(vae, key) == value, key
    assert (vae.image_size, vae.preprocess, vae.decoder, vae.width) == (64, "foreground", "upsample", 16)
    assert vae.encoder_input == "features" and conv.encoder_input == "pixels"  # format 5's default
    assert vae.feature_match > 0 and vae.latent_mmd > 0 and vae.time_budget <= 180  # the demo's 3 minutes
    assert vae.latent == 16  # one slider per dimension
    assert (conv.image_size, conv.preprocess, conv.perceptual, conv.time_budget) == (64, "pad", 0.0, None)
    assert (conv.decoder, conv.width, conv.batch_size, conv.lr, conv.feature_match, conv.latent_mmd) == (
        "transpose", 32, 32, 1e-3, 0.0, 0.0)
    assert all(getattr(conv, key) == value for key, value in PLAIN_RECIPE.items())
    assert AutoencoderConfig(arch="vae", width=8, batch_size=4, lr=0.01).width == 8
    with pytest.raises(ValueError, match="width"):
        AutoencoderConfig(arch="vae", width=2)
    with pytest.raises(ValueError, match="learning rate"):
        AutoencoderConfig(arch="vae", lr=-1.0)
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
    recon = [row["train_recon"] for row in model.history]  # the total also carries the KL / MMD terms' rise
    assert len(recon) == 6 and recon[-1] < 0.95 * recon[0]


def test_save_load_decodes_identically_and_records_the_preprocessing(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=2, batch_size=9, device="cpu")
    model = Autoencoder(cfg).fit(pixels, progress=False)
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["version"] == FORMAT_VERSION == 7 and doc["preprocess"] == "foreground"
    assert doc["config"]["adversarial"] == VAE_RECIPE["adversarial"] > 0
    assert doc["config"]["ema"] == VAE_RECIPE["ema"] > 0
    assert doc["encoder_input"] == VAE_RECIPE["encoder_input"]
    assert doc["width"] == VAE_RECIPE["width"] and inference_width(tmp_path / "m") == VAE_RECIPE["width"]
    assert doc["config"]["latent_mmd"] == VAE_RECIPE["latent_mmd"]
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


def inference_width(directory) -> int:
    return LoadedModel(directory).net.channels[0]


def saved_as_format(folder, pixels, legacy: dict, keys: tuple[str, ...], version: int) -> Autoencoder:
    """A model trained with ``legacy`` settings, saved to ``folder`` as lookalike wrote format ``version``:
    ``keys`` dropped from its config (and from the top level where they are repeated there)."""
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=1, batch_size=9, device="cpu", **legacy)
    model = Autoencoder(cfg).fit(pixels, progress=False)
    model.save(folder)
    path = folder / "config.json"
    doc = json.loads(path.read_text())
    for key in keys:
        doc["config"].pop(key)
        doc.pop(key, None)
    path.write_text(json.dumps({**doc, "version": version}))
    return model


def test_a_format_3_model_loads_with_32_channels(tmp_path, pixels):
    model = saved_as_format(tmp_path / "v3", pixels, LEGACY_3, ("width",), 3)  # before format 4
    old = Autoencoder.load(tmp_path / "v3")
    assert old.config.width == 32 and inference_width(tmp_path / "v3") == 32
    assert np.array_equal(reconstructions(old.net, pixels[:3]), reconstructions(model.net, pixels[:3]))


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
    model = saved_as_format(tmp_path / "v2", pixels, LEGACY_2, ("decoder", "feature_match"), 2)  # before format 3
    old, inference = Autoencoder.load(tmp_path / "v2"), LoadedModel(tmp_path / "v2")
    assert (old.config.decoder, old.config.feature_match, inference.decoder) == ("transpose", 0.0, "transpose")
    assert np.array_equal(reconstructions(old.net, pixels[:3]), reconstructions(model.net, pixels[:3]))


def test_the_latent_mmd_term_is_on_for_a_vae_only():
    assert AutoencoderConfig(arch="vae").latent_mmd == VAE_RECIPE["latent_mmd"] > 0
    assert AutoencoderConfig(arch="conv").latent_mmd == 0.0
    assert AutoencoderConfig(arch="vae", latent_mmd=2.0).latent_mmd == 2.0
    with pytest.raises(ValueError, match=">= 0"):
        AutoencoderConfig(arch="vae", latent_mmd=-1.0)


def test_one_backbone_pass_gives_both_feature_losses(perceptual):
    torch.manual_seed(0)
    x, y = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64).requires_grad_(True)
    both = PerceptualFeatureLoss(backbone=FeatureMatchLoss().backbone)
    per_image, feature = both(y, x)
    assert torch.allclose(per_image, perceptual(y, x), atol=1e-5)
    assert torch.allclose(feature, FeatureMatchLoss(backbone=both.backbone)(y, x), atol=1e-5)
    (per_image.sum() + feature.sum()).backward()
    assert y.grad.abs().sum() > 0 and all(p.grad is None for p in both.parameters())
    with pytest.raises(ValueError, match="at least 64"):
        both(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_latent_mmd_is_small_for_prior_codes_and_large_for_spread_ones():
    gen = torch.Generator().manual_seed(0)
    prior = lambda: torch.randn(128, 16, generator=gen)  # noqa: E731
    same = abs(float(latent_mmd(prior(), prior())))
    spread = prior().mul(4.0).requires_grad_(True)  # codes 4x wider than N(0, I), as a plain VAE's µ
    far = latent_mmd(spread, prior())
    assert same < 0.02 and far.item() > 20 * same
    far.backward()
    assert spread.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        latent_mmd(torch.zeros(1, 3), torch.zeros(1, 3))


def test_the_mmd_term_charges_codes_away_from_the_prior():
    class Fixed(torch.nn.Module):  # µ at a fixed offset, σ = 1
        def __init__(self, offset):
            super().__init__()
            self.offset = offset

        def forward(self, x, generator=None):
            n = len(x)
            return torch.zeros_like(x), torch.full((n, 4), self.offset), torch.zeros(n, 4)

    x = torch.full((32, 3, 4, 4), 0.5)
    cost = {}
    for offset in (0.0, 3.0):
        plain, _, _ = batch_loss(Fixed(offset), x, beta=0.0, generator=torch.Generator().manual_seed(1))
        with_mmd, _, _ = batch_loss(Fixed(offset), x, beta=0.0, generator=torch.Generator().manual_seed(1), mmd_weight=1.0)
        cost[offset] = float(with_mmd - plain) / x[0].numel()
    assert abs(cost[0.0]) < 0.05 and cost[3.0] > 0.3


def test_a_model_saved_before_the_mmd_term_loads_without_it(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=1, batch_size=9, device="cpu")
    Autoencoder(cfg).fit(pixels, progress=False).save(tmp_path / "v3")
    path = tmp_path / "v3" / "config.json"
    doc = json.loads(path.read_text())
    doc["config"].pop("latent_mmd")  # what lookalike wrote before the term existed (format 3)
    path.write_text(json.dumps({**doc, "version": 3}))
    assert Autoencoder.load(tmp_path / "v3").config.latent_mmd == 0.0


def test_the_encoder_input_is_checked():
    assert AutoencoderConfig(arch="vae", encoder_input="features").encoder_input == "features"
    with pytest.raises(ValueError, match="encoder input"):
        AutoencoderConfig(arch="vae", encoder_input="text")
    with pytest.raises(ValueError, match="only a VAE"):
        AutoencoderConfig(arch="conv", encoder_input="features")
    with pytest.raises(ValueError, match="only a VAE"):
        build_model("conv", SIZE, 4, encoder_input="features")


def test_a_feature_reading_vae_trains_on_cached_vectors_and_loads_reading_the_images(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=3, batch_size=9, device="cpu", lr=3e-3,
                            time_budget=None, encoder_input="features", perceptual=0.0, feature_match=0.0, patience=10)
    features = pixel_features(pixels)
    assert features.shape == (len(pixels), 1280) and np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-4)
    model = Autoencoder(cfg).fit(pixels, progress=False, features=features)
    assert isinstance(model.net, FeatureVAE) and model.history[-1]["train_recon"] < model.history[0]["train_recon"]
    model.save(tmp_path / "f")
    doc = json.loads((tmp_path / "f" / "config.json").read_text())
    assert doc["encoder_input"] == "features" and doc["config"]["encoder_input"] == "features"
    inference = LoadedModel(tmp_path / "f")
    assert isinstance(inference.net, FeatureVAE) and inference.encoder_input == "features"
    # the saved model reads the images' own vectors: the same posterior as the cached ones gave
    mu, logvar = inference.posterior(pixels[:5])
    with torch.no_grad():
        expected_mu, expected_logvar = model.net.posterior(to_tensor(pixels[:5]), torch.from_numpy(features[:5]))
    assert np.allclose(mu, expected_mu.numpy(), atol=1e-4) and np.allclose(logvar, expected_logvar.numpy(), atol=1e-4)
    assert torch.equal(inference.net.feature_std, model.net.feature_std)  # the standardisation is saved
    assert torch.equal(inference.net.thumb_mean, model.net.thumb_mean)
    assert np.array_equal(reconstructions(Autoencoder.load(tmp_path / "f").net, pixels[:3]),
                          reconstructions(model.net, pixels[:3]))


def test_without_cached_vectors_the_fit_computes_them(pixels):
    cfg = AutoencoderConfig(arch="vae", latent=2, image_size=SIZE, epochs=1, batch_size=9, device="cpu",
                            time_budget=None, encoder_input="features", perceptual=0.0, feature_match=0.0)
    model = Autoencoder(cfg).fit(pixels, progress=False)
    assert float(model.net.feature_std.min()) > 0 and float(model.net.feature_mean.abs().sum()) > 0
    with pytest.raises(ValueError, match="features"):
        Autoencoder(cfg).fit(pixels, progress=False, features=np.zeros((3, 1280), np.float32))


def test_a_format_4_model_loads_reading_pixels(tmp_path, pixels):
    model = saved_as_format(tmp_path / "v4", pixels, LEGACY_4, ("encoder_input",), 4)
    old = Autoencoder.load(tmp_path / "v4")
    assert old.config.encoder_input == "pixels" and LoadedModel(tmp_path / "v4").encoder_input == "pixels"
    assert np.array_equal(reconstructions(old.net, pixels[:3]), reconstructions(model.net, pixels[:3]))


def test_format_6_turns_the_adversarial_term_flips_and_input_dropout_on():
    vae = AutoencoderConfig(arch="vae")
    assert vae.adversarial > 0 and vae.flip and 0 < vae.input_dropout < 1 and vae.colour == 0.0
    assert AutoencoderConfig(arch="conv").adversarial == 0.0
    with pytest.raises(ValueError, match="VAE losses"):
        AutoencoderConfig(arch="conv", adversarial=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        AutoencoderConfig(arch="vae", colour=-1.0)
    with pytest.raises(ValueError, match="dropout"):
        AutoencoderConfig(arch="vae", input_dropout=1.0)


def test_the_patch_discriminator_and_the_hinge_losses():
    disc = PatchDiscriminator(8)
    assert disc(torch.rand(3, 3, 64, 64)).shape == (3, 1, 14, 14)  # S/4 - 2 patches a side
    assert disc(torch.rand(2, 3, 16, 16)).shape == (2, 1, 2, 2)
    sure = torch.full((4, 1, 2, 2), 3.0)
    assert float(hinge_d_loss(sure, -sure)) == 0.0  # every patch right with margin
    assert float(hinge_d_loss(torch.zeros(4, 1), torch.zeros(4, 1))) == pytest.approx(2.0)
    assert float(hinge_g_loss(sure)) == pytest.approx(-3.0)
    # the adaptive weight scales the adversarial gradient to the reconstruction's size, clipped
    assert adaptive_weight(torch.full((10,), 2.0), torch.full((10,), 0.5)) == pytest.approx(4.0, rel=1e-3)
    assert adaptive_weight(torch.ones(4), torch.zeros(4), limit=50.0) == 50.0


def test_colour_loss_is_zero_for_the_same_colours_and_sees_a_colour_change(pixels):
    x = to_tensor(pixels[:4])
    assert float(colour_loss(x, x).abs().max()) == 0.0
    assert float(colour_loss(x.roll(1, 0) * 0, x).min()) > 0  # black instead of the products
    shifted = x.clone()
    shifted[:, 0] = (shifted[:, 0] + 0.3).clamp(max=1.0)  # redder
    loss = colour_loss(shifted, x)
    assert loss.shape == (4,) and (loss > 0).all()


def test_the_adversarial_term_starts_after_the_warm_up_and_updates_the_discriminator(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=3, warmup=1, batch_size=9, device="cpu",
                            time_budget=None, lr=3e-3, patience=10, perceptual=0.0, feature_match=0.0,
                            encoder_input="pixels", adversarial=0.5)
    model = Autoencoder(cfg).fit(pixels, progress=False, checkpoint_dir=tmp_path / "m")
    first, *later = model.history
    assert "gan_weight" not in first  # the KL warm-up epoch trains without it
    assert all(row["gan_weight"] > 0 and np.isfinite(row["train_gan_d"]) for row in later)
    assert model.best_epoch >= 2  # the best epoch is chosen among the adversarial ones
    saved = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=False)
    assert saved["adversary"] is not None and saved["state"]["adversarial_from"] == 2
    # one step moves the discriminator and the VAE
    net = build_model("vae", SIZE, 4, "upsample", 8)
    adversary = Adversary(0.5, 1e-2, "cpu", width=8)
    before = [p.detach().clone() for p in adversary.disc.parameters()]
    last = [m for m in net.dec if isinstance(m, torch.nn.Conv2d)][-1].weight.detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = to_tensor(pixels[:6])
    outputs = {}
    loss, _, _ = batch_loss(net, x, 1.0, torch.Generator().manual_seed(0), outputs=outputs)
    g, d = adversary.step(net, opt, loss, outputs["decoded"], x)
    assert np.isfinite(g) and d > 0 and adversary.last_weight > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, adversary.disc.parameters()))
    assert not torch.equal(last, [m for m in net.dec if isinstance(m, torch.nn.Conv2d)][-1].weight)


def test_an_adversarial_run_resumes_to_the_same_weights(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=3, warmup=1, batch_size=9, device="cpu",
                            time_budget=None, patience=10, perceptual=0.0, feature_match=0.0, encoder_input="pixels")
    whole = Autoencoder(cfg).fit(pixels, progress=False, checkpoint_dir=tmp_path / "a")
    Autoencoder(AutoencoderConfig(**{**cfg.__dict__, "epochs": 2})).fit(pixels, progress=False,
                                                                         checkpoint_dir=tmp_path / "b")
    resumed = Autoencoder(cfg).fit(pixels, progress=False, checkpoint_dir=tmp_path / "b", resume=True)
    for a, b in zip(whole.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)


def test_flips_use_the_flipped_images_vectors_and_dropout_only_trains(pixels):
    features = pixel_features(pixels)
    flipped = pixel_features(np.ascontiguousarray(pixels[:, :, ::-1]))
    assert not np.allclose(features, flipped)  # the shapes are not mirror-symmetric
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=2, batch_size=9, device="cpu",
                            time_budget=None, perceptual=0.0, feature_match=0.0, adversarial=0.0, input_dropout=0.5)
    model = Autoencoder(cfg).fit(pixels, progress=False, features=features, flipped_features=flipped)
    assert model.history[-1]["images"] > 0
    with pytest.raises(ValueError, match="flipped"):
        Autoencoder(cfg).fit(pixels, progress=False, features=features, flipped_features=flipped[:3])
    net = model.net
    x, f = to_tensor(pixels[:4]), torch.from_numpy(features[:4])
    net.eval()
    with torch.no_grad():
        assert torch.equal(net.posterior(x, f)[0], net.posterior(x, f)[0])
        net.train()
        noisy = net.posterior(x, f, torch.Generator().manual_seed(0))[0]
        assert not torch.equal(noisy, net.posterior(x, f, torch.Generator().manual_seed(1))[0])
    net.eval()


def test_a_format_5_model_loads_without_the_new_terms_and_never_flipped(tmp_path, pixels):
    legacy = {**LEGACY_5, "encoder_input": "features", "perceptual": 0.0, "feature_match": 0.0}
    model = saved_as_format(tmp_path / "v5", pixels, legacy, ("adversarial", "colour", "input_dropout"), 5)
    old = Autoencoder.load(tmp_path / "v5")
    assert (old.config.adversarial, old.config.colour, old.config.input_dropout, old.config.flip) == (0.0, 0.0, 0.0, False)
    assert LoadedModel(tmp_path / "v5").encoder_input == "features"
    assert np.array_equal(reconstructions(old.net, pixels[:3]), reconstructions(model.net, pixels[:3]))


def test_a_format_6_model_loads_without_a_weight_average(tmp_path, pixels):
    legacy = {**LEGACY_6, "encoder_input": "pixels", "perceptual": 0.0, "feature_match": 0.0}
    model = saved_as_format(tmp_path / "v6", pixels, legacy, ("ema",), 6)
    old = Autoencoder.load(tmp_path / "v6")
    assert old.config.ema == 0.0 and AutoencoderConfig(arch="vae").ema > 0
    assert np.array_equal(reconstructions(old.net, pixels[:3]), reconstructions(model.net, pixels[:3]))


def test_adversarial_epochs_keep_the_last_weights_whatever_the_validation_loss(tmp_path, pixels):
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=5, warmup=1, batch_size=9, device="cpu",
                            time_budget=None, lr=3e-3, patience=1, perceptual=0.0, feature_match=0.0,
                            encoder_input="pixels", adversarial=0.5, ema=0.0)
    model = Autoencoder(cfg).fit(pixels, progress=False, checkpoint_dir=tmp_path / "m")
    # patience 1 would stop at the first epoch whose validation loss rose; with the term on, none stops it
    assert model.epochs_run == 5 and model.best_epoch == 5 and not model.stopped_early
    saved = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(saved["model"][k], v) for k, v in model.net.state_dict().items())


def test_the_weight_average_ramps_its_decay_and_tracks_the_weights():
    net = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    averaged = weight_average(net, 0.99)
    values = []
    for _ in range(200):
        with torch.no_grad():
            net.weight.fill_(1.0)
        averaged.update_parameters(net)
        values.append(float(averaged.module.weight.detach()[0, 0]))
    # the first update copies; the next ones average with decay (1 + t) / (10 + t) < 0.99, so a
    # constant weight is reached quickly instead of after ~1/(1 - 0.99) steps from the start
    assert values[0] == 1.0 and values[-1] == pytest.approx(1.0)
    net2 = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(net2.weight)
    averaged2 = weight_average(net2, 0.9)
    averaged2.update_parameters(net2)  # copies 0
    with torch.no_grad():
        net2.weight.fill_(1.0)
    averaged2.update_parameters(net2)  # t = 1: decay 2 / 11
    assert float(averaged2.module.weight.detach()[0, 0]) == pytest.approx(1 - 2 / 11)
    with pytest.raises(ValueError, match="EMA"):
        AutoencoderConfig(arch="vae", ema=1.0)


def test_a_vae_with_a_weight_average_keeps_the_average_and_resumes_exactly(tmp_path, pixels):
    cfg = dict(arch="vae", latent=4, image_size=SIZE, batch_size=9, device="cpu", time_budget=None, lr=3e-3,
               patience=10, perceptual=0.0, feature_match=0.0, encoder_input="pixels", adversarial=0.0, ema=0.9,
               warmup=1)
    model = Autoencoder(AutoencoderConfig(epochs=3, **cfg)).fit(pixels, progress=False, checkpoint_dir=tmp_path / "m")
    saved = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=False)
    kept = model.net.state_dict()
    # the kept weights are the average (best epoch's), not the last step's
    assert any(not torch.equal(kept[k], saved["model"][k]) for k in kept if kept[k].is_floating_point())
    assert saved["averaged"] is not None
    if model.best_epoch == 3:
        assert all(torch.equal(kept[k], saved["best"][k]) for k in kept)
    part = Autoencoder(AutoencoderConfig(epochs=2, **cfg)).fit(pixels, progress=False, checkpoint_dir=tmp_path / "p")
    resumed = Autoencoder(AutoencoderConfig(epochs=3, **cfg)).fit(pixels, progress=False, checkpoint_dir=tmp_path / "p",
                                                                  resume=True)
    assert part.epochs_run == 2
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in model.history]
    assert all(torch.equal(a, b) for a, b in zip(resumed.net.state_dict().values(), kept.values()))
