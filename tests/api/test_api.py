"""HTTP API (FastAPI TestClient) on a small real catalog: every endpoint and each error case."""
from __future__ import annotations

import io
import time
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402
from lookalike.catalog import Catalog  # noqa: E402

from fakes import DUPLICATE, FAST, build_catalog, outfit_photo  # noqa: E402

QUERY_ID = "circle-red-1"
N_ITEMS = 55  # 9 classes x 6 shapes + one exact duplicate


@pytest.fixture(scope="module")
def client(web_home):
    with TestClient(create_app("shapes", home=web_home, api_key="")) as c:
        yield c


@pytest.fixture(scope="module")
def bare_client(tmp_path_factory, shapes_folder):
    """A catalog with no clusters, map or VAE: those panels must answer 501 with the command to run."""
    home = tmp_path_factory.mktemp("bare-home")
    build_catalog(home, shapes_folder, "bare")
    with TestClient(create_app("bare", home=home)) as c:
        yield c


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def assert_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["message"] and isinstance(body["message"], str)
    if code:
        assert body["error"] == code
    return body


# -- health, catalogs, web app -----------------------------------------------------------------
def test_health_reports_catalog_and_features(client):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["catalog"] == "shapes" and body["items"] == N_ITEMS
    assert body["encoder"] == FAST and body["read_only"] is True
    features = body["features"]
    assert set(features) == {"latent", "clusters", "map", "duplicates", "goes_with", "shop"}
    assert all(features[f] for f in ("latent", "clusters", "map", "duplicates", "goes_with"))


def test_catalog_and_catalog_list(client):
    info = client.get("/api/catalog").json()
    assert info["name"] == "shapes" and info["items"] == N_ITEMS and info["current"]
    assert info["labels"]["circle-red"] == 7 and info["labels"]["square-blue"] == 6 and len(info["labels"]) == 9
    assert info["metadata_keys"] == ["colour", "shape"] and info["encoders"] == [FAST]
    listing = client.get("/api/catalogs").json()
    assert listing["current"] == "shapes" and [c["name"] for c in listing["catalogs"]] == ["shapes"]


def test_web_app_and_static_files_are_served_with_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/app.js"' in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "lookalike"


