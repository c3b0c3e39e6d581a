"""``GET /metrics`` in the Prometheus text format.

- HTTP: ``http_requests_total{handler, method, status}`` and the latency histogram
  ``http_request_duration_seconds{handler, method}`` by route *template*
  (``/api/items/{item_id:item}/similar``, never the raw path, so ids do not explode the label set;
  ``none`` for a path no route matched), the names and labels
  `prometheus-fastapi-instrumentator <https://github.com/trallnag/prometheus-fastapi-instrumentator>`_
  uses, recorded by :class:`HttpMetrics`, a pure ASGI middleware over ``prometheus_client``. The
  instrumentator's middleware matched every request's URL against every route a second time and
  built a Request and a Response object per request: 0.25 ms of CPU in a 0.9 ms trivial request
  here (docs/deploy.md "Where the time goes"); Starlette's router already leaves the matched route
  in the request scope.
- Writes: ``lookalike_item_writes_total{catalog, outcome}`` (added / updated / unchanged / failed /
  metadata / deleted) counted by the write routes.
- Catalogs, read from each served catalog at scrape time (the store is the truth, whichever worker
  answers): ``lookalike_catalog_items``, ``lookalike_catalog_vectors{encoder}``,
  ``lookalike_catalog_data_version{encoder}``, ``lookalike_index_bytes``, and the last ingest's
  ``lookalike_last_ingest_rows{outcome}``, ``lookalike_last_ingest_images_per_second``,
  ``lookalike_last_ingest_timestamp_seconds``.

Several worker processes: prometheus_client's multiprocess mode. When ``PROMETHEUS_MULTIPROC_DIR``
is set (``lookalike serve`` sets it to a fresh folder before the workers start, since it must be
set before ``prometheus_client`` is imported), counters and histograms of every worker are summed
from that folder (`docs <https://prometheus.github.io/client_python/multiprocess/>`_).
"""
from __future__ import annotations

import os
from time import perf_counter

from fastapi import FastAPI, Response
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest,
                               multiprocess, values)
from prometheus_client.core import GaugeMetricFamily

# Whether prometheus_client chose multiprocess values (decided once, when it was first imported).
MULTIPROCESS = bool(getattr(values.ValueClass, "_multiprocess", False)) and "PROMETHEUS_MULTIPROC_DIR" in os.environ


#: latency histogram buckets (seconds): prometheus_client's defaults
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class Metrics:
    """One app's metrics: its own registry (several apps in one process, as in the tests, never
    share counts) with the HTTP metrics and the item-write counter."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "HTTP requests by route template, method and status",
                                ["handler", "method", "status"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "Time to answer an HTTP request (seconds) by "
                                 "route template and method", ["handler", "method"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.writes = Counter("lookalike_item_writes", "Items written through the API, by catalog and outcome "
                              "(added, updated, unchanged, failed, metadata, deleted)", ["catalog", "outcome"],
                              registry=self.registry)

    def count_writes(self, catalog: str, outcomes) -> None:
        """Count write outcomes (``WriteOutcome`` or outcome strings) of ``catalog``."""
        for outcome in outcomes:
            self.writes.labels(catalog, outcome if isinstance(outcome, str) else outcome.outcome).inc()


class HttpMetrics:
    """Pure ASGI middleware: every HTTP request counted and timed by its route template (the
    ``route`` Starlette's router leaves in the scope; ``none`` when no route matched), method and
    status, except the ``excluded`` templates (``/metrics`` itself)."""

    def __init__(self, app, metrics: Metrics, excluded: tuple[str, ...] = ("/metrics",)):
        self.app, self.metrics, self.excluded = app, metrics, excluded

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = perf_counter(), 500

        async def record_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            handler = _template(scope)
            if handler not in self.excluded:
                method = scope["method"]
                self.metrics.requests.labels(handler, method, str(status)).inc()
                self.metrics.latency.labels(handler, method).observe(perf_counter() - started)


def _template(scope) -> str:
    """The matched route's full template: FastAPI keeps the included router's prefix in the
    route context it leaves in the scope (``route.path`` alone lacks the ``/api`` prefix)."""
    context = (scope.get("fastapi") or {}).get("effective_route_context")   # unset: lookalike.api.fastpath
    return getattr(context, "path", None) or getattr(scope.get("route"), "path", None) or "none"


class CatalogCollector:
    """Gauges of every catalog the server serves (``CatalogPool``), computed at scrape time."""

    def __init__(self, pool):
        self.pool = pool

    def collect(self):
        items = GaugeMetricFamily("lookalike_catalog_items", "Items in the catalog", labels=["catalog"])
        vectors = GaugeMetricFamily("lookalike_catalog_vectors", "Stored vectors per encoder",
                                    labels=["catalog", "encoder"])
        versions = GaugeMetricFamily("lookalike_catalog_data_version", "Writes to the catalog's vectors per encoder "
                                     "(bumped by every ingest, upsert, metadata edit, removal)",
                                     labels=["catalog", "encoder"])
        index_bytes = GaugeMetricFamily("lookalike_index_bytes", "Bytes of the saved index files", labels=["catalog"])
        rows = GaugeMetricFamily("lookalike_last_ingest_rows", "Rows of the last `lookalike index` run by outcome",
                                 labels=["catalog", "outcome"])
        speed = GaugeMetricFamily("lookalike_last_ingest_images_per_second", "Images embedded per second by the "
                                  "last `lookalike index` run", labels=["catalog"])
        when = GaugeMetricFamily("lookalike_last_ingest_timestamp_seconds", "When the last `lookalike index` run "
                                 "finished (Unix time)", labels=["catalog"])
        for name in self.pool.served():
            try:
                stats = self.pool.get(name).catalog.stats()
            except Exception:   # a catalog removed or unreadable since: left out of this scrape
                continue
            items.add_metric([name], stats["items"])
            index_bytes.add_metric([name], stats["index_bytes"])
            for encoder in stats["encoders"]:
                vectors.add_metric([name, encoder["name"]], encoder["count"])
                versions.add_metric([name, encoder["name"]], encoder["version"])
            last = stats["last_ingest"]
            if last:
                for outcome in ("added", "updated", "unchanged", "failed", "pruned"):
                    rows.add_metric([name, outcome], last.get(outcome, 0))
                speed.add_metric([name], last.get("images_per_s", 0.0))
                when.add_metric([name], last.get("finished_at", 0.0))
        yield from (items, vectors, versions, index_bytes, rows, speed, when)


def install_metrics(app: FastAPI, pool) -> Metrics:
    """Instrument ``app`` and add ``GET /metrics`` (HTTP metrics and write counts of this app, or
    of every worker process in multiprocess mode, then the catalog gauges of ``pool``)."""
    metrics = Metrics()
    app.add_middleware(HttpMetrics, metrics=metrics)
    catalogs = CollectorRegistry()   # not auto-described: registering must not open every catalog
    catalogs.register(CatalogCollector(pool))

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    def prometheus_metrics() -> Response:
        """Prometheus metrics: HTTP requests by route template, item writes, catalog sizes."""
        if MULTIPROCESS:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = metrics.registry
        return Response(generate_latest(registry) + generate_latest(catalogs), media_type=CONTENT_TYPE_LATEST)

    return metrics
