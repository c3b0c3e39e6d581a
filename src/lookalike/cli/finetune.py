"""Backbone fine-tuning: `lookalike train finetune` (on labels) and `lookalike train adapt`
(self-supervised, no labels). Both save a `finetuned:NAME` encoder."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lookalike.cli.app import (CatalogOption, DeviceOption, HoldoutOption, HomeOption, JsonOption, ModelNameOption,
                               SameLabelOption, SeedOption, SplitColumnOption, console, fail, fail_on, open_catalog,
                               out, print_json, scores_table, train_app)

_UNITS = {"s": 1, "m": 60, "h": 3600}
# Options finetune and adapt share.
EpochsOption = typer.Option(None, "--epochs", min=1, max=1000,
                            help="Epochs (default 6; with --time-budget the most, default as many as it affords).")
TimeBudgetOption = typer.Option(None, "--time-budget",
                                help="Whole run (caching, training, scoring, export) in e.g. 15m: sets the epochs.")
SizeOption = typer.Option(None, "--size", min=32, max=512,
                          help="Training resolution in pixels (default: the backbone's own, 224/240/260).")
BackboneOption = typer.Option("lite0", "--backbone", help="EfficientNet-Lite variant: lite0 | lite1 | lite2.")
ResumeOption = typer.Option(False, "--resume", help="Continue an interrupted run of this name from its last epoch.")


def _seconds(text: Optional[str]) -> Optional[float]:
    """'15m', '900s', '1.5h', '900' -> seconds; None stays None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        fail(f"--time-budget must look like 15m, 900s or 1h, not {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _blocks(text: str):
    if text.lower() == "all":
        return "all"
    if not text.isdigit():
        fail(f"--blocks must be a number of blocks or all, not {text!r}")
    return int(text)


def _command_started(now: float | None = None) -> float | None:
    """When this command started (a ``time.time()``), so --time-budget counts the interpreter's start
    and the imports too (a few seconds): the process's start time (Linux /proc). A process older than
    a minute did not start for this command (an in-process runner, e.g. tests): None, count from now."""
    now = time.time() if now is None else now
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return started if 0 <= now - started < 60 else None


def _run(catalog, home, label, json_out, kwargs, config_changes, adapt_run: bool):
    # torch loads in the commands that need it: ~8 s off `lookalike --help` (see cli/app.py)
    from dataclasses import replace

    from lookalike.train.finetune import FinetuneConfig, adapt, train_finetune

    cat = open_catalog(catalog, home)
    config = replace(FinetuneConfig(), **config_changes)
    kwargs = {**kwargs, "started": _command_started()}
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[scores]}")]
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int, scores: dict) -> None:
            if stage not in tasks:
                title = {"views": "augmented views", "held-out": "held-out views", "train": "epoch",
                         "check": "ONNX fp32 / int8 check"}[stage]
                tasks[stage] = bar.add_task(title, total=total, scores="")
            shown = "  ".join(f"{k} {scores[k]:.3f}" for k in ("loss", "val mAP@10", "mAP@10") if k in scores)
            if stage == "train":
                bar.update(tasks[stage], completed=done, total=total, scores=shown)
            else:
                bar.advance(tasks[stage], done)

        try:
            if adapt_run:
                report = adapt(cat, label, config=config, progress=progress, **kwargs)
            else:
                report = train_finetune(cat, label, config=config, progress=progress, **kwargs)
        except (ValueError, FileNotFoundError, LookupError, RuntimeError) as exc:
            fail_on(exc)
    if json_out:
        print_json(report.to_dict())
        return
    kept = ("the stage-1 head" if report.selected_epoch == 0 else f"epoch {report.selected_epoch}"
            if report.selected_epoch else f"{report.epochs} epochs")
    rows = [([f"pretrained effnet-{report.backbone}"], report.before), ([f"finetuned ({kept})"], report.after)]
    if report.reranked:
        rows.append(([f"  + {_served(report)}"], report.reranked))
    if report.runtimes and report.runtime_items < report.n_test:
        # the runtime check ran on a subset: its rows compare with torch on the same items only
        of = f"{report.runtime_items} of {report.n_test} items"
        rows += [([f"  runtime={k} ({of})"], v) for k, v in report.runtimes.items()]
    else:
        rows += [([f"  runtime={k}"], v) for k, v in report.runtimes.items() if k != "torch"]
    out.print(scores_table(f"finetuned:{report.name} — {report.protocol} ({report.n_test} items)", ["model"], rows))
    out.print(f"{report.n_train} training images; {report.seconds['total']:.0f} s "
              f"(views {report.seconds['cache']:.0f} s, training {report.seconds['train']:.0f} s)")
    if "epochs" in report.budget:
        plan = report.budget
        out.print(f"--time-budget {plan['budget']:.0f} s: {plan['epochs']} epochs planned, {plan['finishing']:.0f} s "
                  f"kept for choosing, scoring and export (runtime check planned on {plan['runtime_items']} items)")
    if report.expansion_scores:
        out.print(f"searches by default: {_served(report)} (best of {len(report.search_scores) or 1} x "
                  f"{len(report.expansion_scores)} settings on the {report.n_validation} validation items)")
    for note in report.notes:
        console.print(f"[yellow]{note}[/]")
    if report.skipped:
        console.print(f"[yellow]{len(report.skipped)} unreadable images skipped[/]")
    out.print(f"saved {report.path}\nuse it: lookalike index SOURCE --catalog {catalog} --encoder finetuned:{report.name}")


