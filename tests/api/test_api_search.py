"""Search: similar items, upload search (type sniffing, size caps, bombs), search by vector."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402
from lookalike.catalog import Catalog  # noqa: E402

from fakes import DUPLICATE, FAST, QUERY_ID, assert_error, png_bytes, stored_vector  # noqa: E402


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


def test_upload_with_damaged_exif_or_a_cut_short_header(client, shapes_folder):
    """A photo whose EXIF block Pillow cannot re-serialise was a 500 (struct.error); a JPEG cut inside
    its header was a 415 'not an image' although it is a damaged image (422 corrupt)."""
    image = Image.open(shapes_folder / "circle-blue" / "circle-blue-0.png").convert("RGB")
    exif = (b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x02\x01@\x00\x02\x00\x00\x00\x04Cam\x00"
            b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, exif=exif)
    damaged = buf.getvalue()
    answer = client.post("/api/search/image", files={"file": ("a.jpg", damaged, "image/jpeg")}, data={"k": "1"})
    assert answer.status_code == 200 and len(answer.json()["results"]) == 1   # orientation 6 applied, block ignored
    assert_error(client.post("/api/search/image", files={"file": ("a.jpg", damaged[:20], "image/jpeg")}), 422, "corrupt")


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
    vector = stored_vector(cat, ids[0]["id"], FAST)
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
    # an all-zero vector has no direction: cosine scores would all be 0 and the order arbitrary
    assert_error(client.post("/api/search/vector", json={"vector": [0.0] * 512}), 422, "bad_request")
    assert_error(client.post("/api/search", json={"vector": [0.0] * 512}), 422, "bad_request")


def test_upload_search_with_a_box_searches_that_part(client, shapes_folder):
    green = Image.open(shapes_folder / "square-green" / "square-green-1.png").convert("RGB")
    blue = Image.open(shapes_folder / "triangle-blue" / "triangle-blue-2.png").convert("RGB")
    photo = Image.new("RGB", (green.width + blue.width, green.height), "white")
    photo.paste(green, (0, 0))
    photo.paste(blue, (green.width, 0))
    data = png_bytes(photo, "PNG")
    upload = {"file": ("photo.png", data, "image/png")}
    right = client.post("/api/search/image", files=upload,
                        data={"k": "3", "box": f"{green.width},0,{photo.width},{photo.height}"}).json()
    assert right["results"][0]["id"] == "triangle-blue-2" and right["results"][0]["score"] > 0.999
    left = client.post("/api/search/image", files=upload, data={"k": "1", "box": f"0,0,{green.width},{green.height}"})
    assert left.json()["results"][0]["id"] == "square-green-1"
    for box in ("1,2,3", "a,b,c,d", "50,0,10,10", f"{photo.width + 5},0,{photo.width + 50},20", "0,0,3,3", "0,0,inf,9"):
        assert_error(client.post("/api/search/image", files=upload, data={"box": box}), 422, "bad_box")
    assert_error(client.post("/api/search/image", files=upload, data={"box": "1," * 60}), 422)  # too long
