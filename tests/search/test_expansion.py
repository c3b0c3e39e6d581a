"""αQE / DBA (lookalike.search.expansion): hand-computed formulas, the leave-one-out ranking against
a brute-force oracle that rebuilds the catalog without each query, and the catalog search option."""
import numpy as np
import pytest

from lookalike.search.expansion import (Expansion, augment_database, augment_rows, expand_queries, expanded_neighbours,
                                       window_order)


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_expansion_parse_and_str():
    assert Expansion.parse("qe=2,dba=5,alpha=3") == Expansion(2, 5, 3.0)
    assert str(Expansion(2, 5, 3.0)) == "qe=2,dba=5,alpha=3"
    assert str(Expansion(qe=1)) == "qe=1,alpha=3"
    assert Expansion.parse(str(Expansion(0, 4, 1.5))) == Expansion(0, 4, 1.5)
    assert Expansion.parse("none") == Expansion.parse(None) == Expansion()
    assert str(Expansion()) == "none" and not Expansion().active
    assert Expansion.parse("centre=1,qe=10,dba=20") == Expansion(10, 20, centre=True)
    assert str(Expansion(10, 20, centre=True)) == "centre=1,qe=10,dba=20,alpha=3"
    assert str(Expansion(centre=True)) == "centre=1" and Expansion(centre=True).active
    assert Expansion.parse("centre=0,qe=2") == Expansion(qe=2)
    window = Expansion.parse("centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.3")
    assert window == Expansion(15, 20, 2.0, True, 10, 0.3) and window.active
    assert str(window) == "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.3"
    assert str(Expansion(window=5)) == "window=5" and Expansion(window=5).active
    assert window.without_dba() == Expansion(qe=15, alpha=2.0, window=10, colour=0.3)
    for bad in ("qe", "qe=x", "foo=1", "qe=-1", "alpha=-2", "qe=1,qe=2", "centre=2", "centre=yes",
                "window=-1", "window=2.5", "window=3,colour=1", "window=3,colour=-0.1", "colour=0.3"):
        with pytest.raises(ValueError):
            Expansion.parse(bad)


def test_dba_by_hand():
    # x=(1,0), y=(0.6,0.8), z=(0,1): nearest of x is y (cos 0.6), of y is z (0.8), of z is y (0.8)
    x, y, z = [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]
    out = augment_database(np.array([x, y, z], np.float32), k=1, alpha=1.0)
    np.testing.assert_allclose(out[0], unit([1 + 0.6 * 0.6, 0.6 * 0.8]), atol=1e-6)
    np.testing.assert_allclose(out[1], unit([0.6, 0.8 + 0.8 * 1.0]), atol=1e-6)
    np.testing.assert_allclose(out[2], unit([0.8 * 0.6, 1 + 0.8 * 0.8]), atol=1e-6)
    # alpha = 3: weight 0.6**3 = 0.216
    out3 = augment_database(np.array([x, y, z], np.float32), k=1, alpha=3.0)
    np.testing.assert_allclose(out3[0], unit([1 + 0.216 * 0.6, 0.216 * 0.8]), atol=1e-6)
    # negative similarities weigh nothing; k=0 only normalises
    np.testing.assert_allclose(augment_database(np.array([[2.0, 0], [-1.0, 0]]), 1, 1.0), [[1, 0], [-1, 0]], atol=1e-6)
    np.testing.assert_allclose(augment_database(np.array([[3.0, 4.0]]), 0), [[0.6, 0.8]], atol=1e-6)


def test_alpha_qe_by_hand():
    q = np.array([[1.0, 0.0]], np.float32)
    found = np.array([[[0.6, 0.8], [0.0, 1.0]]], np.float32)  # cos 0.6 and 0
    got = expand_queries(q, found, alpha=2.0)
    np.testing.assert_allclose(got[0], unit([1 + 0.36 * 0.6, 0.36 * 0.8]), atol=1e-6)
    # alpha = 0 is plain average QE: every result (even the orthogonal one) weighs 1
    np.testing.assert_allclose(expand_queries(q, found, alpha=0.0)[0], unit([1.6, 1.8]), atol=1e-6)


