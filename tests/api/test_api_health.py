"""Health, catalogs, the web app's static files, the API docs, unknown routes and a missing catalog."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import lookalike  # noqa: E402
from lookalike.api import create_app  # noqa: E402

from fakes import FAST, N_ITEMS, assert_error  # noqa: E402

STATIC = Path(lookalike.__file__).parent / "web" / "static"


def test_health_reports_catalog_and_features(client):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["catalog"] == "shapes" and body["items"] == N_ITEMS
    assert body["encoder"] == FAST and body["read_only"] is True
    features = body["features"]
    assert set(features) == {"latent", "clusters", "map", "duplicates", "goes_with", "shop"}
    assert all(features[f] for f in ("latent", "clusters", "map", "duplicates", "goes_with"))


def test_catalog_and_catalog_list(client):
    info = client.get("/api/catalog").json()
    assert info["name"] == "shapes" and info["items"] == N_ITEMS and info["current"]
    assert info["labels"]["circle-red"] == 7 and info["labels"]["square-blue"] == 6 and len(info["labels"]) == 9
    assert info["metadata_keys"] == ["colour", "shape"] and info["encoders"] == [FAST]
    listing = client.get("/api/catalogs").json()
    assert listing["current"] == "shapes" and [c["name"] for c in listing["catalogs"]] == ["shapes"]


def test_web_app_and_static_files_are_served_with_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/app.js"' in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and response.content == (STATIC / asset).read_bytes(), asset
    assert client.get("/openapi.json").json()["info"]["title"] == "lookalike"


def test_unknown_endpoint_is_json_404(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")


def test_create_app_on_missing_catalog_raises(tmp_path):
    from lookalike.catalog import CatalogNotFound

    with pytest.raises(CatalogNotFound):
        create_app("nothing", home=tmp_path)


def test_api_docs_work_offline(client):
    """/docs must not depend on a CDN: its Swagger UI files are served by the app itself."""
    pytest.importorskip("swagger_ui_bundle")
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    script, css = client.get("/docs-assets/swagger-ui-bundle.js"), client.get("/docs-assets/swagger-ui.css")
    assert script.status_code == css.status_code == 200
    assert "javascript" in script.headers["content-type"] and "SwaggerUIBundle" in script.text
    assert "text/css" in css.headers["content-type"] and ".swagger-ui" in css.text
    assert client.get("/openapi.json").json()["info"]["title"] == "lookalike"


def test_an_empty_catalog_is_ready_and_fills_through_the_write_api(tmp_path):
    """A catalog with no items (a header-only table, or one to be filled through the write API) was
    'failed' on /api/health/ready for good: a readiness probe never let traffic in, writes included."""
    import io
    import time

    from fastapi.testclient import TestClient
    from PIL import Image

    from lookalike.catalog import Catalog

    (tmp_path / "h.csv").write_text("id,image\n")
    Catalog.create("empty", home=tmp_path / "home").index(tmp_path / "h.csv", FAST)
    with TestClient(create_app("empty", home=tmp_path / "home", api_key="k")) as c:
        for _ in range(100):
            ready = c.get("/api/health/ready")
            if ready.json()["status"] != "starting":
                break
            time.sleep(0.05)
        assert ready.status_code == 200 and "empty" in ready.json()["message"]
        assert c.get("/api/items").json()["total"] == 0
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
        added = c.post("/api/items", data={"id": "first"}, files={"file": ("a.png", buf.getvalue(), "image/png")},
                       headers={"X-API-Key": "k"})
        assert added.status_code == 200, added.text
        assert c.get("/api/items/first").status_code == 200
