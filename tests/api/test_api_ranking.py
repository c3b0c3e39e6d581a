"""POST /api/search and the ranking options of the other search routes: every parameter and its errors."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402

from fakes import QUERY_ID, assert_error, vector_catalog  # noqa: E402

Q = [1.0, 0.0]


@pytest.fixture
def shop(tmp_path):
    """Query [1, 0] scores item i at s_i; products A (0, 2), B (1, 3), C (4)."""
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    meta = [{"price": "10", "product_id": "A", "colour": "red", "in_stock": "0", "added": "2025-01-01"},
            {"price": "60", "product_id": "B", "colour": "blue", "in_stock": "0", "added": "2025-01-01"},
            {"price": "30", "product_id": "A", "colour": "navy", "in_stock": "1", "added": "2025-01-01"},
            {"price": "45", "product_id": "B", "colour": "green", "in_stock": "0", "added": "2025-01-01"},
            {"price": "20", "product_id": "C", "colour": "red", "in_stock": "1", "added": "2999-01-01"}]
    vector_catalog(tmp_path, "shop", np.stack([s, np.sqrt(1 - s ** 2)], 1), ["x"] * 5, metadata=meta)
    with TestClient(create_app("shop", home=tmp_path, api_key="")) as c:
        yield c


def ids(body) -> list[str]:
    return [r["id"] for r in body["results"]]


def test_search_by_vector_and_item(shop):
    body = shop.post("/api/search", json={"vector": Q, "k": 2}).json()
    assert ids(body) == ["item-0", "item-1"] and body["query"] is None
    assert body["results"][0]["score_parts"] == {"visual": pytest.approx(0.9, abs=1e-6)}
    body = shop.post("/api/search", json={"item": "item-0", "k": 2}).json()
    assert body["query"]["id"] == "item-0" and "item-0" not in ids(body)


def test_filters_where_and_label(shop):
    assert ids(shop.post("/api/search", json={"vector": Q, "filters": ["20<=price<=50"]}).json()) == \
        ["item-2", "item-3", "item-4"]
    assert ids(shop.post("/api/search", json={"vector": Q, "filters": ["colour in red,blue", "price<50"]}).json()) == \
        ["item-0", "item-4"]
    assert ids(shop.post("/api/search", json={"vector": Q, "where": {"colour": ["navy", "green"]}}).json()) == \
        ["item-2", "item-3"]
    assert ids(shop.post("/api/search", json={"vector": Q, "label": "y"}).json()) == []
    for where in ({"label": []}, {"colour": []}):   # any of nothing: nothing, not an error
        answer = shop.post("/api/search", json={"vector": Q, "where": where})
        assert answer.status_code == 200 and ids(answer.json()) == []


def test_boosts_recency_pin_bury(shop):
    body = shop.post("/api/search", json={"vector": Q, "k": 3, "boosts": ["in_stock=1:+0.25"]}).json()
    # 0.9, 0.8, 0.7+0.25 = 0.95, 0.6, 0.5+0.25 = 0.75
    assert ids(body) == ["item-2", "item-0", "item-1"]
    assert body["results"][0]["score"] == pytest.approx(0.95, abs=1e-6)
    assert body["results"][0]["score_parts"]["boost:in_stock=1"] == 0.25
    body = shop.post("/api/search", json={"vector": Q, "k": 2, "recency": "added:30d:0.5"}).json()
    assert ids(body)[0] == "item-4"  # dated in the future: the full +0.5
    assert body["results"][0]["score_parts"]["recency:added"] == pytest.approx(0.5)
    body = shop.post("/api/search", json={"vector": Q, "k": 5, "pin": ["item-3"], "bury": ["item-0"]}).json()
    assert ids(body) == ["item-3", "item-1", "item-2", "item-4", "item-0"]
    assert body["results"][0]["score_parts"]["pin"] == 1.0


def test_group_by_and_variant(shop):
    body = shop.post("/api/search", json={"vector": Q, "k": 2, "group_by": "product_id", "variant": "colour"}).json()
    assert ids(body) == ["item-0", "item-1"]
    assert [r["group"] for r in body["results"]] == [["item-2"], ["item-3"]]
    assert [r["matched_variant"] for r in body["results"]] == ["red", "blue"]
    body = shop.post("/api/search", json={"item": "item-0", "k": 5, "group_by": "product_id"}).json()
    assert ids(body) == ["item-1", "item-4"]   # A (0 and 2) excluded as the query's product


@pytest.mark.parametrize("payload, status, code, words", [
    ({"vector": Q, "filters": ["size<3"]}, 422, "unknown_column", "columns are: id, label, path, added"),
    ({"vector": Q, "filters": ["colour<3"]}, 422, "invalid_filter", "numeric columns are: in_stock, price"),
    ({"vector": Q, "filters": ["price<cheap"]}, 422, "invalid_filter", "needs a number"),
    ({"vector": Q, "boosts": ["in_stock=1"]}, 422, "invalid_filter", "CONDITION:WEIGHT"),
    ({"vector": Q, "boosts": ["stock=1:0.1"]}, 422, "unknown_column", "stock"),
    ({"vector": Q, "recency": "added:forever:1"}, 422, "invalid_filter", "half-life"),
    ({"vector": Q, "recency": "born:30d:0.1"}, 422, "unknown_column", "born"),
    ({"vector": Q, "recency": "colour:30d:0.1"}, 422, "invalid_filter", "holds no readable dates"),
    ({"vector": Q, "variant": "colour"}, 422, "invalid_filter", "give group_by too"),
    ({"vector": Q, "pin": ["item-1"], "bury": ["item-1"]}, 422, "invalid_filter", "pinned and buried"),
    ({"vector": Q, "pin": ["item-1", "nope"]}, 422, "invalid_filter", "not in catalog 'shop': 'nope'"),
    ({"vector": Q, "bury": ["gone", "item-2"]}, 422, "invalid_filter", "'gone'"),
    ({"vector": Q, "group_by": "style"}, 422, "unknown_column", "style"),
    ({"vector": Q, "group_by": "product_id", "variant": "shade"}, 422, "unknown_column", "shade"),
    ({"vector": Q, "where": {"size": "M"}}, 422, "unknown_column", "size"),
    ({"vector": Q, "item": "item-0"}, 422, "invalid_parameters", "exactly one of item or vector"),
    ({}, 422, "invalid_parameters", "exactly one"),
    ({"vector": Q, "k": 0}, 422, "invalid_parameters", "k"),
    ({"vector": Q, "k": 101}, 422, "invalid_parameters", "k"),
    ({"vector": Q, "min_score": 2}, 422, "invalid_parameters", "min_score"),
    ({"vector": Q, "filters": ["price<1"] * 21}, 422, "invalid_parameters", "filters"),
    ({"vector": [1.0, 0.0, 0.0]}, 422, "bad_request", "expects 2"),
    ({"item": "nope"}, 404, "not_found", "nope"),
    ({"vector": Q, "encoder": "effnet-lite0"}, 404, "not_found", "effnet-lite0"),
])
def test_errors_are_json(shop, payload, status, code, words):
    body = assert_error(shop.post("/api/search", json=payload), status, code)
    assert words in body["message"]


def test_similar_route_takes_filter_boost_and_group(client):
    body = client.get(f"/api/items/{QUERY_ID}/similar",
                      params={"k": 3, "filter": ["colour!=red", "shape in square,triangle"]}).json()
    assert len(body["results"]) == 3
    assert all(r["metadata"]["colour"] != "red" and r["metadata"]["shape"] in ("square", "triangle")
               for r in body["results"])
    body = client.get(f"/api/items/{QUERY_ID}/similar", params={"k": 3, "group_by": "label", "variant": "colour"}).json()
    labels = [r["label"] for r in body["results"]]
    assert len(set(labels)) == 3 and "circle-red" not in labels   # one per label; the query's label excluded
    assert all(len(r["group"]) >= 5 for r in body["results"]) and body["results"][0]["matched_variant"]
    body = client.get(f"/api/items/{QUERY_ID}/similar", params={"k": 1, "boost": "colour=blue:+1"}).json()
    assert body["results"][0]["metadata"]["colour"] == "blue"
    assert_error(client.get(f"/api/items/{QUERY_ID}/similar", params={"filter": "weight<2"}), 422, "unknown_column")
    assert_error(client.get(f"/api/items/{QUERY_ID}/similar", params={"boost": "colour=blue"}), 422, "invalid_filter")
    assert_error(client.get(f"/api/items/{QUERY_ID}/similar", params={"group_by": "nope"}), 422, "unknown_column")


def test_upload_route_takes_filter_boost_and_group(client, shapes_folder):
    data = (shapes_folder / "triangle-blue" / "triangle-blue-2.png").read_bytes()
    files = {"file": ("photo.png", data, "image/png")}
    body = client.post("/api/search/image", files=files, data={"k": "4", "filter": ["colour=green"]}).json()
    assert {r["metadata"]["colour"] for r in body["results"]} == {"green"}
    body = client.post("/api/search/image", files=files, data={"k": "3", "group_by": "shape"}).json()
    assert sorted(r["metadata"]["shape"] for r in body["results"]) == ["circle", "square", "triangle"]
    body = client.post("/api/search/image", files=files, data={"k": "1", "boost": ["colour=red:+1"]}).json()
    assert body["results"][0]["metadata"]["colour"] == "red"
    assert_error(client.post("/api/search/image", files=files, data={"filter": ["shape<2"]}), 422, "invalid_filter")
