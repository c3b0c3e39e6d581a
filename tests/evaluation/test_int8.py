"""The int8 quality check: mAP@10 of int8 vectors against fp32 on the same images, labels or not."""
import numpy as np
import pytest

from lookalike.evaluation import int8 as int8_check
from lookalike.evaluation.int8 import check_int8, pseudo_labels


def _clusters(n_per=12, k=5, dim=16, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + spread * rng.normal(size=(len(labels), dim))).astype(np.float32), labels.tolist()


def test_same_vectors_lose_nothing_and_are_chosen():
    vectors, labels = _clusters()
    check = check_int8(vectors, vectors.copy(), labels)
    assert check.protocol == "labels" and check.n_items == len(vectors)
    assert check.loss == pytest.approx(0.0) and check.chosen
    assert "chosen" in check.describe() and "labels" in check.describe()


def test_a_loss_above_the_bar_is_refused_and_the_bar_is_read_at_call_time(monkeypatch):
    vectors, labels = _clusters()
    noisy = vectors + np.random.default_rng(1).normal(scale=3.0, size=vectors.shape).astype(np.float32)
    check = check_int8(vectors, noisy, labels)
    assert check.loss > 0.005 and not check.chosen
    monkeypatch.setattr(int8_check, "INT8_MAX_LOSS", 1.0)
    assert check_int8(vectors, noisy, labels).chosen


def test_without_labels_fp32_clusters_stand_in():
    vectors, _ = _clusters()
    groups = pseudo_labels(vectors)
    assert groups.shape == (len(vectors),) and len(set(groups.tolist())) >= 2
    check = check_int8(vectors, vectors * 1.0001, labels=[None] * len(vectors))
    assert check.protocol == "fp32-clusters" and check.chosen and check.map_fp32 > 0.5


def test_mismatched_or_tiny_inputs_are_refused():
    vectors, labels = _clusters()
    with pytest.raises(ValueError):
        check_int8(vectors, vectors[:-1], labels)
    with pytest.raises(ValueError):
        check_int8(vectors[:3], vectors[:3])
