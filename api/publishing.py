"""Publishing from the API, after the state is stored: straight to JetStream when NATS answers,
otherwise handed to a Temporal workflow that retries until it does. Either way one message
per fact (same `Nats-Msg-Id`), and the HTTP caller is not failed for a NATS outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.deps import Services
from ticketing.events import Envelope, Event
from workflows.publish import PublishEventWorkflow

log = logging.getLogger(__name__)


async def publish_after_store(services: Services, event: Event) -> None:
    try:
        await asyncio.wait_for(services.bus.publish(event), timeout=2)
        return
    except Exception as err:  # NATS down or slow: hand over to Temporal
        log.warning("publish deferred to Temporal", extra={"msgId": event.msg_id, "error": repr(err)})
    with contextlib.suppress(WorkflowAlreadyStartedError):  # this fact is already handed over
        await services.temporal.start_workflow(
            PublishEventWorkflow.run,
            Envelope.of(event),
            id=f"publish-{event.msg_id}",
            task_queue=services.settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
