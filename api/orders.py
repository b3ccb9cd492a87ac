"""Order routes. Creating an order starts its workflow, which reserves the ticket atomically and
owns the order from then on; the HTTP answer comes from the workflow's `reservation` Update."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from beanie import PydanticObjectId
from bson import ObjectId
from fastapi import APIRouter, Response
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.auth import CurrentUser, RequiredUser
from api.deps import Deps
from api.errors import ApiError, BadRequest, NotAuthorized, NotFound
from api.schemas import OrderBody, OrderOut, parse_object_id
from ticketing.documents import Order, OrderStatus, Ticket
from ticketing.money import to_major
from ticketing.orders import Errors, OrderInput, OrderState
from ticketing.temporal import ORDER_STATUS, TICKET_ID, USER_ID, order_workflow_id
from workflows.order import OrderWorkflow

router = APIRouter(prefix="/api/orders", tags=["orders"])


def update_error(err: WorkflowUpdateFailedError) -> ApiError:
    """Map an Update's ApplicationError to the contract's status codes."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        status = {Errors.CARD_DECLINED: 402}.get(cause.type or "", 400)
        field = "token" if cause.type == Errors.INVALID_PAYMENT else None
        return ApiError(status, cause.message, field)
    return ApiError(500, "Something went wrong")


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
        raise BadRequest("Ticket is already reserved")

    settings = services.settings
    order_id = str(ObjectId())
    now = datetime.now(UTC)
    # MongoDB keeps milliseconds: the workflow and the stored order agree on the same instant.
    expires_at = (now + timedelta(seconds=settings.order_expiration_seconds)).replace(
        microsecond=now.microsecond // 1000 * 1000
    )
    handle = await services.temporal.start_workflow(
        OrderWorkflow.run,
        OrderInput(order_id=order_id, user_id=user.id, ticket_id=str(ticket.id), expires_at=expires_at),
        id=order_workflow_id(order_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(ORDER_STATUS, "pending"),
                SearchAttributePair(USER_ID, user.id),
                SearchAttributePair(TICKET_ID, str(ticket.id)),
            ]
        ),
        memo={"ticketTitle": ticket.title, "ticketPrice": to_major(ticket.price)},
        static_summary=f"Order for “{ticket.title}” ({to_major(ticket.price)} {settings.currency})",
    )
    try:
        # (cast: the SDK's typing loses the return type of an Update declared with options)
        outcome = cast(OrderState, await handle.execute_update(OrderWorkflow.reservation))
    except (RPCError, WorkflowUpdateFailedError):
        # Refused so fast that the workflow closed before the Update answered: its result says why.
        outcome = await handle.result()
    if outcome.rejected_reason:
        raise BadRequest(outcome.rejected_reason)
    order = await Order.get(PydanticObjectId(order_id))
    if order is None:  # cannot happen: the reservation stored it before answering
        raise ApiError(500, "Something went wrong")
    return OrderOut.of(order)


@router.get("", response_model=list[OrderOut])
async def list_orders(user: RequiredUser) -> list[OrderOut]:
    orders = await Order.find(Order.user_id == user.id).sort("-created_at", "-_id").to_list()
    return [OrderOut.of(o) for o in orders]


@router.get("/{order_id}", response_model=OrderOut)
async def show_order(order_id: str, user: RequiredUser) -> OrderOut:
    return OrderOut.of(await owned_order(order_id, user))


@router.delete("/{order_id}", status_code=204)
async def cancel_order(order_id: str, user: RequiredUser, services: Deps) -> Response:
    order = await owned_order(order_id, user)
    if order.status == OrderStatus.COMPLETE:
        raise BadRequest("Cannot cancel a complete order")
    if order.status != OrderStatus.CANCELLED:
        handle = services.temporal.get_workflow_handle(order_workflow_id(order_id))
        try:
            await handle.execute_update(OrderWorkflow.cancel)
        except WorkflowUpdateFailedError as err:
            raise update_error(err) from None
        except RPCError:
            # The workflow has already closed: the stored order tells how it ended.
            order = await owned_order(order_id, user)
            if order.status != OrderStatus.CANCELLED:
                raise BadRequest("Cannot cancel a complete order") from None
    return Response(status_code=204)
