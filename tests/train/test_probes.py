"""Attribute probes: training report, save/load round trip, prediction on a new image, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike import Catalog
from lookalike.catalog import UnknownColumn
from lookalike.train.probes import Probe, ProbeConfig, load_probe, split_items

from fakes import COLOURS, draw_shape, make_shapes_csv


@pytest.fixture
def shapes_csv(tmp_path):
    return make_shapes_csv(tmp_path)


@pytest.fixture
def catalog(home, shapes_csv):
    cat = Catalog.create("shapes", home=home)
    cat.index(shapes_csv, encoder="tiny")
    return cat


def test_probe_scores_saves_and_round_trips(catalog):
    report = catalog.train_probe("colour", holdout=0.3)
    assert report.n_train + report.n_test == 54 and report.n_test == 15  # round(18 * 0.3) per colour
    assert report.accuracy > 0.9  # colour from 32x32 pixels is easy
    assert set(report.classes) == set(COLOURS) and set(report.per_class) == set(COLOURS)
    probe = load_probe(report.name, catalog.home)
    assert probe.name == "shapes-colour" and probe.label == "colour" and probe.encoder == "tiny"
    _, vectors = catalog.vectors("tiny")
    values, probabilities = probe.predict(vectors)
    assert probabilities.shape == (54, 3) and np.allclose(probabilities.sum(1), 1)
    labels = catalog.labels("colour", "tiny")
    assert np.mean(np.array(values) == np.array(labels)) > 0.95


def test_predict_attribute_of_a_new_image(catalog):
    catalog.train_probe("colour", name="colour-probe")
    image = draw_shape("square", COLOURS["green"], 64, seed=999)
    value, probabilities = catalog.predict_attribute("colour-probe", image)
    assert value == "green" and probabilities["green"] == max(probabilities.values())


def test_split_column_is_respected(catalog):
    report = catalog.train_probe("label", split_column="split")
    assert (report.n_train, report.n_test) == (36, 18)


def test_bad_requests_are_clear_errors(catalog, tmp_path):
    with pytest.raises(UnknownColumn, match="unknown column 'no_such_column'.*colour"):
        catalog.train_probe("no_such_column")
    _, vectors = catalog.vectors("tiny")
    with pytest.raises(ValueError, match="fewer than 4"):
        Probe(ProbeConfig(label="colour", encoder="tiny")).fit(vectors[:3], ["red", "green", "blue"])
    with pytest.raises(FileNotFoundError, match="no probe named"):
        load_probe("missing", catalog.home)
    with pytest.raises(ValueError, match="holdout"):
        split_items(["a", "b"], 1.5, None, 0)


def test_cli_train_probe(catalog, home):
    from typer.testing import CliRunner

    from lookalike.cli import app

    result = CliRunner().invoke(app, ["train", "probe", "--catalog", "shapes", "--label", "colour", "--json"])
    assert result.exit_code == 0, result.output
    assert '"accuracy"' in result.output
    result = CliRunner().invoke(app, ["train", "probe", "--catalog", "nope", "--label", "colour"])
    assert result.exit_code != 0 and "not found" in result.output
