"""The "no close match" threshold: quantile arithmetic by hand, calibration on generated clusters."""
import numpy as np
import pytest

from lookalike.search.calibration import (ScoreThreshold, calibrate, label_free_threshold, labelled_threshold,
                                          random_pair_scores)


def test_labelled_threshold_is_the_quantile_of_same_label_neighbours():
    # same-label scores .5 .6 .8 .9; 25% quantile (linear): .5 + .75 * .1
    assert labelled_threshold([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 1], 0.25) == pytest.approx(0.575)
    # same-label scores .85 .88 .9: median .88; all four (.3 .85 .88 .9): median .865 -> capped
    assert labelled_threshold([0.9, 0.85, 0.3, 0.88], [1, 1, 0, 1], 0.5) == pytest.approx(0.865)
    with pytest.raises(ValueError):
        labelled_threshold([0.9], [0], 0.1)
    with pytest.raises(ValueError):
        labelled_threshold([0.9], [1], 0.0)


def test_label_free_threshold_is_the_middle_of_the_gap_capped_by_the_quantile():
    assert label_free_threshold([0.9, 0.8, 0.7], [0.3, 0.4, 0.5], 0.01) == pytest.approx(0.6)
    # (0.85 + 0.4) / 2 = .625, but 25% of the neighbours score below .475: cap
    assert label_free_threshold([0.9, 0.85, 0.1], [0.4], 0.5) == pytest.approx(0.625)
    assert label_free_threshold([0.9, 0.85, 0.1], [0.4], 0.25) == pytest.approx(0.475)


def _clusters(seed=0, per=60, k=4, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 3
    x = np.concatenate([c + rng.normal(size=(per, dim)) * 0.4 for c in centres]).astype(np.float32)
    return x, [str(i) for i in range(k) for _ in range(per)], centres


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_calibrate_separates_in_cluster_from_far_away(metric):
    x, labels, centres = _clusters()
    with_labels = calibrate(x, metric, labels, miss_rate=0.05, sample=200)
    without = calibrate(x, metric, None, miss_rate=0.05, sample=200)
    assert (with_labels.method, without.method) == ("labelled", "label-free")
    from lookalike.index.distances import distance_to_score, exact_knn
    rng = np.random.default_rng(9)
    inside = (centres[0] + rng.normal(size=(20, 16)) * 0.4).astype(np.float32)
    far = rng.normal(size=(20, 16)).astype(np.float32) * 3      # away from every cluster centre
    for t in (with_labels, without):
        best_in = distance_to_score(exact_knn(inside, x, 1, metric)[0][:, 0], metric)
        best_far = distance_to_score(exact_knn(far, x, 1, metric)[0][:, 0], metric)
        assert np.mean([t.is_weak(s) for s in best_in]) <= 0.1
        assert np.mean([t.is_weak(s) for s in best_far]) >= 0.9
    assert ScoreThreshold.from_dict(with_labels.to_dict()) == with_labels


def test_calibrate_errors():
    x, labels, _ = _clusters(per=5)
    with pytest.raises(ValueError, match="labelled"):
        calibrate(x, "cosine", labels, method="labelled")
    with pytest.raises(ValueError, match="method"):
        calibrate(x, "cosine", method="magic")
    with pytest.raises(ValueError):
        calibrate(x[:1], "cosine")


def test_random_pairs_never_pair_an_item_with_itself():
    x = np.eye(3, dtype=np.float32)      # distinct rows are orthogonal: cosine 0, self would be 1
    assert np.all(random_pair_scores(x, "cosine", 500) == 0)


def test_flag_weak_is_about_the_query_and_no_close_match_needs_all_weak():
    from lookalike.search.calibration import flag_weak, no_close_match
    from lookalike.search.results import SearchResult
    t = ScoreThreshold(0.6, "labelled", 0.02, "cosine")
    hits = [SearchResult(1, "a", 0.7, 0.3, None), SearchResult(2, "b", 0.5, 0.5, None)]
    # the best hit (0.7) is above the threshold: something is close, nothing is weak
    assert [h.weak for h in flag_weak(hits, t)] == [False, False] and not no_close_match(flag_weak(hits, t))
    # the query's nearest item by a plain search scored 0.55 (re-ranked hits may show higher scores)
    flagged = flag_weak(hits, t, best_score=0.55)
    assert [h.weak for h in flagged] == [True, True] and no_close_match(flagged)
    assert no_close_match(flag_weak(hits[1:], t)) and not no_close_match([])
    assert flag_weak(hits, None) == hits and flag_weak([], t) == []
    assert flagged[1].to_dict()["weak"] is True and "weak" not in hits[0].to_dict()


def test_a_stored_threshold_survives_a_few_writes_not_a_new_encoder_or_many_writes():
    from lookalike.search.calibration import still_valid

    doc = {"version": "10:abc", "items": 100}
    assert still_valid(doc, "10:abc", 100)
    assert still_valid(doc, "14:abc", 103)          # 4 writes + 3 items: 7 <= 10 % of 100
    assert not still_valid(doc, "16:abc", 105)      # 6 + 5 = 11 > 10
    assert not still_valid(doc, "11:other", 100)    # other weights: recompute
    assert not still_valid({"version": "10:abc"}, "11:abc", 100)   # stored before `items` existed
    assert not still_valid(doc, "garbage", 100)


def test_catalog_keeps_its_threshold_across_a_write(home):
    from fakes import vector_catalog

    rng = np.random.default_rng(3)
    cat = vector_catalog(home, "cal", rng.normal(size=(60, 6)).astype(np.float32), ["a", "b"] * 30)
    first = cat.match_threshold()
    assert first.items == 60
    cat.add_embedded([{"id": "new", "path": "/nowhere/new.jpg", "label": "a"}],
                     rng.normal(size=(1, 6)).astype(np.float32), "tiny", fingerprint="fp")
    assert cat.match_threshold().version == first.version      # reused: 1 write + 1 item of 60
    assert cat.match_threshold(refresh=True).version != first.version


def test_no_close_match_best_score_reuses_the_expansion_first_stage(home, monkeypatch):
    """With αQE on an index whose top lists nest (exact here), an unfiltered image or vector query's
    "no close match" best score is αQE's first-stage top score: the one a separate plain search
    finds, for one index search fewer. Filtered queries still search plainly on their own."""
    from fakes import vector_catalog
    from lookalike.catalog import Catalog

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 24)).astype(np.float32)
    cat = vector_catalog(home, "best", vectors, ["a", "b", "c"] * 100)
    cat.set_default_expansion("qe=5,alpha=2")
    seen, original = [], Catalog._best_score

    def spy(self, spec, metric, query, plain=None, first=()):
        got = original(self, spec, metric, query, plain, first)
        seen.append((len(first), got, original(self, spec, metric, query)))   # the separate plain search
        return got

    monkeypatch.setattr(Catalog, "_best_score", spy)
    for q in vectors[:15] + rng.normal(size=(15, 24)).astype(np.float32) * 0.5:
        cat.search(vector=q, k=5)
    assert [n for n, _, _ in seen] == [5] * 15
    assert [g for _, g, _ in seen] == pytest.approx([f for _, _, f in seen], abs=1e-6)
    cat.search(vector=vectors[0], k=5, where={"label": "a"})
    assert seen[-1][0] == 0 and seen[-1][1] == seen[-1][2]