def test_window_order_by_hand():
    # CNN order a, b, c, d; colour re-orders the first 3 at weight 0.5; d follows, capped at the window's lowest
    cnn = np.array([[0.9, 0.8, 0.7, 0.6]])
    colour = np.array([[0.0, 0.6, 0.4, 1.0]])
    order, scores, terms = window_order(cnn, colour, 3, 0.5)
    np.testing.assert_array_equal(order, [[1, 2, 0, 3]])   # fused 0.45, 0.70, 0.55 -> b, c, a
    np.testing.assert_allclose(scores, [[0.70, 0.55, 0.45, 0.30]])
    np.testing.assert_allclose(terms, [[0.30, 0.20, 0.0, 0.0]])
    # past the window the score is (1-w)·cos_cnn, but never above the window's lowest
    _, capped, _ = window_order(np.array([[0.5, 0.45]]), np.array([[-1.0, 1.0]]), 1, 0.5)
    np.testing.assert_allclose(capped, [[-0.25, -0.25]])
    # window 0: the CNN order, scores (1-w)·cos_cnn
    order, scores, _ = window_order(cnn, colour, 0, 0.5)
    np.testing.assert_array_equal(order, [[0, 1, 2, 3]]) and np.testing.assert_allclose(scores, 0.5 * cnn)


def oracle(vectors, k, setting, pool, keep=0):
    """For each query: drop it, augment the rest from scratch, expand, rank (after centring on the
    pool's mean when the setting centres)."""
    if setting.centre:
        from lookalike.search.whitening import Whitening, WhiteningConfig

        vectors = Whitening(WhiteningConfig(keep=keep)).fit(vectors[pool]).transform(vectors).astype(np.float64)
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = []
    for q in pool:
        gallery_ids = np.array([p for p in pool if p != q])
        gallery = augment_database(x[gallery_ids], setting.dba, setting.alpha, keep)
        query = x[q]
        window = setting.window and keep
        # with a colour window the CNN block alone ranks (αQE's neighbours too)
        block = (lambda v: v[..., :-keep] / np.linalg.norm(v[..., :-keep], axis=-1, keepdims=True)) if window else None
        rank_scores = (lambda qv: block(gallery) @ block(qv)) if window else (lambda qv: gallery @ qv)
        scores = rank_scores(query)
        if setting.qe:
            top = np.argsort(-scores, kind="stable")[:setting.qe]
            query = expand_queries(query[None], gallery[top][None], setting.alpha, keep)[0]
            scores = rank_scores(query)
        order = np.argsort(-scores, kind="stable")
        if window:
            colour = lambda v: v[..., -keep:] / np.linalg.norm(v[..., -keep:], axis=-1, keepdims=True)  # noqa: E731
            head = order[:setting.window]
            fused = (1 - setting.colour) * scores[head] + setting.colour * (colour(gallery[head]) @ colour(query))
            order = np.concatenate([head[np.argsort(-fused, kind="stable")], order[setting.window:]])
        rows.append(gallery_ids[order[:k]])
    return np.array(rows)


@pytest.mark.parametrize("setting", [Expansion(qe=2), Expansion(dba=3), Expansion(qe=3, dba=2, alpha=1.0),
                                     Expansion(qe=1, dba=4, alpha=3.0), Expansion(centre=True),
                                     Expansion(qe=2, dba=3, alpha=3.0, centre=True),
                                     Expansion(qe=2, dba=3, alpha=2.0, centre=True, window=3, colour=0.5),
                                     Expansion(qe=3, window=7, colour=0.3), Expansion(window=4, colour=0.9)])
@pytest.mark.parametrize("keep", [0, 3])
def test_leave_one_out_matches_oracle(setting, keep):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    vectors = (np.repeat(centres, 8, axis=0) + 0.7 * rng.normal(size=(32, 8))).astype(np.float32)
    pool = np.arange(1, 31)  # a subset: positions outside it never appear
    got = expanded_neighbours(vectors, 5, setting, pool=pool, batch=7, keep=keep)
    np.testing.assert_array_equal(got, oracle(vectors.astype(np.float64), 5, setting, pool, keep))


