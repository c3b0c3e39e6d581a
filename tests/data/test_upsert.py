"""Writes while a catalog is served (Catalog.upsert / update_metadata / remove): one outcome per
item, one transaction, uploaded files kept atomically by content hash, and every process serving
the catalog (another Catalog object, another OS process) sees the write on its next search."""
from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lookalike.catalog import ItemNotFound, ItemWrite
from lookalike.data.fetch import Fetcher
from lookalike.data.store import Store

from fakes import draw_shape, png_bytes

GREEN = png_bytes(draw_shape("circle", (40, 170, 60), seed=5))
BLUE = png_bytes(draw_shape("square", (40, 70, 220), seed=6))


def test_upsert_adds_updates_and_reports_one_outcome_per_item(shapes_catalog):
    cat = shapes_catalog
    before = len(cat)
    outcomes = cat.upsert([ItemWrite("new-green", data=GREEN, label="circle-green", metadata={"price": 12}),
                           ItemWrite("bad", data=b"not an image at all"),
                           ItemWrite("new-green", data=BLUE),
                           ItemWrite("no-image"),
                           ItemWrite("x", url="file:///etc/passwd"),
                           ItemWrite("meta", data=BLUE, metadata={"label": "x"}),
                           ItemWrite("nested", data=BLUE, metadata={"a": {"b": 1}}),
                           ItemWrite("bad\x00id", data=BLUE)])
    assert [(o.id, o.outcome, o.reason) for o in outcomes] == [
        ("new-green", "added", None), ("bad", "failed", "not_an_image"), ("new-green", "failed", "duplicate_id"),
        ("no-image", "failed", "invalid_image"), ("x", "failed", "invalid_image"),
        ("meta", "failed", "invalid_metadata"), ("nested", "failed", "invalid_metadata"),
        ("bad\x00id", "failed", "invalid_id")]
    assert all(o.message for o in outcomes if not o.ok)
    assert len(cat) == before + 1
    item = cat.get("new-green")
    assert item.label == "circle-green" and item.metadata == {"price": 12} and (item.width, item.height) == (96, 96)
    # kept under the catalog folder by content hash; the undecodable upload left no file behind
    assert Path(item.path).parent.parent == cat.dir / "images" and Path(item.path).read_bytes() == GREEN
    assert [p.name for p in (cat.dir / "images").rglob("*") if p.is_file()] == [Path(item.path).name]
    # searchable at once: its own image finds it first
    assert cat.search(image=GREEN, k=1)[0].id == "new-green"

    again = cat.upsert([ItemWrite("new-green", data=GREEN, label="circle-green", metadata={"price": 12})])
    assert again[0].outcome == "unchanged"
    version = cat.version()
    relabelled = cat.upsert([ItemWrite("new-green", data=GREEN, label="circle-green", metadata={"price": 10})])
    assert relabelled[0].outcome == "updated" and cat.get("new-green").metadata == {"price": 10}
    assert cat.version() == version  # same image: no vector changed, no index rebuild
    replaced = cat.upsert([ItemWrite("new-green", data=BLUE, label="square-blue")])
    assert replaced[0].outcome == "updated" and cat.get("new-green").label == "square-blue"
    assert cat.version() != version
    assert cat.search(image=BLUE, k=1)[0].id == "new-green"
    assert len(cat) == before + 1


