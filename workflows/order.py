"""One workflow per order (id `order-<orderId>`): reserve, hold until expiresAt, then pay or cancel.

Deterministic code only: every side effect (MongoDB, NATS, Stripe) is an activity, time comes
from `workflow.now()`, and the durable timer survives worker and server restarts.

    reserve ticket ─► order:created ─► wait ─┬─ pay (Update) ─► charge ─► complete ─► charge:created
                                             ├─ cancel (Update, from DELETE /api/orders/{id}) ──┐
                                             └─ timer at expiresAt ─► expiration:complete ───────┴─► cancel,
                                                                              release ticket ─► order:cancelled
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar, TypedDict, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.events import EventActivities
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from ticketing import events
    from ticketing.documents import OrderStatus
    from ticketing.payloads import (
        ChargeInfo,
        ChargeInput,
        ChargeResult,
        CreateIntentInput,
        Errors,
        IntentResult,
        OpenOrderInput,
        OrderChange,
        OrderInput,
        OrderState,
        PaymentOutcome,
        PayRequest,
        RecordChargeInput,
        RecordedCharge,
        RefundInput,
        Refusal,
        ReleaseInput,
        Reservation,
        ReserveInput,
        TicketInfo,
        Transition,
        charge_created_event,
        order_created_event,
        ticket_updated_event,
    )
    from ticketing.temporal import ORDER_STATUS

# MongoDB and NATS outages are retried until they pass; a version conflict would be a bug.
STORE_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10), non_retryable_error_types=[Errors.CONFLICT])


LOCAL_STORE_STEPS = "local-store-steps"
A = TypeVar("A")
R = TypeVar("R")


class ActivityOptions(TypedDict):
    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


STORE = ActivityOptions(start_to_close_timeout=timedelta(seconds=15), retry_policy=STORE_RETRY)
# Stripe: 5xx, rate limits and timeouts retried with the same idempotency key; card errors are final.
STRIPE_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=10), non_retryable_error_types=[Errors.CARD_DECLINED, Errors.INVALID_PAYMENT]
)
STRIPE = ActivityOptions(start_to_close_timeout=timedelta(seconds=30), retry_policy=STRIPE_RETRY)
RESERVE = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5), non_retryable_error_types=[Errors.TICKET_RESERVED]),
)
# OrderStatus of an order whose reservation was refused (the ticket was taken): it never existed.
REJECTED = "rejected"


class _OrderLifecycle:
    """The order's lifecycle, shared by the current workflow type and the one it replaced.

    `one_step` (the type `Order`): each transition (open, pay, expire/cancel) is ONE local activity
    with its events published concurrently, and no search-attribute upsert runs in a task of its
    own. It is a new workflow type rather than a `workflow.patched` branch because every patch makes
    sdk-core upsert the TemporalChangeVersion search attribute: a visibility write per order, which
    is most of what this design saves. Orders started before it keep their type (`OrderWorkflow`)
    and replay the step-by-step paths."""

    one_step: ClassVar[bool]

    @workflow.init
    def __init__(self, order: OrderInput) -> None:
        self.order = order
        self.state = OrderState(order_id=order.order_id)
        self.ticket: TicketInfo | None = None
        self.cancel_requested = False
        self.closing = False  # the timer fired or a cancel started: no new payment
        self.charge: ChargeInfo | None = None
        self.attempt = 0
        self.pending_intent: IntentResult | None = None  # waiting for 3-D Secure
        self.confirmed_intents: set[str] = set()  # from Stripe webhooks
        self.failed_intents: set[str] = set()
        self.refunded_intents: set[str] = set()

    # ── the lifecycle ────────────────────────────────────────────────────────────────────
    async def _run(self, order: OrderInput) -> OrderState:
        if self.one_step:
            await self._open()
        else:
            await self._open_v1(order)
        if self.ticket is None:
            return self.state  # refused: rejected_reason says why

        expired = await self._hold_until_expiry()
        self.closing = True
        # A charge in flight wins over the timer: the order ends complete xor cancelled.
        await workflow.wait_condition(lambda: not self.state.charging)
        if self.state.status != OrderStatus.COMPLETE and self.pending_intent is not None:
            await self._settle_pending_intent()
        if self.state.status == OrderStatus.COMPLETE:
            # Paid: a 3-D Secure intent still pending is cancelled, any other confirmed one refunded.
            await self._drop_pending_intent()
            await self._refund_late_confirmations()
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self.state
        if self.one_step:
            await self._close(expired)
        else:
            if expired:
                await self._publish(events.ExpirationComplete(order_id=order.order_id))
            await self._cancel()
        # Confirmations that raced the cancellation are refunded, never kept.
        await self._refund_late_confirmations()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state

    async def _open(self) -> None:
        """Reserve, store and announce in one local activity: the reservation Update answers right after."""
        try:
            reservation = await workflow.execute_local_activity_method(
                OrderActivities.open_order, OpenOrderInput(order=self.order), **RESERVE
            )
        except (ActivityError, ApplicationError) as err:
            self._refused(err)
            # The starter set OrderStatus=created; this rides on the close's visibility write.
            workflow.upsert_search_attributes([ORDER_STATUS.value_set(REJECTED)])
            return
        self._reserved(reservation)

    async def _close(self, expired: bool) -> None:
        """Cancel (expiry or buyer) in one local activity: order cancelled, then ticket released,
        then order:cancelled and ticket:updated. expiration:complete (the timer's fact, needing no
        stored state) goes out with the release."""
        ticket = self._held_ticket()
        released = ticket.model_copy(update={"version": ticket.version + 1, "order_id": None})
        version = self.state.version + 1
        order_id = self.order.order_id
        transition = Transition(
            change=OrderChange(order_id=order_id, expected_version=self.state.version, status=OrderStatus.CANCELLED),
            release=ReleaseInput(ticket_id=ticket.id, order_id=order_id, reserved_version=ticket.version),
            first=[events.Envelope.of(events.ExpirationComplete(order_id=order_id))] if expired else [],
            then=[
                events.Envelope.of(
                    events.OrderCancelled(id=order_id, version=version, ticket=events.TicketId(id=ticket.id))
                ),
                ticket_updated_event(released),
            ],
        )
        await workflow.execute_local_activity_method(OrderActivities.transition, transition, **STORE)
        self.state.version = version
        self._set_status(OrderStatus.CANCELLED)

    # Invariants of the lifecycle: broken only by a bug. A failed `assert` would fail the workflow
    # task and retry it forever; this fails the workflow and says what was wrong.
    def _held_ticket(self) -> TicketInfo:
        if self.ticket is None:
            raise ApplicationError("Order has no reserved ticket", type="InvariantBroken", non_retryable=True)
        return self.ticket

    def _pending(self) -> IntentResult:
        if self.pending_intent is None:
            raise ApplicationError("No pending 3-D Secure payment", type="InvariantBroken", non_retryable=True)
        return self.pending_intent

    def _refused(self, err: ActivityError | ApplicationError) -> None:
        # A local activity's failure may arrive unwrapped (ApplicationError, not ActivityError).
        cause = err.cause if isinstance(err, ActivityError) else err
        self.state.rejected_reason = cause.message if isinstance(cause, ApplicationError) else str(err)

    async def _open_v1(self, order: OrderInput) -> None:
        """Before one_step: reserve, then two publishes, each its own local activity."""
        try:
            reservation = await workflow.execute_local_activity_method(
                OrderActivities.reserve_ticket,
                ReserveInput(
                    order_id=order.order_id,
                    user_id=order.user_id,
                    ticket_id=order.ticket_id,
                    expires_at=order.expires_at,
                ),
                **RESERVE,
            )
        except (ActivityError, ApplicationError) as err:
            self._refused(err)
            return
        self._reserved(reservation)
        await self._store(EventActivities.publish, order_created_event(order, reservation))
        await self._publish_ticket_updated(reservation.ticket)

    async def _hold_until_expiry(self) -> bool:
        """Wait for payment, a cancel request or expiresAt; True when the timer fired."""
        while True:
            remaining = (self.order.expires_at - workflow.now()).total_seconds()
            if remaining <= 0:
                return True
            try:
                # A 3-D Secure confirmation waits for a charge in flight (else this loop would spin).
                await workflow.wait_condition(
                    lambda: (
                        self.cancel_requested
                        or self.state.status == OrderStatus.COMPLETE
                        or (self._pending_confirmed() and not self.state.charging)
                    ),
                    timeout=timedelta(seconds=remaining),
                    timeout_summary="order expiry",
                )
            except TimeoutError:
                return True
            if self.cancel_requested or self.state.status == OrderStatus.COMPLETE:
                return False
            await self._complete_pending()

    # ── payment (Update) ─────────────────────────────────────────────────────────────────
    @workflow.update
    async def pay(self, request: PayRequest) -> PaymentOutcome:
        self.state.charging = True
        try:
            return await self._charge(request)
        finally:
            self.state.charging = False

    @pay.validator
    def validate_pay(self, request: PayRequest) -> None:
        if self.state.status is None:
            raise ApplicationError(Refusal.NOT_RESERVED, type=Errors.NOT_PAYABLE)
        if self.state.status == OrderStatus.COMPLETE:
            raise ApplicationError(Refusal.PAID, type=Errors.NOT_PAYABLE)
        if self.state.status == OrderStatus.CANCELLED or self.cancel_requested:
            raise ApplicationError(Refusal.CANCELLED, type=Errors.NOT_PAYABLE)
        if self.closing or workflow.now() >= self.order.expires_at:
            raise ApplicationError(Refusal.EXPIRED, type=Errors.NOT_PAYABLE)
        if self.state.charging:
            raise ApplicationError(Refusal.CHARGING, type=Errors.NOT_PAYABLE)

    async def _charge(self, request: PayRequest) -> PaymentOutcome:
        if self.ticket is None:
            raise ApplicationError(Refusal.NOT_RESERVED, type=Errors.NOT_PAYABLE)
        self.attempt += 1
        if not self.one_step:
            return await self._charge_v1(request, self.ticket)
        try:
            # One local activity: no activity round trips through the server, and the Update's reply
            # leaves with the task that ran it.
            result: ChargeResult = await workflow.execute_local_activity_method(
                PaymentActivities.charge_order,
                ChargeInput(
                    order_id=self.order.order_id,
                    attempt=self.attempt,
                    amount=self.ticket.price,
                    currency=self.order.currency or "",  # "" (older orders): the activity's CURRENCY
                    token=request.token,
                    expected_version=self.state.version,
                ),
                **STRIPE,
            )
        except (ActivityError, ApplicationError) as err:
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError) and cause.type in (Errors.CARD_DECLINED, Errors.INVALID_PAYMENT):
                raise ApplicationError(cause.message, type=cause.type) from None
            raise
        intent = result.intent
        self._set_intent(intent.id)
        if result.recorded is not None:
            self._charged(result.recorded)
            return PaymentOutcome(status="succeeded", charge=result.recorded.charge, payment_intent_id=intent.id)
        return await self._charge_outcome(intent)

    def _charged(self, recorded: RecordedCharge) -> None:
        self.charge = recorded.charge
        self.state.version = recorded.order_version
        self._set_status(OrderStatus.COMPLETE)

    async def _charge_v1(self, request: PayRequest, ticket: TicketInfo) -> PaymentOutcome:
        """Before one_step: create and confirm as two normal activities, then record and publish."""
        try:
            # Create, remember, then confirm: a retried confirm finds the same PaymentIntent,
            # so even a Stripe fake that ignores idempotency keys is never charged twice.
            intent = await workflow.execute_activity_method(
                PaymentActivities.create_payment_intent,
                CreateIntentInput(
                    order_id=self.order.order_id,
                    attempt=self.attempt,
                    amount=ticket.price,
                    currency="",  # the activity fills in CURRENCY
                    token=request.token,
                ),
                **STRIPE,
            )
            self._set_intent(intent.id)
            intent = await workflow.execute_activity_method(PaymentActivities.confirm_payment_intent, intent, **STRIPE)
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type in (Errors.CARD_DECLINED, Errors.INVALID_PAYMENT):
                raise ApplicationError(cause.message, type=cause.type) from None
            raise
        if intent.status == "succeeded":
            charge = await self._record_charge(intent)
            return PaymentOutcome(status="succeeded", charge=charge, payment_intent_id=intent.id)
        return await self._charge_outcome(intent)

    async def _charge_outcome(self, intent: IntentResult) -> PaymentOutcome:
        """An intent that did not succeed at once: 3-D Secure to complete in the browser, or refused."""
        if intent.status == "requires_action":
            self.pending_intent = intent
            if self.state.status == OrderStatus.CREATED:
                await self._change(OrderStatus.AWAITING_PAYMENT)
            return PaymentOutcome(
                status="requires_action", client_secret=intent.client_secret, payment_intent_id=intent.id
            )
        raise ApplicationError(f"Payment not completed ({intent.status})", type=Errors.CARD_DECLINED)

    # ── Stripe webhooks (signals) ────────────────────────────────────────────────────────
    @workflow.signal
    def payment_succeeded(self, payment_intent_id: str) -> None:
        self.confirmed_intents.add(payment_intent_id)

    @workflow.signal
    def payment_failed(self, payment_intent_id: str) -> None:
        self.failed_intents.add(payment_intent_id)
        if self.pending_intent is not None and self.pending_intent.id == payment_intent_id:
            self.pending_intent = None

    def _pending_confirmed(self) -> bool:
        return self.pending_intent is not None and self.pending_intent.id in self.confirmed_intents

    async def _complete_pending(self) -> None:
        intent, self.pending_intent = self._pending(), None
        self.state.charging = True
        try:
            await self._record_charge(intent)
        finally:
            self.state.charging = False

    async def _settle_pending_intent(self) -> None:
        """The order closes while 3-D Secure is pending: cancel the intent unless it already succeeded."""
        intent = await workflow.execute_activity_method(
            PaymentActivities.cancel_payment_intent, self._pending().id, **STRIPE
        )
        if intent.status == "succeeded":
            self.confirmed_intents.add(intent.id)
            await self._complete_pending()
        else:
            self.pending_intent = None

    async def _drop_pending_intent(self) -> None:
        """The order was paid another way: cancel the 3-D Secure intent still pending (refunded if
        it succeeded meanwhile)."""
        if self.pending_intent is None:
            return
        intent, self.pending_intent = self.pending_intent, None
        result = await workflow.execute_activity_method(PaymentActivities.cancel_payment_intent, intent.id, **STRIPE)
        if result.status == "succeeded":
            self.confirmed_intents.add(result.id)

    async def _refund_late_confirmations(self) -> None:
        """Every confirmed payment but the one that paid the order is given back (including
        confirmations signalled while refunding)."""
        kept = self.charge.stripe_id if self.charge else None
        while todo := sorted(self.confirmed_intents - self.refunded_intents - ({kept} if kept else set())):
            for intent_id in todo:
                await workflow.execute_activity_method(
                    PaymentActivities.refund_payment,
                    RefundInput(order_id=self.order.order_id, payment_intent_id=intent_id),
                    **STRIPE,
                )
                self.refunded_intents.add(intent_id)

    # ── cancellation (Update, from DELETE /api/orders/{id}) ──────────────────────────────
    @workflow.update
    async def cancel(self) -> OrderState:
        self.cancel_requested = True
        await workflow.wait_condition(
            lambda: (
                self.state.status in (OrderStatus.CANCELLED, OrderStatus.COMPLETE)
                or self.state.rejected_reason is not None
            )
        )
        if self.state.status == OrderStatus.COMPLETE:
            raise ApplicationError(Refusal.COMPLETE, type=Errors.ORDER_COMPLETE)
        return self.state

    @cancel.validator
    def validate_cancel(self) -> None:
        if self.state.status == OrderStatus.COMPLETE:
            raise ApplicationError(Refusal.COMPLETE, type=Errors.ORDER_COMPLETE)

    # ── reads ────────────────────────────────────────────────────────────────────────────
    @workflow.query
    def status(self) -> OrderState:
        return self.state

    # Read-only: when a refused order closes first, the API reads the same answer from the result.
    @workflow.update(unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def reservation(self) -> OrderState:
        """Returns once the ticket is reserved, or with `rejected_reason` set: the API answers from this."""
        await workflow.wait_condition(lambda: self.state.status is not None or self.state.rejected_reason is not None)
        return self.state

    # ── steps ────────────────────────────────────────────────────────────────────────────
    def _reserved(self, reservation: Reservation) -> None:
        self.ticket = self.state.ticket = reservation.ticket
        self.state.version = reservation.order_version
        self._set_status(OrderStatus.CREATED)

    def _set_status(self, status: OrderStatus) -> None:
        self.state.status = status
        if self.one_step and workflow.info().typed_search_attributes.get(ORDER_STATUS) == status.value:
            return  # shown already (the starter sets `created`): an upsert would cost a visibility write
        workflow.upsert_search_attributes([ORDER_STATUS.value_set(status.value)])

    def _set_intent(self, intent_id: str) -> None:
        self.state.payment_intent_id = intent_id
        if self.one_step and (workflow.memo_value("paymentIntentId", None) == intent_id):
            return
        workflow.upsert_memo({"paymentIntentId": intent_id})

    async def _change(self, status: OrderStatus, payment_intent_id: str | None = None) -> None:
        order = await self._store(
            OrderActivities.change_order,
            OrderChange(
                order_id=self.order.order_id,
                expected_version=self.state.version,
                status=status,
                payment_intent_id=payment_intent_id,
            ),
        )
        self.state.version = order
        self._set_status(status)

    async def _record_charge(self, intent: IntentResult) -> ChargeInfo:
        self._set_intent(intent.id)
        if self.one_step:
            recorded = await workflow.execute_local_activity_method(
                OrderActivities.record_charge, self._charge_input(intent), **STORE
            )
            self._charged(recorded)
            return recorded.charge
        recorded = await self._store(OrderActivities.complete_order, self._charge_input(intent))
        self._charged(recorded)
        await self._store(EventActivities.publish, charge_created_event(recorded.charge))
        return recorded.charge

    def _charge_input(self, intent: IntentResult) -> RecordChargeInput:
        return RecordChargeInput(
            order_id=self.order.order_id,
            expected_version=self.state.version,
            payment_intent_id=intent.id,
            amount=intent.amount,
            currency=intent.currency,
        )

    async def _cancel(self) -> None:
        """Before one_step: cancel, release, then two publishes, each its own local activity."""
        ticket = self._held_ticket()
        await self._change(OrderStatus.CANCELLED)
        # Release before announcing, so whoever hears order:cancelled finds the ticket free.
        released = await self._store(
            OrderActivities.release_ticket,
            ReleaseInput(ticket_id=ticket.id, order_id=self.order.order_id, reserved_version=ticket.version),
        )
        await self._publish(
            events.OrderCancelled(
                id=self.order.order_id, version=self.state.version, ticket=events.TicketId(id=ticket.id)
            )
        )
        await self._publish_ticket_updated(released)

    async def _publish_ticket_updated(self, ticket: TicketInfo) -> None:
        await self._store(EventActivities.publish, ticket_updated_event(ticket))

    async def _publish(self, event: events.Event) -> None:
        await self._store(EventActivities.publish, events.Envelope.of(event))

    async def _store(self, activity: Callable[[Any, A], Awaitable[R]], arg: A) -> R:
        """A MongoDB or NATS step (3-D Secure's awaiting:payment; every step of the older type).
        Local activities since `LOCAL_STORE_STEPS`: run inside the workflow
        task, so an expiry's five steps cost one workflow task instead of five activity round trips
        through the server (what held expiration lag behind the BullMQ baseline). Each step is
        idempotent, so re-running one after a crash is safe. Orders started before the change keep
        replaying their normal activities."""
        if self.one_step or workflow.patched(LOCAL_STORE_STEPS):
            return await workflow.execute_local_activity_method(activity, arg, **STORE)
        return await workflow.execute_activity_method(activity, arg, **STORE)


@workflow.defn(name="Order")
class OrderWorkflow(_OrderLifecycle):
    """The order workflow (`order-<orderId>`), one local activity per transition."""

    one_step = True

    @workflow.run
    async def run(self, order: OrderInput) -> OrderState:
        return await self._run(order)


@workflow.defn(name="OrderWorkflow")
class LegacyOrderWorkflow(_OrderLifecycle):
    """Orders started before the type `Order`: kept registered until none is left running (their
    histories, and the saved ones in tests/histories/v1-*, v2-*, replay on it)."""

    one_step = False

    @workflow.run
    async def run(self, order: OrderInput) -> OrderState:
        return await self._run(order)
