"""Catalog: ingest (folder + CSV), validation report, incremental re-index, prune, search semantics."""
from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lookalike.catalog import Catalog, CatalogNotFound, ItemNotFound, UnknownColumn, catalog_counts
from lookalike.data.sources import SourceError

from fakes import stored_vector

FAST = "colour-hist"


def write_csv(path, rows, header=("id", "image", "label", "colour")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def folder_catalog(shapes_catalog):
    return shapes_catalog  # the shapes folder indexed with FAST (conftest)


def test_catalog_counts_lists_every_catalog_with_its_size(home, shapes_folder):
    assert catalog_counts(home) == {}
    Catalog.create("empty", home=home)
    Catalog.create("shapes", home=home).index(shapes_folder, encoder="colour-hist")
    counts = catalog_counts(home)
    assert list(counts) == ["empty", "shapes"] and counts["empty"] == 0
    assert counts["shapes"] == len(Catalog.open("shapes", home=home)) > 0


def test_vector_search_rejects_nan_and_inf(home, shapes_folder):
    cat = Catalog.create("shapes", home=home)
    cat.index(shapes_folder, encoder="colour-hist")
    dim = cat.encoder_info()["dim"]
    for bad in (np.nan, np.inf):
        vector = np.zeros(dim, np.float32)
        vector[0] = bad
        with pytest.raises(ValueError, match="finite"):
            cat.search(vector=vector)
    assert len(cat.search(vector=np.ones(dim, np.float32), k=2)) == 2


def test_open_missing_catalog_says_how_to_create(home):
    with pytest.raises(CatalogNotFound, match="lookalike index"):
        Catalog.open("nothing", home=home)


@pytest.mark.parametrize("name", ["", "../evil", ".hidden", "a/b", "x" * 70])
def test_catalog_names_are_checked(home, name):
    with pytest.raises(ValueError):
        Catalog.create(name, home=home)


def test_folder_ingest_labels_from_subfolders(folder_catalog):
    assert len(folder_catalog) == 54
    labels = dict(folder_catalog.label_values())
    assert len(labels) == 9 and set(labels.values()) == {6}
    item = folder_catalog.get("circle-red/circle-red-0")
    assert item.label == "circle-red" and item.width == 96


def test_search_excludes_query_and_finds_same_class(folder_catalog):
    results = folder_catalog.search(item="circle-red/circle-red-0", k=5)
    assert len(results) == 5
    assert "circle-red/circle-red-0" not in [r.id for r in results]
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert results[0].label.endswith("red")  # colour histogram: same colour first
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)


def test_search_by_image_bytes_path_and_vector(folder_catalog, shapes_folder):
    path = shapes_folder / "square-blue" / "square-blue-1.png"
    by_path = folder_catalog.search(image=path, k=3)
    by_bytes = folder_catalog.search(image=path.read_bytes(), k=3)
    assert [r.id for r in by_path] == [r.id for r in by_bytes]
    assert by_path[0].id == "square-blue/square-blue-1" and by_path[0].score == pytest.approx(1.0, abs=1e-5)
    _, matrix = folder_catalog.vectors()
    by_vector = folder_catalog.search(vector=matrix[0], k=1)
    assert by_vector[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="expects"):
        folder_catalog.search(vector=np.zeros(3), k=1)
    with pytest.raises(ValueError, match="exactly one"):
        folder_catalog.search(k=1)


def test_where_filter_returns_k_matches_only(folder_catalog):
    results = folder_catalog.search(item="circle-red/circle-red-0", k=5, where={"label": "triangle-green"})
    assert len(results) == 5 and {r.label for r in results} == {"triangle-green"}
    several = folder_catalog.search(item="circle-red/circle-red-0", k=20, where={"label": ["square-blue", "circle-green"]})
    assert {r.label for r in several} == {"square-blue", "circle-green"} and len(several) == 12
    assert folder_catalog.search(item="circle-red/circle-red-0", k=5, where={"label": "nope"}) == []


