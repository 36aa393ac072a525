"""The HTTP metrics of every request, from one pure ASGI layer.

Same series as prometheus-fastapi-instrumentator's default set (names, labels, buckets, help texts), so
dashboards, alerts and recording rules are unchanged:

- `http_requests_total{method,status,handler}`
- `http_request_size_bytes{handler}` / `http_response_size_bytes{handler}` (summaries of the
  Content-Length headers; 0 without one)
- `http_request_duration_highr_seconds` (no labels, many buckets)
- `http_request_duration_seconds{method,handler}` (buckets 0.1, 0.5, 1)

`handler` is the route template (`/api/v1/memories/{memory_id}`), or "none" for a path no route
matched (a 404, or a 405) and for a request refused before routing (401 from the auth layer, 413,
429): the instrumentator called those by their route. The instrumentator found the
template by matching the request against every route again and built a Request and a Response object
per request: about a tenth of the memory POST's CPU time (issue 12 profile). This layer reads the
route the router already matched (`scope["route"]`, set by FastAPI in the shared scope) once the app
has answered, and reads the two headers from the raw lists.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_HIGHR_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60,
    float("inf"),
)  # fmt: skip
LATENCY_LOWR_BUCKETS = (0.1, 0.5, 1, float("inf"))
UNMATCHED = "none"
CHILD_CACHE_SIZE = 1024  # (method, handler, status) triples whose labelled series are kept at hand


class HttpMetrics:
    """The instruments, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._cache: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ("method", "status", "handler"),
            registry=registry,
        )
        self.request_size = Summary(
            "http_request_size_bytes",
            "Content length of incoming requests by handler. Only value of header is respected. "
            "Otherwise ignored. No percentile calculated. ",
            ("handler",),
            registry=registry,
        )
        self.response_size = Summary(
            "http_response_size_bytes",
            "Content length of outgoing responses by handler. Only value of header is respected. "
            "Otherwise ignored. No percentile calculated. ",
            ("handler",),
            registry=registry,
        )
        self.latency_highr = Histogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. Made for more accurate percentile "
            "calculations. ",
            buckets=LATENCY_HIGHR_BUCKETS,
            registry=registry,
        )
        self.latency_lowr = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation by handler "
            "is important. ",
            ("method", "handler"),
            buckets=LATENCY_LOWR_BUCKETS,
            registry=registry,
        )

    def observe(
        self, method: str, handler: str, status: int, seconds: float, request_bytes: int, response_bytes: int
    ) -> None:
        requests, request_size, response_size, latency = self._children(method, handler, status)
        requests.inc()
        request_size.observe(request_bytes)
        response_size.observe(response_bytes)
        self.latency_highr.observe(seconds)
        latency.observe(seconds)

    def _children(self, method: str, handler: str, status: int) -> tuple[Any, Any, Any, Any]:
        """The labelled series of one (method, handler, status), looked up once: `labels()` takes a
        lock and checks its arguments on every call. Bounded, since a client chooses the method."""
        key = (method, handler, status)
        children = self._cache.get(key)
        if children is None:
            children = (
                self.requests.labels(method, str(status), handler),
                self.request_size.labels(handler),
                self.response_size.labels(handler),
                self.latency_lowr.labels(method, handler),
            )
            if len(self._cache) < CHILD_CACHE_SIZE:
                self._cache[key] = children
        return children


class HttpMetricsMiddleware:
    """Observes each HTTP request but those to `excluded` paths (the scrape itself)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, excluded: Iterable[str] = ("/metrics",)) -> None:
        self.app = app
        self.metrics = metrics
        self.excluded = frozenset(excluded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raised before starting a response
        response_bytes = 0

        async def observing_send(message: Message) -> None:
            nonlocal status, response_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                response_bytes = _content_length(message.get("headers", ()))
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            route = scope.get("route")
            handler = getattr(route, "path", None) or UNMATCHED
            if handler not in self.excluded:
                self.metrics.observe(
                    scope["method"],
                    handler,
                    status,
                    max(time.perf_counter() - started, 0.0),
                    _content_length(scope["headers"]),
                    response_bytes,
                )


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
