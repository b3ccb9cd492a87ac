"""The order workflow's races (type `Order`), decided by the test instead of wall-clock offsets.

Temporal's time-skipping test server moves the workflow clock only when the test says so (while a
workflow task or an activity is open it runs at wall speed); stub activities registered under the
real names record every call and can be held until the test lets them go; and events meant to race
inside ONE workflow task are queued while no worker polls, so the next worker gets them together.
The API's own calls drive the workflow (ticketing/order_service.py: Update-With-Start, `pay` and
`cancel` Updates; Stripe's webhook is the `payment_succeeded` signal). Two tests run on the suite's
dev server instead, where the test server does not behave like the real one (said there)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from bson import ObjectId
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.update.v1 import UpdateRef
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    StartWorkflowUpdateWithStartInput,
    WorkflowHandle,
    WorkflowUpdateHandle,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from devstack import find_binary
from ticketing import order_service
from ticketing.documents import OrderStatus
from ticketing.errors import ServiceError
from ticketing.payloads import (
    ChargeInfo,
    ChargeInput,
    ChargeResult,
    IntentResult,
    OpenOrderInput,
    OrderChange,
    OrderInput,
    OrderState,
    PaymentOutcome,
    RecordChargeInput,
    RecordedCharge,
    RefundInput,
    Refusal,
    Reservation,
    TicketInfo,
    Transition,
)
from ticketing.settings import Settings
from ticketing.temporal import SEARCH_ATTRIBUTES, order_workflow_id
from workflows.order import OrderWorkflow

from .conftest import Servers

R = TypeVar("R")
TICKET = TicketInfo(id=str(ObjectId()), title="Concert", price=2050, user_id="seller", version=3)
THREE_D_SECURE = "pm_card_threeDSecure2Required"
# As the tests' worker runs workflows (tests/conftest.py: sandboxed, modules passed through).
RUNNER = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())


# ── stub activities ───────────────────────────────────────────────────────────────────────
@dataclass
class Gate:
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)


class Stubs:
    """activities/orders.py and activities/payments.py as the workflow sees them. Every call is
    recorded as (name, input); `hold(name)` makes that activity wait until the test opens the gate.
    `charge_status` is Stripe's answer to a charge (`pi_<attempt>`), `cancel_status` its answer when
    the workflow cancels a pending 3-D Secure intent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gates: dict[str, Gate] = {}
        self.charge_status = "succeeded"
        self.cancel_status = "canceled"

    def hold(self, name: str) -> Gate:
        self.gates[name] = Gate()
        return self.gates[name]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def inputs(self, name: str) -> list[Any]:
        return [arg for called, arg in self.calls if called == name]

    async def _called(self, name: str, arg: object) -> None:
        self.calls.append((name, arg))
        gate = self.gates.get(name)
        if gate is not None:
            gate.entered.set()
            await gate.opened.wait()

    @activity.defn(name="open_order")
    async def open_order(self, req: OpenOrderInput) -> Reservation:
        await self._called("open_order", req)
        ticket = TICKET.model_copy(update={"order_id": req.order.order_id, "version": TICKET.version + 1})
        return Reservation(ticket=ticket, order_version=0)

    @activity.defn(name="charge_order")
    async def charge_order(self, req: ChargeInput) -> ChargeResult:
        await self._called("charge_order", req)
        intent_id = f"pi_{req.attempt}"
        intent = IntentResult(
            id=intent_id,
            status=self.charge_status,
            client_secret=f"{intent_id}_secret",
            amount=req.amount,
            currency="usd",
        )
        if intent.status != "succeeded":
            return ChargeResult(intent=intent)
        return ChargeResult(intent=intent, recorded=_recorded(req.order_id, intent_id, req.expected_version))

    @activity.defn(name="change_order")
    async def change_order(self, change: OrderChange) -> int:
        await self._called("change_order", change)
        return change.expected_version + 1

    @activity.defn(name="record_charge")
    async def record_charge(self, req: RecordChargeInput) -> RecordedCharge:
        await self._called("record_charge", req)
        return _recorded(req.order_id, req.payment_intent_id, req.expected_version)

    @activity.defn(name="transition")
    async def transition(self, req: Transition) -> int | None:
        await self._called("transition", req)
        return None if req.change is None else req.change.expected_version + 1

    @activity.defn(name="cancel_payment_intent")
    async def cancel_payment_intent(self, payment_intent_id: str) -> IntentResult:
        await self._called("cancel_payment_intent", payment_intent_id)
        return IntentResult(id=payment_intent_id, status=self.cancel_status, amount=TICKET.price, currency="usd")

    @activity.defn(name="refund_payment")
    async def refund_payment(self, req: RefundInput) -> str:
        await self._called("refund_payment", req)
        return f"re_{req.payment_intent_id}"

    def activities(self) -> list[Any]:
        return [
            self.open_order,
            self.charge_order,
            self.change_order,
            self.record_charge,
            self.transition,
            self.cancel_payment_intent,
            self.refund_payment,
        ]


