"""Auth routes: signup, signin, signout, currentuser; the session cookie; JWT checks; sign-in rate limit."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import jwt
import pytest
from pydantic import ValidationError
from starlette.responses import Response

import api.users
from api.auth import clear_session_cookie, set_session_cookie
from ticketing.documents import SIGNIN_WINDOW_SECONDS, SigninFailure, utcnow
from ticketing.settings import Settings

from .conftest import assert_error


def _email() -> str:
    return f"u-{uuid.uuid4().hex[:10]}@test.com"


def _cookie_attrs(set_cookie: str) -> tuple[str, str, dict[str, str]]:
    """('session', value, {lowercased attribute: value}) of one Set-Cookie header."""
    first, *rest = [part.strip() for part in set_cookie.split(";")]
    name, _, value = first.partition("=")
    attrs: dict[str, str] = {}
    for part in rest:
        key, _, val = part.partition("=")
        attrs[key.strip().lower()] = val.strip()
    return name, value, attrs


def _session_cookie(response) -> tuple[str, dict[str, str]]:
    cookies = [_cookie_attrs(h) for h in response.headers.get_list("set-cookie")]
    sessions = [(value, attrs) for name, value, attrs in cookies if name == "session"]
    assert len(sessions) == 1, response.headers.get_list("set-cookie")
    return sessions[0]


# ── signup ────────────────────────────────────────────────────────────────────────────


async def test_signup_returns_session_and_httponly_cookie(stack):
    email = _email()
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "password"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "email", "token"}
    assert body["email"] == email
    assert len(body["id"]) == 24

    claims = jwt.decode(body["token"], stack.settings.jwt_key, algorithms=["HS256"])
    assert claims["id"] == body["id"]
    assert claims["email"] == email
    assert claims["exp"] > datetime.now(UTC).timestamp()

    value, attrs = _session_cookie(r)
    assert value == body["token"]
    assert "httponly" in attrs
    assert "secure" not in attrs  # app_env=test
    assert attrs.get("path") == "/"
    assert attrs.get("samesite", "").lower() == "lax"
    assert int(attrs["max-age"]) == stack.settings.jwt_ttl_seconds


async def test_signup_normalises_email_and_password(stack):
    email = _email()
    r = await stack.api.post("/api/users/signup", json={"email": f"  {email.upper()} ", "password": "  pass  "})
    assert r.status_code == 201, r.text
    assert r.json()["email"] == email
    # The password was trimmed: signing in with the trimmed form works.
    r = await stack.api.post("/api/users/signin", json={"email": email, "password": "pass"})
    assert r.status_code == 200, r.text


async def test_signup_duplicate_email(stack):
    email = _email()
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "password"})
    assert r.status_code == 201
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "other-pw"})
    errors = assert_error(r, 400, "email", "Email in use")
    assert errors == [{"message": "Email in use", "field": "email"}]
    # Case does not make a different account.
    r = await stack.api.post("/api/users/signup", json={"email": email.upper(), "password": "other-pw"})
    assert_error(r, 400, "email", "Email in use")


@pytest.mark.parametrize("email", ["not-an-email", "", "a@b", "a b@c.com", "@test.com", 42])
async def test_signup_bad_email(stack, email):
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "password"})
    errors = assert_error(r, 400, "email")
    assert all(e["field"] == "email" for e in errors)


@pytest.mark.parametrize("password", ["abc", "   ab   ", "", "    ", "a" * 21])
async def test_signup_bad_password(stack, password):
    r = await stack.api.post("/api/users/signup", json={"email": _email(), "password": password})
    errors = assert_error(r, 400, "password")
    assert [e["field"] for e in errors] == ["password"]


async def test_signup_missing_fields(stack):
    r = await stack.api.post("/api/users/signup", json={})
    errors = assert_error(r, 400)
    assert sorted(e["field"] for e in errors) == ["email", "password"]


async def test_signup_rejected_leaves_email_free(stack):
    email = _email()
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "ab"})
    assert_error(r, 400, "password")
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "abcd"})
    assert r.status_code == 201, r.text


# ── signin / signout ──────────────────────────────────────────────────────────────────


async def test_signin_good_credentials(stack):
    email = _email()
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "password"})
    user_id = r.json()["id"]
    stack.api.cookies.clear()

    r = await stack.api.post("/api/users/signin", json={"email": email, "password": "password"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "email", "token"}
    assert body["id"] == user_id
    assert body["email"] == email
    value, attrs = _session_cookie(r)
    assert value == body["token"]
    assert "httponly" in attrs
    claims = jwt.decode(value, stack.settings.jwt_key, algorithms=["HS256"])
    assert claims["id"] == user_id


async def test_signin_wrong_password_and_unknown_email(stack):
    email = _email()
    await stack.api.post("/api/users/signup", json={"email": email, "password": "password"})
    stack.api.cookies.clear()

    r = await stack.api.post("/api/users/signin", json={"email": email, "password": "wrong-password"})
    assert_error(r, 400, message="Invalid credentials")
    assert "session" not in [c.split("=")[0] for c in r.headers.get_list("set-cookie")]

    r = await stack.api.post("/api/users/signin", json={"email": _email(), "password": "password"})
    errors = assert_error(r, 400, message="Invalid credentials")
    assert errors == [{"message": "Invalid credentials", "field": None}]


async def test_signin_invalid_body(stack):
    r = await stack.api.post("/api/users/signin", json={"email": "nope", "password": "password"})
    assert_error(r, 400, "email")
    r = await stack.api.post("/api/users/signin", json={"email": _email(), "password": "   "})
    assert_error(r, 400, "password")


async def test_signout_clears_cookie(stack):
    r = await stack.api.post("/api/users/signup", json={"email": _email(), "password": "password"})
    assert r.status_code == 201
    assert stack.api.cookies.get("session")
    assert (await stack.api.get("/api/users/currentuser")).json()["currentUser"] is not None
    r = await stack.api.post("/api/users/signout")
    assert r.status_code == 200
    assert r.json() == {}
    value, attrs = _session_cookie(r)
    assert value in ("", '""')
    cleared = attrs.get("max-age") == "0" or (
        "expires" in attrs and parsedate_to_datetime(attrs["expires"]) <= datetime.now(UTC)
    )
    assert cleared, attrs
    assert "httponly" in attrs
    assert attrs.get("path") == "/"
    # The client dropped the cookie, so it is signed out.
    assert not stack.api.cookies.get("session")
    r = await stack.api.get("/api/users/currentuser")
    assert r.json() == {"currentUser": None}


# ── currentuser and tokens ────────────────────────────────────────────────────────────


async def test_currentuser_with_cookie_bearer_and_none(stack):
    email = _email()
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "password"})
    token, user_id = r.json()["token"], r.json()["id"]
    expected = {"currentUser": {"id": user_id, "email": email}}

    # Cookie set by signup (kept by the client's jar).
    r = await stack.api.get("/api/users/currentuser")
    assert r.status_code == 200
    assert r.json() == expected

    stack.api.cookies.clear()
    r = await stack.api.get("/api/users/currentuser")
    assert r.status_code == 200
    assert r.json() == {"currentUser": None}

    r = await stack.api.get("/api/users/currentuser", headers={"Cookie": f"session={token}"})
    assert r.json() == expected

    r = await stack.api.get("/api/users/currentuser", headers={"Authorization": f"Bearer {token}"})
    assert r.json() == expected

    r = await stack.api.get("/api/users/currentuser", headers={"Authorization": "Bearer garbage"})
    assert r.json() == {"currentUser": None}


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens(key: str, user_id: str, email: str) -> dict[str, str]:
    now = datetime.now(UTC)
    claims = {"id": user_id, "email": email, "iat": now, "exp": now + timedelta(hours=1)}
    raw = {"id": user_id, "email": email, "exp": int((now + timedelta(hours=1)).timestamp())}
    return {
        "forged": jwt.encode(claims, "another-key-0123456789abcdef0123456789", algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - timedelta(seconds=5)}, key, algorithm="HS256"),
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(raw)}.",
        "no-exp": jwt.encode({"id": user_id, "email": email}, key, algorithm="HS256"),
        "hs512": jwt.encode(claims, key, algorithm="HS512"),
    }


@pytest.mark.filterwarnings("ignore:The HMAC key")
async def test_rejected_tokens(stack):
    email = _email()
    r = await stack.api.post("/api/users/signup", json={"email": email, "password": "password"})
    user_id = r.json()["id"]
    stack.api.cookies.clear()
    for kind, token in _bad_tokens(stack.settings.jwt_key, user_id, email).items():
        for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"session={token}"}):
            r = await stack.api.get("/api/users/currentuser", headers=headers)
            assert r.status_code == 200, (kind, r.text)
            assert r.json() == {"currentUser": None}, kind
            r = await stack.api.post("/api/tickets", json={"title": "T", "price": 10}, headers=headers)
            assert assert_error(r, 401) == [{"message": "Not authorized", "field": None}], kind


async def test_valid_token_is_accepted_by_protected_route(stack):
    """Control for test_rejected_tokens: the same request with the real token succeeds."""
    headers = await stack.signup()
    stack.api.cookies.clear()
    r = await stack.api.post("/api/tickets", json={"title": "T", "price": 10}, headers=headers)
    assert r.status_code == 201, r.text


# ── rate limit ────────────────────────────────────────────────────────────────────────


async def test_failed_signins_are_rate_limited(stack):
    email = _email()
    await stack.api.post("/api/users/signup", json={"email": email, "password": "password"})
    stack.api.cookies.clear()
    limit = api.users.limiter.limit
    for _ in range(limit):
        r = await stack.api.post("/api/users/signin", json={"email": email, "password": "wrong-password"})
        assert_error(r, 400, message="Invalid credentials")
    r = await stack.api.post("/api/users/signin", json={"email": email, "password": "wrong-password"})
    assert_error(r, 429)
    # Blocked even with the right password while the window lasts.
    r = await stack.api.post("/api/users/signin", json={"email": email, "password": "password"})
    assert_error(r, 429)
    # Once the window is over (simulated by forgetting the failures), the right password works again.
    await SigninFailure.delete_all()
    r = await stack.api.post("/api/users/signin", json={"email": email, "password": "password"})
    assert r.status_code == 200, r.text


async def test_rate_limit_window_expires(stack):
    limiter = api.users.SigninLimiter(limit=2, window=1)
    await limiter.fail("k")
    await limiter.fail("k")
    assert await limiter.blocked("k")
    assert not await limiter.blocked("other")
    assert await limiter.blocked("other", "k")
    await asyncio.sleep(1.2)
    assert not await limiter.blocked("k")


async def test_rate_limit_is_shared_and_indexed(stack):
    """Failures live in MongoDB (every replica counts the same ones, a restart keeps them): a
    second limiter, as in another process, sees them; old ones expire through a TTL index; the
    count is answered from the (key, at) index."""
    await api.users.SigninLimiter().fail("email:a@x.com", "ip:10.0.0.1")
    other_replica = api.users.SigninLimiter(limit=1)
    assert await other_replica.blocked("ip:10.0.0.1")
    collection = SigninFailure.get_pymongo_collection()
    indexes = {ix["name"]: ix async for ix in await collection.list_indexes()}
    assert indexes["expire_at"]["key"] == {"at": 1}
    assert indexes["expire_at"]["expireAfterSeconds"] == SIGNIN_WINDOW_SECONDS
    assert indexes["key_at"]["key"] == {"key": 1, "at": 1}
    plan = await collection.find({"key": "ip:10.0.0.1", "at": {"$gt": utcnow() - timedelta(seconds=60)}}).explain()
    assert "IXSCAN" in str(plan["queryPlanner"]["winningPlan"]), plan
    assert "key_at" in str(plan), plan


# ── cookie flags by environment ───────────────────────────────────────────────────────


def _prod_settings() -> Settings:
    return Settings(
        app_env="prod",
        jwt_key="prod-jwt-key-0123456789abcdef0123456789",
        stripe_key="sk_test_x",
        stripe_webhook_secret="whsec_x",
    )


def test_prod_cookies_are_secure():
    settings = _prod_settings()
    assert settings.secure_cookies is True
    response = Response()
    set_session_cookie(response, settings, "tok")
    name, value, attrs = _cookie_attrs(response.headers["set-cookie"])
    assert (name, value) == ("session", "tok")
    assert "secure" in attrs
    assert "httponly" in attrs

    response = Response()
    clear_session_cookie(response, settings)
    name, _, attrs = _cookie_attrs(response.headers["set-cookie"])
    assert name == "session"
    assert "secure" in attrs
    assert attrs.get("max-age") == "0"


@pytest.mark.parametrize("env", ["dev", "test"])
def test_dev_and_test_cookies_are_not_secure(env):
    settings = Settings(app_env=env)
    assert settings.secure_cookies is False
    response = Response()
    set_session_cookie(response, settings, "tok")
    _, _, attrs = _cookie_attrs(response.headers["set-cookie"])
    assert "secure" not in attrs
    assert "httponly" in attrs


def test_prod_requires_secrets():
    with pytest.raises(ValidationError, match="JWT_KEY"):
        Settings(app_env="prod", jwt_key="", stripe_key="sk_test_x", stripe_webhook_secret="whsec_x")
