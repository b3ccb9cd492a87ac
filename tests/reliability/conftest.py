"""Shared pieces of the reliability suite: order placement and payment with bounded client
retries, and `audit`, which COUNTS every outcome after a scenario (workflow results, MongoDB,
localstripe, the JetStream stream) and records a one-line summary that pytest prints at the end of
the run (the figures in docs/reliability.md).

The top-level fixtures (`servers`, `stack`, `stack_factory`, `processes`) come from tests/conftest.py,
the fault-injecting Stripe proxy from tests/stripe_proxy.py."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from bson import ObjectId
from pymongo import AsyncMongoClient

from ..conftest import Placed, Stack
from ..stripe_proxy import LocalStripe

SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUMMARIES:
        terminalreporter.section("reliability figures")
        for line in SUMMARIES:
            terminalreporter.write_line(line)


def record(line: str) -> None:
    SUMMARIES.append(line)
    print(line)


# ── placing and paying orders ────────────────────────────────────────────────────────────
async def pay(
    stack: Stack, headers: dict[str, str], order_id: str, token: str = "pm_card_visa", deadline: float = 120
) -> list[int]:
    """Pay like a patient client: a 5xx or a network error is retried (bounded); returns every status."""
    statuses: list[int] = []
    end = time.monotonic() + deadline
    while True:
        try:
            r = await stack.api.post(
                "/api/payments", json={"orderId": order_id, "token": token}, headers=headers, timeout=deadline
            )
            statuses.append(r.status_code)
            if r.status_code < 500:
                return statuses
        except (httpx.TransportError, OSError):
            statuses.append(0)
        if time.monotonic() > end:
            return statuses
        await asyncio.sleep(2)


# ── the audit ────────────────────────────────────────────────────────────────────────────
@dataclass
class Audit:
    scenario: str
    orders: int
    faults: str
    outcomes: Counter[str]
    succeeded_intents: int  # PaymentIntents that succeeded at Stripe and kept the money
    refunded_intents: int
    other_intents: int  # created but never charged (e.g. a create retried after a lost reply)
    facts: int
    lost: int
    duplicates: int
    problems: list[str]
    seconds: float
    extra: str = ""

    def line(self) -> str:
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"[{self.scenario}] orders={self.orders} faults: {self.faults} | outcomes: {outcomes} | "
            f"succeeded PaymentIntents={self.succeeded_intents} refunded={self.refunded_intents} "
            f"uncharged={self.other_intents} | facts={self.facts} lost={self.lost} "
            f"duplicates={self.duplicates} problems={len(self.problems)} | {self.seconds:.0f}s"
            + (f" | {self.extra}" if self.extra else "")
        )


async def final_states(stack: Stack, orders: list[dict], timeout: float) -> dict[str, str]:
    """Each order workflow's result status (waits for every workflow to close)."""

    async def one(order_id: str) -> tuple[str, str]:
        result = await stack.final_state(order_id, timeout)
        return order_id, str(result.status.value if result.status else f"rejected:{result.rejected_reason}")

    results = await asyncio.wait_for(asyncio.gather(*(one(o["id"]) for o in orders)), timeout)
    return dict(results)


def expected_facts(placed: Placed, states: dict[str, str]) -> Counter[tuple[str, str]]:
    """(subject, entity) -> 1 for every fact the contract promises for these orders."""
    facts: Counter[tuple[str, str]] = Counter()
    for order, ticket_id in zip(placed.orders, placed.tickets, strict=True):
        oid = order["id"]
        facts[("ticket:created", f"{ticket_id}:0")] = 1
        facts[("order:created", f"{oid}:0")] = 1
        facts[("ticket:updated", f"{ticket_id}:1")] = 1  # reserved
        if states[oid] == "complete":
            facts[("charge:created", oid)] = 1
        elif states[oid] == "cancelled":
            facts[("expiration:complete", oid)] = 1
            facts[("order:cancelled", f"{oid}:1")] = 1
            facts[("ticket:updated", f"{ticket_id}:2")] = 1  # released
    return facts


def fact_key(subject: str, data: dict[str, Any]) -> tuple[str, str]:
    if subject == "expiration:complete":
        return subject, str(data["orderId"])
    if subject == "charge:created":
        return subject, str(data["orderId"])
    return subject, f"{data['id']}:{data['version']}"