def test_kept_part_is_left_alone():
    # fused rows [sqrt(0.8)·cnn, sqrt(0.2)·colour]: DBA/αQE change the CNN part only, lengths kept
    rng = np.random.default_rng(5)
    cnn = rng.normal(size=(10, 6))
    colour = rng.random(size=(10, 3))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    fused = np.concatenate([np.sqrt(0.8) * unit(cnn), np.sqrt(0.2) * unit(colour)], axis=1)
    out = augment_database(fused, 2, 1.0, keep=3)
    np.testing.assert_allclose(out[:, 6:], fused[:, 6:], atol=1e-6)
    np.testing.assert_allclose(out[:, :6], np.sqrt(0.8) * augment_database(cnn, 2, 1.0), atol=1e-6)
    q = expand_queries(fused[:1], fused[1:3][None], 1.0, keep=3)[0]
    np.testing.assert_allclose(q[6:], fused[0, 6:], atol=1e-6)
    np.testing.assert_allclose(q[:6], np.sqrt(0.8) * expand_queries(cnn[:1], unit(cnn[1:3])[None], 1.0)[0], atol=1e-6)


def test_no_expansion_is_plain_knn_and_other_metrics_refused():
    from lookalike.evaluation.retrieval import nearest_neighbours

    rng = np.random.default_rng(1)
    v = rng.normal(size=(20, 6)).astype(np.float32)
    np.testing.assert_array_equal(expanded_neighbours(v, 4, None), nearest_neighbours(v, 4))
    with pytest.raises(ValueError, match="cosine"):
        expanded_neighbours(v, 4, "qe=2", metric="l2")


def test_catalog_search_applies_expansion(home):
    from fakes import vector_catalog

    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(25, 6)).astype(np.float32)
    cat = vector_catalog(home, "qe", vectors, ["a"] * 25)
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    setting = Expansion(qe=2, dba=3, alpha=1.0)
    database = augment_database(x, 3, 1.0)
    q = 4
    scores = database @ x[q]
    scores[q] = -np.inf
    first = np.argsort(-scores)[:2]
    expanded = expand_queries(x[q][None], database[first][None], 1.0)[0]
    final = database @ expanded
    final[q] = -np.inf
    expect = [f"item-{i}" for i in np.argsort(-final)[:5]]
    hits = cat.search(item="item-4", k=5, expansion=setting)
    assert [h.id for h in hits] == expect
    np.testing.assert_allclose([h.score for h in hits], np.sort(final)[::-1][:5], atol=1e-5)
    # a vector query is not excluded from its own expansion: the item it equals comes first
    scores = database @ x[q]
    expanded = expand_queries(x[q][None], database[np.argsort(-scores)[:2]][None], 1.0)[0]
    by_vector = [h.id for h in cat.search(vector=vectors[4], k=6, expansion=setting)]
    assert by_vector == [f"item-{i}" for i in np.argsort(-(database @ expanded))[:6]] and by_vector[0] == "item-4"
    # "none" is the plain ranking
    plain = [h.id for h in cat.search(item="item-4", k=5, expansion="none")]
    assert plain == [f"item-{i}" for i in np.argsort(-(x @ x[q]))[1:6]]
    # the catalog default applies when a search names none
    cat.set_default_expansion(setting)
    assert [h.id for h in cat.search(item="item-4", k=5)] == expect
    assert str(cat.default_expansion) == "qe=2,dba=3,alpha=1"


def test_dba_skipped_on_large_catalogs(home, monkeypatch):
    from fakes import vector_catalog
    from lookalike.search import expansion

    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(30, 5)).astype(np.float32)
    cat = vector_catalog(home, "big", vectors, ["a"] * 30)
    monkeypatch.setattr(expansion, "MAX_DBA_ITEMS", 10)
    assert [h.id for h in cat.search(item="item-3", k=5, expansion="qe=2,dba=4")] == \
        [h.id for h in cat.search(item="item-3", k=5, expansion="qe=2")]


