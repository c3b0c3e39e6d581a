"""Explore routes: clusters, map, duplicates, goes-with, and 409 for what was not run yet."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from lookalike.api import features  # noqa: E402

from fakes import DUPLICATE, FAST, N_ITEMS, QUERY_ID, assert_error  # noqa: E402


def test_clusters(client):
    body = client.get("/api/clusters?examples=3").json()
    clusters = body["clusters"]
    assert body["encoder"] == FAST and len(clusters) == 9
    assert sum(c["size"] for c in clusters) == N_ITEMS
    assert [c["size"] for c in clusters] == sorted((c["size"] for c in clusters), reverse=True)
    for c in clusters:
        assert 1 <= len(c["examples"]) <= 3 and c["label"] and 0 < c["purity"] <= 1
        # the label mix: every member counted once, most common first, its top label the majority
        counts = [m["count"] for m in c["label_mix"]]
        assert sum(counts) == c["size"] and counts == sorted(counts, reverse=True)
        assert c["label_mix"][0]["label"] == c["label"] and counts[0] / c["size"] == pytest.approx(c["purity"])
        assert {m["label"] for m in c["label_mix"]} <= set(body["labels"])
    assert body["k_chosen_by"] == "user"   # fakes.build_web_home clusters with k=9
    assert (body["added_since"], body["removed_since"], body["stale"]) == (0, 0, None)   # current
    assert_error(client.get("/api/clusters?examples=0"), 422)


def test_clusters_and_map_say_when_items_were_added_since(tmp_path, shapes_folder):
    """Items added (or removed) after `lookalike cluster` / `lookalike map` are not silently missing:
    both answers count them and name the command that reruns them."""
    from fastapi.testclient import TestClient

    from lookalike.api import create_app
    from lookalike.catalog import Catalog, ItemWrite
    from lookalike.explore.clusters import cluster_catalog
    from lookalike.explore.projection import map_catalog

    from fakes import build_catalog, draw_shape, png_bytes

    cat = build_catalog(tmp_path, shapes_folder)
    cluster_catalog(cat, k=3)
    map_catalog(cat, method="pca", size=200, thumb=16)
    writer = Catalog.open("shapes", home=tmp_path)
    writer.upsert([ItemWrite(f"new-{i}", data=png_bytes(draw_shape("circle", (200, 20 * i, 90), seed=i))) for i in range(2)])
    writer.remove([QUERY_ID])
    with TestClient(create_app("shapes", home=tmp_path, api_key="")) as c:
        for route, command in (("/api/clusters", "lookalike cluster"), ("/api/map", "lookalike map")):
            body = c.get(route).json()
            assert (body["added_since"], body["removed_since"]) == (2, 1), route
            assert "2 items added" in body["stale"] and "1 item removed" in body["stale"] and command in body["stale"]


def test_map_points(client):
    body = client.get("/api/map").json()
    points = body["points"]
    assert len(points) == N_ITEMS and {p["id"] for p in points} >= {QUERY_ID, DUPLICATE[1]}
    assert all(0.0 <= p["x"] <= 1.0 and 0.0 <= p["y"] <= 1.0 for p in points)
    assert all(p["cluster"] is not None for p in points)  # clusters were stored before the map
    thumb = client.get(points[0]["thumb_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"


def test_duplicates_finds_the_exact_copy(client):
    body = client.get("/api/duplicates").json()
    assert body["items_checked"] == N_ITEMS and body["encoder"] == FAST and body["total_groups"] >= 1
    groups = [{i["id"] for i in g["items"]} for g in body["groups"]]
    assert any(set(DUPLICATE) <= g for g in groups)
    # colour histograms of same-colour shapes are near each other; a tiny threshold keeps only the copy
    strict = client.get("/api/duplicates?threshold=0.0001").json()
    assert strict["total_groups"] == 1 and strict["groups"][0]["exact"] is True
    assert sorted(i["id"] for i in strict["groups"][0]["items"]) == sorted(DUPLICATE)
    assert len(client.get("/api/duplicates?limit=1").json()["groups"]) == 1
    assert_error(client.get("/api/duplicates?threshold=0"), 422)
    assert_error(client.get("/api/duplicates?limit=0"), 422)


@pytest.mark.parametrize("method", ["centroid", "colour"])
def test_goes_with_rows_are_other_categories(client, method):
    body = client.get(f"/api/items/{QUERY_ID}/goes-with?k=3&method={method}").json()
    assert body["query"]["id"] == QUERY_ID and body["method"] == method
    categories = [r["category"] for r in body["rows"]]
    assert len(categories) == 8 and "circle-red" not in categories
    for r in body["rows"]:
        assert len(r["results"]) == 3 and {x["label"] for x in r["results"]} == {r["category"]}


def test_goes_with_errors(client):
    assert_error(client.get("/api/items/missing/goes-with"), 404)
    assert_error(client.get(f"/api/items/{QUERY_ID}/goes-with?method=magic"), 422)
    assert_error(client.get(f"/api/items/{QUERY_ID}/goes-with?k=0"), 422)


def test_features_not_run_yet_are_409_with_the_command(bare_client):
    features = bare_client.get("/api/health").json()["features"]
    assert not features["latent"] and not features["clusters"] and not features["map"] and features["duplicates"]
    assert_error(bare_client.get("/api/clusters"), 409, "feature_unavailable")
    assert "lookalike cluster" in bare_client.get("/api/clusters").json()["message"]
    assert "lookalike map" in assert_error(bare_client.get("/api/map"), 409)["message"]
    body = assert_error(bare_client.get("/api/latent"), 409, "feature_unavailable")
    assert "lookalike train autoencoder --kind vae" in body["message"]
    assert_error(bare_client.post("/api/latent/decode", json={"z": [0.0] * 16}), 409)
    assert_error(bare_client.get(f"/api/items/{QUERY_ID}/latent"), 409)


def test_a_missing_package_is_409_naming_it():
    """A lazily imported feature module that fails to import names the package it lacks."""
    error = features.missing_package("latent", ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn"))
    assert error.status == 409 and error.code == "feature_unavailable"
    assert error.message.startswith("feature not available (latent): torch is not installed"), error.message
    assert "pip install lookalike" in error.message