def test_min_score_returns_nothing_rather_than_junk(folder_catalog):
    strict = folder_catalog.search(item="circle-red/circle-red-0", k=50, min_score=0.999999)
    loose = folder_catalog.search(item="circle-red/circle-red-0", k=50, min_score=-1.0)
    assert len(loose) == 50 and len(strict) < 50
    assert all(r.score >= 0.999999 for r in strict)


def test_metrics_cosine_l2_l1(folder_catalog):
    for metric in ("cosine", "l2", "l1"):
        results = folder_catalog.search(item="square-green/square-green-2", k=5, metric=metric)
        distances = [r.distance for r in results]
        assert distances == sorted(distances)
        assert all(0 < r.score <= 1.0 + 1e-6 for r in results)
    ids, matrix = folder_catalog.vectors()
    q = matrix[ids.index("square-green/square-green-2")]
    l1 = folder_catalog.search(item="square-green/square-green-2", k=1, metric="l1")[0]
    assert l1.distance == pytest.approx(np.abs(matrix[ids.index(l1.id)] - q).sum(), rel=1e-4)


def test_unknown_item_and_encoder(folder_catalog):
    with pytest.raises(ItemNotFound):
        folder_catalog.search(item="nope", k=3)
    with pytest.raises(LookupError, match="no vectors"):
        folder_catalog.search(item="circle-red/circle-red-0", k=3, encoder="tiny")


def test_csv_metadata_and_bad_rows_report(home, tmp_path, shapes_folder):
    good = shapes_folder / "circle-red" / "circle-red-0.png"
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(_jpeg_bytes()[:400])
    big = Image.new("L", (9000, 9000))
    big.save(tmp_path / "bomb.png")
    shutil.copy(good, tmp_path / "good.png")
    source = write_csv(tmp_path / "cat.csv", [
        ("a", "good.png", "circle", "red"),
        ("b", "missing.png", "circle", "red"),
        ("c", "empty.png", "circle", "red"),
        ("d", "notes.png", "circle", "red"),
        ("e", "cut.jpg", "circle", "red"),
        ("f", "bomb.png", "circle", "red"),
        ("a", str(good), "circle", "red"),   # duplicate id
        ("", "good.png", "circle", "red"),   # missing id
        ("h", "", "circle", "red"),          # missing image
        ("i", "good.png", "circle"),         # wrong field count
        ("j", str(good), "circle", "blue"),  # absolute path
    ])
    cat = Catalog.create("csv", home=home)
    report = cat.index(source, FAST)
    reasons = {(e.id, e.reason) for e in report.errors}
    assert {("b", "missing"), ("c", "empty"), ("d", "not_an_image"), ("e", "corrupt"), ("f", "too_large"),
            ("a", "duplicate_id"), ("h", "missing_field")} <= reasons
    assert {e.reason for e in report.errors} >= {"bad_row"}
    assert report.added == 2 and len(cat) == 2
    assert cat.get("j").metadata == {"colour": "blue"} and cat.get("a").label == "circle"
    saved = json.loads(open(report.report_json).read())
    assert saved["failed"] == report.failed and saved["added"] == 2
    assert sum(1 for _ in open(report.report_csv)) == report.failed + 1
    assert cat.search(item="a", k=5, where={"colour": "blue"})[0].id == "j"


def test_incremental_reindex_skips_unchanged_and_reembeds_changed(home, tmp_path, shapes_folder):
    src = tmp_path / "src"
    shutil.copytree(shapes_folder / "circle-red", src / "circle-red")
    shutil.copytree(shapes_folder / "square-blue", src / "square-blue")
    cat = Catalog.create("inc", home=home)
    first = cat.index(src, FAST)
    assert first.added == 12
    again = cat.index(src, FAST)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 12)
    Image.new("RGB", (96, 96), (0, 255, 0)).save(src / "circle-red" / "circle-red-0.png")
    before = stored_vector(cat, "circle-red/circle-red-0", FAST)
    changed = cat.index(src, FAST)
    assert (changed.added, changed.updated, changed.unchanged) == (0, 1, 11)
    assert not np.allclose(before, stored_vector(cat, "circle-red/circle-red-0", FAST))
    (src / "square-blue" / "square-blue-3.png").unlink()
    kept = cat.index(src, FAST)
    assert len(cat) == 12 and kept.pruned == 0
    pruned = cat.index(src, FAST, prune=True)
    assert pruned.pruned == 1 and len(cat) == 11
    assert "square-blue/square-blue-3" not in [r.id for r in cat.search(item="square-blue/square-blue-0", k=20)]


