"""Ticket routes. Prices are integer cents in MongoDB and major units (20.5) in JSON."""

from __future__ import annotations

from typing import Any

from beanie import PydanticObjectId
from fastapi import APIRouter
from pymongo import ReturnDocument

from api.auth import RequiredUser
from api.deps import Deps
from api.errors import BadRequest, NotAuthorized, NotFound
from api.publishing import publish_after_store
from api.schemas import TicketBody, TicketOut, parse_object_id
from ticketing import events
from ticketing.documents import Ticket
from ticketing.money import to_cents, to_major

router = APIRouter(prefix="/api/tickets", tags=["tickets"])


async def _get(ticket_id: str) -> Ticket:
    oid = parse_object_id(ticket_id)
    ticket = await Ticket.get(PydanticObjectId(oid)) if oid else None
    if ticket is None:
        raise NotFound("Ticket not found")
    return ticket


def _event_fields(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": str(ticket.id),
        "version": ticket.version,
        "title": ticket.title,
        "price": to_major(ticket.price),
        "user_id": ticket.user_id,
    }


@router.post("", status_code=201, response_model=TicketOut)
async def create_ticket(body: TicketBody, user: RequiredUser, services: Deps) -> TicketOut:
    ticket = Ticket(title=body.title, price=to_cents(body.price), user_id=user.id, version=0)
    await ticket.insert()
    await publish_after_store(services, events.TicketCreated(**_event_fields(ticket)))
    return TicketOut.of(ticket)


@router.get("", response_model=list[TicketOut])
async def list_tickets() -> list[TicketOut]:
    tickets = await Ticket.find(Ticket.order_id == None).sort("_id").to_list()  # noqa: E711 (Beanie query)
    return [TicketOut.of(t) for t in tickets]


@router.get("/{ticket_id}", response_model=TicketOut)
async def show_ticket(ticket_id: str) -> TicketOut:
    return TicketOut.of(await _get(ticket_id))


@router.put("/{ticket_id}", response_model=TicketOut)
async def update_ticket(ticket_id: str, body: TicketBody, user: RequiredUser, services: Deps) -> TicketOut:
    ticket = await _get(ticket_id)
    if ticket.user_id != user.id:
        raise NotAuthorized()
    if ticket.order_id is not None:
        raise BadRequest("Cannot edit a reserved ticket")
    # Conditional on the version we read and on the ticket still being free: an order that
    # reserves it in between wins, and the edit is refused rather than silently applied.
    doc = await Ticket.get_pymongo_collection().find_one_and_update(
        {"_id": ticket.id, "version": ticket.version, "order_id": None},
        {"$set": {"title": body.title, "price": to_cents(body.price)}, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise BadRequest("Cannot edit a reserved ticket")
    updated = Ticket.model_validate({**doc, "id": doc["_id"]})
    await publish_after_store(services, events.TicketUpdated(**_event_fields(updated), order_id=updated.order_id))
    return TicketOut.of(updated)
