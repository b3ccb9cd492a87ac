"""MongoDB state changes of the order workflow. Each is idempotent: a retry after a lost reply
finds its change already stored and returns the same result, never applying it twice."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ticketing import queries
from ticketing.bus import EventBus
from ticketing.documents import Charge, ChargeStatus, Order, OrderStatus, Ticket, utcnow
from ticketing.events import Envelope
from ticketing.payloads import (
    ChargeInfo,
    Errors,
    OpenOrderInput,
    OrderChange,
    RecordChargeInput,
    RecordedCharge,
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


async def publish_all(bus: EventBus, envelopes: list[Envelope]) -> None:
    """Publish concurrently: each message carries its own Nats-Msg-Id, so order between them does not
    matter and a retry re-sends only duplicates that JetStream drops."""
    await asyncio.gather(*(bus.publish(e.event()) for e in envelopes))


class OrderActivities:
    """`bus` is needed by the one-step transitions (open_order, transition, record_charge); the older
    single-step activities stay registered for orders whose histories still schedule them."""

    def __init__(self, bus: EventBus | None = None) -> None:
        self._bus = bus

    @property
    def bus(self) -> EventBus:
        if self._bus is None:
            raise RuntimeError("OrderActivities needs an EventBus for this activity")
        return self._bus

    @activity.defn
    async def open_order(self, req: OpenOrderInput) -> Reservation:
        """Reserve the ticket and store the order, then announce both (order:created, ticket:updated):
        the whole creation in one local activity, so the reservation Update answers after one step."""
        order = req.order
        reservation = await self.reserve_ticket(
            ReserveInput(
                order_id=order.order_id,
                user_id=order.user_id,
                ticket_id=order.ticket_id,
                expires_at=order.expires_at,
                seen=order.ticket,
            )
        )
        await publish_all(self.bus, [order_created_event(order, reservation), ticket_updated_event(reservation.ticket)])
        return reservation

    @activity.defn
    async def transition(self, req: Transition) -> int | None:
        """An order's state change in one step: the order first, then the ticket release (with the
        `first` events); the events that report them go out once both are stored. Returns the order's
        new version (None when the transition changes no order).

        The order goes first because its versioned update is the check that this workflow still knows
        the order: if it moved on without it (paid by a charge whose Update the server aborted), the
        conflict fails the workflow with the ticket still held, not released under a paid order."""
        version = await _change_order(req.change) if req.change is not None else None
        writes: list[Any] = [publish_all(self.bus, req.first)]
        if req.release is not None:
            writes.append(self._release(req.release))
        await asyncio.gather(*writes)
        await publish_all(self.bus, req.then)
        return version

    async def _release(self, req: ReleaseInput) -> None:
        """Free the ticket this order reserved, in one update when nothing raced it (the workflow knows
        the ticket as released already); otherwise the checks of release_ticket."""
        result = await Ticket.get_pymongo_collection().update_one(
            queries.ticket_held_at(ObjectId(req.ticket_id), req.order_id, req.reserved_version),
            {"$set": {"order_id": None}, "$inc": {"version": 1}},
        )
        if result.modified_count != 1:
            await self.release_ticket(req)  # released by an earlier attempt, or a conflict

    @activity.defn
    async def record_charge(self, req: RecordChargeInput) -> RecordedCharge:
        """complete_order + charge:created in one step (a 3-D Secure payment confirmed by webhook)."""
        recorded = await self.complete_order(req)
        await publish_all(self.bus, [charge_created_event(recorded.charge)])
        return recorded

    @activity.defn
    async def reserve_ticket(self, req: ReserveInput) -> Reservation:
        """Atomically take the ticket for this order (only if free), then store the order."""
        tickets = Ticket.get_pymongo_collection()
        ticket_oid = ObjectId(req.ticket_id)
        doc = await _take_ticket(tickets, ticket_oid, req.order_id, req.seen)
        if doc is None:
            raise ApplicationError("Ticket not found", type=Errors.TICKET_RESERVED, non_retryable=True)
        if doc.get("order_id") != req.order_id:  # not ours from an earlier attempt
            raise ApplicationError(Refusal.TICKET_RESERVED, type=Errors.TICKET_RESERVED, non_retryable=True)
        ticket = _ticket_info(doc)
        # The Order document's fields (ticketing/documents.py), written without Beanie's per-insert
        # validation and state tracking: a fifth of this activity's CPU (py-spy).
        order = {
            "_id": ObjectId(req.order_id),
            "user_id": req.user_id,
            "status": OrderStatus.CREATED.value,
            "expires_at": req.expires_at,
            "version": 0,
            "ticket": {"id": ticket.id, "title": ticket.title, "price": ticket.price},
            "payment_intent_id": None,
            "created_at": utcnow(),
        }
        with contextlib.suppress(DuplicateKeyError):  # stored by an earlier attempt
            await Order.get_pymongo_collection().insert_one(order)
        return Reservation(ticket=ticket, order_version=0)

    @activity.defn
    async def change_order(self, change: OrderChange) -> int:
        """Set the order's status from `expected_version`; returns the new version."""
        return await _change_order(change)

    @activity.defn
    async def complete_order(self, req: RecordChargeInput) -> RecordedCharge:
        """Store the Charge (once per PaymentIntent), then mark the order complete."""
        charges = Charge.get_pymongo_collection()
        doc: dict[str, Any] = {
            "order_id": req.order_id,
            "stripe_id": req.payment_intent_id,
            "amount": req.amount,
            "currency": req.currency,
            "status": ChargeStatus.SUCCEEDED.value,
            "refund_id": None,
            "created_at": utcnow(),
        }
        # insert, not an upsert through findAndModify (a collection scan in SecantusDB): the unique
        # index on stripe_id makes a retry find the charge stored by the first attempt.
        try:
            await charges.insert_one(doc)
        except DuplicateKeyError as err:
            existing = await charges.find_one(queries.charge_by_intent(req.payment_intent_id))
            if existing is None or existing["order_id"] != req.order_id:
                raise _conflict(f"order {req.order_id} already has a succeeded charge") from err
            doc = existing
        version = await _change_order(
            OrderChange(
                order_id=req.order_id,
                expected_version=req.expected_version,
                status=OrderStatus.COMPLETE,
                payment_intent_id=req.payment_intent_id,
            )
        )
        return RecordedCharge(charge=charge_info(doc), order_version=version)

    @activity.defn
    async def release_ticket(self, req: ReleaseInput) -> TicketInfo:
        """Free the ticket this order reserved; returns the ticket as released (version +1)."""
        tickets = Ticket.get_pymongo_collection()
        ticket_oid = ObjectId(req.ticket_id)
        doc = await tickets.find_one(queries.by_id(ticket_oid))
        if doc is not None and doc.get("order_id") == req.order_id and doc["version"] == req.reserved_version:
            # Nothing changes a ticket without a version bump, so `doc` is the state this update applies to.
            result = await tickets.update_one(
                queries.ticket_held_at(ticket_oid, req.order_id, req.reserved_version),
                {"$set": {"order_id": None}, "$inc": {"version": 1}},
            )
            if result.modified_count == 1:
                return _ticket_info({**doc, "order_id": None, "version": req.reserved_version + 1})
            doc = await tickets.find_one(queries.by_id(ticket_oid))
        # A reserved ticket cannot be edited, so its only next version is our release.
        if doc is not None and doc["version"] > req.reserved_version and doc.get("order_id") != req.order_id:
            released = _ticket_info(doc)
            return released.model_copy(update={"version": req.reserved_version + 1, "order_id": None})
        raise _conflict(f"ticket {req.ticket_id} is not reserved by order {req.order_id}")


