"""Publishing to NATS JetStream. Safe to retry: the `Nats-Msg-Id` of a fact never changes, and the
stream's duplicate window (days) outlasts any retry, so a fact lands in the stream once."""

from __future__ import annotations

from temporalio import activity

from ticketing.bus import EventBus
from ticketing.events import Envelope


class EventActivities:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    @activity.defn(name="publish_event")
    async def publish(self, envelope: Envelope) -> bool:
        return await self.bus.publish(envelope.event())
