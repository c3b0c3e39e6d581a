"""Metric learning: mining, losses, head training, per-group routing, the metric:NAME encoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lookalike.evaluation.retrieval import evaluate_vectors
from lookalike.train.losses import LOSSES, make_loss, mine_triplets, pairwise_distances
from lookalike.encoders.metric import ProjectionHead
from lookalike.train.metric import MetricHeadConfig, MetricHeads, embed, fit_head

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_features(n_per_class=40, n_classes=5, dim=48, signal_dims=6, seed=0):
    """Class information lives in a few dimensions, drowned by larger noise in all of them: raw
    cosine retrieval is mediocre, a learned projection that finds the signal does much better."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (n_classes, signal_dims))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    x = rng.normal(0, 1.5, (len(labels), dim)).astype(np.float32)
    x[:, :signal_dims] += centres[labels] * 3.0
    x += 3.0  # a shared offset, as pooled CNN features have
    return x.astype(np.float32), labels


def split(labels, seed=0):
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: len(members) // 2]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def held_out_map(vectors, labels, test):
    return evaluate_vectors(vectors, list(labels), (10,), subset=test).overall["mAP@10"]


@pytest.mark.parametrize("loss", LOSSES)
def test_training_improves_held_out_map_over_untrained_head(loss):
    x, y = synthetic_features()
    train, test = split(y)
    config = MetricHeadConfig(loss=loss, dim=16, epochs=60, lr=1e-2, classes_per_batch=5, per_class=12, dropout=0.0)
    torch.manual_seed(config.seed)
    untrained = ProjectionHead(x.shape[1], config.dim, 0, 0.0).eval()
    result = fit_head(x[train], y[train], config)
    before = held_out_map(embed(untrained, x), y, test)
    after = held_out_map(embed(result.head, x), y, test)
    assert after > before + 0.1, (loss, before, after)
    assert result.history[-1] < result.history[0]  # the loss went down


def test_semihard_mining_picks_valid_triplets():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    labels = torch.randint(0, 4, (40,))
    a, p, n = mine_triplets(emb, labels, "semihard")
    sizes = torch.bincount(labels)
    assert len(a) == int((sizes * (sizes - 1)).sum())  # every (anchor, positive) pair: all have negatives
    assert bool((labels[a] == labels[p]).all()) and bool((a != p).all())
    assert bool((labels[a] != labels[n]).all())
    dist = pairwise_distances(emb)
    for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist()):
        negatives = (labels != labels[ai]).nonzero().flatten()
        farther = negatives[dist[ai, negatives] > dist[ai, pi]]
        if len(farther):  # semi-hard: the closest negative that is still farther than the positive
            assert dist[ai, ni] > dist[ai, pi]
            assert torch.isclose(dist[ai, ni], dist[ai, farther].min())
        else:  # none farther: the farthest negative
            assert torch.isclose(dist[ai, ni], dist[ai, negatives].max())


def test_hard_mining_picks_farthest_positive_and_closest_negative():
    torch.manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
    labels = torch.arange(30) % 3
    a, p, n = mine_triplets(emb, labels, "hard")
    dist = pairwise_distances(emb)
    assert len(a) == 30
    for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist()):
        same = (labels == labels[ai]) & (torch.arange(30) != ai)
        assert labels[pi] == labels[ai] and labels[ni] != labels[ai]
        assert torch.isclose(dist[ai, pi], dist[ai, same].max())
        assert torch.isclose(dist[ai, ni], dist[ai, labels != labels[ai]].min())


def test_anchor_without_positive_is_skipped_and_losses_are_finite():
    emb = torch.nn.functional.normalize(torch.randn(5, 4), dim=1).requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 4])  # no positives at all
    a, _, _ = mine_triplets(emb, labels, "semihard")
    assert len(a) == 0
    for name in LOSSES:
        loss_fn, _ = make_loss(name, 5, 4)
        value = loss_fn(emb, labels)
        assert torch.isfinite(value)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("arcface-ish", 3, 8)


def test_per_group_routing_picks_the_right_model_and_block():
    from sklearn.linear_model import LogisticRegression

    from lookalike.encoders.metric import MetricModel

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 12)).astype(np.float32)
    groups = np.where(np.arange(60) < 30, "tops", "shoes")
    x[groups == "tops", 0] += 6.0  # the router can tell the groups apart from feature 0
    router = LogisticRegression().fit(x, groups)
    heads = {g: ProjectionHead(12, 4, 0, 0.0).eval() for g in ("shoes", "tops")}
    model = MetricModel(heads, {}, router)
    assert model.dim == 8
    routed = model.route(x)
    assert [model.groups[i] for i in routed] == list(groups)
    vectors = model.embed(x)
    tops_block, shoes_block = vectors[:, 4:], vectors[:, :4]  # groups in insertion order: shoes, tops
    assert np.allclose(np.linalg.norm(tops_block[groups == "tops"], axis=1), 1, atol=1e-5)
    assert np.allclose(shoes_block[groups == "tops"], 0)
    assert np.allclose(tops_block[groups == "shoes"], 0)
    # Each block is exactly that group's head applied to the features.
    with torch.inference_mode():
        expected = heads["shoes"](torch.from_numpy(x[groups == "shoes"])).numpy()
    assert np.allclose(shoes_block[groups == "shoes"], expected, atol=1e-6)


def test_metric_model_save_load_round_trip(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from lookalike.encoders.metric import MetricModel

    x, y = synthetic_features(n_per_class=10, n_classes=2, dim=12)
    groups = np.where(y == 0, "a", "b")
    model = MetricModel({g: ProjectionHead(12, 4, 8, 0.1).eval() for g in ("a", "b")}, {},
                        LogisticRegression().fit(x, groups))
    heads = MetricHeads()
    heads.model, heads.info = model, {"name": "m"}
    heads.save(tmp_path / "m")
    loaded = MetricModel.load(tmp_path / "m")
    assert loaded.groups == ["a", "b"] and loaded.config["name"] == "m"
    assert MetricHeads.load(tmp_path / "m").info["name"] == "m"
    assert np.allclose(loaded.embed(x), model.embed(x), atol=1e-6)
    assert loaded.identity() == MetricModel.load(tmp_path / "m").identity()
