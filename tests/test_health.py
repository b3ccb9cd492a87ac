"""Liveness and readiness; a NATS outage: /readyz names it, the API keeps answering, events catch up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
from temporalio.client import WorkflowExecutionStatus

from api.app import create_app
from devstack import free_port, nats_cmd, start_and_wait
from ticketing.settings import Settings
from ticketing.temporal import connect_temporal
from workers.worker import build_worker

from .conftest import read_stream


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def stream_messages(settings: Settings, subject: str) -> list[tuple[dict, str | None]]:
    return [(m.data, m.msg_id) for m in await read_stream(settings, subject)]


async def test_healthz(stack):
    r = await stack.api.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_all_up(stack):
    r = await stack.api.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"mongodb": "ok", "nats": "ok", "temporal": "ok"}}


async def test_readyz_names_temporal_when_unreachable(stack):
    # The stack's own stream name: JetStream refuses a second stream over the same subjects.
    settings = stack.settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            r = await api.get("/readyz")
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["down"] == ["temporal"]
            assert [e["field"] for e in body["errors"]] == ["temporal"]
            assert all(isinstance(e["message"], str) and "temporal" in e["message"] for e in body["errors"])
            assert (await api.get("/healthz")).status_code == 200


async def test_nats_outage(servers, tmp_path):
    """A dedicated nats-server (the session one is shared): stop it, then start it again."""
    port = free_port()
    cmd = nats_cmd(port, tmp_path / "nats-store")
    nats_proc = start_and_wait("nats-outage", cmd, port, log_path=tmp_path / "nats-1.log")
    try:
        settings = servers.settings(nats_url=f"nats://127.0.0.1:{port}")
        temporal_client = await connect_temporal(settings)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            worker = build_worker(temporal_client, settings, app.state.services.bus)
            transport = httpx.ASGITransport(app=app)
            async with worker, httpx.AsyncClient(transport=transport, base_url="http://test") as api:

                async def ready_status(code: int) -> bool:
                    return (await api.get("/readyz")).status_code == code

                assert (await api.get("/readyz")).status_code == 200

                r = await api.post("/api/users/signup", json={"email": f"{uuid.uuid4().hex}@t.com", "password": "pw12"})
                assert r.status_code == 201, r.text
                headers = {"Authorization": f"Bearer {r.json()['token']}"}
                api.cookies.clear()

                # ── NATS goes down ─────────────────────────────────────────────────────
                nats_proc.stop()
                await poll(lambda: ready_status(503), 20, "/readyz to report NATS down")
                r = await api.get("/readyz")
                body = r.json()
                assert body["down"] == ["nats"], body
                assert [e["field"] for e in body["errors"]] == ["nats"]
                assert "nats" in body["errors"][0]["message"].lower()
                assert (await api.get("/healthz")).status_code == 200

                # The API still takes the ticket; the event waits in Temporal.
                r = await api.post("/api/tickets", json={"title": "During outage", "price": 12.5}, headers=headers)
                assert r.status_code == 201, r.text
                ticket = r.json()
                r = await api.get(f"/api/tickets/{ticket['id']}")
                assert r.status_code == 200
                assert r.json() == ticket

                # ── NATS comes back (same port, same store) ────────────────────────────
                nats_proc = start_and_wait("nats-outage", cmd, port, log_path=tmp_path / "nats-2.log")
                await poll(lambda: ready_status(200), 30, "/readyz to report ready again")

                async def delivered() -> bool:
                    return bool(await stream_messages(settings, "ticket:created"))

                await poll(delivered, 60, "the deferred ticket:created event")
                # It went through the hand-off workflow, which has finished.
                handle = temporal_client.get_workflow_handle(f"publish-ticket:created:{ticket['id']}:0")
                await asyncio.wait_for(handle.result(), 30)
                assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
                # Let any other retry of the same fact land (it must be dropped as a duplicate).
                await asyncio.sleep(2)
                msgs = await stream_messages(settings, "ticket:created")
                assert msgs == [
                    (
                        {
                            "id": ticket["id"],
                            "version": 0,
                            "title": "During outage",
                            "price": 12.5,
                            "userId": ticket["userId"],
                        },
                        f"ticket:created:{ticket['id']}:0",
                    )
                ]

                # Publishing goes straight to JetStream again.
                r = await api.put(
                    f"/api/tickets/{ticket['id']}", json={"title": "After outage", "price": 13}, headers=headers
                )
                assert r.status_code == 200, r.text
                updated = await stream_messages(settings, "ticket:updated")
                assert [m[1] for m in updated] == [f"ticket:updated:{ticket['id']}:1"]
    finally:
        nats_proc.stop()
