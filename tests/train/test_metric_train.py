"""`train metric` end to end on a tiny generated catalog: per-group heads, routing, metric:NAME encoder."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike import Catalog
from lookalike.train.metric import MetricHeadConfig, train_metric

from fakes import make_shapes_csv


@pytest.fixture(scope="module")
def shapes_csv(tmp_path_factory):
    return make_shapes_csv(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_csv):
    """Colour heads, one per shape (the group), routed by a shape classifier."""
    cat = Catalog.create("shapes", home=tmp_path_factory.mktemp("home"))
    cat.index(shapes_csv, encoder="tiny")
    config = MetricHeadConfig(dim=8, epochs=15, classes_per_batch=3, per_class=4, dropout=0.0)
    report = train_metric(cat, "colour", group_column="label", holdout=0.5, name="by-shape", config=config)
    return cat, report, shapes_csv


def test_per_group_model_is_trained_evaluated_and_saved(trained):
    cat, report, _ = trained
    assert report.groups == ["circle", "square", "triangle"]
    assert report.n_train + report.n_test == 54 and report.n_test == 27
    for scores in (report.baseline, report.trained):
        assert 0.0 <= scores["mAP@10"] <= 1.0 and "P@1" in scores
    assert report.router_accuracy is not None and report.router_accuracy > 0.9  # shape from CNN features is easy
    folder = cat.home / "models" / "metric" / "by-shape"
    assert sorted(p.name for p in folder.glob("head-*.pt")) == ["head-0.pt", "head-1.pt", "head-2.pt"]
    assert (folder / "router.joblib").exists() and (folder / "report.json").exists()
    assert (folder / "loss.png").stat().st_size > 1000


def test_metric_encoder_indexes_routes_and_searches(trained):
    cat, _, source = trained
    cat.index(source, encoder="metric:by-shape")
    ids, vectors = cat.vectors("metric:by-shape")
    assert vectors.shape == (54, 24)
    blocks = np.abs(vectors.reshape(54, 3, 8)).sum(axis=2)
    assert ((blocks > 0).sum(axis=1) == 1).all()  # exactly one group's block is filled
    groups = np.array(["circle", "square", "triangle"])[blocks.argmax(axis=1)]
    shapes = [cat.get(i).label for i in ids]
    assert np.mean(groups == np.array(shapes)) > 0.9  # routed by the item's group
    hits = cat.search(item=ids[0], k=5, encoder="metric:by-shape")
    assert len(hits) == 5 and ids[0] not in [h.id for h in hits]
    same_group = [cat.get(h.id).label for h in hits]
    assert same_group.count(groups[0]) >= 4  # search stays within the query's group first
    report = cat.evaluate(encoder="metric:by-shape")
    assert report.n_queries == 54


def test_encoder_preprocesses_like_training(trained):
    """The saved model records the pretrained encoder's resize mode, the encoder uses it, and its
    vectors equal the head applied to the cached training features (no train/serve skew)."""
    from lookalike.encoders import get_encoder
    from lookalike.encoders.pretrained import DEFAULTS, IMAGE_SIZE, preprocess_image
    from lookalike.train.metric import backbone_features

    cat, _, source = trained
    encoder = get_encoder("metric:by-shape", home=cat.home)
    assert encoder.model.config["backbone"]["resize"] == encoder.resize == DEFAULTS["resize"]
    assert f"resize={DEFAULTS['resize']}" in encoder.fingerprint()
    wide = Image.new("RGB", (120, 40), "white")
    wide.paste((200, 30, 30), (0, 0, 30, 40))  # red band only at the left edge, cut by a centre crop
    pixels = encoder.preprocess(wide)
    assert np.allclose(pixels, preprocess_image(wide, IMAGE_SIZE, DEFAULTS["resize"]))
    assert not np.allclose(pixels, preprocess_image(wide, IMAGE_SIZE, "stretch"))
    cat.index(source, encoder="metric:by-shape")
    ids, vectors = cat.vectors("metric:by-shape")
    items = [cat.get(i) for i in ids[:6]]
    views, errors = backbone_features(cat, items)
    assert not errors
    expected = encoder.model.embed(views.mean(axis=1))
    assert np.allclose(expected, vectors[:6], atol=1e-3)


@pytest.mark.slow  # 50-65 s here (compare_losses trains four heads); per-group training runs by default
def test_single_group_split_column_and_bad_input(tmp_path, shapes_csv):
    cat = Catalog.create("shapes", home=tmp_path / "home")
    cat.index(shapes_csv, encoder="tiny")
    config = MetricHeadConfig(dim=8, epochs=3, classes_per_batch=3, per_class=4)
    report = train_metric(cat, "colour", split_column="split", name="plain", config=config,
                          compare_losses=True)
    assert (report.n_train, report.n_test) == (36, 18) and report.groups == ["all"]
    assert set(report.losses_compared) == {"triplet-semihard", "triplet-hard", "multi-similarity", "proxy-anchor"}
    with pytest.raises(ValueError, match="fewer than 4"):
        train_metric(cat, "no_such_column", config=config)
    with pytest.raises(FileNotFoundError, match="train metric"):
        cat.encoder("metric:missing")


def test_metric_encoder_runtime_option(trained):
    cat, _, _ = trained
    from lookalike.encoders import get_encoder

    torch_enc = get_encoder("metric:by-shape,runtime=torch", home=cat.home)
    assert torch_enc.runner.runtime == "torch" and torch_enc.name == "metric:by-shape,runtime=torch"
    onnx_enc = get_encoder("metric:by-shape,runtime=onnx", home=cat.home)
    assert onnx_enc.fingerprint() == torch_enc.fingerprint()  # fp32 on either runtime: same vectors
    with pytest.raises(ValueError, match="unknown metric encoder option"):
        get_encoder("metric:by-shape,colour=1", home=cat.home)


def test_cli_train_metric(trained, monkeypatch):
    from typer.testing import CliRunner

    from lookalike.cli import app

    cat, _, _ = trained
    monkeypatch.setenv("LOOKALIKE_HOME", str(cat.home))
    result = CliRunner().invoke(app, ["train", "metric", "--catalog", "shapes", "--label", "colour",
                                      "--epochs", "2", "--dim", "4", "--name", "cli-model", "--json"])
    assert result.exit_code == 0, result.output
    assert '"trained"' in result.output and (cat.home / "models" / "metric" / "cli-model" / "config.json").exists()
    # The saved model loads and embeds: one 4-d unit block per image, equal to the heads on its features.
    from lookalike.encoders import get_encoder
    from lookalike.train.metric import MetricHeads, backbone_features

    encoder = get_encoder("metric:cli-model", home=cat.home)
    items = cat.items(limit=3)
    vectors = cat.embed_images([it.path for it in items], "metric:cli-model")
    assert vectors.shape == (3, 4) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    views, _ = backbone_features(cat, items)
    loaded = MetricHeads.load(cat.home / "models" / "metric" / "cli-model")
    assert loaded.config.epochs == 2 and loaded.config.dim == 4 and encoder.dim == 4
    assert np.allclose(loaded.embed(views.mean(axis=1)), vectors, atol=1e-3)
    result = CliRunner().invoke(app, ["train", "metric", "--catalog", "shapes", "--loss", "contrastive"])
    assert result.exit_code != 0 and "--loss must be one of" in result.output
