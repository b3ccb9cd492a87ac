"""Money reconciliation, run by the Temporal Schedule `reconcile-payments` (workers/reconcile.py).

Pages through Stripe's PaymentIntents created since the watermark (minus a safety overlap) and settles
each one the orders do not account for (rules in ticketing/reconcile.py): records a missing Charge and
publishes its charge:created, refunds a payment for a cancelled or already paid order (as the
`refund-<paymentIntentId>` workflow, so the webhook route, the order workflow's own refund rules and
overlapping runs never refund one intent twice), cancels an intent of a closed order that could still
take money. Closes the window of a `payment_intent.succeeded` that reaches an order workflow between
its last task and its close, and of webhooks that never arrive.

Deterministic: the run's start time is `workflow.now()`, every read and change is an activity. The
watermark only advances past intents that are settled: one left to an open order, still pending or
failed holds it back, so the next run sees it again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.events import EventActivities
    from activities.reconcile import PageRequest, ReconcileActivities
    from ticketing import events
    from ticketing.payloads import RefundInput
    from ticketing.reconcile import HELD, Action, Outcome, Plan, ReconcileInput, ReconcileResult
    from ticketing.temporal import refund_workflow_id
    from workflows.order import STORE
    from workflows.refund import RefundWorkflow


class StepOptions(TypedDict):
    start_to_close_timeout: timedelta
    heartbeat_timeout: timedelta
    retry_policy: RetryPolicy


# A step that keeps failing is counted as an error and seen again next run, rather than holding up this
# run (the schedule skips new runs while one is going). The activities heartbeat, so a killed worker's
# step is retried elsewhere after a few seconds.
STEP = StepOptions(
    start_to_close_timeout=timedelta(seconds=60),
    heartbeat_timeout=timedelta(seconds=5),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10), maximum_attempts=5),
)
# Listing Stripe: a run without its pages fails (the watermark stays) and the next one starts over.
LIST = StepOptions(
    start_to_close_timeout=timedelta(seconds=60),
    heartbeat_timeout=timedelta(seconds=5),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10), maximum_attempts=10),
)
REFUND_WAIT = timedelta(seconds=60)  # then the refund finishes on its own; this run counts it pending
MAX_ERROR_DETAILS = 10


@workflow.defn(name="ReconcileWorkflow")
class ReconcileWorkflow:
    @workflow.run
    async def run(self, req: ReconcileInput) -> ReconcileResult:
        started = req.started if req.started is not None else int(workflow.now().timestamp())
        since = req.since
        if since is None:
            window = await workflow.execute_activity_method(ReconcileActivities.window, **STEP)
            since = window.since
        self.figures = req.figures
        self.hold = req.hold
        self.counter = workflow.metric_meter().create_counter(
            "reconcile_payment_intents", "PaymentIntents seen by the reconciliation, by outcome"
        )
        cursor, pages = req.cursor, req.pages
        while True:
            page = await workflow.execute_activity_method(
                ReconcileActivities.plan_page,
                PageRequest(since=since, cursor=cursor),
                **LIST,
            )
            pages += 1
            for plan in page.plans:
                self._count(plan, await self._settle(plan))
            cursor = page.next_cursor
            if cursor is None:
                break
            if pages - req.pages >= req.pages_per_run:  # keep each run's history small
                workflow.continue_as_new(
                    req.model_copy(
                        update={
                            "since": since,
                            "cursor": cursor,
                            "started": started,
                            "hold": self.hold,
                            "pages": pages,
                            "figures": self.figures,
                        }
                    )
                )
        watermark = started if self.hold is None else min(started, self.hold)
        stored = await workflow.execute_activity_method(ReconcileActivities.save_watermark, watermark, **STEP)
        return ReconcileResult(since=since, watermark=stored, pages=pages, figures=self.figures)

    def _count(self, plan: Plan, outcome: Outcome) -> None:
        self.figures.seen += 1
        self.figures.count(outcome)
        self.counter.add(1, {"outcome": outcome.value})
        if outcome in HELD:
            created = plan.intent.created
            self.hold = created if self.hold is None else min(self.hold, created)

    async def _settle(self, plan: Plan) -> Outcome:
        try:
            if plan.action == Action.RECORD:
                return await self._record(plan)
            if plan.action == Action.REFUND:
                return await self._refund(plan)
            if plan.action == Action.CANCEL:
                return await self._cancel(plan)
        except (ActivityError, ChildWorkflowError) as err:
            cause = err.cause or err
            workflow.logger.warning("reconcile step failed", extra={"paymentIntentId": plan.intent.id})
            if len(self.figures.error_details) < MAX_ERROR_DETAILS:
                self.figures.error_details.append(f"{plan.intent.id} {plan.action.value}: {cause}")
            return Outcome.ERROR
        return {Action.LEAVE: Outcome.LEFT_OPEN, Action.FOREIGN: Outcome.FOREIGN}.get(plan.action, Outcome.UNCHANGED)

    async def _record(self, plan: Plan) -> Outcome:
        recorded = await workflow.execute_activity_method(ReconcileActivities.record_charge, plan, **STEP)
        if recorded.kind == "refund":
            return await self._refund(plan)
        if recorded.charge is not None:
            # Published on every attempt that finds the Charge: one whose publish was lost is made good,
            # and the Nats-Msg-Id (charge:created:<chargeId>) keeps it one message.
            await workflow.execute_activity_method(
                EventActivities.publish,
                events.Envelope.of(events.ChargeCreated(**recorded.charge.model_dump())),
                **STORE,
            )
        return Outcome.RECORDED if recorded.kind == "recorded" else Outcome.UNCHANGED

    async def _cancel(self, plan: Plan) -> Outcome:
        result = await workflow.execute_activity_method(ReconcileActivities.cancel_intent, plan.intent.id, **STEP)
        if result == "succeeded":  # confirmed meanwhile: the money goes back
            return await self._refund(plan)
        return {"cancelled": Outcome.CANCELLED, "pending": Outcome.PENDING}.get(result, Outcome.UNCHANGED)

    async def _refund(self, plan: Plan) -> Outcome:
        assert plan.intent.order_id is not None
        try:
            handle = await workflow.start_child_workflow(
                RefundWorkflow.run,
                RefundInput(order_id=plan.intent.order_id, payment_intent_id=plan.intent.id),
                id=refund_workflow_id(plan.intent.id),
                # One refund workflow per intent, ever: a failed one may be tried again.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            # The webhook route or another run is refunding it: its Charge shows the refund next run.
            return Outcome.PENDING
        try:
            await workflow.wait_condition(handle.done, timeout=REFUND_WAIT)
        except TimeoutError:
            return Outcome.PENDING  # still retrying Stripe; it finishes on its own (abandoned, not cancelled)
        refund = handle.result()
        return Outcome.UNCHANGED if refund == "kept" else Outcome.REFUNDED