def _recorded(order_id: str, intent_id: str, expected_version: int) -> RecordedCharge:
    charge = ChargeInfo(
        id=f"ch_{intent_id}", order_id=order_id, stripe_id=intent_id, amount=TICKET.price, currency="usd"
    )
    return RecordedCharge(charge=charge, order_version=expected_version + 1)


# ── the client's side ──────────────────────────────────────────────────────────────────────
class Hooks(Interceptor):
    """Names every Update the client sends (so the test can see the server holds it), and can give
    the order's workflow a shorter workflow-task timeout than the order service's default."""

    def __init__(self) -> None:
        self.update_ids: list[str] = []
        self.task_timeout: timedelta | None = None

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Outbound(next, self)


class _Outbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, hooks: Hooks) -> None:
        super().__init__(next)
        self.hooks = hooks

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle[Any]:
        input.update_id = input.update_id or str(uuid.uuid4())
        self.hooks.update_ids.append(input.update_id)
        return await super().start_workflow_update(input)

    async def start_update_with_start_workflow(
        self, input: StartWorkflowUpdateWithStartInput
    ) -> WorkflowUpdateHandle[Any]:
        if self.hooks.task_timeout is not None:
            input.start_workflow_input.task_timeout = self.hooks.task_timeout
        return await super().start_update_with_start_workflow(input)


def after(events: list[str], first: str) -> list[str]:
    """The events after the first `first` (none when it is not there yet)."""
    return events[events.index(first) + 1 :] if first in events else []


async def refusal(call: Awaitable[object]) -> tuple[int, str]:
    """The HTTP status and message the API answers with when the workflow refuses `call`."""
    with pytest.raises(ServiceError) as refused:
        await call
    return refused.value.status_code, refused.value.message


