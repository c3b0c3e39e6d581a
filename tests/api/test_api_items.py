"""Items: paging, filters, detail, image and thumbnail files, path safety, writes behind the API key."""
from __future__ import annotations

import io

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402
from lookalike.catalog import Catalog  # noqa: E402

from fakes import AWKWARD_IDS, FAST, N_ITEMS, QUERY_ID, assert_error, awkward_catalog  # noqa: E402


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


def test_items_filter_takes_the_search_grammar_too(client):
    """The browse filter reads the clauses search takes (colour=green, colour in a,b, ...), not only key:value."""
    assert client.get("/api/items", params={"filter": "colour=green"}).json()["total"] == 18
    assert client.get("/api/items", params={"filter": "colour!=green"}).json()["total"] == N_ITEMS - 18
    both = client.get("/api/items", params={"filter": ["colour in green,red", "shape:circle"]}).json()
    per_colour = [client.get("/api/items", params={"filter": [f"colour:{c}", "shape:circle"]}).json()["total"]
                  for c in ("green", "red")]
    assert both["total"] == sum(per_colour) > 0 and {i["metadata"]["shape"] for i in both["items"]} == {"circle"}
    assert_error(client.get("/api/items", params={"filter": "color=green"}), 422, "unknown_column")


def test_items_filter_on_unknown_column_is_422_naming_the_known_ones(client):
    body = assert_error(client.get("/api/items", params={"filter": "color:green"}), 422, "unknown_column")
    assert body["message"] == "unknown column 'color'; this catalog's columns are: id, label, path, colour, shape"


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
        kept = c.get("/api/items/circle-red%2Fcircle-red-1/image")
        assert kept.status_code == 200 and kept.content == (folder / "circle-red" / "circle-red-1.png").read_bytes()


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



@pytest.fixture(scope="module")
def awkward(tmp_path_factory, shapes_folder):
    """A keyed TestClient on catalog 'awkward' (fakes.awkward_catalog) and each id's image bytes."""
    home = tmp_path_factory.mktemp("awkward")
    images = awkward_catalog(home, shapes_folder)
    with TestClient(create_app("awkward", home=home, api_key="k")) as c:
        yield c, {item: image.read_bytes() for item, image in images.items()}


def test_every_id_is_addressable_through_every_route(awkward):
    client, pictures = awkward
    listed = client.get("/api/items?limit=200").json()["items"]
    assert sorted(i["id"] for i in listed) == sorted(AWKWARD_IDS)
    for summary in listed:
        item = summary["id"]
        assert client.get(summary["image_url"]).content == pictures[item], item
        thumb = client.get(summary["thumb_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg", item
        base = summary["image_url"].removesuffix("/image")
        assert client.get(base).json()["id"] == item
        similar = client.get(f"{base}/similar?k=3").json()
        assert similar["query"]["id"] == item and item not in [r["id"] for r in similar["results"]]
        assert client.get(f"{base}/goes-with").json()["query"]["id"] == item
        # found, then: no VAE here (409); a shape is no person (422 no_person, or 409 without the pose model)
        assert client.get(f"{base}/latent").status_code == 409, item
        assert client.get(f"{base}/shop").json()["error"] in ("no_person", "feature_unavailable"), item
    assert_error(client.get("/api/items/nope%2Fimage"), 404, "not_found")


def test_unencoded_paths_keep_their_meaning(awkward):
    client, pictures = awkward
    # without encoding, the last word is the route: the picture of `dress`, of `dress/image`
    assert client.get("/api/items/dress/image").content == pictures["dress"]
    assert client.get("/api/items/dress/image/image").content == pictures["dress/image"]
    assert client.get("/api/items/dress%2Fimage").json()["id"] == "dress/image"
    assert client.get("/api/items/shoes%2Fimage/image").content == pictures["shoes/image"]
    assert_error(client.get("/api/items/shoes/image"), 404, "not_found")  # there is no item `shoes`


def test_delete_an_id_that_looks_like_a_route(awkward):
    client, _ = awkward
    removed = client.delete("/api/items/shoes%2Fsimilar", headers={"X-API-Key": "k"})
    assert removed.json() == {"removed": ["shoes/similar"]}
    assert_error(client.get("/api/items/shoes%2Fsimilar"), 404, "not_found")


def test_an_offset_beyond_sqlite_integers_is_422_not_500(client):
    """offset=10**20 reached SQLite (64-bit integers) and was a 500; a large in-range offset is an empty page."""
    assert_error(client.get("/api/items?offset=100000000000000000000"), 422, "invalid_parameters")
    page = client.get(f"/api/items?offset={2**62}").json()
    assert page["items"] == [] and page["total"] > 0


def test_a_not_found_message_keeps_its_closing_quote(client):
    """The 404 message of a LookupError was stripped of quotes at both ends ("... encoder 'nope")."""
    body = assert_error(client.get("/api/evaluation?encoder=nope"), 404, "not_found")
    assert body["message"].endswith("'nope'")
    body = assert_error(client.get("/api/items/nope/similar"), 404, "not_found")
    assert body["message"].count("'") % 2 == 0
