"""Log-likelihood retrieval through a catalog (evaluate/search; the scores themselves are tested in
tests/index/test_distances.py) and the latent space explorer (stats, decode, nearest, interpolation, traversal)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lookalike.config import model_dir
from lookalike.encoders.autoencoder import LoadedModel, to_pixels
from lookalike.train.autoencoder import Autoencoder, AutoencoderConfig
from lookalike.index.distances import loglik_scores
from lookalike.explore.latent import LatentSpace, latent_model, parse_vector

from fakes import shape_images


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- a tiny trained VAE --------------------------------------------------------------------------
SIZE = 16


@pytest.fixture(scope="module")
def vae_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("latent-home")
    pixels = [to_pixels(image, SIZE) for image in shape_images()[0]]
    cfg = AutoencoderConfig(arch="vae", latent=3, image_size=SIZE, epochs=2, batch_size=3, device="cpu")
    Autoencoder(cfg).fit(np.stack(pixels), progress=False).save(model_dir("vae", "v", home))
    return home, np.stack(pixels)


@pytest.fixture(scope="module")
def space(vae_home):
    home, pixels = vae_home
    model = LoadedModel.open("vae", "v", home=home)
    ids = [f"item-{i}" for i in range(len(pixels))]
    return LatentSpace.from_pixels(model, ids, ["x"] * len(ids), pixels)


def test_every_item_has_mu_sigma_and_a_fixed_z(space, vae_home):
    _, pixels = vae_home
    n = len(pixels)
    assert space.mu.shape == space.sigma.shape == space.z.shape == space.eps.shape == (n, 3)
    assert (space.sigma > 0).all()
    np.testing.assert_allclose(space.z, space.mu + space.sigma * space.eps, atol=1e-6)
    again = LatentSpace.from_pixels(space.model, space.ids, space.labels, pixels)
    np.testing.assert_array_equal(again.z, space.z)          # reproducible position
    item = space.item("item-0")
    assert set(item) == {"id", "label", "mu", "sigma", "eps", "z"} and len(item["z"]) == 3


def test_stats_per_dimension(space):
    stats = space.stats()
    assert [s["dim"] for s in stats] == [0, 1, 2]
    for j, s in enumerate(stats):
        assert s["min"] <= s["mean"] <= s["max"]
        assert s["mean"] == pytest.approx(float(space.mu[:, j].mean()), abs=1e-6)
        assert s["std"] == pytest.approx(float(space.mu[:, j].std()), abs=1e-6)


def test_decode_gives_an_image_of_the_right_size(space):
    assert space.decode([0.0, 0.5, -0.5]).size == (SIZE, SIZE)
    assert space.decode([0.0, 0.5, -0.5], size=40).size == (40, 40)
    with pytest.raises(ValueError, match="3 values"):
        space.decode([0.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        space.decode([0.0, float("nan"), 1.0])


@pytest.mark.parametrize("mode", ["mu", "z"])
def test_nearest_to_an_items_own_point_is_that_item(space, mode):
    i = 4
    point = space.mu[i] if mode == "mu" else space.z[i]
    hits = space.nearest(point, k=3, mode=mode)
    assert hits[0].id == "item-4" and [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score
    with pytest.raises(ValueError, match="unknown mode"):
        space.nearest(point, mode="cosine")


def test_nearest_by_loglik_ranks_by_each_items_posterior(space):
    # Not necessarily the item itself first: a broader posterior elsewhere may explain the point better.
    point = space.mu[4]
    hits = space.nearest(point, k=len(space.ids), mode="loglik")
    expected = loglik_scores(point[None], np.concatenate([space.mu, space.logvar], 1))[0]
    assert [h.id for h in hits] == [space.ids[i] for i in np.argsort(-expected, kind="stable")]
    own = next(h for h in hits if h.id == "item-4")
    assert own.score == pytest.approx(-0.5 * float(space.logvar[4].sum() + 3 * np.log(2 * np.pi)), abs=1e-3)


def test_explore_returns_image_and_products(space):
    image, hits = space.explore(space.mu.mean(0), k=2)
    assert isinstance(image, Image.Image) and len(hits) == 2


def test_interpolation_ends_at_the_two_items(space, tmp_path):
    frames = space.interpolate("item-0", "item-8", steps=5)
    assert len(frames) == 5
    np.testing.assert_array_equal(np.asarray(frames[0]), np.asarray(space.decode(space.mu[0])))
    np.testing.assert_array_equal(np.asarray(frames[-1]), np.asarray(space.decode(space.mu[8])))
    big = space.interpolate("item-0", "item-8", steps=3, size=2 * SIZE)
    assert [f.size for f in big] == [(2 * SIZE, 2 * SIZE)] * 3
    np.testing.assert_array_equal(np.asarray(big[-1]), np.asarray(space.decode(space.mu[8], size=2 * SIZE)))
    strip = Image.open(space.interpolation_strip("item-0", "item-8", tmp_path / "i.png", steps=5, scale=1))
    assert strip.size == (5 * SIZE, SIZE)
    with pytest.raises(KeyError):
        space.interpolate("item-0", "nope")


def test_traversal_sweeps_each_dimension_over_its_range(space, tmp_path):
    cells = space.traversal(steps=4)
    assert cells.shape == (3, 4, SIZE, SIZE, 3)
    grid = np.asarray(Image.open(space.traversal_grid(tmp_path / "t.png", steps=4, scale=1)).convert("RGB"))
    assert grid.shape[0] == 3 * SIZE and grid.shape[1] > 4 * SIZE    # plus the label column
    # one row per dimension, one column per step: the cells themselves, right of the labels
    np.testing.assert_array_equal(grid[:, -4 * SIZE:], cells.transpose(0, 2, 1, 3, 4).reshape(3 * SIZE, 4 * SIZE, 3))


def test_parse_vector():
    assert parse_vector("1, -2.5,3e-1").tolist() == pytest.approx([1.0, -2.5, 0.3])
    with pytest.raises(ValueError, match="comma-separated"):
        parse_vector("1,a")


# -- through a catalog: index, search, evaluate, cached LatentSpace.build ---------------------------
def test_catalog_search_and_evaluate_in_every_vae_mode(shapes_catalog, shapes_folder):
    cat = shapes_catalog
    cfg = AutoencoderConfig(arch="vae", latent=4, image_size=SIZE, epochs=2, batch_size=8, device="cpu")
    result = cat.train_autoencoder(cfg, "sv", progress=False)
    # the explorer's files: per-dimension stats of the catalog's µ, a traversal with a row per dimension
    stats = json.loads((result.dir / "latent_stats.json").read_text())
    assert [s["dim"] for s in stats] == [0, 1, 2, 3] and all(s["min"] <= s["mean"] <= s["max"] for s in stats)
    assert Image.open(result.dir / "traversal.png").height == 4 * SIZE   # 4 rows of SIZE-pixel images
    some_id = cat.items(limit=1)[0].id
    for spec, metric in (("vae:sv", "l2"), ("vae:sv@z", "l2"), ("vae:sv@loglik", "loglik"),
                         ("vae:sv@sym", "loglik-sym")):
        cat.index(shapes_folder, encoder=spec)
        results = cat.search(item=some_id, k=5, encoder=spec)
        assert len(results) == 5 and some_id not in [r.id for r in results]
        assert [r.score for r in results] == sorted([r.score for r in results], reverse=True)
        report = cat.evaluate(encoder=spec)
        assert report.metric == metric and report.n_queries == len(cat)
        assert 0.0 <= report.overall["mAP@5"] <= 1.0
    # a bare latent point (µ only) queries the likelihood specs, ranked as LatentSpace.nearest ranks it
    space = LatentSpace.build(cat, "sv", progress=False)
    point = space.mu[0]
    by_catalog = [r.id for r in cat.search(vector=point, k=4, encoder="vae:sv@loglik")]
    assert by_catalog == [h.id for h in space.nearest(point, k=4, mode="loglik")]
    with pytest.raises(ValueError, match="expects 8"):
        cat.search(vector=point[:3], k=4, encoder="vae:sv@loglik")
    assert len(space.ids) == len(cat) and (result.dir / "latents-shapes.npz").exists()
    # the cached space carries the same z as the @z encoder stored in the catalog
    ids, z_stored = cat.vectors("vae:sv@z")
    cached = LatentSpace.build(cat, "sv", progress=False)
    order = [cached.ids.index(i) for i in ids]
    np.testing.assert_allclose(cached.z[order], z_stored, atol=1e-5)


def test_latent_model_parses_the_spec_and_names_the_training_catalog(tmp_path):
    folder = model_dir("hvae", "m", tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"catalog": "shop"}')
    assert latent_model("hvae:m", tmp_path) == ("hvae", "m", "shop")
    for bad in ("ae:m", "vae", "colour-hist"):
        with pytest.raises(ValueError, match="vae:NAME or hvae:NAME"):
            latent_model(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="train one"):
        latent_model("vae:missing", tmp_path)


def test_aggregate_posterior_moments_and_samples():
    from lookalike.explore.latent import aggregate_posterior

    rng = np.random.default_rng(0)
    mu = rng.multivariate_normal([3.0, -1.0], [[4.0, 1.5], [1.5, 1.0]], size=4000)
    logvar = np.full_like(mu, np.log(0.25))
    mean, chol = aggregate_posterior(mu, logvar)
    np.testing.assert_allclose(mean, mu.mean(0))
    # law of total covariance: Cov(µ) + E[σ²]
    np.testing.assert_allclose(chol @ chol.T, np.cov(mu, rowvar=False) + 0.25 * np.eye(2), atol=1e-5)
    with pytest.raises(ValueError, match="2 items"):
        aggregate_posterior(mu[:1], logvar[:1])


def test_samples_come_from_the_aggregate_posterior_or_the_standard_prior(space):
    mean, chol = space.aggregate_prior()
    drawn = space.sample(4000, seed=1)
    assert drawn.shape == (4000, 3) and drawn.dtype == np.float32
    np.testing.assert_allclose(drawn.mean(0), mean, atol=0.1 * np.sqrt(np.diag(chol @ chol.T)).max())
    np.testing.assert_array_equal(space.sample(3, seed=5), space.sample(3, seed=5))  # seeded
    standard = space.sample(4000, seed=1, prior="standard")
    assert abs(standard.mean()) < 0.05 and abs(standard.std() - 1) < 0.05
    with pytest.raises(ValueError, match="prior"):
        space.sample(2, prior="gmm")
    with pytest.raises(ValueError):
        space.sample(0)
