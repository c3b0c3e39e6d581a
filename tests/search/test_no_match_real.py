"""The "no close match" threshold on real photos: a catalog of clothing-small's test split (default
encoder) flags generated off-domain images (landscapes, noise, blank, faces, text, patterns) and
lets held-out real photos of its kind (the validation split) through."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from lookalike.bench.studies.steering import offdomain_images
from lookalike.catalog import Catalog
from lookalike.config import DEFAULT_ENCODER
from lookalike.data.images import open_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rows(clothing_small, split):
    with open(clothing_small / "catalog.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


@pytest.fixture(scope="module")
def real_catalog(clothing_small, tmp_path_factory):
    home = tmp_path_factory.mktemp("no-match-home")
    source = tmp_path_factory.mktemp("src") / "test-split.csv"
    with open(source, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image", "label"])
        writer.writeheader()
        for r in _rows(clothing_small, "test"):
            writer.writerow({"id": r["id"], "image": str(clothing_small / r["image"]), "label": r["label"]})
    cat = Catalog.create("real", home=home)
    assert cat.index(source, DEFAULT_ENCODER).failed == 0
    return cat


def _flagged(cat, images) -> float:
    vectors = cat.embed_images(images)
    return float(np.mean([cat.search(vector=v, k=3)[0].weak for v in vectors]))


def test_off_domain_flagged_and_real_photos_not(real_catalog, clothing_small):
    threshold = real_catalog.match_threshold()
    assert threshold.method == "labelled" and threshold.version == real_catalog.version()
    off, _ = offdomain_images(per_kind=8, seed=3)
    held_out = [open_image(clothing_small / r["image"]) for r in _rows(clothing_small, "validation")[::4]]
    assert _flagged(real_catalog, off) >= 0.9
    # measured 8.1% (7 of 86): a 372-item catalog has few close neighbours, so held-out photos fall
    # below its 2% quantile more often; against the 3,409-item train + validation catalog the test
    # photos are flagged 3.0% (README, bench study steering)
    assert _flagged(real_catalog, held_out) <= 0.10
