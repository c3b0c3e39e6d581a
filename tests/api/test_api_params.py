"""Unknown fields and parameters are a 422 naming them, never silently dropped (breaker, session 9).

``POST /api/search {"item": ..., "filter": "colour=green"}`` (the CLI, the GET routes and the upload
form spell it ``filter``; the JSON body ``filters``) answered 200 with unfiltered hits; so did an upload
with the form field ``filters`` or with ``?k=3`` in the query string instead of the form."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from fakes import QUERY_ID, assert_error, png_bytes  # noqa: E402
from PIL import Image  # noqa: E402


def message(response) -> str:
    return assert_error(response, 422, "invalid_parameters")["message"]


@pytest.mark.parametrize("path,body,hint", [
    ("/api/search", {"item": QUERY_ID, "filter": ["colour=green"]}, "did you mean 'filters'"),
    ("/api/search", {"item": QUERY_ID, "boost": ["colour=green:+0.1"]}, "did you mean 'boosts'"),
    ("/api/search", {"item": QUERY_ID, "examples": [{"item": QUERY_ID, "wieght": 2}]}, "did you mean 'weight'"),
    ("/api/search/batch", {"queries": [{"item": QUERY_ID}], "k": 3}, "unknown field"),
    ("/api/search/batch", {"queries": [{"item": QUERY_ID, "groupby": "shape"}]}, "did you mean 'group_by'"),
    ("/api/search/vector", {"vector": [1.0, 0.0], "top_k": 3}, "unknown field"),
    ("/api/latent/nearest", {"z": [0.0], "k": 3}, "unknown field"),
])
def test_unknown_json_fields_are_422_with_the_closest_name(client, path, body, hint):
    assert hint in message(client.post(path, json=body))


def test_known_json_fields_still_work(client):
    body = client.post("/api/search", json={"item": QUERY_ID, "k": 3, "filters": ["colour=green"]}).json()
    assert len(body["results"]) == 3 and {h["metadata"]["colour"] for h in body["results"]} == {"green"}


@pytest.mark.parametrize("url,hint", [
    (f"/api/items/{QUERY_ID}/similar?kk=3", "unknown field"),
    (f"/api/items/{QUERY_ID}/similar?k=3&filters=colour%3Dgreen", "did you mean 'filter'"),
    ("/api/items?lable=circle", "did you mean 'label'"),
    (f"/api/catalogs/shapes/items/{QUERY_ID}/similar?k=3&lable=x", "did you mean 'label'"),
])
def test_unknown_query_parameters_are_422(client, url, hint):
    text = message(client.get(url))
    assert hint in text and url.split("?")[1].split("&")[-1].split("=")[0] in text


def test_known_query_parameters_still_work(client):
    assert client.get(f"/api/items/{QUERY_ID}/similar?k=3&filter=colour%3Dgreen").status_code == 200
    assert client.get("/api/items?label=circle&limit=2&offset=1").status_code == 200


def test_unknown_upload_form_fields_and_query_parameters_are_422(client, shapes_folder):
    photo = png_bytes(Image.open(shapes_folder / "circle-blue" / "circle-blue-0.png").convert("RGB"))
    files = {"file": ("q.png", photo, "image/png")}
    assert "did you mean 'filter'" in message(client.post("/api/search/image", files=files,
                                                          data={"filters": "colour=green"}))
    assert "k" in message(client.post("/api/search/image?k=3", files=files))
    answer = client.post("/api/search/image", files=files, data={"k": "3", "filter": "colour=green"})
    assert answer.status_code == 200 and {h["metadata"]["colour"] for h in answer.json()["results"]} == {"green"}


def test_a_parameter_given_twice_that_takes_one_value_is_422(client, shapes_folder):
    """`?k=3&k=50` or two `file` parts answered 200 with one of them, chosen silently; list parameters
    (`filter`) still repeat."""
    assert "given 2 times" in message(client.get(f"/api/items/{QUERY_ID}/similar?k=3&k=50"))
    photo = png_bytes(Image.open(shapes_folder / "circle-blue" / "circle-blue-0.png").convert("RGB"))
    two = [("file", ("a.png", photo, "image/png")), ("file", ("b.png", photo, "image/png"))]
    assert "given 2 times" in message(client.post("/api/search/image", files=two))
    assert "given 2 times" in message(client.post("/api/search/image", files={"file": ("a.png", photo, "image/png")},
                                                  data={"k": ["3", "4"]}))
    ok = client.get(f"/api/items/{QUERY_ID}/similar?k=3&filter=colour%3Dgreen&filter=shape%3Dcircle")
    assert ok.status_code == 200