def test_unknown_endpoint_is_json_404(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")


# -- items -------------------------------------------------------------------------------------
def test_items_are_paged(client):
    first = client.get("/api/items?limit=20").json()
    second = client.get("/api/items?limit=20&offset=20").json()
    last = client.get("/api/items?limit=20&offset=40").json()
    assert first["total"] == N_ITEMS and len(first["items"]) == 20 and len(last["items"]) == 15
    ids = [i["id"] for page in (first, second, last) for i in page["items"]]
    assert len(set(ids)) == N_ITEMS
    assert first["items"][0]["thumb_url"].startswith("/api/items/")


def test_items_filter_by_label_and_metadata(client):
    by_label = client.get("/api/items?label=square-blue").json()
    assert by_label["total"] == 6 and {i["label"] for i in by_label["items"]} == {"square-blue"}
    by_meta = client.get("/api/items", params={"filter": "colour:green"}).json()
    assert by_meta["total"] == 18 and {i["metadata"]["colour"] for i in by_meta["items"]} == {"green"}
    both = client.get("/api/items", params={"filter": ["colour:green", "shape:circle"]}).json()
    assert both["total"] == 6
    assert client.get("/api/items?label=nothing").json() == {"total": 0, "offset": 0, "limit": 48, "items": []}


@pytest.mark.parametrize("query", ["limit=0", "limit=1000", "offset=-1", "filter=nocolon", "filter=bad%20key:x",
                                   "limit=abc"])
def test_items_bad_parameters_are_422(client, query):
    assert_error(client.get(f"/api/items?{query}"), 422)


def test_item_detail_and_unknown_item(client):
    item = client.get(f"/api/items/{QUERY_ID}").json()
    assert item["id"] == QUERY_ID and item["label"] == "circle-red" and item["width"] == 96
    assert item["metadata"] == {"colour": "red", "shape": "circle"} and len(item["sha256"]) == 64
    assert "path" not in item  # server file paths are never exposed
    assert_error(client.get("/api/items/no-such-item"), 404, "not_found")


def test_invalid_item_id_is_422(client):
    assert_error(client.get("/api/items/bad%01id"), 422, "invalid_id")
    assert_error(client.get("/api/items/" + "x" * 600), 422, "invalid_id")


def test_item_image_is_the_catalog_file(client, shapes_folder):
    response = client.get(f"/api/items/{QUERY_ID}/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (shapes_folder / "circle-red" / f"{QUERY_ID}.png").read_bytes()


def test_thumbnails_are_resized_and_cached(client, web_home):
    response = client.get(f"/api/items/{QUERY_ID}/thumb?size=128")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert max(thumb.size) <= 128
    sha = client.get(f"/api/items/{QUERY_ID}").json()["sha256"]
    assert (web_home / "catalogs" / "shapes" / "cache" / "thumbs" / "128" / f"{sha}.jpg").is_file()
    assert client.get(f"/api/items/{QUERY_ID}/thumb?size=128").content == response.content
    assert_error(client.get(f"/api/items/{QUERY_ID}/thumb?size=999"), 422)
    assert_error(client.get("/api/items/missing/thumb"), 404)


def test_no_path_traversal(client):
    # Ids are looked up in the store, never joined onto paths; static files stay in their folder.
    for url in ("/api/items/..%2F..%2F..%2Fetc%2Fpasswd/image", "/api/items/../../etc/passwd/image",
                "/static/..%2F..%2Fcatalog.py", "/static/../../../etc/passwd"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"root:" not in response.content


# -- similar items -----------------------------------------------------------------------------
def test_similar_to_item_excludes_itself_and_ranks_by_score(client):
    body = client.get(f"/api/items/{QUERY_ID}/similar?k=5").json()
    assert body["query"]["id"] == QUERY_ID and body["encoder"] == FAST
    results = body["results"]
    assert len(results) == 5 and QUERY_ID not in [r["id"] for r in results]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0]["metadata"]["colour"] == "red"  # colour histogram: same colour first
    assert client.get(f"/api/items/{DUPLICATE[0]}/similar?k=1").json()["results"][0]["id"] == DUPLICATE[1]


def test_similar_with_label_filter(client):
    body = client.get(f"/api/items/{QUERY_ID}/similar?k=10&label=square-blue").json()
    assert len(body["results"]) == 6 and {r["label"] for r in body["results"]} == {"square-blue"}


def test_similar_errors(client):
    assert_error(client.get("/api/items/missing/similar"), 404)
    assert_error(client.get(f"/api/items/{QUERY_ID}/similar?k=0"), 422)
    assert_error(client.get(f"/api/items/{QUERY_ID}/similar?k=101"), 422)
    assert_error(client.get(f"/api/items/{QUERY_ID}/similar?encoder=effnet-lite0"), 404)  # no such vectors


# -- upload search -----------------------------------------------------------------------------
def test_upload_search_finds_the_same_image(client, shapes_folder):
    data = (shapes_folder / "triangle-blue" / "triangle-blue-2.png").read_bytes()
    body = client.post("/api/search/image", files={"file": ("photo.png", data, "image/png")}, data={"k": "3"}).json()
    assert body["query"] is None and len(body["results"]) == 3
    assert body["results"][0]["id"] == "triangle-blue-2" and body["results"][0]["score"] > 0.999


def test_upload_type_is_sniffed_from_content_not_name(client, shapes_folder):
    image = Image.open(shapes_folder / "square-green" / "square-green-1.png").convert("RGB")
    jpeg = png_bytes(image, "JPEG")
    body = client.post("/api/search/image", files={"file": ("notes.txt", jpeg, "text/plain")}).json()
    assert body["results"][0]["metadata"]["colour"] == "green"
    assert_error(client.post("/api/search/image", files={"file": ("photo.png", b"just some text", "image/png")}),
                 415, "not_an_image")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert_error(client.post("/api/search/image", files={"file": ("a.svg", svg, "image/svg+xml")}), 415)


def test_upload_empty_corrupt_and_missing_file(client, shapes_folder):
    assert_error(client.post("/api/search/image", files={"file": ("a.png", b"", "image/png")}), 422, "empty")
    whole = (shapes_folder / "circle-blue" / "circle-blue-0.png").read_bytes()
    truncated = whole[: len(whole) // 2]
    assert_error(client.post("/api/search/image", files={"file": ("a.png", truncated, "image/png")}), 422, "corrupt")
    assert_error(client.post("/api/search/image", data={"k": "3"}), 422)


def test_upload_bad_k_is_422(client, shapes_folder):
    data = (shapes_folder / "circle-blue" / "circle-blue-0.png").read_bytes()
    assert_error(client.post("/api/search/image", files={"file": ("a.png", data)}, data={"k": "0"}), 422)


def test_upload_over_the_cap_is_413(web_home, shapes_folder):
    data = (shapes_folder / "circle-blue" / "circle-blue-0.png").read_bytes()
    with TestClient(create_app("shapes", home=web_home, max_upload_bytes=len(data) - 1)) as small:
        body = assert_error(small.post("/api/search/image", files={"file": ("a.png", data)}), 413, "too_large")
        assert "limit" in body["message"]
        # far over the cap: refused from Content-Length before the body is read
        assert_error(small.post("/api/search/image", files={"file": ("a.png", data * 40)}), 413, "too_large")

        def chunks():  # streamed without Content-Length: counted as it arrives
            for _ in range(40):
                yield data

        response = small.post("/api/search/image", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=x"})
        assert_error(response, 413, "too_large")


def test_decompression_bomb_is_413(client):
    bomb = png_bytes(Image.new("1", (9000, 8000)))  # 72 Mpx, a few KB on the wire
    assert len(bomb) < 200_000
    assert_error(client.post("/api/search/image", files={"file": ("bomb.png", bomb)}), 413, "too_large")


# -- vector search -----------------------------------------------------------------------------
def test_search_by_vector(client):
    ids = client.get(f"/api/items/{QUERY_ID}/similar?k=3").json()["results"]
    cat = Catalog.open("shapes", home=client.app.state.lookalike.catalog.home)
    vector = cat.store.vector_of(ids[0]["id"], FAST)
    body = client.post("/api/search/vector", json={"vector": vector.tolist(), "k": 2}).json()
    assert body["results"][0]["id"] == ids[0]["id"] and body["results"][0]["score"] > 0.999


def test_search_by_vector_errors(client):
    assert_error(client.post("/api/search/vector", json={"vector": [0.1] * 5}), 422, "bad_request")
    assert_error(client.post("/api/search/vector", json={"vector": []}), 422)
    assert_error(client.post("/api/search/vector", json={"k": 3}), 422)
    assert_error(client.post("/api/search/vector", json={"vector": [0.1] * 512, "k": 0}), 422)
    nan = json.dumps({"vector": [0.1] * 511 + [float("nan")]})
    assert_error(client.post("/api/search/vector", content=nan, headers={"content-type": "application/json"}), 422)
    assert_error(client.post("/api/search/vector", content=b"{not json", headers={"content-type": "application/json"}),
                 422)
    assert_error(client.post("/api/search/vector", json={"vector": [0.1] * 8, "encoder": "tiny"}), 404)


# -- evaluation --------------------------------------------------------------------------------
def test_evaluation_summary(client):
    body = client.get("/api/evaluation?ks=1,5").json()
    assert body["catalog"] == "shapes" and body["encoder"] == FAST
    assert set(body["metrics"]) >= {"P@1", "P@5", "mAP@5", "NDCG@5"}
    assert 0.0 <= body["metrics"]["P@1"] <= 1.0
    assert body["details"]["n_queries"] == N_ITEMS and "circle-red" in body["details"]["per_label"]
    assert_error(client.get("/api/evaluation?ks=0"), 422)
    assert_error(client.get("/api/evaluation?ks=one"), 422)


# -- writes need a key -------------------------------------------------------------------------
def test_changes_are_refused_when_read_only(client):
    assert_error(client.delete(f"/api/items/{QUERY_ID}"), 403, "read_only")
    assert client.get(f"/api/items/{QUERY_ID}").status_code == 200


def test_changes_need_the_right_api_key(tmp_path, shapes_folder, monkeypatch):
    home = tmp_path / "home"
    Catalog.create("shapes", home=home).index(shapes_folder, FAST)  # folder catalog: ids contain '/'
    monkeypatch.setenv("LOOKALIKE_API_KEY", "s3cret")
    with TestClient(create_app("shapes", home=home)) as c:
        assert c.get("/api/health").json()["read_only"] is False
        item = "circle-red/circle-red-0"
        assert_error(c.delete(f"/api/items/{item}"), 401, "unauthorized")
        assert_error(c.delete(f"/api/items/{item}", headers={"X-API-Key": "wrong"}), 401)
        ok = c.delete(f"/api/items/{item}", headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and ok.json() == {"removed": [item]}
        assert_error(c.get(f"/api/items/{item}"), 404)
        assert_error(c.delete("/api/items/missing", headers={"X-API-Key": "s3cret"}), 404)


def test_create_app_on_missing_catalog_raises(tmp_path):
    from lookalike.catalog import CatalogNotFound

    with pytest.raises(CatalogNotFound):
        create_app("nothing", home=tmp_path)


# -- explore: clusters, map, duplicates, goes-with ---------------------------------------------
def test_clusters(client):
    body = client.get("/api/clusters?examples=3").json()
    clusters = body["clusters"]
    assert body["encoder"] == FAST and len(clusters) == 9
    assert sum(c["size"] for c in clusters) == N_ITEMS
    assert [c["size"] for c in clusters] == sorted((c["size"] for c in clusters), reverse=True)
    for c in clusters:
        assert 1 <= len(c["examples"]) <= 3 and c["label"] and 0 < c["purity"] <= 1
    assert_error(client.get("/api/clusters?examples=0"), 422)


def test_map_points(client):
    body = client.get("/api/map").json()
    points = body["points"]
    assert len(points) == N_ITEMS and {p["id"] for p in points} >= {QUERY_ID, DUPLICATE[1]}
    assert all(0.0 <= p["x"] <= 1.0 and 0.0 <= p["y"] <= 1.0 for p in points)
    assert all(p["cluster"] is not None for p in points)  # clusters were stored before the map
    assert client.get(points[0]["thumb_url"]).status_code == 200


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


def test_features_not_run_yet_are_501_with_the_command(bare_client):
    features = bare_client.get("/api/health").json()["features"]
    assert not features["latent"] and not features["clusters"] and not features["map"] and features["duplicates"]
    assert_error(bare_client.get("/api/clusters"), 501, "feature_unavailable")
    assert "lookalike cluster" in bare_client.get("/api/clusters").json()["message"]
    assert "lookalike map" in assert_error(bare_client.get("/api/map"), 501)["message"]
    body = assert_error(bare_client.get("/api/latent"), 501, "feature_unavailable")
    assert "lookalike train autoencoder --kind vae" in body["message"]
    assert_error(bare_client.post("/api/latent/decode", json={"z": [0.0] * 16}), 501)
    assert_error(bare_client.get(f"/api/items/{QUERY_ID}/latent"), 501)


# -- latent explorer ---------------------------------------------------------------------------
def test_latent_info_gives_slider_ranges(client):
    body = client.get("/api/latent").json()
    assert body["model"] == "shapes-vae" and body["encoder"] == "vae:shapes-vae"
    assert body["dim"] == 16 and len(body["ranges"]) == 16 and body["image_size"] == 16
    for r in body["ranges"]:
        assert r["min"] <= r["mean"] <= r["max"] and r["std"] >= 0


def test_decode_latent_vector_to_png(client):
    # far apart in the prior (a one-epoch VAE's catalog ranges are narrow)
    low = client.post("/api/latent/decode?size=64", json={"z": [-3.0] * 16})
    high = client.post("/api/latent/decode?size=64", json={"z": [3.0] * 16})
    assert low.status_code == 200 and low.headers["content-type"] == "image/png"
    a, b = (np.asarray(Image.open(io.BytesIO(x.content))) for x in (low, high))
    assert a.shape == (64, 64, 3) and np.abs(a.astype(int) - b.astype(int)).mean() > 2
    native = Image.open(io.BytesIO(client.post("/api/latent/decode?size=0", json={"z": [0.0] * 16}).content))
    assert native.size == (16, 16)


def test_decode_errors(client):
    assert_error(client.post("/api/latent/decode", json={"z": [0.0] * 3}), 422, "bad_request")
    assert_error(client.post("/api/latent/decode", json={"z": []}), 422)
    assert_error(client.post("/api/latent/decode?size=100", json={"z": [0.0] * 16}), 422)
    nan = json.dumps({"z": [0.0] * 15 + [float("nan")]})
    assert_error(client.post("/api/latent/decode", content=nan, headers={"content-type": "application/json"}), 422)


def test_latent_nearest_and_item_position(client):
    z = client.get(f"/api/items/{QUERY_ID}/latent").json()["z"]
    assert len(z) == 16
    body = client.post("/api/latent/nearest?k=4", json={"z": z}).json()
    assert len(body["results"]) == 4 and body["results"][0]["id"] == QUERY_ID  # its own µ is nearest
    assert_error(client.get("/api/items/missing/latent"), 404)
    assert_error(client.post("/api/latent/nearest?k=0", json={"z": z}), 422)


def test_latent_interpolation(client):
    a, b = QUERY_ID, "square-blue-3"
    body = client.get(f"/api/latent/interpolate?a={a}&b={b}&steps=5").json()
    assert len(body["steps"]) == 5 and len(body["images"]) == 5
    assert body["images"][0].startswith("data:image/png;base64,")
    za = client.get(f"/api/items/{a}/latent").json()["z"]
    zb = client.get(f"/api/items/{b}/latent").json()["z"]
    assert np.allclose(body["steps"][0], za, atol=1e-5) and np.allclose(body["steps"][-1], zb, atol=1e-5)
    assert_error(client.get(f"/api/latent/interpolate?a={a}&b=missing"), 404)
    assert_error(client.get(f"/api/latent/interpolate?a={a}&b={b}&steps=1"), 422)


# -- shop the look -----------------------------------------------------------------------------
def test_shop_the_look_regions_with_results(client, fake_detector):
    response = client.post("/api/shop", files={"file": ("look.png", png_bytes(outfit_photo()))}, data={"k": "2"})
    body = response.json()
    assert response.status_code == 200, body
    assert (body["width"], body["height"]) == (200, 400) and body["detector"] == "fake"
    assert {r["category"] for r in body["regions"]} >= {"top", "bottom"}
    top = next(r for r in body["regions"] if r["category"] == "top")
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


def test_shop_the_look_with_the_real_pose_model(client, shared_datasets):
    from lookalike.shop.pose import mediapipe_available

    photo = shared_datasets / "people" / "businessman-suit.jpg"
    if not mediapipe_available() or not photo.exists():
        pytest.skip("MediaPipe or the shared people photos are not available")
    body = client.post("/api/shop", files={"file": ("man.jpg", photo.read_bytes())}).json()
    assert body["detector"] == "mediapipe" and len(body["people"]) == 1
    assert [r["category"] for r in body["regions"]][:2] == ["top", "bottom"]


def test_missing_image_file_is_404_without_server_paths(tmp_path, shapes_folder):
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(shapes_folder / "circle-red", folder / "circle-red")
    home = tmp_path / "home"
    Catalog.create("gone", home=home).index(folder, FAST)
    (folder / "circle-red" / "circle-red-2.png").unlink()
    with TestClient(create_app("gone", home=home)) as c:
        for suffix in ("image", "thumb"):
            body = assert_error(c.get(f"/api/items/circle-red%2Fcircle-red-2/{suffix}"), 404)
            assert str(tmp_path) not in body["message"] and "missing" in body["message"]
        assert c.get("/api/items/circle-red%2Fcircle-red-1/image").status_code == 200


# -- lookalike serve -------------------------------------------------------------------------
def test_serve_command_prints_the_url_and_serves(web_home):
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--catalog", "shapes", "--home", str(web_home),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/"
        for _ in range(200):
            try:
                health = httpx.get(f"{url}api/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert health["catalog"] == "shapes" and health["items"] == N_ITEMS
        assert "<title>lookalike</title>" in httpx.get(url).text
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_command_on_a_missing_catalog_says_so(tmp_path):
    from typer.testing import CliRunner

    from lookalike.cli import app

    result = CliRunner().invoke(app, ["serve", "--catalog", "nothing", "--home", str(tmp_path)])
    assert result.exit_code == 1 and "not found" in result.output


def test_api_docs_work_offline(client):
    """/docs must not depend on a CDN: its Swagger UI files are served by the app itself."""
    pytest.importorskip("swagger_ui_bundle")
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "lookalike"