@dataclass
class Race:
    env: WorkflowEnvironment
    client: Client
    hooks: Hooks
    settings: Settings
    stubs: Stubs = field(default_factory=Stubs)
    order: OrderInput | None = None

    @property
    def order_id(self) -> str:
        assert self.order is not None
        return self.order.order_id

    @property
    def expires_at(self) -> datetime:
        assert self.order is not None
        return self.order.expires_at

    @property
    def handle(self) -> WorkflowHandle[Any, OrderState]:
        return self.client.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(self.order_id))

    @asynccontextmanager
    async def worker(self, *, cache: bool = True) -> AsyncIterator[None]:
        """A worker polls the orders' task queue during the block; outside it, events queue up. A
        worker that stops while the order still runs needs cache=False: with a cache, the server
        would keep sending the order's tasks to that worker's own (sticky) queue."""
        async with Worker(
            self.client,
            task_queue=self.settings.temporal_task_queue,
            workflows=[OrderWorkflow],
            activities=self.stubs.activities(),
            workflow_runner=RUNNER,
            max_cached_workflows=1000 if cache else 0,
        ):
            yield

    async def open(self, window: timedelta | None = None) -> OrderState:
        """POST /api/orders' call: the default window (or `window`) from the environment's clock."""
        now = await self.env.get_current_time()
        expires_at = order_service.expiry(self.settings, now) if window is None else now + window
        self.order, state = await order_service.start_order(
            self.client, self.settings, user_id="buyer", ticket=TICKET, expires_at=expires_at
        )
        return state

    def pay(self, token: str = "pm_card_visa") -> Coroutine[Any, Any, PaymentOutcome]:
        return order_service.pay(self.client, self.order_id, token)

    def cancel(self) -> Coroutine[Any, Any, bool]:
        return order_service.cancel(self.client, self.order_id)

    async def confirm(self, payment_intent_id: str) -> None:
        """Stripe's payment_intent.succeeded webhook, as api/payments.py hands it to the workflow."""
        await self.handle.signal(OrderWorkflow.payment_succeeded, payment_intent_id)

    async def skip_to(self, instant: datetime) -> None:
        """Moves the test server's clock to `instant`: the timers due by then fire."""
        await self.env.sleep(instant - await self.env.get_current_time())

    async def timer_due(self) -> datetime:
        """When the expiry timer fires. It starts when the task that set it completes, for the time
        left after that task's start (`workflow.now()`): it fires a little AFTER expiresAt."""
        history = await self.handle.fetch_history()
        started = [e for e in history.events if e.HasField("timer_started_event_attributes")]
        timer = started[-1]
        return (
            timer.event_time.ToDatetime(UTC) + timer.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        )

    async def expire(self) -> None:
        """Moves the clock to the expiry timer: it fires now (its task waits for a worker, if none polls)."""
        due = await self.timer_due()
        assert due >= self.expires_at
        await self.skip_to(due)

    async def queued(self, call: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        """Sends an Update and returns once the server holds it, as a task for its answer: while no
        worker polls, Updates queued one after the other reach the workflow in one task, in order."""
        sent = len(self.hooks.update_ids)
        task = asyncio.create_task(call)
        async with asyncio.timeout(30):
            while len(self.hooks.update_ids) == sent:
                await asyncio.sleep(0.01)
            ref = UpdateRef(
                workflow_execution=WorkflowExecution(workflow_id=order_workflow_id(self.order_id)),
                update_id=self.hooks.update_ids[sent],
            )
            while True:
                try:  # without a wait policy the server answers at once: the Update's stage, or NOT_FOUND
                    await self.client.workflow_service.poll_workflow_execution_update(
                        PollWorkflowExecutionUpdateRequest(namespace=self.client.namespace, update_ref=ref)
                    )
                    return task
                except RPCError as err:
                    if err.status != RPCStatusCode.NOT_FOUND:
                        raise
                await asyncio.sleep(0.01)

    async def last_task_started(self) -> datetime:
        history = await self.handle.fetch_history()
        started = [e for e in history.events if e.HasField("workflow_task_started_event_attributes")]
        return started[-1].event_time.ToDatetime(UTC)

    async def history(self) -> list[str]:
        """The order's history as event type names (TIMER_FIRED, WORKFLOW_TASK_COMPLETED, ...)."""
        history = await self.handle.fetch_history()
        return [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events]

    async def until(self, check: Callable[[list[str]], bool]) -> None:
        """Waits until the order's history passes `check`."""
        async with asyncio.timeout(30):
            while not check(await self.history()):
                await asyncio.sleep(0.05)

    async def state(self) -> OrderState:
        return await self.handle.query(OrderWorkflow.status)


def _race(env: WorkflowEnvironment) -> Race:
    hooks = Hooks()
    config = env.client.config()  # keeps a time-skipping environment's interceptor
    config["interceptors"] = [*config["interceptors"], hooks]
    client = Client(**config)
    settings = Settings(app_env="test", temporal_task_queue=f"orders-{uuid.uuid4().hex[:10]}")
    return Race(env, client, hooks, settings)


@pytest.fixture
async def race() -> AsyncIterator[Race]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=find_binary("temporal-test-server")
    )
    async with env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in SEARCH_ATTRIBUTES},
            )
        )
        yield _race(env)


@pytest.fixture
async def live_race(servers: Servers) -> AsyncIterator[Race]:
    """On the dev server the other tests use (real time, no skipping)."""
    client = await Client.connect(servers.temporal.url, data_converter=pydantic_data_converter)
    race = _race(WorkflowEnvironment.from_client(client))
    yield race
    if race.order is not None:  # an order a failed test left running
        with contextlib.suppress(RPCError):
            await race.handle.terminate()


