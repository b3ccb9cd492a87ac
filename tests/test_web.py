"""The buyer's web pages in a real browser: Debian's chromium driven by Playwright, against the API
served by uvicorn on a loopback port (with a worker) and a localstripe of this module's own.

That localstripe serves the fake Stripe.js the pages load (STRIPE_JS_URL) and delivers signed
webhooks to the API (registered at its /_config/webhooks), so a 3-D Secure payment completes the
way it does in production: the page authenticates, Stripe calls POST /api/payments/webhook.

Skipped without /usr/bin/chromium, except in CI (CI=true), where a missing browser fails.
WEB_SCREENSHOTS=<dir> saves a screenshot of each page there (`make screenshots` -> docs/screenshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from beanie import PydanticObjectId
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from devstack import free_port, localstripe_cmd
from ticketing.documents import Charge, Ticket

from .conftest import Server, Servers, Stack, eventually, run_stack, start_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.environ.get("WEB_SCREENSHOTS")
VISA = "4242424242424242"
THREE_D_SECURE = "4000002760003184"  # localstripe: authentication required
DECLINED = "4000000000000341"  # localstripe: the charge is declined
TIMEOUT = 15_000  # ms, for what waits on the worker or a webhook


@dataclass
class Web:
    base: str
    stack: Stack  # the same app in process (ASGI), for setup and checks

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture(scope="module")
def web_stripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """localstripe for this module only: its webhooks point at this module's API."""
    server = start_server("stripe-web", localstripe_cmd, tmp_path_factory.mktemp("stripe-web"))
    yield server
    server.stop(10)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI: `make install` (as root) installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (sudo apt-get install -y chromium, or `make install` as root)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@contextlib.asynccontextmanager
async def web_stack(servers: Servers, stripe_server: Server, **overrides: Any) -> AsyncIterator[Web]:
    """The stack's API also served on a real loopback port (uvicorn in this event loop)."""
    stripe_base = f"http://{stripe_server.url}"
    async with run_stack(
        servers,
        stripe_api_base=stripe_base,
        stripe_js_url=f"{stripe_base}/js.stripe.com/v3/",
        stripe_publishable_key="pk_test_web",
        **overrides,
    ) as stack:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            stack.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())

        def started() -> bool:
            if serving.done():
                serving.result()  # raises why it could not start
            return server.started

        try:
            await eventually(started, "uvicorn to serve the API", interval=0.02)
            async with httpx.AsyncClient(base_url=stripe_base) as ls:
                # Signed like Stripe's (t=...,v1=HMAC-SHA256) with the API's webhook secret.
                r = await ls.post(
                    "/_config/webhooks/web-tests",
                    data={
                        "url": f"{base}/api/payments/webhook",
                        "secret": stack.settings.stripe_webhook_secret,
                        "events[]": ["payment_intent.succeeded", "payment_intent.payment_failed"],
                    },
                )
                assert r.status_code == 200, r.text
            yield Web(base, stack)
        finally:
            server.should_exit = True
            await serving


@pytest.fixture
async def web(servers: Servers, web_stripe: Server) -> AsyncIterator[Web]:
    async with web_stack(servers, web_stripe) as w:
        yield w


@contextlib.asynccontextmanager
async def context(browser: Browser, web: Web) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(base_url=web.base, viewport={"width": 1000, "height": 700})
    ctx.set_default_timeout(TIMEOUT)
    try:
        yield ctx
    finally:
        await ctx.close()


async def shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def email() -> str:
    return f"web-{uuid.uuid4().hex[:8]}@test.com"


async def signup_in_browser(ctx: BrowserContext) -> str:
    """Through the JSON API with the context's own cookie jar (quicker than the form)."""
    address = email()
    r = await ctx.request.post("/api/users/signup", data={"email": address, "password": "password"})
    assert r.status == 201, await r.text()
    return address


async def reserved_order(web: Web, ctx: BrowserContext, price: float = 20.5) -> str:
    seller = await web.stack.signup()
    ticket = await web.stack.create_ticket(seller, title="Jazz night", price=price)
    await signup_in_browser(ctx)
    r = await ctx.request.post("/api/orders", data={"ticketId": ticket["id"]})
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def open_reserved_order(web: Web, ctx: BrowserContext) -> tuple[str, Page]:
    """A fresh order of a second buyer, its page open."""
    order_id = await reserved_order(web, ctx)
    page = await ctx.new_page()
    await page.goto(f"/orders/{order_id}")
    return order_id, page


