"""`make bench`: the Temporal order design against the BullMQ design it replaces and against the
engine's own limit, on this machine, in one sitting.

Starts its own stack (bench/stack.py) and runs the scenarios chosen with --scenarios (default all,
in this order), printing ONE table and a CPU-ms-per-order table:

- create:  POST /api/orders at 1, 10, 50 concurrent clients;
- bare:    the engine's limit: a bare order-shaped workflow (bench/bare.py), 50 in flight, counted end
           to end, and its expiry lag at the equal-load shape;
- equal:   equal load: orders created through REST (50 clients) as fast as the stack takes them, each
           expiring --short-expiry-s later, against BullMQ with the same number of jobs due over the same window;
- steady:  orders created through REST at fixed rates stepping up from 10/s, expiring --short-expiry-s
           later (creations and expiries overlap): create p99, expiry lag, the highest rate with lag p99 < 1 s;
- burst:   --n orders due over --spread-s (created ahead through Temporal), against BullMQ and the bare engine;
- payment: POST /api/payments, 10 buyers;
- stripe:  Stripe's floor: create + confirm a PaymentIntent straight through the stripe SDK, 10 in flight;
- scale:   fresh database: CPU per order at 1,000 vs --prefill stored orders, GET list p99, --scale-n
           pending orders with the same expiresAt (RSS, drain).

Usage: .venv/bin/python -m bench.run [--scenarios create,equal,...] [--code DIR] [--temporal-flag K=V]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import json
import os
import platform
import random
import shlex
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import nats
import stripe
from bson import ObjectId
from nats.js.api import DeliverPolicy
from pymongo import AsyncMongoClient
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from bench._code import CODE_DIR, import_devstack
from bench.bare import BareDriver, BareRun
from bench.stack import BenchStack, cpu_seconds

try:
    from ticketing.payloads import OrderInput, OrderState, TicketInfo
except ImportError:  # checkouts before the module was named for what it holds (see --code)
    from ticketing.orders import OrderInput, OrderState, TicketInfo  # type: ignore[no-redef]
from ticketing.settings import Settings
from ticketing.temporal import ORDER_STATUS, TICKET_ID, USER_ID, connect_temporal, order_workflow_id
from workflows.order import OrderWorkflow

try:  # the one function the API starts orders with (absent in checkouts before it, see --code)
    from ticketing.order_service import start_order as service_start_order
except ImportError:
    service_start_order = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "pm_card_visa"
BULLMQ_SCRIPT = ROOT / "bench" / "bullmq" / "expiration.mjs"
BULLMQ_SUBJECT = "bullmq:expiration:complete"  # its own subject and stream: it can run between scenarios
SCENARIOS = ["create", "bare", "equal", "steady", "burst", "payment", "stripe", "scale"]
TICKET_PRICE = 2050


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (same definition as the BullMQ script)."""
    data = sorted(values)
    if not data:
        return None
    i = min(len(data) - 1, max(0, -(-p * len(data) // 100) - 1))
    return data[int(i)]


def lag_stats(lags: list[float]) -> dict[str, Any]:
    return {"p50": pct(lags, 50), "p99": pct(lags, 99), "max": max(lags, default=None)}


# ----------------------------------------------------------------------------------------------
# CPU accounting
# ----------------------------------------------------------------------------------------------


@dataclass
class Snap:
    t: float
    cpu: dict[str, float]


@dataclass
class Results:
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cpu: list[tuple[str, int, float, dict[str, float]]] = field(default_factory=list)  # (row, n, wall, cpu s)


class Meter:
    """CPU seconds of every process between two snapshots (robust to other load, unlike wall times)."""

    def __init__(self, stack: BenchStack, res: Results) -> None:
        self.stack, self.res = stack, res

    def snap(self) -> Snap:
        cpu = {**self.stack.cpu(), "bench": cpu_seconds(os.getpid())}
        return Snap(time.time(), cpu)

    def record(self, row: str, n: int, a: Snap, b: Snap, extra: dict[str, float] | None = None) -> dict[str, float]:
        delta = {k: b.cpu[k] - a.cpu[k] for k in b.cpu if k in a.cpu and b.cpu[k] > 0}
        delta.update(extra or {})
        self.res.cpu.append((row, n, b.t - a.t, delta))
        return delta


def cpu_ms_per(delta: dict[str, float], n: int) -> float:
    return 1000 * sum(delta.values()) / max(n, 1)


# ----------------------------------------------------------------------------------------------
# helpers: users, tickets, orders
# ----------------------------------------------------------------------------------------------

Users = list[tuple[str, dict[str, str]]]


async def signup(api: httpx.AsyncClient, count: int) -> Users:
    """`count` users through REST: (user id, Bearer header)."""

    async def one(i: int) -> tuple[str, dict[str, str]]:
        email = f"bench{i}-{ObjectId()}@bench.test"
        resp = await api.post("/api/users/signup", json={"email": email, "password": "password"})
        resp.raise_for_status()
        body = resp.json()
        return body["id"], {"Authorization": f"Bearer {body['token']}"}

    users: Users = []
    for start in range(0, count, 10):
        users += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 10))))
    api.cookies.clear()
    return users


@dataclass
class Ticket:
    id: str
    title: str
    price: int
    user_id: str  # the seller


class Store:
    """Setup writes straight into MongoDB (insert_many, not measured), with the documents' field
    names of ticketing/documents.py but without its classes, so --code checkouts need not agree."""

    def __init__(self, settings: Settings) -> None:
        self.client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url, tz_aware=True)
        self.db = self.client[settings.mongo_db]

    async def close(self) -> None:
        await self.client.close()

    async def tickets(self, seller_id: str, count: int) -> list[Ticket]:
        docs = [
            {
                "_id": ObjectId(),
                "title": f"Bench concert {i}",
                "price": TICKET_PRICE,
                "user_id": seller_id,
                "version": 0,
                "order_id": None,
            }
            for i in range(count)
        ]
        for start in range(0, count, 1000):
            await self.db.tickets.insert_many(docs[start : start + 1000], ordered=False)
        return [Ticket(str(d["_id"]), str(d["title"]), TICKET_PRICE, seller_id) for d in docs]

    async def prefill(self, count: int, users: list[str], seller: str) -> None:
        """`count` finished orders as the service leaves them: 60 % expired/cancelled (ticket free
        again), 40 % paid (ticket sold, one succeeded charge); created over the last 30 days, with
        ObjectIds from that time; tickets one per order, charges for the paid ones."""
        rnd = random.Random(count)
        now = time.time()
        for start in range(0, count, 2000):
            orders, tickets, charges = [], [], []
            for i in range(start, min(count, start + 2000)):
                created = now - 86400 * 30 + 86400 * 30 * i / max(count, 1) - 3600
                oid = ObjectId(struct.pack(">I", int(created)) + os.urandom(8))
                tid = ObjectId(struct.pack(">I", int(created) - 86400) + os.urandom(8))
                price = rnd.randrange(1000, 20000, 50)
                title = f"Concert {i} at the Old Hall"
                paid = rnd.random() < 0.4
                at = datetime.fromtimestamp(created, UTC)
                pi = f"pi_prefill{os.urandom(8).hex()}" if paid else None
                orders.append(
                    {
                        "_id": oid,
                        "user_id": users[i % len(users)],
                        "status": "complete" if paid else "cancelled",
                        "expires_at": at + timedelta(minutes=15),
                        "version": 2 if paid else 1,
                        "ticket": {"id": str(tid), "title": title, "price": price},
                        "payment_intent_id": pi,
                        "created_at": at,
                    }
                )
                tickets.append(
                    {
                        "_id": tid,
                        "title": title,
                        "price": price,
                        "user_id": seller,
                        "version": 1 if paid else 2,
                        "order_id": str(oid) if paid else None,
                    }
                )
                if paid:
                    charges.append(
                        {
                            "_id": ObjectId(),
                            "order_id": str(oid),
                            "stripe_id": pi,
                            "amount": price,
                            "currency": "usd",
                            "status": "succeeded",
                            "refund_id": None,
                            "created_at": at + timedelta(minutes=1),
                        }
                    )
            await self.db.tickets.insert_many(tickets, ordered=False)
            await self.db.orders.insert_many(orders, ordered=False)
            if charges:
                await self.db.charges.insert_many(charges, ordered=False)

    async def count_orders(self) -> int:
        return int(await self.db.orders.estimated_document_count())


