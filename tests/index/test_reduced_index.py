"""The ``reduced`` faiss kind (learned PCA -> IVF over fast-scan PQ codes refined on float16, re-rank
on 8-bit codes of the full vectors, the float32 vectors kept on disk) and the filtered-search cost
model, on generated vectors."""
from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest

import lookalike.index.faiss_backend as faiss_backend
from lookalike.index import load_index
from lookalike.index.distances import exact_knn
from lookalike.index.faiss_backend import FaissIndex

DIM = 64


def generated(n: int, seed: int = 0) -> np.ndarray:
    """Clustered vectors whose variance lives in a few directions (as real embeddings do)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0][:24]
    centres = rng.normal(size=(30, 24)) * 2
    z = centres[rng.integers(0, 30, n)] + 0.6 * rng.normal(size=(n, 24))
    return (z @ basis + 0.05 * rng.normal(size=(n, DIM))).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


VECTORS, QUERIES = np.split(generated(4040), [4000])
IDS = np.arange(4000, dtype=np.int64) * 3 + 1


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_reduced_recall_save_load_round_trip(tmp_path, metric):
    index = FaissIndex(DIM, metric, kind="reduced", pca_dim=32, workdir=tmp_path / "work")
    index.add(IDS, VECTORS)
    assert index.describe() == f"faiss reduced ({metric}, 4000 vectors, PCA 32-d, IVF102)"
    dist, found = index.search(QUERIES, 10)
    true_dist, pos = exact_knn(QUERIES, VECTORS, 10, metric)
    assert recall(found, IDS[pos]) >= 0.95
    # re-ranked on 8-bit codes of the full vectors: distances within a quantisation step of exact
    hit = found[:, 0] == IDS[pos[:, 0]]
    assert np.allclose(dist[hit, 0], true_dist[hit, 0], rtol=0.01, atol=2e-3)
    sq = index._sq()                                          # the re-rank stage, inside faiss
    assert sq.sq.qtype == faiss.ScalarQuantizer.QT_8bit and (sq.ntotal, sq.code_size) == (4000, DIM)
    decoded = index._decode(np.array([3, 7]))                 # within half a step of the vectors
    assert np.abs(decoded - index.stored_vectors(np.array([3, 7]))).max() <= sq.sq.trained.at(DIM) / 255

    index.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "vectors.npy").exists()
    assert list((tmp_path / "work").glob(".full-*")) == []    # the unsaved file became vectors.npy
    loaded = load_index(tmp_path / "idx")
    assert isinstance(loaded._full, np.memmap)                # full vectors stay on disk
    assert not (tmp_path / "idx" / "codes.npy").exists()      # their codes live in index.faiss
    assert loaded._sq().ntotal == 4000
    assert loaded.describe() == index.describe()
    again_dist, again = loaded.search(QUERIES, 10)
    assert np.array_equal(again, found) and np.allclose(again_dist, dist)
    assert np.allclose(loaded.stored_vectors(np.array([5])), index.stored_vectors(np.array([5])))


def test_reduced_assigns_lists_by_the_leading_pca_dimensions(tmp_path, monkeypatch):
    """The IVF's coarse quantizer compares only the first ``coarse_dim`` PCA dimensions (a faiss
    ``RemapDimensionsTransform`` before a flat quantizer), keeps recall, and survives a save/load;
    ``coarse_dim`` >= the PCA's dimension gives the plain flat quantizer."""
    index = FaissIndex(DIM, "cosine", kind="reduced", pca_dim=32, coarse_dim=8, workdir=tmp_path / "work")
    index.add(IDS, VECTORS)
    assert index.describe() == "faiss reduced (cosine, 4000 vectors, PCA 32-d, IVF102 by the first 8 dims)"
    ivf = faiss.extract_index_ivf(index._reduced_parts()[1])
    quantizer = faiss.downcast_index(ivf.quantizer)
    assert isinstance(quantizer, faiss.IndexPreTransform) and quantizer.index.d == 8 and quantizer.ntotal == ivf.nlist
    # every vector sits in the list of its nearest centroid by those 8 dimensions alone
    reduced = index._reduced_parts()[0].apply(VECTORS[:200])
    centroids = faiss.downcast_index(quantizer.index).reconstruct_n(0, ivf.nlist)
    expected = np.argmin(((reduced[:, None, :8] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (ivf.quantizer.assign(reduced, 1).ravel() == expected).all()
    _, found = index.search(QUERIES, 10)
    assert recall(found, IDS[exact_knn(QUERIES, VECTORS, 10, "cosine")[1]]) >= 0.95
    monkeypatch.setattr(faiss_backend, "SUBSET_EXACT_MAX", 1000)   # no calibration at this size
    for share in (7, 2):   # filtered: an exact subset scan (1 in 7 allowed) and the IVF through a selector
        allowed = np.arange(0, 4000, share)
        assert index.prefers_exact(len(allowed)) == (share == 7)
        _, hits = index.search(QUERIES, 10, allowed_ids=IDS[allowed])
        assert np.isin(hits, IDS[allowed]).all()
        assert recall(hits, IDS[allowed][exact_knn(QUERIES, VECTORS[allowed], 10, "cosine")[1]]) >= 0.9
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx")
    assert loaded.coarse_dim == 8 and loaded.describe() == index.describe()
    assert (loaded.search(QUERIES, 10)[1] == found).all()
    with pytest.raises(ValueError, match="coarse_dim"):
        FaissIndex(DIM, kind="reduced", coarse_dim=0)


def test_residual_codes_carry_less_error_than_codes_of_the_whole_vector(tmp_path):
    """codes="residual": the 8-bit codes hold what the PCA drops, scored with the
    float16 PCA distance; the decoded vectors are several times closer to the stored ones than
    8-bit codes of the whole vector, and search is at least as good; appends, filters and a
    reload take the same two-stage path. (The codes' own ranking: no exact re-rank from disk.)"""
    built = {}
    for codes in ("residual", "full"):
        index = FaissIndex(DIM, "l2", kind="reduced", pca_dim=16, codes=codes, exact_rerank=0, workdir=tmp_path)
        index.add(IDS[:3000], VECTORS[:3000])
        index.add(IDS[3000:], VECTORS[3000:])                 # appended: residuals of the same PCA
        built[codes] = index
    positions = np.arange(0, 4000, 7)
    error = {codes: float(((index._decode(positions) - VECTORS[positions]) ** 2).sum(1).mean())
             for codes, index in built.items()}
    assert error["residual"] < error["full"] / 3
    _, pos = exact_knn(QUERIES, VECTORS, 10, "l2")
    dist = {}
    for codes, index in built.items():
        dist[codes], found = index.search(QUERIES, 10)
        assert recall(found, IDS[pos]) >= 0.95
    true_dist = np.sqrt(((QUERIES[:, None] - VECTORS[pos]) ** 2).sum(-1))
    assert np.abs(dist["residual"] - true_dist).mean() < np.abs(dist["full"] - true_dist).mean()
    index = built["residual"]
    allowed = IDS[::40]
    for prefer in (True, False):
        index.prefers_exact = lambda m, prefer=prefer: prefer
        _, found = index.search(QUERIES, 10, allowed_ids=allowed)
        assert np.isin(found, allowed).all()
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx")
    assert loaded.codes == "residual"
    again_dist, again = loaded.search(QUERIES, 10)
    assert np.array_equal(again, index.search(QUERIES, 10)[1])
    with pytest.raises(ValueError, match="codes"):
        FaissIndex(DIM, "cosine", kind="reduced", codes="half")


def test_reduced_refits_its_pca_when_the_data_doubles(tmp_path):
    index = FaissIndex(DIM, "cosine", kind="reduced", pca_dim=32, workdir=tmp_path)
    index.add(IDS[:2500], VECTORS[:2500])
    assert index._fitted_n == 2500
    index.add(IDS[2500:3000], VECTORS[2500:3000])             # appended: the PCA is kept
    assert index._fitted_n == 2500 and len(index) == 3000
    _, found = index.search(VECTORS[2990:2995], 1)
    assert list(found[:, 0]) == list(IDS[2990:2995])          # appended vectors are found
    more = generated(3000)[::-1] + 0.01
    index.add(np.arange(3000, dtype=np.int64) + 10**6, more)  # 6000 > 2 x 2500: refitted
    assert index._fitted_n == 6000 and len(index) == 6000
    assert index.remove(IDS[:100]) == 100 and len(index) == 5900
    _, found = index.search(VECTORS[:5], 10)
    assert not np.isin(found, IDS[:100]).any()
    assert len(list(tmp_path.glob(".full-*"))) == 1           # replaced full-vector files are removed


def test_reduced_filtered_search_both_paths_stay_inside_the_filter(tmp_path):
    index = FaissIndex(DIM, "cosine", kind="reduced", pca_dim=32, workdir=tmp_path)
    index.add(IDS, VECTORS)
    for share in (0.005, 0.05, 0.5):
        allowed = IDS[np.random.default_rng(1).random(len(IDS)) < share]
        _, pos = exact_knn(QUERIES, VECTORS[np.isin(IDS, allowed)], 10, "cosine")
        truth = allowed[pos]
        for prefer in (True, False):                          # both paths, whatever the cost model says
            index.prefers_exact = lambda m, prefer=prefer: prefer
            _, found = index.search(QUERIES, 10, allowed_ids=allowed)
            assert np.isin(found[found >= 0], allowed).all()
            assert (found >= 0).all() or len(allowed) < 10
            # the subset scan scores every allowed item on 8-bit codes of its vector: near-ties may swap
            assert recall(found, truth) >= (0.95 if prefer else 0.9)


def test_cost_model_prefers_the_cheaper_path():
    index = FaissIndex(DIM, "cosine", kind="hnsw")
    index.add(IDS, VECTORS)
    # measured costs (ms) at 0.1 %, 1 %, 10 %, 50 % allowed: exact grows with the subset, the
    # filtered graph gets dearer as the filter gets selective; they cross between 1 % and 10 %
    index.filter_costs = {"shares": [0.001, 0.01, 0.1, 0.5], "exact_ms": [0.05, 0.5, 5.0, 25.0],
                          "ann_ms": [40.0, 8.0, 1.0, 0.5]}
    assert index.prefers_exact(4) and index.prefers_exact(40)         # 0.1 %, 1 %
    assert not index.prefers_exact(400) and not index.prefers_exact(2000)
    index.filter_policy = "threshold"                                  # the fixed rule, for comparison
    assert index.prefers_exact(2000) == (2000 <= faiss_backend.SUBSET_EXACT_MAX)


def test_cost_model_is_calibrated_at_build_time_and_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_backend, "HNSW_THRESHOLD", 1000)
    index = FaissIndex(DIM, "cosine", kind="hnsw")
    index.add(IDS, VECTORS)                                   # >= HNSW_THRESHOLD: calibrated
    costs = index.filter_costs
    assert costs["shares"] == [s for s in faiss_backend.CALIBRATION_SHARES if s * len(IDS) >= 10]
    assert len(costs["exact_ms"]) == len(costs["ann_ms"]) == len(costs["shares"])
    assert all(t > 0 for t in costs["exact_ms"] + costs["ann_ms"])
    assert index.prefers_exact(10)   # ten items: one scan of ten vectors beats a graph search widened 400x
    index.save(tmp_path / "idx")
    assert load_index(tmp_path / "idx").filter_costs == costs
    small = FaissIndex(DIM, "cosine", kind="hnsw")
    small.add(IDS[:900], VECTORS[:900])
    assert small.filter_costs is None                         # below HNSW_THRESHOLD: the fixed rule


def test_a_catalog_serves_search_from_a_reduced_index(tmp_path):
    """Through the facade: the index folder keeps the full vectors as vectors.npy, nothing is left
    in the work folder, and a reopened catalog loads the saved index (its PCA included)."""
    from lookalike.catalog import Catalog

    from fakes import vector_catalog

    vector_catalog(tmp_path, "big", VECTORS, [f"c{i % 5}" for i in range(len(VECTORS))])
    cat = Catalog.open("big", home=tmp_path, kind="reduced", pca_dim=32)
    hits = cat.search(vector=VECTORS[7], k=5)
    assert hits[0].distance < 2e-3                       # the item itself, within a quantisation step
    folders = list((tmp_path / "catalogs" / "big" / "index").rglob("vectors.npy"))
    assert len(folders) == 1 and not list((tmp_path / "catalogs" / "big").rglob(".full-*"))
    again = Catalog.open("big", home=tmp_path, kind="reduced", pca_dim=32).search(vector=VECTORS[7], k=5)
    assert [h.id for h in again] == [h.id for h in hits]


def _save_legacy(index: FaissIndex, folder, codes: bool) -> None:
    """``index`` saved as sessions before the faiss re-rank did: PCA -> IVF/HNSW alone in
    index.faiss, the 8-bit codes in codes.npy + code_scale.npy (``codes``) or no codes at all."""
    index.save(folder)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["codes"]                                         # the setting did not exist then
    (folder / "meta.json").write_text(json.dumps(meta))
    faiss.write_index(faiss.downcast_index(index._index.base_index), str(folder / "index.faiss"))
    if codes:
        sq = index._sq()
        raw = faiss.rev_swig_ptr(sq.codes.data(), sq.ntotal * sq.code_size)
        codes = np.frombuffer(raw, np.uint8).reshape(sq.ntotal, -1)[:, :index.dim]   # unpadded then
        np.save(folder / "codes.npy", codes.copy())
        vmin, vdiff = (part[:index.dim] for part in np.split(faiss.vector_to_array(sq.sq.trained), 2))
        np.save(folder / "code_scale.npy", np.stack([vmin + vdiff / 510, vdiff / 255]))


@pytest.mark.parametrize("structure, dim", [("ivf", DIM), ("hnsw", DIM), ("ivf", DIM - 3)])
@pytest.mark.parametrize("codes", [True, False])
def test_reduced_indexes_saved_in_older_layouts_load_and_search_the_same(tmp_path, structure, dim, codes):
    """structure="hnsw" (the graph ``reduced`` used before the 1M run) still builds and searches;
    an index saved with its codes in codes.npy, or before the codes existed, loads as the current
    layout (codes copied in, or encoded from vectors.npy) and answers as it did. A width that is
    not a multiple of 16 (61) gets zero-padded codes, invisible in the distances."""
    vectors, queries = VECTORS[:, :dim], QUERIES[:, :dim]
    index = FaissIndex(dim, "cosine", kind="reduced", pca_dim=32, structure=structure, workdir=tmp_path)
    index.add(IDS, vectors)
    assert index.describe().endswith("PCA 32-d, HNSW)" if structure == "hnsw" else "PCA 32-d, IVF102)")
    assert index._sq().code_size == 64                        # padded to a multiple of 16
    true_dist, pos = exact_knn(queries, vectors, 10, "cosine")
    dist, found = index.search(queries, 10)
    assert recall(found, IDS[pos]) >= 0.95
    hit = found[:, 0] == IDS[pos[:, 0]]
    assert np.allclose(dist[hit, 0], true_dist[hit, 0], rtol=0.01, atol=2e-3)
    _save_legacy(index, tmp_path / "idx", codes)
    old = load_index(tmp_path / "idx")
    assert old._built_kind() == "reduced" and old._sq().ntotal == len(IDS)
    again_dist, again = old.search(queries, 10)
    assert np.array_equal(again, found) and np.allclose(again_dist, dist, atol=1e-6)
    with pytest.raises(ValueError, match="structure"):
        FaissIndex(DIM, "cosine", kind="reduced", structure="graph")


def test_reduced_returns_k_hits_when_fewer_candidates_than_asked_exist(tmp_path):
    """faiss pads missing candidates with -1 at +inf: under the L2 re-rank they sort last, so a
    tiny filter or a tiny catalog still gets its real hits first (cosine included)."""
    index = FaissIndex(DIM, "cosine", kind="reduced", pca_dim=32, nprobe=1, workdir=tmp_path)
    index.add(IDS, VECTORS)
    allowed = IDS[::400]                                      # 10 items, spread over the lists
    index.prefers_exact = lambda m: False                     # the filtered IVF path
    dist, found = index.search(QUERIES, 10, allowed_ids=allowed)
    real = found >= 0
    assert real.any() and np.isin(found[real], allowed).all()
    assert all(row[:r.sum()].all() for row, r in zip(real, real))   # hits first, padding last
    assert np.isfinite(dist[real]).all() and np.isinf(dist[~real]).all()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_the_exact_rerank_reads_the_full_vectors_from_disk(tmp_path, monkeypatch, metric):
    """The codes' best exact_rerank·k candidates are re-ranked on the float32 vectors of
    vectors.npy, read with one pread per row (not mapped): distances are exact, the ranking equals
    exact search whenever the true neighbours are among the candidates, on every search path, and
    the saved index (descriptor reopened on the renamed file) answers the same."""
    reads = []
    preadv = os.preadv

    def counting(fd, buffers, offset):
        reads.append(offset)
        return preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", counting)
    index = FaissIndex(DIM, metric, kind="reduced", pca_dim=32, exact_rerank=3, workdir=tmp_path / "work")
    index.add(IDS, VECTORS)
    true_dist, pos = exact_knn(QUERIES, VECTORS, 10, metric)
    reads.clear()
    dist, found = index.search(QUERIES, 10)
    assert len(reads) == 30 * len(QUERIES)                    # the codes' top 3·k of each query
    assert recall(found, IDS[pos]) >= 0.97
    same = (found == IDS[pos]).all(1)
    assert same.mean() >= 0.8 and np.allclose(dist[same], true_dist[same], atol=1e-5)
    rows = index._read_full(np.array([9, 2, 9]))
    assert np.array_equal(rows, index.stored_vectors(np.array([9, 2, 9])))

    approximate = FaissIndex(DIM, metric, kind="reduced", pca_dim=32, exact_rerank=0, workdir=tmp_path / "work")
    approximate.add(IDS, VECTORS)
    reads.clear()
    coded, _ = approximate.search(QUERIES, 10)
    assert reads == []                                        # the codes' ranking is final
    assert np.abs(coded - true_dist).mean() > 10 * np.abs(dist - true_dist).mean()

    allowed = IDS[np.random.default_rng(2).random(len(IDS)) < 0.1]
    _, sub = exact_knn(QUERIES, VECTORS[np.isin(IDS, allowed)], 10, metric)
    for prefer in (True, False):                              # both filtered paths end exactly too
        index.prefers_exact = lambda m, prefer=prefer: prefer
        sub_dist, sub_found = index.search(QUERIES, 10, allowed_ids=allowed)
        assert np.isin(sub_found, allowed).all() and recall(sub_found, allowed[sub]) >= 0.95
    del index.prefers_exact

    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx")
    assert loaded.exact_rerank == 3
    again_dist, again = loaded.search(QUERIES, 10)
    assert np.array_equal(again, found) and np.allclose(again_dist, dist)
    assert loaded._reader.path == tmp_path / "idx" / "vectors.npy"
    old_reader = index._reader                                # a search may still hold it: kept open
    index.add(IDS[:1] + 10**6, VECTORS[:1])                   # a new full-vector file, a new descriptor
    index.search(QUERIES[:1], 10)
    assert index._reader is not old_reader and os.fstat(old_reader.fd).st_size > 0
    fd = old_reader.fd
    del old_reader                                            # its last user: closed
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError, match="exact_rerank"):
        FaissIndex(DIM, metric, kind="reduced", exact_rerank=-1)


def test_the_exact_rerank_of_a_tiny_filter_scores_every_allowed_item(tmp_path):
    """Fewer allowed items than candidates: all of them are read and ranked exactly."""
    index = FaissIndex(DIM, "cosine", kind="reduced", pca_dim=32, workdir=tmp_path)
    index.add(IDS, VECTORS)
    allowed = IDS[5:12]                                       # 7 items < k
    true_dist, pos = exact_knn(QUERIES, VECTORS[5:12], 7, "cosine")
    for prefer in (True, False):
        index.prefers_exact = lambda m, prefer=prefer: prefer
        dist, found = index.search(QUERIES, 10, allowed_ids=allowed)
        assert np.array_equal(found[:, :7], allowed[pos]) and (found[:, 7:] == -1).all()
        assert np.allclose(dist[:, :7], true_dist, atol=1e-5) and np.isinf(dist[:, 7:]).all()


def test_a_reduced_search_on_two_threads_answers_as_on_one(tmp_path, monkeypatch):
    """``threads``: single queries of ``reduced`` may use an OpenMP team (the fast-scan split over
    the probed lists); the answers equal one thread's, filtered or not, the caller's OpenMP setting
    is restored, the team never exceeds the caller's pool, and other kinds stay on one thread."""
    index = FaissIndex(DIM, "cosine", kind="reduced", pca_dim=32, nprobe=16, workdir=tmp_path)
    index.add(IDS, VECTORS)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        answers = {}
        allowed = IDS[::3]
        for threads in (1, 2):
            index.threads = threads
            answers[threads] = [index.search(q[None], 10) for q in QUERIES] + \
                [index.search(q[None], 10, allowed_ids=allowed) for q in QUERIES[:10]]
            assert faiss.omp_get_max_threads() == 2
        for (d1, f1), (d2, f2) in zip(answers[1], answers[2]):
            assert np.array_equal(f1, f2) and np.allclose(d1, d2, atol=1e-6)
        assert index._search_threads(2) == 2 and index._search_threads(1) == 1   # capped by the pool
        index.threads = None
        monkeypatch.setattr(faiss_backend, "SEARCH_THREADS", 2)
        assert index._search_threads(4) == 2
        flat = FaissIndex(DIM, "cosine", kind="flat", threads=2)
        flat.add(IDS[:100], VECTORS[:100])
        assert flat._search_threads(2) == 1
    finally:
        faiss.omp_set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        FaissIndex(DIM, "cosine", kind="reduced", threads=0)
