"""`lookalike search` ranking options and `evaluate --group-by` through the CLI: output and exit codes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.cli import app

from fakes import vector_catalog

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def shop(tmp_path):
    s = np.array([0.99, 0.9, 0.8, 0.7, 0.6, 0.5])
    meta = [{"price": p, "product_id": g, "in_stock": st}
            for p, g, st in zip(["5", "10", "60", "30", "45", "20"], "QAABBC", "001101")]
    vector_catalog(tmp_path, "shop", np.stack([s, np.sqrt(1 - s ** 2)], 1), ["x", "x", "x", "x", "y", "y"],
                   metadata=meta)
    return tmp_path


def test_search_options_in_json(shop):
    # query [1, 0] scores item i at s_i; item-0 (price 5) fails the filter
    result = run("search", "-c", "shop", "--home", shop, "--latent", "1,0", "-k", "2", "--json",
                 "--filter", "price>=10", "--boost", "in_stock=1:+0.25", "--group-by", "product_id")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["results"]
    # A: item-1 0.9, item-2 0.8 (in stock: 1.05) -> A's best is item-2; B: item-3 0.7+0.25, item-4 0.6
    assert [h["id"] for h in hits] == ["item-2", "item-3"]
    assert hits[0]["group"] == ["item-1"] and hits[0]["score_parts"]["boost:in_stock=1"] == 0.25
    assert hits[0]["score"] == pytest.approx(1.05, abs=1e-5)


def test_search_table_shows_why(shop):
    result = run("search", "-c", "shop", "--home", shop, "--item", "item-0", "-k", "2", "--pin", "item-5",
                 "--group-by", "product_id")
    assert result.exit_code == 0, result.output
    assert "why (score parts)" in result.stdout and "pinned" in result.stdout and "product images" in result.stdout


@pytest.mark.parametrize("args, words", [
    (["--filter", "size<3"], "unknown column 'size'"),
    (["--filter", "product_id<3"], "numeric columns are: in_stock, price"),
    (["--filter", "price<cheap"], "needs a number"),
    (["--boost", "in_stock=1"], "CONDITION:WEIGHT"),
    (["--recency", "added"], "COLUMN:HALF_LIFE:WEIGHT"),
    (["--group-by", "style"], "unknown column 'style'"),
])
def test_bad_ranking_options_exit_2(shop, args, words):
    result = run("search", "-c", "shop", "--home", shop, "--item", "item-0", *args)
    assert result.exit_code == 2 and words in result.output.replace("\n", " "), result.output


def test_evaluate_group_by(shop):
    result = run("evaluate", "-c", "shop", "--home", shop, "-k", "1", "--group-by", "product_id", "--json",
                 "--rerank", "none")
    assert result.exit_code == 0, result.output
    report = next(iter(json.loads(result.stdout).values()))
    assert report["level"] == "product" and report["n_products"] == 4 and report["group_by"] == "product_id"
    assert run("evaluate", "-c", "shop", "--home", shop, "--group-by", "nope").exit_code == 2
