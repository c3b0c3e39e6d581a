"""`lookalike bench` and its library: realistic vector generator, index/filter/embed benchmarks."""
from __future__ import annotations

import json
import pkgutil
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.bench import studies
from lookalike.cli import app
from lookalike.bench.embed import colour_blind, run_embed_bench, torch_spec
from lookalike.bench.index import recall_at_k, retune, retune_side_by_side
from lookalike.index.faiss_backend import FaissIndex
from lookalike.bench.vectors import EmbeddingGenerator, grow, structure_report, twonn_dimension

import fakes

runner = CliRunner()


def manifold(n: int, dim: int = 64, intrinsic: int = 5, clusters: int = 6, seed: int = 0) -> np.ndarray:
    """Clusters on a low-dimensional curved manifold inside ``dim`` dimensions (like embeddings)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, intrinsic)) * 0.3 + rng.normal(size=(clusters, intrinsic))[rng.integers(0, clusters, n)]
    lift = rng.normal(size=(intrinsic, dim))
    x = np.tanh(latent @ lift) + 0.01 * rng.normal(size=(n, dim))
    return x.astype(np.float32)


def test_generator_keeps_the_structure_not_uniform_noise():
    real = manifold(800)
    generated = EmbeddingGenerator(n_components=16, n_clusters=20, max_rank=64).fit(real).sample(800, seed=3)
    assert generated.shape == real.shape and generated.dtype == np.float32
    d_real, d_gen = twonn_dimension(real), twonn_dimension(generated)
    d_uniform = twonn_dimension(np.random.default_rng(0).random((800, 64)).astype(np.float32))
    assert d_gen < 3 * d_real                           # low-dimensional like the real set...
    assert d_uniform > 2.5 * d_gen                      # ...and nothing like uniform noise
    report = structure_report(generated, sample=300)
    assert set(report) >= {"twonn_dim", "pca_dim_90", "nn1_cos_dist", "relative_contrast"}


def test_generator_samples_differ_between_chunks_and_grow_keeps_real_rows_first():
    real = manifold(400)
    gen = EmbeddingGenerator(n_components=8, n_clusters=10, max_rank=32).fit(real)
    big = gen.sample(300, chunk=100)
    assert not np.allclose(big[:100], big[100:200])     # every chunk draws fresh samples
    grown = grow(real, 700, n_components=8, n_clusters=10, max_rank=32)
    assert grown.shape == (700, 64)
    np.testing.assert_array_equal(grown[:400], real)


def test_recall_at_k_counts_misses():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(np.array([[3, 2, 1], [4, -1, 9]]), truth) == pytest.approx((1 + 1 / 3) / 2)


def test_settings_timed_side_by_side_find_what_each_finds_alone():
    """Alternating settings per search changes nothing but the timing: each setting's hits equal
    those of the same setting measured on its own, and the index's own values come back."""
    base, queries = np.split(manifold(3040, dim=32), [3000])
    index = FaissIndex(32, "l2", kind="hnsw", ef_search=64)
    index.add(np.arange(len(base)), base)
    truth = np.argsort(((queries[:, None] - base[None]) ** 2).sum(-1), 1)[:, :10]
    settings = [{"ef_search": 10}, {"ef_search": 200}]
    rows = retune_side_by_side(index, queries, truth, 10, len(base), "hnsw", 1.0, 2.0, settings)
    assert [r.config for r in rows] == ["hnsw ef_search=10", "hnsw ef_search=200"]
    assert index.ef_search == 64
    for row, setting in zip(rows, settings):
        alone = retune(index, queries, truth, 10, len(base), "hnsw", 1.0, 2.0, **setting)
        assert row.recall == alone.recall and row.p50_ms > 0 and row.build_s == 1.0
    assert rows[1].recall >= rows[0].recall


@pytest.fixture
def vector_catalog(tmp_path):
    """A catalog holding 400 'real' vectors written straight to the store (no images needed)."""
    return fakes.vector_catalog(tmp_path, "vecs", manifold(400, dim=48), [f"c{i % 4}" for i in range(400)])


