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
from lookalike.train.finetune import FinetuneConfig, Finetuned, adapt, train_finetune
from lookalike.train.losses import make_pml_loss

from fakes import make_shapes_csv

# 1 trained block at 64 px, 2 views: a few seconds on one core
TINY = FinetuneConfig(blocks=1, dim=16, epochs=4, views=2, size=64, classes_per_batch=3, per_class=4,
                      batch_size=16, head_lr=5e-3, lr=1e-4, head_epochs=10)


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
    assert report.n_train == 36 and report.n_test == 18 and report.epochs == 4
    assert report.history[-1] < report.history[0] and report.head_history == [] and report.head_stage == {}
    assert set(report.before) >= {"P@1", "mAP@10"} and set(report.after) >= {"P@1", "mAP@10"}
    assert len(report.scores) == 4 and all("mAP@10" in s for s in report.scores)
    folder = cat.home / "models" / "finetuned" / "colours"
    assert {"config.json", "weights.pt", "report.json", "loss.png"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "checkpoint.pt").exists()  # removed once the run finished
    assert json.loads((folder / "report.json").read_text())["after"] == report.after
    # the torch model scored on the full pipeline agrees with the cached-activation evaluation
    assert report.runtimes["torch"]["mAP@10"] == pytest.approx(report.after["mAP@10"], abs=0.02)  # fp16 cache


def test_onnx_variants_are_exported_and_int8_is_close(trained):
    _, report = trained
    pytest.importorskip("onnxruntime")
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
