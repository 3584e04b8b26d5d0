"""Prometheus metrics on the app's own registry (never the process-global default one, so
several apps in one test process do not collide).

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
(``tryon serve`` and docker-compose do, and ``web/gunicorn_conf.py`` cleans up after dead
workers): counters and histograms are then written to files there and every scrape, whichever
worker answers, adds up all workers. Without it the request counters are per process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: what a scrape reads: our registry, or all workers' files in multiprocess mode
        self.exposition = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.exposition = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.exposition)
        self.requests = Counter(
            "tryon_http_requests_total", "HTTP requests", ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tryon_http_request_duration_seconds", "HTTP request latency", ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.jobs_created = Counter(
            "tryon_jobs_created_total", "Try-on jobs created", ["engine"], registry=self.registry
        )
        self.publish_failures = Counter(
            "tryon_publish_failures_total",
            "Jobs committed but not published (the reaper re-publishes them)",
            registry=self.registry,
        )

    def add_job_collector(self, stats: Callable[[], dict[str, Any] | None]) -> None:
        """Job counts by status and oldest ages, read from the database at scrape time."""

        class _Jobs:
            def collect(self) -> Iterator[GaugeMetricFamily]:
                data = stats()
                if data is None:
                    return
                jobs = GaugeMetricFamily("tryon_jobs", "Jobs by queue and status",
                                         labels=["queue", "status"])
                for queue, counts in sorted(data.get("by_queue", {}).items()):
                    for status, n in sorted(counts.items()):
                        jobs.add_metric([queue, status], n)
                yield jobs
                for name in ("oldest_queued_age_s", "oldest_running_age_s"):
                    v = data.get(name)
                    yield GaugeMetricFamily(f"tryon_{name.replace('_s', '_seconds')}",
                                            f"Age of the {name.split('_')[1]} job",
                                            value=float(v) if v is not None else 0.0)

            def describe(self) -> list[Any]:
                return []

        self.registry.register(_Jobs())
        if self.exposition is not self.registry:
            self.exposition.register(_Jobs())

    def install(self, app: Flask) -> None:
        @app.before_request
        def _start() -> None:
            g._t0 = time.perf_counter()

        @app.after_request
        def _count(resp: Any) -> Any:
            endpoint = request.endpoint or "unmatched"
            self.requests.labels(endpoint, request.method, str(resp.status_code)).inc()
            t0 = g.get("_t0")
            if t0 is not None:
                self.latency.labels(endpoint).observe(time.perf_counter() - t0)
            return resp
