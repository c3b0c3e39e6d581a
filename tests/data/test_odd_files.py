"""Breaker files on ingest (session 10): each gets exactly one outcome with a reason, the same one from a
folder, from a table and (tests/api/test_api_upload_formats.py) as an upload."""
from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from lookalike.catalog import Catalog
from lookalike.data.images import ImageError, decoded_formats, image_format, open_image
from lookalike.data.sources import read_source

from fakes import encoded_in

Image.init()
#: decoded formats Pillow writes here whose plugin recognises its files by their first bytes
WITH_MAGIC = sorted(f for f in decoded_formats() if f in Image.SAVE and Image.OPEN[f][1] is not None)


@pytest.mark.parametrize("fmt", WITH_MAGIC)
def test_any_readable_format_cut_inside_its_header_is_corrupt_not_a_skipped_non_image(fmt, tmp_path):
    """A PSD, ICO, QOI, DDS… cut short after its magic number was `not_an_image` (a folder skipped it
    silently when it had no image suffix), where a cut JPEG or PNG was a `corrupt` row."""
    data = encoded_in(fmt)
    if data is None:
        pytest.skip(f"Pillow cannot write {fmt} here")
    cut = data[:12]
    with pytest.raises(ImageError) as caught:
        open_image(cut)
    assert caught.value.reason == "corrupt", caught.value.message
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "photo").write_bytes(cut)          # no suffix: classified by content
    report = Catalog.create("cut", home=tmp_path / "home").index(tmp_path / "f", "colour-hist")
    assert [e.reason for e in report.errors] == ["corrupt"] and report.skipped == []


def test_text_and_documents_stay_not_an_image():
    for data in (b"# my catalog\n\nsome words", b"id,image\n1,a.jpg\n", b"PK\x03\x04" + bytes(40), bytes(64)):
        with pytest.raises(ImageError) as caught:
            image_format(data)
        assert caught.value.reason == "not_an_image"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_symbolic_link_loop_is_unreadable_from_a_folder_and_from_a_table(tmp_path):
    """A table listing `a.jpg -> b.jpg -> a.jpg` stopped the whole ingest (RuntimeError: Symlink loop, from
    Path.resolve); a folder called the loop a `missing` file."""
    folder = tmp_path / "f"
    folder.mkdir()
    Image.new("RGB", (20, 20), (1, 200, 1)).save(folder / "ok.jpg")
    os.symlink("b.jpg", folder / "a.jpg")
    os.symlink("a.jpg", folder / "b.jpg")
    (tmp_path / "t.csv").write_text("id,image\nok,f/ok.jpg\nloop,f/a.jpg\n")
    home = tmp_path / "home"
    from_folder = Catalog.create("folder", home=home).index(folder, "colour-hist")
    assert from_folder.added == 1 and sorted(e.reason for e in from_folder.errors) == ["unreadable", "unreadable"]
    assert "loop" in from_folder.errors[0].message
    from_table = Catalog.create("table", home=home).index(tmp_path / "t.csv", "colour-hist")
    assert from_table.added == 1 and [(e.id, e.reason, e.line) for e in from_table.errors] == [("loop", "unreadable", 3)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_or_device_listed_in_a_table_is_not_read(tmp_path):
    """A table row naming a FIFO blocked the ingest forever (read_bytes waits for a writer), one naming
    /dev/zero read without end; a folder already skipped them as `not_a_file`."""
    os.mkfifo(tmp_path / "pipe.jpg")
    Image.new("RGB", (20, 20), (1, 200, 1)).save(tmp_path / "ok.jpg")
    rows = "id,image\nok,ok.jpg\npipe,pipe.jpg\n" + ("zero,/dev/zero\n" if os.path.exists("/dev/zero") else "")
    (tmp_path / "t.csv").write_text(rows)
    report = Catalog.create("pipes", home=tmp_path / "home").index(tmp_path / "t.csv", "colour-hist")
    assert report.added == 1 and {e.reason for e in report.errors} == {"not_an_image"}
    assert len(report.errors) == rows.count("\n") - 2
    assert [r.reason for r in read_source(tmp_path).skipped if r.path.endswith("pipe.jpg")] == ["not_a_file"]


@pytest.mark.parametrize("kind", ["animated-gif", "apng", "animated-webp", "cmyk", "i16", "palette-transparency",
                                  "exif-rotated", "one-bit"])
def test_unusual_but_valid_images_ingest_from_folder_and_table(kind, tmp_path):
    base = Image.new("RGB", (30, 20), (200, 30, 30))
    frames = [base, Image.new("RGB", (30, 20), (30, 200, 30))]
    buf = io.BytesIO()
    if kind in ("animated-gif", "apng", "animated-webp"):
        fmt = {"animated-gif": "GIF", "apng": "PNG", "animated-webp": "WEBP"}[kind]
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100)
    elif kind == "cmyk":
        base.convert("CMYK").save(buf, "JPEG")
    elif kind == "i16":
        Image.new("I;16", (30, 20), 40000).save(buf, "PNG")
    elif kind == "palette-transparency":
        base.convert("P").save(buf, "PNG", transparency=0)
    elif kind == "exif-rotated":
        exif = base.getexif()
        exif[0x0112] = 6
        base.save(buf, "JPEG", exif=exif.tobytes())
    else:
        base.convert("1").save(buf, "PNG")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x.img").write_bytes(buf.getvalue())
    (tmp_path / "t.csv").write_text("id,image\nx,f/x.img\n")
    home = tmp_path / "home"
    for source in (tmp_path / "f", tmp_path / "t.csv"):
        report = Catalog.create(source.stem, home=home).index(source, "colour-hist")
        assert (report.added, report.errors, report.skipped) == (1, [], [])
    shown = open_image(buf.getvalue())
    assert shown.mode == "RGB" and shown.size == ((20, 30) if kind == "exif-rotated" else (30, 20))
