"""The API's edge, as one pure ASGI middleware: request metrics (counts and latencies by route
template), and the refusals that need no route (bodies over MAX_BODY: 413; cross-site writes: 403),
in the contract's error shape.

Pure ASGI rather than `@app.middleware("http")`: each of those wraps every request in extra tasks
and memory streams; three of them cost about a sixth of the API's CPU per order (py-spy,
bench/README.md)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.csrf import cross_site_request
from api.errors import error_body

MAX_BODY = 256 * 1024


class Edge:
    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(Request(scope))
            if refusal is not None:
                await refusal(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            # The route template (/api/orders/{order_id}), never the raw path: bounded label values.
            name = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], name, str(status)).inc()
            self.latency.labels(scope["method"], name).observe(time.perf_counter() - start)

    @staticmethod
    def _refusal(request: Request) -> Response | None:
        # No legitimate body comes near this: refuse before reading it.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return JSONResponse(error_body(("Request body too large", None)), status_code=413)
        if cross_site_request(request):
            return JSONResponse(error_body(("Cross-site request refused", None)), status_code=403)
        return None


def install_edge(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter(
        "http_requests_total", "HTTP requests by route and status", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "http_request_duration_seconds",
        "HTTP request latency by route",
        ["method", "route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    app.add_middleware(Edge, requests=requests, latency=latency)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
