"""Money reconciliation (workflows/reconcile.py) on the real stack. The inconsistent cases are made
directly at localstripe and in MongoDB, as a lost webhook or a confirmation racing an order's close
would leave them:

    a  succeeded, its order cancelled                    → refunded once
    b  succeeded, its order complete, no Charge recorded → Charge recorded + one charge:created
    own succeeded, the paid order's own recorded charge  → never touched
    c  a second succeeded intent for that paid order     → refunded once
    d  3-D Secure pending, its order expired             → cancelled
    e  succeeded, its order still open                   → left to the order (seen again next run)
    f  no orderId in its metadata                        → not ours

This module has its own localstripe, so a run sees only intents made here (earlier tests' cases
belong to other databases: counted as foreign)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from bson import ObjectId
from temporalio.client import (
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    WorkflowExecutionStatus,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from devstack import free_port, localstripe_cmd
from ticketing.documents import Charge, ChargeStatus, Order, OrderStatus, TicketSnapshot, utcnow
from ticketing.reconcile import ReconcileInput, ReconcileResult
from ticketing.settings import Settings
from ticketing.temporal import connect_temporal, metrics_runtime
from workers.reconcile import ensure_schedule
from workers.worker import WORKFLOWS
from workflows.reconcile import ReconcileWorkflow

from .conftest import (
    Processes,
    Server,
    Servers,
    Stack,
    eventually,
    metric_samples,
    run_stack,
    scrape,
    settings_env,
    start_server,
    start_worker,
    trigger_and_wait,
)
from .stripe_proxy import LocalStripe, local_stripe, stripe_proxy


@pytest.fixture(scope="module")
def own_stripe(servers: Servers) -> Iterator[Server]:
    server = start_server("stripe-reconcile", localstripe_cmd, servers.folder)
    yield server
    server.stop(5)


@pytest.fixture
def settings(servers: Servers, own_stripe: Server) -> Settings:
    # Small pages: a run reads several, and continues as new when asked to.
    return servers.settings(stripe_api_base=f"http://{own_stripe.url}", reconcile_page_size=4)


@dataclass
class Cases:
    a: dict
    b: dict
    own: dict
    c: dict
    d: dict
    e: dict
    f: dict
    own_charge_id: str
    open_order: str

    def settled(self) -> list[dict]:
        return [self.a, self.b, self.own, self.c, self.d]


async def _order(order_id: ObjectId, status: OrderStatus, payment_intent_id: str | None = None, **kw) -> None:
    expires = utcnow() + timedelta(seconds=kw.get("expires_in", -60))
    await Order(
        id=order_id,
        user_id="buyer",
        status=status,
        expires_at=expires,
        version=2,
        ticket=TicketSnapshot(id=str(ObjectId()), title="Seat", price=2050),
        payment_intent_id=payment_intent_id,
    ).insert()


async def make_cases(ls: LocalStripe) -> Cases:
    cancelled, complete, paid, expired, still_open = (ObjectId() for _ in range(5))
    a = await ls.paid_intent(str(cancelled), 2050)
    await _order(cancelled, OrderStatus.CANCELLED)

    b = await ls.paid_intent(str(complete), 2050)
    await _order(complete, OrderStatus.COMPLETE, b["id"])

    own = await ls.paid_intent(str(paid), 2050)
    await _order(paid, OrderStatus.COMPLETE, own["id"])
    charge = Charge(order_id=str(paid), stripe_id=own["id"], amount=2050, currency="usd")
    await charge.insert()
    c = await ls.paid_intent(str(paid), 2050)

    d = await ls.paid_intent(str(expired), 2050, token=await ls.three_d_secure_card())
    assert d["status"] == "requires_action"
    await _order(expired, OrderStatus.CANCELLED)

    e = await ls.paid_intent(str(still_open), 2050)
    await _order(still_open, OrderStatus.CREATED, expires_in=600)

    f = await ls.paid_intent(None, 700)
    for intent in (a, b, own, c, e, f):
        assert intent["status"] == "succeeded"
    return Cases(a, b, own, c, d, e, f, str(charge.id), str(still_open))


async def reconcile(stack: Stack, run_id: str | None = None, **kw) -> ReconcileResult:
    return await asyncio.wait_for(
        stack.temporal.execute_workflow(
            ReconcileWorkflow.run,
            ReconcileInput(**kw),
            id=run_id or f"reconcile-test-{uuid.uuid4().hex[:8]}",
            task_queue=stack.settings.temporal_task_queue,
        ),
        90,
    )


async def assert_settled_once(stack: Stack, ls: LocalStripe, cases: Cases) -> None:
    """The money and the records after any number of runs: each case settled exactly once."""
    refunds = {name: await ls.refunds_for(getattr(cases, name)["id"]) for name in ("a", "own", "c", "e", "b")}
    assert {name: len(r) for name, r in refunds.items()} == {"a": 1, "own": 0, "c": 1, "e": 0, "b": 0}
    assert (await ls.intent(cases.d["id"]))["status"] == "canceled"

    charges = {c.stripe_id: c for c in await Charge.find_all().to_list()}
    for name in ("a", "c"):
        charge = charges[getattr(cases, name)["id"]]
        assert (charge.status, charge.refund_id) == (ChargeStatus.REFUNDED, refunds[name][0]["id"])
    kept = charges[cases.own["id"]]
    assert (kept.status, kept.refund_id, str(kept.id)) == (ChargeStatus.SUCCEEDED, None, cases.own_charge_id)
    recorded = charges[cases.b["id"]]
    assert (recorded.status, recorded.amount, recorded.currency) == (ChargeStatus.SUCCEEDED, 2050, "usd")
    assert cases.e["id"] not in charges
    assert cases.d["id"] not in charges

    published = await stack.messages("charge:created")
    assert [(m.data, m.msg_id) for m in published] == [
        (
            {
                "id": str(recorded.id),
                "orderId": recorded.order_id,
                "stripeId": cases.b["id"],
                "amount": 2050,
                "currency": "usd",
            },
            f"charge:created:{recorded.id}",
        )
    ]
    # The reconciliation changes charges, never orders.
    assert {o.version for o in await Order.find_all().to_list()} == {2}


async def test_one_run_settles_each_case_once_and_a_second_changes_nothing(servers: Servers, settings: Settings):
    metrics_port = free_port()
    client = await connect_temporal(settings, runtime=metrics_runtime(metrics_port))
    async with (
        run_stack(servers, settings, temporal_client=client) as stack,
        local_stripe(settings.stripe_api_base) as ls,
    ):
        cases = await make_cases(ls)
        await asyncio.sleep(1.1)  # the run starts a second after e was created: the hold below is visible

        first_id = f"reconcile-first-{uuid.uuid4().hex[:6]}"
        first = await reconcile(stack, first_id)
        f = first.figures
        assert (f.refunded, f.recorded, f.cancelled, f.unchanged, f.left_open) == (2, 1, 1, 1, 1), f
        assert (f.pending, f.errors, f.error_details) == (0, 0, [])
        assert f.foreign >= 1
        assert f.seen == 6 + f.foreign
        assert first.watermark <= cases.e["created"]  # held back by the open order's intent
        await assert_settled_once(stack, ls, cases)

        second = await reconcile(stack)
        f = second.figures
        assert (f.refunded, f.recorded, f.cancelled, f.unchanged, f.left_open, f.errors) == (0, 0, 0, 5, 1, 0), f
        await assert_settled_once(stack, ls, cases)

        # The open order closes (its workflow cancelled it while e's confirmation was still on its way):
        # e is still inside the window, so the next run gives it back.
        await Order.get_pymongo_collection().update_one(
            {"_id": ObjectId(cases.open_order)}, {"$set": {"status": OrderStatus.CANCELLED.value}}
        )
        third = await reconcile(stack)
        assert (third.figures.refunded, third.figures.left_open) == (1, 0), third.figures
        assert len(await ls.refunds_for(cases.e["id"])) == 1
        assert third.watermark >= cases.e["created"]

        # Figures as metrics (the worker's Prometheus endpoint, the SDK's metric meter).
        body = await scrape(metrics_port)
        samples = {labels["outcome"]: value for labels, value in metric_samples(body, "reconcile_payment_intents")}
        totals = {"refunded": 3, "recorded": 1, "cancelled": 1, "left_open": 2, "unchanged": 1 + 5 + 5}
        assert {k: samples.get(k) for k in totals} == totals, body

        # The run replays on the current code (a change to the workflow must keep running runs working).
        history = await stack.temporal.get_workflow_handle(first_id).fetch_history()
        if os.environ.get("RECORD_HISTORIES"):  # tests/test_replay.py replays it on every later change
            (Path(__file__).parent / "histories" / "reconcile.json").write_text(history.to_json())
        replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None, replayed.replay_failure


async def test_two_overlapping_runs_settle_each_once(stack: Stack):
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        cases = await make_cases(ls)
        # The second continues as new after every page (figures carried from run to run).
        chained = f"reconcile-chained-{uuid.uuid4().hex[:6]}"
        runs = await asyncio.gather(reconcile(stack), reconcile(stack, chained, pages_per_run=1))
        assert runs[1].pages == runs[0].pages >= 2
        last = await stack.temporal.get_workflow_handle(chained).describe()
        first = await stack.temporal.get_workflow_handle(
            chained, run_id=last.raw_description.workflow_execution_info.first_run_id
        ).describe()
        assert last.run_id != first.run_id
        assert first.status == WorkflowExecutionStatus.CONTINUED_AS_NEW

        def total(name: str) -> int:
            return sum(getattr(r.figures, name) for r in runs)

        # Whichever run got to an intent first settled it; the other found it settled or being settled.
        assert (total("refunded"), total("recorded"), total("cancelled"), total("errors")) == (2, 1, 1, 0), runs
        await assert_settled_once(stack, ls, cases)
        after = await reconcile(stack)
        assert (after.figures.refunded, after.figures.recorded, after.figures.cancelled) == (0, 0, 0)
        await assert_settled_once(stack, ls, cases)


async def test_worker_killed_mid_run_then_the_schedule_reruns_it(
    servers: Servers, own_stripe: Server, processes: Processes, tmp_path: Path
) -> None:
    """SIGKILL the worker while a run's step is at Stripe; a new worker finishes the run; the
    schedule (created by the worker at start-up) runs again: each intent settled once."""
    schedule_id = f"reconcile-test-{uuid.uuid4().hex[:8]}"
    async with (
        stripe_proxy(own_stripe, drop_first=None, cancel_delay=3.0) as proxy,
        run_stack(
            servers,
            stripe_api_base=proxy.url,
            reconcile_schedule=True,
            reconcile_schedule_id=schedule_id,
            reconcile_interval_seconds=3600,
            worker=False,
        ) as stack,
        local_stripe(f"http://{own_stripe.url}") as ls,
    ):
        settings = stack.settings
        schedule = stack.temporal.get_schedule_handle(schedule_id)
        try:
            cases = await make_cases(ls)
            processes.append(start_worker(settings, tmp_path / "worker-1.log"))
            run = await stack.temporal.start_workflow(
                ReconcileWorkflow.run,
                ReconcileInput(),
                id=f"reconcile-killed-{uuid.uuid4().hex[:6]}",
                task_queue=settings.temporal_task_queue,
            )
            # d's cancel is held at Stripe's door: a, b and c are settled, the run is mid-step.
            await eventually(lambda: proxy.held, "the cancel step to reach Stripe", 60)
            processes[0].kill()
            proxy.cancel_delay = 0
            processes.append(start_worker(settings, tmp_path / "worker-2.log"))
            first = await asyncio.wait_for(run.result(), 90)
            f = first.figures
            assert (f.refunded, f.recorded, f.cancelled + f.unchanged, f.left_open, f.errors) == (2, 1, 2, 1, 0), f
            await assert_settled_once(stack, ls, cases)

            # The worker made the schedule at start-up (the second one found it and kept it).
            described = await schedule.describe()
            assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(hours=1))]
            assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
            action = described.schedule.action
            assert isinstance(action, ScheduleActionStartWorkflow), action
            assert (action.workflow, action.task_queue) == ("ReconcileWorkflow", settings.temporal_task_queue)

            rerun_id = await trigger_and_wait(schedule)
            rerun = await asyncio.wait_for(
                stack.temporal.get_workflow_handle(rerun_id, result_type=ReconcileResult).result(), 60
            )
            f = rerun.figures
            assert (f.refunded, f.recorded, f.cancelled, f.unchanged, f.errors) == (0, 0, 0, 5, 0), f
            await assert_settled_once(stack, ls, cases)
        finally:
            with contextlib.suppress(RPCError):
                await schedule.delete()


async def test_schedule_is_created_once_and_follows_the_settings(servers: Servers, settings: Settings):
    client = await connect_temporal(settings)
    settings = settings.model_copy(update={"reconcile_schedule_id": f"reconcile-test-{uuid.uuid4().hex[:8]}"})
    handle = await ensure_schedule(client, settings)
    try:
        await ensure_schedule(client, settings)  # again: no error, still one schedule
        described = await handle.describe()
        assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(seconds=300))]
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP

        await handle.pause(note="operator")
        await ensure_schedule(client, settings.model_copy(update={"reconcile_interval_seconds": 120}))
        described = await handle.describe()
        assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(seconds=120))]
        assert described.schedule.state.paused  # an operator's pause survives a worker restart
        listed = [s.id async for s in await client.list_schedules() if s.id == settings.reconcile_schedule_id]
        assert listed in ([settings.reconcile_schedule_id], [])  # the listing is eventually consistent
    finally:
        await handle.delete()


async def test_cli_dry_run_prints_the_plan_and_changes_nothing_then_a_run(stack: Stack):
    async def cli(*args: str) -> str:
        env = {**os.environ}
        for key, value in settings_env(stack.settings).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ticketing.cli",
            "reconcile",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async with local_stripe(stack.settings.stripe_api_base) as ls:
        cases = await make_cases(ls)
        table = await cli("--dry-run")
        rows = {line.split()[0]: line.split() for line in table.splitlines() if line.startswith("pi_")}
        expected = {
            "a": "refund",
            "b": "record",
            "own": "nothing",
            "c": "refund",
            "d": "cancel",
            "e": "leave",
            "f": "foreign",
        }
        # columns: intent, created (date time), status, amount (value currency), order, order status, action, why
        assert {name: rows[getattr(cases, name)["id"]][8] for name in expected} == expected, table
        assert table.splitlines()[0].split()[:3] == ["payment", "intent", "created"]
        assert "20.50 usd" in table

        # nothing changed
        for name in ("a", "c"):
            assert await ls.refunds_for(getattr(cases, name)["id"]) == []
        assert (await ls.intent(cases.d["id"]))["status"] == "requires_action"
        assert await Charge.find(Charge.stripe_id == cases.b["id"]).to_list() == []
        assert await stack.messages("charge:created") == []

        # `ticketing reconcile` runs once (on this test's worker) and prints the figures
        figures = dict(
            line.split(None, 1) for line in (await cli()).splitlines() if line and not line.startswith("error:")
        )
        assert (figures["refunded"], figures["recorded"], figures["cancelled"], figures["errors"]) == (
            "2",
            "1",
            "1",
            "0",
        )
        await assert_settled_once(stack, ls, cases)