# ── 1. 3-D Secure confirmation vs the expiry timer ────────────────────────────────────────────
async def test_three_d_secure_confirmed_in_the_expiry_task_completes(race: Race):
    async with race.worker(cache=False):
        await race.open()
        race.stubs.charge_status = "requires_action"
        action = await race.pay(THREE_D_SECURE)
        assert (action.status, action.payment_intent_id, action.client_secret) == (
            "requires_action",
            "pi_1",
            "pi_1_secret",
        )
        assert (await race.state()).status == OrderStatus.AWAITING_PAYMENT
    # No worker: the timer fires, then Stripe's webhook confirms; one task gets both.
    await race.expire()
    await race.until(lambda events: "TIMER_FIRED" in events)
    await race.confirm("pi_1")
    events = await race.history()
    assert events[events.index("TIMER_FIRED") :] == [
        "TIMER_FIRED",
        "WORKFLOW_TASK_SCHEDULED",
        "WORKFLOW_EXECUTION_SIGNALED",
    ]
    async with race.worker():
        final = await race.handle.result()

    # Signals are handled before timers within a task: the confirmation is taken, the expiry moot.
    assert (final.status, final.payment_intent_id) == (OrderStatus.COMPLETE, "pi_1")
    assert race.stubs.names() == ["open_order", "charge_order", "change_order", "record_charge"]
    [recorded] = race.stubs.inputs("record_charge")
    assert (recorded.payment_intent_id, recorded.expected_version) == ("pi_1", 1)
    assert final.version == 2  # awaiting:payment, then complete


async def test_three_d_secure_confirmed_at_stripe_before_the_expiry_cancel_completes(race: Race):
    async with race.worker():
        await race.open()
        race.stubs.charge_status = "requires_action"
        await race.pay(THREE_D_SECURE)
        race.stubs.cancel_status = "succeeded"  # the buyer's confirmation reached Stripe before the cancel
        settling = race.stubs.hold("cancel_payment_intent")
        await race.expire()
        await settling.entered.wait()
        # The workflow took the timer first: no new payment, whatever Stripe says about the pending one.
        assert await refusal(race.pay()) == (400, Refusal.EXPIRED)
        await race.confirm("pi_1")  # Stripe's webhook, after expiresAt
        settling.opened.set()
        final = await race.handle.result()

    # Stripe had the money before the cancel: the order keeps it and completes, never cancelled.
    assert (final.status, final.payment_intent_id) == (OrderStatus.COMPLETE, "pi_1")
    assert race.stubs.inputs("cancel_payment_intent") == ["pi_1"]
    assert race.stubs.names() == [
        "open_order",
        "charge_order",
        "change_order",
        "cancel_payment_intent",
        "record_charge",
    ]


async def test_payment_confirmed_after_the_expiry_is_refunded(race: Race):
    async with race.worker():
        await race.open()
        race.stubs.charge_status = "requires_action"
        await race.pay(THREE_D_SECURE)  # pi_1: the buyer leaves this 3-D Secure step open...
        await race.pay(THREE_D_SECURE)  # ...and tries again: pi_2 is the pending one
        settling = race.stubs.hold("cancel_payment_intent")
        await race.expire()
        await settling.entered.wait()
        await race.confirm("pi_1")  # the first step completes at Stripe after expiresAt
        settling.opened.set()  # Stripe cancels pi_2 (cancel_status)
        final = await race.handle.result()

    assert final.status == OrderStatus.CANCELLED
    assert race.stubs.names() == [
        "open_order",
        "charge_order",
        "change_order",
        "charge_order",
        "cancel_payment_intent",
        "transition",
        "refund_payment",
    ]
    assert race.stubs.inputs("cancel_payment_intent") == ["pi_2"]
    [close] = race.stubs.inputs("transition")
    assert [e.subject for e in close.first] == ["expiration:complete"]
    assert race.stubs.inputs("refund_payment") == [RefundInput(order_id=race.order_id, payment_intent_id="pi_1")]


