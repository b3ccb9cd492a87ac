"""3-D Secure payments finish by Stripe webhook (POST /api/payments/webhook), signed with
STRIPE_WEBHOOK_SECRET. localstripe sends no webhooks: the tests build and sign the events."""

from __future__ import annotations

import asyncio

from ticketing.documents import Charge

try:
    from .stripe_proxy import intent_event, local_stripe, send_webhook, sign
except ImportError:  # tests/ is not a package
    from stripe_proxy import intent_event, local_stripe, send_webhook, sign


async def _order(stack):
    seller = await stack.signup()
    buyer = await stack.signup()
    ticket = await stack.create_ticket(seller, price=20.5)
    return buyer, await stack.create_order(buyer, ticket["id"])


async def _show(stack, headers, order_id):
    r = await stack.api.get(f"/api/orders/{order_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def _wait_status(stack, headers, order_id, status, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        shown = await _show(stack, headers, order_id)
        if shown["status"] == status or asyncio.get_running_loop().time() > deadline:
            return shown
        await asyncio.sleep(0.2)


async def test_three_d_secure_payment_completes_by_webhook_once(stack):
    buyer, order = await _order(stack)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        card = await ls.three_d_secure_card()
        r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": card}, headers=buyer)
        assert r.status_code == 202, r.text
        action = r.json()
        assert action["status"] == "requires_action"
        intent_id = action["paymentIntentId"]
        assert action["clientSecret"].startswith(f"{intent_id}_secret_")

        shown = await _show(stack, buyer, order["id"])
        assert (shown["status"], shown["version"]) == ("awaiting:payment", order["version"] + 1)
        assert await stack.messages("charge:created") == []
        assert (await ls.intent(intent_id))["status"] == "requires_action"

        # while 3-D Secure is pending, the webhook for another event type changes nothing
        pending = await ls.intent(intent_id)
        payload = intent_event(pending, "payment_intent.created")
        r = await send_webhook(stack, payload, sign(payload, stack.settings.stripe_webhook_secret))
        assert r.status_code == 200, r.text

        succeeded = await ls.authenticate(intent_id, action["clientSecret"])
        assert succeeded["status"] == "succeeded"
        assert succeeded["metadata"]["orderId"] == order["id"]

    payload = intent_event(succeeded)
    r = await send_webhook(stack, payload, sign(payload, stack.settings.stripe_webhook_secret))
    assert r.status_code == 200, r.text

    shown = await _wait_status(stack, buyer, order["id"], "complete")
    assert (shown["status"], shown["version"]) == ("complete", order["version"] + 2)
    msgs = await stack.wait_for_messages("charge:created", 1)
    assert len(msgs) == 1
    assert msgs[0].data["stripeId"] == intent_id
    assert msgs[0].data["amount"] == 2050
    charges = await Charge.find(Charge.order_id == order["id"]).to_list()
    assert [(c.stripe_id, c.status.value) for c in charges] == [(intent_id, "succeeded")]

    # Stripe delivers the same event again (after the workflow closed): no second effect
    handle = stack.temporal.get_workflow_handle(f"order-{order['id']}")
    await asyncio.wait_for(handle.result(), 30)
    r = await send_webhook(stack, payload, sign(payload, stack.settings.stripe_webhook_secret))
    assert r.status_code == 200, r.text
    await asyncio.sleep(2)  # a wrongly started refund workflow would have run by now
    assert len(await stack.messages("charge:created")) == 1
    charges = await Charge.find(Charge.order_id == order["id"]).to_list()
    assert [(c.stripe_id, c.status.value, c.refund_id) for c in charges] == [(intent_id, "succeeded", None)]
    shown = await _show(stack, buyer, order["id"])
    assert (shown["status"], shown["version"]) == ("complete", order["version"] + 2)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert await ls.refunds_for(intent_id) == []


async def test_same_event_twice_while_the_workflow_runs(stack):
    """Both deliveries reach the running workflow as signals: one charge."""
    buyer, order = await _order(stack)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        card = await ls.three_d_secure_card()
        r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": card}, headers=buyer)
        assert r.status_code == 202, r.text
        action = r.json()
        succeeded = await ls.authenticate(action["paymentIntentId"], action["clientSecret"])
    payload = intent_event(succeeded)
    secret = stack.settings.stripe_webhook_secret
    first, second = await asyncio.gather(
        send_webhook(stack, payload, sign(payload, secret)), send_webhook(stack, payload, sign(payload, secret))
    )
    assert (first.status_code, second.status_code) == (200, 200)
    assert (await _wait_status(stack, buyer, order["id"], "complete"))["status"] == "complete"
    await asyncio.wait_for(stack.temporal.get_workflow_handle(f"order-{order['id']}").result(), 30)
    assert len(await stack.messages("charge:created")) == 1
    assert len(await Charge.find(Charge.order_id == order["id"]).to_list()) == 1


async def test_failed_three_d_secure_leaves_the_order_payable(stack):
    buyer, order = await _order(stack)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        card = await ls.three_d_secure_card()
        r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": card}, headers=buyer)
        assert r.status_code == 202, r.text
        action = r.json()
        failed = await ls.authenticate(action["paymentIntentId"], action["clientSecret"], success=False)
        assert failed["status"] == "requires_payment_method"
    payload = intent_event(failed, "payment_intent.payment_failed")
    r = await send_webhook(stack, payload, sign(payload, stack.settings.stripe_webhook_secret))
    assert r.status_code == 200, r.text

    r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}, headers=buyer)
    assert r.status_code == 201, r.text
    assert r.json()["stripeId"] != action["paymentIntentId"]
    assert (await _show(stack, buyer, order["id"]))["status"] == "complete"
    assert len(await stack.wait_for_messages("charge:created", 1)) == 1


async def test_signature_is_required(stack):
    buyer, order = await _order(stack)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        intent = await ls.paid_intent(order["id"], 2050)
    payload = intent_event(intent)

    forged = sign(payload, "whsec_someone_else")
    for signature in (forged, None, "", "t=1,v1=deadbeef", sign(payload, stack.settings.stripe_webhook_secret, 1)):
        r = await send_webhook(stack, payload, signature)
        assert r.status_code == 400, (signature, r.text)
        assert r.json()["errors"][0]["message"]
    # a correctly signed but tampered body
    tampered = payload.replace(b'"amount": 2050', b'"amount": 1')
    assert tampered != payload
    r = await send_webhook(stack, tampered, sign(payload, stack.settings.stripe_webhook_secret))
    assert r.status_code == 400, r.text

    # none of them reached the workflow: the order still waits for its payment
    await asyncio.sleep(1)
    shown = await _show(stack, buyer, order["id"])
    assert (shown["status"], shown["version"]) == ("created", order["version"])
    assert await Charge.find(Charge.order_id == order["id"]).to_list() == []
