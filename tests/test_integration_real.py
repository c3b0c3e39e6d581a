"""Index -> search -> evaluate on a real slice of clothing-small (its 372-image test split).

Floors were measured on this exact slice (see docs/encoders.md) and set a little below, so the
test fails on a real regression, not on noise: the evaluation itself is deterministic.
"""
from __future__ import annotations

import csv

import pytest

from lookalike.catalog import Catalog
from lookalike.config import DEFAULT_ENCODER

pytestmark = pytest.mark.integration

# Measured on the 372 test images (leave-one-out, relevance = same label).
DEFAULT_MAP10_FLOOR = 0.55     # effnet-lite0-colour (the default) measured 0.583; effnet-lite0 0.610
BASELINE_MAP10_CEILING = 0.20  # colour-hist measured 0.126


@pytest.fixture(scope="module")
def test_split_catalog(clothing_small, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    source = tmp_path_factory.mktemp("src") / "test-split.csv"
    with open(clothing_small / "catalog.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    with open(source, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image", "label", "split"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "image": str(clothing_small / r["image"])})
    cat = Catalog.create("real", home=home)
    for encoder in (DEFAULT_ENCODER, "colour-hist"):
        report = cat.index(source, encoder)
        assert report.failed == 0 and report.embedded == len(rows)
    return cat, rows


def test_default_encoder_beats_baseline_and_floor(test_split_catalog):
    cat, rows = test_split_catalog
    default = cat.evaluate(labels=["label"], ks=(1, 5, 10), encoder=DEFAULT_ENCODER)
    baseline = cat.evaluate(labels=["label"], ks=(1, 5, 10), encoder="colour-hist")
    assert default.n_queries == len(rows)
    assert default.overall["mAP@10"] >= DEFAULT_MAP10_FLOOR
    assert baseline.overall["mAP@10"] <= BASELINE_MAP10_CEILING
    assert default.overall["mAP@10"] > baseline.overall["mAP@10"] + 0.2
    assert default.overall["P@1"] > baseline.overall["P@1"]


def test_search_on_real_photos(test_split_catalog):
    cat, rows = test_split_catalog
    shoes = [r["id"] for r in rows if r["label"] == "shoes"]
    results = cat.search(item=shoes[0], k=10)
    assert shoes[0] not in [r.id for r in results]
    assert sum(r.label == "shoes" for r in results) >= 7  # shoes are the easiest class
    filtered = cat.search(item=shoes[0], k=5, where={"label": "dress"})
    assert len(filtered) == 5 and {r.label for r in filtered} == {"dress"}
