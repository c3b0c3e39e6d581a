"""``lookalike serve``: the JSON API and the web app for one catalog (or several: ``--catalog A
--catalog B``, ``--all``), from one process."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from lookalike.catalog import Catalog, CatalogNotFound, list_catalogs
from lookalike.cli.app import HomeOption, app, console, fail
from lookalike.config import MAX_UPLOAD_BYTES, home_dir

WORKER_HEALTHCHECK_S = 30   # uvicorn's supervisor restarts a worker silent this long (see serve)


@app.command()
def serve(
    catalog: Optional[List[str]] = typer.Option(None, "--catalog", "-c", help=(
        "Catalog to serve (repeatable: the first answers /api/..., every one /api/catalogs/NAME/...).")),
    all_catalogs: bool = typer.Option(False, "--all", help="Serve every catalog in the home (opened on first use)."),
    home: Optional[Path] = HomeOption,
    host: str = typer.Option("127.0.0.1", envvar="LOOKALIKE_HOST",
                             help="Interface to bind (0.0.0.0 to expose it, e.g. in Docker)."),
    port: int = typer.Option(8000, min=1, max=65535, envvar="LOOKALIKE_PORT"),
    max_upload_mb: float = typer.Option(None, help="Upload cap in MB (default $LOOKALIKE_MAX_UPLOAD_BYTES or 10)."),
    vae: Optional[str] = typer.Option(None, help="VAE model for the latent explorer (default: the newest trained on CATALOG)."),
    threads: Optional[int] = typer.Option(None, min=1, max=64, envvar="LOOKALIKE_THREADS",
                                          help="torch threads for query embedding (default: torch's own choice)."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
    workers: int = typer.Option(1, min=1, max=64, envvar="LOOKALIKE_WORKERS",
                                help="Worker processes (one per core is a good start); they share the "
                                     "memory-mapped vectors and index, and each sees every write at once."),
    http_cache: bool = typer.Option(True, "--http-cache/--no-http-cache",
                                    help="ETag / 304 on images, thumbnails and GET search answers."),
    similar_table: bool = typer.Option(True, "--similar-table/--no-similar-table",
                                       help="Answer plain 'more like this' from the precomputed similar-items "
                                            "table (built at start, rebuilt after writes; same hits as live search)."),
):
    """Serve CATALOG: web app at /, JSON API at /api, OpenAPI docs at /docs, Prometheus metrics at /metrics.

    Read-only unless $LOOKALIKE_API_KEY is set (then changes need the X-API-Key header)."""
    if not catalog and not all_catalogs:
        fail("give --catalog NAME (repeatable) or --all", 2)
    if not catalog:
        found = list_catalogs(home)
        if not found:
            fail(f"no catalogs in {home_dir(home)}: create one with `lookalike index SOURCE --catalog NAME`")
        catalog = found[:1]
    try:
        Catalog.open(catalog[0], home=home)   # a clear error before the server's imports and setup
    except (CatalogNotFound, ValueError) as exc:
        fail(str(exc))
    _metrics_dir()
    # The HTTP stack is the optional `api` extra (and ~0.5 s of imports the other commands skip).
    try:
        import uvicorn

        from lookalike.api import create_app
        from lookalike.api.main import SERVE_ENV
        from lookalike.api.workers import run_workers
    except ImportError as exc:
        fail(f"serve needs the api extra ({exc.name} is missing): pip install 'lookalike[api]'")
    # torch / onnxruntime threads per worker: the cores shared out, so N workers never oversubscribe them
    threads = threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None)
    if threads:
        os.environ["LOOKALIKE_THREADS"] = str(threads)  # read when an encoder is first built
    if workers > 1:
        # BLAS / OpenMP (numpy, faiss) pools sized to the worker's share too: N workers each spinning up
        # a team per core oversubscribe the cores and stretch the tail latency (read at import in each worker)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(threads))

    cap = int(max_upload_mb * 1024 * 1024) if max_upload_mb else MAX_UPLOAD_BYTES
    try:
        # with workers, each process builds its own app (app_from_env); this one only checks the catalog
        web = create_app(catalog[0], home=home, max_upload_bytes=cap, vae=vae, http_cache=http_cache,
                         warm=workers == 1, catalogs=None if all_catalogs else catalog[1:], metrics=workers == 1,
                         similar_table=similar_table)
    except (CatalogNotFound, ValueError) as exc:
        fail(str(exc))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    state = web.state.lookalike
    console.print(f"[bold green]lookalike[/] serving catalog [bold]{catalog[0]}[/] ({len(state.catalog)} items, "
                  f"{'read-only' if state.read_only else 'writes need X-API-Key'}, "
                  f"{workers} worker{'s' * (workers > 1)})")
    others = "every catalog in the home" if all_catalogs else ", ".join(catalog[1:])
    if others:
        console.print(f"  also      {others} at /api/catalogs/NAME/")
    console.print(f"  web app   http://{shown}:{port}/")
    console.print(f"  API docs  http://{shown}:{port}/docs")
    print(f"http://{shown}:{port}/", flush=True)
    # uvicorn's access log only at info and below (a formatted line per request otherwise filtered out)
    access_log = log_level.lower() in ("trace", "debug", "info")
    if workers == 1:
        uvicorn.run(web, host=host, port=port, log_level=log_level, access_log=access_log)
        return
    os.environ.update({SERVE_ENV["catalog"]: catalog[0], SERVE_ENV["home"]: str(state.catalog.home),
                       SERVE_ENV["catalogs"]: "*" if all_catalogs else ",".join(catalog[1:]),
                       SERVE_ENV["max_upload_bytes"]: str(cap), SERVE_ENV["http_cache"]: "1" if http_cache else "0",
                       SERVE_ENV["similar_table"]: "1" if similar_table else "0"})
    if vae:
        os.environ[SERVE_ENV["vae"]] = vae
    del web
    # the supervisor kills a worker that misses its health check (default 5 s): a worker warming on a
    # loaded machine (index, similar-items table, item metadata) can be that slow to answer it
    # one SO_REUSEPORT socket per worker: the kernel spreads connections (lookalike.api.workers)
    run_workers("lookalike.api.main:app_from_env", workers, host, port, log_level=log_level, access_log=access_log,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)


def _metrics_dir() -> None:
    """prometheus_client's multiprocess mode for /metrics (lookalike.api.metrics): the folder must be
    in the environment before prometheus_client is first imported and shared by every worker
    process, so it is made here, before the app is imported; removed at exit."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = tempfile.mkdtemp(prefix="lookalike-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    atexit.register(shutil.rmtree, folder, True)
