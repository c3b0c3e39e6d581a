"""Soak test: a bounded loopback load mixing reads, uploads and writes, then the integrity check.

    lookalike bench soak --catalog shop --duration 60 --concurrency 64

The catalog is copied to a scratch home first (writes never touch the original; ``--in-place`` to
soak the catalog itself), served by ``lookalike serve`` on a free 127.0.0.1 port with a random API
key (``--workers`` passes through), and driven for ``duration`` seconds over ``concurrency``
keep-alive connections by :func:`lookalike.bench.load.run_load` (engineer serve's load generator)
with one long, shuffled, non-repeating list of requests drawn by weight (:data:`DEFAULT_MIX`):

* reads: more-like-this (``GET /api/items/{id}/similar``), item detail, a page of browse, a
  thumbnail; uploads: ``POST /api/search/image`` with a catalog photo (downscaled to 320 px);
* writes (with the key): delete an item, and — where the server has them (found in its OpenAPI
  schema) — upsert a new item with an image and update an item's metadata;
* intended errors: an unknown item (404), ``k=0`` (422), a write without the key (401), each of
  which must answer exactly that status.

Each item is deleted at most once and reads never ask for an item a write touches, so every other
answer — a 5xx, an unexpected 4xx, a broken connection or a timeout — is an error. After the run
the server stops and ``Catalog.check()`` must pass on the soaked catalog
(:mod:`lookalike.data.integrity`). Exit code 1 on any error or integrity problem.
"""
from __future__ import annotations

import io
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote, urlencode

import httpx
from PIL import Image

from lookalike.bench.api import free_port
from lookalike.bench.load import LoadResult, Request, multipart, run_load
from lookalike.catalog import Catalog
from lookalike.data.images import open_image

# Request kinds and their weights (per 100 requests): 70% reads, 15% uploads, 10% writes, 5% intended errors.
DEFAULT_MIX = {"similar": 40, "detail": 10, "browse": 10, "thumb": 10, "upload": 15, "delete": 4, "upsert": 3,
               "update": 3, "bad-item": 2, "bad-k": 2, "no-key": 1}
INTENDED = {"bad-item": 404, "bad-k": 422, "no-key": 401}
WRITES = ("delete", "upsert", "update")
# Requests prepared per second of soak: more than a 2-core server answers with this mix (uploads
# embed a photo each), so the list does not run out; if it does, the soak ends early and says so.
RATE_CAP = 600
UPSERT_ROUTES = (("PUT", "/api/items/{item_id}"), ("POST", "/api/items"))
UPDATE_ROUTES = (("PATCH", "/api/items/{item_id}"), ("PUT", "/api/items/{item_id}/metadata"))


