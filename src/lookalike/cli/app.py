"""The shared typer app and helpers every CLI module uses.

Command modules import the library at the top, except what pulls torch (train/, explore.latent,
encoders.runtime, bench.models) or the `api` extra (fastapi, uvicorn): those load inside the
command that needs them. Measured with 2 busy cores: `lookalike --help` takes ~2 s; importing those
modules at the top made it ~10 s. tests/test_architecture.py keeps it so."""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import typer
from rich.console import Console
from rich.table import Table

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
# Options the training / tuning commands share: one definition, so the flag, default and help agree.
JsonOption = typer.Option(False, "--json")
SeedOption = typer.Option(0, "--seed")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")
SameLabelOption = typer.Option("label", "--label", help="Column whose equal values should be close.")
SplitColumnOption = typer.Option(None, "--split-column", help="Fit on rows 'train', report on rows 'test'.")
HoldoutOption = typer.Option(0.5, "--holdout", help="Held-out fraction per label (ignored with --split-column).")
ModelNameOption = typer.Option(None, "--name", help="Model name (default CATALOG-LABEL).")
RETRIEVAL_SCORES = ("P@1", "P@5", "mAP@10")


def scores_table(title: str, columns: Sequence[str], rows: Sequence[tuple[Sequence[str], dict | None]],
                 metrics: Sequence[str] = RETRIEVAL_SCORES) -> Table:
    """The table the training and tuning commands print: ``columns`` (left-aligned text) then one
    right-aligned column per metric; ``rows`` are (texts, scores by metric), 3 decimals; rows without
    scores are left out."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for texts, scores in rows:
        if scores:
            table.add_row(*texts, *(f"{scores[m]:.3f}" for m in metrics))
    return table


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
