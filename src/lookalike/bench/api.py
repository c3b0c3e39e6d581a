"""Bounded loopback load test of `lookalike serve`: QPS and latency percentiles for item-to-item
search (GET /api/items/{id}/similar) and upload search (POST /api/search/image), at several
concurrencies, for the server as configured now next to an anchor configuration measured in the
same run (default: 1 worker, no HTTP caching, live search instead of the precomputed similar-items
table), so the ratio is printed.

    lookalike bench api --catalog clothing --items 100000 --workers 2 --concurrency 1,4,16,64
    python -m lookalike.bench.api --catalog clothing ...     (the same)

``--items N`` grows the catalog to N items first (:func:`grown_catalog`: the real items, then
generated ones whose vectors come from :mod:`lookalike.bench.vectors` fitted on the real ones,
reusing real image files, with shop-like metadata), kept under the home as ``bench-SOURCE-N`` and
reused by later runs. Each configuration starts `lookalike serve` on a free 127.0.0.1 port (or uses
``--url``, loopback only), and :func:`lookalike.bench.load.run_load` drives it from keep-alive
connections in this process. Query items (random, distinct, fixed seed) and upload photos (the
catalog's own images) are the same for every configuration. Nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlparse

import numpy as np

from lookalike.bench.load import Request, multipart, run_load
from lookalike.bench.vectors import grow
from lookalike.catalog import Catalog, CatalogNotFound
from lookalike.data.artifacts import write_json
from lookalike.index.distances import l2_normalize

WARMUP = 20            # untimed requests per configuration and scenario (index load, first model call)
GROWN_VERSION = 1      # bump when grown catalogs change shape (they are rebuilt)
GROWN_MARKER = "bench-grown.json"   # in the grown catalog's folder: what it was grown from
BRANDS = ["acme", "northwind", "contoso", "globex", "initech", "umbrella", "hooli", "vandelay", "stark", "wayne",
          "tyrell", "cyberdyne", "soylent", "wonka", "gringotts", "oceanic"]
COLOURS = ["black", "white", "grey", "navy", "blue", "red", "green", "beige", "brown", "pink", "yellow", "purple"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        sys.exit(f"cannot resolve {host!r}")
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        sys.exit(f"refusing to load-test {host!r}: only loopback addresses (127.0.0.1, ::1, localhost) are allowed")


# -- the catalog -------------------------------------------------------------------------------
def shop_metadata(i: int, rng: np.random.Generator, base: dict | None = None) -> dict:
    """Columns a shop's catalog has: product (3 images each), brand, colour, price, stock, date added."""
    return {**(base or {}), "product_id": f"p{i // 3:07d}", "brand": BRANDS[int(rng.integers(len(BRANDS)))],
            "colour": COLOURS[int(rng.integers(len(COLOURS)))], "price": round(float(rng.lognormal(3.5, 0.6)), 2),
            "in_stock": int(rng.random() < 0.85), "added": f"2025-{1 + int(rng.integers(12)):02d}-{1 + int(rng.integers(28)):02d}"}


def grown_catalog(source: Catalog, n: int, seed: int = 0, log: Callable[[str], None] = print) -> Catalog:
    """``source`` grown to ``n`` items as catalog ``bench-SOURCE-N`` in the same home (reused while
    the source's data version, ``n`` and ``seed`` are the same): every real item (its vector, image,
    label and metadata plus shop columns), then ``n - len(source)`` items whose vectors are drawn by
    :func:`lookalike.bench.vectors.grow` (fitted on the real ones, unit length) and whose images,
    labels, hashes and sizes are the real items' in turn. The index is built before returning.
    ValueError when the source has fewer than 100 vectors."""
    spec, ids, matrix, metric = source.vectors_with_metric()
    if len(ids) < 100:
        raise ValueError(f"catalog {source.name!r} has {len(ids)} vectors; growing it needs at least 100")
    name = f"bench-{source.name}-{n}"[:64]
    stamp = {"source": source.name, "version": source.version(spec), "n": n, "seed": seed, "v": GROWN_VERSION}
    try:
        existing = Catalog.open(name, home=source.home)
        marker = existing.dir / GROWN_MARKER
        if marker.exists() and json.loads(marker.read_text()) == stamp and len(existing) == n:
            log(f"reusing catalog {name} ({n:,} items)")
            existing.warm(progress=True)
            return existing
        existing.delete()
    except CatalogNotFound:
        pass
    started = time.perf_counter()
    real = np.asarray(matrix, np.float32)
    log(f"growing {source.name} ({len(real):,} items) to {n:,}: fitting the vector generator...")
    vectors = grow(real, n, seed=seed) if n > len(real) else real[:n].copy()
    vectors[len(real):] = l2_normalize(vectors[len(real):])
    by_id = {item.id: item for item in source.items()}
    real_items = [by_id[i] for i in ids]
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        item = real_items[i % len(real_items)]
        rows.append({"id": item.id if i < len(real_items) else f"sku-{i:07d}", "path": item.path, "label": item.label,
                     "metadata": shop_metadata(i, rng, item.metadata if i < len(real_items) else None),
                     "sha256": item.sha256, "width": item.width, "height": item.height})
    cat = Catalog.create(name, home=source.home)
    info = source.encoder_info(spec)
    log(f"writing {n:,} items...")
    cat.add_embedded(rows, vectors, spec, fingerprint=info["fingerprint"], metric=metric, runtime_of=source)
    write_json(cat.dir / GROWN_MARKER, stamp)   # the items are complete: an interrupted index build resumes
    log("building the index and the similar-items table...")
    cat.warm(progress=True)
    log(f"catalog {name} ready in {time.perf_counter() - started:.0f} s")
    return cat


