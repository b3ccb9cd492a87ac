"""Crashes and restarts while orders sleep: every order still expires, every fact lands once.

These use dedicated servers or worker processes so that killing them does not disturb the
session's shared servers."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

from bson import ObjectId
from temporalio.client import WorkflowExecutionStatus

from devstack import ManagedProcess, free_port, nats_cmd, start_and_wait, temporal_cmd, wait_temporal_ready
from ticketing.documents import Order, OrderStatus

from .conftest import Placed, Servers, Stack, assert_error, eventually, place_orders, run_stack, start_worker


async def assert_all_expired_once(stack: Stack, placed: Placed, timeout: float = 120) -> None:
    orders = placed.orders
    results = await asyncio.wait_for(asyncio.gather(*(stack.final_state(o["id"], timeout) for o in orders)), timeout)
    assert [r.status for r in results] == [OrderStatus.CANCELLED] * len(orders)
    messages = await stack.messages()
    ids = {o["id"] for o in orders}
    for subject, key in (("expiration:complete", "orderId"), ("order:cancelled", "id")):
        seen = Counter(m.data[key] for m in messages if m.subject == subject)
        assert set(seen) == ids, subject
        assert set(seen.values()) == {1}, f"{subject} published more than once: {seen}"
    assert len({m.msg_id for m in messages}) == len(messages)  # no fact twice
    stranger = await stack.signup()
    for order in orders:
        shown = await stack.show_order(placed.owner[order["id"]], order["id"])
        assert (shown["status"], shown["version"]) == ("cancelled", order["version"] + 1)
        assert_error(await stack.api.get(f"/api/orders/{order['id']}", headers=stranger), 401)
    assert len((await stack.api.get("/api/tickets")).json()) == len(orders)  # every ticket released


async def test_worker_sigkill_mid_sleep(servers: Servers, processes: list[ManagedProcess], tmp_path: Path) -> None:
    settings = servers.settings(order_expiration_seconds=8)
    async with run_stack(servers, settings, worker=False) as stack:
        worker = start_worker(settings, tmp_path / "worker1.log")
        processes.append(worker)
        placed = await place_orders(stack, 12, buyers=3)
        await stack.wait_for_messages("order:created", len(placed.orders))
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(10) is not None
        await asyncio.sleep(2)
        processes.append(start_worker(settings, tmp_path / "worker2.log"))
        await assert_all_expired_once(stack, placed)


async def test_temporal_server_restart_mid_sleep(
    servers: Servers, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    port = free_port()
    cmd = temporal_cmd(port, None, tmp_path / "temporal.db")
    temporal = start_and_wait("temporal", cmd, port, log_path=tmp_path / "temporal.log")
    processes.append(temporal)
    wait_temporal_ready(f"127.0.0.1:{port}")  # the port opens before the frontend serves
    settings = servers.settings(order_expiration_seconds=10, temporal_address=f"127.0.0.1:{port}")
    async with run_stack(servers, settings, worker=False) as stack:
        processes.append(start_worker(settings, tmp_path / "worker.log"))
        placed = await place_orders(stack, 10, buyers=3)
        await stack.wait_for_messages("order:created", len(placed.orders))
        temporal.stop(15)
        await asyncio.sleep(2)
        processes.append(start_and_wait("temporal", cmd, port, log_path=tmp_path / "temporal.log"))
        await assert_all_expired_once(stack, placed)


async def test_nats_down_while_orders_expire(servers: Servers, processes: list[ManagedProcess], tmp_path: Path) -> None:
    port = free_port()
    cmd = nats_cmd(port, tmp_path / "nats")
    nats_server = start_and_wait("nats", cmd, port, log_path=tmp_path / "nats.log")
    processes.append(nats_server)
    settings = servers.settings(order_expiration_seconds=3, nats_url=f"nats://127.0.0.1:{port}")
    async with run_stack(servers, settings) as stack:
        placed = await place_orders(stack, 8, buyers=3)
        await stack.wait_for_messages("order:created", len(placed.orders))
        nats_server.stop(10)
        # Every order expires while NATS is down: its cancellation is stored, and its workflow keeps
        # running because the facts that report it cannot be published yet (they are retried).
        ids = [ObjectId(o["id"]) for o in placed.orders]

        async def all_stored_cancelled() -> bool:
            query = {"_id": {"$in": ids}, "status": OrderStatus.CANCELLED.value}
            return await Order.get_pymongo_collection().count_documents(query) == len(ids)

        await eventually(all_stored_cancelled, "every order stored as cancelled while NATS is down")
        pending = [await stack.order_handle(o["id"]).describe() for o in placed.orders]
        assert [d.status for d in pending] == [WorkflowExecutionStatus.RUNNING] * len(pending)
        processes.append(start_and_wait("nats", cmd, port, log_path=tmp_path / "nats.log"))
        await assert_all_expired_once(stack, placed)


async def test_worker_stops_gracefully_on_sigterm(
    servers: Servers, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    settings = servers.settings(order_expiration_seconds=4, worker_graceful_shutdown_seconds=5)
    async with run_stack(servers, settings, worker=False) as stack:
        worker = start_worker(settings, tmp_path / "worker.log")
        processes.append(worker)
        placed = await place_orders(stack, 3, buyers=3)  # answered, so the worker is polling
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 20)
        assert code == 0, worker.log_tail()
        assert "shutting down" in worker.log_tail(50)
        # Nothing was lost with it: the next worker finishes the orders.
        processes.append(start_worker(settings, tmp_path / "worker2.log"))
        await assert_all_expired_once(stack, placed)
