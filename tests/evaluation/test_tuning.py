"""lookalike tune (evaluation.tuning + Catalog.tune): spec arithmetic, and on generated catalogs
the clearly better option wins and is recorded as the catalog's default without re-embedding."""
import numpy as np
import pytest
from typer.testing import CliRunner

from fakes import vector_catalog
from lookalike.cli import app
from lookalike.encoders.colour import COLOUR_DIM, fuse_parts, split_fused
from lookalike.evaluation.tuning import colour_weight, tune_options, variant_spec
from lookalike.search.expansion import Expansion


def test_variant_spec():
    assert variant_spec("effnet-lite0-colour", 0.0, "none") == "effnet-lite0"
    assert variant_spec("effnet-lite0", 0.2, "none") == "effnet-lite0-colour"
    assert variant_spec("effnet-lite0-colour", 0.3, "fg") == "effnet-lite0-colour:0.3,crop=fg"
    assert variant_spec("effnet-lite0-colour:0.3,crop=fg", 0.0, "none") == "effnet-lite0"
    assert variant_spec("effnet-lite0:runtime=torch", 0.1, "none") == "effnet-lite0-colour:0.1,runtime=torch"
    assert variant_spec("effnet-lite0-colour:/w.pth", 0.1, "none") == "effnet-lite0-colour:/w.pth,colour=0.1"
    with pytest.raises(ValueError):
        variant_spec("colour-hist", 0.1, "none")


@pytest.mark.parametrize("spec,weight", [("effnet-lite0", 0.0), ("effnet-lite0-colour", 0.2),
                                         ("effnet-lite0-colour:0.1", 0.1), ("effnet-lite0:colour=0.3", 0.3),
                                         ("effnet-lite0-colour:0.1,crop=fg", 0.1), ("colour-hist", None)])
def test_colour_weight_from_the_spec(spec, weight):
    from lookalike.encoders import get_encoder

    assert colour_weight(spec) == weight
    if weight is not None and spec in ("effnet-lite0", "effnet-lite0-colour:0.1"):
        assert get_encoder(spec).colour == pytest.approx(weight)


def test_fuse_and_split_are_inverse():
    rng = np.random.default_rng(0)
    cnn, colour = rng.normal(size=(5, 12)), rng.random(size=(5, COLOUR_DIM))
    fused = fuse_parts(cnn, colour, 0.3)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1, atol=1e-5)
    back_cnn, back_colour = split_fused(fused, 0.3)
    np.testing.assert_allclose(fuse_parts(back_cnn, back_colour, 0.1), fuse_parts(cnn, colour, 0.1), atol=1e-5)
    # cosine of fused vectors = (1-w) cos_cnn + w cos_colour
    u = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expect = 0.7 * (u(cnn) @ u(cnn).T) + 0.3 * (u(colour) @ u(colour).T)
    np.testing.assert_allclose(fused @ fused.T, expect, atol=1e-5)
    assert split_fused(fused[:, :12], 0.0)[1] is None


def parts_where_colour_tells(n_per=12, labels=("a", "b", "c", "d"), seed=0):
    """CNN part: pure noise; colour part: one colour per label plus noise -> colour decides."""
    rng = np.random.default_rng(seed)
    names = [label for label in labels for _ in range(n_per)]
    cnn = rng.normal(size=(len(names), 1280))
    centres = rng.random(size=(len(labels), COLOUR_DIM))
    colour = np.repeat(centres, n_per, axis=0) + 0.05 * rng.random(size=(len(names), COLOUR_DIM))
    return cnn, colour, names


def test_tune_options_prefers_the_informative_part():
    cnn, colour, names = parts_where_colour_tells()
    report = tune_options({"none": (cnn, colour)}, names, base="effnet-lite0-colour", weights=(0.0, 0.3),
                          expansions=("none",))
    assert [r.encoder for r in report.rows] == ["effnet-lite0", "effnet-lite0-colour:0.3"]
    assert report.best.encoder == "effnet-lite0-colour:0.3"
    assert report.best.metrics["mAP@10"] > report.rows[0].metrics["mAP@10"] + 0.3


def test_tune_options_without_parts_tries_reranking_only():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 16))
    vectors = np.repeat(centres, 10, axis=0) + 1.2 * rng.normal(size=(30, 16))
    names = [c for c in "xyz" for _ in range(10)]
    report = tune_options(None, names, base="tiny", base_vectors=vectors, expansions=("none", "qe=3"))
    assert [r.expansion for r in report.rows] == ["none", str(Expansion(qe=3))]
    assert report.best in report.rows


def test_catalog_tune_records_the_winner(home):
    cnn, colour, names = parts_where_colour_tells()
    start = fuse_parts(cnn, colour, 0.2)  # stored as the default encoder would have
    cat = vector_catalog(home, "tuneme", start, names, encoder="effnet-lite0-colour")
    report = cat.tune("label", split_column=None, weights=(0.0, 0.1, 0.3), expansions=("none", "qe=1"))
    assert report.best.encoder == "effnet-lite0-colour:0.3"
    assert cat.default_encoder == "effnet-lite0-colour:0.3"
    assert cat.tuned()["encoder"] == "effnet-lite0-colour:0.3"
    assert str(cat.default_expansion) == report.best.expansion
    # the winner's vectors were written from the parts, not re-embedded (the paths point nowhere)
    ids, vectors = cat.vectors("effnet-lite0-colour:0.3")
    np.testing.assert_allclose(vectors, fuse_parts(cnn, colour, 0.3), atol=1e-5)
    assert cat.evaluate().overall["mAP@10"] == pytest.approx(report.best.metrics["mAP@10"], abs=1e-6)
    result = CliRunner().invoke(app, ["info", "--catalog", "tuneme", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "tuned on label" in result.output and "effnet-lite0-colour:0.3" in result.output


def test_tune_cli_dry_run_records_nothing(home):
    cnn, colour, names = parts_where_colour_tells(n_per=6)
    cat = vector_catalog(home, "dry", fuse_parts(cnn, colour, 0.2), names, encoder="effnet-lite0-colour")
    result = CliRunner().invoke(app, ["tune", "--catalog", "dry", "--home", str(home), "--split-column", "",
                                      "--weights", "0,0.3", "--rerank", "none", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would become: encoder effnet-lite0-colour:0.3" in result.output
    header = next(line for line in result.output.splitlines() if "re-ranking" in line)
    assert [w for w in ("encoder", "re-ranking", "P@1", "P@5", "mAP@10", "NDCG@10") if w in header] == \
        ["encoder", "re-ranking", "P@1", "P@5", "mAP@10", "NDCG@10"]       # cli.app.scores_table
    assert cat.default_encoder == "effnet-lite0-colour" and cat.tuned() is None
    bad = CliRunner().invoke(app, ["tune", "--catalog", "dry", "--home", str(home), "--rerank", "qe=x"])
    assert bad.exit_code == 1 and "qe takes a number" in bad.output
