"""Cluster-restricted search: identical to full search when every cluster is probed, and cheaper
(fewer items scanned) when only some are."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.explore.cluster_search import ClusterSearch, FullSearch, compare_probes
from lookalike.explore.clusters import kmeans, prepare


def data(metric, n=600, dim=24, centres=8, seed=1):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)) * 4
    x = (means[rng.integers(0, centres, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    assignments, centroids, _ = kmeans(prepare(x, metric), centres)
    return x, assignments, centroids


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_probing_all_clusters_returns_the_full_search(metric):
    x, assignments, centroids = data(metric)
    queries = x[:50] + 0.1
    full_d, full_ids = FullSearch(x, metric).search(queries, 10)
    restricted = ClusterSearch(x, centroids, assignments, metric)
    d, ids = restricted.search(queries, 10, probe=len(centroids))
    assert np.array_equal(ids, full_ids)
    assert np.allclose(d, full_d, atol=1e-5)


def test_probe_one_searches_only_the_nearest_cluster():
    x, assignments, centroids = data("cosine")
    search = ClusterSearch(x, centroids, assignments, "cosine")
    _, ids = search.search(x[:30], 5, probe=1)
    nearest = ((prepare(x[:30])[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(axis=1)
    for row, cluster in zip(ids, nearest):
        assert set(assignments[row[row >= 0]].tolist()) == {cluster}
    scanned = search.scanned(x[:30], 1)
    assert np.array_equal(scanned, np.bincount(assignments, minlength=len(centroids))[nearest])


def test_compare_probes_reports_recall_and_work_saved():
    x, assignments, centroids = data("cosine")
    labels = [str(a) for a in assignments]
    rows = compare_probes(x, centroids, assignments, [1, 8], "cosine", k=10, labels=labels, n_queries=60)
    one, every = rows
    assert every.recall_at_k == pytest.approx(1.0) and every.scanned_share == pytest.approx(1.0)
    assert one.scanned_share < 0.5 and 0 < one.recall_at_k <= 1
    assert every.precision_restricted == pytest.approx(every.precision_full)
    assert one.full_ms > 0 and one.restricted_ms > 0


def test_cli_cluster_search_matches_full_search_when_probing_all(home, shapes_folder):
    import json

    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["index", str(shapes_folder), "--catalog", "cs", "--encoder", "colour-hist"]).exit_code == 0
    item = "square-red/square-red-0"
    missing = runner.invoke(app, ["cluster-search", "--catalog", "cs", "--item", item])
    assert missing.exit_code == 1 and "lookalike cluster" in missing.output
    assert runner.invoke(app, ["cluster", "--catalog", "cs", "--k", "4"]).exit_code == 0
    full = json.loads(runner.invoke(app, ["search", "--catalog", "cs", "--item", item, "-k", "8", "--json"]).stdout)
    every = json.loads(runner.invoke(app, ["cluster-search", "--catalog", "cs", "--item", item, "-k", "8",
                                           "--probe", "4", "--json"]).stdout)
    assert [r["id"] for r in every["results"]] == [r["id"] for r in full["results"]]
    assert every["recall_vs_full"] == 1.0 and every["scanned"] == 54
    one = json.loads(runner.invoke(app, ["cluster-search", "--catalog", "cs", "--item", item, "-k", "8",
                                         "--probe", "1", "--json"]).stdout)
    # one probe = the query's own cluster (its nearest centroid) and nothing else
    assert {r["cluster"] for r in one["results"]} == {one["cluster"]} and one["scanned"] < 54
    bad = runner.invoke(app, ["cluster-search", "--catalog", "cs", "--item", "nope"])
    assert bad.exit_code == 1 and "unknown item" in bad.output