async def local_start_order(
    temporal: Client, settings: Settings, user_id: str, ticket: Ticket, expires_at: datetime
) -> str:
    """What POST /api/orders does, minus HTTP, for checkouts without ticketing/order_service.py
    (start_workflow, then the `reservation` Update, as the API did before Update-With-Start)."""
    order_id = str(ObjectId())
    handle = await temporal.start_workflow(
        OrderWorkflow.run,
        OrderInput(order_id=order_id, user_id=user_id, ticket_id=ticket.id, expires_at=expires_at),
        id=order_workflow_id(order_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(ORDER_STATUS, "pending"),
                SearchAttributePair(USER_ID, user_id),
                SearchAttributePair(TICKET_ID, ticket.id),
            ]
        ),
        memo={"ticketTitle": ticket.title, "ticketPrice": ticket.price / 100},
    )
    outcome = cast(OrderState, await handle.execute_update(OrderWorkflow.reservation))
    if outcome.rejected_reason:
        raise RuntimeError(f"order refused: {outcome.rejected_reason}")
    return order_id


async def start_order(temporal: Client, settings: Settings, user_id: str, ticket: Ticket, expires_at: datetime) -> str:
    """Start an order through Temporal with an explicit expiresAt (burst and scale scenarios): the
    order service of the checkout under test when it has one, else the local equivalent."""
    if service_start_order is not None:
        started: Any = await service_start_order(
            temporal,
            settings,
            user_id=user_id,
            ticket=TicketInfo(id=ticket.id, title=ticket.title, price=ticket.price, user_id=ticket.user_id, version=0),
            expires_at=expires_at,
        )
        # its result has been the order id, then (OrderInput, OrderState): take the id from either
        if isinstance(started, tuple):
            started = started[0]
        return started if isinstance(started, str) else str(started.order_id)
    return await local_start_order(temporal, settings, user_id, ticket, expires_at)


