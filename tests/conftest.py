"""Test harness: real servers on free loopback ports in temporary folders (SecantusDB, nats-server
with JetStream, localstripe, the Temporal dev server), started once per session. Each test gets a
fresh database, a fresh stream and its own task queue, so tests cannot see each other's data."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.js.errors import NotFoundError
from temporalio import workflow
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleHandle,
    WorkflowHandle,
)

from api.app import create_app
from devstack import (
    ManagedProcess,
    free_port,
    localstripe_cmd,
    nats_cmd,
    secantus_cmd,
    start_and_wait,
    temporal_cmd,
    wait_temporal_ready,
)
from ticketing.bus import nats_options
from ticketing.payloads import OrderState
from ticketing.settings import Settings
from ticketing.temporal import connect_temporal, order_workflow_id
from workers.worker import build_worker
from workflows.order import OrderWorkflow

T = TypeVar("T")


def _workflow_type(cls: type) -> str:
    name = workflow._Definition.must_from_class(cls).name
    assert name is not None, cls  # only a dynamic workflow has none
    return name


ORDER_WORKFLOW_TYPE = _workflow_type(OrderWorkflow)  # as Temporal (its metrics, its UI) names it


@dataclass
class Server:
    name: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10) -> None:
        self.process.stop(timeout)


def start_server(name: str, cmd_for_port: Callable[[int], list[str]], folder: Path, timeout: float = 60) -> Server:
    port = free_port()
    process = start_and_wait(name, cmd_for_port(port), port, log_path=folder / f"{name}.log", timeout=timeout)
    return Server(name, port, process)


@dataclass
class Servers:
    mongo: Server
    nats: Server
    stripe: Server
    temporal: Server
    folder: Path

    def settings(self, **overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "app_env": "test",
            "mongo_url": f"mongodb://{self.mongo.url}",
            "mongo_db": f"test_{tag}",
            "nats_url": f"nats://{self.nats.url}",
            "nats_stream": f"TEST_{tag}",
            "temporal_address": self.temporal.url,
            "temporal_task_queue": f"orders-{tag}",
            "stripe_api_base": f"http://{self.stripe.url}",
            "stripe_key": "sk_test_123",
            "stripe_webhook_secret": "whsec_test_secret",
            "jwt_key": "test-jwt-key-0123456789abcdef0123456789",
            # Production runs workflows unsandboxed (speed); the tests keep the sandbox's checks.
            "worker_workflow_sandbox": True,
            # The dev server is shared: a test that wants the reconcile schedule creates its own.
            "reconcile_schedule": False,
        }
        values.update(overrides)
        return Settings(**values)


def _start_servers(folder: Path) -> Servers:
    started: list[Server] = []
    try:
        for name, builder in (
            ("mongo", lambda p: secantus_cmd(p, folder / "mongo")),
            ("nats", lambda p: nats_cmd(p, folder / "nats")),
            ("stripe", lambda p: localstripe_cmd(p)),
            ("temporal", lambda p: temporal_cmd(p, None, folder / "temporal.db")),
        ):
            started.append(start_server(name, builder, folder))
    except BaseException:
        for server in started:
            server.stop(5)
        raise
    mongo, nats_, stripe_, temporal = started
    wait_temporal_ready(temporal.url)
    return Servers(mongo, nats_, stripe_, temporal, folder)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    srv = _start_servers(tmp_path_factory.mktemp("servers"))
    yield srv
    for server in (srv.temporal, srv.stripe, srv.nats, srv.mongo):
        server.stop(10)


Processes = list[ManagedProcess]


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Processes a test starts (dedicated servers, workers): stopped at the end, last first."""
    started: list[ManagedProcess] = []
    yield started
    for process in reversed(started):
        process.stop(10)


def settings_env(settings: Settings, metrics_port: int | None = None) -> dict[str, str | None]:
    """The settings as the environment of a `ticketing` process (None: unset)."""
    env: dict[str, str | None] = {
        name.upper(): None if value is None else str(value) for name, value in settings.model_dump().items()
    }
    env["WORKER_METRICS_PORT"] = str(metrics_port or free_port())
    return env


def start_worker(settings: Settings, log: Path, metrics_port: int | None = None) -> ManagedProcess:
    """`ticketing worker` as a real process (so a test can SIGKILL it)."""
    cmd = [sys.executable, "-m", "ticketing.cli", "worker"]
    return ManagedProcess("worker").start(cmd, env=settings_env(settings, metrics_port), log_path=log)