def test_second_encoder_and_remove(folder_catalog, shapes_folder):
    folder_catalog.index(shapes_folder, "tiny")
    assert {e["name"] for e in folder_catalog.encoders()} == {FAST, "tiny"}
    assert folder_catalog.default_encoder == FAST
    assert folder_catalog.search(item="circle-red/circle-red-1", k=3, encoder="tiny")
    removed = folder_catalog.remove(["circle-red/circle-red-1", "nope"])
    assert removed == ["circle-red/circle-red-1"]
    assert len(folder_catalog.vectors("tiny")[0]) == 53
    hits = folder_catalog.search(item="circle-red/circle-red-2", k=60)
    assert len(hits) == 52


def test_unreadable_source_is_one_clear_error(home, tmp_path):
    cat = Catalog.create("x", home=home)
    with pytest.raises(SourceError, match="not found"):
        cat.index(tmp_path / "nowhere", FAST)
    (tmp_path / "noimg.csv").write_text("id,colour\n1,red\n")
    with pytest.raises(SourceError, match="image column"):
        cat.index(tmp_path / "noimg.csv", FAST)


def test_evaluate_leave_one_out(folder_catalog):
    report = folder_catalog.evaluate(labels=["label"], ks=(1, 5))
    assert report.n_queries == 54
    assert report.overall["P@1"] > 0.25  # chance is 5/53; a colour histogram matches colour, not shape


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((300, 300), 64).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


# -- the facade's read-outs (what API routes, the CLI and explore/shop use instead of the store) ----
def test_encoder_info_version_and_count(folder_catalog):
    info = folder_catalog.encoder_info()
    assert (info["name"], info["metric"]) == (FAST, "cosine") and info["dim"] == folder_catalog.vectors()[1].shape[1]
    assert folder_catalog.encoder_info("nope") is None and folder_catalog.version("nope") == "none"
    before = folder_catalog.version()
    assert before == folder_catalog.version(FAST) and before.endswith(":" + info["fingerprint"])
    assert folder_catalog.count() == 54 and folder_catalog.count({"label": ["circle-red", "square-blue"]}) == 12
    folder_catalog.remove(["circle-red/circle-red-0"])
    assert folder_catalog.version() != before and folder_catalog.count({"label": "circle-red"}) == 5


def test_vectors_with_metric(folder_catalog):
    spec, ids, matrix, metric = folder_catalog.vectors_with_metric()
    assert (spec, metric) == (FAST, folder_catalog.encoder_info()["metric"])
    assert ids == folder_catalog.vectors()[0] and matrix.shape == (54, folder_catalog.encoder_info()["dim"])
    with pytest.raises(LookupError, match=f"has: {FAST}"):
        folder_catalog.vectors_with_metric("tiny")


def test_metadata_columns(home, tmp_path, shapes_folder):
    good = shapes_folder / "circle-red" / "circle-red-0.png"
    source = write_csv(tmp_path / "cat.csv", [("a", str(good), "circle", "red")],
                       header=("id", "image", "label", "colour"))
    cat = Catalog.create("meta", home=home)
    assert cat.metadata_columns() == []
    cat.index(source, FAST)
    assert cat.metadata_columns() == ["colour"]


