"""``lookalike bench embed|index|search|models``: figures measured side by side in one run."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lookalike.bench.api import main as load_test
from lookalike.bench.data import bench_vectors, real_vectors
from lookalike.bench.embed import run_embed_bench
from lookalike.bench.index import INDEX_CONFIGS, filter_bench, index_configs, run_index_bench
from lookalike.config import DEFAULT_ENCODER
from lookalike.cli.app import CatalogOption, HomeOption, bench_app, console, fail, open_catalog, out, print_json
from lookalike.data.sources import SourceError
from lookalike.index.faiss_backend import KINDS

DEFAULT_CACHE = Path.home() / ".cache" / "lookalike-bench"


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(float(v)) for v in text.replace("_", "").split(",") if v.strip()]
    except ValueError:
        fail(f"{what} must be comma-separated numbers, e.g. 10000,100000")
    if not values or min(values) < 1:
        fail(f"{what} must be positive numbers")
    return values


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{what} must be comma-separated numbers, e.g. 0.1,0.01")
    if not values or not all(0 < v <= 1 for v in values):
        fail(f"{what} must lie in (0, 1]")
    return values


def _table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> Table:
    """columns: (key, header, format)."""
    table = Table(title=title)
    for _, header, _ in columns:
        table.add_column(header, justify="right" if header != "config" else "left")
    for row in rows:
        table.add_row(*[format(row[key], fmt) if isinstance(row[key], (int, float)) else str(row[key])
                        for key, _, fmt in columns])
    return table


def _real_vectors(catalog: str, home, encoder: Optional[str]):
    try:
        return real_vectors(open_catalog(catalog, home), encoder)
    except ValueError as exc:
        fail(str(exc))


@bench_app.command("index")
def bench_index(
    catalog: str = typer.Option(..., "--catalog", "-c", help="Catalog whose real embeddings seed the generator."),
    sizes: str = typer.Option("10000,100000", help="Index sizes, comma-separated (e.g. 10000,100000,1000000)."),
    kinds: str = typer.Option("reduced,ivfpq,hnsw", help=f"faiss kinds to compare with exact search: {', '.join(INDEX_CONFIGS)}."),
    queries: int = typer.Option(200, min=10, max=5000, help="Real held-out query vectors."),
    k: int = typer.Option(10, min=1, max=100),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e"),
    cache: Path = typer.Option(DEFAULT_CACHE, help="Where grown vector sets are cached."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Build time, memory, single-query latency and recall@k vs exact search, per index kind and size.

    Base vectors: the catalog's real embeddings, grown to each size by a generator fitted on them
    (PCA + Gaussian mixture, see lookalike.bench.vectors); queries: real embeddings held out of both.
    """
    try:
        configs = index_configs([c.strip() for c in kinds.split(",") if c.strip()])
    except ValueError as exc:
        fail(str(exc))
    real = _real_vectors(catalog, home, encoder)
    results, structures = [], {}
    for n in _ints(sizes, "--sizes"):
        with console.status(f"preparing {n:,} vectors"):
            data = bench_vectors(real, n, queries, cache, with_structure=not structures)
        if data.structure:
            structures = data.structure
            if not json_out:
                out.print(_table("real vs generated vectors (structure that matters for search)",
                                 [dict(set=name, **figures) for name, figures in structures.items()],
                                 [("set", "set", ""), ("n", "n", ",d"), ("twonn_dim", "TwoNN dim", ".1f"),
                                  ("pca_dim_90", "PCA dims for 90%", "d"), ("nn1_cos_dist", "1-NN dist", ".3f"),
                                  ("relative_contrast", "mean/1-NN dist", ".2f")]))
        with console.status(f"benchmarking {n:,} vectors"):
            rows = run_index_bench(data.base, data.queries, configs, k=k, workdir=cache,
                                   on_row=lambda r: console.log(f"{r.config}: build {r.build_s:.1f} s, {r.index_mb:,.0f} MB, "
                                                               f"resident {r.resident_mb:,.0f} MB (+ {r.disk_mb:,.0f} MB read from disk), "
                                                               f"p50 {r.p50_ms:.3f} ms, "
                                                               f"p95 {r.p95_ms:.3f} ms, recall {r.recall:.3f}"))
        rows = [r.to_dict() for r in rows]
        results.extend(rows)
        if not json_out:
            out.print(_table(f"{n:,} vectors x {data.base.shape[1]} d ({data.real_count:,} real), "
                             f"{len(data.queries)} real queries, top-{k}", rows,
                             [("config", "config", ""), ("build_s", "build s", ".1f"), ("index_mb", "index MB", ",.0f"),
                              ("resident_mb", "resident MB", ",.0f"), ("disk_mb", "read from disk MB", ",.0f"),
                              ("p50_ms", "p50 ms", ".3f"), ("p95_ms", "p95 ms", ".3f"),
                              ("recall", f"recall@{k}", ".3f"), ("speedup", "x exact", ".1f")]))
    if json_out:
        print_json({"rows": results, "structure": structures})


