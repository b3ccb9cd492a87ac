"""MongoDB state changes of the order workflow. Each is idempotent: a retry after a lost reply
finds its change already stored and returns the same result, never applying it twice."""

from __future__ import annotations

import contextlib

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ticketing.documents import Charge, ChargeStatus, Order, OrderStatus, Ticket, TicketSnapshot, utcnow
from ticketing.orders import (
    ChargeInfo,
    Errors,
    OrderChange,
    RecordChargeInput,
    RecordedCharge,
    ReleaseInput,
    Reservation,
    ReserveInput,
    TicketInfo,
)

FINAL = [OrderStatus.COMPLETE.value, OrderStatus.CANCELLED.value]


def _ticket_info(doc: dict) -> TicketInfo:
    return TicketInfo(
        id=str(doc["_id"]),
        title=doc["title"],
        price=doc["price"],
        user_id=doc["user_id"],
        version=doc["version"],
        order_id=doc.get("order_id"),
    )


def _conflict(what: str) -> ApplicationError:
    return ApplicationError(what, type=Errors.CONFLICT, non_retryable=True)


class OrderActivities:
    @activity.defn
    async def reserve_ticket(self, req: ReserveInput) -> Reservation:
        """Atomically take the ticket for this order (only if free), then store the order."""
        tickets = Ticket.get_pymongo_collection()
        ticket_oid = ObjectId(req.ticket_id)
        doc = await tickets.find_one_and_update(
            {"_id": ticket_oid, "order_id": None},
            {"$set": {"order_id": req.order_id}, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            doc = await tickets.find_one({"_id": ticket_oid})
            if doc is None:
                raise ApplicationError("Ticket not found", type=Errors.TICKET_RESERVED, non_retryable=True)
            if doc.get("order_id") != req.order_id:  # not ours from an earlier attempt
                raise ApplicationError("Ticket is already reserved", type=Errors.TICKET_RESERVED, non_retryable=True)
        ticket = _ticket_info(doc)
        order = Order(
            id=ObjectId(req.order_id),
            user_id=req.user_id,
            status=OrderStatus.CREATED,
            expires_at=req.expires_at,
            version=0,
            ticket=TicketSnapshot(id=ticket.id, title=ticket.title, price=ticket.price),
        )
        with contextlib.suppress(DuplicateKeyError):  # stored by an earlier attempt
            await order.insert()
        return Reservation(ticket=ticket, order_version=0)

    @activity.defn
    async def change_order(self, change: OrderChange) -> int:
        """Set the order's status from `expected_version`; returns the new version."""
        return await _change_order(change)

    @activity.defn
    async def complete_order(self, req: RecordChargeInput) -> RecordedCharge:
        """Store the Charge (once per PaymentIntent), then mark the order complete."""
        charges = Charge.get_pymongo_collection()
        try:
            doc = await charges.find_one_and_update(
                {"stripe_id": req.payment_intent_id},
                {
                    "$setOnInsert": {
                        "order_id": req.order_id,
                        "stripe_id": req.payment_intent_id,
                        "amount": req.amount,
                        "currency": req.currency,
                        "status": ChargeStatus.SUCCEEDED.value,
                        "refund_id": None,
                        "created_at": utcnow(),
                    }
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as err:
            raise _conflict(f"order {req.order_id} already has a succeeded charge") from err
        assert doc is not None  # upsert=True with ReturnDocument.AFTER always returns the document
        version = await _change_order(
            OrderChange(
                order_id=req.order_id,
                expected_version=req.expected_version,
                status=OrderStatus.COMPLETE,
                payment_intent_id=req.payment_intent_id,
            )
        )
        charge = ChargeInfo(
            id=str(doc["_id"]),
            order_id=doc["order_id"],
            stripe_id=doc["stripe_id"],
            amount=doc["amount"],
            currency=doc["currency"],
        )
        return RecordedCharge(charge=charge, order_version=version)

    @activity.defn
    async def release_ticket(self, req: ReleaseInput) -> TicketInfo:
        """Free the ticket this order reserved; returns the ticket as released (version +1)."""
        tickets = Ticket.get_pymongo_collection()
        doc = await tickets.find_one_and_update(
            {"_id": ObjectId(req.ticket_id), "order_id": req.order_id, "version": req.reserved_version},
            {"$set": {"order_id": None}, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return _ticket_info(doc)
        doc = await tickets.find_one({"_id": ObjectId(req.ticket_id)})
        # A reserved ticket cannot be edited, so its only next version is our release.
        if doc is not None and doc["version"] > req.reserved_version and doc.get("order_id") != req.order_id:
            released = _ticket_info(doc)
            return released.model_copy(update={"version": req.reserved_version + 1, "order_id": None})
        raise _conflict(f"ticket {req.ticket_id} is not reserved by order {req.order_id}")


async def _change_order(change: OrderChange) -> int:
    orders = Order.get_pymongo_collection()
    oid = ObjectId(change.order_id)
    update: dict = {"$set": {"status": change.status.value}, "$inc": {"version": 1}}
    if change.payment_intent_id:
        update["$set"]["payment_intent_id"] = change.payment_intent_id
    doc = await orders.find_one_and_update(
        {"_id": oid, "version": change.expected_version, "status": {"$nin": FINAL}},
        update,
        return_document=ReturnDocument.AFTER,
    )
    if doc is not None:
        return int(doc["version"])
    doc = await orders.find_one({"_id": oid})
    if doc is not None and doc["version"] == change.expected_version + 1 and doc["status"] == change.status.value:
        return int(doc["version"])  # applied by an earlier attempt whose reply was lost
    found = (doc["status"], doc["version"]) if doc else None
    raise _conflict(f"order {change.order_id}: expected version {change.expected_version}, found {found}")
