"""Money reconciliation: what to do with each Stripe PaymentIntent, given what MongoDB says.

Pure decisions and the models the reconcile workflow, its activities and the CLI exchange (no I/O,
so the workflow sandbox can import them). The rules (issue 12):

- succeeded, its order complete and it is the order's payment, Charge recorded → nothing;
- succeeded, its order complete and it is the order's payment, Charge missing → record + charge:created;
- succeeded, its order cancelled, or complete with a different payment → refund (once);
- not final (requires_action, processing, ...) and its order closed → cancel, so nothing can charge it later;
- its order still open (or its workflow still running) → leave it to the order's workflow;
- no orderId in its metadata, or an order this database does not hold → not ours, left alone.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from ticketing.documents import OrderStatus

# Statuses in which an intent may still take money; Stripe cancels these (processing only for some methods).
OPEN_INTENT = {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture", "processing"}


class Action(StrEnum):
    NOTHING = "nothing"  # consistent already
    RECORD = "record"
    REFUND = "refund"
    CANCEL = "cancel"
    LEAVE = "leave"  # the order is open: its workflow settles it
    FOREIGN = "foreign"  # not one of this deployment's orders


class Outcome(StrEnum):
    """What a run did with one intent (the keys of the figures and the metric's label)."""

    UNCHANGED = "unchanged"
    RECORDED = "recorded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    LEFT_OPEN = "left_open"
    FOREIGN = "foreign"
    PENDING = "pending"  # could not be settled yet (e.g. a refund still running): seen again next run
    ERROR = "error"


# Outcomes whose intent must be looked at again: the watermark stays at or before their creation.
HELD = {Outcome.LEFT_OPEN, Outcome.PENDING, Outcome.ERROR}


class IntentView(BaseModel):
    """The parts of a Stripe PaymentIntent reconciliation reads."""

    id: str
    status: str
    amount: int  # cents
    currency: str
    created: int  # unix seconds
    order_id: str | None = None


class OrderView(BaseModel):
    """An order as MongoDB holds it, with the charges recorded for it."""

    id: str
    status: OrderStatus
    payment_intent_id: str | None = None
    kept_charge: str | None = None  # stripe id of the order's succeeded Charge
    workflow_running: bool = False


class ChargeView(BaseModel):
    """The Charge recorded for one PaymentIntent (by its unique stripe_id)."""

    id: str
    status: str
    refund_id: str | None = None


class Plan(BaseModel):
    intent: IntentView
    order_status: OrderStatus | None = None
    action: Action
    reason: str


class Page(BaseModel):
    plans: list[Plan]
    next_cursor: str | None  # starting_after for the next page; None: this was the last one


class Window(BaseModel):
    since: int  # unix seconds: intents created at or after this are read
    watermark: int | None  # as stored (None: first run)


class Figures(BaseModel):
    seen: int = 0
    unchanged: int = 0
    recorded: int = 0
    refunded: int = 0
    cancelled: int = 0
    left_open: int = 0
    foreign: int = 0
    pending: int = 0
    errors: int = 0
    error_details: list[str] = Field(default_factory=list)  # the first few, for the Web UI

    def count(self, outcome: Outcome) -> None:
        attr = "errors" if outcome == Outcome.ERROR else outcome.value
        setattr(self, attr, getattr(self, attr) + 1)


class ReconcileInput(BaseModel):
    """Empty for a scheduled run. A run that continues as new carries its progress on."""

    pages_per_run: int = Field(default=50, gt=0)  # then continue as new (bounded history)
    since: int | None = None
    cursor: str | None = None
    started: int | None = None
    hold: int | None = None  # earliest creation time of an intent that must be seen again
    pages: int = 0
    figures: Figures = Field(default_factory=Figures)


class ReconcileResult(BaseModel):
    since: int
    watermark: int  # stored for the next run
    pages: int
    figures: Figures


def decide(intent: IntentView, order: OrderView | None, charge: ChargeView | None) -> tuple[Action, str]:
    if intent.order_id is None:
        return Action.FOREIGN, "no orderId in its metadata"
    if order is None:
        return Action.FOREIGN, "no such order in this database"
    if order.status not in (OrderStatus.COMPLETE, OrderStatus.CANCELLED):
        return Action.LEAVE, f"order {order.status.value}: its workflow settles it"
    if order.workflow_running:
        return Action.LEAVE, "order closed, its workflow is still settling"
    if intent.status == "succeeded":
        if charge is not None and charge.refund_id:
            return Action.NOTHING, "refunded"
        if order.status == OrderStatus.CANCELLED:
            return Action.REFUND, "paid for a cancelled order"
        kept = order.kept_charge or order.payment_intent_id
        if kept is None or kept == intent.id:
            if charge is not None:
                return Action.NOTHING, "the order's charge"
            # With no payment known, the unique index lets one intent become the order's charge.
            return Action.RECORD, "the order's payment, no Charge recorded"
        return Action.REFUND, f"order already paid by {kept}"
    if intent.status in OPEN_INTENT:
        return Action.CANCEL, f"{intent.status} for a {order.status.value} order"
    return Action.NOTHING, intent.status  # canceled, or failed for good
