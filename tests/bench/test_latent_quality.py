"""The latent explorer's quality study: its measures on generated images (fast) and the whole run on
a slice of clothing-small (slow, integration)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lookalike.bench.studies import latent_quality as study
from lookalike.encoders.autoencoder import to_pixels
from lookalike.train.autoencoder import AutoencoderConfig
from lookalike.train.probes import Probe, ProbeConfig

from fakes import shape_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    images, labels = shape_images(per_class=4, size=48)
    feats = study.Features(batch_size=16)
    real = np.stack([np.asarray(im.convert("RGB").resize((16, 16))) for im in images])
    splits = np.array(["test" if i % 4 == 0 else "train" for i in range(len(images))])
    return {"pixels-16-foreground": np.stack([to_pixels(im, 16, "foreground") for im in images]), "labels": np.array(labels),
            "splits": splits, "features": feats(real, "real"), "_feats": feats}


def test_one_recipe_is_measured_on_the_held_out_split(data, tmp_path):
    cfg = AutoencoderConfig(arch="vae", latent=3, image_size=16, epochs=2, batch_size=9, device="cpu", time_budget=None,
                            encoder_input="pixels", ema=0.0)  # one row: no weight average to measure beside it
    probe = Probe(ProbeConfig(refit=False)).fit(data["features"], list(data["labels"]), list(data["splits"]))
    [row] = study.evaluate("tiny", cfg, data, data["_feats"], probe, n_samples=12, seed=0, progress=False)
    assert row["n_test"] == 9 and row["n_train"] == 27 and row["epochs_run"] == 2
    assert 0.0 <= row["recognisability"] <= 1.0 and row["fid"] >= 0.0 and row["fid_aggregate"] >= 0.0
    assert len(row["sliders"]) == 3 and all(s["pixel_change"] >= 0 and 0 <= s["neighbours_changed"] <= 1
                                            for s in row["sliders"])
    assert row["dead_sliders"] == sum(s["pixel_change"] < study.DEAD_PIXEL_CHANGE for s in row["sliders"])
    assert row["_images"]["samples"].shape == row["_images"]["aggregate"].shape == (10, 16, 16, 3)
    png = study.comparison_png([row, {**row, "name": "again"}], tmp_path / "q.png")
    assert png.exists() and "| tiny | 16 | foreground | pixels | upsample | 16 | 1.0 | 1.0 |" in study.table([row], 0.5)
    assert row["fid_reconstructions"] >= 0.0 and row["fid_inputs"] >= 0.0 and row["fid_gmm"] >= 0.0


def test_a_weight_average_is_measured_beside_the_last_step_weights(data):
    cfg = AutoencoderConfig(arch="vae", latent=3, image_size=16, epochs=2, batch_size=9, device="cpu", time_budget=None,
                            encoder_input="pixels", ema=0.9)
    probe = Probe(ProbeConfig(refit=False)).fit(data["features"], list(data["labels"]), list(data["splits"]))
    averaged, *others = study.evaluate("avg", cfg, data, data["_feats"], probe, n_samples=12, seed=0, progress=False)
    last = others[-1]
    # the last average is its own row only when the validation loss kept an earlier epoch
    assert [r["name"] for r in others] == (["avg last step"] if averaged["best_epoch"] == 2 else
                                           ["avg last average", "avg last step"])
    assert averaged["epochs_run"] == last["epochs_run"] == 2
    # two different networks: their reconstructions differ
    assert not np.array_equal(averaged["_images"]["recon"], last["_images"]["recon"])


def test_a_feature_reading_vae_is_measured_with_both_probes_and_the_ceilings(data):
    cfg = AutoencoderConfig(arch="vae", latent=3, image_size=16, epochs=1, batch_size=9, device="cpu", time_budget=None,
                            encoder_input="features", perceptual=0.0, feature_match=0.0, ema=0.0)
    pixels = data["pixels-16-foreground"]
    own = {**data, study.input_features_key(cfg): study.pixel_features(pixels)}
    roles = list(data["splits"])
    probe = Probe(ProbeConfig(refit=False)).fit(data["features"], list(data["labels"]), roles)
    inputs = Probe(ProbeConfig(refit=False)).fit(own[study.input_features_key(cfg)], list(data["labels"]), roles)
    [row] = study.evaluate("sem", cfg, own, data["_feats"], probe, n_samples=12, seed=0, progress=False, input_probe=inputs)
    assert 0.0 <= row["recognisability"] <= 1.0 and 0.0 <= row["recognisability_inputs_probe"] <= 1.0
    limits = study.ceilings(own, "pixels-16-foreground", data["_feats"], {"photos": probe, "inputs": inputs})
    assert list(limits) == ["inputs", "blur 1 px", "blur 2 px"]
    # the probe trained on these very inputs reads them as its own test split says
    assert limits["inputs"]["inputs"] == pytest.approx(inputs.report.accuracy)
    text = study.table([row], 0.5, {"pixels-16-foreground": limits})
    assert "| sem | 16 | foreground | features |" in text and "| blur 2 px |" in text


def test_gmm_samples_follow_two_separated_clusters():
    rng = np.random.default_rng(0)
    mu = np.concatenate([rng.normal(-5, 0.1, (100, 2)), rng.normal(5, 0.1, (100, 2))]).astype(np.float32)
    z = study.gmm_sample(mu, 400, seed=0, components=2)
    assert z.shape == (400, 2) and z.dtype == np.float32
    assert (np.abs(np.abs(z) - 5) < 1).all() and 0.3 < (z[:, 0] > 0).mean() < 0.7  # no point between them


def test_the_slider_effect_sees_a_dead_dimension():
    import torch

    class Decoder(torch.nn.Module):  # draws from z0 only: z1 is a dead slider
        def decode_logits(self, z):
            return (z[:, :1] * 4).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)

    mu = np.random.default_rng(0).standard_normal((30, 2)).astype(np.float32)
    rows = study.slider_effect(Decoder(), mu, mu[:5], mu.std(0), k=4)
    assert rows[0]["pixel_change"] > 50 and rows[1]["pixel_change"] == 0.0
    assert rows[0]["neighbours_changed"] > 0 and rows[1]["neighbours_changed"] > 0  # µ moved in both


def test_the_recipes_compared_are_format_1_the_previous_default_format_4_format_5_and_today():
    assert (study.FORMAT1.image_size, study.FORMAT1.preprocess, study.FORMAT1.perceptual) == (64, "pad", 0.0)
    assert study.FORMAT1.time_budget is None and study.FORMAT1.latent == study.AFTER.latent == 16
    previous = study.PREVIOUS
    assert (previous.image_size, previous.decoder, previous.width, previous.feature_match, previous.latent_mmd,
            previous.batch_size, previous.lr) == (96, "transpose", 32, 0.0, 0.0, 32, 1e-3)
    assert study.AFTER == AutoencoderConfig(arch="vae")  # today's defaults, whatever they are
    assert list(study.RECIPES) == ["format1", "previous", "format4", "semantic", "format5", "after"]
    assert study.FORMAT4.encoder_input == "pixels" and study.SEMANTIC.encoder_input == "features"
    assert study.FORMAT4.image_size == study.SEMANTIC.image_size == 64 and study.SEMANTIC.decoder == "upsample"
    five = study.FORMAT5  # session 7's default: no adversarial or colour term, no flips, no input dropout
    assert (five.encoder_input, five.adversarial, five.colour, five.flip, five.input_dropout) == (
        "features", 0.0, 0.0, False, 0.0)
    assert study.FORMAT4.adversarial == 0.0 and study.FORMAT4.flip
    assert study.DEFAULT_RUN == ("format5", "after")


def test_a_variant_names_its_changes_to_todays_recipe():
    name, fields = study.parse_variant("nogan:adversarial=0,flip=false,width=32,beta=0.5")
    assert name == "nogan" and fields == {"adversarial": 0.0, "flip": False, "width": 32, "beta": 0.5}
    assert study.parse_variant("same:") == ("same", {})
    with pytest.raises(ValueError, match="unknown config field"):
        study.parse_variant("x:sharpness=3")


@pytest.mark.slow
@pytest.mark.integration
def test_the_study_runs_on_a_slice_of_clothing_small(clothing_small, tmp_path):
    """12 train + 4 test photos per label, 10 s of training per recipe: checks the pipeline, not the numbers."""
    rows, counts = [], {}
    with open(clothing_small / "catalog.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = (row["label"], row["split"])
            if row["split"] in ("train", "test") and counts.get(key, 0) < (12 if row["split"] == "train" else 4):
                counts[key] = counts.get(key, 0) + 1
                rows.append({**row, "image": str(clothing_small / row["image"])})
    with open(tmp_path / "slice.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from lookalike.catalog import Catalog

    Catalog("slice", home=tmp_path / "home", create=True).index(str(tmp_path / "slice.csv"), encoder="effnet-lite0")
    out = tmp_path / "out"
    assert study.main(["--home", str(tmp_path / "home"), "--catalog", "slice", "--out", str(out), "--budget", "10",
                       "--samples", "40", "--device", "cpu"]) == 0
    report = json.loads((out / "latent_quality.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["format4", "semantic"]
    assert set(report["ceilings"]) == {"pixels-64-foreground"}
    assert all(r["n_test"] == 40 for r in report["rows"]) and (out / "latent_quality.png").exists()
