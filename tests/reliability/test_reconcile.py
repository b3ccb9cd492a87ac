"""Money reconciliation under faults: real orders (paid through the API, or cancelled), then the money
their workflows never saw, made directly at localstripe and in MongoDB as lost webhooks and a lost
record would leave it:

- 10 cancelled orders get a succeeded PaymentIntent (a 3-D Secure confirmation after the order closed,
  its webhook lost) → refunded;
- 10 paid orders get a second succeeded PaymentIntent (paid twice, the webhook lost) → refunded, the
  order's own payment kept;
- 5 paid orders lose their Charge document → recorded again, one charge:created each;
- 5 cancelled orders get a pending 3-D Secure PaymentIntent → cancelled;
- 5 orders still open (stored, not expired) get a succeeded PaymentIntent → left to their workflow.

Two runs overlap (one continues as new every 2 pages), the worker is SIGKILLed while a refund is at
Stripe (the refund activity is retried on a new worker after its timeout and finds the refund made),
then the schedule runs again. Counted: every refund at localstripe (double refunds = 0), the paid
orders' own payments (never refunded), cancels, Charges and charge:created messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

from bson import ObjectId

from devstack import localstripe_cmd
from ticketing.documents import Charge, ChargeStatus, Order, OrderStatus, TicketSnapshot, utcnow
from ticketing.reconcile import ReconcileInput, ReconcileResult
from workflows.reconcile import ReconcileWorkflow

from ..conftest import (
    Processes,
    Servers,
    eventually,
    place_orders,
    run_stack,
    start_server,
    start_worker,
    trigger_and_wait,
)
from ..stripe_proxy import local_stripe, stripe_proxy
from .conftest import final_states, pay, record

PAID, CANCELLED = 20, 20


async def test_reconcile_settles_lost_payments_once_through_overlap_and_a_worker_kill(
    servers: Servers, processes: Processes, tmp_path: Path
) -> None:
    started = time.monotonic()
    stripe = start_server("stripe-reconcile", localstripe_cmd, tmp_path)  # fresh: every intent is counted
    processes.append(stripe.process)
    schedule_id = f"reconcile-reliability-{uuid.uuid4().hex[:8]}"
    async with (
        stripe_proxy(stripe, drop_first=None) as proxy,
        run_stack(
            servers,
            order_expiration_seconds=300,
            stripe_api_base=proxy.url,
            reconcile_schedule=True,
            reconcile_schedule_id=schedule_id,
            reconcile_interval_seconds=3600,
            reconcile_page_size=10,
            worker=False,
        ) as stack,
        local_stripe(f"http://{stripe.url}") as ls,
    ):
        settings = stack.settings
        schedule = stack.temporal.get_schedule_handle(schedule_id)
        try:
            processes.append(start_worker(settings, tmp_path / "worker-1.log"))
            placed = await place_orders(stack, PAID + CANCELLED)
            paid, cancelled = placed.orders[:PAID], placed.orders[PAID:]
            statuses = await asyncio.gather(*(pay(stack, placed.owner[o["id"]], o["id"]) for o in paid))
            assert all(s[-1] == 201 for s in statuses), statuses
            for o in cancelled:  # the buyers cancel (an expiry ends the same way, only later)
                r = await stack.api.delete(f"/api/orders/{o['id']}", headers=placed.owner[o["id"]])
                assert r.status_code == 204, r.text
            states = await asyncio.wait_for(final_states(stack, placed.orders, 120), 150)
            assert Counter(states.values()) == {"complete": PAID, "cancelled": CANCELLED}

            # the money the workflows never saw
            late = [(await ls.paid_intent(o["id"], 1050))["id"] for o in cancelled[:10]]
            twice = [(await ls.paid_intent(o["id"], 1050))["id"] for o in paid[:10]]
            card = await ls.three_d_secure_card()
            pending = [(await ls.paid_intent(o["id"], 1050, token=card))["id"] for o in cancelled[10:15]]
            lost = [o["id"] for o in paid[10:15]]
            lost_charges = {c.order_id: c.stripe_id for c in await Charge.find({"order_id": {"$in": lost}}).to_list()}
            await Charge.get_pymongo_collection().delete_many({"order_id": {"$in": lost}})
            still_open = []
            for _ in range(5):
                oid = ObjectId()
                still_open.append((await ls.paid_intent(str(oid), 1050))["id"])
                await Order(
                    id=oid,
                    user_id="buyer",
                    status=OrderStatus.CREATED,
                    expires_at=utcnow() + timedelta(minutes=10),
                    ticket=TicketSnapshot(id=str(ObjectId()), title="Seat", price=1050),
                ).insert()
            own = {c.order_id: c.stripe_id for c in await Charge.find({"status": "succeeded"}).to_list()}
            own.update(lost_charges)
            assert len(own) == PAID
            charge_msgs_before = len(await stack.messages("charge:created"))

            # two overlapping runs; the worker dies while the first refund is at Stripe
            proxy.first_refund_delay = 3
            runs = [
                await stack.temporal.start_workflow(
                    ReconcileWorkflow.run,
                    ReconcileInput(pages_per_run=pages_per_run),
                    id=f"reconcile-{name}-{uuid.uuid4().hex[:6]}",
                    task_queue=settings.temporal_task_queue,
                )
                for name, pages_per_run in (("a", 50), ("b", 2))
            ]
            await eventually(lambda: proxy.held, "the first refund to reach Stripe", 60, interval=0.1)
            processes[-1].kill()
            processes.append(start_worker(settings, tmp_path / "worker-2.log"))
            results: list[ReconcileResult] = list(
                await asyncio.wait_for(asyncio.gather(*(r.result() for r in runs)), 180)
            )

            # the schedule (made by the worker) runs again: nothing left to do
            rerun_handle = stack.temporal.get_workflow_handle(
                await trigger_and_wait(schedule), result_type=ReconcileResult
            )
            rerun = await asyncio.wait_for(rerun_handle.result(), 60)
        finally:
            for process in processes[1:]:
                process.stop(10)
            await schedule.delete()

        # ── count ────────────────────────────────────────────────────────────────────────
        intents = {pi["id"]: pi for pi in await ls.intents()}
        refunds: Counter[str] = Counter()
        for pi in intents.values():
            if pi["status"] == "succeeded":
                refunds[pi["id"]] = len(await ls.refunds_for(pi["id"]))
        double = sum(1 for n in refunds.values() if n > 1)
        should_refund = set(late) | set(twice)
        refunded_right = sum(1 for i in should_refund if refunds[i] == 1)
        wrongly_refunded = sum(1 for i, n in refunds.items() if n and i not in should_refund)
        own_refunded = sum(1 for i in own.values() if refunds[i])
        cancelled_intents = sum(1 for i in pending if intents[i]["status"] == "canceled")
        charges = await Charge.find_all().to_list()
        recorded = [c for c in charges if c.order_id in lost]
        refunded_charges = {c.stripe_id for c in charges if c.status == ChargeStatus.REFUNDED and c.refund_id}
        new_msgs = (await stack.messages("charge:created"))[charge_msgs_before:]
        figures = [r.figures for r in results]

        def total(name: str) -> int:
            return sum(getattr(f, name) for f in figures)

        record(
            f"[reconcile] intents={len(intents)} seen per run={[f.seen for f in figures]} "
            f"refunded={total('refunded')} (at Stripe: {refunded_right}/{len(should_refund)}, double refunds={double}, "
            f"wrong refunds={wrongly_refunded}, own payments refunded={own_refunded}) "
            f"recorded={total('recorded')} (charge:created published={len(new_msgs)}) "
            f"cancelled={cancelled_intents}/{len(pending)} left_open={[f.left_open for f in figures]} "
            f"pending={total('pending')} errors={total('errors')} | faults: 2 overlapping runs (one continued as "
            f"new every 2 pages), worker SIGKILL with a refund at Stripe | rerun: refunded={rerun.figures.refunded} "
            f"recorded={rerun.figures.recorded} cancelled={rerun.figures.cancelled} | {time.monotonic() - started:.0f}s"
        )
        assert len(intents) == PAID + 10 + 10 + 5 + 5
        assert all(f.seen == len(intents) for f in figures), figures
        assert (double, wrongly_refunded, own_refunded) == (0, 0, 0)
        assert refunded_right == len(should_refund)
        assert refunded_charges >= should_refund
        assert cancelled_intents == len(pending)
        assert sorted(c.order_id for c in recorded) == sorted(lost)
        assert all(c.status == ChargeStatus.SUCCEEDED and c.stripe_id == lost_charges[c.order_id] for c in recorded)
        assert sorted((m.data["orderId"], m.msg_id) for m in new_msgs) == sorted(
            (c.order_id, f"charge:created:{c.id}") for c in recorded
        )
        assert (total("refunded"), total("recorded"), total("errors")) == (20, 5, 0), figures
        assert all(f.left_open == 5 for f in figures)
        f = rerun.figures
        assert (f.refunded, f.recorded, f.cancelled, f.pending, f.errors, f.left_open) == (0, 0, 0, 0, 0, 5), f
        assert sum(refunds.values()) == len(should_refund)
