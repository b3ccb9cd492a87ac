"""The order service: the one place that starts, pays and cancels orders through their workflows.
The routes (api/orders.py, api/payments.py), the benchmark and the tests call it; refusals carry
their HTTP status (ticketing/errors.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from bson import ObjectId
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from ticketing.documents import OrderStatus
from ticketing.errors import BadRequest, ServiceError
from ticketing.money import to_major
from ticketing.payloads import Errors, OrderInput, OrderState, PaymentOutcome, PayRequest, Refusal, TicketInfo
from ticketing.settings import Settings
from ticketing.temporal import ORDER_STATUS, TICKET_ID, USER_ID, order_workflow_id
from workflows.order import OrderWorkflow

T = TypeVar("T")


def refusal(err: WorkflowUpdateFailedError) -> ServiceError:
    """An Update's ApplicationError as the HTTP answer of Errors.HTTP (unknown failures are a 500)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in Errors.HTTP:
        status, field = Errors.HTTP[cause.type]
        return ServiceError(status, cause.message, field)
    return ServiceError(500, "Something went wrong")


def expiry(settings: Settings, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    # MongoDB keeps milliseconds: the workflow and the stored order agree on the same instant.
    return (now + timedelta(seconds=settings.order_expiration_seconds)).replace(
        microsecond=now.microsecond // 1000 * 1000
    )


async def start_order(
    temporal: Client,
    settings: Settings,
    *,
    user_id: str,
    ticket: TicketInfo,
    expires_at: datetime | None = None,
) -> tuple[OrderInput, OrderState]:
    """Start `order-<id>` and wait for its reservation: ONE RPC (Update-With-Start), so the Update is
    delivered in the workflow's first task. Search attributes and memo are set here, at start, where
    they cost no visibility write of their own. `ticket` is the ticket as the caller read it (free):
    the reservation tries that version first. Returns the order as started and as reserved (its
    ticket snapshot and version: what is stored); BadRequest when refused."""
    order_id = str(ObjectId())
    order = OrderInput(
        order_id=order_id,
        user_id=user_id,
        ticket_id=ticket.id,
        expires_at=expires_at or expiry(settings),
        currency=settings.currency,
        ticket=ticket,
    )
    start = WithStartWorkflowOperation(
        OrderWorkflow.run,
        order,
        id=order_workflow_id(order_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(ORDER_STATUS, OrderStatus.CREATED.value),
                SearchAttributePair(USER_ID, user_id),
                SearchAttributePair(TICKET_ID, ticket.id),
            ]
        ),
        memo={"ticketTitle": ticket.title, "ticketPrice": to_major(ticket.price)},
        static_summary=f"Order for “{ticket.title}” ({to_major(ticket.price)} {settings.currency})",
    )
    try:
        # (cast: the SDK's typing loses the return type of an Update declared with options)
        reservation = temporal.execute_update_with_start_workflow(
            OrderWorkflow.reservation, start_workflow_operation=start
        )
        outcome = cast(OrderState, await reservation)
    except (RPCError, WorkflowUpdateFailedError):
        # Refused so fast that the workflow closed before the Update answered: its result says why.
        handle = await start.workflow_handle()
        outcome = await handle.result()
    if outcome.rejected_reason or outcome.ticket is None:
        raise BadRequest(outcome.rejected_reason or Refusal.TICKET_RESERVED)
    return order, outcome


async def _redelivered(send: Callable[[], Awaitable[T]], tries: int = 3) -> T:
    """Send an Update again when the server aborted it with its workflow task.

    A task the server refuses (UnhandledCommand: a Stripe webhook's signal arrived while the task that
    completes the order ran) takes the Updates it had accepted with it: the caller gets
    FAILED_PRECONDITION, while the task's local activity may already have charged and stored. The
    workflow never recorded the Update, so sending it again is safe and finds that work done (the
    charge is keyed by order and attempt, every write is versioned): the buyer gets the charge.
    """
    for _ in range(tries - 1):
        try:
            return await send()
        except RPCError as err:
            if err.status != RPCStatusCode.FAILED_PRECONDITION:
                raise
    return await send()


async def pay(temporal: Client, order_id: str, token: str) -> PaymentOutcome:
    """Charge through the workflow's `pay` Update (it answers with the charge or 3-D Secure's secret).
    RPCError: the workflow has closed (the caller reads the stored order to say why)."""
    handle = temporal.get_workflow_handle(order_workflow_id(order_id))
    try:
        return await _redelivered(lambda: handle.execute_update(OrderWorkflow.pay, PayRequest(token=token)))
    except WorkflowUpdateFailedError as err:
        raise refusal(err) from None


async def cancel(temporal: Client, order_id: str) -> bool:
    """Cancel through the workflow's `cancel` Update; False when the workflow has already closed."""
    handle = temporal.get_workflow_handle(order_workflow_id(order_id))
    try:
        await _redelivered(lambda: handle.execute_update(OrderWorkflow.cancel))
    except WorkflowUpdateFailedError as err:
        raise refusal(err) from None
    except RPCError:
        return False
    return True
