"""Soak test: a bounded loopback load mixing reads, uploads and writes, then the integrity check.

    lookalike bench soak --catalog shop --duration 60 --concurrency 64

The catalog is copied to a scratch home first (writes never touch the original; ``--in-place`` to
soak the catalog itself), served by ``lookalike serve`` on a free 127.0.0.1 port with a random API
key, and driven for ``duration`` seconds by ``concurrency`` clients (one asyncio loop, httpx), each
picking its next request by weight:

* reads: more-like-this (``GET /api/items/{id}/similar``), item detail, a page of browse with a
  filter, a thumbnail; uploads: ``POST /api/search/image`` with a catalog photo;
* writes (with the key): delete an item, and — where the server has them (found in its OpenAPI
  schema) — upsert an item with an image and update an item's metadata;
* intended errors: an unknown item (404), ``k=0`` (422), a write without the key (401): these must
  answer exactly that status, with a JSON error body.

Writes touch only items set aside for them (reads never ask for an item a write may delete), so
every other non-2xx answer, every 5xx, every transport error or timeout is counted as an error.
After the run the server stops and ``Catalog.check()`` must pass on the soaked catalog
(:mod:`lookalike.data.integrity`). Exit code 1 on any error or integrity problem.
"""
from __future__ import annotations

import asyncio
import io
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from PIL import Image

from lookalike.bench.api import free_port
from lookalike.catalog import Catalog

# Request kinds and their weights (per 100 requests): 70% reads, 15% uploads, 10% writes, 5% intended errors.
DEFAULT_MIX = {"similar": 40, "detail": 10, "browse": 10, "thumb": 10, "upload": 15, "delete": 4, "upsert": 3,
               "update": 3, "bad-item": 2, "bad-k": 2, "no-key": 1}
INTENDED = {"bad-item": 404, "bad-k": 422, "no-key": 401}
WRITES = ("delete", "upsert", "update")
TIMEOUT = 60.0


