"""A small HTTP/1.1 load generator: keep-alive connections driven by asyncio (uvloop when installed).

A Python thread pool with an HTTP client spends more CPU than the server it measures on a 2-core
box; raw keep-alive connections cost a few tens of microseconds per request, so the numbers are the
server's. Used by ``lookalike bench api`` and reusable for soak tests::

    from lookalike.bench.load import Request, run_load
    reqs = [Request("GET", "/api/items/a/similar?k=10"), Request("POST", "/api/search/image", body, headers)]
    result = run_load("http://127.0.0.1:8000", reqs, concurrency=16, duration=10)
    result.qps, result.p50_ms, result.p99_ms, result.errors, result.by_label

Requests are sent in the order given, cycling, by ``concurrency`` connections, for ``duration``
seconds (or until ``max_requests``); each answer's status must be one of its request's ``ok``
statuses, anything else (or a broken connection) counts as an error. Loopback use only: the
caller checks the address (``lookalike.bench.api.check_loopback``).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import urlparse

import numpy as np


@dataclass(frozen=True)
class Request:
    """One HTTP request: ``path`` with its query string, raw ``body``, extra ``headers``; ``label``
    groups results (default: the method); ``ok``: the statuses that count as a success."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    label: str = ""
    ok: tuple[int, ...] = (200,)

    def encode(self, host: str) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class LoadResult:
    """Latencies in milliseconds; ``statuses``: HTTP status -> count (0: connection errors)."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    statuses: dict[int, int] = field(default_factory=dict)
    by_label: dict[str, dict] = field(default_factory=dict)

    @property
    def qps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")

    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def p95_ms(self) -> float:
        return self.percentile(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    def summary(self) -> dict:
        return {"concurrency": self.concurrency, "requests": self.requests, "errors": self.errors,
                "seconds": round(self.seconds, 2), "qps": round(self.qps, 1), "p50_ms": round(self.p50_ms, 2),
                "p95_ms": round(self.p95_ms, 2), "p99_ms": round(self.p99_ms, 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "by_label": self.by_label}


class _Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body


async def read_response(reader: asyncio.StreamReader) -> _Response:
    """One HTTP/1.1 response (Content-Length or chunked body). ConnectionError when the peer closed."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = b"" if status in (204, 304) else await reader.read()
    return _Response(status, headers, body)


async def _drive(host: str, port: int, requests: Sequence[Request], concurrency: int, duration: float,
                 max_requests: int | None, timeout: float):
    encoded = [r.encode(f"{host}:{port}") for r in requests]
    next_index = 0
    deadline = time.perf_counter() + duration
    records: list[tuple[int, float, int]] = []   # (request index, ms, status)

    def take() -> int | None:
        nonlocal next_index
        if time.perf_counter() >= deadline or (max_requests is not None and next_index >= max_requests):
            return None
        next_index += 1
        return next_index - 1

    async def worker():
        reader = writer = None
        while (i := take()) is not None:
            at = i % len(encoded)
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                writer.write(encoded[at])
                response = await asyncio.wait_for(read_response(reader), timeout)
                status = response.status
                if response.headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                    ValueError):
                status = 0
                if writer is not None:
                    writer.close()
                reader = writer = None
            records.append((at, (time.perf_counter() - started) * 1000, status))
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records, time.perf_counter() - started


def run_load(url: str, requests: Sequence[Request], concurrency: int = 1, duration: float = 10.0,
             max_requests: int | None = None, warmup: int = 0, timeout: float = 60.0) -> LoadResult:
    """Send ``requests`` (cycling) to the server at ``url`` over ``concurrency`` keep-alive
    connections for ``duration`` seconds or ``max_requests`` requests, after ``warmup`` untimed
    ones; ValueError for no requests or concurrency < 1."""
    if not requests or concurrency < 1:
        raise ValueError("give at least one request and concurrency >= 1")
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    run = _runner()
    if warmup:
        run(_drive(host, port, requests, min(concurrency, warmup), 3600, warmup, timeout))
    records, seconds = run(_drive(host, port, requests, concurrency, duration, max_requests, timeout))
    statuses: dict[int, int] = {}
    labels: dict[str, list] = {}
    errors = 0
    for at, ms, status in records:
        statuses[status] = statuses.get(status, 0) + 1
        request = requests[at]
        bad = status not in request.ok
        errors += bad
        labels.setdefault(request.label or request.method, []).append((ms, bad))
    by_label = {name: {"requests": len(v), "errors": sum(b for _, b in v),
                       "p50_ms": round(float(np.percentile([m for m, _ in v], 50)), 2),
                       "p99_ms": round(float(np.percentile([m for m, _ in v], 99)), 2)} for name, v in labels.items()}
    latencies = np.array([ms for _, ms, _ in records], np.float64)
    return LoadResult(concurrency, len(records), errors, seconds, latencies, statuses, by_label)


def _runner():
    """asyncio.run on uvloop's event loop when it is installed (a cheaper loop leaves more CPU to the server)."""
    try:
        import uvloop  # optional (the api extra): the plain asyncio loop works too
    except ImportError:
        return asyncio.run
    return lambda coro: uvloop.run(coro) if hasattr(uvloop, "run") else asyncio.run(coro)


def multipart(field: str, filename: str, data: bytes, fields: dict[str, str] | None = None,
              content_type: str = "application/octet-stream") -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """(body, headers) of a multipart/form-data upload of ``data`` as ``field`` plus text ``fields``."""
    boundary = "lookalike-bench-7d1e0f"
    parts = []
    for key, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), (("Content-Type", f"multipart/form-data; boundary={boundary}"),)
