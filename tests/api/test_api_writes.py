"""The write API behind the key: POST /api/items (multipart upload or URL), POST /api/items/bulk,
PATCH /api/items/{id}; 401/403 without the right key, one outcome per item, searchable at once."""
from __future__ import annotations

import base64
import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402

from fakes import N_ITEMS, QUERY_ID, assert_error, build_catalog, draw_shape, png_bytes  # noqa: E402

KEY = {"X-API-Key": "s3cret"}
# colours no catalog image has: a search by either photo finds the new item first
GREEN = png_bytes(draw_shape("circle", (240, 200, 20), seed=11))
BLUE = png_bytes(draw_shape("square", (160, 40, 200), seed=12))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def writable(tmp_path, shapes_folder):
    home = tmp_path / "home"
    home.mkdir()
    build_catalog(home, shapes_folder)
    with TestClient(create_app("shapes", home=home, api_key="s3cret")) as c:
        yield c


@pytest.mark.parametrize("call", [
    lambda c, h: c.post("/api/items", data={"id": "x"}, files={"file": ("x.png", GREEN, "image/png")}, headers=h),
    lambda c, h: c.post("/api/items/bulk", json={"items": [{"id": "x", "image": b64(GREEN)}]}, headers=h),
    lambda c, h: c.patch(f"/api/items/{QUERY_ID}", json={"label": "x"}, headers=h),
    lambda c, h: c.delete(f"/api/items/{QUERY_ID}", headers=h),
])
def test_every_write_needs_the_key(writable, client, call):
    assert_error(call(writable, {}), 401, "unauthorized")
    assert_error(call(writable, {"X-API-Key": "wrong"}), 401, "unauthorized")
    assert_error(call(client, KEY), 403, "read_only")   # a server started without a key never writes
    assert writable.get("/api/items?limit=1").json()["total"] == N_ITEMS


def test_upload_adds_an_item_searchable_at_once(writable):
    response = writable.post("/api/items", data={"id": "new-green", "label": "circle-green",
                                                  "metadata": json.dumps({"price": 9.5, "colour": "green"})},
                             files={"file": ("g.png", GREEN, "image/png")}, headers=KEY)
    assert response.status_code == 200 and response.json()["outcome"] == "added"
    detail = writable.get("/api/items/new-green").json()
    assert detail["metadata"] == {"price": 9.5, "colour": "green"} and detail["label"] == "circle-green"
    assert writable.get("/api/items/new-green/image").content == GREEN
    assert writable.get("/api/items/new-green/thumb?size=128").headers["content-type"] == "image/jpeg"
    found = writable.post("/api/search/image", files={"file": ("q.png", GREEN, "image/png")}, data={"k": "1"}).json()
    assert found["results"][0]["id"] == "new-green"
    filtered = writable.post("/api/search", json={"item": QUERY_ID, "filters": ["price<10"]}).json()
    assert [h["id"] for h in filtered["results"]] == ["new-green"]
    same = writable.post("/api/items", data={"id": "new-green", "label": "circle-green",
                                             "metadata": json.dumps({"price": 9.5, "colour": "green"})},
                         files={"file": ("g.png", GREEN, "image/png")}, headers=KEY)
    assert same.json()["outcome"] == "unchanged"
    replaced = writable.post("/api/items", data={"id": "new-green"}, files={"file": ("b.png", BLUE, "image/png")},
                             headers=KEY)
    assert replaced.json()["outcome"] == "updated"
    assert writable.post("/api/search/image", files={"file": ("q.png", BLUE, "image/png")},
                         data={"k": "1"}).json()["results"][0]["id"] == "new-green"
    assert writable.get("/api/items?limit=1").json()["total"] == N_ITEMS + 1


