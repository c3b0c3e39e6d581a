"""MMR order and near-duplicate collapse, computed by hand."""
import numpy as np
import pytest

from lookalike.search.diversity import collapse_duplicates, cosine_similarities, intra_list_similarity, mmr

REL = [0.9, 0.85, 0.5]
SIM = np.array([[1.0, 0.95, 0.1], [0.95, 1.0, 0.2], [0.1, 0.2, 1.0]])


def test_mmr_zero_keeps_the_ranking():
    assert mmr(REL, SIM, 3, 0.0) == [0, 1, 2]


def test_mmr_hand_computed():
    # λ=0.3: 2nd pick: item 1 → .7*.85 - .3*.95 = .31, item 2 → .7*.5 - .3*.1 = .32  → item 2
    assert mmr(REL, SIM, 3, 0.3) == [0, 2, 1]
    # λ=0.2: item 1 → .8*.85 - .2*.95 = .49, item 2 → .8*.5 - .2*.1 = .38 → item 1
    assert mmr(REL, SIM, 3, 0.2) == [0, 1, 2]
    assert mmr(REL, SIM, 2, 0.3) == [0, 2]


def test_mmr_errors_and_empty():
    assert mmr([], np.zeros((0, 0)), 3, 0.5) == []
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            mmr(REL, SIM, 3, bad)
    with pytest.raises(ValueError):
        mmr(REL, SIM[:2], 3, 0.3)


def test_collapse_folds_into_the_first_kept_hit_without_chaining():
    d = np.array([[0, .05, .3, .11], [.05, 0, .1, .02], [.3, .1, 0, .5], [.11, .02, .5, 0]])
    # 1 ~ 0 (folded); 2 is near 1 only, which is not shown, so 2 stays; 3 ~ 0 (folded)
    assert collapse_duplicates(d, 0.12) == [(0, [1, 3]), (2, [])]
    assert collapse_duplicates(d, 0.0) == [(0, []), (1, []), (2, []), (3, [])]


def test_ils_and_cosine_similarities():
    sim = cosine_similarities(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_allclose(sim, [[1, 1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-7)
    assert intra_list_similarity(sim) == pytest.approx(2 / 6)
    assert np.isnan(intra_list_similarity(np.ones((1, 1))))


def _hit(i, score):
    from lookalike.search.results import SearchResult
    return SearchResult(i + 1, f"id{i}", score, 1 - score, None)


def test_fold_duplicates_lists_folded_ids_on_the_kept_hit():
    from lookalike.search.diversity import fold_duplicates
    v = np.array([[1.0, 0.0], [0.999, 0.045], [0.0, 1.0], [1.0, 0.01]])   # 1 and 3 are within 0.12 of 0
    out = fold_duplicates([_hit(i, s) for i, s in enumerate([0.9, 0.8, 0.7, 0.6])], v)
    assert [(h.id, h.duplicates) for h in out] == [("id0", ["id1", "id3"]), ("id2", [])]
    assert out[0].to_dict()["duplicates"] == ["id1", "id3"]


def test_diversify_uses_scores_and_the_pool():
    from lookalike.search.diversity import diversify
    # vectors whose cosine similarities are SIM's: build from its Cholesky factor
    v = np.linalg.cholesky(SIM)
    hits = [_hit(i, s) for i, s in enumerate(REL)]
    assert [h.id for h in diversify(hits, v, 3, 0.3, pool=3)] == ["id0", "id2", "id1"]
    assert [h.id for h in diversify(hits, v, 2, 0.3, pool=2)] == ["id0", "id1"]   # id2 is outside the pool
    assert [h.id for h in diversify(hits, v, 2, 0.0)] == ["id0", "id1"]
    with pytest.raises(ValueError):
        diversify(hits, v, 2, 2.0)


def test_pairwise_scores_follow_the_metric():
    from lookalike.search.diversity import pairwise_scores
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(pairwise_scores(x, "l2"), [[1, 1 / 6], [1 / 6, 1]])
    np.testing.assert_allclose(pairwise_scores(x, "l1"), [[1, 1 / 8], [1 / 8, 1]])
