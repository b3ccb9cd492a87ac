"""The Temporal worker process (`ticketing worker`): order workflows and their activities.

SIGTERM starts a graceful shutdown: no new tasks are polled and running activities get
WORKER_GRACEFUL_SHUTDOWN_SECONDS to finish (Kubernetes' grace period must be longer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.events import EventActivities
from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from activities.reconcile import ReconcileActivities
from ticketing.bus import EventBus
from ticketing.db import connect_db
from ticketing.logs import configure_logging
from ticketing.settings import Settings, get_settings
from ticketing.temporal import connect_temporal, metrics_runtime
from workers.reconcile import ensure_schedule
from workflows.order import LegacyOrderWorkflow, OrderWorkflow
from workflows.publish import PublishEventWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.refund import RefundWorkflow

log = logging.getLogger(__name__)

WORKFLOWS = [OrderWorkflow, LegacyOrderWorkflow, RefundWorkflow, PublishEventWorkflow, ReconcileWorkflow]


class InlineExecutor(concurrent.futures.Executor):
    """Runs each workflow activation right away on the event loop's thread instead of a thread pool.

    Activations are short CPU-bound Python that holds the GIL anyway; the pool only added a thread
    hop and two cross-thread wake-ups of the event loop per activation (measured with py-spy: about
    a fifth of the worker's CPU per order, see bench/README.md). The price: the SDK's deadlock
    detector (a workflow blocking for 2 s) has nothing to time out, so a workflow that blocked would
    stall the worker instead of failing its task; workflow code never blocks (no I/O, no locks).
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop = asyncio._get_running_loop()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting SDK code, as the pool would
            future.set_exception(exc)
        finally:
            asyncio._set_running_loop(loop)  # the activation's own loop unsets it on exit
        return future


def build_worker(client: Client, settings: Settings, bus: EventBus, **options: object) -> Worker:
    orders, events = OrderActivities(bus), EventActivities(bus)
    payments = PaymentActivities(settings, orders=orders)
    activities: list[Callable[..., Any]] = [
        orders.open_order,
        orders.transition,
        orders.record_charge,
        payments.charge_order,
        # single steps: orders of the older type OrderWorkflow, refunds, 3-D Secure
        orders.reserve_ticket,
        orders.change_order,
        orders.complete_order,
        orders.release_ticket,
        events.publish,
        payments.create_payment_intent,
        payments.confirm_payment_intent,
        payments.cancel_payment_intent,
        payments.refund_payment,
    ]
    reconcile = ReconcileActivities(settings, client)
    activities += [
        reconcile.window,
        reconcile.plan_page,
        reconcile.record_charge,
        reconcile.cancel_intent,
        reconcile.save_watermark,
    ]
    runner: WorkflowRunner
    if settings.worker_workflow_sandbox:
        restrictions = SandboxRestrictions.default
        if settings.worker_sandbox_passthrough:
            # Import modules once per process instead of once per workflow run: creating a sandbox
            # re-executed workflows/order.py and the modules it imports for every order. The sandbox's
            # runtime checks (no I/O, no wall clock, no threads in workflow code) still apply.
            restrictions = restrictions.with_passthrough_all_modules()
        runner = SandboxedWorkflowRunner(restrictions=restrictions)
    else:
        # The default: no per-run sandbox at all (see bench/README.md for the measured cost). The
        # sandbox's determinism checks still run where they matter: tests/test_replay.py replays every
        # saved history under the sandboxed runner, and `make test` runs the workflows sandboxed.
        runner = UnsandboxedWorkflowRunner()
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=activities,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_local_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_cached_workflows=settings.worker_max_cached_workflows,
        workflow_runner=runner,
        workflow_task_executor=InlineExecutor() if settings.worker_inline_activations else None,  # type: ignore[arg-type]
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown_seconds),
        **options,  # type: ignore[arg-type]
    )


async def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    mongo = await connect_db(settings, retry_writes=False)
    bus = await EventBus.connect(settings)
    client = await connect_temporal(settings, runtime=metrics_runtime(settings.worker_metrics_port))
    worker = build_worker(client, settings, bus)
    if settings.reconcile_schedule:
        try:
            await ensure_schedule(client, settings)
        except Exception:  # the orders do not depend on it: keep working, say so
            log.exception("could not create the reconcile schedule", extra={"schedule": settings.reconcile_schedule_id})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    log.info(
        "worker polling",
        extra={"taskQueue": settings.temporal_task_queue, "metrics": f":{settings.worker_metrics_port}/metrics"},
    )
    run = asyncio.create_task(worker.run())
    done, _ = await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if run not in done:
        log.info("shutting down: letting running activities finish")
        await worker.shutdown()
    await run
    await bus.close()
    await mongo.close()
