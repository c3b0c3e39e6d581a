"""Per-label quality, top-1 confusion and failed queries (evaluation.quality) on hand-built vectors."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.evaluation import evaluate_vectors
from lookalike.evaluation.quality import label_quality


def vectors():
    # "a" items sit together; "b" items sit together, except b3, which sits among the "a" items;
    # "c" items are far apart from each other and each next to a "b" item.
    points = {"a0": (0, 0), "a1": (0.1, 0), "a2": (0, 0.1), "b3": (0.05, 0.05),
              "b0": (10, 0), "b1": (10.1, 0), "b2": (10, 0.1),
              "c0": (10.2, 0.2), "c1": (-10, 10), "c2": (-10, -10), "x": (30, 30)}
    labels = [name[0] if name != "x" else None for name in points]
    return np.array(list(points.values()), np.float32), labels, list(points)


def test_per_label_rows_are_worst_first_and_match_the_leave_one_out_evaluation():
    x, labels, _ = vectors()
    report = label_quality(x, labels, k=3, metric="l2")
    assert [r.label for r in report.labels] == sorted([r.label for r in report.labels],
                                                      key=lambda lab: next((r.map_at_k, r.p_at_1) for r in report.labels if r.label == lab))
    assert report.labels[0].label == "c" and report.labels[0].p_at_1 == 0.0
    reference = evaluate_vectors(x, labels, ks=(1, 3), metric="l2")
    for row in report.labels:
        assert row.p_at_1 == pytest.approx(reference.per_label[row.label]["P@1"])
        assert row.map_at_k == pytest.approx(reference.per_label[row.label]["mAP@3"])
        assert row.n == reference.per_label[row.label]["n"]
    assert report.overall["P@1"] == pytest.approx(reference.overall["P@1"])
    assert report.n_queries == 10  # the unlabelled item is neither query nor gallery


def test_confusion_rows_are_query_labels_and_columns_the_top1_label():
    x, labels, names = vectors()
    report = label_quality(x, labels, k=3, metric="l2")
    order = report.confusion_labels
    counts = {(order[i], order[j]): int(report.confusion[i, j]) for i in range(len(order)) for j in range(len(order))}
    assert counts[("b", "a")] == 1            # b3's nearest neighbour is an "a"
    assert counts[("a", "b")] == 3            # b3 is nearer to each "a" than the other "a" items are
    assert sum(counts[("c", other)] for other in order) == 3 and counts[("c", "c")] == 0
    assert report.confusion.sum() == report.n_queries
    assert np.trace(report.confusion) == pytest.approx(sum(r.p_at_1 * r.n for r in report.labels))
    b = next(r for r in report.labels if r.label == "b")
    assert b.confused_with == "a" and b.confused_share == pytest.approx(1 / 4)


def test_failed_queries_of_the_worst_labels_list_what_came_back():
    x, labels, names = vectors()
    report = label_quality(x, labels, k=3, metric="l2", worst=2, failures_per_label=2, shown=3)
    assert list(report.failures) == [r.label for r in report.labels[:2]]
    for label, failed in report.failures.items():
        assert len(failed) <= 2
        for f in failed:
            assert labels[f.query] == label and f.returned_labels[0] != label
            assert len(f.returned) == 3 and f.query not in f.returned
            assert f.returned_labels == [labels[r] for r in f.returned]
    report.ids = names
    doc = report.to_dict()
    assert doc["failures"][0]["queries"][0]["query"] in names
    assert doc["confusion"]["labels"] == report.confusion_labels


def test_nothing_to_measure_is_an_error():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        label_quality(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    with pytest.raises(ValueError):
        label_quality(np.eye(3, dtype=np.float32), [None, None, "a"])
