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


def test_quality_per_label_worst_first_with_confusion_failures_and_figures(client):
    body = client.get("/api/quality?k=5").json()
    assert body["catalog"] == "shapes" and body["k"] == 5 and body["n_queries"] == N_ITEMS
    rows = body["labels"]
    assert [(r["map_at_k"], r["p_at_1"]) for r in rows] == sorted((r["map_at_k"], r["p_at_1"]) for r in rows)
    assert sum(r["n"] for r in rows) == N_ITEMS
    counts = body["confusion"]["counts"]
    assert body["confusion"]["labels"] == [r["label"] for r in rows]
    assert sum(map(sum, counts)) == N_ITEMS
    assert [row[i] for i, row in enumerate(counts)] == [round(r["p_at_1"] * r["n"]) for r in rows]
    worst = body["failures"][0]
    assert worst["label"] == rows[0]["label"]
    for failed in worst["queries"]:
        assert failed["query"]["label"] == worst["label"] and failed["returned"][0]["label"] != worst["label"]
        assert failed["query"]["thumb_url"].startswith("/api/items/")
    for name, url in body["figures"].items():
        png = client.get(url)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png", name
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_quality_rejects_bad_input_as_json(client):
    assert_error(client.get("/api/quality?k=0"), 422)
    assert_error(client.get("/api/quality?k=ten"), 422)
    assert_error(client.get("/api/quality/pie.png"), 422)
    assert_error(client.get("/api/quality?encoder=nope"), 404)
    assert_error(client.get("/api/quality/labels.png?encoder=nope"), 404)


def test_quality_without_labels_is_a_422_in_words(tmp_path):
    import numpy as np
    from fastapi.testclient import TestClient

    from fakes import vector_catalog
    from lookalike.api import create_app

    vector_catalog(tmp_path, "nolabels", np.eye(4, 8, dtype=np.float32), [None, None, None, None])
    with TestClient(create_app("nolabels", home=tmp_path)) as client:
        body = assert_error(client.get("/api/quality"), 422)
        assert "evaluate" in body["message"]
        assert_error(client.get("/api/quality/labels.png"), 422)
