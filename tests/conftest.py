"""Shared fixtures: a temporary lookalike home, the generated shapes catalog, the served web catalog,
one torch thread for tiny models, the shared datasets. The generated data itself is in fakes.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakes import build_catalog, build_web_home, indexed_catalog, make_shapes_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKALIKE_SHARED", REPO.parent / "shared")) / "datasets"
SAMPLE_CATALOG = REPO / "sample-catalog"

os.environ.setdefault("LOOKALIKE_THREADS", "2")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An isolated LOOKALIKE_HOME for the test."""
    path = tmp_path / "home"
    monkeypatch.setenv("LOOKALIKE_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory) -> Path:
    """54 shape PNGs in 9 class folders (see fakes.make_shapes_folder); read-only."""
    return make_shapes_folder(tmp_path_factory.mktemp("shapes"))


@pytest.fixture
def shapes_catalog(home, shapes_folder):
    """Catalog 'shapes' in ``home``: the shapes folder indexed with colour-hist (ids "circle-red/circle-red-0")."""
    return indexed_catalog(home, shapes_folder)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread (two OpenMP threads crawl on a busy shared box):
    torch and $LOOKALIKE_THREADS at 1 for a module (`pytestmark = pytest.mark.usefixtures(...)`)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKALIKE_THREADS", "1")
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED} (set LOOKALIKE_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def clothing_small(shared_datasets) -> Path:
    path = shared_datasets / "clothing-small"
    if not (path / "catalog.csv").exists():
        pytest.skip("clothing-small not present in the shared datasets")
    return path


@pytest.fixture(scope="session")
def sample_catalog() -> Path:
    return SAMPLE_CATALOG


@pytest.fixture(scope="session")
def web_home(tmp_path_factory, shapes_folder) -> Path:
    """A home with catalog 'shapes' (colour-hist, metadata columns, one exact duplicate) plus stored
    clusters, a map and a tiny VAE: what the API and browser tests serve (see fakes.build_web_home)."""
    return build_web_home(tmp_path_factory.mktemp("web-home"), shapes_folder)


@pytest.fixture(scope="session")
def client(web_home):
    """A FastAPI TestClient on the web_home catalog, read-only (no API key)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lookalike.api import create_app

    with TestClient(create_app("shapes", home=web_home, api_key="")) as c:
        yield c


@pytest.fixture(scope="session")
def bare_client(tmp_path_factory, shapes_folder):
    """A TestClient on a catalog with no clusters, map or VAE: those panels must answer 409 with the
    command to run."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lookalike.api import create_app

    home = tmp_path_factory.mktemp("bare-home")
    build_catalog(home, shapes_folder, "bare")
    with TestClient(create_app("bare", home=home)) as c:
        yield c


@pytest.fixture
def fake_detector(monkeypatch):
    """Shop the look finds the fakes.UPRIGHT person (fakes.FakeDetector) instead of running MediaPipe."""
    import lookalike.shop.pipeline as shop

    from fakes import FakeDetector

    monkeypatch.setattr(shop, "get_detector", lambda *a, **kw: FakeDetector())


@pytest.fixture(scope="module")
def people(shared_datasets) -> Path:
    """The shared photos of people, for tests that run the MediaPipe pose model."""
    from lookalike.shop.pose import mediapipe_available

    folder = shared_datasets / "people"
    if not (folder / "businessman-suit.jpg").exists():
        pytest.skip("people photos not in the shared datasets")
    if not mediapipe_available():
        pytest.skip("mediapipe not installed (pip install --no-deps mediapipe==0.10.21)")
    return folder


@pytest.fixture(scope="session")
def milvus_db(tmp_path_factory):
    """One milvus-lite database file for the whole session (each file starts its own embedded
    server, ~2 s): every milvus index of the tests is a collection in it."""
    pytest.importorskip("pymilvus", reason="pymilvus / milvus-lite not installed (pip install lookalike[milvus])")
    pytest.importorskip("milvus_lite", reason="pymilvus / milvus-lite not installed (pip install lookalike[milvus])")
    path = tmp_path_factory.mktemp("milvus") / "session.db"
    yield path
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()


@pytest.fixture
def milvus_lite(monkeypatch, milvus_db):
    """Skip without pymilvus + milvus-lite; otherwise make the milvus backend use the session's
    shared milvus-lite file (``LOOKALIKE_MILVUS_URI=.../session.db``), never a real server."""
    monkeypatch.setenv("LOOKALIKE_MILVUS_URI", str(milvus_db))