def test_shape_colour_split_under_reranking(home):
    from fakes import vector_catalog
    from lookalike.encoders.colour import COLOUR_DIM, fuse_parts

    rng = np.random.default_rng(6)
    cnn, colour = rng.normal(size=(12, 16)), rng.random((12, COLOUR_DIM))
    cat = vector_catalog(home, "fusedqe", fuse_parts(cnn, colour, 0.3), ["x"] * 12, encoder="effnet-lite0-colour:0.3")
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    for hit in cat.search(item="item-0", k=4, expansion="qe=2,dba=3"):
        i = int(hit.id.split("-")[1])
        parts = hit.score_parts
        assert parts["visual.colour"] == pytest.approx(0.3 * unit(colour[0]) @ unit(colour[i]), abs=1e-5)
        assert parts["visual.shape"] + parts["visual.colour"] == pytest.approx(hit.score, abs=1e-5)


@pytest.mark.parametrize("keep", [0, 2])
def test_augment_rows_is_those_rows_of_dba(keep):
    v = np.random.default_rng(7).normal(size=(40, 6)).astype(np.float32)
    rows = np.array([0, 5, 39, 17])
    np.testing.assert_allclose(augment_rows(v, rows, 4, 2.0, keep), augment_database(v, 4, 2.0, keep)[rows], atol=1e-6)


def test_dba_after_writes_augments_only_the_changed_rows(home, monkeypatch):
    """A write must not cost a continuously written catalog the O(n²) pass: untouched rows keep their
    vectors, new rows are augmented against the whole new gallery; past DBA_REFRESH_SHARE of the
    catalog touched, everything is recomputed (then equal to a fresh DBA)."""
    from fakes import vector_catalog
    from lookalike.search import expansion

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(40, 6)).astype(np.float32)
    cat = vector_catalog(home, "writes", vectors, ["a"] * 40)
    setting = Expansion(qe=2, dba=3, alpha=1.0)
    cat.search(item="item-0", k=3, expansion=setting)
    gallery = lambda: cat._expanded._gallery("tiny", setting, 0)  # noqa: E731
    rowids0, before, position0, _, _ = gallery()
    calls = []
    real = expansion.augment_database
    monkeypatch.setattr(expansion, "augment_database", lambda *a, **k: calls.append(1) or real(*a, **k))
    extra = rng.normal(size=(2, 6)).astype(np.float32)
    cat.add_embedded([{"id": "new-0", "path": "/nowhere/n0.jpg"}, {"id": "new-1", "path": "/nowhere/n1.jpg"}],
                     extra, "tiny", fingerprint="fp")
    rowids, after, position, index, _ = gallery()
    assert calls == [] and len(rowids) == 42  # 2 of 42 rows touched: no full pass
    for r in rowids0:
        np.testing.assert_array_equal(after[position[int(r)]], before[position0[int(r)]])
    raw = np.concatenate([vectors, extra])
    new_rows = [position[int(r)] for r in rowids if int(r) not in position0]
    np.testing.assert_allclose(after[new_rows], augment_database(raw, 3, 1.0)[40:], atol=1e-6)
    assert len(index) == 42 and cat.search(item="new-0", k=3, expansion=setting)
    # a rewrite of 3 more rows passes the 10 % share: the whole gallery is recomputed
    cat.add_embedded([{"id": f"item-{i}", "path": f"/nowhere/{i}.jpg"} for i in range(3)],
                     rng.normal(size=(3, 6)).astype(np.float32), "tiny", fingerprint="fp")
    rowids, after, position, _, _ = gallery()
    assert calls == [1]
    ids, raw = cat.vectors("tiny")
    assert len(ids) == 42
    np.testing.assert_allclose(after, real(raw, 3, 1.0), atol=1e-6)


def test_row_checksums_do_not_depend_on_the_row_position():
    """DBA tells rewritten rows from unchanged ones after a write; a removal shifts every later row,
    which must not make them look rewritten (a float projection did, by its last bits)."""
    from lookalike.search.expansion import _row_checksums

    m = np.random.default_rng(0).normal(size=(300, 77)).astype(np.float32)
    assert np.array_equal(_row_checksums(m[1:]), _row_checksums(m)[1:])
    assert np.array_equal(_row_checksums(np.delete(m, [5, 140], axis=0)), np.delete(_row_checksums(m), [5, 140]))
    changed = m.copy()
    changed[7, 3] += 1e-6
    assert (_row_checksums(changed) != _row_checksums(m)).sum() == 1


