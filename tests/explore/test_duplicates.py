"""Near-duplicates: pairs within a threshold, transitive groups, exact copies, generated copies
caught, the phash baseline, and the CLI's JSON/CSV/PNG output."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.explore import duplicates as dup
from lookalike.encoders import get_encoder

from fakes import centre_colour, same_colour, tile_boxes


def blob(seed: int, size=(160, 128)) -> Image.Image:
    """A smooth random colour field: every seed gives a clearly different image."""
    cells = np.random.default_rng(seed).uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    return Image.fromarray(cells).resize(size, Image.BICUBIC)


def test_embedding_pairs_respect_the_threshold():
    v = np.array([[1, 0], [np.cos(0.1), np.sin(0.1)], [0, 1]], np.float32)
    pairs = dup.embedding_pairs(v, threshold=0.01, metric="cosine")   # 1 - cos(0.1) = 0.005
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(1 - np.cos(0.1), abs=1e-5)
    assert dup.embedding_pairs(v, threshold=0.001) == []


def test_groups_are_transitive_and_exact_copies_found_by_hash():
    groups = dup.group_pairs(6, [(0, 1, 0.1), (1, 2, 0.2), (4, 5, 0.0)], keys=["a", "b", "c", "d", "e", "e"])
    assert [g.rows for g in groups] == [[0, 1, 2], [4, 5]]
    assert [g.exact for g in groups] == [False, True] and groups[0].max_distance == pytest.approx(0.2)
    assert dup.exact_pairs(["x", "y", "x", "", "", "x"]) == [(0, 2, 0.0), (0, 5, 0.0)]


def test_hash_pairs_use_hamming_distance():
    codes = np.zeros((3, 8), np.uint8)
    codes[1, 0] = 0b111        # 3 bits from row 0
    codes[2] = 255             # 64 bits from row 0
    pairs = dup.hash_pairs(codes, max_bits=3)
    assert [(i, j, d) for i, j, d in pairs] == [(0, 1, 3.0)]
    assert dup.hash_pairs(codes, max_bits=2) == []


def test_finder_catches_generated_copies():
    encoder = get_encoder("tiny")
    originals = [blob(s) for s in range(30)]
    rng = np.random.default_rng(0)
    kinds = ["resize", "jpeg", "recolour", "crop"]
    copies = [dup.augment(originals[i], kinds[i % 4], rng) for i in range(12)]
    vectors = encoder.encode(originals + copies)
    groups = dup.find_duplicates(vectors, threshold=10.0, metric="l2")  # copies <= 7, distinct >= 14
    found = {tuple(sorted(g.rows)) for g in groups}
    assert found == {(i, 30 + i) for i in range(12)}


def test_evaluation_scores_both_methods_on_held_out_copies(tmp_path):
    encoder = get_encoder("tiny")
    paths = []
    for s in range(40):
        paths.append(str(tmp_path / f"{s}.png"))
        blob(s).save(paths[-1])
    vectors = encoder.encode([Image.open(p).convert("RGB") for p in paths])
    report = dup.evaluate_on_copies(vectors, paths, encoder.encode, n_copies=20, metric="l2",
                                    embedding_thresholds=(1.0, 2.0, 4.0, 8.0))
    assert report["copies"] == 20 and report["held_out_copies"] == 10
    for method in ("embedding", "phash", "both"):
        held = report["methods"][method]["held_out"]
        assert held["true_pairs"] == 10 and 0 <= held["precision"] <= 1
    assert report["methods"]["embedding"]["held_out"]["recall"] >= 0.7
    # a 64-bit DCT hash of the whole frame does not survive cropping
    assert report["methods"]["phash"]["recall_by_augmentation"]["crop"] == 0.0
    # the union finds everything either method finds
    assert report["methods"]["both"]["held_out"]["recall"] >= max(report["methods"][m]["held_out"]["recall"]
                                                                  for m in ("embedding", "phash"))


def test_score_groups_counts_only_pairs_with_a_copy():
    groups = dup.group_pairs(5, [(0, 3, 0.0), (1, 2, 0.0), (1, 4, 0.0)])
    # originals 0..2; copy 0 (row 3) of original 0, copy 1 (row 4) of original 2
    score = dup.score_groups(groups, n_originals=3, copy_sources=[0, 2])
    assert score["true_pairs"] == 2 and score["original_pairs"] == 1
    # predicted copy pairs: (0,3) right, (1,4) wrong, (2,4) right
    assert score["precision"] == pytest.approx(2 / 3) and score["recall"] == pytest.approx(1.0)


def test_cli_writes_groups_json_csv_and_pngs(home, tmp_path):
    from lookalike.cli import app

    folder = tmp_path / "imgs" / "all"
    folder.mkdir(parents=True)
    for s in range(10):
        blob(s).save(folder / f"item{s}.png")
    shutil.copy(folder / "item0.png", folder / "exact-copy.png")
    blob(3).resize((80, 64)).save(folder / "small-copy.png")
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(tmp_path / "imgs"), "--catalog", "dups", "--encoder", "tiny"]).exit_code == 0
    result = runner.invoke(app, ["duplicates", "--catalog", "dups", "--threshold", "1.5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    groups = {frozenset(m["id"].split("/")[-1] for m in g["items"]): g for g in summary["top_groups"]}
    assert groups[frozenset({"item0", "exact-copy"})]["exact"] is True
    assert frozenset({"item3", "small-copy"}) in groups and summary["groups"] == 2
    out = json.loads((home / "catalogs" / "dups" / "artifacts" / "duplicates" / "tiny" / "groups.json").read_text())
    assert len(out["duplicate_groups"]) == 2
    for group in out["duplicate_groups"]:  # one tile per member, each showing that member's image
        tiles = tile_boxes(group["png"])
        assert len(tiles) == len(group["items"]) == 2, tiles
        for box, member in zip(tiles, group["items"]):
            image = tmp_path / "imgs" / f"{member['id']}.png"
            assert same_colour(centre_colour(group["png"], box), centre_colour(image), 12), member
    csv = (home / "catalogs" / "dups" / "artifacts" / "duplicates" / "tiny" / "groups.csv").read_text().splitlines()
    assert csv[0].startswith("group,size") and len(csv) == 5
    phash = runner.invoke(app, ["duplicates", "--catalog", "dups", "--method", "both", "--phash-bits", "10", "--json"])
    assert phash.exit_code == 0, phash.output
    assert json.loads(phash.stdout)["groups"] >= 2
    assert runner.invoke(app, ["duplicates", "--catalog", "dups", "--method", "phash"]).exit_code == 0
    bad = runner.invoke(app, ["duplicates", "--catalog", "dups", "--method", "md5"])
    assert bad.exit_code == 1 and "unknown --method" in bad.output


def test_outputs_go_through_the_one_artifact_helper(home, tmp_path, monkeypatch):
    """groups.* and evaluation.json land in ``train.base.artifact_dir(cat.dir, "duplicates")``, not in
    a folder spelled out here: moving the helper's folder moves them."""
    from lookalike import Catalog

    folder = tmp_path / "imgs" / "all"
    folder.mkdir(parents=True)
    for s in range(4):
        blob(s).save(folder / f"item{s}.png")
    shutil.copy(folder / "item0.png", folder / "exact-copy.png")
    cat = Catalog.open("dups2", create=True)
    cat.index(str(tmp_path / "imgs"), encoder="tiny")
    asked = []
    monkeypatch.setattr(dup, "artifact_dir", lambda catalog_dir, kind: asked.append(kind) or tmp_path / "moved" / kind)
    summary = dup.catalog_duplicates(cat, "tiny", threshold=1.5)
    assert summary["folder"] == str(tmp_path / "moved" / "duplicates" / "tiny")
    assert (tmp_path / "moved" / "duplicates" / "tiny" / "groups.json").is_file()
    report = dup.evaluate_catalog(cat, "tiny", n_copies=4)
    assert report["report"] == str(tmp_path / "moved" / "duplicates" / "evaluation.json")
    assert asked == ["duplicates", "duplicates"] and not (cat.dir / "artifacts" / "duplicates").exists()


def test_choose_threshold_prefers_precision():
    rows = [{"threshold": 1, "precision": 1.0, "recall": 0.5, "f1": 0.667},
            {"threshold": 2, "precision": 0.96, "recall": 0.7, "f1": 0.81},
            {"threshold": 3, "precision": 0.8, "recall": 0.9, "f1": 0.847}]
    assert dup.choose_threshold(rows) == 2
    assert dup.choose_threshold(rows[2:]) == 3   # nothing precise enough: best F1
