"""Prometheus metrics shared by `cis api` and `cis serve` (prometheus-client).

Each process keeps its own `CollectorRegistry` (not the library's global one), so tests and
several servers in one process do not collide. `cis api` answers them on `/metrics`;
`exposition` renders a registry for any HTTP handler, and `serve_http` answers them on a
port of their own for a process without an HTTP server.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)

# Seconds: the API's answers range from a millisecond (health) to the per-request limit.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_http(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> None:
    """Answer GET /metrics on host:port from a daemon thread."""
    start_http_server(port, addr=host, registry=registry)


class HttpMetrics:
    """Requests of an HTTP API: latency by route and status, and a count by status."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "cis_api") -> None:
        self.latency = Histogram(f"{prefix}_request_seconds", "Time to answer a request, by "
                                 "route template, method and status", ["route", "method",
                                                                       "status"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.requests = Counter(f"{prefix}_requests", "Requests answered, by status",
                                ["status"], registry=registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.latency.labels(route=route, method=method, status=str(status)).observe(seconds)
        self.requests.labels(status=str(status)).inc()
