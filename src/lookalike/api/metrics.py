"""``GET /metrics`` in the Prometheus text format.

- HTTP: request counts, sizes and latency histograms by route *template* (``/api/items/{item_id:item}``,
  never the raw path, so ids do not explode the label set), method and status, from
  `prometheus-fastapi-instrumentator <https://github.com/trallnag/prometheus-fastapi-instrumentator>`_.
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

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_fastapi_instrumentator import Instrumentator

# Whether prometheus_client chose multiprocess values (decided once, when it was first imported).
MULTIPROCESS = bool(getattr(values.ValueClass, "_multiprocess", False)) and "PROMETHEUS_MULTIPROC_DIR" in os.environ


class Metrics:
    """One app's metrics: its own registry (several apps in one process, as in the tests, never
    share counts) with the HTTP metrics and the item-write counter."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.writes = Counter("lookalike_item_writes", "Items written through the API, by catalog and outcome "
                              "(added, updated, unchanged, failed, metadata, deleted)", ["catalog", "outcome"],
                              registry=self.registry)

    def count_writes(self, catalog: str, outcomes) -> None:
        """Count write outcomes (``WriteOutcome`` or outcome strings) of ``catalog``."""
        for outcome in outcomes:
            self.writes.labels(catalog, outcome if isinstance(outcome, str) else outcome.outcome).inc()


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
    Instrumentator(excluded_handlers=["/metrics"], should_group_status_codes=False,
                   registry=metrics.registry).instrument(app)
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
