"""data.sources: every file of a folder gets one outcome, ids derive uniquely, tables parse losslessly
(issue #13: "Folder walking decides silently what becomes an item", "The CSV is read lossily")."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lookalike.catalog import Catalog
from lookalike.data.sources import (SKIP_REASONS, SourceError, decode_text, parse_delimiter, read_source,
                                    sniff_delimiter)

from fakes import messy_folder, save_image as save


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# -- folder walking ---------------------------------------------------------------------------
def test_jpeg_named_jfif_jpe_jif_are_items_by_content(tmp_path):
    """Issue example: `.jfif`, `.jpe`, `.jif`, `.JFIF` were skipped silently (rows 1 added 1)."""
    for name in ("a.jpg", "b.jfif", "c.jpe", "d.jif", "e.JFIF"):
        save(tmp_path / "f" / name)
    read = read_source(tmp_path / "f")
    assert sorted(r.id for r in read.rows) == ["a", "b", "c", "d", "e"]
    assert read.errors == [] and read.skipped == []
    # the same five files listed in a CSV
    listed = write_csv(tmp_path / "c.csv", "image\n" + "\n".join(f"f/{n}" for n in ("a.jpg", "b.jfif", "c.jpe", "d.jif", "e.JFIF")))
    assert sorted(r.id for r in read_source(listed).rows) == ["a", "b", "c", "d", "e"]


def test_an_image_without_suffix_is_an_item_and_a_text_file_is_skipped_as_not_an_image(tmp_path):
    save(tmp_path / "photo", fmt="PNG")
    (tmp_path / "notes.txt").write_text("hello")
    read = read_source(tmp_path)
    assert [r.id for r in read.rows] == ["photo"]
    assert [(s.reason, Path(s.path).name) for s in read.skipped] == [("not_an_image", "notes.txt")]


def test_a_file_named_like_an_image_that_is_not_one_fails_visibly(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    read = read_source(tmp_path)
    assert [r.id for r in read.rows] == ["broken"]   # the pipeline reports it as not_an_image


def test_a_truncated_image_without_image_suffix_is_a_row_that_fails(home, tmp_path):
    png = save(tmp_path / "full.png", fmt="PNG").read_bytes()
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "photo.jfif").write_bytes(png[:20])   # signature + part of the header
    read = read_source(tmp_path / "f")
    assert [r.id for r in read.rows] == ["photo"]
    report = Catalog.create("t", home=home).index(tmp_path / "f", "colour-hist")
    assert [e.reason for e in report.errors] == ["corrupt"]


def test_same_name_different_suffix_both_kept_with_distinct_ids(tmp_path):
    """Issue example: `shoes/red.jpg` + `shoes/red.png` kept one. Ids without a twin stay as before."""
    save(tmp_path / "shoes" / "red.jpg")
    save(tmp_path / "shoes" / "red.png", fmt="PNG")
    save(tmp_path / "shoes" / "blue.jpg")
    read = read_source(tmp_path)
    assert [(r.id, r.label) for r in read.rows] == [("shoes/blue", "shoes"), ("shoes/red.jpg", "shoes"),
                                                   ("shoes/red.png", "shoes")]
    assert read.errors == []


def test_folder_ids_are_stable_between_runs(tmp_path):
    for name in ("x/1.jpg", "x/1.png", "y/2.jpg", "3.jfif"):
        save(tmp_path / name)
    assert [r.id for r in read_source(tmp_path).rows] == [r.id for r in read_source(tmp_path).rows] == \
        ["3", "x/1.jpg", "x/1.png", "y/2"]


def test_csv_without_id_column_and_shared_file_names_gets_distinct_ids(tmp_path):
    """Issue example: images sharing a file name in different folders gave duplicate_id errors."""
    for folder in ("a", "b"):
        save(tmp_path / folder / "red.jpg")
    save(tmp_path / "a" / "blue.jpg")
    table = write_csv(tmp_path / "c.csv", "image,label\na/red.jpg,x\nb/red.jpg,y\n./a/blue.jpg,x\n")
    read = read_source(table)
    assert [r.id for r in read.rows] == ["a/red.jpg", "b/red.jpg", "blue"]
    assert read.errors == []


def test_the_same_image_listed_twice_is_still_a_duplicate_and_explicit_ids_win(tmp_path):
    save(tmp_path / "a" / "red.jpg")
    twice = write_csv(tmp_path / "twice.csv", "image\na/red.jpg\na/red.jpg\n")
    assert [e.reason for e in read_source(twice).errors] == ["duplicate_id"]
    explicit = write_csv(tmp_path / "ids.csv", "id,image\nsku-1,a/red.jpg\nsku-1,a/red.jpg\nsku-2,a/red.jpg\n")
    read = read_source(explicit)
    assert [r.id for r in read.rows] == ["sku-1", "sku-2"]
    assert [(e.reason, e.line) for e in read.errors] == [("duplicate_id", 3)]


def test_unreadable_sub_folder_is_an_error_not_a_silent_gap(tmp_path, monkeypatch):
    """Issue example: a sub-folder the user cannot read vanished (rows 4 added 4 failed 0)."""
    for name in ("ok/1.jpg", "ok/2.jpg", "locked/3.jpg"):
        save(tmp_path / name)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)   # os.walk lists folders with os.scandir
    read = read_source(tmp_path)
    assert [r.id for r in read.rows] == ["ok/1", "ok/2"]
    assert [(e.reason, Path(e.path).name) for e in read.errors] == [("unreadable_folder", "locked")]
    assert "Permission denied" in read.errors[0].message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_sub_folder_with_real_permissions(tmp_path):
    save(tmp_path / "locked" / "1.jpg")
    save(tmp_path / "2.jpg")
    (tmp_path / "locked").chmod(0)
    try:
        read = read_source(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert [r.id for r in read.rows] == ["2"]
    assert [e.reason for e in read.errors] == ["unreadable_folder"]


def test_unreadable_file_without_image_suffix_is_an_error(tmp_path, monkeypatch):
    save(tmp_path / "photo.jfif")
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self.name == "photo.jfif":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    read = read_source(tmp_path)
    assert read.rows == [] and [e.reason for e in read.errors] == ["unreadable"]


def test_every_file_of_a_folder_has_exactly_one_outcome(tmp_path):
    root = tmp_path / "messy"
    expected = messy_folder(root)
    read = read_source(root)
    outcomes: dict[str, list[str]] = {}
    for row in read.rows:
        outcomes.setdefault(row.path.relative_to(root.resolve()).as_posix(), []).append("row")
    for entry in read.errors + read.skipped:
        outcomes.setdefault(Path(entry.path).relative_to(root).as_posix(), []).append(entry.reason)
    assert outcomes == {name: [outcome] for name, outcome in expected.items()}
    assert {s.reason for s in read.skipped} <= set(SKIP_REASONS)
    assert all(s.message for s in read.errors + read.skipped)


def test_catalog_report_accounts_for_every_file(home, tmp_path):
    root = tmp_path / "messy"
    expected = messy_folder(root)
    report = Catalog.create("messy", home=home).index(root, "colour-hist")
    rows = sum(v == "row" for v in expected.values())
    decode_fails = {"shoes/broken.jpg": "not_an_image", **({"x.heic": "corrupt"} if expected["x.heic"] == "row" else {})}
    assert (report.rows, report.added) == (rows, rows - len(decode_fails))   # rows that fail to decode
    failed = {os.path.relpath(e.path, root): e.reason for e in report.errors}
    skipped = {os.path.relpath(s.path, root): s.reason for s in report.skipped}
    assert failed == {**decode_fails, **{k: v for k, v in expected.items() if v in ("unsupported_format", "missing")}}
    assert skipped == {k: v for k, v in expected.items() if v in SKIP_REASONS}
    assert report.added + len(failed) + len(skipped) == len(expected)
    data = json.loads(Path(report.report_json).read_text())
    assert data["skip_counts"]["system_file"] == 7 and data["skip_counts"]["hidden"] == 2
    assert len(data["skipped"]) == len(skipped)


# -- tables -----------------------------------------------------------------------------------
@pytest.fixture
def images(tmp_path) -> Path:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        save(tmp_path / name)
    return tmp_path


def test_quoted_line_break_and_unicode_line_separator_survive(images):
    """Issue example: an Excel Alt+Enter field gave `bad_row … expected 4 fields, found 1` and lost
    its line break; U+2028 inside a field cut it."""
    table = write_csv(images / "c.csv", 'id,image,label,description\n'
                                        '1,a.jpg,shoe,"first line\nsecond line"\n'
                                        '2,b.jpg,bag,"left\u2028right"\n'
                                        '3,c.jpg,hat,plain\n')
    read = read_source(table)
    assert read.errors == []
    assert [(r.id, r.metadata["description"], r.line) for r in read.rows] == [
        ("1", "first line\nsecond line", 2), ("2", "left\u2028right", 4), ("3", "plain", 5)]


def test_crlf_files_keep_quoted_crlf(images):
    table = write_csv(images / "c.csv", 'image,note\r\na.jpg,"x\r\ny"\r\nb.jpg,z\r\n')
    assert [r.metadata["note"] for r in read_source(table).rows] == ["x\r\ny", "z"]


def test_utf8_with_and_without_bom(images):
    for name, prefix in (("bom.csv", "\ufeff"), ("plain.csv", "")):
        table = write_csv(images / name, prefix + "id,image,label\n1,a.jpg,café\n")
        assert [(r.id, r.label) for r in read_source(table).rows] == [("1", "café")]
    explicit = write_csv(images / "explicit.csv", "\ufeffid,image\n1,a.jpg\n")
    assert [r.id for r in read_source(explicit, encoding="utf-8").rows] == ["1"]


def test_invalid_bytes_name_line_and_byte_and_never_become_replacement_characters(images):
    table = write_csv(images / "latin.csv", "id,image,label\n1,a.jpg,ok\n2,b.jpg,café\n", encoding="cp1252")
    with pytest.raises(SourceError, match=r"line 3, byte 37: b'\\xe9' is not valid utf-8.*--encoding"):
        read_source(table)
    assert [r.label for r in read_source(table, encoding="cp1252").rows] == ["ok", "café"]
    with pytest.raises(SourceError, match="unknown encoding 'klingon'"):
        read_source(table, encoding="klingon")


def test_decode_text_is_strict():
    assert decode_text("ü".encode(), None) == "ü"
    with pytest.raises(SourceError, match="line 1, byte 1"):
        decode_text(b"a\xff", "utf-8")


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiter_is_sniffed_from_the_header(images, delimiter):
    text = delimiter.join(["id", "image", "price"]) + "\n" + delimiter.join(["1", "a.jpg", '"1,5; or 2"']) + "\n"
    read = read_source(write_csv(images / "c.csv", text))
    assert [(r.id, r.metadata["price"]) for r in read.rows] == [("1", "1,5; or 2")]
    assert sniff_delimiter(text) == delimiter


def test_delimiter_can_be_set(images):
    table = write_csv(images / "c.csv", "id|image\n1|a.jpg\n")
    assert [r.id for r in read_source(table, delimiter="|").rows] == ["1"]
    assert parse_delimiter("tab") == "\t" and parse_delimiter("\\t") == "\t" and parse_delimiter(";") == ";"
    with pytest.raises(SourceError, match="one character"):
        parse_delimiter("::")


def test_header_check_names_missing_and_duplicated_columns(images):
    table = write_csv(images / "c.csv", "sku,picture\n1,a.jpg\n")
    with pytest.raises(SourceError, match=r"no image column found .*columns are: sku, picture"):
        read_source(table)
    with pytest.raises(SourceError, match=r"label column 'colour' not found; columns are: sku, picture"):
        read_source(table, image_column="picture", label_column="colour")
    twice = write_csv(images / "d.csv", "id,image,image\n1,a.jpg,b.jpg\n")
    with pytest.raises(SourceError, match="used twice in the header: image"):
        read_source(twice)


def test_a_row_with_the_wrong_number_of_fields_names_its_starting_line(images):
    table = write_csv(images / "c.csv", 'id,image,note\n1,a.jpg,"two\nlines"\n2,b.jpg\n3,c.jpg,x\n')
    read = read_source(table)
    assert [r.id for r in read.rows] == ["1", "3"]
    assert [(e.reason, e.line, e.message) for e in read.errors] == [("bad_row", 4, "expected 3 fields, found 2")]


def test_json_lines(images):
    lines = ['{"id": "1", "image": "a.jpg", "label": "shoe", "price": 3.0, "tags": ["x"]}', "",
             'not json', '[1, 2]', '{"id": 2, "image": "b.jpg", "note": "a\\u2028b"}']
    read = read_source(write_csv(images / "c.jsonl", "\n".join(lines) + "\n"))
    assert [(r.id, r.label, r.line) for r in read.rows] == [("1", "shoe", 1), ("2", None, 5)]
    assert read.rows[0].metadata == {"price": "3", "tags": '["x"]', "note": ""}
    assert read.rows[1].metadata["note"] == "a\u2028b"
    assert [(e.reason, e.line) for e in read.errors] == [("bad_row", 3), ("bad_row", 4)]


def test_parquet(images):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"sku": ["s1", "s2", None], "image": ["a.jpg", "b.jpg", "c.jpg"],
                      "category": ["shoe", "bag", "hat"], "price": [1.5, 2.0, None]})
    pq.write_table(table, images / "c.parquet")
    read = read_source(images / "c.parquet")
    assert [(r.id, r.label, r.metadata, r.line) for r in read.rows] == [
        ("s1", "shoe", {"price": "1.5"}, 1), ("s2", "bag", {"price": "2"}, 2)]
    assert [(e.reason, e.line) for e in read.errors] == [("missing_field", 3)]


def test_xlsx(images):
    openpyxl = pytest.importorskip("openpyxl")

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["id", "image", "label", "description"])
    sheet.append([1, "a.jpg", "shoe", "first\nsecond"])
    sheet.append([None, None, None, None])
    sheet.append([2, "b.jpg", "bag", None])
    sheet.append([2, "c.jpg", "hat", "dup"])
    book.save(images / "c.xlsx")
    read = read_source(images / "c.xlsx")
    assert [(r.id, r.label, r.metadata, r.line) for r in read.rows] == [
        ("1", "shoe", {"description": "first\nsecond"}, 2), ("2", "bag", {"description": ""}, 4)]
    assert [(e.reason, e.line) for e in read.errors] == [("duplicate_id", 5)]


def test_unknown_source_kinds_are_one_clear_error(tmp_path):
    (tmp_path / "c.pdf").write_bytes(b"%PDF")
    with pytest.raises(SourceError, match="neither a folder nor a table"):
        read_source(tmp_path / "c.pdf")
    (tmp_path / "bad.xlsx").write_bytes(b"not a zip")
    with pytest.raises(SourceError, match="cannot read workbook"):
        read_source(tmp_path / "bad.xlsx")


def test_unreadable_image_file_fails_as_unreadable_in_the_report(home, tmp_path, monkeypatch):
    save(tmp_path / "f" / "ok.jpg")
    save(tmp_path / "f" / "locked.jpg")
    real_read = Path.read_bytes

    def deny(self):
        if self.name == "locked.jpg":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    report = Catalog.create("t", home=home).index(tmp_path / "f", "colour-hist")
    assert report.added == 1
    assert [(e.reason, Path(e.path).name) for e in report.errors] == [("unreadable", "locked.jpg")]


# -- stray quotes, file: URLs, cut-short images (breaker, session 9) ----------------------------------------
def test_an_unterminated_quote_does_not_swallow_the_rows_after_it(images):
    """A stray `"` made csv read every following line into one field: the rest of the file vanished
    inside one accepted row. Now that record is a bad_row and the lines after it are rows again."""
    table = write_csv(images / "c.csv", 'id,image,name\n1,a.jpg,ok\n2,b.jpg,"stray\n3,c.jpg,x\n4,a.jpg,y\n')
    read = read_source(table)
    assert [(r.id, r.line) for r in read.rows] == [("1", 2), ("3", 4), ("4", 5)]
    assert [(e.reason, e.line) for e in read.errors] == [("bad_row", 3)]
    assert "unterminated quoted field" in read.errors[0].message


def test_a_stray_quote_closed_by_a_later_quoted_field_loses_no_row(images):
    """The swallowing record can even end with the right number of fields ('oops\\n3,c.jpg,x\\n4,a.jpg,' +
    'two words"'): strict quoting rejects it, and rows 3 and 4 are read again."""
    table = write_csv(images / "c.csv", 'id,image,name\n1,a.jpg,ok\n2,b.jpg,"oops\n3,c.jpg,x\n'
                                        '4,a.jpg,"two words"\n5,b.jpg,z\n')
    read = read_source(table)
    assert [(r.id, r.metadata["name"]) for r in read.rows] == [("1", "ok"), ("3", "x"), ("4", "two words"), ("5", "z")]
    assert [(e.reason, e.line) for e in read.errors] == [("bad_row", 3)]


def test_an_unterminated_quote_on_the_last_line_is_a_bad_row(images):
    read = read_source(write_csv(images / "c.csv", 'id,image,name\n1,a.jpg,ok\n2,b.jpg,"never closed\n'))
    assert [r.id for r in read.rows] == ["1"]
    assert [(e.reason, e.line) for e in read.errors] == [("bad_row", 3)]


def test_file_urls_in_image_cells_are_local_paths(images, tmp_path):
    (images / "red dress.jpg").write_bytes((images / "a.jpg").read_bytes())
    table = write_csv(tmp_path / "t.csv", "image\n"
                      f"file://{(images / 'red dress.jpg').as_posix().replace(' ', '%20')}\n"
                      f"file://localhost{(images / 'b.jpg').as_posix()}\n"
                      f"FILE:{(images / 'c.jpg').as_posix()}\n"
                      "file://fileserver/share/d.jpg\n")
    read = read_source(table)
    assert [(r.id, r.path) for r in read.rows] == [
        ("red dress", images / "red dress.jpg"), ("b", images / "b.jpg"), ("c", images / "c.jpg")]
    assert [(e.reason, e.line) for e in read.errors] == [("bad_url", 5)]


@pytest.mark.parametrize("fmt,keep", [("JPEG", 12), ("PNG", 12), ("GIF", 10), ("TIFF", 8)])
def test_a_cut_short_image_without_suffix_is_a_row_not_a_skipped_file(tmp_path, fmt, keep):
    data = save(tmp_path / "full.img", fmt=fmt).read_bytes()
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "photo").write_bytes(data[:keep])
    read = read_source(tmp_path / "f")
    assert [r.id for r in read.rows] == ["photo"] and read.skipped == []


def test_ids_the_api_could_not_serve_are_invalid_id_rows(images, tmp_path):
    """A NUL, tab or line break in an id, or an id over 512 characters, was indexed, then every API route
    answered 422 invalid_id for it: an item nobody could open. Now it is the row's `invalid_id`."""
    table = write_csv(images / "c.csv", 'id,image\n"a\x00b",a.jpg\n"tab\there",b.jpg\n' + "x" * 513 + ",c.jpg\n"
                      'ok/../ü 😀,a.jpg\n')
    read = read_source(table)
    assert [r.id for r in read.rows] == ["ok/../ü 😀"]
    assert [(e.reason, e.line) for e in read.errors] == [("invalid_id", 2), ("invalid_id", 3), ("invalid_id", 4)]
    folder = tmp_path / "f"
    save(folder / "line\nbreak.jpg")
    save(folder / "fine.jpg")
    read = read_source(folder)
    assert [r.id for r in read.rows] == ["fine"] and [e.reason for e in read.errors] == ["invalid_id"]