def charge_info(doc: dict[str, Any]) -> ChargeInfo:
    """A stored Charge document as the payload the workflow and charge:created carry."""
    return ChargeInfo(
        id=str(doc["_id"]),
        order_id=doc["order_id"],
        stripe_id=doc["stripe_id"],
        amount=doc["amount"],
        currency=doc["currency"],
    )


async def _change_order(change: OrderChange) -> int:
    orders = Order.get_pymongo_collection()
    oid = ObjectId(change.order_id)
    update: dict = {"$set": {"status": change.status.value}, "$inc": {"version": 1}}
    if change.payment_intent_id:
        update["$set"]["payment_intent_id"] = change.payment_intent_id
    # update_one, not find_one_and_update: the filter pins the version, so the new one is known, and
    # SecantusDB (the local MongoDB) runs findAndModify as a collection scan but update by _id on the index.
    result = await orders.update_one(queries.order_open_at(oid, change.expected_version), update)
    if result.modified_count == 1:
        return change.expected_version + 1
    doc = await orders.find_one(queries.by_id(oid))
    if doc is not None and doc["version"] == change.expected_version + 1 and doc["status"] == change.status.value:
        return int(doc["version"])  # applied by an earlier attempt whose reply was lost
    found = (doc["status"], doc["version"]) if doc else None
    raise _conflict(f"order {change.order_id}: expected version {change.expected_version}, found {found}")


async def _take_ticket(tickets: Any, ticket_oid: ObjectId, order_id: str, seen: TicketInfo | None) -> dict | None:
    """Reserve the ticket for `order_id` if it is free; the ticket as it is afterwards (None: no such ticket).

    `seen`: the ticket as the API read it when it was free; if it is still that version, one update
    reserves it (no read).

    Read, then a conditional update pinned to the version read (optimistic concurrency): atomic like
    find_one_and_update, which SecantusDB (the local MongoDB) runs as a collection scan, while reads and
    updates by _id use the index (measured 130 ms vs 1-2 ms per call with 10,000 tickets).
    """
    if seen is not None and seen.order_id is None:
        result = await tickets.update_one(
            queries.ticket_free_at(ticket_oid, seen.version),
            {"$set": {"order_id": order_id}, "$inc": {"version": 1}},
        )
        if result.modified_count == 1:
            return {
                "_id": ticket_oid,
                "title": seen.title,
                "price": seen.price,
                "user_id": seen.user_id,
                "order_id": order_id,
                "version": seen.version + 1,
            }
    for _ in range(20):
        doc = await tickets.find_one(queries.by_id(ticket_oid))
        if doc is None or doc.get("order_id") is not None:
            return doc  # missing, reserved by another order, or ours from an earlier attempt
        result = await tickets.update_one(
            queries.ticket_free_at(ticket_oid, doc["version"]),
            {"$set": {"order_id": order_id}, "$inc": {"version": 1}},
        )
        if result.modified_count == 1:
            return {**doc, "order_id": order_id, "version": doc["version"] + 1}
        # changed between the read and the update (edited or reserved meanwhile): read again
    raise ApplicationError("Ticket kept changing while being reserved")  # retryable
