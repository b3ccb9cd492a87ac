"""Faults while at least 50 orders are in flight (some paying, the rest sleeping until expiresAt).

After recovery every scenario counts, through `audit`: each order complete xor cancelled (workflow
result and MongoDB agree, the ticket is released exactly for the cancelled ones), succeeded and
kept PaymentIntents at localstripe == complete orders, and each promised fact in the stream
exactly once (by Nats-Msg-Id and by subject + entity): lost = 0, duplicates = 0.

Servers that a scenario breaks are dedicated ones (or worker processes), so the session's shared
servers are never disturbed."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from devstack import free_port, nats_cmd, secantus_cmd, start_and_wait, temporal_cmd

from ..conftest import (
    Placed,
    Processes,
    Servers,
    Stack,
    eventually,
    place_orders,
    run_stack,
    start_worker,
    wait_temporal_ready,
)
from ..stripe_proxy import StripeProxy, stripe_proxy
from .conftest import audit, http_tally, pay

ORDERS = 50
PAYING = 25  # the first half pays, the second half sleeps until it expires


def start_paying(stack: Stack, placed: Placed) -> list[asyncio.Task[list[int]]]:
    """The buyers of the first PAYING orders pay, in the background (patient clients)."""
    return [
        asyncio.create_task(pay(stack, placed.owner[o["id"]], o["id"], deadline=150)) for o in placed.orders[:PAYING]
    ]


async def confirms_in_flight(proxy: StripeProxy, at_least: int) -> int:
    """Waits for at least this many confirms held at the slow proxy (charges in flight); returns how many."""
    await eventually(lambda: proxy.confirms_in_flight >= at_least, f"{at_least} confirms in flight", 60)
    return proxy.confirms_in_flight


async def test_worker_sigkill_mid_charge_and_mid_sleep(servers: Servers, processes: Processes, tmp_path: Path) -> None:
    async with (
        stripe_proxy(servers.stripe, drop_first=None, confirm_delay=3) as proxy,
        run_stack(servers, order_expiration_seconds=90, stripe_api_base=proxy.url, worker=False) as stack,
    ):
        processes.append(start_worker(stack.settings, tmp_path / "worker1.log"))
        placed = await place_orders(stack, ORDERS)
        started = time.monotonic()
        payers = start_paying(stack, placed)
        # SIGKILL while confirms are held by the slow proxy (the charge is in flight).
        in_flight = await confirms_in_flight(proxy, 10)
        processes[-1].send_signal(signal.SIGKILL)
        assert processes[-1].wait(10) is not None
        await asyncio.sleep(2)
        processes.append(start_worker(stack.settings, tmp_path / "worker2.log"))
        statuses = await asyncio.wait_for(asyncio.gather(*payers), 200)
        # SIGKILL again while the other orders sleep towards expiresAt.
        processes[-1].send_signal(signal.SIGKILL)
        assert processes[-1].wait(10) is not None
        await asyncio.sleep(3)
        processes.append(start_worker(stack.settings, tmp_path / "worker3.log"))
        await audit(
            stack,
            "worker SIGKILL",
            placed,
            f"2 SIGKILLs (1st with {in_flight} confirms in flight, 2nd with {ORDERS - PAYING} orders asleep)",
            started=started,
            extra=http_tally(statuses),
        )


async def test_temporal_server_restart(servers: Servers, processes: Processes, tmp_path: Path) -> None:
    port = free_port()
    cmd = temporal_cmd(port, None, tmp_path / "temporal.db")
    processes.append(start_and_wait("temporal", cmd, port, log_path=tmp_path / "temporal.log"))
    wait_temporal_ready(f"127.0.0.1:{port}")
    async with (
        stripe_proxy(servers.stripe, drop_first=None, confirm_delay=2) as proxy,
        run_stack(
            servers,
            order_expiration_seconds=60,
            temporal_address=f"127.0.0.1:{port}",
            stripe_api_base=proxy.url,
            worker=False,
        ) as stack,
    ):
        processes.append(start_worker(stack.settings, tmp_path / "worker.log"))
        placed = await place_orders(stack, ORDERS)
        started = time.monotonic()
        payers = start_paying(stack, placed)
        in_flight = await confirms_in_flight(proxy, 5)
        processes[0].stop(15)  # SIGTERM the dev server (file DB)
        await asyncio.sleep(3)
        processes[0] = start_and_wait("temporal", cmd, port, log_path=tmp_path / "temporal.log")
        wait_temporal_ready(f"127.0.0.1:{port}")
        statuses = await asyncio.wait_for(asyncio.gather(*payers), 200)
        await audit(
            stack,
            "Temporal restart",
            placed,
            f"1 dev-server restart (3 s down, {in_flight} confirms in flight, {ORDERS - PAYING} asleep)",
            started=started,
            extra=http_tally(statuses),
        )


async def test_nats_down_10s_during_expirations(servers: Servers, processes: Processes, tmp_path: Path) -> None:
    port = free_port()
    cmd = nats_cmd(port, tmp_path / "nats")
    processes.append(start_and_wait("nats", cmd, port, log_path=tmp_path / "nats.log"))
    settings = servers.settings(order_expiration_seconds=25, nats_url=f"nats://127.0.0.1:{port}")
    async with run_stack(servers, settings) as stack:
        placed = await place_orders(stack, ORDERS)
        started = time.monotonic()
        statuses = await asyncio.gather(*(pay(stack, placed.owner[o["id"]], o["id"]) for o in placed.orders[:PAYING]))
        # Stop NATS just before the first sleeping order expires, for 10 s.
        first = min(o["expiresAt"] for o in placed.orders[PAYING:])
        wait = (datetime.fromisoformat(first.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds() - 1
        await asyncio.sleep(max(0, wait))
        down_at = datetime.now(UTC)
        processes[0].stop(10)
        await asyncio.sleep(10)
        processes[0] = start_and_wait("nats", cmd, port, log_path=tmp_path / "nats.log")
        up_at = datetime.now(UTC)
        expired_while_down = sum(
            1
            for o in placed.orders[PAYING:]
            if down_at <= datetime.fromisoformat(o["expiresAt"].replace("Z", "+00:00")) <= up_at
        )
        await audit(
            stack,
            "NATS down 10 s",
            placed,
            f"NATS stopped 10 s; {expired_while_down} of {ORDERS - PAYING} expirations fell in the outage",
            started=started,
            extra=http_tally(statuses),
        )


async def test_mongodb_restart_while_orders_pay_and_expire(
    servers: Servers, processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    cmd = secantus_cmd(port, tmp_path / "mongo")
    processes.append(start_and_wait("mongo", cmd, port, log_path=tmp_path / "mongo.log"))
    async with (
        stripe_proxy(servers.stripe, drop_first=None, confirm_delay=1) as proxy,
        run_stack(
            servers, order_expiration_seconds=30, mongo_url=f"mongodb://127.0.0.1:{port}", stripe_api_base=proxy.url
        ) as stack,
    ):
        placed = await place_orders(stack, ORDERS)
        started = time.monotonic()
        payers = start_paying(stack, placed)
        await eventually(lambda: proxy.confirms_started >= 5, "5 confirms started", 60)
        processes[0].stop(15)  # orders are paying (and the rest sleeping) while MongoDB is down
        await asyncio.sleep(5)
        processes[0] = start_and_wait("mongo", cmd, port, log_path=tmp_path / "mongo.log")
        statuses = await asyncio.wait_for(asyncio.gather(*payers), 200)
        # and once more while the unpaid orders expire
        first = min(o["expiresAt"] for o in placed.orders[PAYING:])
        wait = (datetime.fromisoformat(first.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0, wait))
        processes[0].stop(15)
        await asyncio.sleep(5)
        processes[0] = start_and_wait("mongo", cmd, port, log_path=tmp_path / "mongo.log")
        await audit(
            stack,
            "MongoDB restart",
            placed,
            "2 SecantusDB restarts (5 s down each: during payments, during expirations)",
            started=started,
            extra=http_tally(statuses),
        )


async def test_stripe_500_first_then_timeout_after_success(servers: Servers) -> None:
    async with (
        stripe_proxy(servers.stripe, drop_first=None, fail_first=True, drop_after_success=True) as proxy,
        run_stack(servers, order_expiration_seconds=50, stripe_api_base=proxy.url) as stack,
    ):
        placed = await place_orders(stack, ORDERS)
        started = time.monotonic()
        statuses = await asyncio.gather(*start_paying(stack, placed))
        await audit(
            stack,
            "Stripe 500 + lost replies",
            placed,
            f"{len(proxy.failed)} injected 500s, {len(proxy.dropped)} replies dropped after success",
            started=started,
            extra=http_tally(statuses),
        )
        assert proxy.failed
        assert proxy.dropped