async def audit(
    stack: Stack,
    scenario: str,
    placed: Placed,
    faults: str,
    *,
    started: float,
    timeout: float = 240,
    stripe_base: str | None = None,
    extra: str = "",
) -> Audit:
    """Wait for every order to end, then count: outcomes in Temporal and MongoDB, PaymentIntents at
    localstripe, facts in the stream (by Nats-Msg-Id and by subject + entity). Records the summary
    line, then fails the test on any lost or duplicated fact or any inconsistency."""
    problems: list[str] = []
    ids = [o["id"] for o in placed.orders]
    states = await final_states(stack, placed.orders, timeout)
    outcomes = Counter(states.values())
    for oid, state in states.items():
        if state not in ("complete", "cancelled"):
            problems.append(f"order {oid} ended {state}")

    # MongoDB: the stored order, its ticket and its charges agree with the workflow
    mongo: AsyncMongoClient = AsyncMongoClient(stack.settings.mongo_url, tz_aware=True)
    try:
        db = mongo[stack.settings.mongo_db]
        stored = {str(d["_id"]): d async for d in db.orders.find({"_id": {"$in": [ObjectId(i) for i in ids]}})}
        tickets = {
            str(d["_id"]): d async for d in db.tickets.find({"_id": {"$in": [ObjectId(t) for t in placed.tickets]}})
        }
        charges = [d async for d in db.charges.find({"order_id": {"$in": ids}})]
    finally:
        await mongo.close()
    kept_charges = Counter(c["order_id"] for c in charges if c["status"] == "succeeded")
    for order, ticket_id in zip(placed.orders, placed.tickets, strict=True):
        oid, state = order["id"], states[order["id"]]
        doc = stored.get(oid)
        if doc is None or doc["status"] != state:
            problems.append(f"order {oid}: workflow says {state}, MongoDB {doc and doc['status']}")
        ticket_owner = tickets[ticket_id].get("order_id")
        if (state == "complete") != (ticket_owner == oid) or (state == "cancelled" and ticket_owner is not None):
            problems.append(f"order {oid} {state} but ticket {ticket_id} reserved by {ticket_owner}")
        if kept_charges[oid] != (1 if state == "complete" else 0):
            problems.append(f"order {oid} {state} with {kept_charges[oid]} kept charges in MongoDB")

    # Stripe: money kept exactly once per complete order, never for a cancelled one
    succeeded = refunded = other = 0
    ls = LocalStripe(stripe_base or f"http://{stack.servers.stripe.url}")
    try:
        by_order: dict[str, list[dict]] = {}
        for pi in await ls.intents():
            order_id = (pi.get("metadata") or {}).get("orderId")
            if order_id in states:
                by_order.setdefault(order_id, []).append(pi)
        for oid, state in states.items():
            kept = []
            for pi in by_order.get(oid, []):
                if pi["status"] != "succeeded":
                    other += 1
                elif await ls.refunds_for(pi["id"]):
                    refunded += 1
                else:
                    kept.append(pi["id"])
            succeeded += len(kept)
            want = [stored[oid].get("payment_intent_id")] if state == "complete" and oid in stored else []
            if kept != want:
                problems.append(f"order {oid} {state}: Stripe kept {kept}, expected {want}")
    finally:
        await ls.close()
    if succeeded != outcomes["complete"]:
        problems.append(f"succeeded PaymentIntents {succeeded} != complete orders {outcomes['complete']}")

    # The stream: every fact exactly once
    messages = await stack.messages()
    by_msg_id = Counter(m.msg_id for m in messages)
    by_fact = Counter(fact_key(m.subject, m.data) for m in messages)
    expected = expected_facts(placed, states)
    ours = {k for k in by_fact if k in expected}
    lost = sum(1 for k in expected if by_fact[k] == 0)
    duplicates = sum(n - 1 for k, n in by_fact.items() if k in expected and n > 1)
    duplicates = max(duplicates, sum(n - 1 for mid, n in by_msg_id.items() if mid and n > 1))
    missing_ids = sum(1 for m in messages if not m.msg_id)
    if missing_ids:
        problems.append(f"{missing_ids} messages without a Nats-Msg-Id")
    unexpected = [
        k
        for k in by_fact
        if k not in expected and (k[1].split(":")[0] in states or k[1].split(":")[0] in placed.tickets)
    ]
    if unexpected:
        problems.append(f"facts the outcomes do not allow: {unexpected[:5]}")
    if lost:
        problems.append(f"lost facts: {[k for k in expected if by_fact[k] == 0][:5]}")
    if duplicates:
        problems.append(f"duplicated facts: {[k for k, n in by_fact.items() if n > 1][:5]}")

    result = Audit(
        scenario=scenario,
        orders=len(placed.orders),
        faults=faults,
        outcomes=outcomes,
        succeeded_intents=succeeded,
        refunded_intents=refunded,
        other_intents=other,
        facts=len(ours),
        lost=lost,
        duplicates=duplicates,
        problems=problems,
        seconds=time.monotonic() - started,
        extra=extra,
    )
    record(result.line())
    assert not problems, "\n".join(problems[:20])
    assert lost == 0
    assert duplicates == 0
    assert outcomes["complete"] + outcomes["cancelled"] == len(placed.orders)
    return result


def http_tally(results: list[list[int]]) -> str:
    finals = Counter(r[-1] if r else 0 for r in results)
    retried = sum(1 for r in results if len(r) > 1)
    return "pay HTTP final " + ",".join(f"{k}x{v}" for k, v in sorted(finals.items())) + f" (retried {retried})"


CARD_PATTERN = re.compile(r"(?<![0-9a-fA-F])4242(?![0-9a-fA-F])")
