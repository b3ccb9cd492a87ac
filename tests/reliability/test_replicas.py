"""Many replicas behave as one service: 2 API processes and 3 worker processes on one task queue.

ORDERS orders are placed round-robin through both APIs (`ticketing api`, real uvicorn processes);
every other one is paid with pm_card_visa right after it is created, the rest sleep until they
expire. Mid-run one worker is SIGKILLed and one API is stopped (SIGTERM); clients fail over to the
API that is left, as a load balancer would. Then `audit` counts: every order complete xor cancelled,
lost = 0, duplicates = 0, exactly one kept charge per complete order. Each worker's Prometheus
metrics show it ran order workflow tasks (the killed one's are read just before the kill), and
failed sign-ins spread over both APIs hit one shared limit."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient

from devstack import ManagedProcess, free_port
from ticketing.payloads import Refusal

from ..conftest import (
    ORDER_WORKFLOW_TYPE,
    Placed,
    Servers,
    eventually,
    metric_samples,
    run_stack,
    scrape,
    settings_env,
    start_worker,
)
from .conftest import audit, record

ORDERS = 500
EXPIRES = 30  # seconds: the paid half is paid right after its creation, well before it expires
LANES = 16  # concurrent clients placing orders


class Api:
    """One API replica, as a process, and an HTTP client for it."""

    def __init__(self, name: str, settings_env_: dict[str, str | None], log: Path) -> None:
        self.port = free_port()
        self.process = ManagedProcess(name).start(
            [sys.executable, "-m", "ticketing.cli", "api"],
            env={**settings_env_, "PORT": str(self.port), "HOST": "127.0.0.1"},
            log_path=log,
        )
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.up = True

    async def wait_ready(self, timeout: float = 60) -> None:
        async def ready() -> bool:
            assert self.process.is_running, self.process.log_tail()
            return (await self.client.get("/readyz")).status_code == 200

        await eventually(ready, f"{self.process.name} to be ready", timeout, ignore=(httpx.TransportError,))


class Cluster:
    """Round-robin over the APIs that are up; a request that fails in transport (or with a 5xx)
    is sent to the next one, like a load balancer retrying an idempotent call."""

    def __init__(self, apis: list[Api]) -> None:
        self.apis, self.turn = apis, 0
        self.failovers = 0

    async def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        end = time.monotonic() + 120
        while True:
            live = [a for a in self.apis if a.up]
            api = live[self.turn % len(live)]
            self.turn += 1
            try:
                r = await api.client.request(method, path, **kwargs)
                if r.status_code < 500:
                    return r
            except httpx.TransportError:
                pass
            self.failovers += 1
            assert time.monotonic() < end, f"{method} {path}: no API answered"
            await asyncio.sleep(0.2)


async def workflow_tasks(metrics_port: int) -> float:
    """Order workflow tasks this worker has run (its Prometheus endpoint)."""
    body = await scrape(metrics_port)
    samples = metric_samples(body, "temporal_workflow_task_execution_latency_count", workflow_type=ORDER_WORKFLOW_TYPE)
    return sum(value for _, value in samples)


@pytest.mark.timeout(600)  # ~2 min on 2 shared cores (500 orders placed in ~60 s, then the last expiries)
async def test_two_apis_three_workers_behave_as_one(servers: Servers, processes, tmp_path: Path):
    settings = servers.settings(order_expiration_seconds=EXPIRES, worker_graceful_shutdown_seconds=5)
    env = settings_env(settings)
    async with run_stack(servers, settings, worker=False) as stack:  # drops old streams: before the APIs start
        metrics_ports = [free_port() for _ in range(3)]
        workers = [start_worker(settings, tmp_path / f"worker{i}.log", port) for i, port in enumerate(metrics_ports)]
        processes.extend(workers)
        apis = [Api(f"api-{n}", env, tmp_path / f"api-{n}.log") for n in "ab"]
        processes.extend(a.process for a in apis)
        await asyncio.gather(*(a.wait_ready() for a in apis))
        cluster = Cluster(apis)
        try:
            await _shared_signin_limit(apis)
            started = time.monotonic()
            placed, pay_statuses, kill_tasks = await _place_and_pay(
                cluster, stack.settings, workers, apis, metrics_ports
            )
            placing = time.monotonic() - started
            tasks = kill_tasks + [await workflow_tasks(p) for p in metrics_ports[:2]]
            await audit(
                stack,
                "2 APIs + 3 workers",
                placed,
                f"worker SIGKILL at {ORDERS * 2 // 5} orders, API SIGTERM at {ORDERS * 7 // 10}",
                started=started,
                timeout=150,
                extra=(
                    f"placed and paid in {placing:.0f}s, pay HTTP finals {sorted(pay_statuses.items())}, "
                    f"failovers {cluster.failovers}, "
                    f"order workflow tasks per worker {tasks}"
                ),
            )
            tasks = [await workflow_tasks(p) for p in metrics_ports[:2]] + kill_tasks
            assert all(t > 0 for t in tasks), f"a worker ran no order workflow task: {tasks}"
        finally:
            for a in apis:
                await a.client.aclose()


async def _shared_signin_limit(apis: list[Api]) -> None:
    """10 failures split over both APIs block the 11th attempt on either: one limit, not one per process."""
    a, b = apis
    email = f"replicas-{time.time_ns()}@test.com"
    r = await a.client.post("/api/users/signup", json={"email": email, "password": "right-password"})
    assert r.status_code == 201, r.text
    statuses = []
    for i in range(10):
        api = apis[i % 2]
        r = await api.client.post("/api/users/signin", json={"email": email, "password": "wrong-password"})
        statuses.append(r.status_code)
    assert statuses == [400] * 10, statuses
    for api in (a, b):
        r = await api.client.post("/api/users/signin", json={"email": email, "password": "right-password"})
        assert r.status_code == 429, r.text
    record("[replicas] sign-in: 5 failures on each API -> the 11th attempt is 429 on both")


async def _place_and_pay(
    cluster: Cluster, settings, workers: list[ManagedProcess], apis: list[Api], metrics_ports: list[int]
) -> tuple[Placed, dict[int, int], list[float]]:
    async def session() -> dict[str, str]:
        email = f"r{time.time_ns()}@test.com"
        r = await cluster.call("POST", "/api/users/signup", json={"email": email, "password": "password"})
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    seller = await session()
    buyers = [await session() for _ in range(8)]
    orders: list[dict | None] = [None] * ORDERS
    tickets: list[str] = [""] * ORDERS
    pay_statuses: dict[int, int] = {}
    kill_tasks: list[float] = []
    done = 0
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url)
    db = mongo[settings.mongo_db]

    async def place(i: int) -> None:
        nonlocal done
        buyer = buyers[i % len(buyers)]
        r = await cluster.call("POST", "/api/tickets", json={"title": f"Seat {i}", "price": 10 + i % 7}, headers=seller)
        assert r.status_code == 201, r.text
        tickets[i] = r.json()["id"]
        r = await cluster.call("POST", "/api/orders", json={"ticketId": tickets[i]}, headers=buyer)
        if r.status_code == 400 and r.json()["errors"][0]["message"] == Refusal.TICKET_RESERVED:
            # A first attempt was stored but its reply was lost with the stopped API: look it up.
            doc = await db.orders.find_one({"ticket.id": tickets[i]})
            assert doc is not None, r.text
            r = await cluster.call("GET", f"/api/orders/{doc['_id']}", headers=buyer)
        assert r.status_code in (200, 201), r.text
        order = orders[i] = r.json()
        if i % 2 == 0:
            r = await cluster.call(
                "POST", "/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}, headers=buyer
            )
            pay_statuses[r.status_code] = pay_statuses.get(r.status_code, 0) + 1
        done += 1

    async def faults() -> None:
        await eventually(lambda: done >= ORDERS * 2 // 5, f"{ORDERS * 2 // 5} orders placed", 300, interval=0.1)
        kill_tasks.append(await workflow_tasks(metrics_ports[2]))
        workers[2].send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(workers[2].wait, 10) is not None
        await eventually(lambda: done >= ORDERS * 7 // 10, f"{ORDERS * 7 // 10} orders placed", 300, interval=0.1)
        apis[1].up = False  # the load balancer stops routing new calls to it...
        apis[1].process.send_signal(signal.SIGTERM)  # ...while its in-flight calls finish
        assert await asyncio.to_thread(apis[1].process.wait, 20) is not None

    gate = asyncio.Semaphore(LANES)

    async def lane(i: int) -> None:
        async with gate:
            await place(i)

    try:
        await asyncio.gather(faults(), *(lane(i) for i in range(ORDERS)))
    finally:
        await mongo.close()
    assert all(o is not None for o in orders)
    placed = Placed(
        seller=seller,
        buyers=buyers,
        orders=[o for o in orders if o is not None],
        owner={o["id"]: buyers[i % len(buyers)] for i, o in enumerate(orders) if o is not None},
        tickets=tickets,
    )
    return placed, pay_statuses, kill_tasks