def test_other_url_schemes_are_bad_url_rows_not_missing_files(images):
    """`ftp://`, `s3://` or malformed `data:` cells were read as relative file names and failed as `missing`
    with a path that never existed; a file name holding a colon stays a file name. (A well-formed `data:`
    URI is image bytes: tests/data/test_table_images.py.)"""
    (images / "shoes:red.jpg").write_bytes((images / "a.jpg").read_bytes())
    table = write_csv(images / "c.csv", "id,image\n1,ftp://host/x.jpg\n2,s3://bucket/y.jpg\n"
                                        "3,\"data:image/png;base64,iVBORw0KGgo=%\"\n4,shoes:red.jpg\n")
    read = read_source(table)
    assert [(r.id, r.path.name) for r in read.rows] == [("4", "shoes:red.jpg")]
    assert [(e.reason, e.line) for e in read.errors] == [("bad_url", 2), ("bad_url", 3), ("bad_url", 4)]
    assert "'ftp'" in read.errors[0].message


# -- spreadsheet-export quirks (breaker, session 9) ----------------------------------------------------------
def test_excel_sep_line_names_the_delimiter(images):
    """Excel's CSV may start with `sep=;`: it was read as the header (no image column: the whole file failed)."""
    read = read_source(write_csv(images / "c.csv", "sep=;\nid;image;label\n1;a.jpg;x,y\n2;b.jpg;z\n"))
    assert [(r.id, r.label, r.line) for r in read.rows] == [("1", "x,y", 3), ("2", "z", 4)] and read.errors == []


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_a_bom_are_read_without_encoding(images, encoding):
    """Excel's "Unicode Text" export is UTF-16 with a BOM (and tab-separated): it stopped the ingest."""
    data = "id\timage\tname\n1\ta.jpg\tcafé 😀\n".encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    (images / "c.txt").write_bytes(data)
    assert [(r.id, r.metadata["name"]) for r in read_source(images / "c.txt").rows] == [("1", "café 😀")]


