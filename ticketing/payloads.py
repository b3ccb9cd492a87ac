"""Inputs and results exchanged between the API, the order workflow and its activities.

Plain pydantic models (the Temporal client and worker use the pydantic data converter), kept
free of I/O so the workflow sandbox can import them.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel

from ticketing import events
from ticketing.documents import OrderStatus
from ticketing.events import Envelope
from ticketing.money import to_major


class TicketInfo(BaseModel):
    id: str
    title: str
    price: int  # cents
    user_id: str
    version: int
    order_id: str | None = None


class OrderInput(BaseModel):
    order_id: str
    user_id: str
    ticket_id: str
    expires_at: datetime
    # Fixed when the order is created (CURRENCY); None in orders started before it was carried here.
    currency: str | None = None
    # The ticket as the API read it (free): the reservation tries that version first, saving a read.
    ticket: TicketInfo | None = None


class OrderState(BaseModel):
    """The order as the workflow knows it; returned by the `status` query."""

    order_id: str
    status: OrderStatus | None = None  # None until the ticket is reserved
    version: int = 0
    payment_intent_id: str | None = None
    charging: bool = False
    rejected_reason: str | None = None
    ticket: TicketInfo | None = None  # as reserved (the order's snapshot)


class ReserveInput(BaseModel):
    """The legacy `OrderWorkflow`'s reservation step (its saved histories carry this shape); `Order` reserves
    inside `open_order`, which builds it from the OrderInput."""

    order_id: str
    user_id: str
    ticket_id: str
    expires_at: datetime
    seen: TicketInfo | None = None


class OpenOrderInput(BaseModel):
    """Reserve the ticket, store the order, announce both (one local activity)."""

    order: OrderInput


class Reservation(BaseModel):
    ticket: TicketInfo  # after the reservation (orderId set, version +1)
    order_version: int


class OrderChange(BaseModel):
    """Move an order from `expected_version` to `status` (version +1); retried safely."""

    order_id: str
    expected_version: int
    status: OrderStatus
    payment_intent_id: str | None = None


class ReleaseInput(BaseModel):
    ticket_id: str
    order_id: str
    reserved_version: int


class Transition(BaseModel):
    """One state change of an order as ONE local activity: the order's versioned change
    first (a conflict stops it before the ticket is touched), then the ticket release, then the events
    that report them (concurrently). `first` events report facts that need no stored state
    (expiration:complete) and go out with the release. Every part is idempotent."""

    change: OrderChange | None = None
    release: ReleaseInput | None = None
    first: list[Envelope] = []
    then: list[Envelope] = []


class PayRequest(BaseModel):
    token: str  # a Stripe PaymentMethod id, e.g. pm_card_visa


class ChargeInfo(BaseModel):
    id: str
    order_id: str
    stripe_id: str
    amount: int  # cents
    currency: str


class PaymentOutcome(BaseModel):
    status: str  # "succeeded" or "requires_action"
    charge: ChargeInfo | None = None
    client_secret: str | None = None
    payment_intent_id: str | None = None


class ChargeInput(BaseModel):
    """Charge the order once: create the PaymentIntent, record its id, confirm it; when it succeeds,
    record the Charge, complete the order (from `expected_version`) and publish charge:created."""

    order_id: str
    attempt: int
    amount: int  # cents
    currency: str
    token: str
    expected_version: int


class ChargeResult(BaseModel):
    intent: IntentResult
    recorded: RecordedCharge | None = None  # set when the intent succeeded


class CreateIntentInput(BaseModel):
    order_id: str
    attempt: int
    amount: int
    currency: str
    token: str


class IntentResult(BaseModel):
    id: str
    status: str
    client_secret: str | None = None
    amount: int  # cents, as Stripe holds the intent
    currency: str


class RecordChargeInput(BaseModel):
    order_id: str
    expected_version: int
    payment_intent_id: str
    amount: int
    currency: str


class RecordedCharge(BaseModel):
    charge: ChargeInfo
    order_version: int


class RefundInput(BaseModel):
    order_id: str
    payment_intent_id: str


ChargeResult.model_rebuild()


class Refusal:
    """The words of each refusal, written once: the API's fast pre-checks and the workflow's
    validators (the real guards) answer the same."""

    TICKET_RESERVED = "Ticket is already reserved"
    NOT_RESERVED = "Order is not reserved"
    PAID = "Order has already been paid"
    CANCELLED = "Cannot pay for a cancelled order"
    EXPIRED = "Order has expired"
    CHARGING = "A payment for this order is in progress"
    COMPLETE = "Cannot cancel a complete order"


class Errors:
    """ApplicationError types raised by the order workflow and its activities."""

    TICKET_RESERVED = "TicketReserved"
    NOT_PAYABLE = "OrderNotPayable"
    CARD_DECLINED = "CardDeclined"
    INVALID_PAYMENT = "InvalidPayment"  # Stripe rejected the request (e.g. unknown PaymentMethod)
    ORDER_COMPLETE = "OrderComplete"
    CONFLICT = "VersionConflict"  # a bug if ever seen: not retried

    # What the API answers for each (the message is the workflow's own); anything else is a 500.
    HTTP: ClassVar[dict[str, tuple[int, str | None]]] = {
        TICKET_RESERVED: (400, None),
        NOT_PAYABLE: (400, None),
        CARD_DECLINED: (402, None),
        INVALID_PAYMENT: (400, "token"),
        ORDER_COMPLETE: (400, None),
    }


# ── the events an order publishes, built from the payloads above (workflow and activities alike) ──
def order_created_event(order: OrderInput, reservation: Reservation) -> Envelope:
    return Envelope.of(
        events.OrderCreated(
            id=order.order_id,
            version=reservation.order_version,
            status=OrderStatus.CREATED,
            user_id=order.user_id,
            expires_at=order.expires_at,
            ticket=events.OrderTicketRef(id=reservation.ticket.id, price=to_major(reservation.ticket.price)),
        )
    )


def ticket_updated_event(ticket: TicketInfo) -> Envelope:
    return Envelope.of(
        events.TicketUpdated(
            id=ticket.id,
            version=ticket.version,
            title=ticket.title,
            price=to_major(ticket.price),
            user_id=ticket.user_id,
            order_id=ticket.order_id,
        )
    )


def charge_created_event(charge: ChargeInfo) -> Envelope:
    return Envelope.of(events.ChargeCreated(**charge.model_dump()))
