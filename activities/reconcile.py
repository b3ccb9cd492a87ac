"""Activities of the money reconciliation (workflows/reconcile.py): read Stripe's PaymentIntents page by
page, decide for each (ticketing/reconcile.py), and the idempotent steps a decision needs. Refunds are
not here: they run as `refund-<paymentIntentId>` workflows, one per intent whoever starts them.

Each step can be re-run (a killed worker, two overlapping runs) and settles an intent once: a Charge
is recorded by upsert on its unique stripe_id, a cancel looks at the intent first, the watermark only
moves forward."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import stripe
from bson import ObjectId
from bson.errors import InvalidId
from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.orders import charge_info
from activities.payments import stripe_client
from ticketing import queries
from ticketing.documents import Charge, ChargeStatus, Order, utcnow
from ticketing.payloads import ChargeInfo
from ticketing.reconcile import (
    OPEN_INTENT,
    Action,
    ChargeView,
    IntentView,
    OrderView,
    Page,
    Plan,
    Window,
    decide,
)
from ticketing.settings import Settings
from ticketing.temporal import order_workflow_id

log = logging.getLogger(__name__)

STATE_ID = "payments"  # the one document of the reconcile_state collection
ACT_ON = {Action.RECORD, Action.REFUND, Action.CANCEL}


class PageRequest(BaseModel):
    since: int
    cursor: str | None = None


class Recorded(BaseModel):
    kind: str  # "recorded", "unchanged" (recorded by an earlier attempt or run) or "refund"
    charge: ChargeInfo | None = None


def _intent(pi: Any) -> IntentView:
    metadata = pi.metadata.to_dict() if pi.metadata else {}
    order_id = metadata.get("orderId")
    return IntentView(
        id=pi.id,
        status=pi.status,
        amount=pi.amount,
        currency=pi.currency,
        created=pi.created,
        order_id=order_id if isinstance(order_id, str) and order_id else None,
    )


@contextlib.asynccontextmanager
async def heartbeating(every: float = 1.0) -> AsyncIterator[None]:
    """Heartbeat while the body runs, so a killed worker's activity is retried after the short
    heartbeat timeout rather than the whole start-to-close timeout (no-op outside an activity)."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class ReconcileActivities:
    def __init__(
        self, settings: Settings, temporal: Client | None = None, client: stripe.StripeClient | None = None
    ) -> None:
        self.settings = settings
        self.temporal = temporal  # None (dry run without Temporal): no look at the order workflows
        self.stripe = client or stripe_client(settings)
        self.server_filters_created = True

    # ── the window ───────────────────────────────────────────────────────────────────────
    def _state(self) -> Any:
        return Order.get_pymongo_collection().database["reconcile_state"]

    @activity.defn(name="reconcile_window")
    async def window(self) -> Window:
        """Read intents created since the stored watermark minus the overlap (first run: the lookback)."""
        async with heartbeating():
            doc = await self._state().find_one(queries.by_id(STATE_ID))
        watermark = int(doc["watermark"]) if doc else None
        if watermark is None:
            since = int(datetime.now(UTC).timestamp()) - self.settings.reconcile_lookback_seconds
        else:
            since = watermark - self.settings.reconcile_overlap_seconds
        return Window(since=since, watermark=watermark)

    @activity.defn(name="reconcile_save_watermark")
    async def save_watermark(self, watermark: int) -> int:
        """Move the watermark forward only: an older, slower run never moves it back."""
        async with heartbeating():
            await self._state().update_one(
                queries.by_id(STATE_ID),
                {"$max": {"watermark": watermark}, "$set": {"updated_at": utcnow()}},
                upsert=True,
            )
            doc = await self._state().find_one(queries.by_id(STATE_ID))
        assert doc is not None
        return int(doc["watermark"])

    # ── one page: list and decide ────────────────────────────────────────────────────────
    @activity.defn(name="reconcile_plan_page")
    async def plan_page(self, req: PageRequest) -> Page:
        async with heartbeating():
            intents, next_cursor = await self._list(req.since, req.cursor)
            return Page(plans=await self.plan(intents), next_cursor=next_cursor)

    async def _list(self, since: int, cursor: str | None) -> tuple[list[IntentView], str | None]:
        params: dict[str, Any] = {"limit": self.settings.reconcile_page_size}
        if cursor:
            params["starting_after"] = cursor
        if self.server_filters_created:
            params["created"] = {"gte": since}
        try:
            listing = await self.stripe.v1.payment_intents.list_async(params=params)  # type: ignore[arg-type]
        except stripe.InvalidRequestError as err:
            # localstripe (the dev/test fake) refuses `created` on this list ("Unexpected created"): page
            # through everything and filter by `created` here instead. Real Stripe filters server-side.
            if "created" not in params or "created" not in str(err):
                raise
            self.server_filters_created = False
            del params["created"]
            listing = await self.stripe.v1.payment_intents.list_async(params=params)  # type: ignore[arg-type]
        data = list(listing.data)
        next_cursor = data[-1].id if listing.has_more and data else None
        return [i for i in map(_intent, data) if i.created >= since], next_cursor

    async def plan(self, intents: list[IntentView]) -> list[Plan]:
        orders = await self._orders({i.order_id for i in intents if i.order_id})
        charges = await self._charges([i.id for i in intents])
        plans = []
        for intent in intents:
            order = orders.get(intent.order_id) if intent.order_id else None
            charge = charges.get(intent.id)
            action, reason = decide(intent, order, charge)
            if action in ACT_ON and order is not None and await self._workflow_running(order.id):
                # The order's workflow refunds or cancels what raced its close: not two of us at once.
                action, reason = decide(intent, order.model_copy(update={"workflow_running": True}), charge)
            plans.append(
                Plan(intent=intent, order_status=order.status if order else None, action=action, reason=reason)
            )
        return plans

    async def _orders(self, order_ids: set[str]) -> dict[str, OrderView]:
        oids = []
        for order_id in order_ids:
            with contextlib.suppress(InvalidId, TypeError):
                oids.append(ObjectId(order_id))
        if not oids:
            return {}
        found = await Order.get_pymongo_collection().find(queries.by_ids(oids)).to_list(None)
        kept = await Charge.get_pymongo_collection().find(queries.kept_charges_of([str(o) for o in oids])).to_list(None)
        kept_by_order = {c["order_id"]: c["stripe_id"] for c in kept}
        return {
            str(o["_id"]): OrderView(
                id=str(o["_id"]),
                status=o["status"],
                payment_intent_id=o.get("payment_intent_id"),
                kept_charge=kept_by_order.get(str(o["_id"])),
            )
            for o in found
        }

    async def _charges(self, intent_ids: list[str]) -> dict[str, ChargeView]:
        if not intent_ids:
            return {}
        found = await Charge.get_pymongo_collection().find(queries.charges_by_intents(intent_ids)).to_list(None)
        return {
            c["stripe_id"]: ChargeView(id=str(c["_id"]), status=c["status"], refund_id=c.get("refund_id"))
            for c in found
        }

    async def _workflow_running(self, order_id: str) -> bool:
        if self.temporal is None:
            return False
        try:
            described = await self.temporal.get_workflow_handle(order_workflow_id(order_id)).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # never started here, or past retention
                return False
            raise
        return described.status == WorkflowExecutionStatus.RUNNING

    # ── the steps ────────────────────────────────────────────────────────────────────────
    @activity.defn(name="reconcile_record_charge")
    async def record_charge(self, plan: Plan) -> Recorded:
        """Record the order's payment whose Charge is missing. The caller publishes charge:created with
        the returned Charge (its id makes the Nats-Msg-Id, so a re-run publishes the same fact)."""
        async with heartbeating():
            return await self._record_charge(plan)

    async def _record_charge(self, plan: Plan) -> Recorded:
        intent = plan.intent
        assert intent.order_id is not None
        charges = Charge.get_pymongo_collection()
        inserted = False
        try:
            result = await charges.update_one(
                queries.charge_by_intent(intent.id),
                {
                    "$setOnInsert": {
                        "order_id": intent.order_id,
                        "stripe_id": intent.id,
                        "amount": intent.amount,
                        "currency": intent.currency,
                        "status": ChargeStatus.SUCCEEDED.value,
                        "refund_id": None,
                        "created_at": utcnow(),
                    }
                },
                upsert=True,
            )
            inserted = result.upserted_id is not None
        except DuplicateKeyError:
            pass  # this intent recorded by a concurrent run, or the order holds another succeeded charge
        doc = await charges.find_one(queries.charge_by_intent(intent.id))
        if doc is None:
            return Recorded(kind="refund")  # the order kept another payment: this one goes back
        if doc.get("refund_id"):
            return Recorded(kind="unchanged")  # refunded meanwhile
        if inserted:
            log.warning("recorded a missing charge", extra={"orderId": intent.order_id, "paymentIntentId": intent.id})
        charge = charge_info(doc)
        return Recorded(kind="recorded" if inserted else "unchanged", charge=charge)

    @activity.defn(name="reconcile_cancel_intent")
    async def cancel_intent(self, intent_id: str) -> str:
        """Cancel an intent of a closed order. Returns "cancelled" (by this call), "unchanged" (already
        canceled or failed), "succeeded" (it went through meanwhile: refund it) or "pending" (Stripe
        does not cancel it now, e.g. processing: seen again next run)."""
        async with heartbeating():
            payment_intents = self.stripe.v1.payment_intents
            pi = await payment_intents.retrieve_async(intent_id)
            if pi.status in OPEN_INTENT:
                try:
                    pi = await payment_intents.cancel_async(intent_id)
                except stripe.InvalidRequestError:
                    pi = await payment_intents.retrieve_async(intent_id)  # canceled by someone else, or not cancelable
                else:
                    if pi.status == "canceled":
                        log.warning("cancelled the payment of a closed order", extra={"paymentIntentId": intent_id})
                        return "cancelled"
            if pi.status == "succeeded":
                return "succeeded"
            if pi.status in OPEN_INTENT:
                return "pending"
            return "unchanged"
