"""`lookalike search` steering through the CLI: --item A --item B:0.5 --not C, --combine, --diversity,
--collapse-duplicates, and the "no close match" line; hand-computed on a 2-d vector catalog."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.cli import app

from fakes import vector_catalog

runner = CliRunner()
ANGLES = [0, 4, 30, 60, 90, 120, 180]   # degrees; item-0 and item-1 are near duplicates (cos 4° = 0.998)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def plane(tmp_path):
    a = np.radians(ANGLES)
    vector_catalog(tmp_path, "plane", np.stack([np.cos(a), np.sin(a)], 1), ["x"] * len(ANGLES))
    return tmp_path


def ids(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [h["id"] for h in json.loads(result.stdout)["results"]]


def test_examples_move_the_query(plane):
    # item-2 (30°) alone: 4° is 26° away, the nearest
    assert ids(run("search", "-c", "plane", "--home", plane, "--item", "item-2", "-k", "2", "--json"))[0] == "item-1"
    # 30° + 90°: Rocchio mean at 60° -> item-3 (60°) first; the examples are never returned
    got = ids(run("search", "-c", "plane", "--home", plane, "--item", "item-2", "--item", "item-4", "-k", "3", "--json"))
    assert got[0] == "item-3" and {"item-2", "item-4"}.isdisjoint(got)
    # 30° + 0.5·90° − 1·180°: q ∝ (cos30 + 1, sin30 + 0.5) = (1.866, 1) at 28.2°: 4° (24.2° away) and
    # 0° (28.2°) come before 60° (31.8°)
    got = ids(run("search", "-c", "plane", "--home", plane, "--item", "item-2", "--item", "item-4:0.5",
                  "--not", "item-6:1", "-k", "3", "--json"))
    assert got == ["item-1", "item-0", "item-3"]
    # a bare --not weighs 0.5: q ∝ (cos30 + 0.5, sin30 + 0.5) = (1.366, 1) at 36.2°: 60° (23.8° away),
    # then 4° (32.2°), then 0° (36.2°)
    got = ids(run("search", "-c", "plane", "--home", plane, "--item", "item-2", "--item", "item-4:0.5",
                  "--not", "item-6", "-k", "3", "--json"))
    assert got == ["item-3", "item-1", "item-0"]
    # best-score fusion of 30° and 90°: 4° scores max(cos26, cos86) = 0.899; 0°, 60°, 120° all 0.866
    fused = ids(run("search", "-c", "plane", "--home", plane, "--item", "item-2", "--item", "item-4",
                    "--combine", "max", "-k", "4", "--json"))
    assert fused[0] == "item-1" and set(fused[1:]) == {"item-0", "item-3", "item-5"}


def test_collapse_and_diversity(plane):
    got = run("search", "-c", "plane", "--home", plane, "--latent", "1,0", "-k", "3", "--collapse-duplicates", "--json")
    hits = json.loads(got.stdout)["results"]
    assert [h["id"] for h in hits] == ["item-0", "item-2", "item-3"] and hits[0]["duplicates"] == ["item-1"]
    table = run("search", "-c", "plane", "--home", plane, "--latent", "1,0", "-k", "3", "--collapse-duplicates")
    assert table.exit_code == 0 and "duplicates" in table.stdout
    plain = ids(run("search", "-c", "plane", "--home", plane, "--latent", "1,0", "-k", "2", "--json"))
    # MMR over the best 2k = 4 (0°, 4°, 30°, 60°); the query is item-0's vector, so after it each
    # candidate scores 0.4·cos − 0.6·cos: the least similar of the pool, 60°, comes second
    diverse = ids(run("search", "-c", "plane", "--home", plane, "--latent", "1,0", "-k", "2", "--diversity", "0.6", "--json"))
    assert plain == ["item-0", "item-1"] and diverse == ["item-0", "item-3"]


def test_no_close_match_is_said(plane):
    result = run("search", "-c", "plane", "--home", plane, "--latent", "-0.2,-1", "-k", "2")
    assert result.exit_code == 0 and "no close match" in result.stdout and "weak" in result.stdout
    data = json.loads(run("search", "-c", "plane", "--home", plane, "--latent", "-0.2,-1", "-k", "2", "--json").stdout)
    assert data["no_close_match"] is True and all(h["weak"] for h in data["results"])
    assert "no close match" not in run("search", "-c", "plane", "--home", plane, "--latent", "1,0.05").stdout


@pytest.mark.parametrize("args,message", [
    (["--item", "item-2:0"], "positive weight"),
    (["--not", "item-2"], "exactly one"),
    (["--item", "item-2", "--diversity", "1.5"], "Invalid value"),
    (["--item", "item-2", "--item", "item-3", "--combine", "median"], "combine"),
    (["--item", "item-2", "--item", "nope"], "unknown item"),
])
def test_steering_errors(plane, args, message):
    result = run("search", "-c", "plane", "--home", plane, *args)
    assert result.exit_code != 0 and message in result.output
