"""Upload accepts what ingest accepts: every format the ingest side reads (data.images.decoded_formats)
that Pillow can write here is answered by POST /api/search/image (its fast path and its route), /api/shop
and `lookalike search --image`; a file refused by ingest is refused by the upload with the same reason.
Before: the upload kept its own list of eight magic numbers, so ICO, TGA, PPM, JPEG 2000, QOI… indexed
fine but answered 415 not_an_image as a query."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from typer.testing import CliRunner  # noqa: E402

from lookalike.catalog import Catalog  # noqa: E402
from lookalike.cli import app  # noqa: E402
from lookalike.data.images import NOT_DECODED, decoded_formats, image_format, open_image  # noqa: E402

from fakes import assert_error, encoded_in  # noqa: E402

Image.init()
#: formats Pillow writes here that the ingest side reads (MPO: a JPEG the JPEG plugin opens)
WRITABLE = sorted(f for f in Image.SAVE if f in decoded_formats() or f == "MPO")
def test_the_shared_list_covers_the_formats_the_issue_names():
    for name in ("JPEG", "PNG", "ICO", "TGA", "PPM", "JPEG2000", "WEBP", "GIF", "BMP", "TIFF"):
        assert name in decoded_formats()
    assert not NOT_DECODED & set(decoded_formats())


@pytest.mark.parametrize("fmt", WRITABLE)
def test_every_format_ingest_reads_is_an_accepted_upload(fmt, client, tmp_path):
    data = encoded_in(fmt)
    if data is None:
        pytest.skip(f"Pillow cannot write {fmt} here")
    image_format(data)          # the ingest side reads it ...
    open_image(data)
    upload = {"file": (f"photo.{fmt.lower()}", data, "application/octet-stream")}
    fast = client.post("/api/search/image", files=upload)                        # the fast path
    assert fast.status_code == 200, fast.text
    routed = client.post("/api/search/image", files=upload, data={"k": "2", "box": "0,0,48,20"})   # the route
    assert routed.status_code == 200 and len(routed.json()["results"]) == 2, routed.text
    (tmp_path / "q").write_bytes(data)
    result = CliRunner().invoke(app, ["search", "--catalog", "shapes", "--image", str(tmp_path / "q"), "-k", "1",
                                      "--home", str(Path(client.app.state.lookalike.catalog.home))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PPM", "JPEG2000", "QOI"])
def test_shop_the_look_takes_them_too(fmt, client, fake_detector):
    data = encoded_in(fmt)
    answer = client.post("/api/shop", files={"file": ("look", data)})
    assert answer.status_code in (200, 422) and answer.json().get("error") not in ("not_an_image", "corrupt")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n"
REFUSED = {
    "text": (b"just some words, not an image", "not_an_image", 415),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>', "unsupported_format", 415),
    "pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n", "unsupported_format", 415),
    "eps": (EPS, "unsupported_format", 415),
    "empty": (b"", "empty", 422),
    "cut-short-png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIH", "corrupt", 422),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_file_refused_by_ingest_is_refused_by_the_upload_with_the_same_reason(case, client, home, tmp_path):
    data, reason, status = REFUSED[case]
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(data)                 # named like an image: always a row
    report = Catalog.create("refused", home=home).index(folder, "colour-hist")
    assert [e.reason for e in report.errors] == [reason] and report.added == 0
    for extra in ({}, {"k": "2", "box": "0,0,10,10"}):       # fast path, route
        assert_error(client.post("/api/search/image", files={"file": ("photo.jpg", data, "image/jpeg")}, data=extra),
                     status, reason)
    result = CliRunner().invoke(app, ["search", "--catalog", "shapes", "--image", str(folder / "photo.jpg"),
                                      "--home", str(Path(client.app.state.lookalike.catalog.home))])
    assert result.exit_code != 0 and f"({reason})" in result.output
