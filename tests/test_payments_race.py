"""Payment racing expiry and late confirmations: an order ends complete xor cancelled, every kept
charge is a succeeded PaymentIntent, and a payment that succeeds for a closed order is refunded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from temporalio.client import WorkflowExecutionStatus

from ticketing.documents import Charge, ChargeStatus, Order, OrderStatus, Ticket
from ticketing.temporal import refund_workflow_id

from .conftest import Servers, Stack, eventually, run_stack
from .stripe_proxy import CONFIRM, deliver, intent_event, local_stripe, start_three_d_secure, stripe_proxy

ORDERS = 20


def _expires_at(order: dict) -> datetime:
    return datetime.fromisoformat(order["expiresAt"].replace("Z", "+00:00"))


async def test_payments_at_expiry_end_complete_xor_cancelled(servers: Servers) -> None:
    async with run_stack(servers, order_expiration_seconds=3) as stack:
        seller = await stack.signup()
        buyer = await stack.signup()
        tickets = [await stack.create_ticket(seller, title=f"Seat {i}", price=10 + i) for i in range(ORDERS)]
        # one after the other, so the orders' expiry instants (and their payments) are spread out
        orders = [await stack.create_order(buyer, t["id"]) for t in tickets]

        # a few clearly in time, then from 50 ms before expiresAt to 40 ms after it, 6 ms apart
        offsets = [-0.3, -0.2, -0.1, *((i - 8) * 0.006 for i in range(ORDERS - 3))]

        async def pay_at(order: dict, offset: float) -> httpx.Response:
            delay = (_expires_at(order) - datetime.now(UTC)).total_seconds() + offset
            await asyncio.sleep(max(0.0, delay))
            return await stack.pay(buyer, order["id"])

        responses = await asyncio.gather(*(pay_at(o, off) for o, off in zip(orders, offsets, strict=True)))
        assert {r.status_code for r in responses} <= {201, 400}, [(r.status_code, r.text) for r in responses]

        results = await asyncio.gather(*(stack.final_state(o["id"]) for o in orders))
        charge_msgs = {m.data["orderId"] for m in await stack.messages("charge:created")}
        cancel_msgs = {m.data["id"] for m in await stack.messages("order:cancelled")}
        completed = []
        async with local_stripe(stack.settings.stripe_api_base) as ls:
            for order, response, result in zip(orders, responses, results, strict=True):
                oid = order["id"]
                stored = await Order.get(oid)
                assert stored is not None
                assert result.status == stored.status
                assert result.status in (OrderStatus.COMPLETE, OrderStatus.CANCELLED), result
                succeeded = [pi for pi in await ls.intents_for_order(oid) if pi["status"] == "succeeded"]
                charges = await Charge.find(Charge.order_id == oid).to_list()
                if result.status == OrderStatus.COMPLETE:
                    completed.append(oid)
                    assert response.status_code == 201, response.text
                    charge = response.json()
                    assert [pi["id"] for pi in succeeded] == [charge["stripeId"]]
                    assert [(c.stripe_id, c.status) for c in charges] == [(charge["stripeId"], ChargeStatus.SUCCEEDED)]
                    assert stored.payment_intent_id == charge["stripeId"]
                    assert stored.version == order["version"] + 1
                    assert oid in charge_msgs
                    assert oid not in cancel_msgs
                else:
                    assert response.status_code == 400, response.text
                    assert succeeded == []
                    assert charges == []
                    assert oid in cancel_msgs
                    assert oid not in charge_msgs
                for pi in succeeded:
                    assert await ls.refunds_for(pi["id"]) == []

        # the window really was raced: both outcomes happened, and the charged ones were paid in time
        assert 0 < len(completed) < ORDERS, [r.status_code for r in responses]
        assert len(charge_msgs) == len(completed)
        assert await Charge.find(Charge.status == ChargeStatus.REFUNDED).to_list() == []


async def test_pending_three_d_secure_is_cancelled_with_the_order(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        action = await start_three_d_secure(stack, ls, buyer, order["id"])
        intent_id = action["paymentIntentId"]

        r = await stack.api.delete(f"/api/orders/{order['id']}", headers=buyer)
        assert r.status_code == 204, r.text
        assert (await ls.intent(intent_id))["status"] == "canceled"
        # the buyer can no longer complete 3-D Secure for it
        late = await ls.http.post(
            f"/v1/payment_intents/{intent_id}/_authenticate",
            data={"client_secret": action["clientSecret"], "success": "true"},
        )
        assert late.status_code == 400, late.text

    assert (await stack.final_state(order["id"])).status == OrderStatus.CANCELLED
    assert (await stack.show_order(buyer, order["id"]))["status"] == "cancelled"
    assert await stack.messages("charge:created") == []
    assert len(await stack.messages("order:cancelled")) == 1
    assert await Charge.find(Charge.order_id == order["id"]).to_list() == []


async def test_late_confirmation_for_a_cancelled_order_is_refunded_once(stack: Stack) -> None:
    buyer, order = await stack.place_order(price=20.5)
    r = await stack.api.delete(f"/api/orders/{order['id']}", headers=buyer)
    assert r.status_code == 204, r.text
    await stack.final_state(order["id"])

    async with local_stripe(stack.settings.stripe_api_base) as ls:
        intent = await ls.paid_intent(order["id"], 2050)  # it succeeded at Stripe after all
        assert intent["status"] == "succeeded"
        payload = intent_event(intent)
        await deliver(stack, payload)

        async def refunded() -> list[Charge] | None:
            charges = await Charge.find(Charge.stripe_id == intent["id"]).to_list()
            return charges if charges and charges[0].status == ChargeStatus.REFUNDED else None

        charges = await eventually(refunded, "the late payment's refund")
        refunds = await ls.refunds_for(intent["id"])
        assert [(x["id"], x["amount"], x["status"]) for x in refunds] == [(charges[0].refund_id, 2050, "succeeded")]
        assert (charges[0].order_id, charges[0].amount, charges[0].currency) == (order["id"], 2050, "usd")
        refund = stack.temporal.get_workflow_handle(refund_workflow_id(intent["id"]))
        first_run = await refund.describe()
        assert first_run.status == WorkflowExecutionStatus.COMPLETED

        # Stripe delivers the event again: the API looks at the order before it answers, and starts
        # no second refund (the refund workflow is still the first run): still one refund.
        await deliver(stack, payload)
        assert (await refund.describe()).run_id == first_run.run_id
        assert len(await ls.refunds_for(intent["id"])) == 1
        assert len(await Charge.find(Charge.order_id == order["id"]).to_list()) == 1

    assert (await stack.show_order(buyer, order["id"]))["status"] == "cancelled"
    assert await stack.messages("charge:created") == []


async def test_other_confirmed_payment_is_refunded_when_the_order_is_paid(stack: Stack) -> None:
    """A PaymentIntent for the order succeeds at Stripe (webhook while the workflow runs), then the
    buyer pays normally: the order keeps one payment and the other one is given back."""
    buyer, order = await stack.place_order(price=20.5)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        other = await ls.paid_intent(order["id"], 2050)
        await deliver(stack, intent_event(other))

        kept = (await stack.charge(buyer, order["id"]))["stripeId"]
        assert (await stack.final_state(order["id"])).status == OrderStatus.COMPLETE

        assert await ls.refunds_for(kept) == []
        assert [x["amount"] for x in await ls.refunds_for(other["id"])] == [2050]
        charges = {c.stripe_id: c.status for c in await Charge.find(Charge.order_id == order["id"]).to_list()}
        assert charges == {kept: ChargeStatus.SUCCEEDED, other["id"]: ChargeStatus.REFUNDED}
    assert len(await stack.messages("charge:created")) == 1


async def test_paying_while_three_d_secure_is_pending_cancels_the_pending_intent(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        pending = (await start_three_d_secure(stack, ls, buyer, order["id"]))["paymentIntentId"]
        await stack.charge(buyer, order["id"])
        assert (await stack.final_state(order["id"])).status == OrderStatus.COMPLETE
        # the abandoned 3-D Secure payment can no longer take the buyer's money
        assert (await ls.intent(pending))["status"] == "canceled"
        statuses = sorted(pi["status"] for pi in await ls.intents_for_order(order["id"]))
        assert statuses == ["canceled", "succeeded"]


async def test_three_d_secure_confirmed_while_another_payment_is_charging(servers: Servers) -> None:
    """3-D Secure completes (webhook) while a second payment's confirm is in flight: the workflow
    waits for the charge, keeps one payment, refunds the other and ends."""
    async with (
        stripe_proxy(servers.stripe, drop_first=None) as proxy,
        run_stack(servers, stripe_api_base=proxy.url) as stack,
        local_stripe(f"http://{servers.stripe.url}") as ls,
    ):
        buyer, order = await stack.place_order(price=20.5)
        action = await start_three_d_secure(stack, ls, buyer, order["id"])
        first = await ls.authenticate(action["paymentIntentId"], action["clientSecret"])
        assert first["status"] == "succeeded"

        proxy.confirm_delay = 2.0
        paying = asyncio.create_task(stack.pay(buyer, order["id"]))
        await eventually(lambda: proxy.held, "the second payment's confirm to reach Stripe")
        await deliver(stack, intent_event(first))
        second = await paying
        assert second.status_code == 201, second.text
        kept = second.json()["stripeId"]

        assert (await stack.final_state(order["id"])).status == OrderStatus.COMPLETE
        succeeded = {pi["id"] for pi in await ls.intents_for_order(order["id"]) if pi["status"] == "succeeded"}
        assert succeeded == {kept, first["id"]}
        assert await ls.refunds_for(kept) == []
        assert len(await ls.refunds_for(first["id"])) == 1
        charges = {c.stripe_id: c.status for c in await Charge.find(Charge.order_id == order["id"]).to_list()}
        assert charges == {kept: ChargeStatus.SUCCEEDED, first["id"]: ChargeStatus.REFUNDED}
        assert len(await stack.messages("charge:created")) == 1


async def test_webhook_for_the_intent_being_charged_keeps_the_payment(servers: Servers) -> None:
    """Stripe's payment_intent.succeeded for the very intent the pay Update is confirming arrives
    before the charge returns: the signal lands while the task that completes the order runs. The
    buyer gets the charge (201), the order ends complete and keeps its ticket, charged once."""
    async with (
        stripe_proxy(servers.stripe, drop_first=None, confirm_delay=2.0) as proxy,
        run_stack(servers, stripe_api_base=proxy.url) as stack,
        local_stripe(f"http://{servers.stripe.url}") as ls,
    ):
        buyer, order = await stack.place_order(price=20.5)
        paying = asyncio.create_task(stack.pay(buyer, order["id"]))
        await eventually(lambda: proxy.held, "the payment's confirm to reach Stripe")
        match = CONFIRM.match(proxy.held[0])
        assert match is not None
        intent = await ls.intent(match.group(1))
        await deliver(stack, intent_event({**intent, "status": "succeeded"}))
        paid = await paying
        assert paid.status_code == 201, paid.text

        assert (await stack.final_state(order["id"])).status == OrderStatus.COMPLETE
        stored = await Order.get(order["id"])
        assert stored is not None
        assert (stored.status, stored.payment_intent_id) == (OrderStatus.COMPLETE, intent["id"])
        ticket = await Ticket.get(order["ticket"]["id"])
        assert ticket is not None
        assert ticket.order_id == order["id"]  # still the buyer's
        charges = await Charge.find(Charge.order_id == order["id"]).to_list()
        assert [(c.stripe_id, c.status) for c in charges] == [(intent["id"], ChargeStatus.SUCCEEDED)]
        assert await ls.refunds_for(intent["id"]) == []
        assert len(await stack.messages("charge:created")) == 1


async def test_expiry_leaves_the_ticket_held_when_the_order_moved_on_without_the_workflow(servers: Servers) -> None:
    """Had a paid order's Update been lost (the store says complete, the workflow still `created`),
    the expiry's versioned order change conflicts first: the workflow fails loudly and the ticket is
    not released under a paid order (it could be sold twice)."""
    async with run_stack(servers, order_expiration_seconds=3) as stack:
        _, order = await stack.place_order()
        stored = await Order.get(order["id"])
        assert stored is not None
        # what a charge whose Update the server aborted leaves in MongoDB
        await stored.set({Order.status: OrderStatus.COMPLETE, Order.version: stored.version + 1})

        async def failed() -> bool:
            desc = await stack.order_handle(order["id"]).describe()
            return desc.status == WorkflowExecutionStatus.FAILED

        await eventually(failed, "the order's workflow to fail on the expiry's conflict", timeout=30)
        ticket = await Ticket.get(order["ticket"]["id"])
        assert ticket is not None
        assert ticket.order_id == order["id"]
        assert (await stack.messages("order:cancelled")) == []
