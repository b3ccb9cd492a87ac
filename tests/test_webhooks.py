"""3-D Secure payments finish by Stripe webhook (POST /api/payments/webhook), signed with
STRIPE_WEBHOOK_SECRET. localstripe sends no webhooks: the tests build and sign the events."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError, RPCStatusCode

from ticketing.documents import Charge
from ticketing.temporal import refund_workflow_id

from .conftest import Stack, assert_error
from .stripe_proxy import deliver, intent_event, local_stripe, send_webhook, sign, start_three_d_secure


async def test_three_d_secure_payment_completes_by_webhook_once(stack: Stack) -> None:
    buyer, order = await stack.place_order(price=20.5)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        action = await start_three_d_secure(stack, ls, buyer, order["id"])
        intent_id = action["paymentIntentId"]

        shown = await stack.show_order(buyer, order["id"])
        assert (shown["status"], shown["version"]) == ("awaiting:payment", order["version"] + 1)
        assert await stack.messages("charge:created") == []
        assert (await ls.intent(intent_id))["status"] == "requires_action"

        # while 3-D Secure is pending, the webhook for another event type changes nothing
        await deliver(stack, intent_event(await ls.intent(intent_id), "payment_intent.created"))

        succeeded = await ls.authenticate(intent_id, action["clientSecret"])
        assert succeeded["status"] == "succeeded"
        assert succeeded["metadata"]["orderId"] == order["id"]

    payload = intent_event(succeeded)
    await deliver(stack, payload)

    shown = await stack.wait_for_order_status(buyer, order["id"], "complete")
    assert shown["version"] == order["version"] + 2
    msgs = await stack.wait_for_messages("charge:created", 1)
    assert len(msgs) == 1
    assert msgs[0].data["stripeId"] == intent_id
    assert msgs[0].data["amount"] == 2050
    charges = await Charge.find(Charge.order_id == order["id"]).to_list()
    assert [(c.stripe_id, c.status.value) for c in charges] == [(intent_id, "succeeded")]

    # Stripe delivers the same event again (after the workflow closed). The API decides before it
    # answers: the order kept this payment, so no refund workflow is started.
    await stack.final_state(order["id"])
    await deliver(stack, payload)
    with pytest.raises(RPCError) as missing:
        await stack.temporal.get_workflow_handle(refund_workflow_id(intent_id)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    assert len(await stack.messages("charge:created")) == 1
    charges = await Charge.find(Charge.order_id == order["id"]).to_list()
    assert [(c.stripe_id, c.status.value, c.refund_id) for c in charges] == [(intent_id, "succeeded", None)]
    shown = await stack.show_order(buyer, order["id"])
    assert (shown["status"], shown["version"]) == ("complete", order["version"] + 2)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert await ls.refunds_for(intent_id) == []


async def test_same_event_twice_while_the_workflow_runs(stack: Stack) -> None:
    """Both deliveries reach the running workflow as signals: one charge."""
    buyer, order = await stack.place_order(price=20.5)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        action = await start_three_d_secure(stack, ls, buyer, order["id"])
        succeeded = await ls.authenticate(action["paymentIntentId"], action["clientSecret"])
    payload = intent_event(succeeded)
    await asyncio.gather(deliver(stack, payload), deliver(stack, payload))
    await stack.wait_for_order_status(buyer, order["id"], "complete")
    await stack.final_state(order["id"], 30)
    assert len(await stack.messages("charge:created")) == 1
    assert len(await Charge.find(Charge.order_id == order["id"]).to_list()) == 1


async def test_failed_three_d_secure_leaves_the_order_payable(stack: Stack) -> None:
    buyer, order = await stack.place_order(price=20.5)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        action = await start_three_d_secure(stack, ls, buyer, order["id"])
        failed = await ls.authenticate(action["paymentIntentId"], action["clientSecret"], success=False)
        assert failed["status"] == "requires_payment_method"
    await deliver(stack, intent_event(failed, "payment_intent.payment_failed"))

    charge = await stack.charge(buyer, order["id"])
    assert charge["stripeId"] != action["paymentIntentId"]
    assert (await stack.show_order(buyer, order["id"]))["status"] == "complete"
    assert len(await stack.wait_for_messages("charge:created", 1)) == 1


async def test_signature_is_required(stack: Stack) -> None:
    buyer, order = await stack.place_order(price=20.5)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        intent = await ls.paid_intent(order["id"], 2050)
    payload = intent_event(intent)

    forged = sign(payload, "whsec_someone_else")
    for signature in (forged, None, "", "t=1,v1=deadbeef", sign(payload, stack.settings.stripe_webhook_secret, 1)):
        r = await send_webhook(stack, payload, signature)
        assert_error(r, 400, message="Invalid Stripe signature")
    # a correctly signed but tampered body
    tampered = payload.replace(b'"amount": 2050', b'"amount": 1')
    assert tampered != payload
    r = await send_webhook(stack, tampered, sign(payload, stack.settings.stripe_webhook_secret))
    assert_error(r, 400, message="Invalid Stripe signature")

    # None of them reached the workflow: a signal is in its history before the API answers, and
    # there is none. The order still waits for its payment.
    history = await stack.order_handle(order["id"]).fetch_history()
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED not in [e.event_type for e in history.events]
    shown = await stack.show_order(buyer, order["id"])
    assert (shown["status"], shown["version"]) == ("created", order["version"])
    assert await Charge.find(Charge.order_id == order["id"]).to_list() == []
