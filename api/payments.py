"""Payments: the buyer pays through the order's workflow (`pay` Update), which charges Stripe once.
Stripe webhooks report 3-D Secure outcomes and reach the workflow as signals."""

from __future__ import annotations

import contextlib
import json
import logging

import stripe
from beanie import PydanticObjectId
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.auth import RequiredUser
from api.deps import Deps
from api.errors import BadRequest
from api.orders import owned_order
from api.schemas import ChargeOut, PaymentActionOut, PaymentBody, parse_object_id
from ticketing import order_service
from ticketing.documents import Order, OrderStatus, utcnow
from ticketing.payloads import RefundInput, Refusal
from ticketing.temporal import order_workflow_id, refund_workflow_id
from workflows.order import OrderWorkflow
from workflows.refund import RefundWorkflow

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/payments", tags=["payments"])


def _refuse_unpayable(order: Order) -> None:
    if order.status == OrderStatus.CANCELLED:
        raise BadRequest(Refusal.CANCELLED)
    if order.status == OrderStatus.COMPLETE:
        raise BadRequest(Refusal.PAID)
    if order.expires_at <= utcnow():
        raise BadRequest(Refusal.EXPIRED)


@router.post(
    "",
    status_code=201,
    response_model=ChargeOut,
    responses={202: {"model": PaymentActionOut, "description": "3-D Secure: the buyer must authenticate"}},
)
async def pay(body: PaymentBody, user: RequiredUser, services: Deps) -> ChargeOut | JSONResponse:
    order = await owned_order(body.order_id, user)
    _refuse_unpayable(order)
    try:
        outcome = await order_service.pay(services.temporal, body.order_id, body.token)
    except RPCError:
        _refuse_unpayable(await owned_order(body.order_id, user))  # closed meanwhile
        raise
    if outcome.status == "requires_action":
        action = PaymentActionOut(
            status=outcome.status, client_secret=outcome.client_secret, payment_intent_id=outcome.payment_intent_id
        )
        return JSONResponse(action.model_dump(mode="json", by_alias=True), status_code=202)
    assert outcome.charge is not None
    return ChargeOut.of(outcome.charge)


@router.post("/webhook", include_in_schema=False)
async def stripe_webhook(request: Request, services: Deps) -> dict[str, bool]:
    payload = await request.body()
    signature = request.headers.get("stripe-signature", "")
    try:
        event = stripe.Webhook.construct_event(payload, signature, services.settings.stripe_webhook_secret)
    except (ValueError, stripe.SignatureVerificationError):
        raise BadRequest("Invalid Stripe signature") from None

    if event.type not in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return {"received": True}
    # stripe>=15 objects are not dicts: read the verified payload as plain JSON.
    intent = (json.loads(payload).get("data") or {}).get("object") or {}
    order_id = (intent.get("metadata") or {}).get("orderId")
    intent_id = intent.get("id")
    if not order_id or not isinstance(order_id, str) or not intent_id:
        return {"received": True}
    handle = services.temporal.get_workflow_handle(order_workflow_id(order_id))
    succeeded = event.type == "payment_intent.succeeded"
    signal = OrderWorkflow.payment_succeeded if succeeded else OrderWorkflow.payment_failed
    try:
        # Signals are idempotent in the workflow: the same event delivered twice has one effect.
        await handle.signal(signal, intent_id)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise  # Temporal unreachable: 500, and Stripe delivers the event again later
        if succeeded:  # the order's workflow has closed (or never existed)
            await _refund_if_not_kept(services, order_id, intent_id)
    return {"received": True}


async def _refund_if_not_kept(services: Deps, order_id: str, payment_intent_id: str) -> None:
    """A payment confirmed after its order's workflow closed: keep it only if it paid the order."""
    oid = parse_object_id(order_id)
    order = await Order.get(PydanticObjectId(oid)) if oid else None
    if order and order.status == OrderStatus.COMPLETE and order.payment_intent_id == payment_intent_id:
        return
    log.warning(
        "late payment confirmation: refunding", extra={"orderId": order_id, "paymentIntentId": payment_intent_id}
    )
    with contextlib.suppress(WorkflowAlreadyStartedError):  # this webhook was delivered before
        await services.temporal.start_workflow(
            RefundWorkflow.run,
            RefundInput(order_id=order_id, payment_intent_id=payment_intent_id),
            id=refund_workflow_id(payment_intent_id),
            task_queue=services.settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
