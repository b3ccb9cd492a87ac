"""Observability: the API's /metrics has per-route HTTP series, the worker serves temporal_* series,
and log lines are JSON carrying orderId / workflowId."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx

from devstack import free_port
from ticketing.logs import JsonFormatter

from .conftest import (
    ORDER_WORKFLOW_TYPE,
    Servers,
    Stack,
    eventually,
    metric_samples,
    run_stack,
    scrape,
    start_worker,
)


async def test_api_metrics_by_route(stack: Stack) -> None:
    headers = await stack.signup()
    await stack.create_ticket(headers)
    assert (await stack.api.get("/api/tickets/000000000000000000000000")).status_code == 404
    body = (await stack.api.get("/metrics")).text
    # Each request counted once, under its route template (label values stay bounded) and status.
    counted = {
        (labels["method"], labels["route"], labels["status"]): value
        for labels, value in metric_samples(body, "http_requests_total")
        if labels["route"].startswith("/api/")
    }
    assert counted == {
        ("POST", "/api/users/signup", "201"): 1,
        ("POST", "/api/tickets", "201"): 1,
        ("GET", "/api/tickets/{ticket_id}", "404"): 1,
    }, body
    assert "000000000000000000000000" not in body
    # ... and timed once each.
    timed = {
        (labels["method"], labels["route"]): value
        for labels, value in metric_samples(body, "http_request_duration_seconds_count")
        if labels["route"].startswith("/api/")
    }
    assert timed == {
        ("POST", "/api/users/signup"): 1,
        ("POST", "/api/tickets"): 1,
        ("GET", "/api/tickets/{ticket_id}"): 1,
    }
    slowest = metric_samples(body, "http_request_duration_seconds_bucket", route="/api/tickets", le="+Inf")
    assert [value for _, value in slowest] == [1]


async def test_worker_serves_temporal_metrics(servers: Servers, tmp_path: Path) -> None:
    settings = servers.settings()
    port = free_port()
    ours = {"task_queue": settings.temporal_task_queue, "workflow_type": ORDER_WORKFLOW_TYPE}
    async with run_stack(servers, settings, worker=False) as stack:
        worker = start_worker(settings, tmp_path / "worker.log", metrics_port=port)
        try:
            # Answered once the worker has run the order's first workflow task and its open_order step.
            await stack.place_order()

            async def counted() -> str | None:
                body = await scrape(port)
                return body if metric_samples(body, "temporal_local_activity_total", **ours) else None

            body = await eventually(counted, "the worker's metrics to count the order", ignore=(httpx.HTTPError,))
            opened = metric_samples(body, "temporal_local_activity_total", activity_type="open_order", **ours)
            assert [value for _, value in opened] == [1], body
            tasks = metric_samples(body, "temporal_workflow_task_execution_latency_count", **ours)
            assert len(tasks) == 1, body
            assert tasks[0][1] >= 1, body
        finally:
            worker.stop(10)


def test_json_log_lines_carry_ids_and_redact_secrets():
    record = logging.LogRecord("activities", logging.INFO, __file__, 1, "order cancelled", None, None)
    record.temporal_activity = {"workflow_id": "order-abc123", "activity_type": "change_order", "attempt": 2}
    record.password = "hunter2"
    line = json.loads(JsonFormatter().format(record))
    assert line["workflowId"] == "order-abc123"
    assert line["orderId"] == "abc123"
    assert line["password"] == "[redacted]"
    assert "hunter2" not in json.dumps(line)
