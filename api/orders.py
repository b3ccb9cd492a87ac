"""Order routes. Creating an order starts its workflow, which reserves the ticket atomically and
owns the order from then on; the HTTP answer comes from the workflow's `reservation` Update."""

from __future__ import annotations

from beanie import PydanticObjectId
from fastapi import APIRouter, Response

from api.auth import CurrentUser, RequiredUser
from api.deps import Deps
from api.errors import BadRequest, NotAuthorized, NotFound
from api.schemas import LIST_RESPONSES, ListBefore, ListLimit, OrderBody, OrderOut, next_page_link, parse_object_id
from ticketing import order_service, queries
from ticketing.documents import Order, OrderStatus, Ticket
from ticketing.payloads import Refusal, TicketInfo

router = APIRouter(prefix="/api/orders", tags=["orders"])


async def owned_order(order_id: str, user: CurrentUser) -> Order:
    oid = parse_object_id(order_id)
    order = await Order.get(PydanticObjectId(oid)) if oid else None
    if order is None:
        raise NotFound("Order not found")
    if order.user_id != user.id:
        raise NotAuthorized()
    return order


@router.post("", status_code=201, response_model=OrderOut)
async def create_order(body: OrderBody, user: RequiredUser, services: Deps) -> OrderOut:
    ticket_oid = parse_object_id(body.ticket_id)
    if ticket_oid is None:
        raise BadRequest("Ticket id must be valid", "ticketId")
    ticket = await Ticket.get(PydanticObjectId(ticket_oid))
    if ticket is None:
        raise NotFound("Ticket not found")
    if ticket.order_id is not None:  # fast refusal; the workflow's reservation is the real guard
        raise BadRequest(Refusal.TICKET_RESERVED)

    order, reserved = await order_service.start_order(
        services.temporal,
        services.settings,
        user_id=user.id,
        ticket=TicketInfo(
            id=str(ticket.id), title=ticket.title, price=ticket.price, user_id=ticket.user_id, version=ticket.version
        ),
    )
    return OrderOut.started(order, reserved)


@router.get("", response_model=list[OrderOut], responses=LIST_RESPONSES)
async def list_orders(
    user: RequiredUser, response: Response, limit: ListLimit = queries.LIST_LIMIT_DEFAULT, before: ListBefore = None
) -> list[OrderOut]:
    """The caller's orders, newest first (by id: the order's creation), `limit` per page."""
    cursor = parse_object_id(before) if before else None
    docs = await queries.newest_first(
        Order.get_pymongo_collection(), queries.orders_of(user.id), limit=limit, before=cursor
    )
    orders = [OrderOut.of(Order.model_validate({**d, "id": d["_id"]})) for d in docs]
    next_page_link(response, "/api/orders", limit, [o.id for o in orders])
    return orders


@router.get("/{order_id}", response_model=OrderOut)
async def show_order(order_id: str, user: RequiredUser) -> OrderOut:
    return OrderOut.of(await owned_order(order_id, user))


@router.delete("/{order_id}", status_code=204)
async def cancel_order(order_id: str, user: RequiredUser, services: Deps) -> Response:
    order = await owned_order(order_id, user)
    if order.status == OrderStatus.COMPLETE:
        raise BadRequest(Refusal.COMPLETE)
    if order.status != OrderStatus.CANCELLED and not await order_service.cancel(services.temporal, order_id):
        # The workflow has already closed: the stored order tells how it ended.
        order = await owned_order(order_id, user)
        if order.status != OrderStatus.CANCELLED:
            raise BadRequest(Refusal.COMPLETE)
    return Response(status_code=204)
