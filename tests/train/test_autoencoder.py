"""Autoencoders and the VAE: architectures, training loop (loss, early stopping, resume, seed),
save/load round trip, the registry encoders and the `train autoencoder` CLI. Tiny generated images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.encoders import get_encoder
from lookalike.config import model_dir
from lookalike.encoders.autoencoder import (
    ConvVAE, LoadedModel, build_model, default_channels, kind_dir, pixel_epsilon, to_pixels, to_tensor,
)
from lookalike.train.autoencoder import Autoencoder, AutoencoderConfig, split_indices

from fakes import shape_images


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZE = 16


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.stack([to_pixels(im, SIZE) for im in shape_images(per_class=2)[0]])


def cfg(**kw) -> AutoencoderConfig:
    base = dict(arch="vae", latent=4, image_size=SIZE, epochs=3, batch_size=6, lr=3e-3, device="cpu")
    return AutoencoderConfig(**{**base, **kw})


def train(pixels, out_dir, config: AutoencoderConfig, **options) -> Autoencoder:
    """Fit with checkpoints in ``out_dir`` and save there, as `lookalike train autoencoder` does."""
    model = Autoencoder(config).fit(pixels, checkpoint_dir=out_dir, **options)
    model.save(out_dir)
    return model


def weights(path) -> dict:
    return torch.load(path / "weights.pt", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- architectures ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["dense", "conv", "vae"])
def test_architectures_reconstruct_the_input_shape(arch):
    net = build_model(arch, SIZE, 5)
    x = torch.rand(3, 3, SIZE, SIZE)
    logits, code, logvar = net(x)
    assert logits.shape == x.shape and code.shape == (3, 5)
    assert (logvar is not None) == (arch == "vae")


def test_vae_posterior_shapes_and_reparameterisation():
    torch.manual_seed(0)
    net = ConvVAE(SIZE, 6).eval()
    x = torch.rand(4, 3, SIZE, SIZE)
    mu, logvar = net.posterior(x)
    assert mu.shape == logvar.shape == (4, 6)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    _, z_mu, _ = net(x, generator=g1)
    assert torch.equal(z_mu, mu)                    # forward returns µ as the code
    logits_a, _, _ = net(x, generator=g2)
    logits_b, _, _ = net(x, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(logits_a, logits_b)   # decoding z = µ + σ·ε depends on ε


def test_default_channels_reach_four_to_six_pixels_and_reject_odd_sizes():
    assert default_channels(64) == [32, 64, 128, 256]   # unchanged for format-1 models
    assert default_channels(16) == [32, 64]
    assert default_channels(96) == [32, 64, 128, 256]   # 6 x 6 at the bottleneck
    assert default_channels(128) == [32, 64, 128, 256, 256]
    assert default_channels(64, 16) == [16, 32, 64, 128]        # the VAE recipe's width: a quarter of the work
    assert build_model("vae", 64, 4, "upsample", 16).channels == [16, 32, 64, 128]
    for bad in (100, 7, 14):
        with pytest.raises(ValueError):
            default_channels(bad)


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown autoencoder kind"):
        AutoencoderConfig(arch="gan")


# -- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["dense", "conv", "vae"])
def test_loss_decreases_on_a_tiny_generated_set(tmp_path, pixels, arch):
    result = train(pixels, tmp_path / arch, cfg(arch=arch, epochs=4, warmup=0), progress=False)
    # the reconstruction term: a VAE's total also carries the KL and MMD terms, which rise while the
    # feature-reading encoder (the default since format 5) spreads its codes
    losses = [h["train_recon"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    for name in ("weights.pt", "config.json", "checkpoint.pt", "history.json", "loss.png", "reconstructions.png"):
        assert (tmp_path / arch / name).exists(), name


def test_reconstruction_grid_has_inputs_above_reconstructions(tmp_path, pixels):
    config = cfg(epochs=1)
    result = train(pixels, tmp_path / "m", config, progress=False)
    n_val = json.loads((result.dir / "config.json").read_text())["n_val"]
    grid = np.asarray(Image.open(result.dir / "reconstructions.png").convert("RGB"))
    n = min(8, n_val)
    assert grid.shape == (2 * SIZE * 2, n * SIZE * 2, 3)   # 2 rows, upscaled x2
    # the top row is the validation images themselves, the bottom row their (imperfect) reconstructions
    _, val_idx = split_indices(len(pixels), config.val_fraction, config.seed)
    top, bottom = grid[:2 * SIZE:2, ::2], grid[2 * SIZE::2, ::2]
    np.testing.assert_array_equal(top, np.concatenate(list(pixels[val_idx[:n]]), axis=1))
    assert not np.array_equal(bottom, top)


def test_seed_makes_training_deterministic(tmp_path, pixels):
    a = train(pixels, tmp_path / "a", cfg(seed=3), progress=False)
    b = train(pixels, tmp_path / "b", cfg(seed=3), progress=False)
    c = train(pixels, tmp_path / "c", cfg(seed=4), progress=False)
    assert same_weights(weights(a.dir), weights(b.dir))
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    assert not same_weights(weights(a.dir), weights(c.dir))


def test_resume_continues_from_the_checkpoint(tmp_path, pixels):
    full = train(pixels, tmp_path / "full", cfg(epochs=4, patience=10), progress=False)
    first = train(pixels, tmp_path / "part", cfg(epochs=2, patience=10), progress=False)
    assert first.epochs_run == 2
    resumed = train(pixels, tmp_path / "part", cfg(epochs=4, patience=10), resume=True, progress=False)
    assert resumed.epochs_run == 4 and len(resumed.history) == 4
    assert resumed.history[:2] == first.history
    # Resuming equals an unbroken run: optimiser state and per-epoch randomness are restored.
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    assert same_weights(weights(resumed.dir), weights(full.dir))


def test_resume_without_a_checkpoint_fails_clearly(tmp_path, pixels):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(pixels, tmp_path / "none", cfg(), resume=True, progress=False)


def test_early_stopping_when_validation_loss_stops_improving(tmp_path, pixels):
    # lr=0 on a dense AE (no BatchNorm): the validation loss is constant, so it never improves.
    result = train(pixels, tmp_path / "m", cfg(arch="dense", lr=0.0, epochs=10, patience=2), progress=False)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_kl_warmup_ramps_the_weight(tmp_path, pixels):
    result = train(pixels, tmp_path / "m", cfg(epochs=4, warmup=2, beta=2.0, patience=10), progress=False)
    assert [h["kl_weight"] for h in result.history] == [1.0, 2.0, 2.0, 2.0]


def test_split_keeps_both_sides_and_rejects_single_image(pixels):
    train_idx, val_idx = split_indices(len(pixels), 0.1, 0)
    assert len(val_idx) >= 1 and len(train_idx) + len(val_idx) == len(pixels)
    assert not set(train_idx) & set(val_idx)
    with pytest.raises(ValueError):
        split_indices(1, 0.1, 0)


def test_wrong_pixel_shape_is_rejected(tmp_path, pixels):
    with pytest.raises(ValueError, match="expected"):
        train(pixels[:, :8, :8], tmp_path / "m", cfg(), progress=False)


# -- saved models as registry encoders -----------------------------------------------------
@pytest.fixture(scope="module")
def trained_home(tmp_path_factory, pixels):
    home = tmp_path_factory.mktemp("aehome")
    results = {}
    for arch, name in (("conv", "tiny-conv"), ("vae", "tiny-vae")):
        results[arch] = train(pixels, model_dir(kind_dir(arch), name, home), cfg(arch=arch, epochs=2), progress=False)
    return home, results


def test_save_load_round_trip_gives_the_same_embeddings(trained_home, pixels):
    home, results = trained_home
    images = [Image.fromarray(p) for p in pixels[:5]]
    for arch, spec in (("conv", "ae:tiny-conv"), ("vae", "vae:tiny-vae")):
        enc = get_encoder(spec, home=home)
        assert enc.model.preprocess == results[arch].config.preprocess  # the VAE's foreground crop, the AE's pad
        x = to_tensor(np.stack([to_pixels(im, SIZE, enc.model.preprocess) for im in images]))
        with torch.no_grad():
            expected = results[arch].net.encode(x).numpy()
        np.testing.assert_allclose(enc.encode(images), expected, rtol=1e-5, atol=1e-5)
        assert enc.dim == 4 and enc.metric == "l2" and enc.image_size == SIZE


def test_report_names_the_spec_and_the_saved_files(trained_home):
    home, results = trained_home
    vae = results["vae"]
    report = vae.report()
    assert report["encoder"] == vae.spec == "vae:tiny-vae" and results["conv"].spec == "ae:tiny-conv"
    assert report["dir"] == str(model_dir("vae", "tiny-vae", home)) and report["epochs_run"] == 2
    assert report["best_val_loss"] == round(vae.best_val, 3) and report["files"] == sorted(report["files"])
    assert {"config.json", "weights.pt", "loss.png"} <= set(report["files"])
    assert Autoencoder.load(vae.dir).report() == {**report, "seconds": 0.0}  # fit time is not saved
    with pytest.raises(ValueError, match="save"):
        Autoencoder(cfg()).spec


def test_vae_retrieval_modes_store_what_they_need(trained_home, pixels):
    home, _ = trained_home
    images = [Image.fromarray(p) for p in pixels[:6]]
    mu = get_encoder("vae:tiny-vae", home=home).encode(images)
    z_enc = get_encoder("vae:tiny-vae@z", home=home)
    z = z_enc.encode(images)
    both = get_encoder("vae:tiny-vae@loglik", home=home)
    assert both.dim == 8 and both.metric == "loglik"
    assert get_encoder("vae:tiny-vae@sym", home=home).metric == "loglik-sym"
    stored = both.encode(images)
    np.testing.assert_allclose(stored[:, :4], mu, atol=1e-6)
    sigma = np.exp(0.5 * stored[:, 4:])
    eps = pixel_epsilon(np.stack([z_enc.preprocess(im) for im in images]), 4, seed=0)  # ε of what the model sees
    np.testing.assert_allclose(z, mu + sigma * eps, atol=1e-5)
    # ε is fixed per image: the same image gives the same z in another batch, in another order.
    np.testing.assert_allclose(z_enc.encode(images[::-1])[::-1], z, atol=1e-6)


def test_fingerprint_changes_with_mode_and_weights(trained_home):
    home, _ = trained_home
    a = get_encoder("vae:tiny-vae", home=home).fingerprint()
    b = get_encoder("vae:tiny-vae@z", home=home).fingerprint()
    assert a != b and a.startswith("vae:tiny-vae#")


def test_bad_specs_are_clear_errors(trained_home):
    home, _ = trained_home
    with pytest.raises(FileNotFoundError, match="no trained model"):
        get_encoder("vae:missing", home=home)
    with pytest.raises(ValueError, match="needs a VAE"):
        get_encoder("ae:tiny-conv@loglik", home=home)
    with pytest.raises(ValueError, match="unknown VAE retrieval mode"):
        get_encoder("vae:tiny-vae@cosine", home=home)
    with pytest.raises(ValueError, match="model name"):
        get_encoder("vae", home=home)


def test_decode_gives_images_of_the_model_size(trained_home):
    home, _ = trained_home
    model = LoadedModel.open("vae", "tiny-vae", home=home)
    images = model.decode(np.zeros((2, 4), np.float32))
    assert images.shape == (2, SIZE, SIZE, 3) and images.dtype == np.uint8
    with pytest.raises(ValueError, match="4 values"):
        model.decode(np.zeros(5))


# -- CLI -----------------------------------------------------------------------------------
def test_cli_train_index_and_generate(home, shapes_catalog, tmp_path):
    from typer.testing import CliRunner

    from lookalike.catalog import Catalog
    from lookalike.cli import app

    runner = CliRunner()
    args = ["train", "autoencoder", "--catalog", "shapes", "--kind", "vae", "--latent", "4", "--image-size", "16",
            "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--index", "--json", "--home", str(home)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["encoder"] == "vae:shapes-vae" and "traversal.png" in summary["files"]
    cat = Catalog.open("shapes", home=home)
    assert len(cat.vectors("vae:shapes-vae")[0]) == len(cat)

    png = tmp_path / "point.png"
    result = runner.invoke(app, ["generate", "--model", "vae:shapes-vae", "--latent", "0,0,0,0", "--size", "32",
                                 "--nearest", "3", "--out", str(png), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert Image.open(png).size == (32, 32)

    result = runner.invoke(app, ["generate", "--model", "vae:shapes-vae", "--latent", "1,2", "--out", str(png),
                                 "--home", str(home)])
    assert result.exit_code == 1 and "needs 4 values" in result.output

    ids = [it.id for it in cat.items(limit=2)]
    strip, grid = tmp_path / "strip.png", tmp_path / "grid.png"
    result = runner.invoke(app, ["generate", "--model", "vae:shapes-vae", "--interpolate", ",".join(ids),
                                 "--steps", "5", "--out", str(strip), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert Image.open(strip).height == 2 * 16
    result = runner.invoke(app, ["generate", "--model", "vae:shapes-vae", "--traverse", "--steps", "3",
                                 "--out", str(grid), "--home", str(home)])
    assert result.exit_code == 0 and Image.open(grid).height == 4 * 16   # one row per latent dimension
    result = runner.invoke(app, ["generate", "--model", "vae:shapes-vae", "--interpolate", "nope,also-nope",
                                 "--out", str(strip), "--home", str(home)])
    assert result.exit_code == 1 and "unknown item id" in result.output

    result = runner.invoke(app, ["latent-stats", "--model", "vae:shapes-vae", "--json", "--home", str(home)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout[result.stdout.index("{"):])
    assert stats["items"] == len(cat) and len(stats["dims"]) == 4
    result = runner.invoke(app, ["latent-stats", "--model", "vae:shapes-vae", "--item", ids[0], "--json",
                                 "--home", str(home)])
    assert result.exit_code == 0 and len(json.loads(result.stdout[result.stdout.index("{"):])["z"]) == 4
    result = runner.invoke(app, ["latent-stats", "--model", "vae:missing", "--home", str(home)])
    assert result.exit_code == 1 and "no trained model" in result.output

    result = runner.invoke(app, ["train", "autoencoder", "--catalog", "shapes", "--kind", "gan", "--home", str(home)])
    assert result.exit_code == 1 and "unknown autoencoder kind" in result.output
