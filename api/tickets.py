"""Ticket routes. Prices are integer cents in MongoDB and major units (20.5) in JSON."""

from __future__ import annotations

from typing import Any

from beanie import PydanticObjectId
from fastapi import APIRouter, Response

from api.auth import RequiredUser
from api.deps import Deps
from api.errors import BadRequest, NotAuthorized, NotFound
from api.publishing import publish_after_store
from api.schemas import LIST_RESPONSES, ListBefore, ListLimit, TicketBody, TicketOut, next_page_link, parse_object_id
from ticketing import events, queries
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


@router.get("", response_model=list[TicketOut], responses=LIST_RESPONSES)
async def list_tickets(
    response: Response, limit: ListLimit = queries.LIST_LIMIT_DEFAULT, before: ListBefore = None
) -> list[TicketOut]:
    """Tickets not reserved, newest first, `limit` per page; the next page is `before=<last id>`."""
    cursor = parse_object_id(before) if before else None
    docs = await queries.newest_first(
        Ticket.get_pymongo_collection(), queries.free_tickets(), limit=limit, before=cursor
    )
    tickets = [TicketOut.of(Ticket.model_validate({**d, "id": d["_id"]})) for d in docs]
    next_page_link(response, "/api/tickets", limit, [t.id for t in tickets])
    return tickets


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
    # reserves it in between wins, and the edit is refused rather than silently applied. Pinned to
    # the version read, the result is known without findAndModify (a collection scan on SecantusDB).
    price = to_cents(body.price)
    assert ticket.id is not None  # read from MongoDB
    result = await Ticket.get_pymongo_collection().update_one(
        queries.ticket_free_at(ticket.id, ticket.version),
        {"$set": {"title": body.title, "price": price}, "$inc": {"version": 1}},
    )
    if result.modified_count != 1:
        raise BadRequest("Cannot edit a reserved ticket")
    updated = ticket.model_copy(update={"title": body.title, "price": price, "version": ticket.version + 1})
    await publish_after_store(services, events.TicketUpdated(**_event_fields(updated), order_id=updated.order_id))
    return TicketOut.of(updated)
