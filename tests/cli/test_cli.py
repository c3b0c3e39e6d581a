"""The CLI through typer's runner: index, search, evaluate, info, remove, and clean errors."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli import app

from fakes import centre_colour, messy_folder, same_colour, save_image, tile_boxes

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def indexed(home, shapes_folder):
    result = run("index", shapes_folder, "--catalog", "cli", "--encoder", "colour-hist")
    assert result.exit_code == 0, result.output
    return home


def test_index_prints_summary(indexed, shapes_folder):
    again = run("index", shapes_folder, "--catalog", "cli", "--json")
    data = json.loads(again.stdout)
    assert data["unchanged"] == 54 and data["added"] == 0 and data["failed"] == 0


def test_search_json_and_grid(indexed, shapes_folder, tmp_path):
    grid = tmp_path / "grid.png"
    query = "square-red/square-red-0"
    result = run("search", "--catalog", "cli", "--item", query, "-k", "4", "--json", "--grid", grid)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["results"]) == 4 and data["results"][0]["rank"] == 1
    assert all(r["id"] != query for r in data["results"])
    # one row: the query (framed in blue), then the results in rank order, each showing its own image
    tiles = tile_boxes(grid)
    assert len(tiles) == 5 and len({(y0, y1) for _, y0, _, y1 in tiles}) == 1, tiles
    for box, item in zip(tiles, [query] + [r["id"] for r in data["results"]]):
        assert same_colour(centre_colour(grid, box), centre_colour(shapes_folder / f"{item}.png")), item
    x0, y0, _, y1 = tiles[0]
    frame = Image.open(grid).convert("RGB").getpixel((x0 + 1, (y0 + y1) // 2))
    assert frame[2] > frame[0] + 100 and not same_colour(frame, centre_colour(grid, tiles[1])), frame


def test_search_filters_and_table(indexed):
    result = run("search", "--catalog", "cli", "--item", "square-red/square-red-0", "--where", "label=circle-blue", "-k", "3")
    assert result.exit_code == 0
    assert result.stdout.count("circle-blue/circle-blue-") == 3 and "square-red/" not in result.stdout.split("┃")[-1]


def test_search_errors_are_one_line(indexed, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    cases = [
        (["search", "--catalog", "cli", "--item", "nope"], "unknown item"),
        (["search", "--catalog", "cli"], "exactly one"),
        (["search", "--catalog", "cli", "--image", bad], "not a recognised image"),
        (["search", "--catalog", "missing", "--item", "x"], "not found"),
        (["search", "--catalog", "cli", "--item", "square-red/square-red-0", "--where", "oops"], "COLUMN=VALUE"),
        (["search", "--catalog", "cli", "--latent", "1,2,x"], "comma-separated"),
        (["evaluate", "--catalog", "cli", "-k", "a,b"], "integers"),
        (["index", "/definitely/not/here", "--catalog", "cli"], "not found"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["search", "--item", "square-red/square-red-0", "--where", "color=red"],
                                  ["evaluate", "--where", "color=red"], ["evaluate", "--label", "color"],
                                  ["cluster", "--k", "3", "--label", "color"]])
def test_unknown_column_exits_2_naming_the_known_ones(indexed, args):
    result = run(*args, "--catalog", "cli")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: unknown column 'color'; this catalog's columns are: id, label, path"


def test_search_says_when_k_is_past_the_matches(indexed):
    result = run("search", "--catalog", "cli", "--item", "square-red/square-red-0", "-k", "100", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["results"]) == 53
    assert "only 53 item(s) match, fewer than -k 100" in result.stderr


def test_evaluate_info_remove(indexed):
    result = run("evaluate", "--catalog", "cli", "-k", "1,5", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    overall = data["colour-hist"]["overall"]
    # chance is 5/53; a colour histogram finds the colour (a third of the same-colour items share the shape)
    assert overall["P@1"] > 0.25 and 0 < overall["P@5"] <= overall["P@1"]
    info = run("info", "--catalog", "cli", "--json")
    assert json.loads(info.stdout)["items"] == 54
    removed = run("remove", "circle-red/circle-red-0", "--catalog", "cli")
    assert "removed 1" in removed.stdout
    assert json.loads(run("catalogs", "--json").stdout) == [{"name": "cli", "items": 53}]


def test_evaluate_report_is_one_html_file_with_embedded_pngs(indexed, tmp_path):
    out = tmp_path / "out.html"
    result = run("evaluate", "--catalog", "cli", "--report", out)
    assert result.exit_code == 0, result.output
    assert "quality report:" in result.output and "P@1" in result.output
    text = out.read_text()
    assert "<table>" in text and text.count('src="data:image/png;base64,') >= 3
    assert "http://" not in text and "https://" not in text and "<script" not in text
    two = run("evaluate", "--catalog", "cli", "--report", out, "-l", "label", "-l", "id")
    assert two.exit_code != 0 and "one --label" in two.output


def test_search_backend_option(indexed, request):
    args = ["search", "--catalog", "cli", "--item", "square-red/square-red-0", "-k", "5", "--json"]
    bad = run(*args, "--backend", "nope")
    assert bad.exit_code != 0 and "unknown index backend" in bad.output
    request.getfixturevalue("milvus_lite")
    faiss_ids = [r["id"] for r in json.loads(run(*args).stdout)["results"]]
    milvus = run(*args, "--backend", "milvus")
    assert milvus.exit_code == 0, milvus.output
    assert [r["id"] for r in json.loads(milvus.stdout)["results"]] == faiss_ids


def test_index_counts_skipped_files_per_reason(home, tmp_path):
    expected = messy_folder(tmp_path / "messy")
    result = run("index", tmp_path / "messy", "--catalog", "messy", "--encoder", "colour-hist")
    assert result.exit_code == 0, result.output
    assert "files skipped, by reason: hidden=2, link_to_folder=1, not_a_file=1, not_an_image=1, system_file=7" \
        in " ".join(result.output.split())
    unsupported = sum(v == "unsupported_format" for v in expected.values())   # x.heic: corrupt with pillow-heif
    assert f"unsupported_format={unsupported}" in result.output and "missing=1" in result.output


def test_index_encoding_and_delimiter_options(home, tmp_path):
    save_image(tmp_path / "a.jpg")
    (tmp_path / "c.csv").write_bytes("id\timage\tlabel\n1\ta.jpg\tcaf\u00e9\n".encode("cp1252"))
    bad = run("index", tmp_path / "c.csv", "--catalog", "enc", "--encoder", "colour-hist")
    assert bad.exit_code == 1 and "line 2, byte 26" in bad.output and "Traceback" not in bad.output
    good = run("index", tmp_path / "c.csv", "--catalog", "enc", "--encoder", "colour-hist", "--encoding", "cp1252",
               "--delimiter", "tab", "--json")
    assert good.exit_code == 0, good.output
    assert json.loads(good.stdout)["added"] == 1
    assert run("info", "--catalog", "enc", "--json").exit_code == 0


def test_search_with_a_box_searches_that_part_of_the_photo(indexed, shapes_folder, tmp_path):
    red = Image.open(shapes_folder / "circle-red" / "circle-red-0.png").convert("RGB")
    blue = Image.open(shapes_folder / "square-blue" / "square-blue-1.png").convert("RGB")
    photo = Image.new("RGB", (red.width + blue.width, red.height), "white")
    photo.paste(red, (0, 0))
    photo.paste(blue, (red.width, 0))
    path, grid = tmp_path / "two.png", tmp_path / "grid.png"
    photo.save(path)
    box = f"{red.width},0,{photo.width},{photo.height}"
    result = run("search", "--catalog", "cli", "--image", path, "--box", box, "-k", "2", "--json", "--grid", grid)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["id"] == "square-blue/square-blue-1"
    query_tile = tile_boxes(grid)[0]  # the grid shows the part that was searched: blue, not red
    assert same_colour(centre_colour(grid, query_tile), centre_colour(blue))
    for args, message in ((["--image", path, "--box", "1,2,3"], "four numbers"),
                          (["--image", path, "--box", f"{photo.width},0,{photo.width + 9},9"], "outside"),
                          (["--item", "square-red/square-red-0", "--box", "0,0,9,9"], "--image")):
        bad = run("search", "--catalog", "cli", *args)
        assert bad.exit_code == 1 and message in bad.output and "Traceback" not in bad.output, bad.output


def test_scores_table_is_the_training_commands_table():
    """cli.app.scores_table: text columns, then one 3-decimal column per metric; rows without scores left out."""
    from rich.console import Console

    from lookalike.cli.app import scores_table

    table = scores_table("t", ["model"], [(["base"], {"P@1": 0.5, "P@5": 0.25, "mAP@10": 0.125}), (["none"], None)])
    console = Console(width=100, record=True)
    console.print(table)
    text = console.export_text()
    assert [c.header for c in table.columns] == ["model", "P@1", "P@5", "mAP@10"] and table.row_count == 1
    assert "0.500" in text and "0.250" in text and "0.125" in text and "none" not in text


def test_a_first_index_that_fails_as_a_whole_leaves_no_empty_catalog(home, tmp_path, indexed):
    """An unreadable table or a bad encoder on the first `index` created catalog X with 0 items anyway."""
    (tmp_path / "empty.csv").write_text("")
    assert run("index", tmp_path / "empty.csv", "--catalog", "ghost", "--encoder", "colour-hist").exit_code == 1
    save_image(tmp_path / "f" / "a.jpg")
    assert run("index", tmp_path / "f", "--catalog", "ghost2", "--encoder", "no-such-encoder").exit_code == 1
    listed = json.loads(run("catalogs", "--json").stdout)
    names = [c["name"] for c in listed] if isinstance(listed, list) else [c["name"] for c in listed["catalogs"]]
    assert "ghost" not in names and "ghost2" not in names and "cli" in names
    # an existing catalog is never removed by a failed run
    assert run("index", tmp_path / "empty.csv", "--catalog", "cli", "--encoder", "colour-hist").exit_code == 1
    assert run("info", "--catalog", "cli").exit_code == 0
