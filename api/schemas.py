"""Request bodies (unknown fields rejected) and the response shapes of the contract."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from bson import ObjectId
from fastapi import Query, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic.alias_generators import to_camel

from ticketing.documents import Charge, Order, Ticket
from ticketing.money import to_major
from ticketing.payloads import ChargeInfo, OrderInput, OrderState
from ticketing.queries import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_PRICE = Decimal(1_000_000)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


def parse_object_id(value: str) -> ObjectId | None:
    return ObjectId(value) if ObjectId.is_valid(value) and len(value) == 24 else None


# ── list pages (GET /api/tickets, GET /api/orders) ────────────────────────────────────────────
def _cursor(value: str | None) -> str | None:
    if value is not None and parse_object_id(value) is None:
        raise ValueError("before must be an id from the previous page (24 hexadecimal characters)")
    return value


def _limit(value: object, handler: ValidatorFunctionWrapHandler) -> int:
    try:
        return int(handler(value))
    except ValidationError:
        raise ValueError(f"limit must be a whole number from 1 to {LIST_LIMIT_MAX}") from None


ListLimit = Annotated[
    int,
    Query(
        ge=1,
        le=LIST_LIMIT_MAX,
        description=f"Page size, 1 to {LIST_LIMIT_MAX} (default {LIST_LIMIT_DEFAULT}).",
    ),
    WrapValidator(_limit),
]
ListBefore = Annotated[
    str | None,
    Query(
        description=(
            "Cursor: only items older than the item with this id (newest first). Pass the id of the last "
            "item of a page to get the next page; the `Link` header of a full page carries it."
        ),
        examples=["6a5f2c1e9b1d4e0012345678"],
    ),
    AfterValidator(_cursor),
]


LIST_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "headers": {
            "Link": {
                "description": 'On a full page: `<path?limit=…&before=<last id>>; rel="next"`, the next page.',
                "schema": {"type": "string"},
            }
        }
    }
}


def next_page_link(response: Response, path: str, limit: int, ids: list[str]) -> None:
    """A full page may have a next one: `Link: <path?limit=…&before=<last id>>; rel="next"`."""
    if ids and len(ids) == limit:
        response.headers["Link"] = f'<{path}?limit={limit}&before={ids[-1]}>; rel="next"'


# ── users ─────────────────────────────────────────────────────────────────────────────
class Credentials(Body):
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=254)]
    password: str = Field(max_length=200)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL.match(value):
            raise ValueError("Email must be valid")
        return value.lower()


class SignupBody(Credentials):
    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        if not 4 <= len(value.strip()) <= 20:
            raise ValueError("Password must be between 4 and 20 characters")
        return value.strip()


class SigninBody(Credentials):
    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("You must supply a password")
        return value.strip()


class UserOut(Out):
    id: str
    email: str


class SessionOut(UserOut):
    token: str


class CurrentUserOut(Out):
    current_user: UserOut | None


# ── tickets ───────────────────────────────────────────────────────────────────────────
class TicketBody(Body):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    price: Decimal = Field(gt=0, le=MAX_PRICE, description="major units, at most 2 decimals (20.5)")

    @field_validator("price", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise ValueError("Price must be a number")
        return Decimal(str(value))

    @field_validator("price")
    @classmethod
    def _cents(cls, value: Decimal) -> Decimal:
        if value != value.quantize(Decimal("0.01")):
            raise ValueError("Price must have at most 2 decimals")
        return value


class TicketOut(Out):
    id: str
    title: str
    price: float
    user_id: str
    version: int
    order_id: str | None

    @classmethod
    def of(cls, t: Ticket) -> TicketOut:
        return cls(
            id=str(t.id),
            title=t.title,
            price=to_major(t.price),
            user_id=t.user_id,
            version=t.version,
            order_id=t.order_id,
        )


# ── orders ────────────────────────────────────────────────────────────────────────────
class OrderBody(Body):
    ticket_id: str = Field(max_length=100)


class OrderTicketOut(Out):
    id: str
    title: str
    price: float


class OrderOut(Out):
    id: str
    user_id: str
    status: str
    expires_at: datetime
    version: int
    ticket: OrderTicketOut

    @classmethod
    def of(cls, o: Order) -> OrderOut:
        return cls(
            id=str(o.id),
            user_id=o.user_id,
            status=o.status.value,
            expires_at=o.expires_at,
            version=o.version,
            ticket=OrderTicketOut(id=o.ticket.id, title=o.ticket.title, price=to_major(o.ticket.price)),
        )

    @classmethod
    def started(cls, order: OrderInput, reserved: OrderState) -> OrderOut:
        """What the reservation stored, without reading it back."""
        assert reserved.status is not None
        assert reserved.ticket is not None
        ticket = reserved.ticket
        return cls(
            id=order.order_id,
            user_id=order.user_id,
            status=reserved.status.value,
            expires_at=order.expires_at,
            version=reserved.version,
            ticket=OrderTicketOut(id=ticket.id, title=ticket.title, price=to_major(ticket.price)),
        )


# ── payments ──────────────────────────────────────────────────────────────────────────
TOKEN = re.compile(r"^(pm|tok)_[A-Za-z0-9_]+$")
TOKEN_KINDS = "Token must be a Stripe PaymentMethod id (pm_…) or a Stripe card token (tok_…)"


class PaymentBody(Body):
    order_id: str = Field(max_length=100)
    token: Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)] = Field(
        description="A PaymentMethod id (`pm_…`, from stripe.createPaymentMethod) or a card token "
        "(`tok_…`, from stripe.createToken). Card numbers never reach this API."
    )

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        # Never echo the value: a caller may have pasted a card number here.
        if not TOKEN.match(value):
            raise ValueError(TOKEN_KINDS)
        return value


class ChargeOut(Out):
    id: str
    order_id: str
    stripe_id: str
    amount: int  # cents
    currency: str

    @classmethod
    def of(cls, c: ChargeInfo | Charge) -> ChargeOut:
        return cls(id=str(c.id), order_id=c.order_id, stripe_id=c.stripe_id, amount=c.amount, currency=c.currency)


class PaymentActionOut(Out):
    status: str
    client_secret: str | None
    payment_intent_id: str | None
