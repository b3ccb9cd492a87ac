"""Sessions: a JWT (HS256, {id, email, exp}) in the `session` cookie or an `Authorization: Bearer` header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, Request, Response
from pydantic import BaseModel

from api.errors import NotAuthorized
from ticketing.settings import Settings

COOKIE = "session"


class CurrentUser(BaseModel):
    id: str
    email: str


def issue_token(settings: Settings, user_id: str, email: str) -> str:
    now = datetime.now(UTC)
    claims = {"id": user_id, "email": email, "iat": now, "exp": now + timedelta(seconds=settings.jwt_ttl_seconds)}
    return jwt.encode(claims, settings.jwt_key, algorithm="HS256")


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=settings.jwt_ttl_seconds,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="lax",
        path="/",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(COOKIE, httponly=True, secure=settings.secure_cookies, samesite="lax", path="/")


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.cookies.get(COOKIE)


async def optional_user(request: Request) -> CurrentUser | None:
    # async (it never blocks): FastAPI would run a plain def in its thread pool, a hop per request.
    token = _token(request)
    if not token:
        return None
    settings: Settings = request.app.state.settings
    try:
        # algorithms pins HS256: "alg: none" and other algorithms are rejected.
        claims = jwt.decode(token, settings.jwt_key, algorithms=["HS256"], options={"require": ["exp", "id", "email"]})
        return CurrentUser(id=str(claims["id"]), email=str(claims["email"]))
    except (jwt.PyJWTError, ValueError):
        return None


async def require_user(user: Annotated[CurrentUser | None, Depends(optional_user)]) -> CurrentUser:
    if user is None:
        raise NotAuthorized()
    return user


OptionalUser = Annotated[CurrentUser | None, Depends(optional_user)]
RequiredUser = Annotated[CurrentUser, Depends(require_user)]
