"""`lookalike export` / `import` / `check` through typer's runner: exit codes and one-line errors."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from lookalike.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_export_import_check(shapes_catalog, home, tmp_path):
    snap = tmp_path / "shapes.tar"
    result = run("export", snap, "--catalog", "shapes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"] == 54
    again = run("import", snap)
    assert again.exit_code == 1 and "--force" in again.output and "Traceback" not in again.output
    result = run("import", snap, "--as", "copy", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dir"] == str(home / "catalogs" / "copy")
    result = run("check", "--catalog", "copy", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True
    image = next((home / "catalogs" / "copy" / "images").iterdir())
    image.unlink()
    result = run("check", "--catalog", "copy")
    assert result.exit_code == 1 and "missing-image" in result.output
    assert run("check", "--catalog", "copy", "--no-images").exit_code == 0
    assert run("import", tmp_path / "nope.tar").exit_code == 1
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    result = run("import", tmp_path / "junk.tar")
    assert result.exit_code == 1 and "not a readable lookalike snapshot" in result.output
    assert run("import", snap, "--as", "../evil").exit_code == 1
