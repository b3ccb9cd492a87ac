"""Security: bad sessions are 401, other users' orders and payments are 401, webhooks need Stripe's
signature, secrets and card data never reach a response body (JSON or web page) or a log line (the
caplog records and their JSON rendering by ticketing.logs.JsonFormatter), cookies are httpOnly (and Secure in
prod), and sign-in attempts are rate-limited."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from ticketing.documents import User
from ticketing.logs import QUIET_LOGGERS, JsonFormatter

from ..conftest import Servers, Stack, api_in_process, assert_error, drop_streams
from ..stripe_proxy import intent_event, local_stripe, send_webhook, sign
from .conftest import CARD_PATTERN, record

PROTECTED = [
    ("POST", "/api/tickets", {"title": "x", "price": 1}),
    ("PUT", "/api/tickets/{ticket}", {"title": "x", "price": 1}),
    ("POST", "/api/orders", {"ticketId": "{ticket}"}),
    ("GET", "/api/orders", None),
    ("GET", "/api/orders/{order}", None),
    ("DELETE", "/api/orders/{order}", None),
    ("POST", "/api/payments", {"orderId": "{order}", "token": "pm_card_visa"}),
]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bad_tokens(stack: Stack, user_id: str, email: str) -> dict[str, str]:
    key = stack.settings.jwt_key
    now = datetime.now(UTC)
    claims = {"id": user_id, "email": email, "iat": now, "exp": now + timedelta(hours=1)}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'iat': 0, 'exp': int(time.time()) + 3600})}."
    return {
        "forged (other key)": jwt.encode(claims, "not-the-key-0123456789abcdef0123456789", algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - timedelta(seconds=5)}, key, algorithm="HS256"),
        "alg none": unsigned,
        "alg none (PyJWT)": jwt.encode(claims, "", algorithm="none"),
        "no expiry": jwt.encode({"id": user_id, "email": email}, key, algorithm="HS256"),
        "HS512 with the key": jwt.encode(claims, key, algorithm="HS512"),
        "tampered payload": ".".join(
            [
                jwt.encode(claims, key, algorithm="HS256").split(".")[0],
                _b64({**claims, "iat": 0, "exp": int(time.time()) + 3600, "id": "someone-else"}),
                jwt.encode(claims, key, algorithm="HS256").split(".")[2],
            ]
        ),
        "garbage": "not.a.jwt",
    }


async def test_forged_expired_and_alg_none_jwts_are_401(stack: Stack):
    owner = await stack.signup()
    me = (await stack.api.get("/api/users/currentuser", headers=owner)).json()["currentUser"]
    ticket = await stack.create_ticket(await stack.signup())
    order = await stack.create_order(owner, ticket["id"])
    count = 0
    for name, token in bad_tokens(stack, me["id"], me["email"]).items():
        for how in ("bearer", "cookie"):
            for method, path, body in PROTECTED:
                url = path.format(ticket=ticket["id"], order=order["id"])
                payload = json.loads(json.dumps(body).replace("{ticket}", ticket["id"]).replace("{order}", order["id"]))
                kwargs: dict = {"json": payload} if body else {}
                if how == "bearer":
                    kwargs["headers"] = {"Authorization": f"Bearer {token}"}
                else:
                    kwargs["headers"] = {"Cookie": f"session={token}"}
                r = await stack.api.request(method, url, **kwargs)
                errors = assert_error(r, 401)
                assert errors == [{"message": "Not authorized", "field": None}], (name, how, method, url)
                count += 1
            r = await stack.api.get("/api/users/currentuser", headers={"Authorization": f"Bearer {token}"})
            assert r.json() == {"currentUser": None}, name
    # nothing changed: the order is still the owner's, still created
    shown = await stack.api.get(f"/api/orders/{order['id']}", headers=owner)
    assert shown.json()["status"] == "created"
    record(f"[security] bad JWTs: {count} requests with {len(bad_tokens(stack, 'x', 'y'))} kinds of bad token -> 401")


async def test_another_users_order_and_payment_are_401(stack: Stack):
    seller = await stack.signup()
    owner = await stack.signup()
    intruder = await stack.signup()
    ticket = await stack.create_ticket(seller)
    order = await stack.create_order(owner, ticket["id"])
    for method, path, body in [
        ("GET", f"/api/orders/{order['id']}", None),
        ("DELETE", f"/api/orders/{order['id']}", None),
        ("POST", "/api/payments", {"orderId": order["id"], "token": "pm_card_visa"}),
        ("PUT", f"/api/tickets/{ticket['id']}", {"title": "mine now", "price": 1}),
    ]:
        r = await stack.api.request(method, path, json=body, headers=intruder)
        assert assert_error(r, 401) == [{"message": "Not authorized", "field": None}], (method, path)
    assert (await stack.api.get("/api/orders", headers=intruder)).json() == []
    shown = (await stack.api.get(f"/api/orders/{order['id']}", headers=owner)).json()
    assert shown["status"] == "created"  # the intruder neither cancelled nor paid it
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        assert await ls.intents_for_order(order["id"]) == []
    # the owner pays; the intruder still cannot read it
    r = await stack.api.post("/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}, headers=owner)
    assert r.status_code == 201, r.text
    assert (await stack.api.get(f"/api/orders/{order['id']}", headers=intruder)).status_code == 401


async def test_webhook_with_a_bad_signature_is_400(stack: Stack):
    seller, buyer = await stack.signup(), await stack.signup()
    order = await stack.create_order(buyer, (await stack.create_ticket(seller))["id"])
    async with local_stripe(stack.settings.stripe_api_base) as ls:
        intent = await ls.paid_intent(order["id"], 2050)
    payload = intent_event(intent)
    secret = stack.settings.stripe_webhook_secret
    for name, signature in {
        "missing": None,
        "empty": "",
        "wrong secret": sign(payload, "whsec_wrong"),
        "stale timestamp": sign(payload, secret, timestamp=int(time.time()) - 3600),
        "garbage": "t=1,v1=deadbeef",
    }.items():
        r = await send_webhook(stack, payload, signature)
        assert assert_error(r, 400) == [{"message": "Invalid Stripe signature", "field": None}], name
    tampered = payload.replace(b"payment_intent.succeeded", b"payment_intent.payment_failed")
    assert_error(await send_webhook(stack, tampered, sign(payload, secret)), 400, message="Invalid Stripe signature")
    shown = (await stack.api.get(f"/api/orders/{order['id']}", headers=buyer)).json()
    assert shown["status"] == "created"


async def test_no_secret_or_card_data_in_responses_or_logs(stack: Stack, caplog: pytest.LogCaptureFixture):
    # The worst case a service can be configured for: LOG_LEVEL=DEBUG, with configure_logging's
    # quieted libraries (their DEBUG output carries request bodies and documents).
    caplog.set_level(logging.DEBUG)
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        await _exercise_and_scan(stack, caplog)
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


async def _exercise_and_scan(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    password = "s3cret-Pa55"
    bodies: list[str] = []

    async def call(method: str, path: str, **kwargs) -> httpx.Response:
        r = await stack.api.request(method, path, **kwargs)
        bodies.append(r.text)
        return r

    email = f"sec-{time.time_ns()}@test.com"
    r = await call("POST", "/api/users/signup", json={"email": email, "password": password})
    token = r.json()["token"]
    me = {"Authorization": f"Bearer {token}"}
    await call("POST", "/api/users/signin", json={"email": email, "password": password})
    await call("POST", "/api/users/signin", json={"email": email, "password": "wrong-one"})
    await call("POST", "/api/users/signup", json={"email": email, "password": password})  # email in use
    await call("POST", "/api/users/signup", json={"email": "bad", "password": password})
    await call("GET", "/api/users/currentuser", headers=me)
    seller = await stack.signup()
    ticket = await stack.create_ticket(seller)
    order = (await call("POST", "/api/orders", json={"ticketId": ticket["id"]}, headers=me)).json()
    await call("POST", "/api/payments", json={"orderId": order["id"], "token": "pm_card_chargeDeclined"}, headers=me)
    await call("POST", "/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}, headers=me)
    await call("POST", "/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}, headers=me)
    await call("POST", "/api/payments", json={"orderId": order["id"], "token": 4242424242424242}, headers=me)
    await call("POST", "/api/payments", json={"orderId": "x" * 24, "token": "tok_4242424242424242"}, headers=me)
    await call("POST", "/api/payments/webhook", content=b'{"card": "4242424242424242"}')
    await call("POST", "/api/payments", json={"orderId": order["id"], "token": "4242424242424242"}, headers=me)
    await call("GET", f"/api/orders/{order['id']}", headers=me)
    await call("GET", "/api/orders", headers=me)
    # the web pages, as the signed-in buyer's browser loads them (session in the cookie)
    browser = {"Cookie": f"session={token}"}
    pages = ["/", f"/tickets/{ticket['id']}", "/orders", f"/orders/{order['id']}", "/sell", "/signin", "/signup"]
    for path in pages:
        r = await call("GET", path, headers=browser)
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers["content-type"].startswith("text/html"), (path, r.status_code)
        assert token not in r.text, path  # the session stays in its httpOnly cookie

    stored = await User.find_one(User.email == email)
    assert stored is not None
    secrets = {
        "password": password,
        "password hash": stored.password_hash,
        "argon2 hash prefix": "$argon2",
        "JWT key": stack.settings.jwt_key,
        "Stripe key": stack.settings.stripe_key,
        "webhook secret": stack.settings.stripe_webhook_secret,
        "card token": "pm_card_visa",
        "declined card token": "pm_card_chargeDeclined",
        "card number": "4242424242",
        "last4": "last4",
    }
    formatter = JsonFormatter()
    lines = [record.getMessage() for record in caplog.records] + [formatter.format(r) for r in caplog.records]
    assert lines, "no log records captured"
    leaks = []
    for where, texts in (("response", bodies), ("log", lines)):
        for text in texts:
            for name, secret in secrets.items():
                if secret in text:
                    leaks.append((where, name, text[:300]))
            if CARD_PATTERN.search(text):
                leaks.append((where, "4242", text[:300]))
            if where == "log" and token in text:
                leaks.append((where, "session JWT", text[:300]))
    assert not leaks, sorted({f"{w} {n} {t[:200]}" for w, n, t in leaks})[:5]
    record(
        f"[security] secrets: {len(bodies)} response bodies ({len(pages)} web pages), "
        f"{len(lines)} log lines scanned, 0 leaks"
    )


async def test_cookies_httponly_and_secure_in_prod(servers: Servers, stack: Stack):
    r = await stack.api.post("/api/users/signup", json={"email": f"c{time.time_ns()}@test.com", "password": "password"})
    cookie = r.headers["set-cookie"]
    assert "session=" in cookie, cookie
    assert "httponly" in cookie.lower(), cookie
    assert "secure" not in cookie.lower(), cookie

    settings = servers.settings(
        app_env="prod",
        jwt_key="prod-jwt-key-0123456789abcdef0123456789abcdef",
        stripe_key="sk_test_prod_like",
        stripe_webhook_secret="whsec_prod_like",
    )
    await drop_streams(settings)
    async with api_in_process(settings, base_url="https://test") as (_, api):
        email = f"p{time.time_ns()}@test.com"
        seen = []
        r = await api.post("/api/users/signup", json={"email": email, "password": "password"})
        seen.append(r.headers["set-cookie"])
        r = await api.post("/api/users/signin", json={"email": email, "password": "password"})
        seen.append(r.headers["set-cookie"])
        r = await api.post("/api/users/signout")
        seen.append(r.headers["set-cookie"])
        for c in seen:
            flags = [part.strip().lower() for part in c.split(";")]
            assert "httponly" in flags, c
            assert "secure" in flags, c
            assert "samesite=lax" in flags, c
    record("[security] cookies: httpOnly always, Secure with APP_ENV=prod (signup, signin, signout)")


async def test_signin_attempts_are_rate_limited(stack: Stack):
    # Failures are counted in the test's own (fresh) database: the limit starts from zero.
    email = f"rl-{time.time_ns()}@test.com"
    await stack.signup(email=email, password="right-password")
    statuses = []
    for _ in range(15):
        r = await stack.api.post("/api/users/signin", json={"email": email, "password": "wrong-password"})
        statuses.append(r.status_code)
    assert statuses[:10] == [400] * 10, statuses
    assert set(statuses[10:]) == {429}, statuses
    # even the right password is refused while the limit holds
    r = await stack.api.post("/api/users/signin", json={"email": email, "password": "right-password"})
    assert assert_error(r, 429)[0]["message"].startswith("Too many")
    record(f"[security] sign-in: 15 wrong passwords -> {statuses.count(400)}x400 then {statuses.count(429)}x429")
