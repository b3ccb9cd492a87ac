"""Test harness: real servers on free loopback ports in temporary folders (SecantusDB, nats-server
with JetStream, localstripe, the Temporal dev server), started once per session. Each test gets a
fresh database, a fresh stream and its own task queue, so tests cannot see each other's data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError
from temporalio.client import Client

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
from ticketing.settings import Settings
from ticketing.temporal import connect_temporal
from workers.worker import build_worker


@dataclass
class Server:
    name: str
    port: int
    process: ManagedProcess
    cmd: list[str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10) -> None:
        self.process.stop(timeout)

    def kill(self) -> None:
        self.process.kill()

    def start(self, timeout: float = 60) -> None:
        self.process = start_and_wait(self.name, self.cmd, self.port, log_path=self.log_path, timeout=timeout)


def start_server(name: str, cmd_for_port: Any, folder: Path, timeout: float = 60) -> Server:
    port = free_port()
    cmd = cmd_for_port(port)
    log_path = folder / f"{name}.log"
    process = start_and_wait(name, cmd, port, log_path=log_path, timeout=timeout)
    return Server(name, port, process, cmd, log_path)


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

    async def messages(self, subject: str | None = None) -> list[Message]:
        return await read_stream(self.settings, subject)

    async def wait_for_messages(self, subject: str, count: int, timeout: float = 30) -> list[Message]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await self.messages(subject)
            if len(found) >= count or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.2)


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
                out.append(Message(msg.subject, json.loads(msg.data or b"{}"), headers.get("Nats-Msg-Id"), seq))
        return out
    finally:
        await nc.close()


@pytest.fixture
def settings(servers: Servers) -> Settings:
    return servers.settings()


async def drop_streams(target: str | Settings) -> None:
    """Delete every stream of the NATS server at this URL (or the settings' servers, with their
    credentials and TLS)."""
    nc = await nats.connect(**(nats_options(target) if isinstance(target, Settings) else {"servers": target}))
    try:
        js = nc.jetstream()
        for name in await js.streams_info():
            await js.delete_stream(name.config.name)
    finally:
        await nc.close()


@asynccontextmanager
async def run_stack(
    servers: Servers, settings: Settings, *, worker: bool = True, temporal_client: Client | None = None
) -> AsyncIterator[Stack]:
    """The API (in-process, real lifespan) and, unless worker=False, a Temporal worker on the
    settings' task queue."""
    await drop_streams(settings)  # one stream owns the subjects: the test's fresh one
    temporal_client = temporal_client or await connect_temporal(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as stack:
        if worker:
            await stack.enter_async_context(build_worker(temporal_client, settings, app.state.services.bus))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            yield Stack(api=api, settings=settings, temporal=temporal_client, servers=servers)


@pytest.fixture
async def stack(servers: Servers, settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(servers, settings) as s:
        yield s


@pytest.fixture
async def stack_factory(servers: Servers) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """`await stack_factory(order_expiration_seconds=2)`: a stack with overridden settings."""
    async with contextlib.AsyncExitStack() as exits:

        async def make(**overrides: Any) -> Stack:
            return await exits.enter_async_context(run_stack(servers, servers.settings(**overrides)))

        yield make


def assert_error(response, status: int, field: str | None = None, message: str | None = None) -> list[dict]:
    """The contract's error shape, the status, and optionally a field / message among the errors."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}, body
    assert isinstance(body["errors"], list), body
    assert body["errors"], body
    for err in body["errors"]:
        assert set(err) == {"message", "field"}, err
        assert isinstance(err["message"], str)
        assert err["message"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    if message is not None:
        assert message in [e["message"] for e in body["errors"]], body
    return body["errors"]
