"""Bounded loopback load test of `lookalike serve`: QPS and latency percentiles for item-to-item
search (GET /api/items/{id}/similar) and upload search (POST /api/search/image).

    lookalike bench api --catalog sample --requests 300 --duration 30 --concurrency 4
    python -m lookalike.bench.api --catalog sample ...     (the same)

It starts `lookalike serve` as a subprocess on a free 127.0.0.1 port (or uses --url, which must be
a loopback address), sends a fixed number of requests per scenario — stopping early when the time
budget runs out — and prints one row per scenario. Query items and upload images are drawn from
the catalog itself with a fixed seed, so runs are comparable. Nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlparse

import httpx

WARMUP = 5  # requests per scenario before timing starts (model load, first index build)


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


def start_server(catalog: str, home: str | None, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "lookalike", "serve", "--catalog", catalog, "--port", str(port)]
    if home:
        command += ["--home", home]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(url: str, server: subprocess.Popen | None, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            sys.exit(f"server exited: {server.stderr.read()}")
        try:
            return httpx.get(f"{url}/api/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    sys.exit(f"server at {url} not ready after {timeout:.0f}s")


def pick_queries(url: str, n: int, seed: int) -> list[dict]:
    """n catalog items (id + image url), sampled with a fixed seed from the whole catalog."""
    total = httpx.get(f"{url}/api/items?limit=1").json()["total"]
    rng = random.Random(seed)
    offsets = [rng.randrange(total) for _ in range(n)]
    return [httpx.get(f"{url}/api/items?limit=1&offset={o}").json()["items"][0] for o in offsets]


def run_scenario(name: str, send, payloads: list, requests: int, duration: float, concurrency: int) -> dict:
    """Send ``requests`` requests (cycling through ``payloads``) from ``concurrency`` threads, or as
    many as fit in ``duration`` seconds; latencies in ms."""
    for payload in payloads[:WARMUP]:
        send(payload)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration

    def one(i: int):
        if time.monotonic() > deadline:
            return None
        started = time.perf_counter()
        ok = send(payloads[i % len(payloads)])
        return (time.perf_counter() - started) * 1000, ok

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for result in pool.map(one, range(requests)):
            if result is None:
                continue
            latencies.append(result[0])
            errors += not result[1]
    wall = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"scenario": name, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "qps": round(len(latencies) / wall, 2), "p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1),
            "p99_ms": round(cuts[98], 1), "concurrency": concurrency}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--home", default=os.environ.get("LOOKALIKE_HOME"))
    ap.add_argument("--url", help="test a running server instead (loopback only)")
    ap.add_argument("--requests", type=int, default=200, help="requests per scenario (upper bound)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per scenario (upper bound)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default="item,upload")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.requests < 1 or args.duration <= 0 or not 1 <= args.concurrency <= 64:
        ap.error("--requests >= 1, --duration > 0 and 1 <= --concurrency <= 64")

    server = None
    url = args.url.rstrip("/") if args.url else f"http://127.0.0.1:{free_port()}"
    check_loopback(url)
    if not args.url:
        server = start_server(args.catalog, args.home, int(urlparse(url).port))
    try:
        health = wait_ready(url, server)
        queries = pick_queries(url, min(50, args.requests), args.seed)
        client = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=args.concurrency))
        images = [client.get(q["image_url"]).content for q in queries]

        def similar(item):
            return client.get(f"/api/items/{quote(item['id'], safe='')}/similar", params={"k": args.k}).status_code == 200

        def upload(image):
            files = {"file": ("query.jpg", image)}
            return client.post("/api/search/image", files=files, data={"k": str(args.k)}).status_code == 200

        scenarios = {"item": (similar, queries), "upload": (upload, images)}
        rows = []
        for name in args.scenarios.split(","):
            send, payloads = scenarios[name]
            rows.append(run_scenario(name, send, payloads, args.requests, args.duration, args.concurrency))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)

    setup = {"catalog": health["catalog"], "items": health["items"], "encoder": health["encoder"],
             "cpus": os.cpu_count(), "k": args.k}
    print(f"catalog {setup['catalog']} ({setup['items']} items, encoder {setup['encoder']}), "
          f"{setup['cpus']} CPUs, k={args.k}, loopback")
    print(f"{'scenario':10} {'requests':>8} {'errors':>6} {'conc':>4} {'QPS':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['scenario']:10} {r['requests']:8d} {r['errors']:6d} {r['concurrency']:4d} {r['qps']:8.1f} "
              f"{r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f}")
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": rows}, indent=2))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
