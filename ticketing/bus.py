"""NATS JetStream: one stream for every subject, publishes deduplicated by `Nats-Msg-Id`."""

from __future__ import annotations

import logging
import ssl
from typing import Any

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
            **nats_options(settings),
            name="ticketing",
            max_reconnect_attempts=-1,  # keep trying: Temporal retries the publishes meanwhile
            reconnect_time_wait=1,
            connect_timeout=3,
        )
        bus = cls(nc, nc.jetstream(timeout=5), settings.nats_stream)
        if ensure_stream:
            await bus.ensure_stream(settings.nats_duplicate_window_seconds, settings.nats_stream_replicas)
        return bus

    async def ensure_stream(self, duplicate_window_seconds: float, replicas: int = 1) -> None:
        config = StreamConfig(
            name=self.stream, subjects=SUBJECTS, duplicate_window=duplicate_window_seconds, num_replicas=replicas
        )
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


def nats_options(settings: Settings) -> dict[str, Any]:
    """nats.connect() arguments for the servers, credentials and TLS in the settings (also used by
    the tests and tools that read the stream)."""
    options: dict[str, Any] = {"servers": [u.strip() for u in settings.nats_url.split(",") if u.strip()]}
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_nkey_seed:
        options["nkeys_seed"] = settings.nats_nkey_seed
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
    if settings.nats_tls_ca or settings.nats_tls_cert:
        context = ssl.create_default_context(cafile=settings.nats_tls_ca)
        if settings.nats_tls_cert:
            context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
        options["tls"] = context
    return options