@dataclass
class SoakReport:
    """Counts per request kind, latency percentiles (ms) over all requests, errors (with up to 10
    examples) and the integrity check of the catalog afterwards."""
    duration: float
    concurrency: int
    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    intended: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    qps: float = 0.0
    writes: dict[str, bool] = field(default_factory=dict)   # write kind -> the server has the route
    integrity: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.errors == 0 and bool(self.integrity and self.integrity["ok"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def scratch_home(cat: Catalog, scratch: Path) -> Path:
    """``scratch`` as a home holding a copy of ``cat`` (:meth:`Catalog.copy_to`) with the original
    home's ``models/`` linked beside it (encoders find their weights and runtime variants)."""
    cat.copy_to(scratch)
    if (cat.home / "models").is_dir():
        (scratch / "models").symlink_to((cat.home / "models").resolve(), target_is_directory=True)
    return scratch


def _upload_image(seed: int) -> bytes:
    """A small JPEG unlike the catalog's photos (a new item for upserts)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (96, 96), tuple(rng.randrange(256) for _ in range(3)))
    image.paste(tuple(rng.randrange(256) for _ in range(3)), (rng.randrange(40), rng.randrange(40), 70, 90))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class Soak:
    """One run against a server at ``url`` (loopback) whose write key is ``key``."""

    def __init__(self, url: str, key: str, items: list[str], images: list[bytes], routes: set[tuple[str, str]],
                 mix: dict[str, int], seed: int = 0, k: int = 10):
        self.url, self.key, self.k = url, key, k
        rng = random.Random(seed)
        items = list(items)
        rng.shuffle(items)
        # a tenth of the items (at least 1) are the writes' own: reads never ask for them
        cut = max(1, len(items) // 10)
        self.victims, self.readable = items[:cut], items[cut:] or items[:1]
        self.images = images
        self.upsert_route = _find(routes, ("PUT", "/api/items/{item_id}"), ("POST", "/api/items"))
        self.update_route = _find(routes, ("PATCH", "/api/items/{item_id}"), ("PUT", "/api/items/{item_id}/metadata"))
        self.writes = {"delete": True, "upsert": self.upsert_route is not None, "update": self.update_route is not None}
        self.mix = {kind: w for kind, w in mix.items() if kind not in WRITES or self.writes[kind]}
        self.rng = rng
        self.latencies: list[float] = []
        self.kinds: Counter = Counter()
        self.statuses: Counter = Counter()
        self.intended = 0
        self.errors: list[str] = []   # the first few, as examples
        self.error_count = 0
        self.new_ids = 0

    async def run(self, duration: float, concurrency: int, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``concurrency`` clients for ``duration`` seconds (``transport``: e.g. an in-process ASGI app)."""
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT, limits=limits, transport=transport) as client:
            deadline = time.monotonic() + duration
            await asyncio.gather(*(self._worker(client, deadline, i) for i in range(concurrency)))

    async def _worker(self, client: httpx.AsyncClient, deadline: float, worker: int) -> None:
        kinds, weights = list(self.mix), list(self.mix.values())
        rng = random.Random(self.rng.random() + worker)
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            request = self._request(kind, rng)
            if request is None:
                continue
            method, path, options = request
            started = time.perf_counter()
            try:
                response = await client.request(method, path, **options)
                status = response.status_code
                body = response.content
                content_type = response.headers.get("content-type", "")
            except httpx.HTTPError as exc:
                status, body, content_type = 0, repr(exc).encode(), ""
            self.latencies.append((time.perf_counter() - started) * 1000)
            self.kinds[kind] += 1
            self.statuses[str(status)] += 1
            expected = INTENDED.get(kind)
            if expected is not None and status == expected and content_type.startswith("application/json"):
                self.intended += 1
            elif expected is None and 200 <= status < 300:
                pass
            else:
                self.error_count += 1
                if len(self.errors) < 10:
                    self.errors.append(f"{kind} {method} {path} -> {status} {body[:200]!r}")

    def _request(self, kind: str, rng: random.Random) -> tuple[str, str, dict] | None:
        item = quote(rng.choice(self.readable), safe="")
        key = {"X-API-Key": self.key}
        if kind == "similar":
            return "GET", f"/api/items/{item}/similar", {"params": {"k": self.k}}
        if kind == "detail":
            return "GET", f"/api/items/{item}", {}
        if kind == "browse":
            return "GET", "/api/items", {"params": {"limit": 24, "offset": rng.randrange(100)}}
        if kind == "thumb":
            return "GET", f"/api/items/{item}/thumb", {"params": {"size": 256}}
        if kind == "upload":
            return "POST", "/api/search/image", {"files": {"file": ("q.jpg", rng.choice(self.images), "image/jpeg")},
                                                 "data": {"k": str(self.k)}}
        if kind == "delete":
            if not self.victims:
                return None
            return "DELETE", f"/api/items/{quote(self.victims.pop(), safe='')}", {"headers": key}
        if kind == "upsert":
            self.new_ids += 1
            method, template = self.upsert_route
            new_id = f"soak-{self.new_ids}"
            path = template.replace("{item_id}", new_id)
            data = {"label": "soak", "metadata": '{"source": "soak"}'} | ({} if "{item_id}" in template else {"id": new_id})
            return method, path, {"headers": key, "data": data,
                                  "files": {"file": ("new.jpg", _upload_image(self.new_ids), "image/jpeg")}}
        if kind == "update":
            method, template = self.update_route
            return method, template.replace("{item_id}", item), {"headers": key, "json": {"metadata": {"soaked": "1"}}}
        if kind == "bad-item":
            return "GET", f"/api/items/{quote('no such item ' + str(rng.random()), safe='')}/similar", {}
        if kind == "bad-k":
            return "GET", f"/api/items/{item}/similar", {"params": {"k": 0}}
        if kind == "no-key":
            return "DELETE", f"/api/items/{item}", {}
        raise ValueError(f"unknown request kind {kind!r}")


def _find(routes: set[tuple[str, str]], *candidates: tuple[str, str]) -> tuple[str, str] | None:
    return next((c for c in candidates if c in routes), None)


def soak(catalog: str, home: str | os.PathLike | None = None, *, duration: float = 60.0, concurrency: int = 64,
         mix: dict[str, int] | None = None, in_place: bool = False, seed: int = 0, k: int = 10,
         server_args: tuple[str, ...] = (), on_status=print) -> SoakReport:
    """Run the soak test described in the module docstring on catalog ``catalog`` of ``home``;
    ``server_args`` go to ``lookalike serve`` (e.g. ``("--workers", "2")`` where it has them).
    Returns the :class:`SoakReport` (``report.ok``)."""
    if duration <= 0 or not 1 <= concurrency <= 256:
        raise ValueError("duration > 0 and 1 <= concurrency <= 256")
    source = Catalog.open(catalog, home=home)
    scratch = None if in_place else Path(tempfile.mkdtemp(prefix="lookalike-soak-"))
    try:
        serve_home = source.home if in_place else scratch_home(source, scratch)
        key = secrets.token_urlsafe(16)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "LOOKALIKE_API_KEY": key}
        server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--catalog", catalog, "--port", str(port),
                                   "--home", str(serve_home), *server_args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            _wait_ready(url, server)
            items = [i.id for i in Catalog.open(catalog, home=serve_home).items(limit=5000)]
            readable_images = [Path(i.path).read_bytes() for i in Catalog.open(catalog, home=serve_home).items(limit=20)
                               if Path(i.path).is_file()]
            if not items or not readable_images:
                raise ValueError(f"catalog {catalog!r} needs items with readable images to soak")
            schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
            routes = {(m.upper(), p) for p, methods in schema["paths"].items() for m in methods}
            run = Soak(url, key, items, readable_images, routes, mix or DEFAULT_MIX, seed=seed, k=k)
            for kind in ("similar", "upload"):   # warm-up: model load, index build (not counted)
                method, path, options = run._request(kind, random.Random(seed))
                httpx.request(method, url + path, timeout=300, **options)
            on_status(f"soaking {catalog} for {duration:.0f}s at concurrency {concurrency} "
                      f"(writes: {', '.join(k for k, v in run.writes.items() if v)})")
            started = time.perf_counter()
            asyncio.run(run.run(duration, concurrency))
            wall = time.perf_counter() - started
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        lat = sorted(run.latencies)
        cuts = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else (lat or [0.0]) * 99
        report = SoakReport(duration=round(wall, 1), concurrency=concurrency, requests=len(lat),
                            by_kind=dict(run.kinds), statuses=dict(run.statuses), intended=run.intended,
                            errors=run.error_count, error_examples=run.errors, p50_ms=round(cuts[49], 1),
                            p99_ms=round(cuts[98], 1), qps=round(len(lat) / wall, 1), writes=run.writes)
        on_status("checking integrity")
        report.integrity = Catalog.open(catalog, home=serve_home).check().to_dict()
        return report
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _wait_ready(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f}s")
