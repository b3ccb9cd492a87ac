"""Stripe helpers for the payment tests: a fault-injecting HTTP proxy in front of localstripe,
a small localstripe client, signed webhook events.

The proxy forwards each request to localstripe on a fresh connection (one request per client
connection, `Connection: close` both ways) and records it. Its faults are all off unless asked for:

- `drop_first`: the first POST to `/v1/payment_intents/<id>/confirm` ("confirm") or to
  `/v1/payment_intents` ("create") is applied by localstripe, then the client's connection closes
  without an answer: the caller sees a network error for a call that did happen, as when Stripe's
  reply is lost on the way back;
- `drop_after_success`: the same for the first 2xx of every distinct call (method, path,
  Idempotency-Key);
- `fail_first`: the first attempt of every distinct call gets a 500 without reaching localstripe;
- `confirm_delay`, `cancel_delay`, `first_refund_delay`: those calls wait before they go on
  (payments in flight, a step held at Stripe's door).

With `idempotency`, the proxy also keeps Stripe's Idempotency-Key promise, which localstripe
ignores: a POST that repeats a key gets the first answer again (and a 400 if its parameters
differ), without reaching localstripe.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx

from .conftest import Server, Stack

CONFIRM = re.compile(r"^/v1/payment_intents/(pi_\w+)/confirm$")
CANCEL = re.compile(r"^/v1/payment_intents/(pi_\w+)/cancel$")
PAYMENT_INTENT = re.compile(r"^/v1/payment_intents/(pi_\w+)(?:/\w+)?$")
STRIPE_500 = b'{"error": {"type": "api_error", "message": "injected fault: Stripe is having a bad moment"}}'
IDEMPOTENCY_400 = (
    b'{"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used '
    b'with the same parameters they were first used with."}}'
)


@dataclass
class Seen:
    method: str
    path: str
    status: int | None  # None: the reply was dropped
    idempotency_key: str | None = None


@dataclass
class Request:
    line: str  # "POST /v1/payment_intents HTTP/1.1"
    method: str
    target: str
    path: str
    headers: list[str]
    body: bytes

    @classmethod
    async def read(cls, reader: asyncio.StreamReader) -> Request:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = line.split(" ", 2)
        headers = [h for h in header_lines if h]
        length = int(cls._header(headers, "content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        return cls(line, method, target, target.split("?", 1)[0], headers, body)

    @staticmethod
    def _header(headers: list[str], wanted: str) -> str | None:
        for h in headers:
            name, _, value = h.partition(":")
            if name.strip().lower() == wanted:
                return value.strip()
        return None

    @property
    def idempotency_key(self) -> str | None:
        return self._header(self.headers, "idempotency-key")

    def upstream_bytes(self) -> bytes:
        kept = [h for h in self.headers if h.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")]
        return "\r\n".join([self.line, *kept, "Connection: close", "", ""]).encode("latin-1") + self.body


@dataclass
class StripeProxy:
    upstream_host: str
    upstream_port: int
    drop_first: str | None = "confirm"  # "confirm", "create" (POST /v1/payment_intents) or None
    drop_after_success: bool = False
    fail_first: bool = False
    confirm_delay: float = 0.0  # seconds each confirm waits before it reaches localstripe
    cancel_delay: float = 0.0  # the same for each cancel of a PaymentIntent
    first_refund_delay: float = 0.0  # the first POST /v1/refunds waits this long (the others do not)
    idempotency: bool = False
    held: list[str] = field(default_factory=list)  # paths of delayed requests, as soon as they arrive
    seen: list[Seen] = field(default_factory=list)
    created_intents: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # paths whose reply was dropped
    failed: list[str] = field(default_factory=list)  # calls answered with an injected 500
    confirms_started: int = 0
    confirms_in_flight: int = 0
    _attempts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _succeeded: set[tuple[str, str, str]] = field(default_factory=set)
    _answers: dict[str, tuple[str, bytes, bytes]] = field(default_factory=dict)  # key -> (path, body, reply)
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

    def creates(self) -> list[Seen]:
        """Every POST /v1/payment_intents that reached the proxy."""
        return [s for s in self.seen if (s.method, s.path) == ("POST", "/v1/payment_intents")]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await Request.read(reader)
            response = await self._respond(request)
            if response is not None:
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, request: Request) -> bytes | None:
        """localstripe's answer, an injected 500, or None: applied upstream, never answered."""
        method, path, idem = request.method, request.path, request.idempotency_key
        call = (method, path, (idem or "") if method == "POST" else request.target)
        self._attempts[call] += 1
        if self.fail_first and self._attempts[call] == 1:
            self.failed.append(f"{method} {path}")
            self.seen.append(Seen(method, path, 500, idem))
            return _reply("500 Internal Server Error", STRIPE_500)
        if self.idempotency and method == "POST" and idem and idem in self._answers:
            first_path, first_body, answer = self._answers[idem]
            if (first_path, first_body) != (path, request.body):
                answer = _reply("400 Bad Request", IDEMPOTENCY_400)
            self.seen.append(Seen(method, path, _status(answer), idem))
            return answer
        is_confirm = method == "POST" and CONFIRM.match(path) is not None
        if is_confirm:
            self.confirms_started += 1
            self.confirms_in_flight += 1
        try:
            await self._delay(method, path, is_confirm)
            response = await self._forward(request)
        finally:
            if is_confirm:
                self.confirms_in_flight -= 1
        status = _status(response)
        if self.idempotency and method == "POST" and idem and status < 500:
            self._answers[idem] = (path, request.body, response)
        if (method, path) == ("POST", "/v1/payment_intents") and status == 200:
            with suppress(ValueError, KeyError):
                self.created_intents.append(json.loads(response.split(b"\r\n\r\n", 1)[1])["id"])
        if self._drop(method, path, call, status):
            self.dropped.append(path)
            self.seen.append(Seen(method, path, None, idem))
            return None
        self.seen.append(Seen(method, path, status, idem))
        return response

    async def _delay(self, method: str, path: str, is_confirm: bool) -> None:
        delay = 0.0
        if is_confirm:
            delay = self.confirm_delay
        elif method == "POST" and CANCEL.match(path):
            delay = self.cancel_delay
        elif (method, path) == ("POST", "/v1/refunds") and path not in self.held:
            delay = self.first_refund_delay
        if delay:
            self.held.append(path)
            await asyncio.sleep(delay)

    async def _forward(self, request: Request) -> bytes:
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        try:
            up_writer.write(request.upstream_bytes())
            await up_writer.drain()
            return await up_reader.read()  # until localstripe closes
        finally:
            up_writer.close()

    def _drop(self, method: str, path: str, call: tuple[str, str, str], status: int) -> bool:
        if self.drop_after_success and 200 <= status < 300 and call not in self._succeeded:
            self._succeeded.add(call)
            return True
        if method != "POST" or self.dropped:
            return False
        if self.drop_first == "confirm":
            return CONFIRM.match(path) is not None
        return self.drop_first == "create" and path == "/v1/payment_intents"


