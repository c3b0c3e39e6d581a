"""Steering a search over the API: weighted examples, diversity, duplicate collapse and the
"no close match" flag, on the upload route (multipart form fields), with every error answered
as JSON."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from fakes import DUPLICATE, QUERY_ID, assert_error, png_bytes  # noqa: E402


def _upload(client, data: bytes, **fields):
    form = {k: (json.dumps(v) if k == "examples" else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in fields.items()}
    return client.post("/api/search/image", files={"file": ("photo.png", data, "image/png")}, data=form)


@pytest.fixture(scope="module")
def red_circle(shapes_folder) -> bytes:
    return (shapes_folder / "circle-red" / "circle-red-2.png").read_bytes()


def test_examples_join_the_photo_and_are_never_returned(client, red_circle):
    plain = _upload(client, red_circle, k=8).json()["results"]
    steered = _upload(client, red_circle, k=8, examples=[{"item": "square-blue-1", "weight": 1},
                                                         {"item": QUERY_ID, "weight": -0.5}])
    assert steered.status_code == 200, steered.text
    ids = [r["id"] for r in steered.json()["results"]]
    assert "square-blue-1" not in ids and QUERY_ID not in ids
    assert any(r["metadata"]["colour"] == "blue" for r in steered.json()["results"])   # pulled towards blue
    assert [r["id"] for r in plain] != ids
    fused = _upload(client, red_circle, k=8, combine="max", examples=[{"item": "square-blue-1"}]).json()["results"]
    assert "square-blue-1" not in [r["id"] for r in fused] and len(fused) == 8


def test_collapse_folds_the_duplicate_and_diversity_reorders(client, shapes_folder):
    data = (shapes_folder / "circle-red" / f"{DUPLICATE[0]}.png").read_bytes()
    plain = _upload(client, data, k=6).json()["results"]
    assert {plain[0]["id"], plain[1]["id"]} == set(DUPLICATE)            # the same file twice
    folded = _upload(client, data, k=6, collapse_duplicates=True).json()["results"]
    # colour histograms of other red shapes are within 0.12 too: they fold into the first hit as well
    assert len(folded) == 6 and folded[0]["id"] == plain[0]["id"] and plain[1]["id"] in folded[0]["duplicates"]
    shown = [r["id"] for r in folded]
    assert not set(shown) & {d for r in folded for d in r["duplicates"]}
    diverse = _upload(client, data, k=6, diversity=0.9).json()["results"]
    assert [r["id"] for r in diverse][0] == plain[0]["id"] and [r["id"] for r in diverse] != [r["id"] for r in plain]
    assert [r["rank"] for r in diverse] == list(range(1, 7))


def test_unlike_anything_is_flagged(client, red_circle):
    rng = np.random.default_rng(0)
    for image in (Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)), Image.new("RGB", (96, 96))):
        body = _upload(client, png_bytes(image), k=3).json()
        assert body["no_close_match"] is True and all(r["weak"] for r in body["results"])
    body = _upload(client, red_circle, k=3).json()
    assert body["no_close_match"] is False and not body["results"][0]["weak"]


def test_base64_image_examples(client, red_circle, shapes_folder):
    blue = base64.b64encode((shapes_folder / "square-blue" / "square-blue-3.png").read_bytes()).decode()
    body = _upload(client, red_circle, k=5, examples=[{"image": f"data:image/png;base64,{blue}", "weight": 2}])
    assert body.status_code == 200 and body.json()["results"][0]["metadata"]["colour"] == "blue"
    assert_error(_upload(client, red_circle, examples=[{"image": "not base64!"}]), 422, "invalid_image")
    text = base64.b64encode(b"just text").decode()
    assert_error(_upload(client, red_circle, examples=[{"image": text}]), 415)


@pytest.mark.parametrize("fields,status,code", [
    ({"examples": [{"item": "a", "image": "b"}]}, 422, "invalid_examples"),
    ({"examples": [{"item": QUERY_ID, "weight": 0}]}, 422, "invalid_examples"),
    ({"examples": [{"weight": 1}]}, 422, "invalid_examples"),
    ({"examples": [{"item": "no-such-item"}]}, 404, "not_found"),
    ({"examples": [{"vector": [1.0, 2.0]}]}, 422, "bad_request"),
    ({"diversity": 1.5}, 422, "invalid_parameters"),
    ({"diversity": "lots"}, 422, "invalid_parameters"),
    ({"combine": "avg"}, 422, "invalid_parameters"),
    ({"collapse_duplicates": "perhaps"}, 422, "invalid_parameters"),
])
def test_steering_errors_are_json(client, red_circle, fields, status, code):
    assert_error(_upload(client, red_circle, **fields), status, code)


def test_examples_field_must_be_a_json_list(client, red_circle):
    response = client.post("/api/search/image", files={"file": ("p.png", red_circle, "image/png")},
                           data={"examples": "{not json"})
    assert_error(response, 422, "invalid_examples")
    response = client.post("/api/search/image", files={"file": ("p.png", red_circle, "image/png")},
                           data={"examples": json.dumps([{"item": QUERY_ID}] * 51)})
    assert_error(response, 422, "invalid_examples")


# -- more like this, steered (GET /api/items/{id}/similar) ------------------------------------------
def test_similar_with_more_and_less(client):
    plain = client.get(f"/api/items/{QUERY_ID}/similar?k=6").json()
    assert plain["no_close_match"] is False and all(not r["weak"] for r in plain["results"])   # items: no flag
    body = client.get(f"/api/items/{QUERY_ID}/similar?k=6&more=square-blue-1:2&less=circle-red-3:1").json()
    ids = [r["id"] for r in body["results"]]
    assert {"square-blue-1", "circle-red-3", QUERY_ID}.isdisjoint(ids)
    assert sum(r["metadata"]["colour"] == "blue" for r in body["results"]) > \
        sum(r["metadata"]["colour"] == "blue" for r in plain["results"])
    div = client.get(f"/api/items/{QUERY_ID}/similar?k=6&diversity=0.8&collapse_duplicates=true").json()
    assert len(div["results"]) == 6 and [r["rank"] for r in div["results"]] == list(range(1, 7))


def test_the_query_item_is_the_positive_for_a_lone_negative(client):
    """👎 on a tile before any 👍: the query item (weight 1) is the positive; both rules answer."""
    for combine in ("mean", "max"):
        body = client.get(f"/api/items/{QUERY_ID}/similar?k=4&less=square-red-1&combine={combine}")
        assert body.status_code == 200, body.text
        assert len(body.json()["results"]) == 4 and "square-red-1" not in [r["id"] for r in body.json()["results"]]
        body = client.post("/api/search", json={"item": QUERY_ID, "k": 4, "combine": combine,
                                                "examples": [{"item": "square-red-1", "weight": -1}]})
        assert body.status_code == 200, body.text


@pytest.mark.parametrize("query,status", [("more=nope", 404), ("less=circle-red-3:0", 422), ("more=a:-1", 422),
                                          ("diversity=-0.1", 422), ("combine=sum", 422),
                                          ("more=circle-red-3:nan", 422), ("more=circle-red-3:-Infinity", 422),
                                          ("less=circle-red-3:1e999", 422)])
def test_similar_steering_errors(client, query, status):
    answer = client.get(f"/api/items/{QUERY_ID}/similar?{query}")
    assert_error(answer, status)
    if "circle-red-3:" in query and status == 422:   # says what is wrong, not "item 'circle-red-3:nan' not found"
        assert "finite" in answer.json()["message"] or "positive" in answer.json()["message"]


# -- POST /api/search (JSON) -------------------------------------------------------------------------
def test_json_search_with_examples_only(client, shapes_folder):
    blue = base64.b64encode((shapes_folder / "square-blue" / "square-blue-3.png").read_bytes()).decode()
    body = client.post("/api/search", json={"k": 5, "examples": [{"image": blue}, {"item": "square-red-1", "weight": -1}]})
    assert body.status_code == 200, body.text
    results = body.json()["results"]
    assert len(results) == 5 and results[0]["metadata"]["colour"] == "blue" and "square-red-1" not in [r["id"] for r in results]
    both = client.post("/api/search", json={"item": QUERY_ID, "k": 4, "examples": [{"item": "circle-red-3"}],
                                            "diversity": 0.3, "collapse_duplicates": True, "combine": "max"}).json()
    assert len(both["results"]) == 4 and {QUERY_ID, "circle-red-3"}.isdisjoint(r["id"] for r in both["results"])


def test_json_search_flags_a_vector_unlike_the_catalog(client):
    _, matrix = client.app.state.lookalike.catalog.vectors()
    far = -np.asarray(matrix).mean(axis=0)        # points away from every item
    body = client.post("/api/search", json={"vector": far.tolist(), "k": 3}).json()
    assert body["no_close_match"] is True and all(r["weak"] for r in body["results"])
    near = client.post("/api/search", json={"vector": np.asarray(matrix[0]).tolist(), "k": 3}).json()
    assert near["no_close_match"] is False


@pytest.mark.parametrize("payload", [
    {"examples": [{"item": QUERY_ID, "weight": -1}]},                    # no positive example
    {"item": QUERY_ID, "vector": [1.0]},                                 # both
    {"examples": [{"item": QUERY_ID, "vector": [1.0]}]},                 # two kinds in one example
    {"item": QUERY_ID, "diversity": 2},
    {"item": QUERY_ID, "combine": "median"},
    {"item": QUERY_ID, "examples": [{"item": QUERY_ID}] * 51},
])
def test_json_search_steering_validation(client, payload):
    assert_error(client.post("/api/search", json=payload), 422)


def test_json_search_example_errors(client):
    assert_error(client.post("/api/search", json={"examples": [{"item": "nope"}]}), 404)
    assert_error(client.post("/api/search", json={"examples": [{"vector": [1.0, 2.0]}]}), 422, "bad_request")
    assert_error(client.post("/api/search", json={"examples": [{"image": "%%%"}]}), 422, "invalid_image")
    assert_error(client.post("/api/search", json={"item": QUERY_ID, "examples": [{"item": QUERY_ID, "weight": -1}]}),
                 422, "bad_request")   # the query and its negative cancel out