def test_unknown_column_is_an_error_naming_the_known_ones(home, tmp_path, shapes_folder):
    good = shapes_folder / "circle-red" / "circle-red-0.png"
    other = shapes_folder / "square-blue" / "square-blue-0.png"
    cat = Catalog.create("cols", home=home)
    cat.index(write_csv(tmp_path / "cat.csv", [("a", str(good), "circle", "red"), ("b", str(other), "square", "blue")]), FAST)
    assert cat.columns() == ["id", "label", "path", "colour"]
    assert [r.id for r in cat.search(item="a", where={"colour": "blue"})] == ["b"]
    asks = [lambda: cat.search(item="a", where={"color": "red"}), lambda: cat.items(where={"color": "red"}),
            lambda: cat.count({"color": ["red"]}), lambda: cat.evaluate(where={"color": "red"}),
            lambda: cat.evaluate(labels=["color"]), lambda: cat.labels("color")]
    for ask in asks:
        with pytest.raises(UnknownColumn) as err:
            ask()
        assert err.value.column == "color" and err.value.known == ["id", "label", "path", "colour"]
        assert str(err.value) == "unknown column 'color'; this catalog's columns are: id, label, path, colour"
    assert isinstance(err.value, ValueError)


def test_evaluate_with_nothing_to_measure_says_so(folder_catalog):
    with pytest.raises(ValueError, match="nothing to evaluate: none of the 6 labelled items has another item with the same id"):
        folder_catalog.evaluate(labels=["id"], where={"label": "circle-red"})


def test_k_past_the_catalog_returns_every_other_item(folder_catalog):
    results = folder_catalog.search(item="circle-red/circle-red-0", k=1000)
    assert len(results) == 53 and [r.rank for r in results] == list(range(1, 54))
    assert len(folder_catalog.search(item="circle-red/circle-red-0", k=1000, where={"label": "square-red"})) == 6


def test_reindex_embeds_the_last_source_with_another_encoder(home, folder_catalog, shapes_folder):
    assert folder_catalog.last_source["source"] == str(shapes_folder)
    report = folder_catalog.reindex("tiny")
    assert report.added == 0 and report.embedded == 54 and report.encoder == "tiny"
    assert len(folder_catalog.vectors("tiny")[0]) == 54
    empty = Catalog.create("empty", home=home)
    assert empty.last_source is None
    with pytest.raises(LookupError, match="no recorded source"):
        empty.reindex("tiny")


def test_thumbnail_is_cached_by_content_and_fits_the_size(home, tmp_path, shapes_folder):
    src = tmp_path / "src"
    shutil.copytree(shapes_folder / "circle-red", src / "circle-red")
    cat = Catalog.create("thumbs", home=home)
    cat.index(src, FAST)
    item = cat.get("circle-red/circle-red-0")
    path = cat.thumbnail(item.id, 64)
    with Image.open(path) as im:
        assert im.format == "JPEG" and max(im.size) == 64
        red, green, blue = im.convert("RGB").getpixel((32, 32))  # the circle's centre
        assert red > 150 and max(green, blue) < 110
    assert path.name == f"{item.sha256}.jpg" and [p.name for p in path.parent.iterdir()] == [path.name]
    stamp = path.stat().st_mtime_ns
    assert cat.thumbnail(item, 64) == path and path.stat().st_mtime_ns == stamp   # served from the cache
    (src / "circle-red" / "circle-red-1.png").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        cat.thumbnail("circle-red/circle-red-1", 64)
    with pytest.raises(ItemNotFound):
        cat.thumbnail("nope", 64)


def test_trained_model_prefers_catalog_named_then_newest(home):
    import os

    from lookalike.config import model_dir

    cat = Catalog.create("shop", home=home)
    assert cat.trained_model("vae") is None

    def fake(name, catalog, mtime, weights=True):
        folder = model_dir("vae", name, home)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"kind": "vae", "catalog": catalog}))
        if weights:
            (folder / "model.pt").write_bytes(b"w")
            os.utime(folder / "model.pt", (mtime, mtime))

    fake("old", "shop", 1_000)
    fake("other-catalog", "elsewhere", 9_000)
    fake("no-weights", "shop", 9_000, weights=False)
    assert cat.trained_model("vae") == "old"
    fake("newer", "shop", 2_000)
    assert cat.trained_model("vae") == "newer"
    fake("shop-vae", "shop", 500)  # the catalog's own name wins over a newer one
    assert cat.trained_model("vae") == "shop-vae"
    assert cat.trained_model("ae") is None


