"""`make bench`: the Temporal order design against the BullMQ design it replaces, on this machine.

Starts its own stack (see bench/stack.py), runs five scenarios and prints ONE table:

1. order creation through REST (POST /api/orders) at 1, 10, 50 concurrent clients;
2. expiration lag: --n orders whose expiresAt fall evenly over --spread-s seconds
   (lag = moment `order:cancelled` is read from JetStream - expiresAt);
3. payment latency (POST /api/payments -> 201, pm_card_visa, 10 concurrent buyers);
4. scale: --scale-n pending orders at once, worker/API RSS, all expire, time to drain;
5. the BullMQ baseline (bench/bullmq/expiration.mjs) with the same N and spread, same NATS.

Usage: .venv/bin/python -m bench.run [--n 1000] [--spread-s 10] [--scale-n 10000] [--max-minutes 45]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import nats
from bson import ObjectId
from nats.js.api import DeliverPolicy
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from bench.stack import BenchStack, cpu_seconds
from ticketing.db import connect_db
from ticketing.documents import Ticket
from ticketing.orders import OrderInput, OrderState
from ticketing.settings import Settings
from ticketing.temporal import ORDER_STATUS, TICKET_ID, USER_ID, connect_temporal, order_workflow_id
from workflows.order import OrderWorkflow

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "pm_card_visa"
BULLMQ_SCRIPT = ROOT / "bench" / "bullmq" / "expiration.mjs"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (same definition as the BullMQ script)."""
    data = sorted(values)
    if not data:
        return None
    i = min(len(data) - 1, max(0, -(-p * len(data) // 100) - 1))
    return data[int(i)]


# ----------------------------------------------------------------------------------------------
# helpers: users, tickets, orders
# ----------------------------------------------------------------------------------------------


async def signup(api: httpx.AsyncClient, count: int) -> list[tuple[str, dict[str, str]]]:
    """`count` users through REST: (user id, Bearer header)."""

    async def one(i: int) -> tuple[str, dict[str, str]]:
        email = f"bench{i}-{ObjectId()}@bench.test"
        resp = await api.post("/api/users/signup", json={"email": email, "password": "password"})
        resp.raise_for_status()
        body = resp.json()
        return body["id"], {"Authorization": f"Bearer {body['token']}"}

    users: list[tuple[str, dict[str, str]]] = []
    for start in range(0, count, 10):
        users += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 10))))
    api.cookies.clear()
    return users


async def make_tickets(seller_id: str, count: int) -> list[Ticket]:
    """Tickets straight into MongoDB (insert_many): setup, not part of any figure."""
    tickets = [Ticket(title=f"Bench concert {i}", price=2050, user_id=seller_id) for i in range(count)]
    for start in range(0, count, 1000):
        chunk = tickets[start : start + 1000]
        result = await Ticket.insert_many(chunk)
        for ticket, oid in zip(chunk, result.inserted_ids, strict=True):
            ticket.id = oid
    return tickets


async def start_order(temporal: Client, settings: Settings, user_id: str, ticket: Ticket, expires_at: datetime) -> str:
    """What POST /api/orders does, minus HTTP: start the order workflow and wait for its reservation."""
    order_id = str(ObjectId())
    handle = await temporal.start_workflow(
        OrderWorkflow.run,
        OrderInput(order_id=order_id, user_id=user_id, ticket_id=str(ticket.id), expires_at=expires_at),
        id=order_workflow_id(order_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(ORDER_STATUS, "pending"),
                SearchAttributePair(USER_ID, user_id),
                SearchAttributePair(TICKET_ID, str(ticket.id)),
            ]
        ),
        memo={"ticketTitle": ticket.title, "ticketPrice": ticket.price / 100},
    )
    outcome = cast(OrderState, await handle.execute_update(OrderWorkflow.reservation))
    if outcome.rejected_reason:
        raise RuntimeError(f"order refused: {outcome.rejected_reason}")
    return order_id


