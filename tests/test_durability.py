"""Crashes and restarts while orders sleep: every order still expires, every fact lands once.

These use dedicated servers or worker processes so that killing them does not disturb the
session's shared servers."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import ManagedProcess, free_port, nats_cmd, start_and_wait, temporal_cmd, wait_temporal_ready
from ticketing.settings import Settings
from ticketing.temporal import order_workflow_id
from workflows.order import OrderWorkflow

from .conftest import Servers, Stack, run_stack


def settings_env(settings: Settings, metrics_port: int | None = None) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        name.upper(): None if value is None else str(value) for name, value in settings.model_dump().items()
    }
    env["WORKER_METRICS_PORT"] = str(metrics_port or free_port())
    return env


def start_worker(settings: Settings, log: Path, metrics_port: int | None = None) -> ManagedProcess:
    """`ticketing worker` as a real process (so a test can SIGKILL it)."""
    cmd = [sys.executable, "-m", "ticketing.cli", "worker"]
    return ManagedProcess("worker").start(cmd, env=settings_env(settings, metrics_port), log_path=log)


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in started:
        process.stop(10)


async def place_orders(stack: Stack, count: int) -> list[dict]:
    seller = await stack.signup()
    buyers = [await stack.signup() for _ in range(3)]
    orders = []
    for i in range(count):
        ticket = await stack.create_ticket(seller, title=f"Seat {i}")
        orders.append(await stack.create_order(buyers[i % 3], ticket["id"]))
    return orders


async def assert_all_expired_once(stack: Stack, orders: list[dict], timeout: float = 120) -> None:
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                stack.temporal.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(o["id"])).result()
                for o in orders
            )
        ),
        timeout,
    )
    assert [r.status for r in results] == ["cancelled"] * len(orders)
    messages = await stack.messages()
    ids = {o["id"] for o in orders}
    for subject, key in (("expiration:complete", "orderId"), ("order:cancelled", "id")):
        seen = Counter(m.data[key] for m in messages if m.subject == subject)
        assert set(seen) == ids, subject
        assert set(seen.values()) == {1}, f"{subject} published more than once: {seen}"
    assert len({m.msg_id for m in messages}) == len(messages)  # no fact twice
    for order in orders:
        shown = (await stack.api.get(f"/api/orders/{order['id']}", headers=await stack.signup())).status_code
        assert shown == 401  # another user cannot read it
    assert len((await stack.api.get("/api/tickets")).json()) == len(orders)  # every ticket released


async def test_worker_sigkill_mid_sleep(servers: Servers, processes, tmp_path):
    settings = servers.settings(order_expiration_seconds=8)
    async with run_stack(servers, settings, worker=False) as stack:
        worker = start_worker(settings, tmp_path / "worker1.log")
        processes.append(worker)
        orders = await place_orders(stack, 12)
        await stack.wait_for_messages("order:created", len(orders))
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(10) is not None
        await asyncio.sleep(2)
        processes.append(start_worker(settings, tmp_path / "worker2.log"))
        await assert_all_expired_once(stack, orders)


async def test_temporal_server_restart_mid_sleep(servers: Servers, processes, tmp_path):
    port = free_port()
    cmd = temporal_cmd(port, None, tmp_path / "temporal.db")
    temporal = start_and_wait("temporal", cmd, port, log_path=tmp_path / "temporal.log")
    processes.append(temporal)
    wait_temporal_ready(f"127.0.0.1:{port}")  # the port opens before the frontend serves
    settings = servers.settings(order_expiration_seconds=10, temporal_address=f"127.0.0.1:{port}")
    async with run_stack(servers, settings, worker=False) as stack:
        processes.append(start_worker(settings, tmp_path / "worker.log"))
        orders = await place_orders(stack, 10)
        await stack.wait_for_messages("order:created", len(orders))
        temporal.stop(15)
        await asyncio.sleep(2)
        processes.append(start_and_wait("temporal", cmd, port, log_path=tmp_path / "temporal.log"))
        await assert_all_expired_once(stack, orders)


async def test_nats_down_while_orders_expire(servers: Servers, processes, tmp_path):
    port = free_port()
    cmd = nats_cmd(port, tmp_path / "nats")
    nats_server = start_and_wait("nats", cmd, port, log_path=tmp_path / "nats.log")
    processes.append(nats_server)
    settings = servers.settings(order_expiration_seconds=3, nats_url=f"nats://127.0.0.1:{port}")
    async with run_stack(servers, settings) as stack:
        orders = await place_orders(stack, 8)
        await stack.wait_for_messages("order:created", len(orders))
        nats_server.stop(10)
        await asyncio.sleep(6)  # every order's expiry passes while NATS is down: publishes retry
        pending = [await stack.temporal.get_workflow_handle(order_workflow_id(o["id"])).describe() for o in orders]
        assert all(d.status is not None and d.status.name == "RUNNING" for d in pending)
        processes.append(start_and_wait("nats", cmd, port, log_path=tmp_path / "nats.log"))
        await assert_all_expired_once(stack, orders)


async def test_worker_stops_gracefully_on_sigterm(servers: Servers, processes, tmp_path):
    settings = servers.settings(order_expiration_seconds=4, worker_graceful_shutdown_seconds=5)
    async with run_stack(servers, settings, worker=False) as stack:
        worker = start_worker(settings, tmp_path / "worker.log")
        processes.append(worker)
        orders = await place_orders(stack, 3)  # answered, so the worker is polling
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 20)
        assert code == 0, worker.log_tail()
        assert "shutting down" in worker.log_tail(50)
        # Nothing was lost with it: the next worker finishes the orders.
        processes.append(start_worker(settings, tmp_path / "worker2.log"))
        await assert_all_expired_once(stack, orders)