async def bounded(items: list[Any], concurrency: int, fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """Run fn over items with at most `concurrency` in flight; results in item order."""
    results: list[Any] = [None] * len(items)
    counter = itertools.count()

    async def runner() -> None:
        while (i := next(counter)) < len(items):
            results[i] = await fn(items[i])

    await asyncio.gather(*(runner() for _ in range(min(concurrency, len(items)))))
    return results


@dataclass
class Created:
    id: str
    sent: float  # epoch s
    ms: float  # latency of the 201
    expires: float  # expiresAt from the 201 body, epoch s


class Rest:
    """POST /api/orders on one API process; collects what was created and the errors."""

    def __init__(self, api: httpx.AsyncClient, users: Users) -> None:
        self.api, self.users = api, users
        self.errors = 0

    async def create(self, ticket: Ticket, i: int) -> Created | None:
        headers = self.users[i % len(self.users)][1]
        sent, t0 = time.time(), time.perf_counter()
        try:
            resp = await self.api.post("/api/orders", json={"ticketId": ticket.id}, headers=headers)
        except httpx.HTTPError as err:
            self.errors += 1
            if self.errors <= 3:
                say(f"create: {err!r}")
            return None
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code != 201:
            self.errors += 1
            if self.errors <= 3:
                say(f"create: {resp.status_code} {resp.text[:200]}")
            return None
        body = resp.json()
        expires = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00")).timestamp()
        return Created(body["id"], sent, ms, expires)

    async def closed_loop(self, tickets: list[Ticket], clients: int, stop_at: float = float("inf")) -> list[Created]:
        """`clients` clients, each creating one order after the other until the tickets run out or stop_at."""
        out: list[Created] = []
        counter = itertools.count()

        async def client() -> None:
            while (i := next(counter)) < len(tickets) and time.time() < stop_at:
                created = await self.create(tickets[i], i)
                if created is not None:
                    out.append(created)

        await asyncio.gather(*(client() for _ in range(min(clients, len(tickets)))))
        return out


class EventWatch:
    """Records when each order's `order:cancelled` / `expiration:complete` is read from JetStream."""

    def __init__(self) -> None:
        self.cancelled: dict[str, float] = {}
        self.expired: dict[str, float] = {}
        self.nc: Any = None

    async def start(self, settings: Settings) -> None:
        self.nc = await nats.connect(settings.nats_url, name="bench-watch")
        js = self.nc.jetstream()

        async def on_cancelled(msg: Any) -> None:
            t = time.time()
            self.cancelled.setdefault(json.loads(msg.data)["id"], t)

        async def on_expired(msg: Any) -> None:
            t = time.time()
            self.expired.setdefault(json.loads(msg.data)["orderId"], t)

        for subject, cb in (("order:cancelled", on_cancelled), ("expiration:complete", on_expired)):
            await js.subscribe(
                subject,
                stream=settings.nats_stream,
                cb=cb,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                pending_msgs_limit=1_000_000,
            )

    async def wait_for(self, ids: Iterable[str], deadline: float, stack: BenchStack) -> None:
        wanted = set(ids)
        while time.time() < deadline:
            if wanted <= self.cancelled.keys():
                return
            stack.check_alive()
            await asyncio.sleep(0.2)

    def lags(self, due: dict[str, float], which: str = "cancelled") -> list[float]:
        got = self.cancelled if which == "cancelled" else self.expired
        return [(got[o] - t) * 1000 for o, t in due.items() if o in got]

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


# ----------------------------------------------------------------------------------------------
# BullMQ
# ----------------------------------------------------------------------------------------------


def redis_pid() -> int | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        out = subprocess.run(["redis-cli", "info", "server"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("process_id:"):
                return int(line.split(":", 1)[1])
    return None


def run_bullmq(
    stack: BenchStack, meter: Meter, row: str, n: int, spread_s: float, timeout: float, res: Results
) -> dict[str, Any]:
    """The BullMQ baseline against the same nats-server, on its own subject and stream (created and
    deleted by the script). CPU: the node process (its rusage), Redis (/proc; the system's Redis,
    shared), our nats-server."""
    assert stack.settings is not None
    stream = f"BULLMQ_{os.urandom(3).hex()}"
    cmd = [
        "node",
        str(BULLMQ_SCRIPT),
        "--n",
        str(n),
        "--spread-ms",
        str(int(spread_s * 1000)),
        "--nats",
        stack.settings.nats_url,
        "--stream",
        stream,
        "--subject",
        BULLMQ_SUBJECT,
    ]
    say("bullmq: " + " ".join(cmd))
    rpid = redis_pid()
    redis0 = cpu_seconds(rpid) if rpid else 0.0
    _child_cpu_delta()  # baseline: children reaped so far
    a = meter.snap()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        res.notes.append(f"BullMQ ({row}) timed out")
        return {}
    b = meter.snap()
    for line in err.splitlines():
        if "details:" in line or "fatal" in line or "timeout" in line:
            say(line)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        res.notes.append(f"BullMQ ({row}) failed (exit {proc.returncode}): {err[-500:]}")
        return {}
    result: dict[str, Any] = json.loads(lines[-1])
    extra = {"node": _child_cpu_delta()}
    if rpid:
        extra["redis"] = cpu_seconds(rpid) - redis0
    delta = {k: b.cpu[k] - a.cpu[k] for k in ("nats",) if k in a.cpu}
    delta.update(extra)
    res.cpu.append((row, n, b.t - a.t, delta))
    say(f"bullmq: {result}")
    return result


_children_cpu = [0.0]


def _child_cpu_delta() -> float:
    """CPU seconds of waited-for children since the last call (the node process just reaped)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ru.ru_utime + ru.ru_stime
    delta, _children_cpu[0] = total - _children_cpu[0], total
    return delta


# ----------------------------------------------------------------------------------------------
# scenarios
# ----------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    args: argparse.Namespace
    stack: BenchStack
    res: Results
    meter: Meter
    temporal: Client
    watch: EventWatch
    store: Store
    api: httpx.AsyncClient  # the main API (ORDER_EXPIRATION_SECONDS=900)
    short: httpx.AsyncClient  # the second API (ORDER_EXPIRATION_SECONDS=--short-expiry-s)
    users: Users
    deadline: float

    @property
    def settings(self) -> Settings:
        assert self.stack.settings is not None
        return self.stack.settings

    @property
    def seller(self) -> str:
        return self.users[0][0]

    def left(self) -> float:
        return self.deadline - time.time()


async def scenario_create(ctx: Ctx) -> None:
    """POST /api/orders at 1, 10 and 50 clients, fresh tickets each."""
    levels = {1: ctx.args.create_n1, 10: ctx.args.create_n10, 50: ctx.args.create_n50}
    rest = Rest(ctx.api, ctx.users)
    warm = await ctx.store.tickets(ctx.seller, 20)
    await rest.closed_loop(warm, 5)
    out: dict[int, Any] = {}
    for clients, count in levels.items():
        if count <= 0 or ctx.left() < 60:
            continue
        tickets = await ctx.store.tickets(ctx.seller, count)
        errors0 = rest.errors
        a = ctx.meter.snap()
        created = await rest.closed_loop(tickets, clients)
        b = ctx.meter.snap()
        ctx.meter.record(f"create: REST, {clients} client(s)", len(created), a, b)
        lat = [c.ms for c in created]
        out[clients] = {
            "n": count,
            "ok": len(created),
            "errors": rest.errors - errors0,
            "per_s": len(created) / (b.t - a.t),
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
        }
        say(f"create c={clients}: {out[clients]}")
    ctx.res.data["create"] = out


def bare_runners(ctx: Ctx) -> list[str]:
    choice = ctx.args.bare_runner
    if choice == "both":
        return ["sandboxed", "unsandboxed"]
    if choice == "auto":  # what the worker under test does (settings of the checkout under test)
        return ["sandboxed" if getattr(ctx.settings, "worker_workflow_sandbox", True) else "unsandboxed"]
    return [choice]


@contextlib.asynccontextmanager
async def bare_worker(ctx: Ctx, runner: str) -> Any:
    """The bare workflow's worker in its own process (bench.bare worker), stopped afterwards."""
    queue = f"bare-{os.urandom(3).hex()}"
    env: dict[str, str | None] = {**ctx.stack.env, "PYTHONPATH": None}
    cmd = [sys.executable, "-m", "bench.bare", "worker", "--task-queue", queue]
    if runner == "unsandboxed":
        cmd.append("--unsandboxed")
    proc = ctx.stack.start_extra("bare-worker", cmd, env, cwd=ROOT)  # bench.bare from this checkout
    try:
        end = time.time() + 60
        while "polling" not in proc.log_tail(5) and time.time() < end:
            if not proc.is_running:
                raise RuntimeError(f"bare worker died (log {proc.log_path}): {proc.log_tail(3)}")
            await asyncio.sleep(0.2)
        driver = BareDriver(ctx.temporal, ctx.settings.nats_url, queue, ctx.args.bare_start)
        await driver.start()
        try:
            warm = await driver.create(5, 5, expiry_s=1)  # warm-up (connections, first-run imports)
            await driver.wait_expired(warm, time.time() + 30)  # its expiries must not fall in a measurement
            yield driver
        finally:
            await driver.close()
    finally:
        ctx.stack.stop_extra("bare-worker")


def bare_figures(driver: BareDriver, run: BareRun) -> dict[str, Any]:
    e2e = [(driver.created[o] - t) * 1000 for o, t in run.sent.items() if o in driver.created]
    lags = [(driver.expired[o] - run.due[o]) * 1000 for o in run.sent if o in driver.expired]
    wall = run.created_done - run.first_sent
    last = max((driver.expired[o] for o in run.sent if o in driver.expired), default=0.0)
    first_due = min(run.due.values(), default=0.0)
    return {
        "n": len(run.sent),
        "created": len(e2e),
        "per_s": len(e2e) / wall if wall > 0 else None,
        "p50": pct(e2e, 50),
        "p99": pct(e2e, 99),
        "expired": len(lags),
        **{f"lag_{k}": v for k, v in lag_stats(lags).items()},
        "drain_per_s": len(lags) / (last - first_due) if last > first_due else None,
        "window_s": max(run.due.values(), default=0.0) - first_due,
    }


async def scenario_bare(ctx: Ctx) -> None:
    """The engine's limit: n bare workflows, 50 in flight, counted end to end; each expires T after its
    start (the equal-load shape), so the same run gives the expiry lag."""
    out: dict[str, Any] = {}
    t_exp = ctx.args.short_expiry_s
    for runner in bare_runners(ctx):
        if ctx.left() < 90:
            break
        async with bare_worker(ctx, runner) as driver:
            a = ctx.meter.snap()
            stop = time.time() + 0.8 * t_exp  # creation ends before the first expiry
            run = await driver.create(ctx.args.bare_n, ctx.args.bare_concurrency, expiry_s=t_exp, deadline=stop)
            b = ctx.meter.snap()
            n = len(run.sent)
            ctx.meter.record(f"bare ({runner}): start → first publish", n, a, b)
            await driver.wait_expired(run, min(ctx.deadline, max(run.due.values()) + 60))
            await asyncio.sleep(0.5)
            c = ctx.meter.snap()
            ctx.meter.record(f"bare ({runner}): start + expire", n, a, c)
            out[runner] = bare_figures(driver, run)
            say(f"bare {runner}: {out[runner]}")
    ctx.res.data["bare"] = out


async def scenario_equal(ctx: Ctx) -> None:
    """Orders through REST (50 clients) as fast as the stack takes them, through the short-expiry API,
    so they expire T later at the creation rate with nothing else running; then BullMQ with the same
    number of jobs due over the same window."""
    t_exp = ctx.args.short_expiry_s
    tickets = await ctx.store.tickets(ctx.seller, ctx.args.equal_n)
    rest = Rest(ctx.short, ctx.users)
    a = ctx.meter.snap()
    created = await rest.closed_loop(tickets, 50, stop_at=time.time() + 0.8 * t_exp)
    b = ctx.meter.snap()
    n = len(created)
    ctx.meter.record("equal: create (REST, 50 clients)", n, a, b)
    due = {c.id: c.expires for c in created}
    if not due:
        ctx.res.notes.append("equal: no order created")
        return
    await ctx.watch.wait_for(due, min(ctx.deadline, max(due.values()) + 60), ctx.stack)
    await asyncio.sleep(0.5)
    c = ctx.meter.snap()
    ctx.meter.record("equal: create + expire", n, a, c)
    lags, exp_lags = ctx.watch.lags(due), ctx.watch.lags(due, "expired")
    window = max(due.values()) - min(due.values())
    out: dict[str, Any] = {
        "n": n,
        "tried": len(tickets),
        "errors": rest.errors,
        "create_per_s": n / (b.t - a.t),
        "create_p99": pct([x.ms for x in created], 99),
        "delivered": len(lags),
        "window_s": window,
        **lag_stats(lags),
        "exp": lag_stats(exp_lags),
        "created_late": sum(1 for x in created if x.sent + x.ms / 1000 > x.expires),
    }
    say(f"equal: {out}")
    ctx.res.data["equal"] = out
    if ctx.args.bullmq and ctx.left() > window + 40:
        out["bullmq"] = run_bullmq(
            ctx.stack, ctx.meter, "BullMQ: equal load (enqueue + expire)", n, window, window + 60, ctx.res
        )
    ctx.res.data["equal"] = out


@dataclass
class Step:
    rate: float
    start: float
    end: float = 0.0
    orders: list[Created] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)  # when each request was sent
    behind: int = 0  # requests that could not be sent on time (in-flight cap reached)
    errors: int = 0
    mid: Snap | None = None
    last: Snap | None = None
    held: bool | None = None


async def scenario_steady(ctx: Ctx) -> None:
    """REST at fixed rates stepping up, orders expiring T later through the short-expiry API. Each step
    lasts T + --steady-window-s; its measured window is the last --steady-window-s, where the orders
    created T earlier in the same step expire while creations go on at the same rate. A step holds
    when the rate was achieved, nothing failed and lag p99 < 1 s; stepping stops at the first that fails."""
    t_exp = ctx.args.short_expiry_s
    step_s = t_exp + ctx.args.steady_window_s
    rates = [float(r) for r in ctx.args.steady_rates.split(",") if r.strip()]
    total = int(sum(r * step_s for r in rates)) + 100
    tickets = iter(await ctx.store.tickets(ctx.seller, total))
    rest = Rest(ctx.short, ctx.users)
    stop = asyncio.Event()
    in_flight: set[asyncio.Task[Any]] = set()
    counter = itertools.count()

    async def one(step: Step, ticket: Ticket) -> None:
        created = await rest.create(ticket, next(counter))
        if created is None:
            step.errors += 1
        else:
            step.orders.append(created)

    async def open_loop(step: Step) -> None:
        i = 0
        while not stop.is_set():
            t_next = step.start + i / step.rate
            if t_next >= step.start + step_s:
                break
            await asyncio.sleep(max(0.0, t_next - time.time()))
            if step.mid is None and time.time() >= step.start + t_exp:
                step.mid = ctx.meter.snap()
            if len(in_flight) >= ctx.args.steady_max_in_flight:
                step.behind += 1
                while len(in_flight) >= ctx.args.steady_max_in_flight:
                    await asyncio.sleep(0.01)
            step.sent.append(time.time())
            task = asyncio.create_task(one(step, next(tickets)))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            i += 1
        step.end = time.time()
        step.last = ctx.meter.snap()

    def measured(step: Step) -> tuple[list[Created], list[Created]]:
        """(orders due inside the measured window, orders created inside it)."""
        w0 = step.start + t_exp
        due = [o for o in step.orders if w0 <= o.expires <= step.end]
        made = [o for o in step.orders if o.sent >= w0]
        return due, made

    def holds(step: Step) -> bool:
        """Judged 1.5 s after the step: requests sent on schedule (the in-flight cap never slowed
        them), none failed, and lag p99 < 1 s over the orders due in the window."""
        due, _ = measured(step)
        if not due or step.errors:
            return False
        w0 = step.start + t_exp
        achieved = sum(1 for t in step.sent if t >= w0) / max(step.end - w0, 1e-9)
        lags = sorted((ctx.watch.cancelled.get(o.id, float("inf")) - o.expires) * 1000 for o in due)
        p99 = pct(lags, 99)
        return achieved >= 0.95 * step.rate and p99 is not None and p99 < 1000

    steps: list[Step] = []  # the measured steps
    started: list[Step] = []  # every step, the one cut short included
    prev: Step | None = None
    for rate in rates:
        if ctx.left() < step_s + t_exp + 60:
            ctx.res.notes.append(f"steady: stopped before {rate:g}/s (time bound)")
            break
        step = Step(rate, time.time())
        steps.append(step)
        started.append(step)
        say(f"steady: {rate:g}/s for {step_s:g} s")
        loop = asyncio.create_task(open_loop(step))
        if prev is not None:
            await asyncio.sleep(max(0.0, prev.end + 1.5 - time.time()))
            prev.held = holds(prev)
            if not prev.held:
                stop.set()
        await loop
        if stop.is_set():
            steps.pop()  # cut short after its predecessor failed: not a measurement
            break
        prev = step
    if prev is not None and prev.held is None:
        await asyncio.sleep(max(0.0, prev.end + 1.5 - time.time()))
        prev.held = holds(prev)
    # let every order created expire before the next scenario (and for the final figures)
    if in_flight:
        await asyncio.gather(*list(in_flight), return_exceptions=True)
    every = {o.id: o.expires for s in started for o in s.orders}
    if every:
        await ctx.watch.wait_for(every, min(ctx.deadline, max(every.values()) + 30), ctx.stack)
    out: list[dict[str, Any]] = []
    for s in steps:
        due, made = measured(s)
        lags = ctx.watch.lags({o.id: o.expires for o in due})
        n_made = len(made)
        row = {
            "rate": s.rate,
            "achieved": n_made / max(s.end - s.start - t_exp, 1e-9),
            "n": len(s.orders),
            "measured": len(due),
            "delivered": len(lags),
            "create_p99": pct([o.ms for o in made], 99),
            **lag_stats(lags),
            "p50": pct(lags, 50),
            "held": s.held,
            "errors": s.errors,
            "behind": s.behind,
        }
        if s.mid is not None and s.last is not None:
            delta = ctx.meter.record(f"steady {s.rate:g}/s: create + expire (measured window)", n_made, s.mid, s.last)
            row["cpu_ms"] = cpu_ms_per(delta, n_made)
        out.append(row)
        say(f"steady: {row}")
    held = [s["rate"] for s in out if s["held"]]
    ctx.res.data["steady"] = {"steps": out, "max_rate": max(held, default=None), "step_s": step_s}


async def scenario_burst(ctx: Ctx) -> None:
    """--n orders due evenly over --spread-s, created ahead through Temporal with explicit expiresAt
    (what the API does, minus HTTP); then the bare engine and BullMQ with the same shape."""
    n, spread = ctx.args.n, ctx.args.spread_s
    rate = ctx.res.data.get("create", {}).get(50, {}).get("per_s") or 30.0
    tickets = await ctx.store.tickets(ctx.seller, n)
    lead = 3.0 + 1.5 * n / max(rate, 20.0)
    base = datetime.now(UTC) + timedelta(seconds=lead)
    base = base.replace(microsecond=base.microsecond // 1000 * 1000)
    step = spread / (n - 1) if n > 1 else 0.0
    due = [base + timedelta(milliseconds=round(i * step * 1000)) for i in range(n)]
    late = 0

    async def create(i: int) -> str:
        nonlocal late
        order_id = await start_order(ctx.temporal, ctx.settings, ctx.users[i % len(ctx.users)][0], tickets[i], due[i])
        if datetime.now(UTC) > due[i] - timedelta(seconds=0.5):
            late += 1
        return order_id

    a = ctx.meter.snap()
    ids = await bounded(list(range(n)), 32, create)
    created_s = time.time() - a.t
    say(f"burst: created {n} in {created_s:.1f}s (lead {lead:.1f}s, {late} created <0.5s before due)")
    expires = {oid: due[i].timestamp() for i, oid in enumerate(ids)}
    await ctx.watch.wait_for(ids, min(ctx.deadline, base.timestamp() + spread + 120), ctx.stack)
    await asyncio.sleep(0.5)
    b = ctx.meter.snap()
    ctx.meter.record("burst: create (Temporal) + expire", n, a, b)
    lags, exp_lags = ctx.watch.lags(expires), ctx.watch.lags(expires, "expired")
    last = max((ctx.watch.cancelled[o] for o in ids if o in ctx.watch.cancelled), default=0.0)
    window = last - base.timestamp()
    out: dict[str, Any] = {
        "n": n,
        "delivered": len(lags),
        "create_per_s": n / created_s,
        "late": late,
        **lag_stats(lags),
        "exp": lag_stats(exp_lags),
        "per_s": len(lags) / window if window > 0 else None,
    }
    say(f"burst: {out}")
    ctx.res.data["burst"] = out
    if "bare" in ctx.args.scenario_list and ctx.left() > spread + 120:
        try:
            await burst_bare(ctx, out, n, spread, step)
        except Exception as err:  # keep our figures and BullMQ's
            ctx.res.notes.append(f"burst, bare engine: failed: {err!r}"[:400])
    if ctx.args.bullmq and ctx.left() > spread + 40:
        out["bullmq"] = run_bullmq(
            ctx.stack, ctx.meter, "BullMQ: burst (enqueue + expire)", n, spread, spread + 60, ctx.res
        )


async def burst_bare(ctx: Ctx, out: dict[str, Any], n: int, spread: float, step: float) -> None:
    """The bare engine with the burst's shape: n workflows due evenly over `spread`, started ahead."""
    runner = bare_runners(ctx)[0]
    bare_rate = ctx.res.data.get("bare", {}).get(runner, {}).get("per_s") or 30.0
    async with bare_worker(ctx, runner) as driver:
        lead = 3.0 + 1.5 * n / max(bare_rate, 10.0)  # as ours: every workflow exists before it is due
        t0 = time.time() + lead
        dues = [t0 + i * step for i in range(n)]
        a = ctx.meter.snap()
        run = await driver.create(n, ctx.args.bare_concurrency, due=dues)
        await driver.wait_expired(run, min(ctx.deadline, t0 + spread + 120))
        await asyncio.sleep(0.5)
        b = ctx.meter.snap()
        ctx.meter.record(f"burst: bare engine ({runner}) start + expire", n, a, b)
        out["bare"] = bare_figures(driver, run)
        out["bare"]["late"] = sum(1 for o in run.sent if driver.created.get(o, 0) > run.due[o] - 0.5)
        say(f"burst bare: {out['bare']}")


async def scenario_payment(ctx: Ctx) -> None:
    """10 buyers, each with --payments-per-buyer orders; the first 10 payments warm up."""
    buyers = ctx.users[:10]
    per = ctx.args.payments_per_buyer
    tickets = await ctx.store.tickets(ctx.seller, len(buyers) * per)
    rest = Rest(ctx.api, buyers)
    a = ctx.meter.snap()
    created = await bounded(list(range(len(tickets))), 10, lambda i: rest.create(tickets[i], i))
    orders = [(c.id, buyers[i % len(buyers)][1]) for i, c in enumerate(created) if c is not None]
    warm, orders = orders[:10], orders[10:]

    async def pay(o: tuple[str, dict[str, str]]) -> float | None:
        t0 = time.perf_counter()
        resp = await ctx.api.post("/api/payments", json={"orderId": o[0], "token": TOKEN}, headers=o[1])
        if resp.status_code == 201:
            return (time.perf_counter() - t0) * 1000
        say(f"payment: {resp.status_code} {resp.text[:200]}")
        return None

    await bounded(warm, 10, pay)
    t0 = time.time()
    lat = [x for x in await bounded(orders, len(buyers), pay) if x is not None]
    wall = time.time() - t0
    b = ctx.meter.snap()
    ctx.meter.record("payment: order + pay (REST)", len(created), a, b)
    ctx.res.data["payment"] = {
        "n": len(orders),
        "ok": len(lat),
        "per_s": len(lat) / wall,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
    }
    say(f"payment: {ctx.res.data['payment']}")


async def scenario_stripe(ctx: Ctx) -> None:
    """Stripe's floor: create + confirm a PaymentIntent through the stripe SDK (async, as
    activities/payments.py builds its client) against the same localstripe, 10 in flight."""
    settings = ctx.settings
    client = stripe.StripeClient(
        settings.stripe_key,
        base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
        http_client=stripe.HTTPXClient(timeout=20),
        max_network_retries=0,
    )
    intents = client.v1.payment_intents

    async def one(i: int) -> float | None:
        t0 = time.perf_counter()
        try:
            pi = await intents.create_async(
                params={
                    "amount": TICKET_PRICE,
                    "currency": "usd",
                    "payment_method": TOKEN,
                    "payment_method_types": ["card"],
                    "metadata": {"orderId": f"floor-{i}"},
                },  # type: ignore[typeddict-unknown-key]
                options={"idempotency_key": f"floor-{os.getpid()}-{i}-{time.time()}"},
            )
            pi = await intents.confirm_async(pi.id)
        except stripe.StripeError as err:
            say(f"stripe floor: {err!r}")
            return None
        return (time.perf_counter() - t0) * 1000 if pi.status == "succeeded" else None

    await bounded(list(range(10)), 10, one)  # warm-up
    n = ctx.args.stripe_n
    a = ctx.meter.snap()
    lat = [x for x in await bounded(list(range(10, 10 + n)), 10, one) if x is not None]
    b = ctx.meter.snap()
    ctx.meter.record("stripe floor: create + confirm (SDK)", n, a, b)
    ctx.res.data["stripe"] = {
        "n": n,
        "ok": len(lat),
        "per_s": len(lat) / (b.t - a.t),
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
    }
    say(f"stripe floor: {ctx.res.data['stripe']}")


async def list_p99(
    ctx: Ctx, path: str, headers: dict[str, str], count: int, budget_s: float, label: str
) -> dict[str, Any]:
    """GET path one request after the other (single client), `count` times or until budget_s is spent;
    without query parameters (the default page, whatever the route's default is). CPU per request."""
    lat: list[float] = []
    items = None
    end = time.time() + budget_s
    a = ctx.meter.snap()
    while len(lat) < count and time.time() < end:
        t0 = time.perf_counter()
        resp = await ctx.api.get(path, headers=headers)
        resp.raise_for_status()
        lat.append((time.perf_counter() - t0) * 1000)
        body = resp.json()
        lists = [v for v in body.values() if isinstance(v, list)] if isinstance(body, dict) else [body]
        items = len(lists[0]) if lists else None
    b = ctx.meter.snap()
    ctx.meter.record(f"{label}: GET {path} (per request)", len(lat), a, b)
    return {"n": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99), "items": items}


async def scale_batch(ctx: Ctx, label: str, count: int) -> dict[str, Any]:
    """`count` orders through the short-expiry API (50 clients); CPU per order to create, and to create
    and expire."""
    tickets = await ctx.store.tickets(ctx.seller, count)
    rest = Rest(ctx.short, ctx.users)
    a = ctx.meter.snap()
    created = await rest.closed_loop(tickets, 50)
    b = ctx.meter.snap()
    n = len(created)
    create = ctx.meter.record(f"scale {label}: create (REST, 50 clients)", n, a, b)
    due = {c.id: c.expires for c in created}
    await ctx.watch.wait_for(due, min(ctx.deadline, max(due.values(), default=0) + 60), ctx.stack)
    await asyncio.sleep(0.5)
    c = ctx.meter.snap()
    both = ctx.meter.record(f"scale {label}: create + expire", n, a, c)
    lags = ctx.watch.lags(due)
    return {
        "n": n,
        "create_cpu_ms": cpu_ms_per(create, n),
        "both_cpu_ms": cpu_ms_per(both, n),
        "per_s": n / (b.t - a.t),
        "expired": len(lags),
        **lag_stats(lags),
    }


async def scenario_scale(ctx: Ctx, fresh: Callable[[], Awaitable[None]]) -> None:
    """On a fresh database and fresh API/worker processes: CPU per order at ~1,000 stored orders and
    after prefilling --prefill finished orders; GET /api/orders and /api/tickets p99; then --scale-n
    pending orders with the same expiresAt (RSS before / all pending / peak, drain)."""
    await fresh()  # new app processes, database, task queue, users, store
    out: dict[str, Any] = {}
    ctx.res.data["scale"] = out  # filled as it goes: a later failure keeps the earlier figures
    small = ctx.args.scale_small
    buyers = [u for u, _ in ctx.users]
    # Warm the fresh processes up (imports, connections, first workflow runs) on both paths,
    # create and expire, so the first measured batch does not pay for it.
    warm = await Rest(ctx.short, ctx.users).closed_loop(await ctx.store.tickets(ctx.seller, 20), 10)
    await ctx.store.prefill(small, buyers, ctx.seller)
    heavy = ctx.users[0][1]
    out["get_small"] = {
        "orders": await list_p99(ctx, "/api/orders", heavy, 50, 30, f"scale {small:,} stored"),
        "tickets": await list_p99(ctx, "/api/tickets", heavy, 50, 30, f"scale {small:,} stored"),
    }
    await ctx.watch.wait_for(
        {c.id for c in warm}, min(ctx.deadline, max((c.expires for c in warm), default=0) + 30), ctx.stack
    )
    out["small"] = await scale_batch(ctx, f"{small:,} stored", ctx.args.scale_batch)
    say(f"scale small: {out['small']} {out['get_small']}")
    if ctx.args.prefill > small and ctx.left() > 240:
        t0 = time.time()
        await ctx.store.prefill(ctx.args.prefill - small, buyers, ctx.seller)
        out["prefill_s"] = time.time() - t0
        out["stored"] = await ctx.store.count_orders()
        say(f"scale: prefilled to {out['stored']} orders in {out['prefill_s']:.0f} s")
        out["large"] = await scale_batch(ctx, f"{ctx.args.prefill:,} stored", ctx.args.scale_batch)
        budget, label = ctx.args.scale_get_budget_s, f"scale {out['stored']:,} stored"
        out["get_large"] = {
            "orders": await list_p99(ctx, "/api/orders", heavy, ctx.args.scale_gets, budget, label),
            "tickets": await list_p99(ctx, "/api/tickets", heavy, ctx.args.scale_gets, budget, label),
        }
        say(f"scale large: {out['large']} {out['get_large']}")
    elif ctx.args.prefill > small:
        ctx.res.notes.append("scale: prefill and the large batch skipped (time bound --max-minutes)")
    n = ctx.args.scale_n
    if n > 0 and ctx.left() > 120:
        out["pending"] = await scale_pending(ctx, n)
    elif n > 0:
        ctx.res.notes.append("scale: pending orders skipped (time bound --max-minutes)")
    ctx.res.data["scale"] = out


async def scale_pending(ctx: Ctx, n: int) -> dict[str, Any]:
    """n orders through Temporal (64 in flight) with the same expiresAt, after the last is created."""
    names = ("worker", "temporal", "api")
    tickets = await ctx.store.tickets(ctx.seller, n)
    rss_before = {k: ctx.stack.rss_mib(k) for k in names}
    rate = ctx.res.data.get("create", {}).get(50, {}).get("per_s") or 30.0
    # creation through Temporal outpaces REST, but slows as workflows pile up: 1.8 x the REST time
    lead = 10.0 + 1.8 * n / max(rate, 10.0)
    lead = min(lead, max(30.0, ctx.left() - 180))
    expires_at = datetime.now(UTC) + timedelta(seconds=lead)
    expires_at = expires_at.replace(microsecond=expires_at.microsecond // 1000 * 1000)
    a = ctx.meter.snap()
    ids = await bounded(
        list(range(n)),
        64,
        lambda i: start_order(ctx.temporal, ctx.settings, ctx.users[i % len(ctx.users)][0], tickets[i], expires_at),
    )
    created_s = time.time() - a.t
    pending = n - sum(1 for o in ids if o in ctx.watch.cancelled)
    rss_pending = {k: ctx.stack.rss_mib(k) for k in names}
    say(f"scale: created {n} in {created_s:.1f}s; {pending} pending; RSS {rss_pending}")
    peak = dict(rss_pending)
    wanted = set(ids)
    end = min(ctx.deadline, max(expires_at.timestamp(), time.time()) + 600)
    while time.time() < end and not wanted <= ctx.watch.cancelled.keys():
        ctx.stack.check_alive()
        for k in peak:
            peak[k] = max(peak[k], ctx.stack.rss_mib(k))
        await asyncio.sleep(0.5)
    b = ctx.meter.snap()
    ctx.meter.record(f"scale: {n} pending, create (Temporal) + expire", n, a, b)
    got = [ctx.watch.cancelled[o] for o in ids if o in ctx.watch.cancelled]
    drain = max(got) - expires_at.timestamp() if got else None
    return {
        "n": n,
        "create_per_s": n / created_s,
        "pending_at_once": pending,
        "rss_before": rss_before,
        "rss_pending": rss_pending,
        "rss_peak": peak,
        "expired": len(got),
        "drain_s": drain,
        "expire_per_s": len(got) / drain if drain and drain > 0 else None,
    }


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return f"nproc {os.cpu_count()}, CPU {model}, memory {mem}, Python {platform.python_version()}"


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def fmt(x: Any, digits: int = 0, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}{unit}"
    return f"{x}{unit}"


def ratio(ours: Any, theirs: Any, digits: int = 2) -> str:
    if ours is None or not theirs:
        return "-"
    return f"{ours / theirs:.{digits}f}"


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def lag3(lag: dict[str, Any]) -> str:
    return f"p50 {fmt(lag.get('p50'))} / p99 {fmt(lag.get('p99'))} / max {fmt(lag.get('max'))} ms"


def share(got: int, n: int) -> str:
    return f"{got}/{n} ({100 * got / max(n, 1):.1f}%)"


def bullmq_lag(b: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], b.get("lag_ms", {})) if b else {}


def cpu_of(res: Results, row: str) -> float | None:
    for name, n, _wall, cpu in res.cpu:
        if name == row:
            return cpu_ms_per(cpu, n)
    return None


def table(res: Results, args: argparse.Namespace) -> str:
    rows: list[tuple[str, ...]] = []
    add = rows.append
    d = res.data
    t_exp = args.short_expiry_s
    runner = d.get("bare_runner", "")
    bare = d.get("bare", {}).get(runner, {})
    stripe_p50 = d.get("stripe", {}).get("p50")

    for clients, r in d.get("create", {}).items():
        figures = f"{r['per_s']:.1f}/s, p50 {fmt(r['p50'])} ms, p99 {fmt(r['p99'])} ms"
        ref, rat, target = "", "", ""
        if clients == 50 and bare:
            ref, rat = f"bare engine {fmt(bare.get('per_s'), 1)}/s end to end", ratio(r["per_s"], bare.get("per_s"))
            ok = bare.get("per_s") and r["per_s"] >= 0.8 * bare["per_s"] and (r["p99"] or 1e9) <= 1000
            target = f"≥ 0.8 and p99 ≤ 1 s: {yes(bool(ok))}"
        add((f"create via REST, {clients} client(s)", f"{r['ok']}/{r['n']} → 201", figures, ref, rat, target))
    for name, b in d.get("bare", {}).items():
        add(
            (
                f"bare engine ({name}), {b['created']} starts, {args.bare_concurrency} in flight",
                "start → first publish read (end to end)",
                f"{fmt(b['per_s'], 1)}/s, p50 {fmt(b['p50'])} / p99 {fmt(b['p99'])} ms",
                "",
                "",
                "reference",
            )
        )
        add(
            (
                f"   expiry, each {t_exp:g} s after its start",
                "bare:expired read - expiresAt",
                f"{lag3({k[4:]: v for k, v in b.items() if k.startswith('lag_')})}, {share(b['expired'], b['n'])}",
                "",
                "",
                "",
            )
        )
    e = d.get("equal")
    if e:
        bl = bullmq_lag(e.get("bullmq", {}))
        ok = e["delivered"] == e["n"] and bl.get("p99") is not None and (e["p99"] or 1e9) <= bl["p99"]
        add(
            (
                f"equal load: {e['n']} via REST (50 clients), expire {t_exp:g} s later",
                "create rate, p99",
                f"{e['create_per_s']:.1f}/s, p99 {fmt(e['create_p99'])} ms",
                f"{e['n']} jobs due over {e['window_s']:.1f} s",
                "",
                f"{e['created_late']} created after due",
            )
        )
        add(
            (
                "   expiry lag",
                "order:cancelled read - expiresAt",
                lag3(e),
                f"BullMQ {lag3(bl)}" if bl else "-",
                f"p99 {ratio(e['p99'], bl.get('p99'))}",
                f"p99 ≤ BullMQ: {yes(ok)}",
            )
        )
        add(
            (
                "   same, expiration:complete",
                "(the event BullMQ publishes)",
                lag3(e["exp"]),
                "",
                f"p99 {ratio(e['exp'].get('p99'), bl.get('p99'))}",
                "",
            )
        )
        bb = e.get("bullmq", {})
        add(
            (
                "   delivered",
                "share",
                share(e["delivered"], e["n"]),
                f"BullMQ {bb.get('delivered')}/{bb.get('n')}" if bb else "-",
                "",
                f"100%: {yes(e['delivered'] == e['n'])}",
            )
        )
        if bare:
            add(
                (
                    "   bare engine, same shape",
                    "bare:expired read - expiresAt",
                    "",
                    f"bare {lag3({k[4:]: v for k, v in bare.items() if k.startswith('lag_')})}",
                    f"p99 {ratio(e['p99'], bare.get('lag_p99'))}",
                    "",
                )
            )
    s = d.get("steady")
    if s:
        for st in s["steps"]:
            figures = (
                f"achieved {st['achieved']:.1f}/s, create p99 {fmt(st['create_p99'])} ms, lag p50 "
                f"{fmt(st['p50'])} / p99 {fmt(st['p99'])} ms, {share(st['delivered'], st['measured'])}"
            )
            held = "held" if st["held"] else "FAILED"
            add(
                (
                    f"steady {st['rate']:g}/s (expire {t_exp:g} s)",
                    "measured window",
                    figures,
                    "",
                    "",
                    f"lag p99 < 1 s: {held}",
                )
            )
        mx = s.get("max_rate")
        ok = bool(mx and bare.get("per_s") and mx >= 0.7 * bare["per_s"])
        add(
            (
                "   highest rate holding lag p99 < 1 s",
                "",
                f"{fmt(mx)}/s",
                f"bare engine {fmt(bare.get('per_s'), 1)}/s" if bare else "",
                ratio(mx, bare.get("per_s")),
                f"≥ 0.7: {yes(ok)}",
            )
        )
    bu = d.get("burst")
    if bu:
        bl = bullmq_lag(bu.get("bullmq", {}))
        bb = bu.get("bare", {})
        add(
            (
                f"burst: {bu['n']} due over {args.spread_s:g} s (created ahead, Temporal)",
                "order:cancelled read - expiresAt",
                lag3(bu),
                f"BullMQ {lag3(bl)}" if bl else "-",
                f"p99 {ratio(bu['p99'], bl.get('p99'))}",
                f"100%: {yes(bu['delivered'] == bu['n'])}",
            )
        )
        if bb:
            add(
                (
                    "   bare engine, same shape",
                    "bare:expired read - expiresAt",
                    "",
                    f"bare {lag3({k[4:]: v for k, v in bb.items() if k.startswith('lag_')})}",
                    f"p99 {ratio(bu['p99'], bb.get('lag_p99'))}",
                    f"bare late {bb.get('late')}",
                )
            )
        add(("   same, expiration:complete", "(the event BullMQ publishes)", lag3(bu["exp"]), "", "", ""))
        add(
            (
                "   delivered / drain rate",
                "delivered/(last recv - first due)",
                f"{share(bu['delivered'], bu['n'])}, {fmt(bu['per_s'], 1)}/s",
                f"BullMQ {fmt(bu.get('bullmq', {}).get('jobs_per_s'), 1)}/s; bare {fmt(bb.get('drain_per_s'), 1)}/s",
                ratio(bu["per_s"], bu.get("bullmq", {}).get("jobs_per_s")),
                f"cap {bu['n'] / args.spread_s:.0f}/s",
            )
        )
        add(
            (
                "   scheduling rate",
                "orders created / jobs enqueued",
                f"{bu['create_per_s']:.0f}/s",
                f"BullMQ {fmt(bu.get('bullmq', {}).get('enqueue_per_s'))}/s",
                "",
                f"{bu['late']} created late",
            )
        )
    p = d.get("payment")
    if p:
        ok = p["p50"] is not None and stripe_p50 and p["p50"] <= 1.3 * stripe_p50 and p["ok"] == p["n"]
        add(
            (
                "payment, 10 buyers",
                f"{p['ok']}/{p['n']} → 201",
                f"p50 {fmt(p['p50'])} / p99 {fmt(p['p99'])} ms, {p['per_s']:.0f}/s",
                f"Stripe floor p50 {fmt(stripe_p50)} ms" if stripe_p50 else "",
                ratio(p["p50"], stripe_p50),
                f"≤ 1.3: {yes(bool(ok))}",
            )
        )
    st = d.get("stripe")
    if st:
        add(
            (
                "Stripe floor: create + confirm (SDK), 10 in flight",
                f"{st['ok']}/{st['n']} succeeded",
                f"p50 {fmt(st['p50'])} / p99 {fmt(st['p99'])} ms, {st['per_s']:.0f}/s",
                "",
                "",
                "reference",
            )
        )
    sc = d.get("scale")
    if sc:
        small, large = sc.get("small", {}), sc.get("large", {})
        for key, label in (
            (k, lbl) for k, lbl in (("create_cpu_ms", "create"), ("both_cpu_ms", "create + expire")) if large
        ):
            ok = bool(large and small.get(key) and large[key] <= 1.2 * small[key])
            add(
                (
                    f"scale: CPU ms per order, {label}",
                    f"{args.scale_small:,} vs {sc.get('stored', 0):,} stored",
                    f"{fmt(small.get(key), 1)} → {fmt(large.get(key), 1)} ms",
                    "",
                    ratio(large.get(key), small.get(key)),
                    f"≤ 1.2: {yes(ok)}" if large else "",
                )
            )
        for part in ("small", "large"):
            b = sc.get(part)
            if b:
                add(
                    (
                        f"   batch of {b['n']} at {'small' if part == 'small' else 'prefilled'} size",
                        "create rate, expiry lag",
                        f"{b['per_s']:.1f}/s, {lag3(b)}, {share(b['expired'], b['n'])}",
                        "",
                        "",
                        "",
                    )
                )
        for part in ("get_small", "get_large"):
            g = sc.get(part)
            if not g:
                continue
            stored = args.scale_small if part == "get_small" else sc.get("stored", 0)
            for route in ("orders", "tickets"):
                r = g[route]
                ok = r["p99"] is not None and r["p99"] <= 50
                add(
                    (
                        f"   GET /api/{route}, {stored:,} orders stored",
                        f"single client, {r['n']} requests",
                        f"p50 {fmt(r['p50'])} / p99 {fmt(r['p99'])} ms, {r['items']} items",
                        "",
                        "",
                        f"p99 ≤ 50 ms: {yes(ok)}" if part == "get_large" else "",
                    )
                )
        pe = sc.get("pending")
        if pe:
            add(
                (
                    f"scale: {pe['n']} pending, same expiresAt",
                    f"{pe['pending_at_once']} pending at once",
                    f"created {pe['create_per_s']:.0f}/s",
                    "",
                    "",
                    "",
                )
            )
            for name in ("worker", "temporal", "api"):
                mib = f"{pe['rss_before'][name]:.0f} → {pe['rss_pending'][name]:.0f} → {pe['rss_peak'][name]:.0f} MiB"
                target = f"≤ 400 MB: {yes(pe['rss_peak'][name] * 1.048576 <= 400)}" if name == "worker" else ""
                add((f"   {name} RSS", "before → all pending → peak", mib, "", "", target))
            drained = (
                f"{share(pe['expired'], pe['n'])}, drained in {fmt(pe['drain_s'], 1)} s ({fmt(pe['expire_per_s'])}/s)"
            )
            ok = pe["expired"] == pe["n"] and (pe["expire_per_s"] or 0) >= 100
            add(("   expired", "share, expiresAt → last order:cancelled", drained, "", "", f"100%, ≥ 100/s: {yes(ok)}"))
    headers = ("scenario", "measure", "ours (Temporal)", "reference (BullMQ / bare engine / Stripe)", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


CPU_COLUMNS = ["temporal", "worker", "api", "mongo", "nats", "stripe", "bare-worker", "node", "redis", "bench"]


def cpu_table(res: Results) -> str:
    """CPU milliseconds per order (per workflow, per job, per payment) spent in each process, per row;
    `api` is both API processes."""
    used = [
        c for c in CPU_COLUMNS if any(cpu.get(c, 0) or (c == "api" and cpu.get("api-short")) for *_, cpu in res.cpu)
    ]
    head = "| CPU ms per order | n | wall s | " + " | ".join(used) + " | total |"
    lines = [head, "|" + "---|" * (len(used) + 4)]
    for row, n, wall, cpu in res.cpu:
        merged = dict(cpu)
        merged["api"] = merged.get("api", 0.0) + merged.pop("api-short", 0.0)
        per = [1000 * merged.get(k, 0.0) / max(n, 1) for k in used]
        cells = " | ".join(f"{x:.1f}" if x else "" for x in per)
        total = 1000 * sum(merged.values()) / max(n, 1)
        lines.append(f"| {row} | {n} | {wall:.0f} | {cells} | {total:.1f} |")
    return "\n".join(lines)


def targets(res: Results) -> list[str]:
    """The issue's ratios, one line each."""
    d = res.data
    out = []
    bare = d.get("bare", {}).get(d.get("bare_runner", ""), {})
    c50 = d.get("create", {}).get(50)
    if c50 and bare.get("per_s"):
        r = c50["per_s"] / bare["per_s"]
        out.append(
            f"REST create at 50 clients / bare engine end to end: {c50['per_s']:.1f} / {bare['per_s']:.1f} = "
            f"{r:.2f} (target ≥ 0.8: {yes(r >= 0.8)}); "
            f"p99 {fmt(c50['p99'])} ms (≤ 1000: {yes((c50['p99'] or 1e9) <= 1000)})"
        )
    e = d.get("equal")
    bl = bullmq_lag(e.get("bullmq", {})) if e else {}
    if e and bl.get("p99"):
        out.append(
            f"equal-load lag p99 / BullMQ p99: {fmt(e['p99'])} / {fmt(bl['p99'])} ms = {ratio(e['p99'], bl['p99'])} "
            f"(target ≤ 1: {yes((e['p99'] or 1e9) <= bl['p99'])}); delivered {share(e['delivered'], e['n'])}"
        )
    s = d.get("steady")
    if s and bare.get("per_s"):
        mx = s.get("max_rate") or 0
        out.append(
            f"steady-state max rate / bare engine: {mx:g} / {bare['per_s']:.1f} = {mx / bare['per_s']:.2f} "
            f"(target ≥ 0.7: {yes(mx >= 0.7 * bare['per_s'])})"
        )
    p, st = d.get("payment"), d.get("stripe")
    if p and st and st.get("p50") and p.get("p50"):
        r = p["p50"] / st["p50"]
        out.append(
            f"payment p50 / Stripe floor p50: {p['p50']:.0f} / {st['p50']:.0f} ms = {r:.2f} "
            f"(target ≤ 1.3: {yes(r <= 1.3)})"
        )
    return out


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, stack: BenchStack, res: Results) -> None:
    deadline = time.time() + args.max_minutes * 60 - 60
    settings = stack.settings
    assert settings is not None
    temporal = await connect_temporal(settings)
    if temporal.data_converter is not pydantic_data_converter:  # both checkouts use it; the bare driver needs it
        temporal = await Client.connect(settings.temporal_address, data_converter=pydantic_data_converter)
    watch = EventWatch()
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    meter = Meter(stack, res)
    async with (
        httpx.AsyncClient(base_url=stack.api_url, timeout=120, limits=limits) as api,
        httpx.AsyncClient(base_url=stack.short_api_url, timeout=120, limits=limits) as short,
    ):
        store = Store(settings)
        ctx = Ctx(args, stack, res, meter, temporal, watch, store, api, short, [], deadline)
        res.data["bare_runner"] = bare_runners(ctx)[0]
        try:
            await watch.start(settings)
            ctx.users = await signup(api, 50)

            async def fresh() -> None:
                await ctx.store.close()
                api.cookies.clear()
                new = stack.restart_app()
                ctx.store = Store(new)
                api.base_url = httpx.URL(stack.api_url)
                short.base_url = httpx.URL(stack.short_api_url)
                ctx.users = await signup(api, 50)

            scenarios: dict[str, Callable[[], Awaitable[None]]] = {
                "create": lambda: scenario_create(ctx),
                "bare": lambda: scenario_bare(ctx),
                "equal": lambda: scenario_equal(ctx),
                "steady": lambda: scenario_steady(ctx),
                "burst": lambda: scenario_burst(ctx),
                "payment": lambda: scenario_payment(ctx),
                "stripe": lambda: scenario_stripe(ctx),
                "scale": lambda: scenario_scale(ctx, fresh),
            }
            for name in SCENARIOS:
                if name not in args.scenario_list:
                    continue
                if ctx.left() < 60:
                    res.notes.append(f"{name}: skipped (time bound --max-minutes)")
                    continue
                say(f"scenario {name}")
                try:
                    await scenarios[name]()
                except Exception as err:  # one broken scenario must not lose the others' figures
                    res.notes.append(f"{name}: failed: {err!r}"[:400])
                    say(f"{name} failed: {err!r}")
                    traceback.print_exc()
                    stack.check_alive()
            with contextlib.suppress(Exception):
                metrics = httpx.get(f"http://127.0.0.1:{stack.ports['metrics']}/metrics", timeout=5).text
                (stack.folder / "worker-metrics.txt").write_text(metrics)
        finally:
            await watch.close()
            await ctx.store.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0])
    a = parser.add_argument
    a("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)")
    a("--code", type=Path, default=None, help="run the API and the worker (and import the workflow) from this checkout")
    a(
        "--temporal-flag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dev-server dynamic config (--dynamic-config-value), repeatable; on top of devstack's",
    )
    a("--short-expiry-s", type=int, default=30, help="ORDER_EXPIRATION_SECONDS of the second API (default 30)")
    a("--create-n1", type=int, default=100, help="orders created with 1 client")
    a("--create-n10", type=int, default=500, help="orders created with 10 clients")
    a("--create-n50", type=int, default=1000, help="orders created with 50 clients")
    a("--bare-n", type=int, default=600, help="bare workflows started (default 600; creation stops at 0.8 x T)")
    a("--bare-concurrency", type=int, default=50, help="bare starts in flight (default 50)")
    a(
        "--bare-runner",
        choices=["auto", "sandboxed", "unsandboxed", "both"],
        default="auto",
        help="bare worker's workflow runner (auto: as the worker under test, WORKER_WORKFLOW_SANDBOX)",
    )
    a("--bare-start", choices=["start", "update-with-start"], default="start", help="how the bare driver starts")
    a("--equal-n", type=int, default=600, help="orders in the equal-load scenario (creation stops at 0.8 x T)")
    a("--steady-rates", default="10,15,20,25,30,40", help="orders/s per step (default 10,15,20,25,30,40)")
    a("--steady-window-s", type=float, default=30.0, help="measured seconds per step, after T (default 30)")
    a("--steady-max-in-flight", type=int, default=200, help="requests in flight before the schedule slips")
    a("--n", type=int, default=1000, help="orders in the burst scenario (default 1000)")
    a("--spread-s", type=float, default=10.0, help="burst: expiresAt spread (default 10 s)")
    a("--payments-per-buyer", type=int, default=21, help="orders paid per buyer (10 buyers)")
    a("--stripe-n", type=int, default=200, help="PaymentIntents in Stripe's floor (default 200)")
    a("--prefill", type=int, default=100_000, help="scale: finished orders stored before the second batch")
    a("--scale-small", type=int, default=1000, help="scale: finished orders stored before the first batch")
    a("--scale-batch", type=int, default=500, help="scale: orders per CPU batch (default 500)")
    a("--scale-gets", type=int, default=100, help="scale: GET requests per list route (default 100)")
    a("--scale-get-budget-s", type=float, default=45.0, help="scale: at most this long per list route")
    a("--scale-n", type=int, default=2000, help="scale: pending orders with the same expiresAt (default 2000; 0 skips)")
    a("--max-minutes", type=float, default=30.0, help="bound on the whole run (default 30)")
    a("--no-bullmq", dest="bullmq", action="store_false", help="skip the BullMQ baseline")
    a("--keep", action="store_true", help="keep the temp folder (logs, DBs)")
    args = parser.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {','.join(SCENARIOS)}")
    for flag in args.temporal_flag:
        if "=" not in flag:
            parser.error(f"--temporal-flag {flag}: expected KEY=VALUE")
    if args.code is not None and args.code.resolve() != CODE_DIR:
        parser.error("--code must be given on the command line (it is read before the imports)")
    return args


