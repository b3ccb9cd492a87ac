"""POST /api/payments against real servers: the order's workflow charges localstripe once."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from ticketing.documents import Charge, ChargeStatus
from ticketing.payloads import Refusal
from ticketing.temporal import ORDER_STATUS

from .conftest import Servers, Stack, assert_error, run_stack
from .stripe_proxy import local_stripe, stripe_proxy

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"


async def test_payment_succeeds_once(stack: Stack) -> None:
    buyer, order = await stack.place_order(price=20.5)
    charge = await stack.charge(buyer, order["id"])
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

    shown = await stack.show_order(buyer, order["id"])
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

    assert (await stack.final_state(order["id"])).status == "complete"  # a complete order's workflow ends
    desc = await stack.order_handle(order["id"]).describe()
    assert desc.typed_search_attributes.get(ORDER_STATUS) == "complete"
    assert (await desc.memo()).get("paymentIntentId") == charge["stripeId"]

    # a second payment is refused, and nothing more is charged
    assert_error(await stack.pay(buyer, order["id"]), 400, message=Refusal.PAID)
    assert len(await Charge.find(Charge.order_id == order["id"]).to_list()) == 1
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert len(await ls.intents_for_order(order["id"])) == 1
    # ... and the order cannot be cancelled any more
    r = await stack.api.delete(f"/api/orders/{order['id']}", headers=buyer)
    assert_error(r, 400, message=Refusal.COMPLETE)
    assert await stack.messages("order:cancelled") == []


async def test_declined_card_then_good_card(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    r = await stack.pay(buyer, order["id"], DECLINED)
    assert assert_error(r, 402) == [{"message": "Your card was declined.", "field": None}]
    shown = await stack.show_order(buyer, order["id"])
    assert (shown["status"], shown["version"]) == ("created", order["version"])
    assert await Charge.find(Charge.order_id == order["id"]).to_list() == []

    await stack.charge(buyer, order["id"], VISA)
    assert (await stack.show_order(buyer, order["id"]))["status"] == "complete"
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        statuses = sorted(pi["status"] for pi in await ls.intents_for_order(order["id"]))
    assert statuses == ["requires_payment_method", "succeeded"]
    assert len(await stack.wait_for_messages("charge:created", 1)) == 1


async def test_unknown_payment_method_is_a_bad_request(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    r = await stack.pay(buyer, order["id"], "pm_does_not_exist")
    assert [e["field"] for e in assert_error(r, 400)] == ["token"]
    assert (await stack.show_order(buyer, order["id"]))["status"] == "created"


async def test_cancelled_order_cannot_be_paid(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    r = await stack.api.delete(f"/api/orders/{order['id']}", headers=buyer)
    assert r.status_code == 204, r.text
    assert_error(await stack.pay(buyer, order["id"]), 400, message=Refusal.CANCELLED)
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert await ls.intents_for_order(order["id"]) == []


async def test_only_the_owner_pays_and_only_known_orders(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    stranger = await stack.signup()
    assert_error(await stack.pay(stranger, order["id"]), 401)
    assert_error(await stack.pay({}, order["id"]), 401)
    assert_error(await stack.pay(buyer, "0123456789abcdef01234567"), 404)
    assert_error(await stack.pay(buyer, "not-an-id"), 404)
    assert (await stack.show_order(buyer, order["id"]))["status"] == "created"


async def test_payment_body_is_validated(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    r = await stack.api.post("/api/payments", json={}, headers=buyer)
    assert {e["field"] for e in assert_error(r, 400)} == {"orderId", "token"}

    r = await stack.pay(buyer, order["id"], "  ")
    assert [e["field"] for e in assert_error(r, 400)] == ["token"]

    r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": VISA, "amount": 1}, headers=buyer)
    assert [e["field"] for e in assert_error(r, 400)] == ["amount"]
    assert (await stack.show_order(buyer, order["id"]))["status"] == "created"


async def test_expired_order_cannot_be_paid(servers: Servers) -> None:
    async with run_stack(servers, order_expiration_seconds=2) as stack:
        buyer, order = await stack.place_order()
        await stack.wait_for_messages("order:cancelled", 1, timeout=20)
        errors = assert_error(await stack.pay(buyer, order["id"]), 400)
        assert errors[0]["message"] in (Refusal.CANCELLED, Refusal.EXPIRED), errors
        assert (await stack.show_order(buyer, order["id"]))["status"] == "cancelled"
        async with local_stripe(stack.settings.stripe_api_base) as ls:
            assert await ls.intents_for_order(order["id"]) == []


async def test_paid_order_is_never_cancelled_by_expiry(servers: Servers) -> None:
    async with run_stack(servers, order_expiration_seconds=3) as stack:
        buyer, order = await stack.place_order()
        await stack.charge(buyer, order["id"])
        # The workflow ended complete without its expiry timer firing: nothing is left to cancel it.
        assert (await stack.final_state(order["id"])).status == "complete"
        history = await stack.order_handle(order["id"]).fetch_history()
        assert EventType.EVENT_TYPE_TIMER_FIRED not in [e.event_type for e in history.events]
        expires_at = datetime.fromisoformat(order["expiresAt"].replace("Z", "+00:00"))
        await asyncio.sleep(max(0.0, (expires_at - datetime.now(expires_at.tzinfo)).total_seconds()) + 1)
        shown = await stack.show_order(buyer, order["id"])
        assert (shown["status"], shown["version"]) == ("complete", order["version"] + 1)
        subjects = [m.subject for m in await stack.messages()]
        assert "order:cancelled" not in subjects
        assert "expiration:complete" not in subjects
        assert subjects.count("charge:created") == 1
        # the ticket stays with the order
        r = await stack.api.get(f"/api/tickets/{order['ticket']['id']}")
        assert r.json()["orderId"] == order["id"]


async def test_lost_confirm_reply_is_retried_without_a_second_charge(servers: Servers) -> None:
    """localstripe applies the first confirm, but its reply never reaches the activity: Temporal
    retries the activity, which finds the PaymentIntent already succeeded and charges nothing more."""
    async with (
        stripe_proxy(servers.stripe) as proxy,
        run_stack(servers, stripe_api_base=proxy.url) as stack,
    ):
        buyer, order = await stack.place_order()
        charge = await stack.charge(buyer, order["id"])

        assert len(proxy.dropped) == 1, proxy.seen
        assert proxy.created_intents == [charge["stripeId"]]  # one create, its reply kept
        calls = proxy.intent_calls(charge["stripeId"])
        confirms = [c for c in calls if c.path.endswith("/confirm")]
        assert len(confirms) == 1
        assert confirms[0].status is None
        assert len(calls) >= 2  # the retry asked Stripe again (retrieve) before confirming
        assert calls[-1].method == "GET"
        assert calls[-1].status == 200

        await assert_charged_once(stack, buyer, order["id"], charge)

        # the activity really failed once and was retried by Temporal
        history = await stack.order_handle(order["id"]).fetch_history()
        retried = [m["attempt"] for m in local_activity_markers(history) if m["activity_type"] == "charge_order"]
        assert retried, retried
        assert max(retried) >= 2, retried


async def test_lost_create_reply_never_charges_twice(servers: Servers) -> None:
    """The create's reply is lost; Temporal retries the activity, which creates again with the same
    Idempotency-Key. Stripe (the proxy keeps its idempotency promise, localstripe does not) answers
    with the PaymentIntent it made: one PaymentIntent for the order's attempt, charged once."""
    async with (
        stripe_proxy(servers.stripe, drop_first="create", idempotency=True) as proxy,
        run_stack(servers, stripe_api_base=proxy.url) as stack,
    ):
        buyer, order = await stack.place_order()
        charge = await stack.charge(buyer, order["id"])
        assert proxy.dropped == ["/v1/payment_intents"], proxy.seen
        keys = [c.idempotency_key for c in proxy.creates()]
        assert len(keys) >= 2, proxy.seen  # the lost create, then its retry
        assert len(set(keys)) == 1, keys  # ... with the same key, derived from the order
        assert keys[0] is not None
        assert order["id"] in keys[0], keys
        assert await assert_charged_once(stack, buyer, order["id"], charge) == [charge["stripeId"]]