# -- the server --------------------------------------------------------------------------------
def start_server(catalog: str, home: str | None, port: int, workers: int = 1, http_cache: bool = True,
                 similar_table: bool = True) -> subprocess.Popen:
    command = [sys.executable, "-m", "lookalike", "serve", "--catalog", catalog, "--port", str(port),
               "--workers", str(workers)]
    if home:
        command += ["--home", str(home)]
    if not http_cache:
        command.append("--no-http-cache")
    if not similar_table:
        command.append("--no-similar-table")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(url: str, server: subprocess.Popen | None, timeout: float = 300) -> dict:
    import httpx  # the api extra (this module also builds catalogs without it)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            sys.exit(f"server exited: {server.stderr.read()}")
        try:
            answer = httpx.get(f"{url}/api/health", timeout=2)
            if answer.status_code == 200:
                return answer.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"server at {url} not ready after {timeout:.0f}s")


def stop_server(server: subprocess.Popen | None) -> None:
    if server is None:
        return
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


# -- the scenarios -----------------------------------------------------------------------------
def scenario_requests(cat: Catalog, k: int, count: int, seed: int, uploads: int = 24) -> dict[str, list[Request]]:
    """Requests per scenario: ``item`` (GET similar of ``count`` distinct random items), ``upload``
    (POST /api/search/image of ``uploads`` of the catalog's own photos)."""
    rng = np.random.default_rng(seed)
    total = len(cat)
    picks = rng.choice(total, size=min(count, total), replace=False)
    items = cat.items()
    chosen = [items[int(i)] for i in picks]
    similar = [Request("GET", f"/api/items/{quote(it.id, safe='')}/similar?k={k}", label="item") for it in chosen]
    photos, seen = [], set()
    for it in chosen:
        if it.path in seen or not Path(it.path).is_file():
            continue
        seen.add(it.path)
        body, headers = multipart("file", "query.jpg", Path(it.path).read_bytes(), {"k": str(k)}, "image/jpeg")
        photos.append(Request("POST", "/api/search/image", body, headers, label="upload"))
        if len(photos) >= uploads:
            break
    return {"item": similar, "upload": photos}


