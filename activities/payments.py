"""Stripe PaymentIntents. The charge is split into create → (workflow records the id) → confirm,
so a retried confirm retrieves the same intent first and never confirms a second one; every call
also carries an idempotency key derived from the order and the attempt."""

from __future__ import annotations

import logging
from typing import Any

import stripe
from bson import ObjectId
from pymongo.errors import DuplicateKeyError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.orders import OrderActivities
from ticketing import queries
from ticketing.documents import Charge, ChargeStatus, Order, OrderStatus, utcnow
from ticketing.payloads import (
    ChargeInput,
    ChargeResult,
    CreateIntentInput,
    Errors,
    IntentResult,
    RecordChargeInput,
    RefundInput,
)
from ticketing.settings import Settings

log = logging.getLogger(__name__)

CANCELABLE = {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}


def stripe_client(settings: Settings) -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.stripe_key,
        base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
        http_client=stripe.HTTPXClient(timeout=20),
        max_network_retries=0,  # Temporal owns retries (with the same idempotency key)
    )


def _result(pi: stripe.PaymentIntent) -> IntentResult:
    return IntentResult(
        id=pi.id, status=pi.status, client_secret=pi.client_secret, amount=pi.amount, currency=pi.currency
    )


def _final(err: stripe.StripeError) -> ApplicationError:
    """Card errors and invalid requests will fail the same way again: not retried."""
    if isinstance(err, stripe.CardError):
        return ApplicationError(
            err.user_message or "Your card was declined", type=Errors.CARD_DECLINED, non_retryable=True
        )
    return ApplicationError(
        err.user_message or "Invalid payment request", type=Errors.INVALID_PAYMENT, non_retryable=True
    )


def _attempts() -> Any:
    """PaymentIntent ids by (order, attempt), written before the intent is confirmed: a retried charge
    finds the intent it created and never creates (or confirms) a second one. Keyed by _id: one index."""
    return Order.get_pymongo_collection().database["payment_attempts"]