@pytest.mark.parametrize("form, files, status, code", [
    ({"id": "x"}, {"file": ("x.png", b"plain text", "image/png")}, 415, "not_an_image"),
    ({"id": "x"}, {"file": ("x.png", GREEN[:60], "image/png")}, 422, "corrupt"),
    ({"id": "x"}, None, 422, "invalid_image"),
    ({"id": "x", "url": "ftp://example.com/a.png"}, None, 422, "invalid_image"),
    ({"id": "x", "url": "http://example.com/a.png"}, {"file": ("x.png", GREEN, "image/png")}, 422, "invalid_image"),
    ({"id": "x", "metadata": "{not json"}, {"file": ("x.png", GREEN, "image/png")}, 422, "invalid_metadata"),
    ({"id": "x", "metadata": "[1, 2]"}, {"file": ("x.png", GREEN, "image/png")}, 422, "invalid_metadata"),
    ({"id": "x", "metadata": '{"path": "/etc"}'}, {"file": ("x.png", GREEN, "image/png")}, 422, "invalid_metadata"),
    ({"id": "bad\x01id"}, {"file": ("x.png", GREEN, "image/png")}, 422, "invalid_id"),
])
def test_a_bad_item_is_refused_with_its_reason_and_nothing_is_written(writable, form, files, status, code):
    body = assert_error(writable.post("/api/items", data=form, files=files, headers=KEY), status, code)
    assert body["id"] == form["id"]
    assert writable.get("/api/items?limit=1").json()["total"] == N_ITEMS


def test_bulk_writes_the_good_items_and_reports_the_bad_ones(writable):
    items = [{"id": "g1", "image": b64(GREEN), "label": "circle-green", "metadata": {"in_stock": True}},
             {"id": "broken", "image": "!!not base64!!"},
             {"id": "text", "image": b64(b"hello")},
             {"id": "g1", "image": b64(BLUE)},
             {"id": "b1", "image": "data:image/png;base64," + b64(BLUE)},
             {"id": "nowhere", "url": "http://127.0.0.1:9/none.png"},
             {"id": QUERY_ID, "image": b64(BLUE), "label": "square-blue"}]
    response = writable.post("/api/items/bulk", json={"items": items}, headers=KEY)
    assert response.status_code == 200
    body = response.json()
    assert [(r["id"], r["outcome"], r["reason"]) for r in body["results"]] == [
        ("g1", "added", None), ("broken", "failed", "invalid_image"), ("text", "failed", "not_an_image"),
        ("g1", "failed", "duplicate_id"), ("b1", "added", None), ("nowhere", "failed", "blocked_address"),
        (QUERY_ID, "updated", None)]
    assert (body["added"], body["updated"], body["unchanged"], body["failed"]) == (2, 1, 0, 4)
    assert writable.get("/api/items?limit=1").json()["total"] == N_ITEMS + 2
    assert writable.get(f"/api/items/{QUERY_ID}").json()["label"] == "square-blue"
    assert writable.get("/api/items/g1").json()["metadata"] == {"in_stock": True}
    assert_error(writable.get("/api/items/broken"), 404)


@pytest.mark.parametrize("body", [{"items": []}, {"items": [{"id": "x"}] * 101}, {"items": [{"image": "aa"}]},
                                  {"items": [{"id": "x", "image": "aa", "metadata": {"a": [1]}}]}])
def test_a_malformed_bulk_request_is_422(writable, body):
    assert_error(writable.post("/api/items/bulk", json=body, headers=KEY), 422, "invalid_parameters")


def test_patch_changes_label_and_metadata_without_re_embedding(writable):
    before = writable.get(f"/api/items/{QUERY_ID}").json()
    response = writable.patch(f"/api/items/{QUERY_ID}", json={"metadata": {"price": 20, "colour": None}},
                              headers=KEY)
    assert response.status_code == 200
    after = response.json()
    assert after["metadata"] == {"shape": before["metadata"]["shape"], "price": 20}
    assert after["label"] == before["label"] and after["sha256"] == before["sha256"]
    assert writable.get("/api/items", params={"filter": "price>=20"}).json()["total"] == 1
    cleared = writable.patch(f"/api/items/{QUERY_ID}", json={"label": None, "metadata": {"a": "b"}, "replace": True},
                             headers=KEY).json()
    assert cleared["label"] is None and cleared["metadata"] == {"a": "b"}
    assert_error(writable.patch("/api/items/nope", json={"label": "x"}, headers=KEY), 404, "not_found")
    assert_error(writable.patch(f"/api/items/{QUERY_ID}", json={"metadata": {"label": "x"}}, headers=KEY), 422,
                 "invalid_metadata")
    assert_error(writable.patch(f"/api/items/{QUERY_ID}", json={"metadata": {"a": {"b": 1}}}, headers=KEY), 422)
    assert_error(writable.patch(f"/api/items/{QUERY_ID}", json={"label": ""}, headers=KEY), 422)  # blank: refused
    assert writable.get(f"/api/items/{QUERY_ID}").json()["label"] is None