# ── 2. a charge in flight when expiresAt passes ─────────────────────────────────────────────
async def test_charge_in_flight_wins_over_the_expiry_timer(race: Race):
    # A local activity that outlasts 80% of the task timeout makes the worker close the task and
    # open another: with 2 s, the timer reaches the workflow while Stripe is still charging.
    race.hooks.task_timeout = timedelta(seconds=2)
    async with race.worker():
        await race.open()
        await race.skip_to(race.expires_at - timedelta(seconds=1))
        charging = race.stubs.hold("charge_order")
        paying = asyncio.create_task(race.pay())
        await charging.entered.wait()
        await race.expire()  # at wall speed: the charge's task is open
        # The workflow code has seen the timer (a task completed after it) while the charge runs.
        await race.until(lambda events: "WORKFLOW_TASK_COMPLETED" in after(events, "TIMER_FIRED"))
        # The order is closing: no second payment; a cancel is taken, and waits for the charge.
        assert await refusal(race.pay()) == (400, Refusal.EXPIRED)
        cancelling = asyncio.create_task(race.cancel())
        await race.until(lambda events: events.count("WORKFLOW_EXECUTION_UPDATE_ACCEPTED") == 3)
        charging.opened.set()
        outcome = await paying
        final = await race.handle.result()

    # "A charge in flight wins over the timer": complete, charged once, nothing cancelled or released.
    assert (outcome.status, outcome.payment_intent_id) == ("succeeded", "pi_1")
    assert await refusal(cancelling) == (400, Refusal.COMPLETE)
    assert (final.status, final.payment_intent_id) == (OrderStatus.COMPLETE, "pi_1")
    assert race.stubs.names() == ["open_order", "charge_order"]
    assert "MARKER_RECORDED" in after(await race.history(), "TIMER_FIRED")  # the charge's result came later


# The next two run on the dev server: the time-skipping test server fails a task that cancels a
# timer which fired while the task ran (UnhandledCommand), where the real server drops the fired
# timer; a charge that ends after its timer fired would be refused there and not here.
async def test_charge_accepted_before_expiry_and_ending_after_it_is_kept(live_race: Race):
    race = live_race
    async with race.worker():
        await race.open(window=timedelta(seconds=2))
        charging = race.stubs.hold("charge_order")
        paying = asyncio.create_task(race.pay())
        await charging.entered.wait()
        assert await race.last_task_started() < race.expires_at  # the validator's `workflow.now()`
        await asyncio.sleep((race.expires_at - datetime.now(UTC)).total_seconds() + 1)  # the timer fires
        charging.opened.set()
        outcome = await paying
        final = await race.handle.result()

    assert (outcome.status, outcome.payment_intent_id) == ("succeeded", "pi_1")
    assert (final.status, final.payment_intent_id) == (OrderStatus.COMPLETE, "pi_1")
    assert race.stubs.names() == ["open_order", "charge_order"]
    assert (await race.history())[-2:] == ["TIMER_CANCELED", "WORKFLOW_EXECUTION_COMPLETED"]


async def test_stripe_webhook_during_the_charge_keeps_the_payment(live_race: Race):
    race = live_race
    async with race.worker():
        await race.open()
        charging = race.stubs.hold("charge_order")
        paying = asyncio.create_task(race.pay())
        await charging.entered.wait()
        # Stripe reports the confirmed intent (payment_intent.succeeded) before the activity returns.
        await race.confirm("pi_1")
        charging.opened.set()
        [answer] = await asyncio.gather(paying, return_exceptions=True)
        state = await race.state()

    # The server refused the task that completed the order (UnhandledCommand: the signal came in while
    # it ran) and aborted the Update with it; order_service sent it again, and the charge ran again
    # for the same attempt, which the real activity resolves to the intent it recorded (pi_1).
    assert [c.attempt for c in race.stubs.inputs("charge_order")] == [1, 1]
    assert (state.status, state.payment_intent_id) == (OrderStatus.COMPLETE, "pi_1"), (
        f"Stripe charged pi_1, the workflow says {state.status} and the API got {answer!r}"
    )
    assert isinstance(answer, PaymentOutcome)
    assert answer.status == "succeeded"


