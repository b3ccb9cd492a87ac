"""Liveness and readiness; a NATS outage: /readyz names it, the API keeps answering, events catch up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import WorkflowExecutionStatus

from devstack import free_port, nats_cmd, start_and_wait

from .conftest import Servers, Stack, api_in_process, assert_error, eventually, run_stack


async def test_healthz(stack: Stack) -> None:
    r = await stack.api.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_all_up(stack: Stack) -> None:
    r = await stack.api.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"mongodb": "ok", "nats": "ok", "temporal": "ok"}}


async def test_readyz_names_temporal_when_unreachable(stack: Stack) -> None:
    # The stack's own stream name: JetStream refuses a second stream over the same subjects.
    settings = stack.settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with api_in_process(settings) as (_, api):
        r = await api.get("/readyz")
        errors = assert_error(r, 503, extra_keys={"down"})
        assert r.json()["down"] == ["temporal"]
        assert [e["field"] for e in errors] == ["temporal"]
        assert all("temporal" in e["message"] for e in errors)
        assert (await api.get("/healthz")).status_code == 200


async def test_nats_outage(servers: Servers, tmp_path: Path) -> None:
    """A dedicated nats-server (the session one is shared): stop it, then start it again."""
    port = free_port()
    cmd = nats_cmd(port, tmp_path / "nats-store")
    nats_proc = start_and_wait("nats-outage", cmd, port, log_path=tmp_path / "nats-1.log")
    try:
        async with run_stack(servers, nats_url=f"nats://127.0.0.1:{port}") as stack:
            api = stack.api

            async def ready_status(code: int) -> bool:
                return (await api.get("/readyz")).status_code == code

            assert await ready_status(200)
            headers = await stack.signup()

            # ── NATS goes down ─────────────────────────────────────────────────────
            nats_proc.stop()
            await eventually(lambda: ready_status(503), "/readyz to report NATS down", 20)
            r = await api.get("/readyz")
            errors = assert_error(r, 503, "nats", extra_keys={"down"})
            assert r.json()["down"] == ["nats"]
            assert [e["field"] for e in errors] == ["nats"]
            assert "nats" in errors[0]["message"].lower()
            assert (await api.get("/healthz")).status_code == 200

            # The API still takes the ticket; the event waits in Temporal.
            ticket = await stack.create_ticket(headers, title="During outage", price=12.5)
            r = await api.get(f"/api/tickets/{ticket['id']}")
            assert r.status_code == 200
            assert r.json() == ticket

            # ── NATS comes back (same port, same store) ────────────────────────────
            nats_proc = start_and_wait("nats-outage", cmd, port, log_path=tmp_path / "nats-2.log")
            await eventually(lambda: ready_status(200), "/readyz to report ready again", 30)
            await stack.wait_for_messages("ticket:created", 1, timeout=60)
            # It went through the hand-off workflow, which has finished.
            handle = stack.temporal.get_workflow_handle(f"publish-ticket:created:{ticket['id']}:0")
            await asyncio.wait_for(handle.result(), 30)
            assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

            # Publishing goes straight to JetStream again: the update's fact is in the stream when
            # the PUT answers, after every earlier publish on the API's connection.
            r = await api.put(
                f"/api/tickets/{ticket['id']}", json={"title": "After outage", "price": 13}, headers=headers
            )
            assert r.status_code == 200, r.text
            created = {k: ticket[k] for k in ("id", "version", "title", "price", "userId")}
            facts = [(m.subject, m.data, m.msg_id) for m in await stack.messages()]
            assert facts == [
                ("ticket:created", created, f"ticket:created:{ticket['id']}:0"),
                ("ticket:updated", r.json(), f"ticket:updated:{ticket['id']}:1"),
            ]
    finally:
        nats_proc.stop()
