"""Shop the look over HTTP, with the fake detector and with the real pose model; region hits carry
the scores and distances of their searches."""
from __future__ import annotations

import sys

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402
from lookalike.catalog import Catalog  # noqa: E402
from lookalike.shop import pose  # noqa: E402
from lookalike.shop.pipeline import load_photo  # noqa: E402

from fakes import QUERY_ID, assert_error, outfit_photo, png_bytes, write_shapes_csv  # noqa: E402


def test_shop_the_look_regions_with_results(client, fake_detector):
    response = client.post("/api/shop", files={"file": ("look.png", png_bytes(outfit_photo()))}, data={"k": "2"})
    body = response.json()
    assert response.status_code == 200, body
    assert (body["width"], body["height"]) == (200, 400) and body["detector"] == "fake"
    assert {r["region"] for r in body["regions"]} >= {"top", "bottom"}
    top = next(r for r in body["regions"] if r["region"] == "top")
    # the shapes' labels are in no synonym list: every core region fits with the prior 0.5, the
    # probe names the category it sees; head and hands need more evidence and say so
    assert top["fit"] == pytest.approx(0.5, abs=0.01) and top["category"] in top["searched"]
    assert 0 < top["confidence"] <= 1 and top["visibility"] > 0.9
    assert {s["name"] for s in body["skipped"]} >= {"head", "hands", "onepiece"}
    assert all(s["reason"] and s["person"] == 0 for s in body["skipped"])
    x0, y0, x1, y1 = top["box"]
    assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 400 and len(top["results"]) == 2
    assert top["results"][0]["metadata"] == {} and top["results"][0]["thumb_url"].startswith("/api/items/")
    assert "red" in top["results"][0]["label"]  # the top is red: colour histograms find red shapes


def test_shop_the_look_errors(client, fake_detector):
    small = png_bytes(Image.new("RGB", (120, 120), "white"))
    assert_error(client.post("/api/shop", files={"file": ("a.png", small)}), 422, "no_person")
    assert_error(client.post("/api/shop", files={"file": ("a.txt", b"hello")}), 415)
    tiny = png_bytes(Image.new("RGB", (40, 40), "white"))
    assert "too small" in assert_error(client.post("/api/shop", files={"file": ("a.png", tiny)}), 422, "bad_photo")["message"]
    assert_error(client.get(f"/api/items/{QUERY_ID}/shop"), 422, "no_person")  # a product photo: nobody in it
    assert_error(client.get("/api/items/missing/shop"), 404)


def test_shop_the_look_without_mediapipe_is_409_naming_the_extra(client, monkeypatch):
    """The route imports the shop modules plainly; only the pose model needs mediapipe, and its 409
    says how to install it (the [shop] extra), not that a module is missing from the build."""
    for name in [m for m in sys.modules if m == "mediapipe" or m.startswith("mediapipe.")] or ["mediapipe"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    monkeypatch.setattr(pose, "_CACHE", {})
    body = assert_error(client.post("/api/shop", files={"file": ("look.png", png_bytes(outfit_photo()))}),
                        409, "feature_unavailable")
    assert "lookalike[shop]" in body["message"] and "mediapipe" in body["message"], body


def test_shop_the_look_with_the_real_pose_model(client, shared_datasets):
    from lookalike.shop.pose import mediapipe_available

    photo = shared_datasets / "people" / "businessman-suit.jpg"
    if not mediapipe_available() or not photo.exists():
        pytest.skip("MediaPipe or the shared people photos are not available")
    body = client.post("/api/shop", files={"file": ("man.jpg", photo.read_bytes())}).json()
    assert body["detector"] == "mediapipe" and len(body["people"]) == 1
    regions = {r["region"]: r for r in body["regions"]}
    assert {"bottom", "footwear"} <= set(regions) and ("top" in regions or "outerwear" in regions)
    assert all(r["category"] in r["searched"] for r in body["regions"] if r["searched"])


def test_shop_region_scores_match_search_scores_for_an_l2_encoder(tmp_path, shapes_folder, fake_detector):
    """Each region's hits carry the score and distance of the search that found them, for every
    metric (it once rebuilt the distance as 1 - score, right for cosine encoders only)."""
    cat = Catalog.create("tiny-shapes", home=tmp_path)
    assert cat.index(write_shapes_csv(shapes_folder, tmp_path / "shapes.csv"), "tiny").failed == 0
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