def temporal_flags(flags: list[str]) -> tuple[dict[str, object], list[str]]:
    """--temporal-flag values: as `dynamic_config` when this checkout's temporal_cmd takes one (so a
    flag overrides its default instead of repeating the key), else as extra --dynamic-config-value."""
    if "dynamic_config" not in inspect.signature(import_devstack().temporal_cmd).parameters:
        return {}, flags
    config: dict[str, object] = {}
    for flag in flags:
        key, value = flag.split("=", 1)
        try:
            config[key] = json.loads(value)
        except ValueError:
            config[key] = value
    return config, []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    info, load0 = machine(), loadavg()
    folder = Path(tempfile.mkdtemp(prefix="ticketing-bench-"))
    say(f"stack in {folder}")
    res = Results()
    config, extra = temporal_flags(args.temporal_flag)
    stack = BenchStack(
        folder,
        short_expiration_seconds=args.short_expiry_s,
        code_dir=CODE_DIR,
        temporal_flags=extra,
        temporal_config=config,
    )
    started = time.time()
    try:
        stack.start()
        say(f"stack up in {time.time() - started:.1f}s: {stack.ports}")
        asyncio.run(run(args, stack, res))
    except KeyboardInterrupt:
        res.notes.append("interrupted")
    except Exception as err:
        res.notes.append(f"aborted: {err!r}")
        say(f"aborted: {err!r}")
    finally:
        stack.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
    print()
    print(f"machine: {info}; load average (1/5/15 min) at start {load0}, at end {loadavg()}")
    print(f"command: {command.strip()}  (wall {time.time() - started:.0f} s)")
    code = f"{CODE_DIR} ({git_describe(CODE_DIR)})" if CODE_DIR else f"{ROOT} ({git_describe(ROOT)})"
    print(f"code under test: {code}")
    print(f"dev server: {' '.join(stack.temporal_command[1:])}")
    print(table(res, args))
    for line in targets(res):
        print(f"target: {line}")
    if res.cpu:
        print()
        print(cpu_table(res))
    for note in res.notes:
        print(f"note: {note}")
    return 0


def git_describe(path: Path) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(path), "log", "-1", "--format=%h %s"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return (out[:70] + (" + uncommitted changes" if dirty else "")) or "?"
    return "?"


if __name__ == "__main__":
    sys.exit(main())
