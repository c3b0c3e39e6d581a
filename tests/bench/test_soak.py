"""The soak test: its request list (mix, write routes, each delete once), the error accounting on a
server that fails, and one short real run through `lookalike serve` ending with the integrity check."""
from __future__ import annotations

import shutil
import threading
import time
from collections import Counter

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from lookalike.api import create_app  # noqa: E402
from lookalike.bench.api import free_port  # noqa: E402
from lookalike.bench.load import run_load  # noqa: E402
from lookalike.bench.soak import DEFAULT_MIX, _report, build_requests, soak  # noqa: E402
from lookalike.catalog import Catalog  # noqa: E402

from fakes import indexed_catalog  # noqa: E402

ITEMS = [f"item/{i}" for i in range(40)]


def test_requests_follow_the_mix_and_write_once():
    routes = {("PUT", "/api/items/{item_id}"), ("PATCH", "/api/items/{item_id}")}
    requests, writes = build_requests(ITEMS, [b"jpeg"], routes, "key", 2000, seed=3)
    assert writes == {"delete": True, "upsert": True, "update": True}
    kinds = Counter(r.label for r in requests)
    assert set(kinds) == set(DEFAULT_MIX)
    assert abs(kinds["similar"] / len(requests) - DEFAULT_MIX["similar"] / sum(DEFAULT_MIX.values())) < 0.05
    deleted = [r.path for r in requests if r.label == "delete"]
    assert len(deleted) == len(set(deleted)) <= 2   # 4 items set aside, half for deletes
    touched = {r.path.rsplit("/", 1)[1] for r in requests if r.label in ("delete", "update")}
    read = {r.path.split("/")[3] for r in requests if r.label in ("similar", "detail", "thumb")}
    assert not touched & read   # reads never ask for an item a write touches
    assert all(("X-API-Key", "key") in r.headers for r in requests if r.label in ("delete", "upsert", "update"))
    assert {r.ok for r in requests if r.label == "no-key"} == {(401,)}
    _, without = build_requests(ITEMS, [b"jpeg"], set(), "key", 200)
    assert without == {"delete": True, "upsert": False, "update": False}


def _serve(app):
    """``app`` on a free loopback port in a thread; returns (url, stop)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def test_failures_and_wrong_statuses_count_as_errors(shapes_catalog, home, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Catalog, "search", broken)   # every search: 500
    url, stop = _serve(create_app("shapes", home=home, api_key="k"))
    try:
        items = [i.id for i in shapes_catalog.items()]
        requests, writes = build_requests(items, [open(shapes_catalog.items(limit=1)[0].path, "rb").read()], set(),
                                          "wrong key", 150, seed=1)
        result = run_load(url, requests, concurrency=4, duration=30, max_requests=len(requests))
    finally:
        stop()
    report = _report(result, requests, 4, writes)
    kinds = report.by_kind
    assert kinds["similar"]["errors"] == kinds["similar"]["requests"] > 0            # 500s
    assert kinds["delete"]["errors"] == kinds["delete"]["requests"] > 0              # 403 with a wrong key
    # (after a 500 the server closes the connection: the next request on it fails too, whatever its kind)
    assert report.statuses["500"] > 0 and report.errors == sum(v["errors"] for v in kinds.values())
    assert 0 < report.intended <= sum(kinds[k]["requests"] for k in ("bad-item", "bad-k", "no-key") if k in kinds)


def test_short_soak_through_the_server(home, shapes_folder, tmp_path):
    folder = tmp_path / "shapes"
    shutil.copytree(shapes_folder, folder)
    indexed_catalog(home, folder)
    report = soak("shapes", home, duration=3, concurrency=8, on_status=lambda m: None)
    assert report.ok, report.to_dict()
    assert report.requests > 20 and report.errors == 0 and report.integrity["ok"]
    assert report.by_kind["delete"]["requests"] >= 1
    assert report.intended == sum(report.by_kind[k]["requests"] for k in ("bad-item", "bad-k", "no-key")
                                  if k in report.by_kind) > 0
    assert len(Catalog.open("shapes", home=home)) == 54   # a scratch copy was soaked, not the catalog
