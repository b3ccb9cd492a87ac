"""Bad input. Schemathesis (property-based, from the OpenAPI spec) over every route of a real API
process (uvicorn, with a worker process behind it), signed in with a Bearer token: zero 5xx and
every error body in the contract's shape. Then explicit cases against the in-process API:
malformed JSON, a 2 MB body, wrong types, unknown fields and malformed ids give 400/404 and change
nothing (MongoDB documents and the stream compared before and after)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pymongo import AsyncMongoClient
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from api.app import create_app
from devstack import ManagedProcess, free_port, wait_for_port
from ticketing.settings import Settings

from ..conftest import Servers, Stack, assert_error, drop_streams, error_entries, settings_env, start_worker
from .conftest import record

EXAMPLES = 25  # per operation


@dataclass
class FuzzTarget:
    base_url: str
    auth: dict[str, str]
    statuses: Counter[int]


@pytest.fixture(scope="module")
def fuzz_target(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    import asyncio

    folder = tmp_path_factory.mktemp("fuzz")
    settings_ = servers.settings(order_expiration_seconds=60)
    asyncio.run(drop_streams(settings_))
    port = free_port()
    env = {**settings_env(settings_), "PORT": str(port), "LOG_LEVEL": "WARNING"}
    started: list[ManagedProcess] = []
    try:
        api = ManagedProcess("api").start(
            [sys.executable, "-m", "ticketing.cli", "api"], env=env, log_path=folder / "api.log"
        )
        started.append(api)
        started.append(start_worker(settings_, folder / "worker.log"))
        wait_for_port("127.0.0.1", port, 60, process=api)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            r = client.post("/api/users/signup", json={"email": "fuzz@test.com", "password": "password"})
            assert r.status_code == 201, r.text
            auth = {"Authorization": f"Bearer {r.json()['token']}"}
            r = client.post("/api/tickets", json={"title": "Fuzzed", "price": 10}, headers=auth)
            assert r.status_code == 201, r.text
        target = FuzzTarget(base, auth, Counter())
        yield target
        record(
            f"[bad input] schemathesis: {sum(target.statuses.values())} requests over every operation "
            f"(max {EXAMPLES} examples each) | HTTP {dict(sorted(target.statuses.items()))} | 5xx=0"
        )
        log = (folder / "api.log").read_text(errors="replace")
        assert "unhandled error" not in log, log[-3000:]
    finally:
        for process in reversed(started):
            process.stop(10)


# The spec the API serves at /openapi.json (built without connecting; the calls go to the process).
schema = schemathesis.openapi.from_dict(create_app(Settings(app_env="test")).openapi())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzz_every_route(case: Any, fuzz_target: FuzzTarget) -> None:
    response = case.call(base_url=fuzz_target.base_url, headers=fuzz_target.auth, timeout=60)
    fuzz_target.statuses[response.status_code] += 1
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
    if response.status_code >= 400:
        error_entries(response.json(), extra_keys={"down"})  # /readyz names what is down


# ── explicit cases: rejected, and nothing changes ────────────────────────────────────────
async def snapshot(stack: Stack) -> dict[str, Any]:
    mongo: AsyncMongoClient = AsyncMongoClient(stack.settings.mongo_url, tz_aware=True)
    try:
        db = mongo[stack.settings.mongo_db]
        state = {name: [d async for d in db[name].find({}).sort("_id")] for name in ("users", "tickets", "orders")}
        state["charges"] = [d async for d in db.charges.find({}).sort("_id")]
    finally:
        await mongo.close()
    state["stream"] = [(m.subject, m.msg_id) for m in await stack.messages()]
    return state


async def test_malformed_huge_wrong_unknown_and_bad_ids_change_nothing(stack: Stack) -> None:
    user = await stack.signup()
    ticket = await stack.create_ticket(user, title="Original", price=20)
    owner = await stack.signup()
    order = await stack.create_order(owner, (await stack.create_ticket(user))["id"])
    await stack.wait_for_messages("ticket:updated", 1)
    before = await snapshot(stack)
    huge = json.dumps({"title": "x" * (2 * 1024 * 1024), "price": 10})
    ok_id, missing = ticket["id"], "0" * 24
    bodies = {"/api/tickets": "POST", f"/api/tickets/{ok_id}": "PUT", "/api/orders": "POST", "/api/payments": "POST"}
    cases: list[tuple[str, str, dict, Any, set[int]]] = []  # (method, path, headers, content|json, allowed)
    for path, method in [*bodies.items(), ("/api/users/signup", "POST"), ("/api/users/signin", "POST")]:
        for raw in ['{"title": "a", "price": ', "{'title': 'a'}", "[1, 2", "\x00\xff", "null", "[]", '"x"', ""]:
            cases.append((method, path, user, raw.encode("latin-1"), {400}))
        cases.append((method, path, user, huge.encode(), {400, 413}))
        cases.append((method, path, user, b"{" + b'"a":1,' * 350_000 + b'"b":2}', {400, 413}))
    wrong_types: dict[str, list[dict[str, Any]]] = {
        "/api/tickets": [
            {"title": "a", "price": "ten"},
            {"title": "a", "price": True},
            {"title": ["a"], "price": 1},
            {"title": "a", "price": -1},
            {"title": "a", "price": 1.001},
            {"title": "a", "price": 1e308},
            {"title": "", "price": 1},
            {"title": None, "price": None},
        ],
        "/api/orders": [{"ticketId": 123}, {"ticketId": None}, {"ticketId": {"$ne": None}}, {"ticketId": ["a"]}],
        "/api/payments": [
            {"orderId": order["id"], "token": 4242},
            {"orderId": {"$gt": ""}, "token": "pm_card_visa"},
            {"orderId": order["id"], "token": ""},
            {"orderId": order["id"]},
        ],
        "/api/users/signup": [{"email": "x", "password": "password"}, {"email": "a@b.co", "password": "12"}],
    }
    for path, payloads in wrong_types.items():
        for payload in payloads:
            cases.append(("POST", path, owner, json.dumps(payload).encode(), {400}))
    for path, payload in [
        ("/api/tickets", {"title": "a", "price": 1, "userId": "someone"}),
        ("/api/tickets", {"title": "a", "price": 1, "version": 99}),
        ("/api/orders", {"ticketId": ok_id, "status": "complete"}),
        ("/api/payments", {"orderId": order["id"], "token": "pm_card_visa", "amount": 1}),
        ("/api/users/signup", {"email": "new@test.com", "password": "password", "admin": True}),
    ]:
        cases.append(("POST", path, owner, json.dumps(payload).encode(), {400}))
    extra_field = json.dumps({"title": "a", "price": 1, "orderId": "x"}).encode()
    cases.append(("PUT", f"/api/tickets/{ok_id}", user, extra_field, {400}))
    for bad in ["nope", "123", "0" * 23, "g" * 24, "0" * 25, "%24ne", "..%2F..", missing]:
        cases += [
            ("GET", f"/api/tickets/{bad}", user, None, {404}),
            ("PUT", f"/api/tickets/{bad}", user, json.dumps({"title": "a", "price": 1}).encode(), {404}),
            ("GET", f"/api/orders/{bad}", owner, None, {404}),
            ("DELETE", f"/api/orders/{bad}", owner, None, {404}),
            ("POST", "/api/orders", owner, json.dumps({"ticketId": bad}).encode(), {400, 404}),
            ("POST", "/api/payments", owner, json.dumps({"orderId": bad, "token": "pm_card_visa"}).encode(), {404}),
        ]
    statuses: Counter[int] = Counter()
    for method, path, headers, content, allowed in cases:
        r = await stack.api.request(
            method, path, content=content, headers={**headers, "Content-Type": "application/json"}
        )
        statuses[r.status_code] += 1
        assert r.status_code in allowed, (method, path, content and content[:80], r.status_code, r.text[:300])
        assert_error(r, r.status_code)
    after = await snapshot(stack)
    for name in before:
        assert after[name] == before[name], f"{name} changed"
    record(
        f"[bad input] explicit: {len(cases)} malformed/huge/wrong-type/unknown-field/bad-id requests | "
        f"HTTP {dict(sorted(statuses.items()))} | documents and stream unchanged"
    )
