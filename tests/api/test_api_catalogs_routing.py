"""Several catalogs in one server: /api/catalogs/{name}/... for every route, opened on first use;
/api/... stays the default catalog's; an unknown or unserved name is a JSON 404."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402

from fakes import N_ITEMS, QUERY_ID, assert_error, build_catalog, draw_shape, png_bytes  # noqa: E402

KEY = {"X-API-Key": "k"}


@pytest.fixture(scope="module")
def home(tmp_path_factory, shapes_folder):
    home = tmp_path_factory.mktemp("multi-home")
    for name in ("main", "second", "hidden"):
        build_catalog(home, shapes_folder, name)
    return home


@pytest.fixture
def multi(home):
    app = create_app("main", home=home, api_key="k", catalogs=["second"])
    with TestClient(app) as c:
        yield c, app


def test_each_catalog_answers_under_its_name(multi):
    c, app = multi
    assert [s.catalog.name for s in app.state.catalogs.opened()] == ["main"]   # opened lazily
    assert c.get("/api/catalogs/second/health").json()["catalog"] == "second"
    assert [s.catalog.name for s in app.state.catalogs.opened()] == ["main", "second"]
    assert c.get("/api/health").json()["catalog"] == "main"
    assert c.get("/api/catalogs/main/health").json()["catalog"] == "main"
    page = c.get("/api/catalogs/second/items?limit=2").json()
    assert page["total"] == N_ITEMS and page["items"][0]["thumb_url"].startswith("/api/catalogs/second/items/")
    similar = c.get(f"/api/catalogs/second/items/{QUERY_ID}/similar?k=3").json()
    assert [h["id"] for h in similar["results"]] == [h["id"] for h in c.get(f"/api/items/{QUERY_ID}/similar?k=3").json()["results"]]
    assert all(h["image_url"].startswith("/api/catalogs/second/items/") for h in similar["results"])
    image = c.get(similar["results"][0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert c.get(similar["results"][0]["thumb_url"] + "?size=128").status_code == 200
    # the default routes still point at the default catalog
    assert c.get(f"/api/items/{QUERY_ID}/similar?k=1").json()["results"][0]["image_url"].startswith("/api/items/")
    listed = c.get("/api/catalogs").json()
    assert listed["current"] == "main"
    assert {e["name"]: e["api"] for e in listed["catalogs"]} == {
        "hidden": None, "main": "/api/catalogs/main", "second": "/api/catalogs/second"}


@pytest.mark.parametrize("path", ["/api/catalogs/hidden/items", "/api/catalogs/nope/health",
                                  "/api/catalogs/..%2F..%2Fetc/items", "/api/catalogs/nope/items/x/image"])
def test_an_unserved_catalog_is_a_json_404(multi, path):
    c, _ = multi
    assert_error(c.get(path), 404, "not_found")


def test_writes_go_to_the_named_catalog_only(multi):
    c, _ = multi
    photo = png_bytes(draw_shape("circle", (10, 200, 10), seed=3))
    added = c.post("/api/catalogs/second/items", data={"id": "only-second"}, files={"file": ("a.png", photo, "image/png")},
                   headers=KEY)
    assert added.json()["outcome"] == "added"
    assert c.get("/api/catalogs/second/items/only-second").status_code == 200
    assert_error(c.get("/api/items/only-second"), 404)
    assert c.delete("/api/catalogs/second/items/only-second", headers=KEY).json() == {"removed": ["only-second"]}


def test_all_serves_every_catalog_of_the_home(home):
    with TestClient(create_app("main", home=home, catalogs=None)) as c:
        assert c.get("/api/catalogs/hidden/health").json()["catalog"] == "hidden"
        assert_error(c.get("/api/catalogs/nope/health"), 404, "not_found")
