"""`lookalike train finetune` from the command line: the time budget's plan and what it cut are printed."""
from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from lookalike import Catalog
from lookalike.cli import app
from lookalike.cli.finetune import _command_started

from fakes import make_shapes_csv


def test_train_finetune_prints_the_budget_plan_and_the_runtime_check(tmp_path):
    cat = Catalog.create("shapes", home=tmp_path / "home")
    (tmp_path / "shapes").mkdir()
    cat.index(make_shapes_csv(tmp_path / "shapes", per_class=4, size=64), encoder="tiny")
    args = ["train", "finetune", "--catalog", "shapes", "--label", "colour", "--split-column", "split",
            "--blocks", "1", "--dim", "16", "--views", "2", "--size", "64", "--head-epochs", "0", "--epochs", "1",
            "--time-budget", "3m", "--name", "cli", "--home", str(cat.home)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((cat.home / "models" / "finetuned" / "cli" / "report.json").read_text())
    assert report["budget"]["budget"] == 180 and report["budget"]["epochs"] == 1
    assert "--time-budget 180 s: 1 epochs planned" in result.output
    assert f"runtime check planned on {report['budget']['runtime_items']} items" in result.output
    assert report["seconds"]["total"] <= 180


def test_the_budget_counts_from_the_process_start_only_for_a_fresh_process():
    started = _command_started()
    assert started is None or started <= time.time()
    assert _command_started(now=time.time() + 3600) is None   # a long-lived process: count from the call
