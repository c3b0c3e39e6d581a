"""Metric learning and attribute probes: `lookalike train metric`, `lookalike train probe`,
`lookalike predict-attribute`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress
from rich.table import Table

from lookalike.cli.app import (CatalogOption, DeviceOption, HoldoutOption, HomeOption, JsonOption, ModelNameOption,
                               SameLabelOption, SeedOption, SplitColumnOption, app, console, fail, fail_on, open_catalog,
                               out, print_json, scores_table, train_app)
from lookalike.data.images import ImageError


@train_app.command("metric")
def train_metric_command(
    catalog: str = CatalogOption,
    label: str = SameLabelOption,
    per_label_group: Optional[str] = typer.Option(None, "--per-label-group",
                                                  help="Train one model per value of this column; routed automatically."),
    loss: str = typer.Option("triplet-semihard", "--loss",
                             help="triplet-semihard | triplet-hard | multi-similarity | proxy-anchor"),
    compare_losses: bool = typer.Option(False, "--compare-losses", help="Also train and report every other loss."),
    dim: int = typer.Option(64, "--dim", min=2, max=4096, help="Embedding size (per group)."),
    epochs: int = typer.Option(80, "--epochs", min=1, max=10_000),
    holdout: float = HoldoutOption,
    split_column: Optional[str] = SplitColumnOption,
    device: str = DeviceOption,
    name: Optional[str] = ModelNameOption,
    seed: int = SeedOption,
    json_out: bool = JsonOption,
    home: Optional[Path] = HomeOption,
):
    """Train a projection head on the pretrained encoder so items with the same label are close."""
    # torch loads in the commands that need it: ~8 s off `lookalike --help` (see cli/app.py)
    from lookalike.train.losses import LOSSES
    from lookalike.train.metric import MetricHeadConfig, train_metric

    if loss not in LOSSES:
        fail(f"--loss must be one of {', '.join(LOSSES)}")
    if device not in ("auto", "cpu", "cuda"):
        fail("--device must be auto, cpu or cuda")
    cat = open_catalog(catalog, home)
    config = MetricHeadConfig(dim=dim, epochs=epochs, device=device)
    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            if stage == "features":
                bar.advance(tasks[stage], done)
            else:
                bar.update(tasks[stage], completed=done)

        try:
            report = train_metric(cat, label, group_column=per_label_group, loss=loss, compare_losses=compare_losses,
                                  holdout=holdout, split_column=split_column, name=name, config=config, seed=seed,
                                  progress=progress)
        except (ValueError, FileNotFoundError, LookupError) as exc:
            fail_on(exc)
    if json_out:
        print_json(report.to_dict())
        return
    where = f"{report.n_test} held-out items" + (f" ({split_column}=test)" if split_column else f" (holdout {holdout})")
    rows = [(["pretrained effnet-lite0"], report.baseline)]
    rows += [([f"metric ({name_})" + (" [saved]" if name_ == report.loss else "")], scores)
             for name_, scores in (report.losses_compared or {report.loss: report.trained}).items()]
    out.print(scores_table(f"metric:{report.name} — leave-one-out on {where}, relevant = same {label}", ["encoder"], rows))
    if report.router_accuracy is not None:
        out.print(f"groups: {', '.join(report.groups)} — router accuracy on held-out items {report.router_accuracy:.3f}")
    if report.skipped:
        console.print(f"[yellow]{len(report.skipped)} unreadable images skipped[/]")
    out.print(f"saved {report.path}\nuse it: lookalike index SOURCE --catalog {catalog} --encoder metric:{report.name}")


@train_app.command("probe")
def train_probe_command(
    catalog: str = CatalogOption,
    label: str = typer.Option(..., "--label", help="Column to predict (label or any metadata column)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Vectors to use (default: the catalog's)."),
    holdout: float = typer.Option(0.3, "--holdout", help="Held-out fraction per value (ignored with --split-column)."),
    split_column: Optional[str] = typer.Option(None, "--split-column", help="Fit on rows 'train', score on rows 'test'."),
    name: Optional[str] = typer.Option(None, "--name", help="Probe name (default CATALOG-LABEL)."),
    c: float = typer.Option(0.1, "--C", help="Inverse regularisation strength of the logistic regression."),
    json_out: bool = JsonOption,
    home: Optional[Path] = HomeOption,
):
    """A linear classifier on embeddings for any label column: accuracy/F1 on held-out items, saved."""
    cat = open_catalog(catalog, home)
    try:
        report = cat.train_probe(label, encoder, holdout=holdout, split_column=split_column, name=name, C=c)
    except (ValueError, LookupError, KeyError) as exc:
        fail_on(exc)
    if json_out:
        print_json(report.to_dict())
        return
    table = Table(title=f"probe {report.name}: {label} from {report.encoder} "
                        f"(train {report.n_train}, held-out {report.n_test})")
    for col in ("value", "precision", "recall", "F1", "n"):
        table.add_column(col, justify="left" if col == "value" else "right")
    for value, row in report.per_class.items():
        table.add_row(value, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["n"]))
    table.add_row("[bold]all[/]", "", f"acc {report.accuracy:.3f}", f"macro {report.macro_f1:.3f}", str(report.n_test))
    out.print(table)
    out.print(f"saved {report.path}")


@app.command("predict-attribute")
def predict_attribute_command(
    image: Path = typer.Argument(..., help="Image file."),
    probe: str = typer.Option(..., "--probe", help="Probe name (see `lookalike train probe`)."),
    catalog: str = CatalogOption,
    json_out: bool = JsonOption,
    home: Optional[Path] = HomeOption,
):
    """Predict an attribute (e.g. gender, category) of an image with a trained probe."""
    cat = open_catalog(catalog, home)
    try:
        value, probabilities = cat.predict_attribute(probe, image)
    except (ImageError, FileNotFoundError, ValueError) as exc:
        fail_on(exc)
    if json_out:
        print_json({"value": value, "probabilities": probabilities})
        return
    out.print(f"[bold]{value}[/]  " + "  ".join(f"{k} {v:.2f}" for k, v in
                                              sorted(probabilities.items(), key=lambda kv: -kv[1])[:5]))
