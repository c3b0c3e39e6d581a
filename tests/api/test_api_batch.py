"""POST /api/search/batch: several queries (ids, vectors, base64 images) answered in order, each
failing query with its own status and error, the others unaffected; the size is capped."""
from __future__ import annotations

import base64

import pytest

pytest.importorskip("fastapi")

from fakes import QUERY_ID, assert_error, draw_shape, png_bytes  # noqa: E402


def single(client, body: dict) -> dict:
    return client.post("/api/search", json=body).json()


def test_answers_come_in_order_and_equal_single_searches(client, shapes_folder):
    photo = (shapes_folder / "square-blue" / "square-blue-2.png").read_bytes()
    vector = [float((i * 7) % 5) for i in range(512)]   # colour-hist (fakes.FAST) vectors have 512 values
    queries = [{"item": QUERY_ID, "k": 3},
               {"item": "square-green-1", "k": 2, "filters": ["colour=green"]},
               {"image": base64.b64encode(photo).decode(), "k": 4},
               {"item": QUERY_ID, "k": 5, "diversity": 0.5, "collapse_duplicates": True},
               {"vector": vector, "k": 3}]
    response = client.post("/api/search/batch", json={"queries": queries})
    assert response.status_code == 200
    body = response.json()
    assert body["failed"] == 0 and [a["status"] for a in body["answers"]] == [200] * 5
    for i in (0, 1, 3, 4):
        assert body["answers"][i]["result"] == single(client, queries[i])
    by_upload = client.post("/api/search/image", files={"file": ("q.png", photo, "image/png")}, data={"k": "4"}).json()
    assert [h["id"] for h in body["answers"][2]["result"]["results"]] == [h["id"] for h in by_upload["results"]]
    assert body["answers"][2]["result"]["results"][0]["id"] == "square-blue-2"


def test_a_failing_query_answers_its_own_error_without_failing_the_rest(client):
    queries = [{"item": "no-such-item"},
               {"item": QUERY_ID, "k": 2},
               {"vector": [0.1, 0.2, 0.3]},
               {"item": QUERY_ID, "filters": ["colour<5"]},
               {"item": QUERY_ID, "filters": ["nosuchcolumn=1"]},
               {"image": "***"},
               {"image": base64.b64encode(b"not an image").decode()},
               {"image": base64.b64encode(png_bytes_of_text()).decode()},
               {},
               {"item": QUERY_ID, "vector": [1.0]}]
    body = client.post("/api/search/batch", json={"queries": queries}).json()
    statuses = [(a["status"], (a["error"] or {}).get("error")) for a in body["answers"]]
    assert statuses == [(404, "not_found"), (200, None), (422, "bad_request"), (422, "invalid_filter"),
                        (422, "unknown_column"), (422, "invalid_image"), (415, "not_an_image"), (422, "corrupt"),
                        (422, "bad_request"), (422, "bad_request")]
    assert body["failed"] == 9 and len(body["answers"][1]["result"]["results"]) == 2
    assert all(a["error"]["message"] for a in body["answers"] if a["status"] != 200)


def png_bytes_of_text() -> bytes:
    return png_bytes(draw_shape("circle", (1, 2, 3)))[:60]   # a PNG cut short


@pytest.mark.parametrize("body", [{"queries": []}, {"queries": [{"item": QUERY_ID}] * 33},
                                  {"queries": [{"item": QUERY_ID, "k": 1000}]}, {}])
def test_a_malformed_batch_is_422(client, body):
    assert_error(client.post("/api/search/batch", json=body), 422, "invalid_parameters")


def test_batch_works_per_catalog_too(client):
    body = client.post("/api/catalogs/shapes/search/batch", json={"queries": [{"item": QUERY_ID, "k": 1}]}).json()
    hit = body["answers"][0]["result"]["results"][0]
    assert hit["image_url"].startswith("/api/catalogs/shapes/items/")
