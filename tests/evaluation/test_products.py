"""Product-level leave-one-out evaluation, by hand-computed rankings."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.evaluation.products import evaluate_products, fold_to_products, product_ids

from fakes import vector_catalog


def test_product_ids_give_missing_values_their_own_product():
    assert product_ids(["a", "b", "a", None, "", "b"]).tolist() == [0, 1, 0, 2, 3, 1]


def test_fold_keeps_first_image_and_drops_the_query_product():
    product = np.array([0, 0, 1, 1, 2, 3])
    neighbours = np.array([[1, 2, 3, 4, -1], [2, 0, 5, 3, 4]])
    folded = fold_to_products(neighbours, product, query_product=np.array([0, 0]), depth=3)
    assert folded.tolist() == [[2, 4, -1], [2, 5, 4]]


def _points(angles_deg):
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


def test_product_level_metrics_by_hand():
    # positions on a circle (degrees):  product P (shirt) 0, 1;  Q (shirt) 10;  R (dress) 5, 6;  S (shirt) 30
    vectors = _points([0, 1, 10, 5, 6, 30])
    labels = ["shirt", "shirt", "shirt", "dress", "dress", "shirt"]
    products = ["P", "P", "Q", "R", "R", "S"]
    report = evaluate_products(vectors, labels, products, ks=(1, 2), metric="cosine")
    # query 0 (P): items 1 (P, dropped), 3 (R), 4 (R), 2 (Q), 5 (S) -> products R, Q: relevance 0, 1; 2 relevant (Q, S)
    # query 1 (P): 0 (P), 4/3 (R), 2 (Q), 5 -> R, Q: 0, 1
    # query 2 (Q): 4 (R, 4 deg), 3, 1, 0, 5 (20 deg) -> R, P: 0, 1; relevant P, S
    # query 5 (S): 2 (Q), 4 (R), ... -> Q, R: 1, 0; relevant P, Q
    # queries 3, 4 (R, dress): no other dress product -> skipped
    assert report.n_queries == 4 and report.n_skipped == 2 and report.extra["n_products"] == 4
    assert report.overall["P@1"] == pytest.approx(0.25)
    assert report.overall["P@2"] == pytest.approx(0.5)
    assert report.overall["R@2"] == pytest.approx(0.5)
    # AP@2: queries 0,1,2: 1/2 hit at rank 2 -> (1/2)/min(2, 2) = 0.25; query 5: hit at rank 1 -> 1/2 = 0.5
    assert report.overall["mAP@2"] == pytest.approx((0.25 * 3 + 0.5) / 4)


def test_product_label_is_its_most_common_label():
    vectors = _points([0, 50, 51, 52, 90])
    labels = ["shirt", "shirt", "shirt", "dress", "shirt"]
    report = evaluate_products(vectors, labels, ["A", "B", "B", "B", "C"], ks=(1,))
    # B is a shirt product (2 of 3): query 0 -> B first (50 deg) relevant
    assert report.per_label["shirt"]["P@1"] >= 0.25 and report.extra["n_products"] == 3


def test_catalog_evaluate_group_by(tmp_path):
    vectors = _points([0, 1, 10, 5, 6, 30])
    meta = [{"product_id": p} for p in ["P", "P", "Q", "R", "R", "S"]]
    cat = vector_catalog(tmp_path, "ev", vectors, ["shirt", "shirt", "shirt", "dress", "dress", "shirt"], metadata=meta)
    report = cat.evaluate(ks=(1, 2), group_by="product_id", expansion="none")
    assert report.overall["P@1"] == pytest.approx(0.25) and report.extra["group_by"] == "product_id"
    plain = cat.evaluate(ks=(1,), expansion="none")
    assert plain.overall["P@1"] > report.overall["P@1"]   # the same product's image is the easy hit