def test_catalog_search_centres_on_its_saved_mean(home):
    """centre=1: items and query centred on the catalog's mean (saved under artifacts/whitening/),
    then re-ranked; the fit is reused until the catalog's size moves by REFIT_SHARE."""
    from fakes import vector_catalog
    from lookalike.search.whitening import Whitening

    rng = np.random.default_rng(8)
    vectors = (rng.normal(size=(30, 6)) + 4.0).astype(np.float32)   # a large shared component
    cat = vector_catalog(home, "centred", vectors, ["a"] * 30)
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    c = x - x.mean(axis=0)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    scores = c @ c[7]
    scores[7] = -np.inf
    hits = cat.search(item="item-7", k=5, expansion="centre=1")
    assert [h.id for h in hits] == [f"item-{i}" for i in np.argsort(-scores)[:5]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:5], atol=1e-5)
    # with αQE + DBA on top: the plain formulas on the centred vectors
    database = augment_database(c, 3, 1.0)
    first = np.argsort(-np.where(np.arange(30) == 7, -np.inf, database @ c[7]))[:2]
    final = database @ expand_queries(c[7][None], database[first][None], 1.0)[0]
    final[7] = -np.inf
    got = [h.id for h in cat.search(item="item-7", k=5, expansion="centre=1,qe=2,dba=3,alpha=1")]
    assert got == [f"item-{i}" for i in np.argsort(-final)[:5]]
    saved = list((cat.dir / "artifacts" / "whitening").iterdir())
    assert len(saved) == 1 and Whitening.load(saved[0]).n_fit_ == 30
    # 2 more items (< 10 %): the saved mean stays; 5 more in all (> 10 %): refitted on 35
    extra = (rng.normal(size=(5, 6)) + 4.0).astype(np.float32)
    rows = [{"id": f"new-{i}", "path": f"/nowhere/n{i}.jpg"} for i in range(5)]
    cat.add_embedded(rows[:2], extra[:2], "tiny", fingerprint="fp")
    cat.search(item="item-7", k=3, expansion="centre=1")
    assert Whitening.load(saved[0]).n_fit_ == 30
    cat.add_embedded(rows[2:], extra[2:], "tiny", fingerprint="fp")
    assert cat.search(item="new-4", k=3, expansion="centre=1")
    assert Whitening.load(saved[0]).n_fit_ == 35


