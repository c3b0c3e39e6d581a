"""Images held by the table itself: Hugging Face `{bytes, path}` image columns (Parquet, JSON Lines), plain
Parquet `binary` columns and `data:` URIs (CSV, JSON Lines) are ingested like files: same decoding and caps,
kept content-addressed under the catalog's `images/`, one outcome per row, a re-run changes nothing."""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from lookalike.catalog import Catalog
from lookalike.data.sources import read_source

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def png(colour, size=(16, 16), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


RED, BLUE, GREEN = png((220, 20, 20)), png((20, 20, 220), fmt="JPEG"), png((20, 200, 20), fmt="WEBP")
BAD = {"truncated": RED[:40], "text": b"just some words, not an image", "empty-ish": b"\x00\x01\x02"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hf_parquet(path: Path) -> Path:
    """What `datasets.Dataset.to_parquet` writes for an `Image` column: struct<bytes: binary, path: string>."""
    table = pa.table({"id": ["red", "blue", "green", "truncated", "text", "by-path"],
                      "image": [{"bytes": RED, "path": "red.png"}, {"bytes": BLUE, "path": None},
                                {"bytes": GREEN, "path": "g.webp"}, {"bytes": BAD["truncated"], "path": "t.png"},
                                {"bytes": BAD["text"], "path": "x.png"}, {"bytes": None, "path": str(path.parent / "f.png")}],
                      "label": ["r", "b", "g", "r", "x", "f"]})
    (path.parent / "f.png").write_bytes(png((1, 2, 3)))
    pq.write_table(table, path)
    return path


def test_hugging_face_image_column_in_parquet_is_ingested_with_one_outcome_per_row(home, tmp_path):
    table = hf_parquet(tmp_path / "hf.parquet")
    cat = Catalog.create("hf", home=home)
    report = cat.index(table, "colour-hist")
    assert (report.rows, report.added) == (6, 4)
    assert sorted((e.id, e.reason, e.line) for e in report.errors) == [("text", "not_an_image", 5),
                                                                        ("truncated", "corrupt", 4)]
    for item_id, data in (("red", RED), ("blue", BLUE), ("green", GREEN)):
        item = cat.get(item_id)
        kept = Path(item.path)
        assert kept.parent.parent == cat.dir / "images" and kept.stem == sha(data)   # content-addressed
        assert kept.read_bytes() == data and item.sha256 == sha(data)
    assert cat.get("by-path").path == str(tmp_path / "f.png")
    kept_files = sorted(p for p in (cat.dir / "images").rglob("*") if p.is_file())
    assert len(kept_files) == 3        # bytes that do not decode leave no file behind
    # an uploaded copy of an embedded image finds its item
    assert cat.search(image=RED, k=1, expansion="none")[0].id == "red"
    # re-running changes nothing: no re-embedding, no new file, the same paths
    again = cat.index(table, "colour-hist")
    assert (again.added, again.updated, again.unchanged, again.failed) == (0, 0, 4, 2)
    assert sorted(p for p in (cat.dir / "images").rglob("*") if p.is_file()) == kept_files
    assert cat.check().ok


def test_a_kept_file_removed_under_the_catalog_comes_back_on_the_next_run(home, tmp_path):
    table = hf_parquet(tmp_path / "hf.parquet")
    cat = Catalog.create("hf", home=home)
    cat.index(table, "colour-hist")
    kept = Path(cat.get("red").path)
    kept.unlink()
    report = cat.index(table, "colour-hist")
    assert report.unchanged == 4 and kept.read_bytes() == RED


def test_plain_binary_parquet_column_and_derived_ids(home, tmp_path):
    """A pyarrow `binary` column of image bytes; without an id column ids derive from the content
    (or the struct's path), and the same bytes twice are one duplicate_id."""
    table = pa.table({"img": pa.array([RED, BLUE, RED, b"not an image \xff", b"photos/f.png"], pa.binary()),
                      "colour": ["red", "blue", "red", "?", "f"]})
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "f.png").write_bytes(png((5, 5, 5)))
    pq.write_table(table, tmp_path / "bin.parquet")
    read = read_source(tmp_path / "bin.parquet", image_column="img")
    assert [r.id for r in read.rows] == [sha(RED)[:16], sha(BLUE)[:16], sha(b"not an image \xff")[:16], "f"]
    assert read.rows[0].data == RED and read.rows[0].metadata == {"colour": "red"}
    assert read.rows[-1].data is None and read.rows[-1].path == tmp_path / "photos" / "f.png"   # a path in bytes
    assert [(e.reason, e.line) for e in read.errors] == [("duplicate_id", 3)]
    report = Catalog.create("bin", home=home).index(tmp_path / "bin.parquet", "colour-hist", image_column="img")
    assert report.added == 3 and [(e.reason, e.line) for e in report.errors] == [("duplicate_id", 3),
                                                                                ("not_an_image", 4)]


def test_named_embedded_images_sharing_a_name_stay_apart(tmp_path):
    pq.write_table(pa.table({"image": [{"bytes": RED, "path": "image.png"}, {"bytes": BLUE, "path": "image.png"}]}),
                   tmp_path / "t.parquet")
    read = read_source(tmp_path / "t.parquet")
    assert [r.id for r in read.rows] == [f"image.png@{sha(RED)[:16]}", f"image.png@{sha(BLUE)[:16]}"]
    assert read.errors == []


def test_jsonl_embedded_images_and_data_uris(home, tmp_path):
    """JSON Lines: a {bytes, path} object carries base64 text (or a list of byte values); a data: URI
    in any text cell; bad base64 is one corrupt row, bad bytes one not_an_image row."""
    b64 = base64.b64encode
    lines = [{"id": "a", "image": {"bytes": b64(RED).decode(), "path": "a.png"}},
             {"id": "b", "image": {"bytes": list(BLUE), "path": None}},
             {"id": "c", "image": "data:image/webp;base64," + b64(GREEN).decode()},
             {"id": "d", "image": {"bytes": "@@not base64@@", "path": "d.png"}},
             {"id": "e", "image": "data:image/png;base64," + b64(BAD["text"]).decode()},
             {"id": "f", "image": "data:image/png;base64,%%%"}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cat = Catalog.create("j", home=home)
    report = cat.index(tmp_path / "t.jsonl", "colour-hist")
    assert report.added == 3
    assert [(e.id, e.reason, e.line) for e in report.errors] == [("d", "corrupt", 4), ("f", "bad_url", 6),
                                                               ("e", "not_an_image", 5)]
    assert Path(cat.get("c").path).read_bytes() == GREEN and Path(cat.get("b").path).read_bytes() == BLUE


def test_csv_data_uris_beside_paths_and_product_images(tmp_path):
    """A data: URI's header holds a ';' ("image/png;base64"): it is not a separator of several images."""
    (tmp_path / "x.png").write_bytes(RED)
    uri = "data:image/png;base64," + base64.b64encode(BLUE).decode()
    (tmp_path / "c.csv").write_text(f'product_id,image\np1,"x.png;{uri}"\np2,"{uri}"\np3,"data:,hello%20world"\n')
    read = read_source(tmp_path / "c.csv")
    assert [(r.id, r.data is not None) for r in read.rows] == [("p1#1", False), ("p1#2", True), ("p2", True),
                                                               ("p3", True)]
    assert read.rows[1].data == BLUE and read.rows[3].data == b"hello world"
    assert read.rows[1].location.startswith("<data: URI, sha256 ")


def test_data_uri_over_the_upload_cap_is_too_large_before_decoding(tmp_path, monkeypatch):
    import lookalike.data.sources as sources
    monkeypatch.setattr(sources, "MAX_UPLOAD_BYTES", 1000)
    big = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(2000)).decode()
    small = "data:image/png;base64," + base64.b64encode(RED).decode()
    (tmp_path / "c.csv").write_text(f'id,image\nbig,"{big}"\nsmall,"{small}"\n')   # a data: URI holds a comma
    read = read_source(tmp_path / "c.csv")
    assert [r.id for r in read.rows] == ["small"]
    assert [(e.id, e.reason, e.line) for e in read.errors] == [("big", "too_large", 2)]
    assert "1,000" in read.errors[0].message


def test_embedded_bytes_over_the_download_cap_are_too_large(tmp_path, monkeypatch):
    import lookalike.data.sources as sources
    monkeypatch.setattr(sources, "MAX_DOWNLOAD_BYTES", 100)
    pq.write_table(pa.table({"id": ["big", "small"], "image": [{"bytes": png((1, 1, 1), (300, 300), "BMP"), "path": "b.bmp"},
                                                               {"bytes": b"\x89PNG\r\n\x1a\n", "path": "s.png"}]}),
                   tmp_path / "t.parquet")
    read = read_source(tmp_path / "t.parquet")
    assert [r.id for r in read.rows] == ["small"] and [(e.reason, e.line) for e in read.errors] == [("too_large", 1)]


def test_prune_drops_the_kept_file_of_an_image_gone_from_the_table(home, tmp_path):
    table = hf_parquet(tmp_path / "hf.parquet")
    cat = Catalog.create("hf", home=home)
    cat.index(table, "colour-hist")
    red = Path(cat.get("red").path)
    pq.write_table(pq.read_table(table).slice(1), table)    # the red row is gone
    report = cat.index(table, "colour-hist", prune=True)
    assert report.pruned == 1 and not red.exists() and Path(cat.get("blue").path).exists()
    assert cat.check().ok