@pytest.mark.slow   # two int8 calibrations of EfficientNet-Lite0 (~1 min on 2 idle cores)
def test_int8_is_chosen_or_refused_by_its_measured_loss(tmp_path, shapes_folder, monkeypatch):
    """`index --int8 check` calibrates int8 on the catalog, keeps it when the mAP@10 loss is within the
    bar (fingerprint names the runtime and the calibrated file; queries use it too) and keeps fp32
    when not; the decision sticks for later runs."""
    pytest.importorskip("onnxruntime")
    from lookalike.evaluation import int8 as int8_check

    spec = "effnet-lite0"
    monkeypatch.setattr(int8_check, "INT8_MAX_LOSS", 1.0)      # any loss passes
    chosen = Catalog.create("chosen", home=tmp_path)
    stages, done = [], []
    report = chosen.index(shapes_folder, spec, int8="check", on_stage=lambda name, total: stages.append((name, total)),
                          on_progress=lambda n: done.append((len(stages), n)))
    assert report.failed == 0 and "int8 chosen" in report.runtime
    # long work shows progress: every stage announced with its size, and counted up to it
    assert [name for name, _ in stages] == ["int8: loading", "int8: calibrating", "int8: checking", "embedding"]
    for at, (name, total) in enumerate(stages[:3], start=1):
        assert sum(n for stage, n in done if stage == at) == total, name
    choice = chosen.runtime_choice(spec)
    assert choice["runtime"] == "onnx-int8" and choice["check"]["protocol"] == "labels"
    assert (chosen.dir / choice["int8_model"]).is_file()
    fingerprint = chosen.encoder_info(spec)["fingerprint"]
    assert "runtime=onnx-int8 int8=" in fingerprint
    assert chosen.encoder(spec).fingerprint() == fingerprint      # uploads embed with the same runtime
    item = chosen.items(limit=1)[0]
    np.testing.assert_allclose(chosen.embed_images([item.path])[0], chosen.vectors(spec)[1][0], atol=1e-5)

    monkeypatch.setattr(int8_check, "INT8_MAX_LOSS", -1.0)     # no loss passes
    refused = Catalog.create("refused", home=tmp_path)
    report = refused.index(shapes_folder, spec, int8="check")
    assert "int8 refused" in report.runtime and refused.runtime_choice(spec)["runtime"] == "onnx"
    assert "runtime=" not in refused.encoder_info(spec)["fingerprint"]
    assert refused.encoder_info(spec)["fingerprint"] != fingerprint

    again = chosen.index(shapes_folder, spec, int8="check")        # decided once: nothing re-embedded
    assert again.unchanged == len(chosen) and again.added == again.updated == 0

    small = Catalog.create("small", home=tmp_path)                 # auto: too few rows to pay off
    assert small.index(shapes_folder, spec).runtime == "" and small.runtime_choice(spec) is None


def test_warm_loads_the_query_encoder_and_survives_one_that_cannot_load(folder_catalog, monkeypatch):
    """A server's first upload search must not pay for loading the model (breaker finding: 3.3 s after
    /api/health/ready said ready); a catalog whose encoder cannot load here still warms its index."""
    embedded = []
    real = Catalog.embed_images
    monkeypatch.setattr(Catalog, "embed_images", lambda self, images, encoder=None: embedded.append(encoder)
                        or real(self, images, encoder))
    folder_catalog.warm()
    assert embedded == [folder_catalog.default_encoder]

    def broken(self, images, encoder=None):
        raise ImportError("no such runtime here")
    monkeypatch.setattr(Catalog, "embed_images", broken)
    folder_catalog.warm()  # no error: item-to-item search does not need the encoder
    assert folder_catalog.search(item=folder_catalog.items(limit=1)[0].id, k=2)