def test_delete_then_search_no_longer_finds_it(writable):
    assert writable.post("/api/search", json={"item": "circle-red-2", "k": 54}).json()["results"]
    assert writable.delete(f"/api/items/{QUERY_ID}", headers=KEY).json() == {"removed": [QUERY_ID]}
    ids = [h["id"] for h in writable.post("/api/search", json={"item": "circle-red-2", "k": 60}).json()["results"]]
    assert QUERY_ID not in ids and len(ids) == N_ITEMS - 2


def test_an_integer_beyond_64_bits_is_refused_not_a_500_later(writable):
    """A PATCH of 10**30 was stored, then every answer holding that item (similar, search) was a 500:
    orjson cannot write integers beyond 64 bits. The write is refused; larger numbers go as text."""
    big = {"metadata": {"big": 10**30}}
    body = assert_error(writable.patch(f"/api/items/{QUERY_ID}", json=big, headers=KEY), 422, "invalid_metadata")
    assert "64 bits" in body["message"]
    outcome = writable.post("/api/items/bulk", json={"items": [{"id": "n", "image": b64(GREEN), **big}]},
                            headers=KEY).json()["results"][0]
    assert outcome["outcome"] == "failed" and outcome["reason"] == "invalid_metadata"
    ok = writable.patch(f"/api/items/{QUERY_ID}", json={"metadata": {"big": 2**63 - 1, "text": str(10**30)}},
                        headers=KEY)
    assert ok.status_code == 200 and ok.json()["metadata"]["big"] == 2**63 - 1
    assert writable.get(f"/api/items/{QUERY_ID}/similar?k=3").status_code == 200


def test_a_patch_with_a_misspelt_field_is_422_not_a_silent_no_op(writable):
    """{"meta": {...}} (or any unknown field) answered 200 and changed nothing."""
    before = writable.get(f"/api/items/{QUERY_ID}").json()
    assert_error(writable.patch(f"/api/items/{QUERY_ID}", json={"meta": {"price": 1}}, headers=KEY), 422,
                 "invalid_parameters")
    assert writable.get(f"/api/items/{QUERY_ID}").json() == before


def test_import_force_under_a_running_server_is_refused_not_served_stale(writable, tmp_path):
    """`lookalike import --force` over the catalog a server serves: the server neither answers from the
    old files nor accepts writes that would go to the deleted copy — 503 catalog_replaced, with the
    way out; a server started afterwards serves the imported catalog."""
    from lookalike.catalog import Catalog, import_catalog

    home = tmp_path / "home"
    assert writable.get(f"/api/items/{QUERY_ID}").status_code == 200
    snap = Catalog.open("shapes", home=home).export(tmp_path / "s.tar", images=False).path
    assert writable.delete(f"/api/items/{QUERY_ID}", headers=KEY).status_code == 200   # only in the served copy
    import_catalog(snap, home, force=True)                                           # has QUERY_ID again
    for answer in (writable.get(f"/api/items/{QUERY_ID}"),
                   writable.get(f"/api/items/{QUERY_ID}/similar?k=3"),
                   writable.patch(f"/api/items/{QUERY_ID}", json={"label": "x"}, headers=KEY)):
        assert_error(answer, 503, "catalog_replaced")
        assert "restart" in answer.json()["message"]
    with TestClient(create_app("shapes", home=home, api_key="s3cret")) as fresh:
        assert fresh.get(f"/api/items/{QUERY_ID}").status_code == 200
