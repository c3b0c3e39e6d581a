"""Ray Data ingest: same vectors and the same store contents as the local pipeline."""
from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fakes import make_shapes_folder

ray = pytest.importorskip("ray", reason="Ray ingest needs the [ray] extra")
pytest.importorskip("ray.data")

from lookalike import Catalog  # noqa: E402
from lookalike.data.ray_ingest import index_with_ray, start_ray  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (ray.init + shutdown cost several seconds)."""
    started = start_ray("local")
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = make_shapes_folder(tmp_path_factory.mktemp("ray-shapes"), per_class=2)
    (root / "circle-red" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


# effnet-lite0 through Ray takes ~50 s here (model load in the workers): slow; colour-hist keeps Ray covered
@pytest.mark.parametrize("encoder", [pytest.param("effnet-lite0", marks=pytest.mark.slow), "colour-hist"])
def test_ray_pipeline_matches_local_pipeline(ray_local, folder, tmp_path, encoder):
    local = Catalog.create("local", home=tmp_path)
    local_report = local.index(folder, encoder, batch_size=8)
    remote = Catalog.create("remote", home=tmp_path)
    report = index_with_ray(remote, folder, encoder, address="local", batch_size=8)

    assert report.added == local_report.added == 18
    assert [e.reason for e in report.errors] == [e.reason for e in local_report.errors] == ["not_an_image"]
    ids_local, vec_local = local.vectors(encoder)
    ids_remote, vec_remote = remote.vectors(encoder)
    order_local, order_remote = np.argsort(ids_local), np.argsort(ids_remote)
    assert [ids_local[i] for i in order_local] == [ids_remote[i] for i in order_remote]
    np.testing.assert_allclose(vec_local[order_local], vec_remote[order_remote], atol=1e-5)
    assert {it.id: it.label for it in local.items()} == {it.id: it.label for it in remote.items()}
    assert remote.search(item=ids_remote[0], k=3)[0].id != ids_remote[0]   # searchable as usual


@pytest.mark.slow  # two more pipeline runs (~10 s each on 2 cores)
def test_ray_rerun_skips_unchanged_items(ray_local, folder, tmp_path):
    cat = Catalog.create("rerun", home=tmp_path)
    first = index_with_ray(cat, folder, "colour-hist", address="local", batch_size=8)
    again = index_with_ray(cat, folder, "colour-hist", address="local", batch_size=8)
    assert first.added == 18 and again.added == 0 and again.unchanged == 18
    assert len(cat) == 18


def test_ray_downloads_images_by_url_like_the_local_pipeline(ray_local, folder, tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))[:4]
        table = tmp_path / "shop.csv"
        table.write_text("id,image\n" + "".join(f"p{i},{base}/{name}\n" for i, name in enumerate(names))
                         + f"gone,{base}/nothing.png\n")
        local = Catalog.create("local-urls", home=tmp_path)
        local_report = local.index(table, "colour-hist")
        remote = Catalog.create("ray-urls", home=tmp_path)
        report = index_with_ray(remote, table, "colour-hist", address="local", batch_size=2)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert report.added == local_report.added == 4
    assert [(e.id, e.reason) for e in report.errors] == [(e.id, e.reason) for e in local_report.errors] == [
        ("gone", "http_404")]
    item = remote.get("p1")
    assert item.metadata["image_url"] == f"{base}/{names[1]}"
    assert Path(item.path).is_relative_to(remote.dir / "downloads") and Path(item.path).exists()
    ids_local, vec_local = local.vectors("colour-hist")
    ids_remote, vec_remote = remote.vectors("colour-hist")
    order = np.argsort(ids_remote)
    assert list(np.asarray(ids_remote)[order]) == sorted(ids_local)
    np.testing.assert_allclose(vec_remote[order], vec_local[np.argsort(ids_local)], atol=1e-6)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