# ── waiting ──────────────────────────────────────────────────────────────────────────────
@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    timeout: float = ...,
    interval: float = ...,
    ignore: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None],
    what: str,
    timeout: float = ...,
    interval: float = ...,
    ignore: tuple[type[Exception], ...] = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    what: str,
    timeout: float = 30,
    interval: float = 0.2,
    ignore: tuple[type[Exception], ...] = (),
) -> Any:
    """Calls `check` (sync or async) until it returns something truthy, and returns that. After
    `timeout` seconds the test fails, saying what it waited for and the last value seen. An
    exception of a type in `ignore` counts as "not yet" (a server still starting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
        except ignore as err:
            last = err
        else:
            if last:
                return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last seen: {last!r:.500}")
        await asyncio.sleep(interval)


async def trigger_and_wait(schedule: ScheduleHandle) -> str:
    """Triggers the schedule now; returns the id of the workflow it started."""
    seen_before = len((await schedule.describe()).info.recent_actions)
    await schedule.trigger()

    async def scheduled_run() -> str | None:
        actions = (await schedule.describe()).info.recent_actions
        if len(actions) == seen_before:
            return None
        started = actions[-1].action
        assert isinstance(started, ScheduleActionExecutionStartWorkflow), started
        return started.workflow_id

    return await eventually(scheduled_run, "the scheduled run to start", 30)


# ── metrics ──────────────────────────────────────────────────────────────────────────────
async def scrape(port: int) -> str:
    """The Prometheus text a process serves at 127.0.0.1:<port>/metrics."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return response.text


SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", re.M)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_samples(exposition: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of each sample called `name` (as written: no `_total` added) in a Prometheus
    text exposition whose labels include `labels`."""
    found = []
    for sample, label_text, value in SAMPLE.findall(exposition):
        have = dict(LABEL.findall(label_text))
        if sample == name and labels.items() <= have.items():
            found.append((have, float(value)))
    return found


# ── the contract's error shape ───────────────────────────────────────────────────────────
def error_entries(body: Any, extra_keys: Collection[str] = ()) -> list[dict[str, Any]]:
    """`{"errors": [{"message": str, "field": str | null}, ...]}` (at least one entry), and no other
    key but `extra_keys` (/readyz adds "down"); returns the entries."""
    assert isinstance(body, dict), body
    assert "errors" in body, body
    assert set(body) <= {"errors", *extra_keys}, body
    errors = body["errors"]
    assert isinstance(errors, list), body
    assert errors, body
    for err in errors:
        assert isinstance(err, dict), body
        assert set(err) == {"message", "field"}, body
        assert isinstance(err["message"], str), body
        assert err["message"], body
        assert err["field"] is None or isinstance(err["field"], str), body
    return errors


def assert_error(
    response: httpx.Response,
    status: int,
    field: str | None = None,
    message: str | None = None,
    *,
    extra_keys: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The status, a JSON body in the contract's error shape, and optionally a field / message
    among its entries; returns the entries."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    errors = error_entries(response.json(), extra_keys)
    if field is not None:
        assert field in [e["field"] for e in errors], errors
    if message is not None:
        assert message in [e["message"] for e in errors], errors
    return errors


# ── the stack under test ─────────────────────────────────────────────────────────────────
@dataclass
class Message:
    subject: str
    data: dict[str, Any]
    msg_id: str | None
    seq: int


@dataclass
class Stack:
    """One test's view of the system: the API client, its settings and helpers."""

    api: httpx.AsyncClient
    settings: Settings
    temporal: Client
    servers: Servers
    app: FastAPI
    _users: int = field(default=0)

    async def signup(self, email: str | None = None, password: str = "password") -> dict[str, str]:
        self._users += 1
        email = email or f"user{self._users}-{uuid.uuid4().hex[:6]}@test.com"
        response = await self.api.post("/api/users/signup", json={"email": email, "password": password})
        assert response.status_code == 201, response.text
        self.api.cookies.clear()  # tests say who they are with the Bearer header they pass
        return {"Authorization": f"Bearer {response.json()['token']}"}

    async def create_ticket(self, headers: dict[str, str], title: str = "Concert", price: float = 20.5) -> dict:
        response = await self.api.post("/api/tickets", json={"title": title, "price": price}, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    async def create_order(self, headers: dict[str, str], ticket_id: str) -> dict:
        response = await self.api.post("/api/orders", json={"ticketId": ticket_id}, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    async def place_order(self, price: float = 20.5, title: str = "Concert") -> tuple[dict[str, str], dict]:
        """A new seller's ticket reserved by a new buyer: (the buyer's headers, the order)."""
        seller, buyer = await self.signup(), await self.signup()
        ticket = await self.create_ticket(seller, title=title, price=price)
        return buyer, await self.create_order(buyer, ticket["id"])

    async def pay(
        self, headers: dict[str, str], order_id: str, token: str = "pm_card_visa", **kwargs: Any
    ) -> httpx.Response:
        return await self.api.post(
            "/api/payments", json={"orderId": order_id, "token": token}, headers=headers, **kwargs
        )

    async def charge(self, headers: dict[str, str], order_id: str, token: str = "pm_card_visa") -> dict:
        """Pays the order: 201 and the charge."""
        response = await self.pay(headers, order_id, token)
        assert response.status_code == 201, response.text
        return response.json()

    async def show_order(self, headers: dict[str, str], order_id: str) -> dict:
        response = await self.api.get(f"/api/orders/{order_id}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for_order_status(
        self, headers: dict[str, str], order_id: str, status: str, timeout: float = 30
    ) -> dict:
        async def shown() -> dict | None:
            order = await self.show_order(headers, order_id)
            return order if order["status"] == status else None

        return await eventually(shown, f"order {order_id} to be {status}", timeout)

    def order_handle(self, order_id: str) -> WorkflowHandle[Any, OrderState]:
        return self.temporal.get_workflow_handle(order_workflow_id(order_id), result_type=OrderState)

    async def final_state(self, order_id: str, timeout: float = 60) -> OrderState:
        """Waits for the order's workflow to end; returns what it ended with."""
        return await asyncio.wait_for(self.order_handle(order_id).result(), timeout)

    async def messages(self, subject: str | None = None) -> list[Message]:
        return await read_stream(self.settings, subject)

    async def wait_for_messages(self, subject: str, count: int, timeout: float = 30) -> list[Message]:
        """The subject's messages once there are at least `count` of them."""

        async def enough() -> list[Message] | None:
            found = await self.messages(subject)
            return found if len(found) >= count else None

        return await eventually(enough, f"{count} {subject} message(s)", timeout)


@dataclass
class Placed:
    seller: dict[str, str]
    buyers: list[dict[str, str]]
    orders: list[dict]
    owner: dict[str, dict[str, str]]  # order id -> the buyer's headers
    tickets: list[str]


async def place_orders(stack: Stack, count: int, buyers: int = 5, concurrency: int = 10) -> Placed:
    """`count` tickets of one seller, each reserved by one of `buyers` buyers (round robin)."""
    seller = await stack.signup()
    heads = [await stack.signup() for _ in range(buyers)]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> tuple[dict, dict[str, str], str]:
        async with gate:
            ticket = await stack.create_ticket(seller, title=f"Seat {i}", price=10 + i % 7 + 0.5)
            buyer = heads[i % buyers]
            return await stack.create_order(buyer, ticket["id"]), buyer, ticket["id"]

    placed = await asyncio.gather(*(one(i) for i in range(count)))
    return Placed(
        seller=seller,
        buyers=heads,
        orders=[o for o, _, _ in placed],
        owner={o["id"]: b for o, b, _ in placed},
        tickets=[t for _, _, t in placed],
    )


async def read_stream(settings: Settings, subject: str | None = None) -> list[Message]:
    """Every message in the test's stream (optionally one subject), in stream order."""
    nc = await nats.connect(**nats_options(settings))
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(settings.nats_stream)
        except NotFoundError:
            return []
        out: list[Message] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            try:
                msg = await js.get_msg(settings.nats_stream, seq)
            except NotFoundError:
                continue
            if subject is None or msg.subject == subject:
                headers = msg.headers or {}
                data = json.loads(msg.data or b"{}")
                out.append(Message(str(msg.subject), data, headers.get("Nats-Msg-Id"), seq))
        return out
    finally:
        await nc.close()


@pytest.fixture
def settings(servers: Servers) -> Settings:
    return servers.settings()


async def drop_streams(target: str | Settings) -> None:
    """Delete every stream of the NATS server at this URL (or the settings' servers, with their
    credentials and TLS): one stream owns the subjects, so a new stack's own must be the only one."""
    nc = await nats.connect(**(nats_options(target) if isinstance(target, Settings) else {"servers": target}))
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name:
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@asynccontextmanager
async def asgi_client(app: FastAPI, base_url: str = "http://test", **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that calls the app in process."""
    transport = httpx.ASGITransport(app=app, **kwargs)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


@asynccontextmanager
async def api_in_process(
    settings: Settings, base_url: str = "http://test"
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The API app through its real lifespan (MongoDB, NATS and Temporal clients), and an HTTP client
    that calls it in process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), asgi_client(app, base_url) as client:
        yield app, client


@asynccontextmanager
async def run_stack(
    servers: Servers,
    settings: Settings | None = None,
    *,
    worker: bool = True,
    temporal_client: Client | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """The API (in-process, real lifespan) and, unless worker=False, a Temporal worker on the
    settings' task queue. Settings: the given ones, or the session's with `overrides`
    (e.g. order_expiration_seconds=3)."""
    assert settings is None or not overrides, "pass settings or overrides, not both"
    settings = settings or servers.settings(**overrides)
    await drop_streams(settings)
    temporal_client = temporal_client or await connect_temporal(settings)
    async with api_in_process(settings) as (app, api), contextlib.AsyncExitStack() as stack:
        if worker:
            await stack.enter_async_context(build_worker(temporal_client, settings, app.state.services.bus))
        yield Stack(api=api, settings=settings, temporal=temporal_client, servers=servers, app=app)


@pytest.fixture
async def stack(servers: Servers, settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(servers, settings) as s:
        yield s


@pytest.fixture
async def stack_factory(servers: Servers) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """`await stack_factory(order_expiration_seconds=2)`: a stack with overridden settings."""
    async with contextlib.AsyncExitStack() as exits:

        async def make(**overrides: Any) -> Stack:
            return await exits.enter_async_context(run_stack(servers, **overrides))

        yield make
