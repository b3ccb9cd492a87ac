"""Observability: the API's /metrics has per-route HTTP series, the worker serves temporal_* series,
and log lines are JSON carrying orderId / workflowId."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request

from devstack import free_port
from ticketing.logs import JsonFormatter

from .conftest import Servers, run_stack, start_worker


async def test_api_metrics_by_route(stack):
    headers = await stack.signup()
    await stack.create_ticket(headers)
    assert (await stack.api.get("/api/tickets/000000000000000000000000")).status_code == 404
    body = (await stack.api.get("/metrics")).text
    assert 'http_requests_total{method="POST",route="/api/tickets",status="201"} 1.0' in body
    # Route templates, not raw paths: label values stay bounded.
    assert 'route="/api/tickets/{ticket_id}",status="404"' in body
    assert "000000000000000000000000" not in body
    assert "http_request_duration_seconds_bucket" in body


async def test_worker_serves_temporal_metrics(servers: Servers, tmp_path):
    settings = servers.settings()
    port = free_port()
    async with run_stack(servers, settings, worker=False) as stack:
        worker = start_worker(settings, tmp_path / "worker.log", metrics_port=port)
        try:
            seller, buyer = await stack.signup(), await stack.signup()
            ticket = await stack.create_ticket(seller)
            await stack.create_order(buyer, ticket["id"])
            body = ""
            for _ in range(100):
                try:
                    body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
                except OSError:
                    body = ""
                if "temporal_workflow_task" in body or "temporal_request" in body:
                    break
                await asyncio.sleep(0.2)
            assert "temporal_" in body
        finally:
            worker.stop(10)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()


def test_json_log_lines_carry_ids_and_redact_secrets():
    record = logging.LogRecord("activities", logging.INFO, __file__, 1, "order cancelled", None, None)
    record.temporal_activity = {"workflow_id": "order-abc123", "activity_type": "change_order", "attempt": 2}
    record.password = "hunter2"
    line = json.loads(JsonFormatter().format(record))
    assert line["workflowId"] == "order-abc123"
    assert line["orderId"] == "abc123"
    assert line["password"] == "[redacted]"
    assert "hunter2" not in json.dumps(line)
