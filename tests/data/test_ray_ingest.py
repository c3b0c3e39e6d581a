"""Ray Data ingest: same vectors and the same store contents as the local pipeline."""
from __future__ import annotations

import json
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes import make_shapes_folder

ray = pytest.importorskip("ray", reason="Ray ingest needs the [ray] extra")
pytest.importorskip("ray.data")

from lookalike import Catalog  # noqa: E402
from lookalike.data.fetch import Fetcher  # noqa: E402
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


@pytest.fixture
def served(folder, tmp_path):
    """A copy of ``folder`` (tests add files to it) behind a loopback HTTP server, which sends
    Last-Modified and answers 304 to If-Modified-Since: (base URL, folder)."""
    root = shutil.copytree(folder, tmp_path / "served")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def test_ray_url_jsonl_same_fetcher_outcomes_and_resume(ray_local, served, tmp_path):
    """A JSON Lines source of image URLs through Ray: the caller's fetcher settings (here a 60 kB
    size cap) give the same per-row outcomes as the local pipeline, download counts reach the
    report, and a run after an interrupted one embeds only what is missing (the rest revalidates)."""
    image_server, root = served
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "big.png")              # ~120 kB: over the cap
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png") if p.name != "big.png")[:4]
    rows = [{"id": f"p{i}", "image": f"{image_server}/{name}", "colour": f"c{i}"} for i, name in enumerate(names)]
    rows += [{"id": "big", "image": f"{image_server}/big.png"}, {"id": "gone", "image": f"{image_server}/nothing.png"}]
    full, part = tmp_path / "shop.jsonl", tmp_path / "first-half.jsonl"
    full.write_text("".join(json.dumps(r) + "\n" for r in rows))
    part.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))    # what a killed run had committed

    def capped(cat):
        return Fetcher(cache_dir=cat.dir / "downloads", max_bytes=60_000, retries=0)

    local = Catalog.create("local-jsonl", home=tmp_path)
    local_report = local.index(full, "colour-hist", fetcher=capped(local))
    remote = Catalog.create("ray-jsonl", home=tmp_path)
    first = index_with_ray(remote, part, "colour-hist", address="local", batch_size=2, fetcher=capped(remote))
    resumed = index_with_ray(remote, full, "colour-hist", address="local", batch_size=2, fetcher=capped(remote))

    outcomes = [("big", "too_large"), ("gone", "http_404")]
    assert sorted((e.id, e.reason) for e in local_report.errors) == outcomes
    assert sorted((e.id, e.reason) for e in resumed.errors) == outcomes
    assert first.added == 2 and first.downloads == {"downloaded": 2, "revalidated": 0, "retried": 0, "failed": 0}
    assert (resumed.added, resumed.unchanged) == (2, 2)
    assert resumed.downloads == {"downloaded": 2, "revalidated": 2, "retried": 0, "failed": 2}
    assert local_report.downloads == {"downloaded": 4, "revalidated": 0, "retried": 0, "failed": 2}
    assert remote.get("p3").metadata == {"colour": "c3", "image_url": rows[3]["image"]}
    ids_local, vec_local = local.vectors("colour-hist")
    ids_remote, vec_remote = remote.vectors("colour-hist")
    assert sorted(ids_remote) == sorted(ids_local) == ["p0", "p1", "p2", "p3"]
    np.testing.assert_allclose(vec_remote[np.argsort(ids_remote)], vec_local[np.argsort(ids_local)], atol=1e-6)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_ray_ingests_image_bytes_held_by_the_table(ray_local, tmp_path):
    """Embedded image bytes (a Hugging Face image column) reach the Ray workers and are kept as the
    local pipeline keeps them; bad bytes are one row error with their row number."""
    pa = pytest.importorskip("pyarrow")
    import io
    import pyarrow.parquet as pq

    def png(colour, fmt="PNG"):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(buf, fmt)
        return buf.getvalue()
    images = [{"bytes": png((200, 10 * i, 10)), "path": f"{i}.png"} for i in range(5)]
    images.append({"bytes": png((0, 0, 0), "BMP"), "path": "5.bmp"})   # ends in NUL bytes: they must survive
    images.append({"bytes": b"\x89PNG\r\n\x1a\n cut short", "path": "bad.png"})
    pq.write_table(pa.table({"image": images}), tmp_path / "t.parquet")
    local = Catalog.create("local", home=tmp_path).index(tmp_path / "t.parquet", "colour-hist")
    remote_cat = Catalog.create("remote", home=tmp_path)
    remote = index_with_ray(remote_cat, tmp_path / "t.parquet", "colour-hist", address="local", batch_size=4)
    assert remote.added == local.added == 6
    assert [(e.reason, e.line) for e in remote.errors] == [(e.reason, e.line) for e in local.errors] == [("corrupt", 7)]
    assert Path(remote_cat.get("3").path).read_bytes() == images[3]["bytes"]
    assert Path(remote_cat.get("3").path).parent.parent == remote_cat.dir / "images"
    assert Path(remote_cat.get("5").path).read_bytes() == images[5]["bytes"]
