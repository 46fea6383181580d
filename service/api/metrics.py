"""Prometheus metrics: request counts and latencies, submissions, and job counts by status (read from the
store at scrape time, so every API replica reports the same truth)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily


class _StoreCollector:
    def __init__(self, counts: Callable[[], dict[str, int]], busy: Callable[[], tuple[int, int]]):
        self.counts, self.busy = counts, busy

    def collect(self):
        jobs = GaugeMetricFamily("suture_jobs", "jobs in the store by status", labels=["status"])
        for status, n in sorted(self.counts().items()):
            jobs.add_metric([status], n)
        yield jobs
        busy, total = self.busy()
        workers = GaugeMetricFamily("suture_workers", "worker actors of this replica", labels=["state"])
        workers.add_metric(["busy"], busy)
        workers.add_metric(["idle"], total - busy)
        yield workers


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("suture_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("suture_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry)
        self.submitted = Counter("suture_jobs_submitted", "jobs accepted", ["kind"], registry=self.registry)

    def watch_store(self, counts: Callable[[], dict[str, int]], busy: Callable[[], tuple[int, int]]) -> None:
        self.registry.register(_StoreCollector(counts, busy))
