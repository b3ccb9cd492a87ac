"""Stripe helpers for the payment tests: a fault-injecting HTTP proxy in front of localstripe,
a small localstripe client, signed webhook events, and a stack with overridden settings.

The proxy forwards each request to localstripe on a fresh connection (one request per client
connection, `Connection: close` both ways). For the first POST to
`/v1/payment_intents/<id>/confirm` (or, with drop_first="create", to `/v1/payment_intents`) it
forwards the request, lets localstripe apply it, then closes the client's connection without an
answer: the caller sees a network error for a call that did happen, as when Stripe's reply is lost
on the way back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats

from api.app import create_app
from ticketing.temporal import connect_temporal
from workers.worker import build_worker

try:
    from .conftest import Servers, Stack
except ImportError:  # tests/ is not a package
    from conftest import Servers, Stack

CONFIRM = re.compile(r"^/v1/payment_intents/(pi_\w+)/confirm$")
CANCEL = re.compile(r"^/v1/payment_intents/(pi_\w+)/cancel$")
PAYMENT_INTENT = re.compile(r"^/v1/payment_intents/(pi_\w+)(?:/\w+)?$")


@dataclass
class Seen:
    method: str
    path: str
    status: int | None  # None: the reply was dropped


@dataclass
class StripeProxy:
    upstream_host: str
    upstream_port: int
    drop_first: str | None = "confirm"  # "confirm", "create" (POST /v1/payment_intents) or None
    confirm_delay: float = 0.0  # seconds each confirm waits before it reaches localstripe
    cancel_delay: float = 0.0  # the same for each cancel of a PaymentIntent
    first_refund_delay: float = 0.0  # the first POST /v1/refunds waits this long (the others do not)
    held: list[str] = field(default_factory=list)  # paths of delayed requests, as soon as they arrive
    seen: list[Seen] = field(default_factory=list)
    created_intents: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # paths whose reply was dropped
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> StripeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def intent_calls(self, intent_id: str) -> list[Seen]:
        """Every request about one PaymentIntent (retrieve, confirm, cancel ...)."""
        return [s for s in self.seen if (m := PAYMENT_INTENT.match(s.path)) and m.group(1) == intent_id]

    def _drop(self, method: str, path: str) -> bool:
        if method != "POST":
            return False
        if self.drop_first == "confirm":
            return CONFIRM.match(path) is not None
        return self.drop_first == "create" and path == "/v1/payment_intents"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            path = target.split("?", 1)[0]
            headers = [h for h in header_lines if h]
            length = 0
            for h in headers:
                name, _, value = h.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""

            if method == "POST" and CONFIRM.match(path) and self.confirm_delay:
                self.held.append(path)
                await asyncio.sleep(self.confirm_delay)
            if method == "POST" and CANCEL.match(path) and self.cancel_delay:
                self.held.append(path)
                await asyncio.sleep(self.cancel_delay)
            if method == "POST" and path == "/v1/refunds" and self.first_refund_delay and path not in self.held:
                self.held.append(path)
                await asyncio.sleep(self.first_refund_delay)
            kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")]
            upstream_head = "\r\n".join([request_line, *kept, "Connection: close", "", ""]).encode("latin-1")
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            try:
                up_writer.write(upstream_head + body)
                await up_writer.drain()
                response = await up_reader.read()  # until localstripe closes
            finally:
                up_writer.close()
            status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0

            if method == "POST" and path == "/v1/payment_intents" and status == 200:
                payload = response.split(b"\r\n\r\n", 1)[1]
                with suppress(ValueError, KeyError):
                    self.created_intents.append(json.loads(payload)["id"])
            if self._drop(method, path) and not self.dropped:
                self.dropped.append(path)
                self.seen.append(Seen(method, path, None))
                return  # applied upstream, never answered: the connection just closes
            self.seen.append(Seen(method, path, status))
            writer.write(response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# ── localstripe, seen from the tests ─────────────────────────────────────────────────────
class LocalStripe:
    """Direct calls to localstripe (form-encoded like Stripe's API)."""

    def __init__(self, base: str, key: str = "sk_test_123") -> None:
        self.http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=20)

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, data: dict[str, Any] | None = None) -> dict:
        response = await self.http.request(method, path, data=data)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    async def intent(self, intent_id: str) -> dict:
        return await self._call("GET", f"/v1/payment_intents/{intent_id}")

    async def intents_for_order(self, order_id: str) -> list[dict]:
        """Every PaymentIntent localstripe holds whose metadata names this order."""
        listing = await self._call("GET", "/v1/payment_intents?limit=100000")
        return [pi for pi in listing["data"] if (pi.get("metadata") or {}).get("orderId") == order_id]

    async def refunds_for(self, intent_id: str) -> list[dict]:
        listing = await self._call("GET", f"/v1/refunds?payment_intent={intent_id}&limit=100")
        return listing["data"]

    async def three_d_secure_card(self) -> str:
        pm = await self._call(
            "POST",
            "/v1/payment_methods",
            {
                "type": "card",
                "card[number]": "4000002760003184",
                "card[exp_month]": "12",
                "card[exp_year]": "2040",
                "card[cvc]": "123",
            },
        )
        return pm["id"]

    async def card_token(self, number: str = "4242424242424242") -> str:
        """A card token (`tok_…`) as Stripe.js `createToken` makes one (localstripe has no `tok_visa`)."""
        token = await self._call(
            "POST",
            "/v1/tokens",
            {"card[number]": number, "card[exp_month]": "12", "card[exp_year]": "2040", "card[cvc]": "123"},
        )
        return token["id"]

    async def authenticate(self, intent_id: str, client_secret: str, success: bool = True) -> dict:
        return await self._call(
            "POST",
            f"/v1/payment_intents/{intent_id}/_authenticate",
            {"client_secret": client_secret, "success": "true" if success else "false"},
        )

    async def paid_intent(self, order_id: str, amount: int, token: str = "pm_card_visa") -> dict:
        """A PaymentIntent for `order_id` created and confirmed straight at Stripe (not by us)."""
        pi = await self._call(
            "POST",
            "/v1/payment_intents",
            {
                "amount": str(amount),
                "currency": "usd",
                "payment_method": token,
                "payment_method_types[]": "card",
                "metadata[orderId]": order_id,
            },
        )
        return await self._call("POST", f"/v1/payment_intents/{pi['id']}/confirm")


# ── webhooks ─────────────────────────────────────────────────────────────────────────────
def intent_event(intent: dict, event_type: str = "payment_intent.succeeded") -> bytes:
    event = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "type": event_type,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": intent},
    }
    return json.dumps(event).encode()


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


async def send_webhook(stack: Stack, payload: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await stack.api.post("/api/payments/webhook", content=payload, headers=headers)


# ── a stack with its own settings ─────────────────────────────────────────────────────────
async def _drop_streams(nats_url: str) -> None:
    """One stream owns the subjects: drop earlier tests' streams before this stack makes its own."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@asynccontextmanager
async def custom_stack(servers: Servers, **overrides: Any) -> AsyncIterator[Stack]:
    """Like the `stack` fixture, with settings overrides (e.g. order_expiration_seconds=3)."""
    settings = servers.settings(**overrides)
    await _drop_streams(settings.nats_url)
    temporal = await connect_temporal(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app), build_worker(temporal, settings, app.state.services.bus):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            yield Stack(api=api, settings=settings, temporal=temporal, servers=servers)


@asynccontextmanager
async def local_stripe(base: str) -> AsyncIterator[LocalStripe]:
    ls = LocalStripe(base)
    try:
        yield ls
    finally:
        await ls.close()
