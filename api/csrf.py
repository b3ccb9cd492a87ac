"""CSRF: a state-changing request that a browser sends from another site is refused (403).

The session cookie is SameSite=Lax (not sent on cross-site POSTs), bodies must be JSON (an HTML
form cannot send `application/json`, and this API answers no CORS preflight), and on top of that
this check reads what the browser says about the request's origin: `Sec-Fetch-Site` when present
(every current browser), else `Origin` compared with `Host`. Clients that are not browsers (curl,
SDKs, Stripe's webhooks) send neither header and are not affected; `Authorization: Bearer`
requests cannot be forged by another site, but are checked the same way (simpler to reason about).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

SAFE = {"GET", "HEAD", "OPTIONS"}
# Stripe calls this one from its own servers, authenticated by its signature.
EXEMPT = {"/api/payments/webhook"}


def cross_site_request(request: Request) -> bool:
    if request.method in SAFE or request.url.path in EXEMPT:
        return False
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        # "none": typed by the user (no page involved); "same-origin": our own pages.
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    if origin == "null":  # sandboxed frames, file: pages, some redirects
        return True
    return urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()