async def assert_charged_once(stack: Stack, buyer: dict[str, str], order_id: str, charge: dict) -> list[str]:
    """One PaymentIntent at Stripe for the order, succeeded and confirmed once; it is the charge the API
    answered with, the one Charge stored and the one charge:created. Returns the order's intents."""
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        intents = await ls.intents_for_order(order_id)
    assert [(pi["id"], pi["status"]) for pi in intents] == [(charge["stripeId"], "succeeded")]
    stored = await Charge.find(Charge.order_id == order_id).to_list()
    assert [(str(c.id), c.stripe_id, c.status) for c in stored] == [
        (charge["id"], charge["stripeId"], ChargeStatus.SUCCEEDED)
    ]
    assert (await stack.show_order(buyer, order_id))["status"] == "complete"
    published = await stack.wait_for_messages("charge:created", 1)
    assert [m.data["stripeId"] for m in published] == [charge["stripeId"]]
    return [pi["id"] for pi in intents]


def local_activity_markers(history: WorkflowHistory) -> list[dict[str, Any]]:
    """What sdk-core records of each local activity (type, attempt...) in its MarkerRecorded event."""
    found = []
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and marker.marker_name == "core_local_activity":
            found.append(json.loads(marker.details["data"].payloads[0].data))
    return found


async def test_card_tokens_are_accepted(stack: Stack) -> None:
    """A `tok_…` card token (Stripe.js createToken, the course's flow) pays like a PaymentMethod;
    localstripe has no `tok_visa` test token, so the test makes one at its /v1/tokens."""
    buyer, order = await stack.place_order()
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        declined = await ls.card_token("4000000000000341")
        r = await stack.pay(buyer, order["id"], declined)
        assert assert_error(r, 402) == [{"message": "Your card was declined.", "field": None}]
        assert (await stack.show_order(buyer, order["id"]))["status"] == "created"

        charge = await stack.charge(buyer, order["id"], await ls.card_token())
        assert charge["amount"] == 2050
        assert (await ls.intent(charge["stripeId"]))["status"] == "succeeded"
    assert (await stack.show_order(buyer, order["id"]))["status"] == "complete"
    assert len(await stack.wait_for_messages("charge:created", 1)) == 1


async def test_a_three_d_secure_card_token_asks_for_authentication(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        r = await stack.pay(buyer, order["id"], await ls.card_token("4000002760003184"))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "requires_action"
        assert r.json()["clientSecret"].startswith(r.json()["paymentIntentId"])


async def test_anything_but_a_payment_method_or_card_token_is_refused(stack: Stack) -> None:
    buyer, order = await stack.place_order()
    for token in ("4242424242424242", "src_123", "card_123", "pi_123", "tok visa", "pm_", "sk_test_123"):
        r = await stack.pay(buyer, order["id"], token)
        errors = assert_error(r, 400)
        assert [e["field"] for e in errors] == ["token"], (token, errors)
        assert "pm_" in errors[0]["message"], errors
        assert "tok_" in errors[0]["message"], errors
        assert token == "pm_" or token not in r.text  # never echoed (it may be a card number)
    # a well-formed token Stripe does not know (localstripe has no tok_visa): 400 on the token too
    r = await stack.pay(buyer, order["id"], "tok_visa")
    assert [e["field"] for e in assert_error(r, 400)] == ["token"]
    assert (await stack.show_order(buyer, order["id"]))["status"] == "created"
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert await ls.intents_for_order(order["id"]) == []