async def pay_with(page: Page, number: str) -> None:
    await fill_card(page, number)
    await page.click("#pay")


async def fill_card(page: Page, number: str) -> None:
    # localstripe's card Element: plain inputs in the page (Stripe's real one is an iframe).
    card = page.locator("#card-element")
    await card.locator("input[placeholder=number]").fill(number)
    await card.locator("input[placeholder=exp_month]").fill("12")
    await card.locator("input[placeholder=exp_year]").fill("34")
    await card.locator("input[placeholder=cvc]").fill("123")
    await card.locator("input[placeholder=postal_code]").fill("75001")


async def api_order(web: Web, ctx: BrowserContext, order_id: str) -> dict:
    r = await ctx.request.get(f"/api/orders/{order_id}")
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def countdown_seconds(page: Page) -> int:
    text = await page.locator("#countdown-value").inner_text()
    minutes, seconds = text.split(":")
    return int(minutes) * 60 + int(seconds)


async def test_sign_up_sell_reserve_pay(web: Web, browser: Browser):
    async with context(browser, web) as seller_ctx, context(browser, web) as buyer_ctx:
        seller = await seller_ctx.new_page()
        await seller.goto("/signup")
        seller_email = email()
        await seller.fill("#email", seller_email)
        await seller.fill("#password", "password")
        await shot(seller, "signup")
        await seller.click("#submit")
        await seller.wait_for_url(web.url("/"))
        await expect(seller.locator("#current-user")).to_have_text(seller_email)

        await seller.goto("/sell")
        await seller.fill("#title", "Jazz night")
        await seller.fill("#price", "twenty")
        await seller.click("#sell")  # the API's validation message, next to the field
        await expect(seller.locator("[data-errors-for=price]")).to_have_text("Price must be a number")
        await seller.fill("#price", "20.50")
        await shot(seller, "sell")
        await seller.click("#sell")
        await seller.wait_for_url(re.compile(r"/tickets/[0-9a-f]{24}$"))
        ticket_id = seller.url.rsplit("/", 1)[1]
        await expect(seller.locator("#ticket-state")).to_have_text("free")

        buyer = await buyer_ctx.new_page()
        await buyer.goto("/signin")
        await shot(buyer, "signin")
        await buyer.goto("/signup?next=/")
        await buyer.fill("#email", email())
        await buyer.fill("#password", "password")
        await buyer.click("#submit")
        await buyer.wait_for_url(web.url("/"))
        row = buyer.locator(f"tr[data-ticket-id='{ticket_id}']")
        await expect(row).to_contain_text("Jazz night")
        await expect(row).to_contain_text("20.50 USD")
        await expect(row).to_contain_text("free")
        await shot(buyer, "tickets")
        await row.get_by_role("link").click()
        await buyer.wait_for_url(web.url(f"/tickets/{ticket_id}"))
        await shot(buyer, "ticket")
        await buyer.click("#reserve")
        await buyer.wait_for_url(re.compile(r"/orders/[0-9a-f]{24}$"))
        order_id = buyer.url.rsplit("/", 1)[1]

        # the countdown runs, from about ORDER_EXPIRATION_SECONDS (900) down
        await expect(buyer.locator("#order-status")).to_have_text("created")
        first = await countdown_seconds(buyer)
        assert 880 <= first <= 900, first
        await buyer.wait_for_timeout(1300)
        assert await countdown_seconds(buyer) < first
        await fill_card(buyer, VISA)
        await shot(buyer, "order")
        to_us: list[tuple[str, str, str]] = []
        buyer.on(
            "request",
            lambda req: (
                to_us.append((req.method, req.url, req.post_data or "")) if req.url.startswith(web.base) else None
            ),
        )
        await buyer.click("#pay")
        await expect(buyer.locator("#order-status")).to_have_text("complete")
        # the card went to Stripe only: our server saw a token
        payments = [body for method, url, body in to_us if method == "POST" and url.endswith("/api/payments")]
        assert len(payments) == 1, to_us
        assert '"token":"tok_' in payments[0], to_us
        assert not [r for r in to_us if VISA in r[1] + r[2]], to_us
        await expect(buyer.locator("#payment")).to_be_hidden()
        await expect(buyer.locator("#countdown")).to_be_hidden()
        await shot(buyer, "order-complete")

        shown = await api_order(web, buyer_ctx, order_id)
        assert shown["status"] == "complete"
        charges = await Charge.find(Charge.order_id == order_id).to_list()
        assert [(c.amount, c.currency) for c in charges] == [(2050, "usd")]

        await buyer.goto("/orders")
        mine = buyer.locator(f"tr[data-order-id='{order_id}']")
        await expect(mine).to_contain_text("Jazz night")
        await expect(mine.locator(".badge")).to_have_text("complete")
        await shot(buyer, "orders")

        await seller.goto("/")
        await expect(seller.locator(f"tr[data-ticket-id='{ticket_id}'] .badge")).to_have_text("reserved")
        await seller.click("#signout")
        await seller.wait_for_url(web.url("/"))
        await expect(seller.locator("#current-user")).to_have_count(0)