class PaymentActivities:
    def __init__(
        self, settings: Settings, client: stripe.StripeClient | None = None, orders: OrderActivities | None = None
    ) -> None:
        self.currency = settings.currency
        self.client = client or stripe_client(settings)
        self.orders = orders or OrderActivities()

    @activity.defn
    async def charge_order(self, req: ChargeInput) -> ChargeResult:
        """The whole payment in one local activity: create → record the id → confirm; on success the
        Charge, the order's completion and charge:created. Exactly once without trusting Stripe's
        idempotency keys (localstripe ignores them): money moves only on confirm, and only the intent
        recorded for (order, attempt) is ever confirmed; an intent created by an attempt that died
        before recording it stays unconfirmed (no money moves). Stripe's idempotency key still
        dedupes that create on real Stripe."""
        key = f"{req.order_id}-{req.attempt}"
        recorded = await _attempts().find_one(queries.by_id(key))
        if recorded is None:
            intent = await self.create_payment_intent(
                CreateIntentInput(
                    order_id=req.order_id,
                    attempt=req.attempt,
                    amount=req.amount,
                    currency=req.currency,
                    token=req.token,
                )
            )
            try:
                await _attempts().insert_one({"_id": key, "intent_id": intent.id, "created_at": utcnow()})
            except DuplicateKeyError:
                recorded = await _attempts().find_one(queries.by_id(key))
        if recorded is not None:  # an earlier try got this far: continue with ITS intent, as Stripe has it now
            intent = await self._confirm(recorded["intent_id"], fresh=False)
        else:
            intent = await self._confirm(intent.id, fresh=True)
        if intent.status != "succeeded":
            return ChargeResult(intent=intent)
        done = await self.orders.record_charge(
            RecordChargeInput(
                order_id=req.order_id,
                expected_version=req.expected_version,
                payment_intent_id=intent.id,
                amount=intent.amount,
                currency=intent.currency,
            )
        )
        return ChargeResult(intent=intent, recorded=done)

    @activity.defn
    async def create_payment_intent(self, req: CreateIntentInput) -> IntentResult:
        params: dict[str, Any] = {
            "amount": req.amount,
            "currency": req.currency or self.currency,
            "payment_method_types": ["card"],
            "metadata": {"orderId": req.order_id, "attempt": str(req.attempt)},
        }
        key = f"order-{req.order_id}-attempt-{req.attempt}"
        try:
            if req.token.startswith("tok_"):
                pi = await self._create_from_card_token(params, req.token, key)
            else:
                pi = await self._create({**params, "payment_method": req.token}, key)
        except (stripe.CardError, stripe.InvalidRequestError) as err:
            raise _final(err) from err
        return _result(pi)

    async def _create(self, params: dict[str, Any], idempotency_key: str) -> stripe.PaymentIntent:
        return await self.client.v1.payment_intents.create_async(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )

    async def _create_from_card_token(self, params: dict[str, Any], token: str, key: str) -> stripe.PaymentIntent:
        """A card token (Stripe.js `createToken`, the course's `tok_visa`): Stripe turns it into a
        PaymentMethod through `payment_method_data[card][token]`. localstripe predates that
        parameter (400 "Unexpected payment_method_data"); there the token's card (`card_…`) is
        the payment method, which it accepts."""
        try:
            return await self._create(
                {**params, "payment_method_data": {"type": "card", "card": {"token": token}}}, key
            )
        except stripe.InvalidRequestError as err:
            if err.user_message != "Unexpected payment_method_data":
                raise
        card = (await self.client.v1.tokens.retrieve_async(token)).card
        if card is None:
            raise stripe.InvalidRequestError("This token holds no card", "token")
        return await self._create({**params, "payment_method": card.id}, f"{key}-card")

    @activity.defn
    async def confirm_payment_intent(self, intent: IntentResult) -> IntentResult:
        return await self._confirm(intent.id, fresh=False)

    async def _confirm(self, intent_id: str, *, fresh: bool) -> IntentResult:
        """Confirm unless already confirmed. `fresh`: created by this very call, so it cannot have been
        confirmed yet (saves a retrieve round trip); otherwise Stripe is asked first."""
        payment_intents = self.client.v1.payment_intents
        if not fresh:
            pi = await payment_intents.retrieve_async(intent_id)
            if pi.status != "requires_confirmation":
                return _result(pi)  # confirmed by an earlier attempt (or failed for good)
        try:
            pi = await payment_intents.confirm_async(intent_id, options={"idempotency_key": f"{intent_id}-confirm"})
        except stripe.CardError as err:
            raise _final(err) from err
        except stripe.InvalidRequestError as err:
            # A confirm whose reply was lost may have gone through: look before giving up.
            pi = await payment_intents.retrieve_async(intent_id)
            if pi.status == "requires_confirmation":
                raise _final(err) from err
        if pi.status == "requires_payment_method":
            message = (pi.last_payment_error.message if pi.last_payment_error else None) or "Your card was declined"
            raise ApplicationError(message, type=Errors.CARD_DECLINED, non_retryable=True)
        return _result(pi)

    @activity.defn
    async def cancel_payment_intent(self, payment_intent_id: str) -> IntentResult:
        payment_intents = self.client.v1.payment_intents
        pi = await payment_intents.retrieve_async(payment_intent_id)
        if pi.status in CANCELABLE:
            pi = await payment_intents.cancel_async(payment_intent_id)
        return _result(pi)

    @activity.defn
    async def refund_payment(self, req: RefundInput) -> str:
        """Give back a payment that succeeded for an order that ended cancelled; recorded once."""
        order = await Order.get_pymongo_collection().find_one(queries.by_id(ObjectId(req.order_id)))
        if (
            order
            and order["status"] == OrderStatus.COMPLETE
            and order.get("payment_intent_id") == req.payment_intent_id
        ):
            return "kept"  # this payment paid the order: nothing to give back
        charges = Charge.get_pymongo_collection()
        existing = await charges.find_one(queries.charge_by_intent(req.payment_intent_id))
        if existing is not None and existing.get("refund_id"):
            return str(existing["refund_id"])
        pi = await self.client.v1.payment_intents.retrieve_async(req.payment_intent_id)
        # A refund made by an attempt that died before recording it is found, not made again: the
        # idempotency key alone would not do (it expires after 24 h, and localstripe ignores it).
        earlier = await self.client.v1.refunds.list_async(params={"payment_intent": req.payment_intent_id, "limit": 10})
        refund = next((r for r in earlier.data if r.status not in ("failed", "canceled")), None)
        if refund is None:
            refund = await self.client.v1.refunds.create_async(
                params={"payment_intent": req.payment_intent_id},
                options={"idempotency_key": f"refund-{req.payment_intent_id}"},
            )
        # update_one, not findAndModify (a collection scan on SecantusDB); nothing reads the result.
        await charges.update_one(
            queries.charge_by_intent(req.payment_intent_id),
            {
                "$set": {"status": ChargeStatus.REFUNDED.value, "refund_id": refund.id},
                "$setOnInsert": {
                    "order_id": req.order_id,
                    "amount": pi.amount,
                    "currency": pi.currency,
                    "created_at": utcnow(),
                },
            },
            upsert=True,
        )
        log.warning("refunded a late payment", extra={"orderId": req.order_id, "paymentIntentId": pi.id})
        return str(refund.id)
