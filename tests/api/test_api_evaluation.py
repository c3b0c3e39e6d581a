"""The evaluation summary route."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from fakes import FAST, N_ITEMS, assert_error  # noqa: E402


def test_evaluation_summary(client):
    body = client.get("/api/evaluation?ks=1,5").json()
    assert body["catalog"] == "shapes" and body["encoder"] == FAST
    assert set(body["metrics"]) >= {"P@1", "P@5", "mAP@5", "NDCG@5"}
    assert body["metrics"]["P@1"] > 0.25  # chance is 1/9; a colour histogram finds the colour, a third share the shape
    assert body["details"]["n_queries"] == N_ITEMS and "circle-red" in body["details"]["per_label"]
    assert_error(client.get("/api/evaluation?ks=0"), 422)
    assert_error(client.get("/api/evaluation?ks=one"), 422)