def test_bench_index_cli_compares_with_exact_search(vector_catalog, tmp_path):
    result = runner.invoke(app, ["bench", "index", "-c", "vecs", "--home", str(tmp_path), "--sizes", "2500",
                                 "--kinds", "hnsw,reduced,reduced-residual", "--queries", "30", "--cache", str(tmp_path / "cache"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert rows[0]["config"].startswith("exact") and rows[0]["recall"] == 1.0
    hnsw = [r for r in rows if r["config"].startswith("hnsw")]
    assert len(hnsw) == 3 and max(r["recall"] for r in hnsw) >= 0.9
    assert all(r["n"] == 2500 and r["index_mb"] > 0 and r["resident_mb"] >= 0 for r in rows)
    reduced = [r for r in rows if r["config"].startswith("reduced")]
    assert [r["config"] for r in reduced] == ["reduced nprobe=48 rerank=25 exact_rerank=2",
                                              "reduced nprobe=64 rerank=30 exact_rerank=0",
                                              "reduced nprobe=64 rerank=30 exact_rerank=2",
                                              "reduced nprobe=48 rerank=20 exact_rerank=2",
                                              "reduced nprobe=32 rerank=25 exact_rerank=2",
                                              "reduced nprobe=32 rerank=20 exact_rerank=2",
                                              "reduced nprobe=48 rerank=25 exact_rerank=1",
                                              "reduced nprobe=48 rerank=25 exact_rerank=0",
                                              "reduced nprobe=32 rerank=20 exact_rerank=0",
                                              "reduced nprobe=48 rerank=25 exact_rerank=2 threads=2",
                                              "reduced nprobe=48 rerank=25 exact_rerank=0 threads=2",
                                              "reduced codes=residual nprobe=64 rerank=20",
                                              "reduced codes=residual nprobe=48 rerank=20",
                                              "reduced codes=residual nprobe=32 rerank=20",
                                              "reduced codes=residual nprobe=48 rerank=15",
                                              "reduced codes=residual nprobe=24 rerank=30",
                                              "reduced codes=residual nprobe=32 rerank=30",
                                              "reduced codes=residual nprobe=48 rerank=30"]
    assert max(r["recall"] for r in reduced) >= 0.9
    assert reduced[0]["resident_mb"] >= 0         # codes in RAM: a few kB at this size, may round to 0
    # the exact re-rank reads vectors.npy (2500 x 48 float32) by pread; exact_rerank=0 reads nothing
    assert [r["disk_mb"] for r in reduced[:2]] == [pytest.approx(2500 * 48 * 4 / 1e6), 0.0]
    assert set(data["structure"]) == {"real", "generated"}
    assert list((tmp_path / "cache").glob("base-*-2500.npy"))   # grown set cached for the next run


def test_bench_search_cli_filters_beat_search_then_filter(vector_catalog, tmp_path):
    result = runner.invoke(app, ["bench", "search", "-c", "vecs", "--home", str(tmp_path), "--size", "3000",
                                 "--kind", "hnsw", "--selectivity", "0.5,0.02", "--queries", "20",
                                 "--cache", str(tmp_path / "cache"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["selectivity"] for r in rows] == [0.5, 0.02]
    for row in rows:
        assert row["recall"] >= 0.9 and row["old_recall"] >= 0.9    # cost model and the fixed 3k rule
        assert row["path"] in ("exact", "ann") and row["sql_ms"] > 0 and row["arrays_ms"] > 0
    assert abs(rows[1]["matching"] / 3000 - 0.02) < 0.01   # the synthetic range + set filter matches ~2 %
    assert rows[1]["postfilter_fill"] < 1.0            # search-then-filter cannot fill k at 2 %


def test_bench_cli_reports_user_errors_cleanly(vector_catalog, tmp_path):
    result = runner.invoke(app, ["bench", "index", "-c", "vecs", "--home", str(tmp_path), "--kinds", "nope"])
    assert result.exit_code == 1 and "unknown kind" in result.output
    result = runner.invoke(app, ["bench", "search", "-c", "vecs", "--home", str(tmp_path), "--selectivity", "2"])
    assert result.exit_code == 1 and "(0, 1]" in result.output
    result = runner.invoke(app, ["bench", "index", "-c", "missing", "--home", str(tmp_path)])
    assert result.exit_code == 1 and "not found" in result.output


def test_embed_bench_runs_naive_and_pipeline_on_the_same_images(shapes_folder):
    result = run_embed_bench(shapes_folder, "colour-hist", limit=12, batch_size=4, naive=True, query_images=5)
    rows = result.rows
    assert [r.images for r in rows] == [12, 12]
    assert [(q.method, q.images) for q in result.query] == [("now: colour-hist, fp32", 5)]
    q = result.query[0]
    assert 0 < q.decode_ms and 0 < q.preprocess_ms and 0 < q.model_ms and q.p50_ms <= q.p90_ms
    assert rows[0].method.startswith("naive") and rows[0].speedup == 1.0
    assert all(r.images_per_s > 0 and 0 <= r.cores_busy for r in rows)
    assert torch_spec("effnet-lite0") == "effnet-lite0:runtime=torch"
    assert torch_spec("effnet-lite0:pool=gem") == "effnet-lite0:pool=gem,runtime=torch"
    assert torch_spec("colour-hist") == "colour-hist"
    assert colour_blind("effnet-lite0-colour:0.1") == "effnet-lite0" and colour_blind("colour-hist") is None
    assert colour_blind("effnet-lite2:colour=0.1") == "effnet-lite2" and colour_blind("effnet-lite1") is None


@pytest.mark.slow   # five lite0 pipeline runs, two int8 calibrations and a subprocess
def test_embed_bench_default_vs_colour_blind_fp32_int8_and_a_baseline_checkout(shapes_folder):
    src = Path(__file__).resolve().parents[2] / "src"
    result = run_embed_bench(shapes_folder, "effnet-lite0-colour:0.1", limit=20, batch_size=8, baseline_src=src,
                             query_images=6)
    rows = result.rows
    methods = [r.method for r in rows]
    assert [m.split(":")[0] for m in methods] == ["before (" + str(src) + ")"] * 2 + ["now"] * 4
    assert "int8" in methods[-1] and "effnet-lite0-colour:0.1" in methods[-1]
    assert all(r.images == 20 and r.images_per_s > 0 and r.cores_busy > 0 for r in rows)
    assert rows[1].vs_colour_blind == pytest.approx(rows[1].images_per_s / rows[0].images_per_s)
    # single-image latency: the same six configurations, the int8 ones with the same labels as above
    query = result.query
    assert [q.method for q in query][2:] == methods[2:]
    assert [q.method.split(":")[0] for q in query[:2]] == ["before (" + str(src) + ")"] * 2
    assert all(q.images == 6 and q.p50_ms > 0 for q in query)
    assert query[3].vs_colour_blind == pytest.approx(query[2].p50_ms / query[3].p50_ms)


def test_bench_api_load_test_is_bounded_and_reports_each_scenario(home, shapes_folder, tmp_path):
    """`lookalike bench api` starts a loopback server per configuration (anchor: 1 worker without HTTP
    caching or the similar-items table; now: 2 workers), sends a bounded number of requests per concurrency, writes JSON."""
    fakes.indexed_catalog(home, shapes_folder, name="load")
    report = tmp_path / "load.json"
    result = CliRunner().invoke(app, ["bench", "api", "--catalog", "load", "--home", str(home), "--requests", "8",
                                      "--duration", "20", "--concurrency", "1,3", "--workers", "2",
                                      "--json", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    rows = {(r["config"], r["scenario"], r["concurrency"]): r for r in data["results"]}
    assert set(rows) == {(c, s, n) for c in ("anchor", "now") for s in ("item", "upload") for n in (1, 3)}
    assert all(r["errors"] == 0 and 0 < r["requests"] <= 8 and r["p50_ms"] > 0 for r in rows.values())
    assert data["setup"]["configs"] == {"anchor": "1 worker, no HTTP caching, live search (no similar-items table)",
                                        "now": "2 workers"}
    # where the time goes: CPU per request of the server's processes and of the load generator
    assert all(r["server_cpu_ms"] is not None and r["server_cpu_ms"] >= 0 and r["client_cpu_ms"] > 0
               for r in rows.values())
    assert "load average" in result.output and "QPS" in result.output
    # which model embedded the upload rows' photos (a catalog this small never calibrates int8)
    assert data["setup"]["query_model"] == "the encoder's default runtime (the catalog holds no int8 choice)"
    assert "uploads embed with: the encoder's default runtime" in result.output


def test_grown_catalog_keeps_real_items_and_is_reused(vector_catalog, tmp_path):
    from lookalike.bench.api import grown_catalog

    logs = []
    grown = grown_catalog(vector_catalog, 600, log=logs.append)
    assert grown.name == "bench-vecs-600" and len(grown) == 600
    ids, matrix = grown.vectors()
    real_ids, real = vector_catalog.vectors()
    np.testing.assert_allclose(matrix[:400], real, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(matrix[400:], axis=1), 1.0, rtol=1e-4)
    extra = grown.get(ids[500])
    assert extra.id.startswith("sku-") and extra.path == vector_catalog.get(real_ids[100]).path
    assert {"product_id", "brand", "colour", "price", "in_stock", "added"} <= set(extra.metadata)
    assert grown.count(filters=["price<30"]) > 0              # shop-like columns the filters can read
    again = grown_catalog(vector_catalog, 600, log=logs.append)
    assert len(again) == 600 and logs[-1] == "reusing catalog bench-vecs-600 (600 items)"


def test_grown_catalog_keeps_the_source_int8_choice(vector_catalog):
    """Query images of a grown catalog embed as its source's vectors were: the int8 choice and the
    calibrated model file come along (else uploads would run the fp32 model against int8 vectors)."""
    from lookalike.bench.api import grown_catalog

    spec = vector_catalog.default_encoder
    model = vector_catalog.dir / "artifacts" / "int8" / "abc" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"calibrated")
    choice = {"runtime": "onnx-int8", "int8_model": "artifacts/int8/abc/model.onnx", "seconds": 1.0}
    fakes.record_runtime_choice(vector_catalog, spec, choice)
    grown = grown_catalog(vector_catalog, 500, log=lambda m: None)
    assert grown.runtime_choice(spec) == choice
    assert (grown.dir / choice["int8_model"]).read_bytes() == b"calibrated"
    from lookalike.bench.api import query_model
    assert query_model(grown).startswith("int8 ONNX calibrated on the catalog")
    fakes.record_runtime_choice(grown, spec, {**choice, "runtime": "onnx", "summary": "int8 not chosen: loss 0.01"})
    assert query_model(grown) == "fp32 ONNX (int8 not chosen: loss 0.01)"


def test_load_generator_counts_statuses_and_errors(client_server):
    from lookalike.bench.load import Request, run_load

    url, item_id = client_server
    ok = Request("GET", f"/api/items/{item_id}/similar?k=3", label="similar")
    missing = Request("GET", "/api/items/no-such-item/similar", label="missing", ok=(404,))
    bad = Request("GET", "/api/items?limit=0", label="bad")          # 422, counted as an error
    result = run_load(url, [ok, missing, bad], concurrency=3, max_requests=30, duration=60)
    assert result.requests == 30 and result.statuses == {200: 10, 404: 10, 422: 10}
    assert result.errors == 10 and result.by_label["bad"]["errors"] == 10 and result.by_label["missing"]["errors"] == 0
    assert result.qps > 0 and 0 < result.p50_ms <= result.p99_ms


@pytest.fixture
def client_server(home, shapes_folder):
    """`lookalike serve` (1 worker) on the shapes catalog at a free loopback port: (url, an item id)."""
    from lookalike.bench.api import free_port, start_server, stop_server, wait_ready

    cat = fakes.indexed_catalog(home, shapes_folder)
    port = free_port()
    server = start_server("shapes", str(home), port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
        from urllib.parse import quote
        yield f"http://127.0.0.1:{port}", quote(cat.items(limit=1)[0].id, safe="")
    finally:
        stop_server(server)


def test_bench_api_refuses_non_loopback_urls():
    from lookalike.bench.api import check_loopback

    with pytest.raises(SystemExit):
        check_loopback("http://10.0.0.5:8000")


STUDIES = sorted(m.name for m in pkgutil.iter_modules(studies.__path__))


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_runs_with_python_m(study, monkeypatch, capsys):
    """The research studies are not run by the suite (minutes to hours on real data), so at least
    check each one still imports the library names it uses and parses its command line: what
    `python -m lookalike.bench.studies.STUDY --help` runs, in this process (a new interpreter per
    study cost 5-18 s each here)."""
    monkeypatch.setattr(sys, "argv", [study, "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(f"lookalike.bench.studies.{study}", run_name="__main__", alter_sys=True)
    assert exit_.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def test_bench_api_takes_the_readme_short_option(tmp_path, capsys):
    """The README's `lookalike bench api -c sample` was an argparse usage error naming __main__.py."""
    from lookalike.bench.api import main

    with pytest.raises(SystemExit) as exit_:
        main(["-c", "nope", "--home", str(tmp_path)])
    assert "nope" in str(exit_.value.code)          # got as far as opening the catalog
    with pytest.raises(SystemExit):
        main(["--home", str(tmp_path)])
    assert "usage: lookalike bench api" in capsys.readouterr().err
