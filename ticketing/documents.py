"""MongoDB documents (Beanie). Each entity carries an integer `version`, +1 per stored change.

Changes are applied with conditional updates from the expected previous version, so a retried
Temporal activity or a concurrent request never applies one change twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import pymongo
from beanie import Document
from pydantic import BaseModel, Field
from pymongo import IndexModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class OrderStatus(StrEnum):
    CREATED = "created"
    AWAITING_PAYMENT = "awaiting:payment"
    COMPLETE = "complete"
    CANCELLED = "cancelled"


class User(Document):
    email: str
    password_hash: str
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "users"
        indexes = [IndexModel([("email", pymongo.ASCENDING)], unique=True)]


class Ticket(Document):
    title: str
    price: int  # cents
    user_id: str
    version: int = 0
    order_id: str | None = None

    class Settings:
        name = "tickets"
        indexes = [
            # The free-ticket list: order_id null, newest _id first (ticketing/queries.py).
            IndexModel([("order_id", pymongo.ASCENDING), ("_id", pymongo.DESCENDING)]),
            # Every ticket, newest first (the web page /): SecantusDB serves no `_id` range from the
            # built-in _id_ index, only from a secondary one.
            IndexModel([("_id", pymongo.DESCENDING)]),
        ]


class TicketSnapshot(BaseModel):
    id: str
    title: str
    price: int  # cents


class Order(Document):
    user_id: str
    status: OrderStatus = OrderStatus.CREATED
    expires_at: datetime
    version: int = 0
    ticket: TicketSnapshot
    payment_intent_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "orders"
        # A user's orders, newest _id first (ticketing/queries.py).
        indexes = [IndexModel([("user_id", pymongo.ASCENDING), ("_id", pymongo.DESCENDING)])]


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    REFUNDED = "refunded"


class Charge(Document):
    order_id: str
    stripe_id: str  # the PaymentIntent id
    amount: int  # cents
    currency: str
    status: ChargeStatus = ChargeStatus.SUCCEEDED
    refund_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "charges"
        indexes = [
            IndexModel([("stripe_id", pymongo.ASCENDING)], unique=True),
            # At most one charge that kept the money per order.
            IndexModel(
                [("order_id", pymongo.ASCENDING)],
                unique=True,
                partialFilterExpression={"status": "succeeded"},
                name="one_succeeded_charge_per_order",
            ),
        ]


SIGNIN_WINDOW_SECONDS = 60


class SigninFailure(Document):
    """One failed sign-in for a key (`email:...` or `ip:...`), shared by every API replica: the
    rate limit counts these within the window; MongoDB's TTL monitor deletes them afterwards."""

    key: str
    at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "signin_failures"
        indexes = [
            # The limiter's count (key equality, then a range on `at`) is answered from this index.
            IndexModel([("key", pymongo.ASCENDING), ("at", pymongo.ASCENDING)], name="key_at"),
            IndexModel([("at", pymongo.ASCENDING)], expireAfterSeconds=SIGNIN_WINDOW_SECONDS, name="expire_at"),
        ]


DOCUMENT_MODELS: list[type[Document]] = [User, Ticket, Order, Charge, SigninFailure]
