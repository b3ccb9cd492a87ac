"""The buyer's web pages, served by the API itself (same origin, same `session` cookie).

Pages are rendered on the server (Jinja2, autoescaped); every change goes through the JSON API
from /static/app.js (fetch, JSON bodies), so the pages hold no business logic of their own. The
order page polls GET /api/orders/{id} for its status and pays with Stripe.js: card details go
from the browser to Stripe only, and our API receives a card token (`tok_…`).

Security headers on every page: a Content-Security-Policy that allows scripts, frames and
connections only from our origin and the configured Stripe.js origin, no framing, no referrer
beyond our origin, and `no-store` (pages show the signed-in user's data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from beanie import PydanticObjectId
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from api.auth import OptionalUser
from api.schemas import OrderOut, TicketOut, parse_object_id
from ticketing import queries
from ticketing.documents import Order, OrderStatus, Ticket, utcnow
from ticketing.settings import STRIPE_JS_URL, Settings

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
PAGE_SIZE = 100
# Hosts Stripe documents for Stripe.js besides its own origin (API calls, 3-D Secure frames).
STRIPE_EXTRA = {"connect": ["https://api.stripe.com"], "frame": ["https://hooks.stripe.com"]}


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(settings: Settings) -> str:
    stripe = origin(settings.stripe_js_url)
    real = stripe == origin(STRIPE_JS_URL)
    connect = ["'self'", stripe, *(STRIPE_EXTRA["connect"] if real else [])]
    frame = [stripe, *(STRIPE_EXTRA["frame"] if real else [])]
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {stripe}",
            f"connect-src {' '.join(connect)}",
            f"frame-src {' '.join(frame)}",
            "img-src 'self' data:",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def page(request: Request, user: OptionalUser, template: str, status_code: int = 200, **context: Any) -> Response:
    settings = _settings(request)
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "currency": settings.currency.upper(), **context},
        status_code=status_code,
    )
    response.headers.update(
        {
            "Content-Security-Policy": content_security_policy(settings),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
        }
    )
    return response


def to_signin(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)


def not_found(request: Request, user: OptionalUser, what: str) -> Response:
    return page(request, user, "not_found.html", status_code=404, what=what)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, user: OptionalUser) -> Response:
    # Every ticket with its state (free / reserved), newest first: the JSON list shows only free ones.
    docs = await queries.newest_first(Ticket.get_pymongo_collection(), queries.all_tickets(), limit=PAGE_SIZE)
    tickets = [TicketOut.of(Ticket.model_validate({**d, "id": d["_id"]})) for d in docs]
    return page(request, user, "index.html", tickets=tickets)


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
async def ticket_page(ticket_id: str, request: Request, user: OptionalUser) -> Response:
    oid = parse_object_id(ticket_id)
    ticket = await Ticket.get(PydanticObjectId(oid)) if oid else None
    if ticket is None:
        return not_found(request, user, "Ticket")
    mine = user is not None and user.id == ticket.user_id
    return page(request, user, "ticket.html", ticket=TicketOut.of(ticket), mine=mine)


@router.get("/orders", response_class=HTMLResponse)
async def orders_page(request: Request, user: OptionalUser) -> Response:
    if user is None:
        return to_signin(request)
    docs = await queries.newest_first(Order.get_pymongo_collection(), queries.orders_of(user.id), limit=PAGE_SIZE)
    orders = [OrderOut.of(Order.model_validate({**d, "id": d["_id"]})) for d in docs]
    return page(request, user, "orders.html", orders=orders)


@router.get("/orders/{order_id}", response_class=HTMLResponse)
async def order_page(order_id: str, request: Request, user: OptionalUser) -> Response:
    if user is None:
        return to_signin(request)
    oid = parse_object_id(order_id)
    order = await Order.get(PydanticObjectId(oid)) if oid else None
    if order is None or order.user_id != user.id:  # someone else's order does not exist for this user
        return not_found(request, user, "Order")
    settings = _settings(request)
    now = utcnow()
    payable = order.status in (OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT) and order.expires_at > now
    return page(
        request,
        user,
        "order.html",
        order=OrderOut.of(order),
        now=now.isoformat(),
        payable=payable,
        stripe_js_url=settings.stripe_js_url,
        publishable_key=settings.stripe_publishable_key,
    )


@router.get("/sell", response_class=HTMLResponse)
async def sell_page(request: Request, user: OptionalUser) -> Response:
    if user is None:
        return to_signin(request)
    return page(request, user, "sell.html")


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(request: Request, user: OptionalUser) -> Response:
    return page(request, user, "signin.html", mode="signin")


@router.get("/signup", response_class=HTMLResponse)
async def signup_page(request: Request, user: OptionalUser) -> Response:
    return page(request, user, "signin.html", mode="signup")


def install_web(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
