"""Leave-one-out evaluation (lookalike.evaluation.retrieval); the metric maths is in test_metrics.py."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.evaluation.retrieval import evaluate_vectors, index_neighbours, nearest_neighbours, parse_index_spec


def _toy():
    # Two tight clusters on a line; item 2 is an "a" that sits with the "b"s.
    vectors = np.array([[0.0], [0.1], [5.0], [5.3], [5.5], [5.6]], np.float32)
    labels = ["a", "a", "a", "b", "b", "b"]
    return vectors, labels


def test_leave_one_out_excludes_self():
    vectors, labels = _toy()
    nn = nearest_neighbours(vectors, k=5, metric="l2")
    for q, row in enumerate(nn):
        assert q not in row
        assert sorted(row.tolist()) == sorted(set(range(6)) - {q})


def test_self_excluded_even_with_duplicate_vectors():
    vectors = np.zeros((4, 3), np.float32)
    nn = nearest_neighbours(vectors, k=3, metric="l2")
    for q, row in enumerate(nn):
        assert q not in row and len(set(row.tolist())) == 3


def test_evaluate_vectors_by_hand():
    vectors, labels = _toy()
    report = evaluate_vectors(vectors, labels, ks=(1, 2), metric="l2")
    # Nearest (l2): 0 -> 1, 1 -> 0, 2 -> 3 (miss), 3 -> 4, 4 -> 5, 5 -> 4: P@1 = 5/6
    assert report.overall["P@1"] == pytest.approx(5 / 6)
    # "a" queries: 0 -> 1, 2 and 1 -> 0, 2 find both other "a"s; 2 -> 3, 4 finds none
    assert report.per_label["a"]["R@2"] == pytest.approx((1 + 1 + 0) / 3)
    assert report.n_queries == 6
    assert set(report.per_label) == {"a", "b"}
    assert report.per_label["a"]["P@1"] == pytest.approx(2 / 3)
    assert report.per_label["a"]["n"] == 3
    assert report.to_dict()["overall"]["R@2"] == pytest.approx(report.overall["R@2"])


def test_multi_label_tuples_must_all_match():
    vectors = np.array([[0.0], [0.1], [0.2], [0.3]], np.float32)
    labels = [("shirt", "red"), ("shirt", "blue"), ("shirt", "red"), ("dress", "red")]
    report = evaluate_vectors(vectors, labels, ks=(1,), metric="l2")
    # Only the two red shirts are relevant to each other; the others have no relevant item.
    assert report.n_queries == 2 and report.n_skipped == 2
    # 0 -> nearest 1 (blue shirt): miss; 2 -> nearest 1 or 3 (both 0.1 away): miss.
    assert report.overall["P@1"] == pytest.approx(0.0)
    assert report.overall["R@1"] == pytest.approx(0.0)
    assert "shirt / red" in report.per_label
    # The same labels as a 2-D array (one column per label field) give the same report.
    same = evaluate_vectors(vectors, np.array(labels), ks=(1,), metric="l2")
    assert same.n_queries == 2 and same.overall == report.overall


def test_none_labels_are_not_queries_or_gallery():
    vectors = np.array([[0.0], [0.01], [1.0], [3.0]], np.float32)
    labels = ["a", None, "a", "b"]
    report = evaluate_vectors(vectors, labels, ks=(1,), metric="l2")
    # Without item 1 in the gallery, 0's nearest is 2 (an "a"): hit.
    assert report.n_items == 3
    assert report.per_label["a"]["P@1"] == pytest.approx(1.0)


def test_subset_restricts_queries_and_gallery():
    vectors, labels = _toy()
    report = evaluate_vectors(vectors, labels, ks=(1,), metric="l2", subset=[0, 1, 3, 4, 5])
    # Without item 2 every nearest neighbour shares the label.
    assert report.overall["P@1"] == pytest.approx(1.0)
    assert report.n_queries == 5


def test_cosine_and_l1_metrics_and_table():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    labels = [i % 3 for i in range(60)]
    vectors = centres[labels] + 0.1 * rng.normal(size=(60, 16))
    for metric in ("cosine", "l2", "l1"):
        report = evaluate_vectors(vectors, labels, ks=(1, 5, 10), metric=metric)
        assert report.overall["P@1"] == pytest.approx(1.0)
        assert report.overall["mAP@10"] == pytest.approx(1.0)
        assert report.overall["R@10"] == pytest.approx(10 / 19)
    table = report.to_table("toy")
    assert table.row_count == 4  # all + 3 labels
    with pytest.raises(ValueError):
        evaluate_vectors(vectors, labels, metric="hamming")


def test_random_vectors_score_near_chance():
    rng = np.random.default_rng(1)
    labels = [i % 4 for i in range(400)]
    report = evaluate_vectors(rng.normal(size=(400, 8)), labels, ks=(10,))
    assert report.overall["P@10"] == pytest.approx(0.25, abs=0.05)


def test_evaluate_through_an_index_matches_exact_when_it_re_ranks(tmp_path):
    """``evaluate --index reduced``: PCA-reduced graph candidates re-ranked on the full vectors give
    the exact ranking's quality; without the re-rank (rerank=1) the reduction alone shows."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 64)))[0][:12]
    labels = rng.integers(0, 6, 2400)
    centres = rng.normal(size=(6, 12)) * 1.5
    vectors = ((centres[labels] + rng.normal(size=(2400, 12))) @ basis
               + 0.3 * rng.normal(size=(2400, 64))).astype(np.float32)
    exact = evaluate_vectors(vectors, labels.tolist(), ks=(10,))
    reduced = evaluate_vectors(vectors, labels.tolist(), ks=(10,), index="reduced,pca_dim=16")
    assert abs(reduced.overall["mAP@10"] - exact.overall["mAP@10"]) <= 0.005
    found = index_neighbours(vectors, 10, "cosine", np.arange(100, 400), "reduced,pca_dim=16")
    assert found.shape == (300, 10) and (found >= 100).all() and (found < 400).all()
    assert not (found == np.arange(100, 400)[:, None]).any()           # never the query itself
    assert parse_index_spec("hnsw,ef_search=48") == ("hnsw", {"ef_search": 48})
    for bad in ("nope", "reduced,rerank=x", "reduced,colour=1"):
        with pytest.raises(ValueError):
            parse_index_spec(bad)
