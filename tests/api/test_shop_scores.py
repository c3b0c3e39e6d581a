"""/api/shop reports each region's hits with the score and distance of the search that found them,
for every metric (it once rebuilt the distance as 1 - score, right for cosine encoders only)."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402
from lookalike.catalog import Catalog  # noqa: E402
from lookalike.shop.pipeline import load_photo  # noqa: E402


def test_shop_region_scores_match_search_scores_for_an_l2_encoder(tmp_path, shapes_folder, monkeypatch):
    import lookalike.shop.pipeline as shop
    from web_catalog import FakeDetector, outfit_photo, write_shapes_csv

    cat = Catalog.create("tiny-shapes", home=tmp_path)
    assert cat.index(write_shapes_csv(shapes_folder, tmp_path / "shapes.csv"), "tiny").failed == 0
    monkeypatch.setattr(shop, "get_detector", lambda *a, **kw: FakeDetector())
    look = tmp_path / "look.png"
    outfit_photo().save(look)
    with TestClient(create_app("tiny-shapes", home=tmp_path, api_key="")) as client:
        response = client.post("/api/shop", files={"file": ("look.png", look.read_bytes())}, data={"k": "3"})
    body = response.json()
    assert response.status_code == 200, body
    assert body["encoder"] == "tiny" and len(body["regions"]) >= 2
    photo = load_photo(look)
    for region in body["regions"]:
        vector = cat.embed_images([photo.crop(tuple(region["box"]))], "tiny")[0]
        where = {"label": region["searched"]} if region["searched"] else None
        expected = cat.search(vector=vector, k=3, where=where, encoder="tiny")
        got = region["results"]
        assert [h["id"] for h in got] == [r.id for r in expected] and len(got) == 3
        for hit, result in zip(got, expected):
            assert hit["score"] == pytest.approx(result.score, abs=1e-6)
            assert hit["distance"] == pytest.approx(result.distance, abs=1e-5)
            # l2: score = 1 / (1 + Euclidean distance), not 1 - distance
            assert hit["distance"] > 1.0 and hit["score"] == pytest.approx(1.0 / (1.0 + hit["distance"]), rel=1e-5)
