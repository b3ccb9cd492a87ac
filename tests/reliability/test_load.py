"""Load: 200 concurrent buyers race for 50 tickets (4 per ticket). Counted: at most one active
order per ticket in MongoDB, zero double bookings, every ticket's reservation names its winner,
exactly one order:created per winning order, and no 5xx."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from bson import ObjectId
from pymongo import AsyncMongoClient

from api.auth import issue_token
from ticketing.payloads import Refusal
from workflows.order import OrderWorkflow

from ..conftest import Stack, error_entries
from .conftest import record

BUYERS = 200
TICKETS = 50


async def test_200_buyers_race_for_50_tickets(stack: Stack) -> None:
    started = time.monotonic()
    seller = await stack.signup()
    tickets = await asyncio.gather(*(stack.create_ticket(seller, title=f"Seat {i}") for i in range(TICKETS)))
    # Buyers carry valid sessions (signing 200 argon2 sign-ups up front would only measure hashing).
    buyers = [
        {"Authorization": f"Bearer {issue_token(stack.settings, str(ObjectId()), f'buyer{i}@test.com')}"}
        for i in range(BUYERS)
    ]
    wanted = [tickets[i % TICKETS]["id"] for i in range(BUYERS)]
    random.Random(7).shuffle(wanted)
    go = asyncio.Event()

    async def buy(headers: dict[str, str], ticket_id: str) -> tuple[str, int, dict]:
        await go.wait()
        r = await stack.api.post("/api/orders", json={"ticketId": ticket_id}, headers=headers, timeout=120)
        return ticket_id, r.status_code, r.json()

    tasks = [asyncio.create_task(buy(b, t)) for b, t in zip(buyers, wanted, strict=True)]
    await asyncio.sleep(0.1)
    go.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 300)

    statuses = Counter(status for _, status, _ in results)
    server_errors = [(t, s, body) for t, s, body in results if s >= 500]
    winners = Counter(t for t, s, _ in results if s == 201)
    refusals = Counter(error_entries(body)[0]["message"] for _, s, body in results if s == 400)

    mongo: AsyncMongoClient = AsyncMongoClient(stack.settings.mongo_url, tz_aware=True)
    try:
        db = mongo[stack.settings.mongo_db]
        orders = [d async for d in db.orders.find({})]
        stored_tickets = {str(d["_id"]): d async for d in db.tickets.find({})}
    finally:
        await mongo.close()
    active = Counter(o["ticket"]["id"] for o in orders if o["status"] != "cancelled")
    double_bookings = sum(n - 1 for n in active.values() if n > 1)
    mismatched = [
        t
        for t, doc in stored_tickets.items()
        if doc.get("order_id") is not None
        and not any(str(o["_id"]) == doc["order_id"] and o["ticket"]["id"] == t for o in orders)
    ]
    created = Counter(m.data["ticket"]["id"] for m in await stack.wait_for_messages("order:created", len(orders)))
    record(
        f"[load] buyers={BUYERS} tickets={TICKETS} | HTTP {dict(sorted(statuses.items()))} | orders stored="
        f"{len(orders)} tickets won={len(winners)} | double bookings={double_bookings} 5xx={len(server_errors)} | "
        f"refusals {dict(refusals)} | {time.monotonic() - started:.0f}s"
    )
    assert not server_errors, server_errors[:5]
    assert set(statuses) <= {201, 400}, statuses
    assert set(refusals) == {Refusal.TICKET_RESERVED}, refusals
    assert max(winners.values()) == 1, (winners, active)
    assert max(active.values()) == 1, (winners, active)
    assert double_bookings == 0
    assert not mismatched
    assert len(orders) == sum(winners.values()) == len(winners)  # a refused buyer stores no order
    assert created == Counter(dict.fromkeys(winners, 1))  # one order:created per winning order, none else
    for order in orders:  # the winners' workflows hold the reservation
        state = await stack.order_handle(str(order["_id"])).query(OrderWorkflow.status)
        assert state.status is not None
        assert state.status.value == "created"
