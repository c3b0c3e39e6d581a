"""Metric learning, attribute probes and model variants:
`lookalike train metric`, `lookalike train probe`, `lookalike predict-attribute`, `lookalike bench models`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lookalike.cli.app import (CatalogOption, HomeOption, app, bench_app, console, fail, open_catalog, out,
                               print_json, train_app)


def _threads() -> None:
    import torch

    from lookalike.config import torch_threads

    torch.set_num_threads(torch_threads() or 1)


@train_app.command("metric")
def train_metric_command(
    catalog: str = CatalogOption,
    label: str = typer.Option("label", "--label", help="Column whose equal values should be close."),
    per_label_group: Optional[str] = typer.Option(None, "--per-label-group",
                                                  help="Train one model per value of this column; routed automatically."),
    loss: str = typer.Option("triplet-semihard", "--loss",
                             help="triplet-semihard | triplet-hard | multi-similarity | proxy-anchor"),
    compare_losses: bool = typer.Option(False, "--compare-losses", help="Also train and report every other loss."),
    dim: int = typer.Option(64, "--dim", min=2, max=4096, help="Embedding size (per group)."),
    epochs: int = typer.Option(80, "--epochs", min=1, max=10_000),
    holdout: float = typer.Option(0.5, "--holdout", help="Held-out fraction per label (ignored with --split-column)."),
    split_column: Optional[str] = typer.Option(None, "--split-column", help="Fit on rows 'train', report on rows 'test'."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default CATALOG-LABEL)."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Train a projection head on the pretrained encoder so items with the same label are close."""
    from rich.progress import Progress

    from lookalike.train.losses import LOSSES
    from lookalike.train.metric import MetricHeadConfig, train_metric

    if loss not in LOSSES:
        fail(f"--loss must be one of {', '.join(LOSSES)}")
    if device not in ("auto", "cpu", "cuda"):
        fail("--device must be auto, cpu or cuda")
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda asked for but no CUDA device is available")
    _threads()
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
            fail(str(exc))
    if json_out:
        print_json(report.to_dict())
        return
    where = f"{report.n_test} held-out items" + (f" ({split_column}=test)" if split_column else f" (holdout {holdout})")
    table = Table(title=f"metric:{report.name} — leave-one-out on {where}, relevant = same {label}")
    for col in ("encoder", "P@1", "P@5", "mAP@10"):
        table.add_column(col, justify="left" if col == "encoder" else "right")
    rows = [("pretrained effnet-lite0", report.baseline)]
    rows += [(f"metric ({name_})" + (" [saved]" if name_ == report.loss else ""), scores)
             for name_, scores in (report.losses_compared or {report.loss: report.trained}).items()]
    for title, scores in rows:
        table.add_row(title, *(f"{scores[k]:.3f}" for k in ("P@1", "P@5", "mAP@10")))
    out.print(table)
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
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """A linear classifier on embeddings for any label column: accuracy/F1 on held-out items, saved."""
    cat = open_catalog(catalog, home)
    try:
        report = cat.train_probe(label, encoder, holdout=holdout, split_column=split_column, name=name, C=c)
    except (ValueError, LookupError, KeyError) as exc:
        fail(str(exc))
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
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Predict an attribute (e.g. gender, category) of an image with a trained probe."""
    from lookalike.data.images import ImageError

    cat = open_catalog(catalog, home)
    try:
        value, probabilities = cat.predict_attribute(probe, image)
    except (ImageError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if json_out:
        print_json({"value": value, "probabilities": probabilities})
        return
    out.print(f"[bold]{value}[/]  " + "  ".join(f"{k} {v:.2f}" for k, v in
                                              sorted(probabilities.items(), key=lambda kv: -kv[1])[:5]))


@bench_app.command("models")
def bench_models_command(
    catalog: str = CatalogOption,
    label: str = typer.Option("label", "--label"),
    n: int = typer.Option(300, "--n", min=10, help="Labelled items in the quality subset (stratified)."),
    calibration: int = typer.Option(64, "--calibration", min=1, help="Catalog images used to calibrate int8."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Interleaved timing rounds (median kept)."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Size, images/s (batch 1 and 32), P@1 and mAP@10 of torch fp32 / ONNX fp32 / fp16 / int8."""
    from lookalike.bench.models import bench_models
    from lookalike.encoders.onnx_runtime import onnx_available

    if not onnx_available():
        fail("bench models needs onnxruntime and onnx: pip install 'lookalike[onnx]'")
    _threads()
    cat = open_catalog(catalog, home)
    try:
        result = bench_models(cat, label, n=n, n_calibration=calibration, rounds=rounds,
                              progress=lambda message: console.print(f"[dim]{message}[/]"))
    except (ValueError, LookupError) as exc:
        fail(str(exc))
    if json_out:
        print_json(result.to_dict())
        return
    torch_row = next(r for r in result.results if r.variant == "torch")
    table = Table(title=f"EfficientNet-Lite0 variants on {catalog} ({result.n_items} labelled items, "
                        f"leave-one-out, relevant = same {label})")
    for col in ("variant", "size MB", "img/s b1", "x torch", "img/s b32", "x torch", "P@1", "mAP@10", "max |Δ|"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in result.results:
        table.add_row(r.variant + (" [bold](auto)[/]" if r.variant == result.chosen else ""), f"{r.size_mb:.1f}",
                      f"{r.images_per_s_b1:.1f}", f"{r.images_per_s_b1 / torch_row.images_per_s_b1:.2f}",
                      f"{r.images_per_s_b32:.1f}", f"{r.images_per_s_b32 / torch_row.images_per_s_b32:.2f}",
                      f"{r.p_at_1:.3f}", f"{r.map_at_10:.3f}", f"{r.max_abs_diff:.4f}")
    out.print(table)
    out.print(f"runtime=auto will use [bold]{result.chosen}[/]: fastest at batch 32 with mAP@10 drop "
              f"≤ {result.threshold} vs torch fp32 (median of {result.rounds} interleaved rounds, "
              f"int8 calibrated on {result.n_calibration} other catalog images)")