@dataclass
class SoakReport:
    """The load (requests, req/s, p50/p99 ms, per kind and per status) over ``seconds``, errors (any
    answer not the one its request expects), intended 4xx answered as expected, which write routes
    the server had, and the integrity check of the catalog afterwards (``Catalog.check().to_dict()``)."""
    seconds: float
    concurrency: int
    requests: int = 0
    prepared: int = 0
    qps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    intended: int = 0
    by_kind: dict[str, dict] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    writes: dict[str, bool] = field(default_factory=dict)
    integrity: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.errors == 0 and bool(self.integrity and self.integrity["ok"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def build_requests(items: Sequence[str], images: Sequence[bytes], routes: set[tuple[str, str]], key: str, n: int,
                   mix: dict[str, int] | None = None, seed: int = 0, k: int = 10) -> tuple[list[Request], dict[str, bool]]:
    """``n`` requests drawn by weight from ``mix`` (kinds of :data:`DEFAULT_MIX`; write kinds the
    server's ``routes`` lack are left out), each labelled with its kind and expecting its status.
    A tenth of ``items`` (at least one) is set aside for deletes and updates (each deleted once);
    reads use the rest. Returns (requests, {write kind: available})."""
    rng = random.Random(seed)
    items = list(items)
    rng.shuffle(items)
    cut = max(1, len(items) // 10)
    victims, readable = items[:cut], items[cut:] or items[:1]
    upsert = next((r for r in UPSERT_ROUTES if r in routes), None)
    update = next((r for r in UPDATE_ROUTES if r in routes), None)
    writes = {"delete": True, "upsert": upsert is not None, "update": update is not None}
    mix = {kind: w for kind, w in (mix or DEFAULT_MIX).items() if kind not in WRITES or writes[kind]}
    auth = (("X-API-Key", key),)
    uploads = [multipart("file", "query.jpg", image, {"k": str(k)}, "image/jpeg") for image in images]
    updatable, deletable = victims[: len(victims) // 2], victims[len(victims) // 2:]
    out: list[Request] = []
    kinds, weights = list(mix), list(mix.values())
    for i, kind in enumerate(rng.choices(kinds, weights, k=n)):
        item = quote(rng.choice(readable), safe="")
        if kind == "similar":
            out.append(Request("GET", f"/api/items/{item}/similar?k={k}", label=kind))
        elif kind == "detail":
            out.append(Request("GET", f"/api/items/{item}", label=kind))
        elif kind == "browse":
            out.append(Request("GET", f"/api/items?limit=24&offset={rng.randrange(200)}", label=kind))
        elif kind == "thumb":
            out.append(Request("GET", f"/api/items/{item}/thumb?size=256", label=kind))
        elif kind == "upload":
            body, headers = rng.choice(uploads)
            out.append(Request("POST", "/api/search/image", body, headers, label=kind))
        elif kind == "delete" and deletable:
            out.append(Request("DELETE", f"/api/items/{quote(deletable.pop(), safe='')}", b"", auth, kind, (200, 204)))
        elif kind == "upsert":
            method, template = upsert
            new_id = f"soak-{seed}-{i}"
            fields = {"label": "soak", "metadata": json.dumps({"source": "soak"})}
            if "{item_id}" not in template:
                fields["id"] = new_id
            body, headers = multipart("file", "new.jpg", _new_image(i), fields, "image/jpeg")
            out.append(Request(method, template.replace("{item_id}", quote(new_id, safe="")), body, headers + auth,
                               kind, (200, 201)))
        elif kind == "update" and updatable:
            method, template = update
            body = json.dumps({"metadata": {"soaked": str(i)}}).encode()
            target = quote(rng.choice(updatable), safe="")
            out.append(Request(method, template.replace("{item_id}", target), body,
                               (("Content-Type", "application/json"),) + auth, kind, (200,)))
        elif kind == "bad-item":
            out.append(Request("GET", f"/api/items/{quote(f'no such item {i}', safe='')}/similar", label=kind, ok=(404,)))
        elif kind == "bad-k":
            out.append(Request("GET", f"/api/items/{item}/similar?{urlencode({'k': 0})}", label=kind, ok=(422,)))
        elif kind == "no-key":
            out.append(Request("DELETE", f"/api/items/{item}", label=kind, ok=(401,)))
    return out, writes


def _new_image(seed: int) -> bytes:
    """A small JPEG unlike the catalog's photos (the image of an upserted item)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (96, 96), tuple(rng.randrange(256) for _ in range(3)))
    image.paste(tuple(rng.randrange(256) for _ in range(3)), (rng.randrange(40), rng.randrange(40), 70, 90))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _upload_photo(path: str, side: int = 320) -> bytes:
    """A catalog photo as a phone-sized query JPEG (at most ``side`` px): realistic, and small
    enough that thousands of prepared uploads fit in memory."""
    image = open_image(path)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def scratch_home(cat: Catalog, scratch: Path) -> Path:
    """``scratch`` as a home holding a copy of ``cat`` (:meth:`Catalog.copy_to`) with the original
    home's ``models/`` linked beside it (encoders find their weights and runtime variants)."""
    cat.copy_to(scratch)
    if (cat.home / "models").is_dir():
        (scratch / "models").symlink_to((cat.home / "models").resolve(), target_is_directory=True)
    return scratch


def soak(catalog: str, home: str | os.PathLike | None = None, *, duration: float = 60.0, concurrency: int = 64,
         mix: dict[str, int] | None = None, in_place: bool = False, seed: int = 0, k: int = 10, workers: int = 1,
         on_status: Callable[[str], None] = print) -> SoakReport:
    """Run the soak test described in the module docstring on catalog ``catalog`` of ``home``, served
    with ``workers`` processes. Returns the :class:`SoakReport` (``report.ok``); ValueError for bad
    arguments or a catalog without readable images, RuntimeError when the server does not start."""
    if duration <= 0 or not 1 <= concurrency <= 256 or workers < 1:
        raise ValueError("duration > 0, 1 <= concurrency <= 256 and workers >= 1")
    source = Catalog.open(catalog, home=home)
    scratch = None if in_place else Path(tempfile.mkdtemp(prefix="lookalike-soak-"))
    try:
        serve_home = source.home if in_place else scratch_home(source, scratch)
        served = Catalog.open(catalog, home=serve_home)
        items = [i.id for i in served.items(limit=20_000)]
        photos = [_upload_photo(i.path) for i in served.items(limit=40) if Path(i.path).is_file()][:16]
        if not items or not photos:
            raise ValueError(f"catalog {catalog!r} needs items with readable images to soak")
        key = secrets.token_urlsafe(16)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--catalog", catalog, "--port", str(port),
                                   "--home", str(serve_home), "--workers", str(workers)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "LOOKALIKE_API_KEY": key})
        try:
            _wait_ready(url, server)
            schema = httpx.get(f"{url}/openapi.json", timeout=60).json()
            routes = {(m.upper(), p) for p, methods in schema["paths"].items() for m in methods}
            requests, writes = build_requests(items, photos, routes, key, int(duration * RATE_CAP), mix, seed, k)
            warm = [r for r in requests if r.label in ("similar", "upload")][:8]
            run_load(url, warm, concurrency=2, max_requests=len(warm))   # model load, index build: untimed
            on_status(f"soaking {catalog} ({len(items)} items) for {duration:.0f}s at concurrency {concurrency}, "
                      f"{workers} worker(s); writes: {', '.join(k for k, v in writes.items() if v)}")
            result = run_load(url, requests, concurrency=concurrency, duration=duration, max_requests=len(requests))
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        report = _report(result, requests, concurrency, writes)
        on_status("checking integrity")
        report.integrity = Catalog.open(catalog, home=serve_home).check().to_dict()
        return report
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _report(result: LoadResult, requests: Sequence[Request], concurrency: int, writes: dict[str, bool]) -> SoakReport:
    intended = sum(v["requests"] - v["errors"] for kind, v in result.by_label.items() if kind in INTENDED)
    return SoakReport(seconds=round(result.seconds, 1), concurrency=concurrency, requests=result.requests,
                      prepared=len(requests), qps=round(result.qps, 1), p50_ms=round(result.p50_ms, 1),
                      p99_ms=round(result.p99_ms, 1), errors=result.errors, intended=intended,
                      by_kind=result.by_label, statuses={str(s): n for s, n in sorted(result.statuses.items())},
                      writes=writes)


def _wait_ready(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
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