def test_trailing_empty_cells_do_not_make_a_row_bad(images):
    """Spreadsheet exports pad rows with empty cells (`1,a.jpg,x,,`): every such row was a bad_row."""
    read = read_source(write_csv(images / "c.csv", "id,image,label\n1,a.jpg,x,,\n2,b.jpg,y,\n3,c.jpg,z,extra\n"))
    assert [(r.id, r.label) for r in read.rows] == [("1", "x"), ("2", "y")]
    assert [(e.reason, e.line) for e in read.errors] == [("bad_row", 4)]


@pytest.mark.parametrize("header", ["ID,Image Path,Category", "id,image-path,CATEGORY", " Sku , IMAGE_URL , Label "])
def test_default_columns_match_whatever_the_case_spaces_or_hyphens(images, header):
    read = read_source(write_csv(images / "c.csv", f"{header}\n1,a.jpg,shoe\n"))
    assert [(r.id, r.path.name, r.label) for r in read.rows] == [("1", "a.jpg", "shoe")]


def test_an_explicit_column_matches_the_same_way_when_unambiguous(images):
    table = write_csv(images / "c.csv", "Item No,Photo File\n1,a.jpg\n")
    read = read_source(table, id_column="item no", image_column="photo_file")
    assert [(r.id, r.path.name) for r in read.rows] == [("1", "a.jpg")]