async def bounded(items: list[Any], concurrency: int, fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """Run fn over items with at most `concurrency` in flight; results in item order."""
    results: list[Any] = [None] * len(items)
    counter = itertools.count()

    async def runner() -> None:
        while (i := next(counter)) < len(items):
            results[i] = await fn(items[i])

    await asyncio.gather(*(runner() for _ in range(min(concurrency, len(items)))))
    return results


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

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


# ----------------------------------------------------------------------------------------------
# scenarios
# ----------------------------------------------------------------------------------------------


@dataclass
class Results:
    create: dict[int, dict[str, Any]] = field(default_factory=dict)
    expiration: dict[str, Any] = field(default_factory=dict)
    payment: dict[str, Any] = field(default_factory=dict)
    scale: dict[str, Any] = field(default_factory=dict)
    bullmq: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cpu: dict[str, tuple[int, float, dict[str, float]]] = field(default_factory=dict)  # scenario: (n, wall, cpu)


@contextlib.asynccontextmanager
async def accounted(stack: BenchStack, res: Results, name: str, n: Callable[[], int]) -> Any:
    """CPU seconds each process spends during a scenario (robust to other load, unlike wall times)."""
    before, t0 = {**stack.cpu(), "bench": cpu_seconds(os.getpid())}, time.perf_counter()
    yield
    after = {**stack.cpu(), "bench": cpu_seconds(os.getpid())}
    res.cpu[name] = (n(), time.perf_counter() - t0, {k: after[k] - before[k] for k in after})


async def scenario_create(
    api: httpx.AsyncClient, users: list[tuple[str, dict[str, str]]], seller: str, levels: dict[int, int], res: Results
) -> None:
    """POST /api/orders at each concurrency level, `levels[c]` orders (fresh tickets each)."""
    warm = await make_tickets(seller, 20)
    await bounded(warm, 5, lambda t: api.post("/api/orders", json={"ticketId": str(t.id)}, headers=users[0][1]))
    for clients, count in levels.items():
        tickets = await make_tickets(seller, count)
        latencies: list[float] = []
        errors = 0

        async def one(ticket: Ticket, _lat: list[float] = latencies) -> None:
            nonlocal errors
            headers = users[hash(str(ticket.id)) % len(users)][1]
            t0 = time.perf_counter()
            resp = await api.post("/api/orders", json={"ticketId": str(ticket.id)}, headers=headers)
            if resp.status_code == 201:
                _lat.append((time.perf_counter() - t0) * 1000)
            else:
                errors += 1
                if errors <= 3:
                    say(f"create: {resp.status_code} {resp.text[:200]}")

        t0 = time.perf_counter()
        await bounded(tickets, clients, one)
        wall = time.perf_counter() - t0
        res.create[clients] = {
            "n": count,
            "ok": len(latencies),
            "per_s": len(latencies) / wall,
            "p50": pct(latencies, 50),
            "p99": pct(latencies, 99),
        }
        say(f"create c={clients}: {res.create[clients]}")


async def scenario_expiration(
    temporal: Client, settings: Settings, stack: BenchStack, watch: EventWatch, users: list[tuple[str, dict[str, str]]],
    seller: str, n: int, spread_s: float, create_rate: float, res: Results,
) -> None:  # fmt: skip
    """N orders whose expiresAt fall evenly over spread_s, created ahead of time through Temporal
    (start_workflow + `reservation` Update, exactly what POST /api/orders does) with explicit expiresAt."""
    tickets = await make_tickets(seller, n)
    lead = 3.0 + 1.5 * n / max(create_rate, 20.0)
    base = datetime.now(UTC) + timedelta(seconds=lead)
    base = base.replace(microsecond=base.microsecond // 1000 * 1000)
    step = spread_s / (n - 1) if n > 1 else 0.0
    due = [base + timedelta(milliseconds=round(i * step * 1000)) for i in range(n)]
    late = 0

    async def create(i: int) -> str:
        nonlocal late
        order_id = await start_order(temporal, settings, users[i % len(users)][0], tickets[i], due[i])
        if datetime.now(UTC) > due[i] - timedelta(seconds=0.5):
            late += 1
        return order_id

    t0 = time.perf_counter()
    ids = await bounded(list(range(n)), 32, create)
    created_s = time.perf_counter() - t0
    say(f"expiration: created {n} in {created_s:.1f}s (lead {lead:.1f}s, {late} created <0.5s before due)")
    expires = {oid: due[i].timestamp() for i, oid in enumerate(ids)}
    await watch.wait_for(ids, base.timestamp() + spread_s + 60, stack)
    lags = [(watch.cancelled[o] - expires[o]) * 1000 for o in ids if o in watch.cancelled]
    exp_lags = [(watch.expired[o] - expires[o]) * 1000 for o in ids if o in watch.expired]
    last = max((watch.cancelled[o] for o in ids if o in watch.cancelled), default=0.0)
    window = last - base.timestamp()
    res.expiration = {
        "n": n,
        "delivered": len(lags),
        "create_per_s": n / created_s,
        "late": late,
        "p50": pct(lags, 50),
        "p99": pct(lags, 99),
        "max": max(lags, default=None),
        "min": min(lags, default=None),
        "exp_p50": pct(exp_lags, 50),
        "exp_p99": pct(exp_lags, 99),
        "exp_max": max(exp_lags, default=None),
        "per_s": len(lags) / window if window > 0 else None,
    }
    say(f"expiration: {res.expiration}")


async def scenario_payment(
    api: httpx.AsyncClient, users: list[tuple[str, dict[str, str]]], seller: str, per_buyer: int, res: Results
) -> None:
    buyers = users[:10]
    tickets = await make_tickets(seller, len(buyers) * per_buyer)
    pairs: list[tuple[str, dict[str, str]]] = []
    for i, ticket in enumerate(tickets):
        headers = buyers[i % len(buyers)][1]
        pairs.append((str(ticket.id), headers))

    async def order(pair: tuple[str, dict[str, str]]) -> tuple[str, dict[str, str]]:
        resp = await api.post("/api/orders", json={"ticketId": pair[0]}, headers=pair[1])
        resp.raise_for_status()
        return resp.json()["id"], pair[1]

    orders = await bounded(pairs, 10, order)
    # warm-up: the first payments pay for Stripe client and connection set-up
    warm, orders = orders[:10], orders[10:]
    await bounded(
        warm, 10, lambda o: api.post("/api/payments", json={"orderId": o[0], "token": "pm_card_visa"}, headers=o[1])
    )
    latencies: list[float] = []
    errors = 0

    async def pay(o: tuple[str, dict[str, str]]) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        resp = await api.post("/api/payments", json={"orderId": o[0], "token": TOKEN}, headers=o[1])
        if resp.status_code == 201:
            latencies.append((time.perf_counter() - t0) * 1000)
        else:
            errors += 1
            if errors <= 3:
                say(f"payment: {resp.status_code} {resp.text[:200]}")

    t0 = time.perf_counter()
    await bounded(orders, len(buyers), pay)
    wall = time.perf_counter() - t0
    res.payment = {
        "n": len(orders),
        "ok": len(latencies),
        "per_s": len(latencies) / wall,
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
    }
    say(f"payment: {res.payment}")


async def scenario_scale(
    temporal: Client, settings: Settings, stack: BenchStack, watch: EventWatch, users: list[tuple[str, dict[str, str]]],
    seller: str, n: int, create_rate: float, deadline: float, res: Results,
) -> None:  # fmt: skip
    """n pending orders at once (all with the same expiresAt, after the last is created), RSS, drain."""
    buyers = [uid for uid, _ in users]  # orders spread over the 50 users, as real traffic is
    tickets = await make_tickets(seller, n)
    rss_before = {name: stack.rss_mib(name) for name in ("worker", "api")}
    # creation slows down as workflows pile up (measured: 30/s for 1,000, ~12/s towards 10,000)
    lead = 10.0 + 2.5 * n / max(create_rate, 10.0)
    lead = min(lead, max(30.0, deadline - time.time() - 120))
    expires_at = datetime.now(UTC) + timedelta(seconds=lead)
    expires_at = expires_at.replace(microsecond=expires_at.microsecond // 1000 * 1000)
    t0 = time.perf_counter()
    ids = await bounded(
        list(range(n)), 64, lambda i: start_order(temporal, settings, buyers[i % len(buyers)], tickets[i], expires_at)
    )
    created_s = time.perf_counter() - t0
    pending = n - sum(1 for o in ids if o in watch.cancelled)
    rss_pending = {name: stack.rss_mib(name) for name in ("worker", "api")}
    say(f"scale: created {n} in {created_s:.1f}s; {pending} pending; RSS {rss_pending}")
    peak = dict(rss_pending)
    wanted = set(ids)
    end = min(deadline, max(expires_at.timestamp(), time.time()) + 600)
    while time.time() < end and not wanted <= watch.cancelled.keys():
        stack.check_alive()
        for name in peak:
            peak[name] = max(peak[name], stack.rss_mib(name))
        await asyncio.sleep(0.5)
    got = [watch.cancelled[o] for o in ids if o in watch.cancelled]
    drain = max(got) - expires_at.timestamp() if got else None
    res.scale = {
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
    say(f"scale: {res.scale}")


def run_bullmq(settings: Settings, n: int, spread_s: float, timeout: float, res: Results) -> None:
    """The BullMQ baseline against the same NATS. It needs a stream holding `expiration:complete`; ours
    already owns that subject, so it is handed our stream (which the script deletes at the end: it
    runs last)."""
    cmd = [
        "node", str(BULLMQ_SCRIPT), "--n", str(n), "--spread-ms", str(int(spread_s * 1000)),
        "--nats", settings.nats_url, "--stream", settings.nats_stream,
    ]  # fmt: skip
    say("bullmq: " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        res.notes.append("BullMQ baseline timed out")
        return
    for line in proc.stderr.splitlines():
        if "details:" in line or "fatal" in line or "timeout" in line:
            say(line)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        res.notes.append(f"BullMQ baseline failed (exit {proc.returncode}): {proc.stderr[-500:]}")
        return
    res.bullmq = json.loads(lines[-1])
    say(f"bullmq: {res.bullmq}")


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
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return f"nproc {os.cpu_count()}, CPU {model}, memory {mem}, Python {platform.python_version()}, load avg {load}"


def fmt(x: Any, digits: int = 0, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}{unit}"
    return f"{x}{unit}"


def ratio(ours: Any, theirs: Any) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def lag3(lag: dict[str, Any]) -> str:
    return f"p50 {fmt(lag.get('p50'))} / p99 {fmt(lag.get('p99'))} / max {fmt(lag.get('max'))} ms"


def table(res: Results, args: argparse.Namespace) -> str:
    rows: list[tuple[str, ...]] = []
    add = rows.append
    for clients, r in res.create.items():
        target = f"≥150/s {yes(r['per_s'] >= 150 and r['ok'] == r['n'])}" if clients == 50 else ""
        figures = f"{r['per_s']:.0f}/s, p50 {fmt(r['p50'])} ms, p99 {fmt(r['p99'])} ms"
        add((f"1. create via REST, {clients} client(s)", f"{r['ok']}/{r['n']} → 201", figures, "", "", target))
    e, b = res.expiration, res.bullmq
    if e:
        blag: dict[str, Any] = b.get("lag_ms", {}) if b else {}
        bp99 = blag.get("p99")
        ok = e["delivered"] == e["n"] and bp99 is not None and e["p99"] is not None and e["p99"] <= bp99
        ratios = f"p50 {ratio(e['p50'], blag.get('p50'))}, p99 {ratio(e['p99'], bp99)}"
        add((f"2. expiration lag, {e['n']} over {args.spread_s:g}s", "order:cancelled read - expiresAt", lag3(e),
             lag3(blag) if b else "-", ratios, f"p99 ≤ BullMQ {yes(ok)}"))  # fmt: skip
        exp = {"p50": e["exp_p50"], "p99": e["exp_p99"], "max": e["exp_max"]}
        ratios = f"p50 {ratio(exp['p50'], blag.get('p50'))}, p99 {ratio(exp['p99'], bp99)}"
        add(("   same, expiration:complete", "(the event BullMQ publishes)", lag3(exp), "", ratios, ""))
        share = f"{e['delivered']}/{e['n']} ({100 * e['delivered'] / e['n']:.1f}%)"
        add(("   delivered", "share", share, f"{b['delivered']}/{b['n']}" if b else "-", "",
             f"100% {yes(e['delivered'] == e['n'])}"))  # fmt: skip
        bjobs, benq = (b.get("jobs_per_s"), b.get("enqueue_per_s")) if b else (None, None)
        add(("   throughput", "delivered/(last recv - first due)", f"{fmt(e['per_s'], 1)}/s", f"{fmt(bjobs, 1)}/s",
             ratio(e["per_s"], bjobs), f"cap {e['n'] / args.spread_s:.0f}/s"))  # fmt: skip
        add(("   scheduling rate", "orders created / jobs enqueued", f"{e['create_per_s']:.0f}/s", f"{fmt(benq)}/s",
             ratio(e["create_per_s"], benq), f"{e['late']} created late"))  # fmt: skip
    p = res.payment
    if p:
        ok = p["p50"] is not None and p["p50"] <= 100 and p["ok"] == p["n"]
        figures = f"p50 {fmt(p['p50'])} / p99 {fmt(p['p99'])} ms, {p['per_s']:.0f}/s"
        add(("3. payment, 10 buyers", f"{p['ok']}/{p['n']} → 201", figures, "", "", f"p50 ≤ 100 ms {yes(ok)}"))
    s = res.scale
    if s:
        add((f"4. scale, {s['n']} orders", f"{s['pending_at_once']} pending at once",
             f"created {s['create_per_s']:.0f}/s", "", "", ""))  # fmt: skip
        for name in ("worker", "api"):
            mib = f"{s['rss_before'][name]:.0f} → {s['rss_pending'][name]:.0f} → {s['rss_peak'][name]:.0f} MiB"
            target = f"≤ 400 MB {yes(s['rss_peak'][name] * 1.048576 <= 400)}" if name == "worker" else ""
            add((f"   {name} RSS", "before → all pending → peak", mib, "", "", target))
        share = f"{s['expired']}/{s['n']} ({100 * s['expired'] / s['n']:.1f}%)"
        drained = f"{share}, drained in {fmt(s['drain_s'], 1)} s ({fmt(s['expire_per_s'])}/s)"
        add(("   expired", "share, expiresAt → last order:cancelled", drained, "", "",
             f"100% {yes(s['expired'] == s['n'])}"))  # fmt: skip
    headers = ("scenario", "measure", "ours (Temporal)", "BullMQ", "ours/BullMQ", "target")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def cpu_table(res: Results) -> str:
    """CPU milliseconds per order spent in each process, per scenario."""
    names = ["temporal", "worker", "api", "mongo", "nats", "stripe", "bench"]
    head = "| CPU ms per order | orders | wall s | " + " | ".join(names) + " | total |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for scenario, (n, wall, cpu) in res.cpu.items():
        per = [1000 * cpu.get(k, 0.0) / max(n, 1) for k in names]
        cells = " | ".join(f"{x:.1f}" for x in per)
        lines.append(f"| {scenario} | {n} | {wall:.0f} | {cells} | {sum(per):.1f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, stack: BenchStack, res: Results) -> None:
    deadline = time.time() + args.max_minutes * 60
    settings = stack.settings
    assert settings is not None
    mongo = await connect_db(settings)
    temporal = await connect_temporal(settings)
    watch = EventWatch()
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, limits=limits) as api:
        try:
            await watch.start(settings)
            users = await signup(api, 50)
            seller = users[0][0]
            say("1. order creation through REST")
            levels = {1: args.create_n1, 10: args.create_n10, 50: args.create_n50}
            async with accounted(stack, res, "1. create (REST)", lambda: sum(levels.values()) + 20):
                await scenario_create(api, users, seller, levels, res)
            rate = res.create[50]["per_s"] if 50 in res.create else 100.0
            if time.time() < deadline:
                say("2. expiration lag")
                async with accounted(stack, res, "2. expiration (create+expire)", lambda: args.n):
                    await scenario_expiration(
                        temporal, settings, stack, watch, users, seller, args.n, args.spread_s, rate, res
                    )
            if time.time() < deadline:
                say("3. payment latency")
                async with accounted(stack, res, "3. payment (order+pay)", lambda: 10 * args.payments_per_buyer):
                    await scenario_payment(api, users, seller, args.payments_per_buyer, res)
            if time.time() < deadline and args.scale_n > 0:
                say("4. scale")
                rate = res.expiration.get("create_per_s", rate)
                async with accounted(stack, res, "4. scale (create+expire)", lambda: args.scale_n):
                    await scenario_scale(
                        temporal, settings, stack, watch, users, seller, args.scale_n, rate, deadline, res
                    )
            with contextlib.suppress(Exception):
                metrics = httpx.get(f"http://127.0.0.1:{stack.ports['metrics']}/metrics", timeout=5).text
                (stack.folder / "worker-metrics.txt").write_text(metrics)
        finally:
            await watch.close()
            await mongo.close()
    if args.bullmq and time.time() < deadline:
        say("5. BullMQ baseline")
        run_bullmq(settings, args.n, args.spread_s, max(60.0, deadline - time.time()), res)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="orders in the expiration-lag scenario (default 1000)")
    parser.add_argument("--spread-s", type=float, default=10.0, help="expiresAt spread (default 10 s)")
    parser.add_argument("--scale-n", type=int, default=10000, help="pending orders at once (default 10000; 0 skips)")
    parser.add_argument("--create-n1", type=int, default=100, help="orders created with 1 client")
    parser.add_argument("--create-n10", type=int, default=500, help="orders created with 10 clients")
    parser.add_argument("--create-n50", type=int, default=1000, help="orders created with 50 clients")
    parser.add_argument("--payments-per-buyer", type=int, default=21, help="orders paid per buyer (10 buyers)")
    parser.add_argument("--max-minutes", type=float, default=45.0, help="bound on the whole run (default 45)")
    parser.add_argument("--no-bullmq", dest="bullmq", action="store_false", help="skip the BullMQ baseline")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, DBs)")
    args = parser.parse_args(argv)

    command = "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="ticketing-bench-"))
    say(f"stack in {folder}")
    res = Results()
    stack = BenchStack(folder)
    started = time.time()
    try:
        stack.start()
        say(f"stack up in {time.time() - started:.1f}s: {stack.ports}")
        asyncio.run(run(args, stack, res))
    except KeyboardInterrupt:
        res.notes.append("interrupted")
    finally:
        stack.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
    print()
    print(f"machine: {info}")
    print(f"command: {command.strip()}  (wall {time.time() - started:.0f} s)")
    print(table(res, args))
    if res.cpu:
        print()
        print(cpu_table(res))
    for note in res.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