def _served(report) -> str:
    """'flip TTA, re-ranking qe=3' for the TTA and re-ranking a model serves by default."""
    parts = (["flip TTA (2 passes per image)"] if report.tta == "flip" else []) + (
        [f"re-ranking {report.expansion}"] if report.expansion != "none" else [])
    return ", ".join(parts) or "plain search"


@train_app.command("finetune")
def train_finetune_command(
    catalog: str = CatalogOption,
    label: str = SameLabelOption,
    split_column: Optional[str] = SplitColumnOption,
    holdout: float = HoldoutOption,
    blocks: str = typer.Option("3", "--blocks",
                               help="Trailing MBConv blocks to train (0-16 in lite0, 0-21 in lite1/2; 0 = head conv only), or all."),
    epochs: Optional[int] = EpochsOption,
    head_epochs: int = typer.Option(40, "--head-epochs", min=0, max=1000,
                                    help="Stage 1: epochs of the head alone on the frozen blocks' features (0: none)."),
    time_budget: Optional[str] = TimeBudgetOption,
    loss: str = typer.Option("triplet", "--loss",
                             help="proxy-anchor | normalized-softmax | arcface | triplet | multi-similarity, joined by +"),
    dim: int = typer.Option(64, "--dim", min=2, max=4096, help="Embedding size."),
    views: int = typer.Option(4, "--views", min=1, max=64,
                              help="Views cached per training image: centre crop, its mirror, then random square crops."),
    size: Optional[int] = SizeOption,
    backbone: str = BackboneOption,
    device: str = DeviceOption,
    name: Optional[str] = ModelNameOption,
    seed: int = SeedOption,
    resume: bool = ResumeOption,
    json_out: bool = JsonOption,
    home: Optional[Path] = HomeOption,
):
    """Fine-tune an EfficientNet-Lite's last blocks and a projection head on a label column."""
    changes = dict(blocks=_blocks(blocks), epochs=epochs, head_epochs=head_epochs, time_budget=_seconds(time_budget),
                   loss=loss, dim=dim, views=views, size=size, backbone=backbone, device=device, seed=seed)
    _run(catalog, home, label, json_out, dict(split_column=split_column, holdout=holdout, name=name, resume=resume),
         changes, adapt_run=False)


@train_app.command("adapt")
def train_adapt_command(
    catalog: str = CatalogOption,
    label: Optional[str] = typer.Option(None, "--label", help="Only to score the result (leave-one-out, same value)."),
    blocks: str = typer.Option("1", "--blocks", help="Trailing MBConv blocks to train (0-16), or all."),
    epochs: Optional[int] = EpochsOption,
    time_budget: Optional[str] = TimeBudgetOption,
    views: int = typer.Option(3, "--views", min=2, max=64, help="Augmented views cached per image (pairs are drawn)."),
    size: Optional[int] = SizeOption,
    backbone: str = BackboneOption,
    device: str = DeviceOption,
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default CATALOG-adapt)."),
    seed: int = SeedOption,
    resume: bool = ResumeOption,
    json_out: bool = JsonOption,
    home: Optional[Path] = HomeOption,
):
    """Adapt an EfficientNet-Lite to a catalog's own images without labels (SimCLR-style NT-Xent)."""
    changes = dict(blocks=_blocks(blocks), epochs=epochs, time_budget=_seconds(time_budget), views=views, size=size,
                   backbone=backbone, device=device, seed=seed)
    _run(catalog, home, label, json_out, dict(name=name, resume=resume), changes, adapt_run=True)
