"""NATS JetStream: one stream for every subject, publishes deduplicated by `Nats-Msg-Id`."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from ticketing.events import SUBJECTS, Event
from ticketing.settings import Settings

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self, nc: NATS, js: JetStreamContext, stream: str) -> None:
        self.nc = nc
        self.js = js
        self.stream = stream

    @classmethod
    async def connect(cls, settings: Settings, *, ensure_stream: bool = True) -> EventBus:
        nc = await nats.connect(
            settings.nats_url,
            name="ticketing",
            max_reconnect_attempts=-1,  # keep trying: Temporal retries the publishes meanwhile
            reconnect_time_wait=1,
            connect_timeout=3,
        )
        bus = cls(nc, nc.jetstream(timeout=5), settings.nats_stream)
        if ensure_stream:
            await bus.ensure_stream(settings.nats_duplicate_window_seconds)
        return bus

    async def ensure_stream(self, duplicate_window_seconds: float) -> None:
        config = StreamConfig(name=self.stream, subjects=SUBJECTS, duplicate_window=duplicate_window_seconds)
        try:
            await self.js.stream_info(self.stream)
            await self.js.update_stream(config)
        except NotFoundError:
            await self.js.add_stream(config)

    async def publish(self, event: Event) -> bool:
        """Publish once per fact; returns False when JetStream recognised a duplicate."""
        ack = await self.js.publish(
            event.subject, event.payload(), stream=self.stream, headers={"Nats-Msg-Id": event.msg_id}
        )
        if ack.duplicate:
            log.info("duplicate event dropped by JetStream", extra={"msgId": event.msg_id})
        return not ack.duplicate

    async def ping(self) -> None:
        if not self.nc.is_connected:
            raise ConnectionError("NATS is not connected")
        await self.nc.flush(timeout=2)

    async def close(self) -> None:
        await self.nc.drain()
