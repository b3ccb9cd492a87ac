"""The reconciliation's Temporal Schedule and the `ticketing reconcile` command.

ticketing reconcile             run once now (a workflow like the scheduled ones) and print its figures
ticketing reconcile --dry-run   print what a run would do, as a table; changes nothing
ticketing reconcile --schedule  create or update the schedule (the worker also does this at start-up)
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TextIO

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from activities.reconcile import PageRequest, ReconcileActivities
from ticketing.money import to_major
from ticketing.reconcile import Plan, ReconcileInput, ReconcileResult
from ticketing.settings import Settings
from workflows.reconcile import ReconcileWorkflow

log = logging.getLogger(__name__)


def reconcile_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run,
            ReconcileInput(),
            id=settings.reconcile_schedule_id,  # the server appends the scheduled time
            task_queue=settings.temporal_task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.reconcile_interval_seconds))]
        ),
        # A run still going when the next is due: the next is skipped, never two at once from the schedule.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedule(client: Client, settings: Settings) -> ScheduleHandle:
    """Create the schedule, or bring an existing one in line with the settings (idempotent; every
    worker does it at start-up). A pause set by an operator in the Web UI is kept."""
    schedule = reconcile_schedule(settings)
    try:
        return await client.create_schedule(settings.reconcile_schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        pass

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=dataclasses.replace(schedule, state=current.description.schedule.state))

    handle = client.get_schedule_handle(settings.reconcile_schedule_id)
    await handle.update(update)
    return handle


async def run_once(client: Client, settings: Settings) -> ReconcileResult:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return await client.execute_workflow(
        ReconcileWorkflow.run,
        ReconcileInput(),
        id=f"{settings.reconcile_schedule_id}-cli-{stamp}",
        task_queue=settings.temporal_task_queue,
    )


async def dry_run(settings: Settings, temporal: Client | None) -> list[Plan]:
    """What a run would decide for each intent now (the same code as the activities, nothing applied)."""
    activities = ReconcileActivities(settings, temporal)
    window = await activities.window()
    plans: list[Plan] = []
    cursor: str | None = None
    while True:
        page = await activities.plan_page(PageRequest(since=window.since, cursor=cursor))
        plans.extend(page.plans)
        cursor = page.next_cursor
        if cursor is None:
            return plans


def print_plans(plans: list[Plan], out: TextIO = sys.stdout) -> None:
    header = ("payment intent", "created (UTC)", "status", "amount", "order", "order status", "action", "why")
    rows = [
        (
            p.intent.id,
            datetime.fromtimestamp(p.intent.created, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            p.intent.status,
            f"{to_major(p.intent.amount):.2f} {p.intent.currency}",
            p.intent.order_id or "-",
            p.order_status.value if p.order_status else "-",
            p.action.value,
            p.reason,
        )
        for p in plans
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    totals = Counter(p.action.value for p in plans)
    print(f"\n{len(plans)} intents: " + ", ".join(f"{n} {a}" for a, n in sorted(totals.items())), file=out)


def print_result(result: ReconcileResult, out: TextIO = sys.stdout) -> None:
    figures = result.figures.model_dump(exclude={"error_details"})
    for name, value in figures.items():
        print(f"{name:<10} {value}", file=out)
    for detail in result.figures.error_details:
        print(f"error: {detail}", file=out)
    print(f"watermark  {datetime.fromtimestamp(result.watermark, UTC).isoformat()}", file=out)