def process_tree_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` and every process below it (a
    server's worker processes), from Linux's /proc; None elsewhere or without a pid. Exited
    children count only once reaped, so read it around a run while the server is up."""
    if pid is None:
        return None
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:   # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))   # fields[1]: ppid
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / tick   # utime, stime
    if pid not in used:
        return None
    total, todo = 0.0, [pid]
    while todo:
        at = todo.pop()
        total += used.get(at, 0.0)
        todo += children.get(at, [])
    return total


def measure(url: str, requests: dict[str, list[Request]], scenarios: list[str], levels: list[int],
            duration: float, max_requests: int | None, config: str, server_pid: int | None = None) -> list[dict]:
    """One row per scenario and concurrency: :meth:`LoadResult.summary` plus the CPU milliseconds
    per request the server (``server_pid`` and its workers) and this load generator spent
    (``server_cpu_ms``, ``client_cpu_ms``): with both on one machine, QPS can be at most
    cores × 1000 / their sum, so they say where the time goes."""
    rows = []
    for name in scenarios:
        reqs = requests[name]
        run_load(url, reqs, concurrency=min(4, max(levels)), max_requests=WARMUP)   # warm: untimed
        offset = 0
        for c in levels:
            # each row starts where the previous stopped: item rows never repeat a query in one configuration
            ordered = reqs[offset:] + reqs[:offset]
            server_before, client_before = process_tree_cpu(server_pid), time.process_time()
            result = run_load(url, ordered, concurrency=c, duration=duration, max_requests=max_requests)
            client = time.process_time() - client_before
            server_after = process_tree_cpu(server_pid)
            offset = (offset + result.requests) % len(reqs)
            per = 1000 / max(result.requests, 1)
            cpu = {"server_cpu_ms": round((server_after - server_before) * per, 3)
                   if server_before is not None and server_after is not None else None,
                   "client_cpu_ms": round(client * per, 3)}
            rows.append({"config": config, "scenario": name, **result.summary(), **cpu})
    return rows


def query_model(cat: Catalog) -> str:
    """Which model embeds the upload rows' photos: the catalog's int8 choice (``Catalog.runtime_choice``,
    carried into a grown catalog), else the encoder's own runtime."""
    choice = cat.runtime_choice() or {}
    if choice.get("runtime") == "onnx-int8":
        return f"int8 ONNX calibrated on the catalog ({choice.get('summary') or 'chosen by index'})"
    if choice:
        return f"fp32 ONNX ({choice.get('summary') or 'int8 not chosen'})"
    return "the encoder's default runtime (the catalog holds no int8 choice)"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    # prog: the usage line names the command users type (``lookalike bench api``), not __main__.py
    ap = argparse.ArgumentParser(prog="lookalike bench api", description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalog", "-c", required=True, help="the catalog (grown from it with --items)")
    ap.add_argument("--home", default=os.environ.get("LOOKALIKE_HOME"))
    ap.add_argument("--url", help="test a running server instead (loopback only; no anchor)")
    ap.add_argument("--items", type=int, default=0, help="grow the catalog to this many items first (0: as is)")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes of the measured configuration")
    ap.add_argument("--anchor", default="1", help="anchor configuration: worker count (always without HTTP "
                                                  "caching and the similar-items table), or 'none'")
    ap.add_argument("--concurrency", default="1,4,16,64", help="comma-separated connection counts (1-256)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per row (upper bound)")
    ap.add_argument("--requests", type=int, default=None, help="requests per row (upper bound)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default="item,upload")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    try:
        levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        ap.error("--concurrency takes comma-separated numbers, e.g. 1,4,16,64")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if (not levels or not all(1 <= c <= 256 for c in levels) or args.duration <= 0 or args.workers < 1
            or (args.requests is not None and args.requests < 1) or not set(scenarios) <= {"item", "upload"}):
        ap.error("--concurrency 1-256, --duration > 0, --workers >= 1, --requests >= 1, --scenarios item,upload")
    if args.anchor != "none" and (not args.anchor.isdigit() or int(args.anchor) < 1):
        ap.error("--anchor takes a worker count or 'none'")

    try:
        cat = Catalog.open(args.catalog, home=args.home)
        if args.items:
            cat = grown_catalog(cat, args.items, seed=args.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
        else:
            cat.warm(progress=True)
    except (CatalogNotFound, ValueError, LookupError) as exc:
        sys.exit(str(exc))
    home = str(cat.home)
    count = int(max(levels) * args.duration * 1500) if args.requests is None else args.requests * len(levels)
    requests = scenario_requests(cat, args.k, max(50, min(count, len(cat))), args.seed)
    if not requests["upload"]:
        scenarios = [s for s in scenarios if s != "upload"]
    configs = [("now", args.workers, True, True)]
    if args.anchor != "none" and not args.url:
        configs.insert(0, ("anchor", int(args.anchor), False, False))
    before = load_average()
    rows, health = [], {}
    for config, workers, http_cache, similar in configs:
        server = None
        url = args.url.rstrip("/") if args.url else f"http://127.0.0.1:{free_port()}"
        check_loopback(url)
        if not args.url:
            server = start_server(cat.name, home, int(urlparse(url).port), workers, http_cache, similar)
        try:
            health = wait_ready(url, server)
            rows += measure(url, requests, scenarios, levels, args.duration, args.requests, config,
                            server.pid if server is not None else None)
        finally:
            stop_server(server)
    after = load_average()
    described = {c: (f"{w} worker{'s' * (w > 1)}" + ("" if cache else ", no HTTP caching")
                     + ("" if similar else ", live search (no similar-items table)")) for c, w, cache, similar in configs}
    if args.url:
        described["now"] = f"the server at {args.url}"
    setup = {"catalog": health.get("catalog"), "items": health.get("items"), "encoder": health.get("encoder"),
             "query_model": query_model(cat), "cpus": os.cpu_count(), "k": args.k, "duration_s": args.duration, "configs": described,
             "load_before": before, "load_after": after}
    print(f"catalog {setup['catalog']} ({setup['items']:,} items, encoder {setup['encoder']}), {setup['cpus']} CPUs, "
          f"k={args.k}, loopback; load average {before} before, {after} after")
    print(f"  uploads embed with: {setup['query_model']}")
    for name, text in described.items():
        print(f"  {name}: {text}")
    anchor = {(r["scenario"], r["concurrency"]): r for r in rows if r["config"] == "anchor"}
    print(f"{'config':7} {'scenario':8} {'conc':>4} {'requests':>8} {'errors':>6} {'QPS':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'QPS ×':>6} {'server CPU ms/req':>17} {'client CPU ms/req':>17}")
    for r in rows:
        base = anchor.get((r["scenario"], r["concurrency"]))
        ratio = f"{r['qps'] / base['qps']:6.2f}" if base and r["config"] != "anchor" and base["qps"] else f"{'':6}"
        print(f"{r['config']:7} {r['scenario']:8} {r['concurrency']:4d} {r['requests']:8d} {r['errors']:6d} "
              f"{r['qps']:8.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {ratio} "
              f"{'n/a' if r['server_cpu_ms'] is None else format(r['server_cpu_ms'], '.3f'):>17} "
              f"{r['client_cpu_ms']:17.3f}")
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": rows}, indent=2))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