def test_an_item_can_come_from_a_local_file(shapes_catalog, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(GREEN)
    assert shapes_catalog.upsert([ItemWrite("from-file", path=path)])[0].outcome == "added"
    assert shapes_catalog.get("from-file").path == str(path)
    missing = shapes_catalog.upsert([ItemWrite("gone", path=tmp_path / "nope.png")])[0]
    assert (missing.outcome, missing.reason) == ("failed", "missing")


class _Images(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body, status = {"/green.png": (GREEN, 200), "/page.html": (b"<html>hi</html>", 200)}.get(self.path, (b"", 404))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_an_item_can_come_from_a_url(shapes_catalog):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with Fetcher(retries=0, cache_dir=shapes_catalog.dir / "downloads") as fetcher:
            outcomes = shapes_catalog.upsert([ItemWrite("by-url", url=f"{base}/green.png"),
                                              ItemWrite("html", url=f"{base}/page.html"),
                                              ItemWrite("404", url=f"{base}/missing.png")], fetcher=fetcher)
    finally:
        server.shutdown()
    assert [(o.outcome, o.reason) for o in outcomes] == [("added", None), ("failed", "not_an_image"),
                                                         ("failed", "http_404")]
    item = shapes_catalog.get("by-url")
    assert item.metadata["image_url"] == f"{base}/green.png" and Path(item.path).read_bytes() == GREEN


def test_a_write_is_one_transaction(shapes_catalog, monkeypatch):
    """A failure inside the store write (after the new rows went in) rolls back every row of the
    request, and the files it kept are removed."""
    cat = shapes_catalog
    before, version = len(cat), cat.version()
    cat.upsert([ItemWrite("existing", data=BLUE, metadata={"v": 1})])

    def broken(self, db, item):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Store, "_refresh_row", broken)
    with pytest.raises(RuntimeError):
        cat.upsert([ItemWrite("a", data=GREEN), ItemWrite("existing", data=BLUE, metadata={"v": 2})])
    monkeypatch.undo()
    assert len(cat) == before + 1 and cat.get("existing").metadata == {"v": 1}
    with pytest.raises(ItemNotFound):
        cat.get("a")
    assert not any(p.read_bytes() == GREEN for p in (cat.dir / "images").rglob("*") if p.is_file())
    assert cat.version() != version


def test_update_metadata_merges_removes_and_replaces(shapes_catalog):
    cat = shapes_catalog
    item = cat.items(limit=1)[0]
    version = cat.version()
    updated = cat.update_metadata(item.id, {"price": 5, "colour": None})
    assert updated.metadata == {**{k: v for k, v in item.metadata.items() if k != "colour"}, "price": 5}
    # a metadata edit moves the data version, not the vectors' version (no index rebuild)
    assert updated.label == item.label and cat.version() == version
    assert cat.update_metadata(item.id, {"only": "this"}, replace=True, label=None).metadata == {"only": "this"}
    assert cat.get(item.id).label is None
    version = cat.version()
    cat.update_metadata(item.id, {"only": "this"})   # no change: no new data version
    assert cat.version() == version
    with pytest.raises(ItemNotFound):
        cat.update_metadata("nope", {"a": 1})
    with pytest.raises(ValueError):
        cat.update_metadata(item.id, {"id": "x"})
    with pytest.raises(ValueError):
        cat.update_metadata(item.id, {"a": [1, 2]})


def test_a_write_by_another_process_is_seen_by_the_next_search(shapes_catalog, tmp_path):
    """A served catalog (its index loaded) finds an item another OS process added, and stops
    finding one it removed, with no restart: every search checks the store's data version."""
    cat = shapes_catalog
    vector = cat.embed_images([GREEN])[0]
    assert cat.search(vector=vector, k=1)[0].id != "other-process"   # index loaded now
    photo = tmp_path / "green.png"
    photo.write_bytes(GREEN)
    script = ("import sys; from lookalike.catalog import Catalog, ItemWrite; "
              "c = Catalog.open('shapes', home=sys.argv[1]); "
              "print(c.upsert([ItemWrite('other-process', path=sys.argv[2])])[0].outcome)")
    done = subprocess.run([sys.executable, "-c", script, str(cat.home), str(photo)], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "added", done.stderr
    hit = cat.search(vector=vector, k=1)[0]
    assert hit.id == "other-process" and hit.score == pytest.approx(1.0, abs=1e-5)
    script = "import sys; from lookalike.catalog import Catalog; Catalog.open('shapes', home=sys.argv[1]).remove(['other-process'])"
    subprocess.run([sys.executable, "-c", script, str(cat.home)], check=True, timeout=120)
    assert cat.search(vector=vector, k=1)[0].id != "other-process"


def test_concurrent_index_rebuilds_in_several_processes_agree(shapes_catalog):
    """Several processes finding the index stale at once: one rebuilds under the file lock, the
    others load what it saved; every one answers the same."""
    cat = shapes_catalog
    cat.upsert([ItemWrite("fresh", data=GREEN)])
    script = ("import sys; from lookalike.catalog import Catalog; c = Catalog.open('shapes', home=sys.argv[1]); "
              "print(','.join(r.id for r in c.search(item='fresh', k=5)))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(cat.home)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    answers = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert answers == {",".join(r.id for r in cat.search(item="fresh", k=5))}


def test_metadata_pairs_are_typed_like_the_api_json():
    from lookalike.data.ingest import parse_metadata_pairs, parse_metadata_value

    cases = {"12": 12, "-0.5": -0.5, "1e3": 1000.0, "true": True, "false": False, '"007"': "007", "007": "007",
             "red": "red", "": "", "null": "null", "NaN": "NaN", "1e999": "1e999", "+5": "+5", "2024-05-01": "2024-05-01",
             str(2**70): str(2**70), " 7 ": 7, '"a"b"': '"a"b"'}
    assert {text: parse_metadata_value(text) for text in cases} == cases
    assert parse_metadata_pairs(["price=12", "colour=red", "note=a=b"]) == {"price": 12, "colour": "red", "note": "a=b"}
    for bad in ("novalue", "=5"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_metadata_pairs([bad])


def test_a_blank_label_is_refused(shapes_catalog):
    cat = shapes_catalog
    outcome = cat.upsert([ItemWrite("blank", data=GREEN, label="")])[0]
    assert outcome.outcome == "failed" and outcome.reason == "invalid_label" and "blank" in outcome.message
    item = cat.items(limit=1)[0]
    for label in ("", "   "):
        with pytest.raises(ValueError, match="blank"):
            cat.update_metadata(item.id, label=label)
    assert cat.get(item.id).label == item.label


def test_delete_and_replace_remove_the_files_no_item_needs(shapes_catalog):
    """An uploaded image and its thumbnails go with the last item that used them (at delete, or when
    an upsert replaces the image); a file another item shares stays; images indexed from a folder
    are never touched; what is left over anyway, check reports and --repair removes."""
    cat = shapes_catalog
    cat.upsert([ItemWrite("a", data=GREEN), ItemWrite("b", data=GREEN), ItemWrite("c", data=BLUE)])
    green, blue = Path(cat.get("a").path), Path(cat.get("c").path)
    thumbs = [cat.thumbnail(i, 64) for i in ("a", "c")]
    folder_item = cat.items(limit=1)[0]
    folder_thumb = cat.thumbnail(folder_item, 64)
    assert cat.remove(["a"]) == ["a"] and green.is_file() and thumbs[0].is_file()   # b still shows it
    assert cat.remove(["b"]) == ["b"] and not green.exists() and not thumbs[0].exists()
    cat.upsert([ItemWrite("c", data=GREEN)])                                          # c's image replaced
    assert not blue.exists() and not thumbs[1].exists() and Path(cat.get("c").path).is_file()
    cat.remove([folder_item.id])
    assert Path(folder_item.path).is_file() and not folder_thumb.exists()           # the source photo stays
    assert cat.check(images=False).ok and "orphan-files" not in [p.code for p in cat.check(images=False).problems]

    stray = cat.dir / "images" / "ab" / ("ab" + "0" * 62 + ".png")                   # left by a crash
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(BLUE)
    report = cat.check(images=False)
    assert report.ok and [p.code for p in report.problems if p.code == "orphan-files"] == ["orphan-files"]
    assert cat.remove_orphan_files() == [stray] and not stray.exists()