def _reply(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


@asynccontextmanager
async def stripe_proxy(upstream: Server, **faults: Any) -> AsyncIterator[StripeProxy]:
    """A StripeProxy in front of this localstripe (faults: the StripeProxy fields), stopped after."""
    proxy = await StripeProxy("127.0.0.1", upstream.port, **faults).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


# ── localstripe, seen from the tests ─────────────────────────────────────────────────────
class LocalStripe:
    """Direct calls to localstripe (form-encoded like Stripe's API)."""

    def __init__(self, base: str, key: str = "sk_test_123") -> None:
        self.http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=20)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, data: dict[str, Any] | None = None) -> dict:
        response = await self.http.request(method, path, data=data)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    async def intent(self, intent_id: str) -> dict:
        return await self.call("GET", f"/v1/payment_intents/{intent_id}")

    async def intents(self) -> list[dict]:
        """Every PaymentIntent localstripe holds."""
        return (await self.call("GET", "/v1/payment_intents?limit=1000000"))["data"]

    async def intents_for_order(self, order_id: str) -> list[dict]:
        """Every PaymentIntent localstripe holds whose metadata names this order."""
        return [pi for pi in await self.intents() if (pi.get("metadata") or {}).get("orderId") == order_id]

    async def refunds_for(self, intent_id: str) -> list[dict]:
        listing = await self.call("GET", f"/v1/refunds?payment_intent={intent_id}&limit=100")
        return listing["data"]

    async def three_d_secure_card(self) -> str:
        pm = await self.call(
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
        token = await self.call(
            "POST",
            "/v1/tokens",
            {"card[number]": number, "card[exp_month]": "12", "card[exp_year]": "2040", "card[cvc]": "123"},
        )
        return token["id"]

    async def authenticate(self, intent_id: str, client_secret: str, success: bool = True) -> dict:
        return await self.call(
            "POST",
            f"/v1/payment_intents/{intent_id}/_authenticate",
            {"client_secret": client_secret, "success": "true" if success else "false"},
        )

    async def paid_intent(self, order_id: str | None, amount: int, token: str = "pm_card_visa") -> dict:
        """A PaymentIntent for `order_id` (None: naming no order) created and confirmed straight at
        Stripe (not by us)."""
        params = {"amount": str(amount), "currency": "usd", "payment_method": token, "payment_method_types[]": "card"}
        if order_id is not None:
            params["metadata[orderId]"] = order_id
        pi = await self.call("POST", "/v1/payment_intents", params)
        return await self.call("POST", f"/v1/payment_intents/{pi['id']}/confirm")


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


async def deliver(stack: Stack, payload: bytes) -> None:
    """Stripe delivers this event, signed with the stack's webhook secret: the API accepts it."""
    r = await send_webhook(stack, payload, sign(payload, stack.settings.stripe_webhook_secret))
    assert r.status_code == 200, r.text


async def start_three_d_secure(stack: Stack, ls: LocalStripe, buyer: dict[str, str], order_id: str) -> dict:
    """Pays with a 3-D Secure card: 202, with what Stripe.js needs to authenticate the buyer."""
    r = await stack.pay(buyer, order_id, await ls.three_d_secure_card())
    assert r.status_code == 202, r.text
    action = r.json()
    assert action["status"] == "requires_action", action
    assert action["clientSecret"].startswith(f"{action['paymentIntentId']}_secret_"), action
    return action


@asynccontextmanager
async def local_stripe(base: str | None) -> AsyncIterator[LocalStripe]:
    """A LocalStripe client for this base URL (a test's settings.stripe_api_base: always set)."""
    assert base, "no Stripe API base: the tests talk to localstripe"
    ls = LocalStripe(base)
    try:
        yield ls
    finally:
        await ls.close()
