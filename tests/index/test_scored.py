"""The log-likelihood index (``lookalike.index.scored``) behind the IndexBackend interface."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.index import make_index
from lookalike.index.distances import distance_to_score
from lookalike.index.scored import ScoredIndex

# Three items in d=2, stored as [µ1, µ2, log σ1², log σ2²] (tests/index/test_distances.py derives their scores).
ITEMS = np.array([
    [1.0, 0.0, 0.0, 0.0],
    [0.5, 0.0, np.log(0.01), np.log(0.01)],
    [2.0, 0.0, np.log(4.0), np.log(4.0)],
], np.float32)
QUERY = np.array([[0.0, 0.0, 0.0, 0.0]], np.float32)


def test_scored_index_search_filter_remove_save_load(tmp_path):
    index = make_index("faiss", 4, "loglik")   # scored metrics never reach faiss
    assert isinstance(index, ScoredIndex)
    index.add(np.array([10, 11, 12]), ITEMS)
    distances, ids = index.search(QUERY, 2)
    assert ids.tolist() == [[10, 12]]
    np.testing.assert_allclose(-distances[0], [-2.337877, -3.724171], atol=1e-4)
    assert distance_to_score(distances[0], "loglik")[0] == pytest.approx(-2.337877, abs=1e-4)
    _, ids = index.search(QUERY, 5, allowed_ids=np.array([11, 12]))
    assert ids.tolist() == [[12, 11, -1, -1, -1]]
    assert index.remove(np.array([10])) == 1 and len(index) == 2
    index.save(tmp_path / "idx")
    loaded = ScoredIndex.load(tmp_path / "idx")
    assert loaded.metric == "loglik" and loaded.search(QUERY, 1)[1].tolist() == [[12]]