def test_columns_without_a_name_keep_their_values(images):
    """Blank header cells all became the metadata key '': a value in one was overwritten by the next."""
    read = read_source(write_csv(images / "c.csv", "id,image,,colour,,\n1,a.jpg,,red,,\n2,b.jpg,note,blue,,\n"))
    assert [r.metadata for r in read.rows] == [{"colour": "red"}, {"column_3": "note", "colour": "blue"}]


def test_xlsx_cells_in_unnamed_columns_are_kept(images):
    """A spreadsheet cell right of the header, or under a blank header cell, was dropped silently."""
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    for row in (["id", "image", None, "colour"], ["1", "a.jpg", "note", "red", None, "extra"], ["2", "b.jpg", None, "blue"]):
        sheet.append(row)
    book.save(images / "t.xlsx")
    read = read_source(images / "t.xlsx")
    assert [r.metadata for r in read.rows] == [{"column_3": "note", "colour": "red", "column_6": "extra"},
                                               {"colour": "blue"}]


def test_a_list_of_images_in_json_lines_or_parquet_is_several_images(images):
    """`"images": ["a.jpg", "b.jpg"]` (JSON Lines) or a Parquet list column was one missing file named
    '["a.jpg", "b.jpg"]'; now it is one item per image, as `a.jpg|b.jpg`."""
    (images / "t.jsonl").write_text(json.dumps({"product_id": "p1", "images": ["a.jpg", "b.jpg"]}) + "\n"
                                    + json.dumps({"product_id": "p2", "images": ["c.jpg"]}) + "\n")
    read = read_source(images / "t.jsonl")
    assert [(r.id, r.path.name) for r in read.rows] == [("p1#1", "a.jpg"), ("p1#2", "b.jpg"), ("p2", "c.jpg")]
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    pq.write_table(pa.table({"id": ["x"], "image": [["a.jpg", "c.jpg"]]}), images / "t.parquet")
    assert [(r.id, r.path.name) for r in read_source(images / "t.parquet").rows] == [("x#1", "a.jpg"), ("x#2", "c.jpg")]


