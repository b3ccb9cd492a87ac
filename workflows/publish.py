"""Durable hand-off for events the API could not publish at once (NATS down): Temporal retries
the publish until NATS is back. Workflow id `publish-<Nats-Msg-Id>`, so one fact, one workflow."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.events import EventActivities
    from ticketing.events import Envelope
    from workflows.order import STORE


@workflow.defn(name="PublishEventWorkflow")
class PublishEventWorkflow:
    @workflow.run
    async def run(self, envelope: Envelope) -> bool:
        return await workflow.execute_activity_method(EventActivities.publish, envelope, **STORE)
