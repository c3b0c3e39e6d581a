"""GET /metrics (Prometheus text: request counts by route template, write counters, catalog gauges)
and the health probes /api/health/live and /api/health/ready."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.api import create_app  # noqa: E402

from fakes import N_ITEMS, QUERY_ID, build_catalog, draw_shape, png_bytes  # noqa: E402


def value(text: str, name: str, **labels) -> float | None:
    """The sample ``name{labels}`` of a Prometheus text page (labels in any order), or None."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            return float(match.group(3))
    return None


def test_metrics_count_requests_by_route_template_and_show_the_catalog(tmp_path, shapes_folder):
    build_catalog(tmp_path, shapes_folder, "metered")
    with TestClient(create_app("metered", home=tmp_path, api_key="k")) as c:
        for item in ("circle-red-1", "circle-red-2", "square-blue-1"):
            assert c.get(f"/api/items/{item}/similar?k=2").status_code == 200
        c.get("/api/items/no-such-item/similar")
        photo = png_bytes(draw_shape("circle", (10, 200, 10), seed=4))
        c.post("/api/items", data={"id": "m1"}, files={"file": ("a.png", photo, "image/png")}, headers={"X-API-Key": "k"})
        c.post("/api/items", data={"id": "m2"}, files={"file": ("a.png", b"junk", "image/png")}, headers={"X-API-Key": "k"})
        response = c.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    template = "/api/items/{item_id:item}/similar"
    assert value(text, "http_requests_total", handler=template, method="GET", status="200") >= 3
    assert value(text, "http_requests_total", handler=template, method="GET", status="404") >= 1
    assert "circle-red-1" not in text   # raw paths never become labels
    assert value(text, "http_request_duration_seconds_count", handler=template, method="GET") >= 4
    assert value(text, "lookalike_item_writes_total", catalog="metered", outcome="added") >= 1
    assert value(text, "lookalike_item_writes_total", catalog="metered", outcome="failed") >= 1
    assert value(text, "lookalike_catalog_items", catalog="metered") == N_ITEMS + 1
    assert value(text, "lookalike_catalog_vectors", catalog="metered", encoder="colour-hist") == N_ITEMS + 1
    assert value(text, "lookalike_index_bytes", catalog="metered") > 0
    assert value(text, "lookalike_last_ingest_rows", catalog="metered", outcome="added") == N_ITEMS


def test_live_and_ready(tmp_path, shapes_folder):
    build_catalog(tmp_path, shapes_folder, "probe")
    app = create_app("probe", home=tmp_path)
    c = TestClient(app)   # not started: nothing has loaded the index yet
    assert c.get("/api/health/live").json() == {"status": "ok"}
    first = c.get("/api/health/ready")
    state = app.state.lookalike
    if first.status_code == 503:   # the first ask started loading it
        assert first.json()["status"] == "starting"
    state._warming.join(timeout=60)
    ready = c.get("/api/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["items"] == N_ITEMS
    assert c.get("/api/health").json()["status"] == "ok"   # kept as it was


def test_ready_reports_a_catalog_that_cannot_load(tmp_path, shapes_folder):
    cat = build_catalog(tmp_path, shapes_folder, "broken")
    cat.set_default_encoder("colour-hist,bins=4")   # no vectors for it
    with TestClient(create_app("broken", home=tmp_path)) as c:
        for _ in range(100):
            body = c.get("/api/health/ready")
            if body.json()["status"] != "starting":
                break
            time.sleep(0.05)
        assert body.status_code == 503 and body.json()["status"] == "failed" and "no vectors" in body.json()["message"]
        assert c.get("/api/health/live").status_code == 200


def test_metrics_sum_every_worker_process(tmp_path, shapes_folder):
    """prometheus_client's multiprocess mode: counters written by two server processes sharing
    PROMETHEUS_MULTIPROC_DIR are summed by the /metrics of either."""
    build_catalog(tmp_path, shapes_folder, "shared")
    folder = tmp_path / "prom"
    folder.mkdir()
    script = ("import sys; from fastapi.testclient import TestClient; from lookalike.api import create_app; "
              "c = TestClient(create_app('shared', home=sys.argv[1])); "
              f"[c.get('/api/items/{QUERY_ID}/similar?k=1') for _ in range(int(sys.argv[2]))]; "
              "print(c.get('/metrics').text)")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    first = subprocess.run([sys.executable, "-c", script, str(tmp_path), "3"], env=env, capture_output=True,
                           text=True, timeout=180)
    second = subprocess.run([sys.executable, "-c", script, str(tmp_path), "2"], env=env, capture_output=True,
                            text=True, timeout=180)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    handler = "/api/items/{item_id:item}/similar"
    assert value(first.stdout, "http_requests_total", handler=handler, method="GET", status="200") == 3
    assert value(second.stdout, "http_requests_total", handler=handler, method="GET", status="200") == 5
    assert value(second.stdout, "lookalike_catalog_items", catalog="shared") == N_ITEMS


def test_served_by_two_workers_a_write_through_one_is_seen_by_all_and_metrics_sum(tmp_path, shapes_folder):
    """`lookalike serve --workers 2` with a key: an item POSTed to whichever worker answers is found
    by every worker's next search, and /metrics (prometheus multiprocess mode, set up by serve)
    counts the requests of both workers whichever answers the scrape."""
    import socket

    import httpx

    build_catalog(tmp_path, shapes_folder, "shapes")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LOOKALIKE_HOME": str(tmp_path), "LOOKALIKE_API_KEY": "k"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--catalog", "shapes", "--port", str(port),
                               "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def fresh(method: str, path: str, **kwargs) -> httpx.Response:   # a new connection: any worker may answer
        with httpx.Client(timeout=60) as c:
            return c.request(method, base + path, **kwargs)

    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if fresh("GET", "/api/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        photo = png_bytes(draw_shape("circle", (240, 200, 20), seed=9))
        before = [fresh("GET", f"/api/items/{QUERY_ID}/similar?k=3") for _ in range(10)]
        assert all(r.status_code == 200 for r in before)
        added = fresh("POST", "/api/items", data={"id": "via-a-worker"}, files={"file": ("y.png", photo, "image/png")},
                      headers={"X-API-Key": "k"})
        assert added.status_code == 200 and added.json()["outcome"] == "added", added.text
        for _ in range(10):
            found = fresh("POST", "/api/search/image", files={"file": ("q.png", photo, "image/png")}, data={"k": "1"})
            assert found.json()["results"][0]["id"] == "via-a-worker"
        text = fresh("GET", "/metrics").text
        handler = "/api/items/{item_id:item}/similar"
        assert value(text, "http_requests_total", handler=handler, method="GET", status="200") == 10
        assert value(text, "http_requests_total", handler="/api/search/image", method="POST", status="200") == 10
        assert value(text, "lookalike_item_writes_total", catalog="shapes", outcome="added") == 1
        assert value(text, "lookalike_catalog_items", catalog="shapes") == N_ITEMS + 1
    finally:
        server.terminate()
        server.wait(timeout=30)