# ── 3. cancel vs pay in one task; a pay just before expiresAt vs one in the expiry's task ─────────
@pytest.mark.parametrize("first", ["pay", "cancel"])
async def test_cancel_and_pay_in_one_workflow_task(race: Race, first: str):
    async with race.worker(cache=False):
        await race.open()
    if first == "pay":
        paying = await race.queued(race.pay())
        cancelling = await race.queued(race.cancel())
    else:
        cancelling = await race.queued(race.cancel())
        paying = await race.queued(race.pay())
    async with race.worker():
        final = await race.handle.result()

    # both were decided in the task after the opening one
    assert (await race.history()).count("WORKFLOW_TASK_COMPLETED") == 2
    if first == "pay":
        # The charge started first: the cancel waits for it, then is refused; nothing is released.
        assert (await paying).status == "succeeded"
        assert await refusal(cancelling) == (400, Refusal.COMPLETE)
        assert final.status == OrderStatus.COMPLETE
        assert race.stubs.names() == ["open_order", "charge_order"]
    else:
        assert await refusal(paying) == (400, Refusal.CANCELLED)
        assert await cancelling is True
        assert final.status == OrderStatus.CANCELLED
        assert race.stubs.names() == ["open_order", "transition"]
        [close] = race.stubs.inputs("transition")
        assert close.first == []  # the buyer's cancel: no expiration:complete


@pytest.mark.parametrize("late", [False, True], ids=["pay a second before expiresAt", "pay at expiresAt"])
async def test_pay_at_the_edge_of_expiry(race: Race, late: bool):
    async with race.worker(cache=False):
        await race.open()
        if not late:
            await race.skip_to(race.expires_at - timedelta(seconds=1))
            outcome = await race.pay()
            assert (outcome.status, outcome.payment_intent_id) == ("succeeded", "pi_1")
    if late:
        # No worker: the pay's task starts at expiresAt or later, and the timer (due a little after
        # expiresAt) fires in that task or the next. Updates run before timers within a task, so
        # either way only the validator's own clock check stands between this pay and a charge.
        await race.skip_to(race.expires_at)
        paying = await race.queued(race.pay())
    async with race.worker():
        final = await race.handle.result()
        if late:
            assert await refusal(paying) == (400, Refusal.EXPIRED)

    if late:
        assert final.status == OrderStatus.CANCELLED
        assert race.stubs.names() == ["open_order", "transition"]
        [close] = race.stubs.inputs("transition")
        assert [e.subject for e in close.first] == ["expiration:complete"]
    else:
        assert final.status == OrderStatus.COMPLETE
        assert race.stubs.names() == ["open_order", "charge_order"]
        assert "TIMER_FIRED" not in await race.history()


# ── 4. the default window, without waiting for it ───────────────────────────────────────────
async def test_default_window_expires_in_one_transition(race: Race):
    assert race.settings.order_expiration_seconds == 900
    async with race.worker():
        opened = await race.open()
        assert opened.status == OrderStatus.CREATED
        assert race.expires_at - await race.env.get_current_time() > timedelta(minutes=14)

        await race.skip_to(race.expires_at - timedelta(seconds=1))
        assert (await race.state()).status == OrderStatus.CREATED
        assert race.stubs.names() == ["open_order"]
        final = await race.handle.result()  # the environment skips the rest of the window

    assert await race.env.get_current_time() >= race.expires_at
    assert (final.status, final.version) == (OrderStatus.CANCELLED, opened.version + 1)
    assert race.stubs.names() == ["open_order", "transition"]
    [close] = race.stubs.inputs("transition")
    order_id, ticket_id = race.order_id, TICKET.id
    # expire (the order cancelled from the version it was opened at), release, then publish
    assert close.change == OrderChange(order_id=order_id, expected_version=0, status=OrderStatus.CANCELLED)
    assert (close.release.ticket_id, close.release.order_id, close.release.reserved_version) == (
        ticket_id,
        order_id,
        TICKET.version + 1,
    )
    assert [(e.subject, e.data) for e in close.first] == [("expiration:complete", {"orderId": order_id})]
    assert [(e.subject, e.data) for e in close.then] == [
        ("order:cancelled", {"id": order_id, "version": 1, "ticket": {"id": ticket_id}}),
        (
            "ticket:updated",
            {
                "id": ticket_id,
                "version": TICKET.version + 2,
                "title": "Concert",
                "price": 20.5,
                "userId": "seller",
                "orderId": None,
            },
        ),
    ]