async def test_three_d_secure_completes_in_the_page(web: Web, browser: Browser):
    async with context(browser, web) as ctx:
        order_id, page = await open_reserved_order(web, ctx)
        await pay_with(page, THREE_D_SECURE)
        # Stripe.js's authentication step (localstripe's fake draws its own dialog)
        confirm = page.get_by_role("button", name="Complete authentication")
        await expect(confirm).to_be_visible()
        await expect(page.locator("#order-status")).to_have_text("awaiting:payment")
        await shot(page, "order-3ds")
        await confirm.click()
        # complete only once Stripe's webhook reached POST /api/payments/webhook
        await expect(page.locator("#order-status")).to_have_text("complete")
        await expect(page.locator("#payment")).to_be_hidden()

    charges = await Charge.find(Charge.order_id == order_id).to_list()
    assert len(charges) == 1
    assert charges[0].amount == 2050
    msgs = await web.stack.wait_for_messages("charge:created", 1)
    assert [m.data["orderId"] for m in msgs] == [order_id]


async def test_a_declined_card_shows_stripes_message_and_the_order_stays_payable(web: Web, browser: Browser):
    async with context(browser, web) as ctx:
        order_id, page = await open_reserved_order(web, ctx)
        await pay_with(page, DECLINED)
        await expect(page.locator("#pay-errors")).to_have_text("Your card was declined.")
        await shot(page, "order-declined")
        await expect(page.locator("#order-status")).to_have_text("created")
        await expect(page.locator("#pay")).to_be_enabled()
        assert (await api_order(web, ctx, order_id))["status"] == "created"

        await fill_card(page, VISA)  # still payable, with another card
        await page.click("#pay")
        await expect(page.locator("#order-status")).to_have_text("complete")
        await expect(page.locator("#pay-errors")).to_have_text("")
    assert len(await Charge.find(Charge.order_id == order_id).to_list()) == 1


async def test_an_order_left_alone_turns_cancelled_on_screen(servers: Servers, web_stripe: Server, browser: Browser):
    async with web_stack(servers, web_stripe, order_expiration_seconds=4) as web, context(browser, web) as ctx:
        order_id, page = await open_reserved_order(web, ctx)
        await expect(page.locator("#order-status")).to_have_text("created")
        assert 0 <= await countdown_seconds(page) <= 4
        await expect(page.locator("#payment")).to_be_visible()
        # no reload: the countdown reaches 0 and the status poll shows the workflow's cancellation
        await expect(page.locator("#order-status")).to_have_text("cancelled")
        await expect(page.locator("#payment")).to_be_hidden()
        await expect(page.locator("#order-note")).to_contain_text("cancelled")
        await shot(page, "order-cancelled")
        ticket = (await api_order(web, ctx, order_id))["ticket"]
        stored = await Ticket.get(PydanticObjectId(ticket["id"]))
        assert stored is not None
        assert stored.order_id is None


async def test_failed_authentication_shows_why_and_another_card_pays(web: Web, browser: Browser):
    async with context(browser, web) as ctx:
        order_id, page = await open_reserved_order(web, ctx)
        await pay_with(page, THREE_D_SECURE)
        await page.get_by_role("button", name="Fail authentication").click()
        await expect(page.locator("#pay-errors")).to_have_text("The provided PaymentMethod has failed authentication.")
        await expect(page.locator("#pay")).to_be_enabled()
        await fill_card(page, VISA)
        await page.click("#pay")
        await expect(page.locator("#order-status")).to_have_text("complete")
    charges = await Charge.find(Charge.order_id == order_id).to_list()
    assert len(charges) == 1
    assert charges[0].status.value == "succeeded"
