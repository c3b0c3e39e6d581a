"""The plain GET /api/items/{id}/similar answered before FastAPI's routing (lookalike.api.fastpath)
gives the route's own bytes and headers; everything else still goes through the route."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402
from lookalike.api import fastpath  # noqa: E402
from lookalike.api.schemas import DEFAULT_SIMILAR_K, DEFAULT_UPLOAD_K  # noqa: E402

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
    routed_default = client.get(f"/api/items/{QUERY_ID}/similar?diversity=0").json()   # the route's own default
    assert routed_default == default and len(default["results"]) == DEFAULT_SIMILAR_K
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


# -- POST /api/search/image -------------------------------------------------------------------
@pytest.fixture
def uploads(home, shapes_folder, monkeypatch):
    """A client on the shapes catalog, a photo of it, and a record of what the upload fast path did
    (True: it answered; False: it handed the request to the route)."""
    home.mkdir(parents=True, exist_ok=True)
    fakes.build_catalog(home, shapes_folder)
    answered = []
    original = fastpath.UploadFastPath._answer

    async def recording(self, scope, body):
        try:
            response = await original(self, scope, body)
        except Exception:
            answered.append(False)
            raise
        answered.append(response is not None)
        return response

    monkeypatch.setattr(fastpath.UploadFastPath, "_answer", recording)
    photo = fakes.png_bytes(fakes.draw_shape("circle", (200, 30, 30)), "JPEG")
    with TestClient(create_app("shapes", home=home, warm=True, max_upload_bytes=200_000)) as client:
        yield client, answered, photo


def test_upload_fast_path_equals_the_route(uploads):
    client, answered, photo = uploads
    fast = client.post("/api/search/image", files={"file": ("q.jpg", photo, "image/jpeg")}, data={"k": "5"})
    assert answered == [True] and fast.status_code == 200 and len(fast.json()["results"]) == 5
    # an empty label is still a field the fast path does not read: the route answers, the same bytes
    routed = client.post("/api/search/image", files={"file": ("q.jpg", photo, "image/jpeg")},
                         data={"k": "5", "label": ""})
    assert answered == [True, False] and routed.status_code == 200
    assert fast.content == routed.content
    for header in ("content-type", "content-security-policy", "x-content-type-options"):
        assert fast.headers[header] == routed.headers[header]
    # the default k, the library's own answer
    default = client.post("/api/search/image", files={"file": ("q.jpg", photo, "image/jpeg")})
    assert answered[-1] is True
    cat = client.app.state.lookalike.catalog
    assert [h["id"] for h in default.json()["results"]] == [h.id for h in cat.search(image=photo, k=12)]
    # other fields are applied by the route
    label = default.json()["results"][-1]["label"]
    only = client.post("/api/search/image", files={"file": ("q.jpg", photo, "image/jpeg")},
                       data={"k": "3", "label": label})
    assert answered[-1] is False and {h["label"] for h in only.json()["results"]} == {label}
    text = client.get("/metrics").text
    assert 'http_requests_total{handler="/api/search/image",method="POST",status="200"} 4.0' in text
    # no k: the fast path and the route read one default (api.schemas), not two copies of it
    routed_default = client.post("/api/search/image", files={"file": ("q.jpg", photo, "image/jpeg")}, data={"label": ""})
    assert answered[-1] is False and routed_default.content == default.content
    assert len(default.json()["results"]) == DEFAULT_UPLOAD_K and fastpath.DEFAULT_UPLOAD_K is DEFAULT_UPLOAD_K


@pytest.mark.parametrize("case", ["k0", "k_big", "k_text", "two_files", "no_filename", "not_image", "empty",
                                  "too_large", "bad_image", "not_multipart", "truncated"])
def test_upload_fast_path_leaves_every_error_to_the_route(uploads, case):
    """Whatever the fast path does not answer is the route's, with the route's JSON error."""
    client, answered, photo = uploads
    files = {"file": ("q.jpg", photo, "image/jpeg")}
    expect = {"k0": 422, "k_big": 422, "k_text": 422, "two_files": 422, "no_filename": 422, "not_image": 415,
              "empty": 422, "too_large": 413, "bad_image": 422, "not_multipart": 422, "truncated": 422}[case]
    if case in ("k0", "k_big", "k_text"):
        response = client.post("/api/search/image", files=files, data={"k": {"k0": "0", "k_big": "101", "k_text": "ten"}[case]})
    elif case == "two_files":   # a second part: the route answers it (a 422: file given twice, api.params)
        response = client.post("/api/search/image", files=[("file", ("q.jpg", photo, "image/jpeg")),
                                                             ("file", ("r.jpg", photo, "image/jpeg"))])
    elif case == "no_filename":
        response = client.post("/api/search/image", data={"file": "not a file"})
    elif case == "not_image":
        response = client.post("/api/search/image", files={"file": ("q.jpg", b"plain text, no image", "image/jpeg")})
    elif case == "empty":
        response = client.post("/api/search/image", files={"file": ("q.jpg", b"", "image/jpeg")})
    elif case == "too_large":   # over the cap, under the cap + multipart overhead: check_upload's 413
        response = client.post("/api/search/image", files={"file": ("q.jpg", photo[:3] + b"\0" * 210_000, "image/jpeg")})
    elif case == "bad_image":   # a JPEG signature, then nothing decodable: 422 corrupt
        response = client.post("/api/search/image", files={"file": ("q.jpg", photo[:3] + b"\0" * 500, "image/jpeg")})
    elif case == "not_multipart":
        response = client.post("/api/search/image", content=photo, headers={"Content-Type": "image/jpeg"})
    else:   # no closing boundary
        body = (b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n"
                b"Content-Type: image/jpeg\r\n\r\n" + photo)
        response = client.post("/api/search/image", content=body,
                               headers={"Content-Type": "multipart/form-data; boundary=b0"})
    assert response.status_code == expect, response.text
    assert response.headers["content-type"].startswith("application/json") and response.json()
    assert True not in answered   # never answered by the fast path
    if expect != 200:
        assert "error" in response.json() or "detail" in response.json()


def test_upload_over_the_byte_cap_streamed(uploads):
    """A chunked body past the cap stops being read: BodySizeLimit's JSON 413, through the route."""
    client, answered, photo = uploads

    def chunks():
        yield b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n\r\n" + photo
        for _ in range(40):
            yield b"\0" * 10_000
        yield b"\r\n--b0--\r\n"

    response = client.post("/api/search/image", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=b0"})
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert True not in answered
