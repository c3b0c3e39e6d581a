"""The shared typer app and helpers every CLI module uses.

Command modules import the library at the top, except what pulls torch (train/, explore.latent,
encoders.runtime, bench.models) or the `api` extra (fastapi, uvicorn): those load inside the
command that needs them. Measured with 2 busy cores: `lookalike --help` takes ~2 s; importing those
modules at the top made it ~10 s. tests/test_architecture.py keeps it so."""
from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

from lookalike.catalog import Catalog, CatalogNotFound, FilterError, UnknownColumn

app = typer.Typer(
    name="lookalike",
    help="Visual product recommendation: index a catalog of images, then search, explore and evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train encoders and probes on a catalog.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: figures measured side by side in one run.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)
# Piped output (files, CI logs) gets a wide console so tables are not squashed to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)

HomeOption = typer.Option(None, "--home", envvar="LOOKALIKE_HOME", help="Directory holding catalogs (default ~/.lookalike).")
CatalogOption = typer.Option(..., "--catalog", "-c", help="Catalog name.")


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error (no stack trace) and exit."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def fail_on(exc: Exception) -> None:
    """A library error as a one-line message (no stack trace): exit 2 when the request names what
    the catalog does not have or cannot be read (``UnknownColumn``, ``FilterError``: like typer's
    usage errors), else 1."""
    fail(str(exc).strip('"'), 2 if isinstance(exc, (UnknownColumn, FilterError)) else 1)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def open_catalog(name: str, home, backend: str | None = None):
    try:
        return Catalog.open(name, home=home, backend=backend)
    except (CatalogNotFound, KeyError, ValueError) as exc:
        fail(str(exc).strip('"'))