@bench_app.command("search")
def bench_search(
    catalog: str = typer.Option(..., "--catalog", "-c", help="Catalog whose real embeddings seed the generator."),
    size: int = typer.Option(100_000, min=100, help="Index size."),
    kind: str = typer.Option("auto", help="faiss kind (auto picks by size)."),
    selectivity: str = typer.Option("0.5,0.1,0.01,0.001", help="Shares of items matching the filter."),
    queries: int = typer.Option(100, min=10, max=5000),
    k: int = typer.Option(10, min=1, max=100),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e"),
    cache: Path = typer.Option(DEFAULT_CACHE, help="Where grown vector sets are cached."),
    metadata: bool = typer.Option(True, "--metadata/--random-filters",
                                  help="Allowed ids from metadata filters on a synthetic store (times the filter step too), "
                                       "or random subsets of the share (no store: minutes less at 1M)."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Filtered search (--where) at scale: lookalike vs exact filtered search vs search-then-filter."""
    if kind not in KINDS:
        fail(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    shares = _floats(selectivity, "--selectivity")
    real = _real_vectors(catalog, home, encoder)
    with console.status(f"preparing {size:,} vectors"):
        data = bench_vectors(real, size, queries, cache)
    with console.status("building the index and benchmarking filters"):
        described, rows = filter_bench(data.base, data.queries, shares, kind, k, workdir=cache,
                                       metadata=metadata)
    rows = [r.to_dict() for r in rows]
    if json_out:
        print_json({"index": described, "rows": rows})
        return
    out.print(_table(f"filtered top-{k}: {described}, {len(data.queries)} real queries", rows,
                     [("selectivity", "matching share", ".3f"), ("matching", "items", ",d"),
                      ("sql_ms", "filter SQL ms", ".1f"), ("arrays_ms", "filter arrays ms", ".2f"),
                      ("arrays_first_ms", "arrays 1st call ms", ".0f"),
                      ("old_p50_ms", "3k rule p50 ms", ".3f"), ("old_recall", "3k rule recall", ".3f"),
                      ("path", "cost model picks", ""),
                      ("p50_ms", "p50 ms", ".3f"), ("recall", "recall", ".3f"),
                      ("exact_p50_ms", "exact p50 ms", ".3f"), ("postfilter_recall", "search-then-filter recall", ".3f"),
                      ("postfilter_fill", "its slots filled", ".2f")]))


@bench_app.command("embed")
def bench_embed(
    source: Path = typer.Argument(..., help="A folder or CSV of images (e.g. the shared clothing-small catalog.csv)."),
    limit: int = typer.Option(300, min=10, help="Images to embed in each row."),
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder", "-e", help="Encoder to measure (a colour-fused one also gets its colour-blind sibling)."),
    batch_size: int = typer.Option(32, min=1, max=1024),
    workers: Optional[int] = typer.Option(None, min=1, max=64, help="Decode threads for the pipeline."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also the int8 rows (model calibrated on 100 of the images first)."),
    naive: bool = typer.Option(False, "--naive", help="Also a naive one-image-at-a-time torch loop."),
    baseline_src: Optional[Path] = typer.Option(None, "--baseline-src", help="src/ folder of another lookalike checkout: its fp32 rows, same images, same run."),
    query_images: int = typer.Option(200, "--query-images", min=0, help="Single-image encode latency on one thread (an upload's decode + preprocess + model) over this many of the images; 0 = skip."),
    ingest: bool = typer.Option(True, "--ingest/--no-ingest", help="The pipeline throughput rows (--no-ingest: only the single-image rows)."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Images/s and cores busy of the indexing pipeline, and single-image encode latency: default vs colour-blind encoder, fp32 and int8, one run."""
    if not source.exists():
        fail(f"no such file or folder: {source}")
    if baseline_src is not None and not (baseline_src / "lookalike").is_dir():
        fail(f"{baseline_src} is not a src/ folder holding lookalike/")

    def say(r) -> None:
        if hasattr(r, "images_per_s"):
            console.log(f"{r.method}: {r.images_per_s:.1f} img/s, cores busy {r.cores_busy:.2f}")
        else:
            console.log(f"{r.method}: single image p50 {r.p50_ms:.1f} ms on one thread")

    try:
        with console.status(f"embedding {limit} images per row"):
            result = run_embed_bench(source, encoder, limit, batch_size, workers, on_row=say, int8=int8, naive=naive,
                                     baseline_src=baseline_src, query_images=query_images, ingest=ingest)
    except (SourceError, ValueError, KeyError, RuntimeError) as exc:
        fail(str(exc))
    data = result.to_dict()
    if json_out:
        print_json({"encoder": encoder, "cpu_count": os.cpu_count(), **data})
        return
    if data["rows"]:
        out.print(_table(f"indexing throughput, {data['rows'][0]['images']} images, {os.cpu_count()} cores", data["rows"],
                         [("method", "config", ""), ("seconds", "seconds", ".1f"), ("images_per_s", "images/s", ".1f"),
                          ("cores_busy", "cores busy", ".2f"), ("cpu_ms_per_image", "CPU ms/image", ".1f"),
                          ("vs_colour_blind", "x colour-blind", ".2f")]))
    if data["query"]:
        out.print(_table(f"single-image encode on one thread (decode + preprocess + model), "
                         f"{data['query'][0]['images']} images, ms", data["query"],
                         [("method", "config", ""), ("p50_ms", "p50", ".2f"), ("p90_ms", "p90", ".2f"),
                          ("decode_ms", "decode", ".2f"), ("preprocess_ms", "preprocess", ".2f"),
                          ("model_ms", "model", ".2f"), ("cpu_ms", "CPU ms", ".2f"),
                          ("vs_colour_blind", "x colour-blind speed", ".2f")]))


@bench_app.command("api", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_api(ctx: typer.Context):
    """Bounded loopback load test of `lookalike serve`: QPS, p50/p95/p99 for item-to-item and upload search.

    Options (`lookalike bench api -h` describes them): --catalog/-c NAME [--home DIR] [--items N]
    [--workers 2] [--anchor 1|none] [--concurrency 1,4,16,64] [--duration 8] [--requests N] [--k 10]
    [--seed 0] [--scenarios item,upload] [--url http://127.0.0.1:PORT] [--json FILE]."""
    raise typer.Exit(load_test(ctx.args))


@bench_app.command("models")
def bench_models_command(
    catalog: str = CatalogOption,
    label: str = typer.Option("label", "--label"),
    n: int = typer.Option(300, "--n", min=10, help="Labelled items in the quality subset (stratified)."),
    calibration: int = typer.Option(64, "--calibration", min=1, help="Catalog images used to calibrate int8."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Interleaved timing rounds (median kept)."),
    encoder: str = typer.Option("effnet-lite0", "--encoder", "-e",
                                help="The model: effnet-lite0/1/2 (options allowed) or onnx:/path/model.onnx."),
    json_out: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOption,
):
    """Size, images/s (batch 1 and 32), P@1 and mAP@10 of torch fp32 / ONNX fp32 / fp16 / int8."""
    # torch loads in the commands that need it: ~8 s off `lookalike --help` (see cli/app.py)
    from lookalike.bench.models import bench_models
    from lookalike.encoders.runtime import onnx_available

    if not onnx_available():
        fail("bench models needs onnxruntime and onnx: pip install 'lookalike[onnx]'")
    cat = open_catalog(catalog, home)
    try:
        result = bench_models(cat, label, n=n, n_calibration=calibration, rounds=rounds, encoder=encoder,
                              progress=lambda message: console.print(f"[dim]{message}[/]"))
    except (ValueError, LookupError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    if json_out:
        print_json(result.to_dict())
        return
    torch_row = result.results[0]  # torch fp32, or the ONNX file itself for an onnx: model
    ref = "torch" if torch_row.variant == "torch" else "fp32"
    table = Table(title=f"{encoder} variants on {catalog} ({result.n_items} labelled items, "
                        f"leave-one-out, relevant = same {label})")
    for col in ("variant", "size MB", "img/s b1", f"x {ref}", "img/s b32", f"x {ref}", "P@1", "mAP@10", "max |Δ|"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in result.results:
        table.add_row(r.variant + (" [bold](recommended)[/]" if r.variant == result.chosen else ""),
                      f"{r.size_mb:.1f}",
                      f"{r.images_per_s_b1:.1f}", f"{r.images_per_s_b1 / torch_row.images_per_s_b1:.2f}",
                      f"{r.images_per_s_b32:.1f}", f"{r.images_per_s_b32 / torch_row.images_per_s_b32:.2f}",
                      f"{r.p_at_1:.3f}", f"{r.map_at_10:.3f}", f"{r.max_abs_diff:.4f}")
    out.print(table)
    out.print(f"recommended: [bold]--encoder {result.spec}[/] — fastest at batch 32 with mAP@10 drop "
              f"≤ {result.threshold} vs {torch_row.variant} fp32 (median of {result.rounds} interleaved rounds, "
              f"int8 calibrated on {result.n_calibration} other catalog images). Nothing was changed: "
              f"the default runtime stays auto (onnx fp32). Report: {result.report}")
    if result.installed_int8:
        out.print(f"the int8 variant calibrated here is now the home's: {result.installed_int8}")
