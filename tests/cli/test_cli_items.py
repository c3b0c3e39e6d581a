"""`lookalike add` / `lookalike update`: one item changed in place (Catalog.upsert / update_metadata)."""
from __future__ import annotations

from typer.testing import CliRunner

from lookalike.catalog import Catalog
from lookalike.cli import app

from fakes import draw_shape

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_add_then_update_an_item(shapes_catalog, tmp_path):
    photo = tmp_path / "yellow-circle.png"
    draw_shape("circle", (240, 200, 20)).save(photo)
    result = run("add", photo, "--catalog", "shapes", "--label", "circle-yellow", "--meta", "price=12",
                 "--meta", "colour=yellow")
    assert result.exit_code == 0, result.output
    assert "added yellow-circle" in result.stdout
    cat = Catalog.open("shapes")
    item = cat.get("yellow-circle")
    # typed as the API's JSON would be: a number, so range filters read it
    assert item.label == "circle-yellow" and item.metadata == {"price": 12, "colour": "yellow"}
    assert "yellow-circle" in [i.id for i in cat.items(filters=["price>=10"])]
    assert cat.search(image=photo, k=1)[0].id == "yellow-circle"
    assert "unchanged" in run("add", photo, "--catalog", "shapes", "--label", "circle-yellow", "--meta", "price=12",
                              "--meta", "colour=yellow").stdout

    result = run("update", "yellow-circle", "--catalog", "shapes", "--set", "price=9.5", "--unset", "colour",
                 "--label", "sale", "--set", "in_stock=true", "--set", 'code="007"', "--set", "zip=007")
    assert result.exit_code == 0, result.output
    item = cat.get("yellow-circle")
    assert item.label == "sale" and item.metadata == {"price": 9.5, "in_stock": True, "code": "007", "zip": "007"}
    assert run("update", "yellow-circle", "--catalog", "shapes", "--clear-label").exit_code == 0
    assert cat.get("yellow-circle").label is None


def test_add_and_update_errors_are_one_line(shapes_catalog, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    result = run("add", text, "--catalog", "shapes")
    assert result.exit_code == 1 and "not_an_image" in result.output and "Traceback" not in result.output
    result = run("add", tmp_path / "missing.png", "--catalog", "shapes")
    assert result.exit_code == 1 and "missing" in result.output
    assert run("update", "nope", "--catalog", "shapes", "--set", "a=1").exit_code == 1
    result = run("update", "circle-red/circle-red-0", "--catalog", "shapes", "--set", "bad")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    result = run("update", "circle-red/circle-red-0", "--catalog", "shapes", "--set", "label=x")
    assert result.exit_code == 2 and "metadata key" in result.output
    # a blank label is refused, not stored as a label value of its own
    result = run("update", "circle-red/circle-red-0", "--catalog", "shapes", "--label", "")
    assert result.exit_code == 2 and "blank" in result.output
    photo = tmp_path / "blank.png"
    draw_shape("square", (20, 200, 240)).save(photo)
    result = run("add", photo, "--catalog", "shapes", "--label", " ")
    assert result.exit_code == 1 and "invalid_label" in result.output
