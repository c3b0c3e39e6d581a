"""The hybrid encoder: a VAE over pretrained vectors plus an image decoder (colour-hist stands in
for the pretrained encoder here, so the test needs no CNN weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fakes import indexed_catalog


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_folder):
    from lookalike.train.autoencoder import AutoencoderConfig

    cat = indexed_catalog(tmp_path_factory.mktemp("hybrid-home"), shapes_folder)
    cfg = AutoencoderConfig(arch="hybrid", latent=4, image_size=16, epochs=4, batch_size=8, device="cpu", lr=3e-3,
                            base="colour-hist")
    result = cat.train_autoencoder(cfg, "hy", progress=False)
    return cat, result


def test_training_writes_the_model_and_pngs(trained):
    _, result = trained
    for name in ("weights.pt", "config.json", "feature_stats.npz", "loss.png", "reconstructions.png",
                 "latent_stats.json", "traversal.png"):
        assert (result.dir / name).exists(), name
    assert result.dir.parent.name == "hvae"
    config = json.loads((result.dir / "config.json").read_text())
    assert config["base"] == "colour-hist" and config["in_dim"] == 512
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_hybrid_encoder_indexes_searches_and_evaluates(trained, shapes_folder):
    from lookalike.encoders import get_encoder

    cat, _ = trained
    enc = get_encoder("hvae:hy", home=cat.home)
    assert enc.dim == 4 and enc.metric == "l2" and enc.image_size == get_encoder("colour-hist").image_size
    image = Image.open(next(shapes_folder.rglob("*.png"))).convert("RGB")
    assert enc.encode([image]).shape == (1, 4)
    for spec, metric in (("hvae:hy", "l2"), ("hvae:hy@loglik", "loglik")):
        cat.index(shapes_folder, encoder=spec)
        report = cat.evaluate(encoder=spec)
        assert report.metric == metric and report.n_queries == len(cat)
        results = cat.search(item=cat.items(limit=1)[0].id, k=3, encoder=spec)
        assert len(results) == 3


def test_latent_space_of_the_hybrid_decodes_images(trained):
    from lookalike.explore.latent import LatentSpace

    cat, _ = trained
    space = LatentSpace.build(cat, "hy", progress=False, kind="hvae")
    assert len(space.ids) == len(cat) and space.mu.shape == (len(cat), 4)
    assert space.decode(space.mu[0]).size == (16, 16)
    hits = space.nearest(space.mu[3], k=2)
    assert hits[0].id == space.ids[3]
    np.testing.assert_allclose([s["mean"] for s in space.stats()], space.mu.mean(0), atol=1e-5)


def test_appearance_dimensions_extend_the_decoder_not_the_encoder(home, shapes_folder):
    from lookalike.encoders import get_encoder
    from lookalike.train.autoencoder import AutoencoderConfig
    from lookalike.explore.latent import LatentSpace

    cat = indexed_catalog(home, shapes_folder, name="app")
    cfg = AutoencoderConfig(arch="hybrid", latent=4, image_size=16, epochs=2, batch_size=8, device="cpu",
                            base="colour-hist", app_latent=3)
    cat.train_autoencoder(cfg, "hy2", progress=False)
    assert get_encoder("hvae:hy2", home=home).dim == 4          # retrieval: semantic µ only
    space = LatentSpace.build(cat, "hy2", progress=False, kind="hvae")
    assert space.dim == 7 and space.mu.shape == (len(cat), 7)  # explorer: semantic + appearance
    assert len(space.stats()) == 7 and space.decode(space.mu[0]).size == (16, 16)
    sem_only = get_encoder("hvae:hy2", home=home).encode(
        [Image.open(cat.items(limit=1)[0].path).convert("RGB")])
    np.testing.assert_allclose(sem_only[0], space.mu[space.ids.index(cat.items(limit=1)[0].id), :4], atol=1e-4)


def test_hybrid_needs_the_base_vectors(shapes_catalog):
    from lookalike.train.autoencoder import AutoencoderConfig

    cat = shapes_catalog
    with pytest.raises(ValueError, match="no 'tiny' vectors"):
        cat.train_autoencoder(AutoencoderConfig(arch="hybrid", image_size=16, epochs=1, base="tiny"), "x", progress=False)
