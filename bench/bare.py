"""The engine's limit: a bare order-shaped workflow on the bench's own dev server, no API, no MongoDB.

Per workflow, the same Temporal shape as an order: started with the search attributes OrderStatus /
UserId / TicketId and a memo, a `reserve` local activity (no I/O), a `publish` local activity that
publishes `bare:created` to NATS JetStream, a durable timer until `expires_at`, then a `publish` of
`bare:expired`. Its worker runs in its own process, with the same worker options as ours
(workers/worker.py: sandboxed runner with all modules passed through, concurrency and cache from the
same settings; `--unsandboxed` for `UnsandboxedWorkflowRunner`):

    python -m bench.bare worker --task-queue Q [--unsandboxed]     (TEMPORAL_ADDRESS, NATS_URL, WORKER_* from env)

The driver (`BareDriver`, used by bench/run.py) starts workflows with a number in flight and counts
each one END TO END: when its `bare:created` is read from JetStream, not when the start RPC returns.
Only temporalio, nats-py and pydantic are imported, so `--code` does not change it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import nats
    from nats.js.api import DeliverPolicy, StreamConfig
    from nats.js.errors import NotFoundError
    from temporalio.client import Client, WithStartWorkflowOperation
    from temporalio.common import (
        SearchAttributeKey,
        SearchAttributePair,
        TypedSearchAttributes,
        WorkflowIDConflictPolicy,
    )
    from temporalio.contrib.pydantic import pydantic_data_converter

STREAM = "BARE"
CREATED, EXPIRED = "bare:created", "bare:expired"
WORKFLOW = "BareOrderWorkflow"
TIMEOUT = timedelta(seconds=10)


class BareInput(BaseModel):
    order_id: str
    user_id: str
    ticket_id: str
    expires_at_ms: int  # epoch milliseconds


class BareEvent(BaseModel):
    subject: str
    order_id: str
    expires_at_ms: int


class BareActivities:
    def __init__(self, js: Any) -> None:
        self.js = js

    @activity.defn(name="bare_reserve")
    async def reserve(self, inp: BareInput) -> bool:
        return True

    @activity.defn(name="bare_publish")
    async def publish(self, event: BareEvent) -> None:
        body = json.dumps({"id": event.order_id, "expiresAt": event.expires_at_ms}).encode()
        headers = {"Nats-Msg-Id": f"{event.subject}:{event.order_id}"}
        await self.js.publish(event.subject, body, stream=STREAM, headers=headers)


@workflow.defn(name=WORKFLOW)
class BareOrderWorkflow:
    def __init__(self) -> None:
        self.reserved = False

    @workflow.run
    async def run(self, inp: BareInput) -> str:
        await workflow.execute_local_activity_method(BareActivities.reserve, inp, start_to_close_timeout=TIMEOUT)
        created = BareEvent(subject=CREATED, order_id=inp.order_id, expires_at_ms=inp.expires_at_ms)
        await workflow.execute_local_activity_method(BareActivities.publish, created, start_to_close_timeout=TIMEOUT)
        self.reserved = True
        delay = inp.expires_at_ms / 1000 - workflow.now().timestamp()
        if delay > 0:
            await asyncio.sleep(delay)  # a durable timer
        expired = BareEvent(subject=EXPIRED, order_id=inp.order_id, expires_at_ms=inp.expires_at_ms)
        await workflow.execute_local_activity_method(BareActivities.publish, expired, start_to_close_timeout=TIMEOUT)
        return "expired"

    @workflow.update
    async def reservation(self) -> bool:
        """For --bare-start update-with-start: answers once reserved and published (as our API waits)."""
        await workflow.wait_condition(lambda: self.reserved)
        return True


async def ensure_stream(js: Any) -> None:
    config = StreamConfig(name=STREAM, subjects=[CREATED, EXPIRED], duplicate_window=600)
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)


# ----------------------------------------------------------------------------------------------
# the worker process
# ----------------------------------------------------------------------------------------------


async def run_worker(task_queue: str, unsandboxed: bool) -> None:
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    env = os.environ
    nc = await nats.connect(env.get("NATS_URL", "nats://127.0.0.1:4222"), name="bare-worker")
    js = nc.jetstream(timeout=5)
    await ensure_stream(js)
    client = await Client.connect(
        env.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"),
        namespace=env.get("TEMPORAL_NAMESPACE", "default"),
        data_converter=pydantic_data_converter,
    )
    acts = BareActivities(js)
    # Our worker's options (workers/worker.py, defaults of ticketing/settings.py, same env names).
    concurrent_activities = int(env.get("WORKER_MAX_CONCURRENT_ACTIVITIES", "200"))
    runner: Any
    if unsandboxed:
        runner = UnsandboxedWorkflowRunner()
    else:
        restrictions = SandboxRestrictions.default
        if env.get("WORKER_SANDBOX_PASSTHROUGH", "true").lower() in {"1", "true", "yes"}:
            restrictions = restrictions.with_passthrough_all_modules()
        runner = SandboxedWorkflowRunner(restrictions=restrictions)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareOrderWorkflow],
        activities=[acts.reserve, acts.publish],
        max_concurrent_activities=concurrent_activities,
        max_concurrent_local_activities=concurrent_activities,
        max_concurrent_workflow_tasks=int(env.get("WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", "100")),
        max_cached_workflows=int(env.get("WORKER_MAX_CACHED_WORKFLOWS", "1000")),
        workflow_runner=runner,
        graceful_shutdown_timeout=timedelta(seconds=5),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run = asyncio.create_task(worker.run())
    print(f"bare worker polling {task_queue} (unsandboxed={unsandboxed})", file=sys.stderr, flush=True)
    done, _ = await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if run not in done:
        await worker.shutdown()
    await run
    await nc.drain()


# ----------------------------------------------------------------------------------------------
# the driver (in the bench process)
# ----------------------------------------------------------------------------------------------

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
USER_ID = SearchAttributeKey.for_keyword("UserId")
TICKET_ID = SearchAttributeKey.for_keyword("TicketId")


@dataclass
class BareRun:
    """One batch: per workflow id, when its start was sent, when its publishes were read, its due time."""

    sent: dict[str, float] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)
    first_sent: float = 0.0
    created_done: float = 0.0


class BareDriver:
    def __init__(self, client: Client, nats_url: str, task_queue: str, mode: str = "start") -> None:
        self.client = client
        self.nats_url = nats_url
        self.task_queue = task_queue
        self.mode = mode
        self.created: dict[str, float] = {}
        self.expired: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.nc: Any = None

    async def start(self) -> None:
        self.nc = await nats.connect(self.nats_url, name="bench-bare-driver")
        js = self.nc.jetstream()
        await ensure_stream(js)

        async def on_created(msg: Any) -> None:
            t = time.time()
            oid = json.loads(msg.data)["id"]
            self.created.setdefault(oid, t)
            fut = self.waiters.pop(oid, None)
            if fut is not None and not fut.done():
                fut.set_result(t)

        async def on_expired(msg: Any) -> None:
            self.expired.setdefault(json.loads(msg.data)["id"], time.time())

        for subject, cb in ((CREATED, on_created), (EXPIRED, on_expired)):
            await js.subscribe(
                subject,
                stream=STREAM,
                cb=cb,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                pending_msgs_limit=1_000_000,
            )

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def _start_one(self, oid: str, expires_at_ms: int) -> None:
        inp = BareInput(
            order_id=oid, user_id=f"user-{hash(oid) % 50}", ticket_id=f"ticket-{oid}", expires_at_ms=expires_at_ms
        )
        options: dict[str, Any] = {
            "id": f"bare-{oid}",
            "task_queue": self.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
            "search_attributes": TypedSearchAttributes(
                [
                    SearchAttributePair(ORDER_STATUS, "created"),
                    SearchAttributePair(USER_ID, inp.user_id),
                    SearchAttributePair(TICKET_ID, inp.ticket_id),
                ]
            ),
            "memo": {"ticketTitle": "Bench concert", "ticketPrice": 20.5},
        }
        if self.mode == "update-with-start":
            op = WithStartWorkflowOperation(BareOrderWorkflow.run, inp, **options)
            await self.client.execute_update_with_start_workflow(
                BareOrderWorkflow.reservation, start_workflow_operation=op
            )
        else:
            await self.client.start_workflow(BareOrderWorkflow.run, inp, **options)

    async def create(
        self,
        n: int,
        concurrency: int,
        *,
        expiry_s: float | None = None,
        due: list[float] | None = None,
        deadline: float = float("inf"),
    ) -> BareRun:
        """Start n workflows with `concurrency` in flight; a slot is busy until the workflow's
        `bare:created` is read (end to end). Each expires `expiry_s` after its start, or at due[i]."""
        run = BareRun()
        tag = os.urandom(3).hex()
        ids = [f"{tag}-{i}" for i in range(n)]
        next_i = 0
        loop = asyncio.get_running_loop()
        run.first_sent = time.time()

        async def slot() -> None:
            nonlocal next_i
            while next_i < n and time.time() < deadline:
                i, next_i = next_i, next_i + 1
                oid = ids[i]
                t0 = time.time()
                due_s = due[i] if due is not None else t0 + (expiry_s or 0)
                run.sent[oid], run.due[oid] = t0, due_s
                fut: asyncio.Future[float] = loop.create_future()
                self.waiters[oid] = fut
                await self._start_one(oid, round(due_s * 1000))
                if oid in self.created:  # read before the start RPC returned
                    continue
                with contextlib.suppress(TimeoutError):  # `deadline` stops new starts, not this wait
                    await asyncio.wait_for(fut, 60)

        await asyncio.gather(*(slot() for _ in range(min(concurrency, n))))
        got = [self.created[o] for o in run.sent if o in self.created]
        run.created_done = max(got, default=time.time())
        return run

    async def wait_expired(self, run: BareRun, deadline: float) -> None:
        while time.time() < deadline and not run.sent.keys() <= self.expired.keys():
            await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run the bare workflow's worker (settings from the environment)")
    w.add_argument("--task-queue", required=True)
    w.add_argument("--unsandboxed", action="store_true", help="UnsandboxedWorkflowRunner instead of the sandbox")
    args = parser.parse_args(argv)
    if args.command == "worker":
        # The workflow class must come from `bench.bare`, not `__main__`: the sandbox re-imports its module.
        from bench import bare

        asyncio.run(bare.run_worker(args.task_queue, args.unsandboxed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
