"""Auth routes: signup, signin, signout, currentuser (JWT in the `session` cookie or a Bearer header)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Request, Response
from pymongo.errors import DuplicateKeyError

from api.auth import OptionalUser, clear_session_cookie, issue_token, set_session_cookie
from api.errors import ApiError, BadRequest
from api.schemas import CurrentUserOut, SessionOut, SigninBody, SignupBody, UserOut
from ticketing import queries
from ticketing.documents import SIGNIN_WINDOW_SECONDS, SigninFailure, User, utcnow
from ticketing.settings import Settings

router = APIRouter(prefix="/api/users", tags=["users"])
hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = hasher.hash("not-a-real-password")


class SigninLimiter:
    """At most `limit` failed sign-ins per email (and per client address) in `window` seconds,
    counted in MongoDB so that every API replica sees the same failures and a restart keeps them."""

    def __init__(self, limit: int = 10, window: float = SIGNIN_WINDOW_SECONDS) -> None:
        self.limit, self.window = limit, window

    async def blocked(self, *keys: str) -> bool:
        since = utcnow() - timedelta(seconds=self.window)
        collection = SigninFailure.get_pymongo_collection()
        counts = await asyncio.gather(
            *(collection.count_documents(queries.signin_failures_since(key, since), limit=self.limit) for key in keys)
        )
        return any(count >= self.limit for count in counts)

    async def fail(self, *keys: str) -> None:
        now = utcnow()
        await SigninFailure.insert_many([SigninFailure(key=key, at=now) for key in keys])


limiter = SigninLimiter()


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post("/signup", status_code=201, response_model=SessionOut)
async def signup(body: SignupBody, request: Request, response: Response) -> SessionOut:
    password_hash = await asyncio.to_thread(hasher.hash, body.password)
    user = User(email=body.email, password_hash=password_hash)
    try:
        await user.insert()
    except DuplicateKeyError:
        raise BadRequest("Email in use", "email") from None
    settings = _settings(request)
    token = issue_token(settings, str(user.id), user.email)
    set_session_cookie(response, settings, token)
    return SessionOut(id=str(user.id), email=user.email, token=token)


@router.post("/signin", response_model=SessionOut)
async def signin(body: SigninBody, request: Request, response: Response) -> SessionOut:
    keys = (f"email:{body.email}", f"ip:{request.client.host if request.client else '-'}")
    if await limiter.blocked(*keys):
        raise ApiError(429, "Too many sign-in attempts, try again later")
    user = await User.find_one(queries.user_by_email(body.email))
    try:
        await asyncio.to_thread(hasher.verify, user.password_hash if user else _DUMMY_HASH, body.password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None:
        await limiter.fail(*keys)
        raise BadRequest("Invalid credentials")
    settings = _settings(request)
    token = issue_token(settings, str(user.id), user.email)
    set_session_cookie(response, settings, token)
    return SessionOut(id=str(user.id), email=user.email, token=token)


@router.post("/signout")
async def signout(request: Request, response: Response) -> dict[str, str]:
    clear_session_cookie(response, _settings(request))
    return {}


@router.get("/currentuser", response_model=CurrentUserOut)
async def current_user(user: OptionalUser) -> CurrentUserOut:
    return CurrentUserOut(current_user=UserOut(id=user.id, email=user.email) if user else None)
