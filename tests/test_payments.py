"""POST /api/payments against real servers: the order's workflow charges localstripe once."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from ticketing.documents import Charge, ChargeStatus
from ticketing.temporal import ORDER_STATUS

try:
    from .stripe_proxy import StripeProxy, custom_stack, local_stripe
except ImportError:  # tests/ is not a package
    from stripe_proxy import StripeProxy, custom_stack, local_stripe

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"


async def _order(stack, price: float = 20.5):
    seller = await stack.signup()
    buyer = await stack.signup()
    ticket = await stack.create_ticket(seller, price=price)
    order = await stack.create_order(buyer, ticket["id"])
    return buyer, order


async def _pay(stack, headers, order_id: str, token: str = VISA):
    return await stack.api.post("/api/payments", json={"orderId": order_id, "token": token}, headers=headers)


async def _status(stack, headers, order_id: str) -> dict:
    r = await stack.api.get(f"/api/orders/{order_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_payment_succeeds_once(stack):
    buyer, order = await _order(stack, price=20.5)
    r = await _pay(stack, buyer, order["id"])
    assert r.status_code == 201, r.text
    charge = r.json()
    assert set(charge) == {"id", "orderId", "stripeId", "amount", "currency"}
    assert charge["orderId"] == order["id"]
    assert charge["amount"] == 2050
    assert charge["currency"] == "usd"
    assert charge["stripeId"].startswith("pi_")

    stored = await Charge.find(Charge.order_id == order["id"]).to_list()
    assert len(stored) == 1
    assert str(stored[0].id) == charge["id"]
    assert (stored[0].stripe_id, stored[0].amount, stored[0].currency) == (charge["stripeId"], 2050, "usd")
    assert stored[0].status == ChargeStatus.SUCCEEDED

    shown = await _status(stack, buyer, order["id"])
    assert shown["status"] == "complete"
    assert shown["version"] == order["version"] + 1

    msgs = await stack.wait_for_messages("charge:created", 1)
    assert len(msgs) == 1
    assert msgs[0].data == {
        "id": charge["id"],
        "orderId": order["id"],
        "stripeId": charge["stripeId"],
        "amount": 2050,
        "currency": "usd",
    }
    assert msgs[0].msg_id == f"charge:created:{charge['id']}"

    async with local_stripe(stack.settings.stripe_api_base) as ls:
        pi = await ls.intent(charge["stripeId"])
        assert pi["status"] == "succeeded"
        assert pi["amount"] == 2050
        assert pi["metadata"]["orderId"] == order["id"]
        assert [p["id"] for p in await ls.intents_for_order(order["id"]) if p["status"] == "succeeded"] == [
            charge["stripeId"]
        ]

    handle = stack.temporal.get_workflow_handle(f"order-{order['id']}")
    await asyncio.wait_for(handle.result(), 30)  # a complete order's workflow ends
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(ORDER_STATUS) == "complete"
    assert (await desc.memo()).get("paymentIntentId") == charge["stripeId"]

    # a second payment is refused, and nothing more is charged
    again = await _pay(stack, buyer, order["id"])
    assert again.status_code == 400, again.text
    assert "paid" in again.json()["errors"][0]["message"]
    assert len(await Charge.find(Charge.order_id == order["id"]).to_list()) == 1
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert len(await ls.intents_for_order(order["id"])) == 1
    # ... and the order cannot be cancelled any more
    r = await stack.api.delete(f"/api/orders/{order['id']}", headers=buyer)
    assert r.status_code == 400, r.text
    assert await stack.messages("order:cancelled") == []


async def test_declined_card_then_good_card(stack):
    buyer, order = await _order(stack)
    r = await _pay(stack, buyer, order["id"], DECLINED)
    assert r.status_code == 402, r.text
    assert r.json()["errors"][0]["message"] == "Your card was declined."
    shown = await _status(stack, buyer, order["id"])
    assert (shown["status"], shown["version"]) == ("created", order["version"])
    assert await Charge.find(Charge.order_id == order["id"]).to_list() == []

    r = await _pay(stack, buyer, order["id"], VISA)
    assert r.status_code == 201, r.text
    assert (await _status(stack, buyer, order["id"]))["status"] == "complete"
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        statuses = sorted(pi["status"] for pi in await ls.intents_for_order(order["id"]))
    assert statuses == ["requires_payment_method", "succeeded"]
    assert len(await stack.wait_for_messages("charge:created", 1)) == 1


async def test_unknown_payment_method_is_a_bad_request(stack):
    buyer, order = await _order(stack)
    r = await _pay(stack, buyer, order["id"], "pm_does_not_exist")
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == "token"
    assert (await _status(stack, buyer, order["id"]))["status"] == "created"


async def test_cancelled_order_cannot_be_paid(stack):
    buyer, order = await _order(stack)
    r = await stack.api.delete(f"/api/orders/{order['id']}", headers=buyer)
    assert r.status_code == 204, r.text
    r = await _pay(stack, buyer, order["id"])
    assert r.status_code == 400, r.text
    assert "cancelled" in r.json()["errors"][0]["message"]
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert await ls.intents_for_order(order["id"]) == []


async def test_only_the_owner_pays_and_only_known_orders(stack):
    buyer, order = await _order(stack)
    stranger = await stack.signup()
    r = await _pay(stack, stranger, order["id"])
    assert r.status_code == 401, r.text
    r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": VISA})
    assert r.status_code == 401, r.text

    r = await _pay(stack, buyer, "0123456789abcdef01234567")
    assert r.status_code == 404, r.text
    r = await _pay(stack, buyer, "not-an-id")
    assert r.status_code == 404, r.text
    assert (await _status(stack, buyer, order["id"]))["status"] == "created"


async def test_payment_body_is_validated(stack):
    buyer, order = await _order(stack)
    r = await stack.api.post("/api/payments", json={}, headers=buyer)
    assert r.status_code == 400, r.text
    assert {e["field"] for e in r.json()["errors"]} == {"orderId", "token"}

    r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": "  "}, headers=buyer)
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["token"]

    r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": VISA, "amount": 1}, headers=buyer)
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["amount"]
    assert (await _status(stack, buyer, order["id"]))["status"] == "created"


async def test_expired_order_cannot_be_paid(servers):
    async with custom_stack(servers, order_expiration_seconds=2) as stack:
        buyer, order = await _order(stack)
        await stack.wait_for_messages("order:cancelled", 1, timeout=20)
        r = await _pay(stack, buyer, order["id"])
        assert r.status_code == 400, r.text
        assert (await _status(stack, buyer, order["id"]))["status"] == "cancelled"
        async with local_stripe(stack.settings.stripe_api_base) as ls:
            assert await ls.intents_for_order(order["id"]) == []


async def test_paid_order_is_never_cancelled_by_expiry(servers):
    async with custom_stack(servers, order_expiration_seconds=3) as stack:
        buyer, order = await _order(stack)
        r = await _pay(stack, buyer, order["id"])
        assert r.status_code == 201, r.text
        expires_at = datetime.fromisoformat(order["expiresAt"].replace("Z", "+00:00"))
        await asyncio.sleep(max(0.0, (expires_at - datetime.now(expires_at.tzinfo)).total_seconds()) + 2)
        shown = await _status(stack, buyer, order["id"])
        assert (shown["status"], shown["version"]) == ("complete", order["version"] + 1)
        subjects = [m.subject for m in await stack.messages()]
        assert "order:cancelled" not in subjects
        assert "expiration:complete" not in subjects
        assert subjects.count("charge:created") == 1
        # the ticket stays with the order
        r = await stack.api.get(f"/api/tickets/{order['ticket']['id']}")
        assert r.json()["orderId"] == order["id"]


async def test_lost_confirm_reply_is_retried_without_a_second_charge(servers):
    """localstripe applies the first confirm, but its reply never reaches the activity: Temporal
    retries the activity, which finds the PaymentIntent already succeeded and charges nothing more."""
    stripe = servers.stripe
    proxy = await StripeProxy("127.0.0.1", stripe.port).start()
    try:
        async with custom_stack(servers, stripe_api_base=proxy.url) as stack:
            buyer, order = await _order(stack)
            r = await _pay(stack, buyer, order["id"])
            assert r.status_code == 201, r.text
            charge = r.json()

            assert len(proxy.dropped) == 1, proxy.seen
            assert proxy.created_intents == [charge["stripeId"]]  # one create, its reply kept
            calls = proxy.intent_calls(charge["stripeId"])
            confirms = [c for c in calls if c.path.endswith("/confirm")]
            assert len(confirms) == 1
            assert confirms[0].status is None
            assert len(calls) >= 2  # the retry asked Stripe again (retrieve) before confirming
            assert calls[-1].method == "GET"
            assert calls[-1].status == 200

            async with local_stripe(stack.settings.stripe_api_base) as ls:
                intents = await ls.intents_for_order(order["id"])
            assert [(pi["id"], pi["status"]) for pi in intents] == [(charge["stripeId"], "succeeded")]
            assert len(await Charge.find(Charge.order_id == order["id"]).to_list()) == 1
            assert (await _status(stack, buyer, order["id"]))["status"] == "complete"
            assert len(await stack.wait_for_messages("charge:created", 1)) == 1

            # the activity really failed once and was retried by Temporal
            handle = stack.temporal.get_workflow_handle(f"order-{order['id']}")
            history = await handle.fetch_history()
            retried = [m["attempt"] for m in local_activity_markers(history) if m["activity_type"] == "charge_order"]
            assert retried, retried
            assert max(retried) >= 2, retried
    finally:
        await proxy.stop()


async def test_lost_create_reply_never_charges_twice(servers):
    """The create's reply is lost. localstripe ignores Idempotency-Key, so the retried activity
    makes a second PaymentIntent; only the one the workflow recorded is ever confirmed."""
    proxy = await StripeProxy("127.0.0.1", servers.stripe.port, drop_first="create").start()
    try:
        async with custom_stack(servers, stripe_api_base=proxy.url) as stack:
            buyer, order = await _order(stack)
            r = await _pay(stack, buyer, order["id"])
            assert r.status_code == 201, r.text
            charge = r.json()
            assert len(proxy.dropped) == 1, proxy.seen
            assert len(proxy.created_intents) == 2, proxy.seen
            assert charge["stripeId"] == proxy.created_intents[1]
            async with local_stripe(stack.settings.stripe_api_base) as ls:
                statuses = {pi["id"]: pi["status"] for pi in await ls.intents_for_order(order["id"])}
            assert statuses == {proxy.created_intents[0]: "requires_confirmation", charge["stripeId"]: "succeeded"}
            assert [c.path for c in proxy.seen if c.path.endswith("/confirm")] == [
                f"/v1/payment_intents/{charge['stripeId']}/confirm"
            ]
    finally:
        await proxy.stop()


def local_activity_markers(history: Any) -> list[dict[str, Any]]:
    """What sdk-core records of each local activity (type, attempt...) in its MarkerRecorded event."""
    found = []
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and marker.marker_name == "core_local_activity":
            found.append(json.loads(marker.details["data"].payloads[0].data))
    return found


async def test_card_tokens_are_accepted(stack):
    """A `tok_…` card token (Stripe.js createToken, the course's flow) pays like a PaymentMethod;
    localstripe has no `tok_visa` test token, so the test makes one at its /v1/tokens."""
    buyer, order = await _order(stack)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        declined = await ls.card_token("4000000000000341")
        r = await _pay(stack, buyer, order["id"], declined)
        assert r.status_code == 402, r.text
        assert r.json()["errors"][0]["message"] == "Your card was declined."
        assert (await _status(stack, buyer, order["id"]))["status"] == "created"

        token = await ls.card_token()
        r = await _pay(stack, buyer, order["id"], token)
        assert r.status_code == 201, r.text
        charge = r.json()
        assert charge["amount"] == 2050
        assert (await ls.intent(charge["stripeId"]))["status"] == "succeeded"
    assert (await _status(stack, buyer, order["id"]))["status"] == "complete"
    assert len(await stack.wait_for_messages("charge:created", 1)) == 1


async def test_a_three_d_secure_card_token_asks_for_authentication(stack):
    buyer, order = await _order(stack)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        r = await _pay(stack, buyer, order["id"], await ls.card_token("4000002760003184"))
        assert r.status_code == 202, r.text
        assert r.json()["clientSecret"].startswith(r.json()["paymentIntentId"])


async def test_anything_but_a_payment_method_or_card_token_is_refused(stack):
    buyer, order = await _order(stack)
    for token in ("4242424242424242", "src_123", "card_123", "pi_123", "tok visa", "pm_", "sk_test_123"):
        r = await _pay(stack, buyer, order["id"], token)
        assert r.status_code == 400, (token, r.text)
        errors = r.json()["errors"]
        assert [e["field"] for e in errors] == ["token"], errors
        assert "pm_" in errors[0]["message"], errors
        assert "tok_" in errors[0]["message"], errors
        assert token == "pm_" or token not in r.text  # never echoed (it may be a card number)
    # a well-formed token Stripe does not know (localstripe has no tok_visa): 400 on the token too
    r = await _pay(stack, buyer, order["id"], "tok_visa")
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == "token"
    assert (await _status(stack, buyer, order["id"]))["status"] == "created"
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert await ls.intents_for_order(order["id"]) == []