def test_catalog_search_with_a_colour_window(home):
    """window=N,colour=W on a fused catalog: the CNN part ranks (αQE's neighbours too), the colour part
    re-orders the first N hits at weight W; scores, their shape / colour split and min_score follow."""
    from fakes import vector_catalog
    from lookalike.encoders.colour import COLOUR_DIM, fuse_parts

    rng = np.random.default_rng(8)
    cnn, colour = rng.normal(size=(30, 16)), rng.random((30, COLOUR_DIM)) ** 3
    fused = fuse_parts(cnn, colour, 0.1)
    cat = vector_catalog(home, "window", fused, ["x"] * 30, encoder="effnet-lite0-colour:0.1")
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    c, col = unit(cnn), unit(colour)
    q = 5
    setting = Expansion(qe=3, alpha=1.0, window=4, colour=0.4)
    s = c @ c[q]
    s[q] = -np.inf
    first = np.argsort(-s, kind="stable")[:3]
    expanded = unit(c[q] + np.clip(c[first] @ c[q], 0, None) @ c[first])   # αQE, α = 1
    s = c @ expanded
    s[q] = -np.inf
    order = np.argsort(-s, kind="stable")
    head = order[:4]
    fused_head = 0.6 * s[head] + 0.4 * (col[head] @ col[q])
    expect = np.concatenate([head[np.argsort(-fused_head, kind="stable")], order[4:8]])
    hits = cat.search(item=f"item-{q}", k=8, expansion=setting)
    assert [h.id for h in hits] == [f"item-{i}" for i in expect]
    scores = np.array([h.score for h in hits])
    np.testing.assert_allclose(scores[:4], np.sort(fused_head)[::-1], atol=1e-5)
    np.testing.assert_allclose(scores[4:], np.minimum(0.6 * s[order[4:8]], scores[3]), atol=1e-5)
    assert np.all(np.diff(scores) <= 1e-7)                         # never rising down the list
    for rank, hit in enumerate(hits):
        i = int(hit.id.split("-")[1])
        expect_colour = 0.4 * col[q] @ col[i] if rank < 4 else 0.0
        assert hit.score_parts["visual.colour"] == pytest.approx(expect_colour, abs=1e-5)
        assert hit.score_parts["visual.shape"] + hit.score_parts["visual.colour"] == pytest.approx(hit.score, abs=1e-5)
    cut = cat.search(item=f"item-{q}", k=8, expansion=setting, min_score=float(scores[2]))
    assert [h.id for h in cut] == [h.id for h in hits if h.score >= scores[2]]
    # a colour-blind catalog has no colour part: the window changes nothing
    blind = vector_catalog(home, "blind", unit(cnn).astype(np.float32), ["x"] * 30)
    assert [h.id for h in blind.search(item="item-5", k=6, expansion="qe=3,alpha=1,window=4,colour=0.4")] == \
        [h.id for h in blind.search(item="item-5", k=6, expansion="qe=3,alpha=1")]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_first_stage_from_the_index_gives_the_same_answers(home, monkeypatch, kind):
    """An image / vector query's αQE first stage reads its rows straight from the index
    (``run_search(..., rowids_only=True)``): the same rows, hence the same hits, scores, colour split and
    "no close match" flags, as building the first stage's hits and looking their ids up again
    (the path before), with and without filters and exclusions, on fused and colour-blind catalogs."""
    from fakes import run_search_via_hits, vector_catalog
    from lookalike.encoders.colour import COLOUR_DIM, fuse_parts
    from lookalike.index import faiss_backend
    from lookalike.search import expansion as expansion_module

    if kind == "hnsw":   # a graph index (and no DBA: its catalog is "large"), as a 100k catalog
        monkeypatch.setattr(faiss_backend, "HNSW_THRESHOLD", 100)
        monkeypatch.setattr(expansion_module, "MAX_DBA_ITEMS", 100)

    rng = np.random.default_rng(3)
    n = 300
    cnn, colour = rng.normal(size=(n, 24)), rng.random((n, COLOUR_DIM)) ** 3
    meta = [{"price": float(p)} for p in rng.integers(1, 100, n)]
    labels = [f"l{i % 4}" for i in range(n)]
    fused = vector_catalog(home, f"fused-{kind}", fuse_parts(cnn, colour, 0.1), labels,
                           encoder="effnet-lite0-colour:0.1", metadata=meta)
    blind = vector_catalog(home, f"blind-{kind}", (cnn / np.linalg.norm(cnn, axis=1, keepdims=True)).astype(np.float32),
                           labels, metadata=meta)
    queries = rng.normal(size=(12, fused.vectors()[1].shape[1])).astype(np.float32)
    options = [{}, {"where": {"label": "l1"}}, {"filters": ["price<40"]}, {"examples": []}]

    settings = ["qe=15,alpha=2,window=10,colour=0.2", "qe=5,alpha=3", "centre=1,qe=15,dba=20,alpha=2,window=10,colour=0.2"]

    def answers(cat):
        out = []
        for setting in settings:
            for opts in options:
                for q in queries if cat is fused else queries[:, :24]:
                    hits = cat.search(vector=q, k=10, expansion=setting, **opts)
                    out.append([h.to_dict() for h in hits])
        out.append([h.to_dict() for h in cat.search(item="item-7", k=10, expansion=settings[0], where={"label": "l3"})])
        return out

    for cat in (fused, blind):
        now = answers(cat)
        with monkeypatch.context() as patch:
            patch.setattr(expansion_module, "run_search", run_search_via_hits)
            before = answers(cat)
        assert now == before and sum(map(len, now)) > 200
    weak = [h.get("weak", False) for answer in answers(fused) for h in answer]
    assert any(weak) and not all(weak)   # random queries far from everything, and items: both flags compared
