"""Multi-example queries: parsing, Rocchio weighted mean and best-score fusion, by hand."""
import numpy as np
import pytest

from lookalike.search.examples import Example, fuse_scores, parse_item_example, weighted_mean


@pytest.mark.parametrize("text,negative,expected", [
    ("A", False, ("A", 1.0)), ("B:0.5", False, ("B", 0.5)), ("C", True, ("C", -0.5)), ("C:2", True, ("C", -2.0)),
    ("sku:12a", False, ("sku:12a", 1.0)), ("a:b:1e-1", False, ("a:b", 0.1)), (" D:.25 ", False, ("D", 0.25)),
])
def test_parse_item_example(text, negative, expected):
    ex = parse_item_example(text, negative)
    assert (ex.kind, ex.value, ex.weight) == ("item",) + expected


@pytest.mark.parametrize("text", ["", ":0.5", "x:0", "x:-1"])
def test_parse_item_example_rejects(text):
    with pytest.raises(ValueError):
        parse_item_example(text)


def test_example_checks_kind_and_weight():
    with pytest.raises(ValueError, match="kind"):
        Example("url", "x")
    for bad in (0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight"):
            Example("item", "x", bad)


def test_weighted_mean_normalises_each_example_then_the_sum():
    q = weighted_mean(np.array([[2.0, 0.0], [0.0, 1.0]]), [1, 1])   # scale of an example does not count
    np.testing.assert_allclose(q, [2 ** -0.5, 2 ** -0.5], atol=1e-6)
    # [1,0] - 0.5*[.7071,.7071] = [.64645, -.35355], norm .73681
    q = weighted_mean(np.array([[1.0, 0.0], [1.0, 1.0]]), [1, -0.5])
    np.testing.assert_allclose(q, [0.87737, -0.47985], atol=1e-4)
    assert q.dtype == np.float32


def test_weighted_mean_errors():
    with pytest.raises(ValueError, match="positive"):
        weighted_mean(np.eye(2), [-1, -1])
    with pytest.raises(ValueError, match="cancel"):
        weighted_mean(np.array([[1.0, 0.0], [1.0, 0.0]]), [1, -1])
    with pytest.raises(ValueError, match="weights"):
        weighted_mean(np.eye(3), [1, 1])


def test_fuse_scores_best_positive_minus_best_negative():
    scores = np.array([[0.9, 0.5, 0.7], [0.4, 0.8, 0.6], [0.2, 0.9, 0.1]])
    # positives: max(1*s0, .5*s1) = .9, .5, .7; negative: 1*s2 = .2, .9, .1; / max positive weight 1
    np.testing.assert_allclose(fuse_scores(scores, [1, 0.5, -1]), [0.7, -0.4, 0.6])
    # no negatives, weights 2 and 1: max(2*s0, s1) / 2
    np.testing.assert_allclose(fuse_scores(scores[:2], [2, 1]), [0.9, 0.5, 0.7])
    np.testing.assert_allclose(fuse_scores(scores[:2], [1, 2]), [0.45, 0.8, 0.6])
    with pytest.raises(ValueError):
        fuse_scores(scores, [1, 1])


def test_fuse_hits_rescores_and_sorts_the_union():
    from lookalike.search.examples import cross_scores, fuse_hits
    from lookalike.search.results import SearchResult
    hits = [SearchResult(1, "x", 0.0, 1.0, None), SearchResult(2, "y", 0.0, 1.0, None)]
    hit_vectors = np.array([[1.0, 0.0], [0.0, 1.0]])
    examples = np.array([[0.0, 2.0], [1.0, 0.0]])          # positive ~ y, negative ~ x
    out = fuse_hits(hits, hit_vectors, examples, [1, -0.5], "cosine")
    # y: 1*1 - 0.5*0 = 1; x: 1*0 - 0.5*1 = -0.5
    assert [(h.id, h.score) for h in out] == [("y", 1.0), ("x", -0.5)]
    np.testing.assert_allclose(cross_scores([[0.0, 0.0]], [[3.0, 4.0]], "l2"), [[1 / 6]])
