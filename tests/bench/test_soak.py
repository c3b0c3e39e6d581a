"""The soak test: its request mix against the app in process (classification of answers), and one
short real run through `lookalike serve` ending with the integrity check."""
from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from lookalike.api import create_app  # noqa: E402
from lookalike.bench.soak import DEFAULT_MIX, Soak, soak  # noqa: E402
from lookalike.catalog import Catalog  # noqa: E402

from fakes import indexed_catalog  # noqa: E402


def _soak(cat: Catalog, key: str, routes=frozenset()) -> Soak:
    items = [i.id for i in cat.items()]
    images = [open(i.path, "rb").read() for i in cat.items(limit=5)]
    return Soak("http://soak.test", key, items, images, set(routes), DEFAULT_MIX, seed=1)


def _run(run: Soak, app, seconds: float = 2.0, concurrency: int = 8) -> None:
    asyncio.run(run.run(seconds, concurrency, transport=httpx.ASGITransport(app=app, raise_app_exceptions=False)))


def test_mix_in_process_has_no_errors(home, shapes_folder, tmp_path):
    folder = tmp_path / "shapes"
    shutil.copytree(shapes_folder, folder)
    cat = indexed_catalog(home, folder)
    app = create_app("shapes", home=home, api_key="k")
    run = _soak(cat, "k")
    _run(run, app)
    assert run.error_count == 0, run.errors
    assert sum(run.kinds.values()) > 20 and run.kinds["delete"] >= 1
    assert run.intended == sum(run.kinds[k] for k in ("bad-item", "bad-k", "no-key"))
    assert run.writes == {"delete": True, "upsert": False, "update": False}   # not in this server's schema
    assert Catalog.open("shapes", home=home).check().ok


def test_server_errors_and_wrong_statuses_are_counted(shapes_catalog, home, monkeypatch):
    app = create_app("shapes", home=home, api_key="k")
    run = _soak(shapes_catalog, "wrong key")   # every delete answers 403 instead of 200

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Catalog, "search", broken)   # every search: 500
    _run(run, app, seconds=1.5)
    assert run.error_count >= run.kinds["similar"] + run.kinds["delete"] > 0
    assert any("-> 500" in e for e in run.errors) and len(run.errors) <= 10


def test_short_soak_through_the_server(home, shapes_folder, tmp_path):
    folder = tmp_path / "shapes"
    shutil.copytree(shapes_folder, folder)
    indexed_catalog(home, folder)
    report = soak("shapes", home, duration=3, concurrency=8, on_status=lambda m: None)
    assert report.ok, report.to_dict()
    assert report.requests > 0 and report.errors == 0 and report.integrity["ok"]
    assert len(Catalog.open("shapes", home=home)) == 54   # a scratch copy was soaked, not the catalog
