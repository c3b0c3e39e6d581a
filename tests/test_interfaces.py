"""The public surfaces stay put across refactors: every CLI command with its parameters, and the
OpenAPI schema of the HTTP API, compared with snapshots in tests/snapshots/.

A deliberate change to a command or route updates the snapshot in the same commit:
``LOOKALIKE_UPDATE_SNAPSHOTS=1 pytest tests/test_interfaces.py``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fakes import make_shapes_folder

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _check(name: str, actual) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("LOOKALIKE_UPDATE_SNAPSHOTS"):
        path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
    assert actual == json.loads(path.read_text())


def _commands(command, prefix=()) -> dict[str, list[str]]:
    if hasattr(command, "commands"):
        out = {}
        for name, sub in sorted(command.commands.items()):
            out.update(_commands(sub, (*prefix, name)))
        return out
    return {" ".join(prefix): sorted(p.opts[0] if getattr(p, "opts", None) else p.name for p in command.params)}


def test_cli_commands_and_options_unchanged():
    import typer

    from lookalike.cli import app

    _check("cli_commands.json", _commands(typer.main.get_command(app)))


def test_openapi_schema_unchanged(tmp_path):
    pytest.importorskip("fastapi")
    from lookalike.api.main import create_app
    from lookalike.catalog import Catalog

    folder = make_shapes_folder(tmp_path / "images", per_class=1, size=32)
    Catalog.create("snap", home=tmp_path / "home").index(folder, encoder="colour-hist")
    schema = json.loads(json.dumps(create_app("snap", home=tmp_path / "home").openapi()))
    _check("openapi.json", schema)
