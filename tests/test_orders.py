"""Order routes and the order workflow against the session's real servers."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from bson import ObjectId
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from devstack import find_binary
from ticketing.documents import Order, Ticket
from ticketing.payloads import OrderInput, OrderState, Refusal
from ticketing.temporal import order_workflow_id
from workflows.order import OrderWorkflow

from .conftest import Servers, Stack, assert_error, eventually


async def test_create_order_reserves_ticket_and_publishes(stack: Stack) -> None:
    seller, buyer = await stack.signup(), await stack.signup()
    ticket = await stack.create_ticket(seller, title="Opera", price=35)
    before = datetime.now(UTC)
    order = await stack.create_order(buyer, ticket["id"])

    assert order["status"] == "created"
    assert order["version"] == 0
    assert order["ticket"] == {"id": ticket["id"], "title": "Opera", "price": 35}
    expires = datetime.fromisoformat(order["expiresAt"])
    assert expires.tzinfo is not None
    assert abs((expires - before).total_seconds() - 900) < 5

    created = await stack.wait_for_messages("order:created", 1)
    assert len(created) == 1
    assert created[0].msg_id == f"order:created:{order['id']}:0"
    assert created[0].data == {
        "id": order["id"],
        "version": 0,
        "status": "created",
        "userId": order["userId"],
        "expiresAt": created[0].data["expiresAt"],
        "ticket": {"id": ticket["id"], "price": 35},
    }
    assert datetime.fromisoformat(created[0].data["expiresAt"].replace("Z", "+00:00")) == expires

    updated = await stack.wait_for_messages("ticket:updated", 1)
    assert [m.data["orderId"] for m in updated] == [order["id"]]
    assert updated[0].data["version"] == 1

    listed = (await stack.api.get("/api/tickets")).json()
    assert ticket["id"] not in [t["id"] for t in listed]
    shown = (await stack.api.get(f"/api/tickets/{ticket['id']}")).json()
    assert shown["orderId"] == order["id"]


async def test_order_validation_and_errors(stack: Stack) -> None:
    buyer = await stack.signup()
    r = await stack.api.post("/api/orders", json={"ticketId": "nope"}, headers=buyer)
    assert [e["field"] for e in assert_error(r, 400)] == ["ticketId"]
    r = await stack.api.post("/api/orders", json={}, headers=buyer)
    assert [e["field"] for e in assert_error(r, 400)] == ["ticketId"]
    assert_error(await stack.api.post("/api/orders", json={"ticketId": str(ObjectId())}, headers=buyer), 404)
    assert_error(await stack.api.post("/api/orders", json={"ticketId": str(ObjectId())}), 401)
    assert_error(await stack.api.get("/api/orders"), 401)
    assert_error(await stack.api.get(f"/api/orders/{ObjectId()}", headers=buyer), 404)
    assert_error(await stack.api.get("/api/orders/malformed", headers=buyer), 404)
    assert_error(await stack.api.delete(f"/api/orders/{ObjectId()}", headers=buyer), 404)


async def test_reserved_ticket_refused_and_orders_listed_newest_first(stack: Stack) -> None:
    seller, buyer, other = await stack.signup(), await stack.signup(), await stack.signup()
    t1 = await stack.create_ticket(seller, title="A")
    t2 = await stack.create_ticket(seller, title="B")
    o1 = await stack.create_order(buyer, t1["id"])
    o2 = await stack.create_order(buyer, t2["id"])

    r = await stack.api.post("/api/orders", json={"ticketId": t1["id"]}, headers=other)
    assert assert_error(r, 400) == [{"message": Refusal.TICKET_RESERVED, "field": None}]

    listed = (await stack.api.get("/api/orders", headers=buyer)).json()
    assert [o["id"] for o in listed] == [o2["id"], o1["id"]]
    assert listed[0]["ticket"]["title"] == "B"
    assert (await stack.api.get("/api/orders", headers=other)).json() == []
    assert_error(await stack.api.get(f"/api/orders/{o1['id']}", headers=other), 401)
    assert_error(await stack.api.delete(f"/api/orders/{o1['id']}", headers=other), 401)
    shown = await stack.api.get(f"/api/orders/{o1['id']}", headers=buyer)
    assert shown.status_code == 200
    assert shown.json()["id"] == o1["id"]


async def test_delete_twice_cancels_once_and_releases_ticket(stack: Stack) -> None:
    seller, buyer = await stack.signup(), await stack.signup()
    ticket = await stack.create_ticket(seller)
    order = await stack.create_order(buyer, ticket["id"])

    first, second = await asyncio.gather(
        stack.api.delete(f"/api/orders/{order['id']}", headers=buyer),
        stack.api.delete(f"/api/orders/{order['id']}", headers=buyer),
    )
    assert (first.status_code, second.status_code) == (204, 204)
    third = await stack.api.delete(f"/api/orders/{order['id']}", headers=buyer)
    assert third.status_code == 204

    shown = (await stack.api.get(f"/api/orders/{order['id']}", headers=buyer)).json()
    assert shown["status"] == "cancelled"
    assert shown["version"] == 1
    await stack.final_state(order["id"])
    cancelled = await stack.messages("order:cancelled")
    assert [(m.data, m.msg_id) for m in cancelled] == [
        ({"id": order["id"], "version": 1, "ticket": {"id": ticket["id"]}}, f"order:cancelled:{order['id']}:1")
    ]
    # A user cancellation is not an expiry.
    assert await stack.messages("expiration:complete") == []
    assert ticket["id"] in [t["id"] for t in (await stack.api.get("/api/tickets")).json()]
    released = [m.data for m in await stack.messages("ticket:updated")]
    assert released[-1] == {**released[-1], "orderId": None, "version": 2}


async def test_fifty_concurrent_orders_for_one_ticket(stack: Stack) -> None:
    seller = await stack.signup()
    buyers = [await stack.signup() for _ in range(5)]
    ticket = await stack.create_ticket(seller)
    responses = await asyncio.gather(
        *(stack.api.post("/api/orders", json={"ticketId": ticket["id"]}, headers=buyers[i % 5]) for i in range(50))
    )
    assert sorted(r.status_code for r in responses) == [201] + [400] * 49
    for r in responses:
        if r.status_code == 400:
            assert assert_error(r, 400) == [{"message": Refusal.TICKET_RESERVED, "field": None}]
    assert await Order.find(Order.ticket.id == ticket["id"]).count() == 1


async def test_reservation_guard_holds_without_the_api_precheck(stack: Stack) -> None:
    """Start 20 order workflows for one free ticket directly: the atomic reservation lets one win."""
    seller = await stack.signup()
    ticket = await stack.create_ticket(seller)
    expires = datetime.now(UTC) + timedelta(minutes=15)
    handles = await asyncio.gather(
        *(
            stack.temporal.start_workflow(
                OrderWorkflow.run,
                OrderInput(order_id=str(oid), user_id="u", ticket_id=ticket["id"], expires_at=expires),
                id=order_workflow_id(str(oid)),
                task_queue=stack.settings.temporal_task_queue,
            )
            for oid in (ObjectId() for _ in range(20))
        )
    )

    async def outcome(handle: WorkflowHandle[Any, OrderState]) -> OrderState:
        try:
            # (cast: the SDK's typing loses the return type of an Update declared with options)
            return cast(OrderState, await handle.execute_update(OrderWorkflow.reservation))
        except (RPCError, WorkflowUpdateFailedError):  # refused and closed before the Update answered
            return await handle.result()

    outcomes = await asyncio.gather(*(outcome(h) for h in handles))
    won = [o for o in outcomes if o.status is not None]
    lost = [o for o in outcomes if o.rejected_reason == "Ticket is already reserved"]
    assert len(won) == 1
    assert len(lost) == 19
    stored = await Ticket.get(ticket["id"])
    assert stored is not None
    assert stored.order_id == won[0].order_id
    assert await Order.find(Order.ticket.id == ticket["id"]).count() == 1


async def test_short_window_expires_and_is_listed_by_search_attribute(
    servers: Servers, stack_factory: Callable[..., Awaitable[Stack]]
) -> None:
    stack = await stack_factory(order_expiration_seconds=2)
    seller, buyer = await stack.signup(), await stack.signup()
    ticket = await stack.create_ticket(seller)
    order = await stack.create_order(buyer, ticket["id"])
    assert (await stack.final_state(order["id"], 30)).status == "cancelled"

    subjects = [m.subject for m in await stack.messages() if m.subject in ("expiration:complete", "order:cancelled")]
    assert subjects == ["expiration:complete", "order:cancelled"]
    expiration = (await stack.messages("expiration:complete"))[0]
    assert expiration.data == {"orderId": order["id"]}
    assert expiration.msg_id == f"expiration:complete:{order['id']}"

    # What an operator types to find expired orders (visibility is eventually consistent).
    query = f'OrderStatus="cancelled" AND TicketId="{ticket["id"]}"'
    cmd = [
        find_binary("temporal"),
        "workflow",
        "list",
        "--address",
        servers.temporal.url,
        "--query",
        query,
        "-o",
        "json",
    ]

    def listed() -> list[dict]:
        return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout or "[]")

    found = await eventually(listed, f"`temporal workflow list --query '{query}'` to list the order", 10)
    assert [w["execution"]["workflowId"] for w in found] == [order_workflow_id(order["id"])]
