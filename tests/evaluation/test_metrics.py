"""Retrieval metric maths (lookalike.evaluation.metrics) against hand-computed examples."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.evaluation.metrics import (
    average_precision_at_k,
    frechet_distance,
    metrics_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

# One query: ranks 1 and 3 relevant, 3 relevant items exist in total.
REL = [1, 0, 1, 0, 0]


def test_precision_and_recall_by_hand():
    assert precision_at_k(REL, 1)[0] == pytest.approx(1.0)
    assert precision_at_k(REL, 3)[0] == pytest.approx(2 / 3)
    assert precision_at_k(REL, 5)[0] == pytest.approx(2 / 5)
    assert recall_at_k(REL, 1, 3)[0] == pytest.approx(1 / 3)
    assert recall_at_k(REL, 5, 3)[0] == pytest.approx(2 / 3)


def test_average_precision_by_hand():
    # AP@5 = (P@1*1 + P@3*1) / min(5, 3) = (1 + 2/3) / 3
    assert average_precision_at_k(REL, 5, 3)[0] == pytest.approx((1 + 2 / 3) / 3)
    # AP@2 = P@1 / min(2, 3) = 1/2
    assert average_precision_at_k(REL, 2, 3)[0] == pytest.approx(0.5)
    # Only one relevant item in total and it is at rank 2: AP@5 = P@2 / 1 = 0.5
    assert average_precision_at_k([0, 1, 0, 0, 0], 5, 1)[0] == pytest.approx(0.5)
    # Perfect ranking gives 1
    assert average_precision_at_k([1, 1, 0], 3, 2)[0] == pytest.approx(1.0)


def test_ndcg_by_hand():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(REL, 5, 3)[0] == pytest.approx(dcg / ideal)
    assert ndcg_at_k(REL, 1, 3)[0] == pytest.approx(1.0)
    # Ideal is capped by the number of relevant items: 1 relevant at rank 1 is perfect.
    assert ndcg_at_k([1, 0, 0], 3, 1)[0] == pytest.approx(1.0)
    assert ndcg_at_k([0, 0, 1], 3, 1)[0] == pytest.approx(1 / math.log2(4))


def test_metrics_are_vectorised_over_queries_and_padded():
    rel = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0]])
    out = metrics_at_k(rel, [3, 1], ks=(5,))
    assert out["P@5"] == pytest.approx([0.4, 0.2])
    assert out["mAP@5"] == pytest.approx([(1 + 2 / 3) / 3, 0.5])
    # Asking for k beyond the retrieved ranks counts the missing ranks as misses.
    assert precision_at_k([[1, 1]], 4)[0] == pytest.approx(0.5)


def test_frechet_distance_matches_the_closed_form_of_two_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N(m, s² I): |m|² + d (1 - s)²
    b = rng.normal(size=(4000, 3)) * 2.0 + np.array([1.0, 0.0, -1.0])
    assert frechet_distance(a, b) == pytest.approx(2.0 + 3 * (1 - 2.0) ** 2, rel=0.1)
    # fewer samples than dimensions (singular covariances) stays finite and non-negative
    c = rng.normal(size=(10, 50))
    assert np.isfinite(frechet_distance(c, c[::-1] + 0.5)) and frechet_distance(c, c + 0.0) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a, rng.normal(size=(10, 4)))