def test_a_file_name_that_is_not_utf8_fails_alone_instead_of_stopping_the_ingest(home, tmp_path):
    """`caf\\xe9.jpg` (a Latin-1 name from an old zip) stopped the whole ingest with "'utf-8' codec can't
    encode character '\\udce9'": nothing was indexed. Now that file is `unreadable`, the rest is ingested."""
    folder = tmp_path / "f"
    save(folder / "ok.jpg")
    try:
        save(Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.jpg")))
        save(Path(os.fsdecode(os.fsencode(folder) + b"/d\xff/x.jpg")))
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    report = Catalog.create("latin", home=home).index(folder, "colour-hist")
    assert report.added == 1 and [e.reason for e in report.errors] == ["unreadable", "unreadable"]
    assert "caf\\xe9.jpg" in report.errors[0].message and "d\\xff/x.jpg" in report.errors[1].message


def test_binary_parquet_cells_and_embedded_images_never_crash_the_ingest(images):
    """A Parquet `binary` column, or a Hugging Face-style image column ({bytes, path} structs), stopped
    the whole ingest with "TypeError: Object of type bytes is not JSON serializable"."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    photo = (images / "a.jpg").read_bytes()
    table = pa.table({"id": ["in-bytes", "by-path", "plain"],
                      "image": [{"bytes": photo, "path": "a.jpg"}, {"bytes": None, "path": str(images / "b.jpg")},
                                {"bytes": None, "path": None}],
                      "raw": [b"\xff\xfe", b"text", None]})
    pq.write_table(table, images / "t.parquet")
    read = read_source(images / "t.parquet")
    assert [(r.id, r.path.name, r.metadata["raw"]) for r in read.rows] == [("in-bytes", "", "<2 bytes>"),
                                                                          ("by-path", "b.jpg", "text")]
    assert read.rows[0].data == photo     # embedded bytes are ingested (tests/data/test_table_images.py)
    assert [(e.id, e.reason) for e in read.errors] == [("plain", "missing_field")]


def test_a_table_that_cannot_be_read_is_a_source_error(images, monkeypatch):
    table = write_csv(images / "c.csv", "id,image\n1,a.jpg\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(SourceError, match="Permission denied"):
        read_source(table)
