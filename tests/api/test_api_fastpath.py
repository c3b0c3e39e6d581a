"""The plain GET /api/items/{id}/similar answered before FastAPI's routing (lookalike.api.fastpath)
gives the route's own bytes and headers; everything else still goes through the route."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402
from lookalike.api import fastpath  # noqa: E402

import fakes  # noqa: E402
from fakes import QUERY_ID  # noqa: E402


@pytest.fixture
def served(home, shapes_folder, monkeypatch):
    """A client on the shapes catalog (table built when the app starts) and a count of fast-path answers."""
    home.mkdir(parents=True, exist_ok=True)
    fakes.build_catalog(home, shapes_folder)
    answered = []
    original = fastpath.SimilarFastPath._answer

    def counting(self, scope, path):
        response = original(self, scope, path)
        answered.append(response is not None)
        return response

    monkeypatch.setattr(fastpath.SimilarFastPath, "_answer", counting)
    with TestClient(create_app("shapes", home=home, warm=True)) as client:
        yield client, answered


def test_fast_path_equals_the_route(served):
    client, answered = served
    fast = client.get(f"/api/items/{QUERY_ID}/similar?k=7")
    assert answered == [True] and fast.status_code == 200
    routed = client.get(f"/api/items/{QUERY_ID}/similar?k=7&diversity=0")   # another parameter: the route
    assert answered == [True, False] and routed.status_code == 200
    assert fast.content == routed.content and len(fast.json()["results"]) == 7
    for header in ("content-type", "cache-control", "content-security-policy", "x-content-type-options"):
        assert fast.headers[header] == routed.headers[header]
    assert re.match(r'^W/"[0-9a-f]{24}"$', fast.headers["etag"])
    # the default k, and the answer the library gives
    default = client.get(f"/api/items/{QUERY_ID}/similar").json()
    cat = client.app.state.lookalike.catalog
    assert [h["id"] for h in default["results"]] == [h.id for h in cat.search(item=QUERY_ID, k=12)]
    # revalidation, errors and every other parameter go through the route
    assert client.get(f"/api/items/{QUERY_ID}/similar", headers={"If-None-Match": fast.headers["etag"]}).status_code \
        in (200, 304)
    assert client.get("/api/items/no-such-item/similar").status_code == 404
    assert client.get(f"/api/items/{QUERY_ID}/similar?k=0").status_code == 422
    assert client.get(f"/api/items/{QUERY_ID}/similar?k=101").status_code == 422
    assert client.get(f"/api/items/{QUERY_ID}/similar?k=3&filter=label=circle").status_code == 200
    assert answered.count(True) == 2


def test_fast_path_answers_are_counted_in_metrics(served):
    client, answered = served
    for _ in range(3):
        assert client.get(f"/api/items/{QUERY_ID}/similar?k=4").status_code == 200
    assert answered == [True] * 3
    text = client.get("/metrics").text
    line = [x for x in text.splitlines() if x.startswith("http_requests_total{") and "/similar" in x]
    assert line == ['http_requests_total{handler="/api/items/{item_id:item}/similar",method="GET",status="200"} 3.0']


def test_ids_with_slashes_and_no_table(home, shapes_folder):
    fakes.indexed_catalog(home, shapes_folder)   # folder ids: "circle-red/circle-red-1"
    item = "circle-red%2Fcircle-red-1"
    with TestClient(create_app("shapes", home=home, warm=True)) as client:
        fast = client.get(f"/api/items/{item}/similar?k=5")
        routed = client.get(f"/api/items/{item}/similar?k=5&diversity=0")
        assert fast.status_code == 200 and fast.content == routed.content
        assert fast.json()["query"]["id"] == "circle-red/circle-red-1"
    with TestClient(create_app("shapes", home=home, warm=True, similar_table=False)) as client:
        response = client.get(f"/api/items/{item}/similar?k=5")
        assert response.status_code == 200 and response.content == fast.content
        assert client.app.state.lookalike.catalog.similar_from_table("circle-red/circle-red-1", 5) is None
