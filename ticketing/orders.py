"""Inputs and results exchanged between the API, the order workflow and its activities.

Plain pydantic models (the Temporal client and worker use the pydantic data converter), kept
free of I/O so the workflow sandbox can import them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from ticketing.documents import OrderStatus


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


class OrderState(BaseModel):
    """The order as the workflow knows it; returned by the `status` query."""

    order_id: str
    status: OrderStatus | None = None  # None until the ticket is reserved
    version: int = 0
    payment_intent_id: str | None = None
    charging: bool = False
    rejected_reason: str | None = None


class ReserveInput(BaseModel):
    order_id: str
    user_id: str
    ticket_id: str
    expires_at: datetime


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
    amount: int = 0
    currency: str = "usd"


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


class Errors:
    """ApplicationError types the API maps to HTTP statuses."""

    TICKET_RESERVED = "TicketReserved"  # 400
    NOT_PAYABLE = "OrderNotPayable"  # 400
    CARD_DECLINED = "CardDeclined"  # 402
    INVALID_PAYMENT = "InvalidPayment"  # 400: Stripe rejected the request (e.g. unknown PaymentMethod)
    ORDER_COMPLETE = "OrderComplete"  # 400
    CONFLICT = "VersionConflict"  # a bug if ever seen: not retried
