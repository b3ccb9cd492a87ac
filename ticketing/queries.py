"""Every MongoDB filter the API and the activities send, built here and listed in SHAPES.

tests/test_query_plans.py explains each shape of SHAPES against SecantusDB on collections of a few
thousand documents and fails on a collection scan; `python -m ticketing.queries` writes the table of
docs/queries.md from the same list. Code that queries MongoDB uses these builders, so the checked
shapes are the ones sent.

Two SecantusDB facts (measured, 0.7.0b3) shape this module:
- findAndModify re-reads the document it changes with a filter no index serves: a collection scan
  per call. Changes are a read plus an `update_one` pinned to `_id` and the version read.
- A query costs in proportion to the documents its filter matches, whatever its `limit` (the
  limit is applied after every match is fetched and sorted: ~65 µs per document). A list page
  therefore bounds its filter by `_id` ranges (`newest_first`), not only by a limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from ticketing.documents import ChargeStatus, OrderStatus

# ── list pages ───────────────────────────────────────────────────────────────────────────────
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 500

FINAL_STATUSES = [OrderStatus.COMPLETE.value, OrderStatus.CANCELLED.value]


# ── filter builders (the code sends these) ──────────────────────────────────────────────────────
def by_id(oid: ObjectId | str) -> dict[str, Any]:
    """A document by `_id` (Beanie `.get()` sends the same)."""
    return {"_id": oid}


def user_by_email(email: str) -> dict[str, Any]:
    return {"email": email}


def signin_failures_since(key: str, since: datetime) -> dict[str, Any]:
    """Failed sign-ins of one key (`email:…` / `ip:…`) in the limiter's window; index (key, at)."""
    return {"key": key, "at": {"$gt": since}}


def ticket_free_at(oid: ObjectId, version: int) -> dict[str, Any]:
    """The ticket, still free and unchanged since it was read at `version`."""
    return {"_id": oid, "order_id": None, "version": version}


def ticket_held_at(oid: ObjectId, order_id: str, version: int) -> dict[str, Any]:
    """The ticket, still reserved by `order_id` at `version`."""
    return {"_id": oid, "order_id": order_id, "version": version}


def order_open_at(oid: ObjectId, version: int) -> dict[str, Any]:
    """The order at `version` and not final (complete/cancelled)."""
    return {"_id": oid, "version": version, "status": {"$nin": FINAL_STATUSES}}


def charge_by_intent(payment_intent_id: str) -> dict[str, Any]:
    return {"stripe_id": payment_intent_id}


def by_ids(oids: list[ObjectId]) -> dict[str, Any]:
    """Several documents by `_id` (the reconciliation reads a page's orders at once)."""
    return {"_id": {"$in": oids}}


def charges_by_intents(payment_intent_ids: list[str]) -> dict[str, Any]:
    return {"stripe_id": {"$in": payment_intent_ids}}


def kept_charges_of(order_ids: list[str]) -> dict[str, Any]:
    """The succeeded charge of each order; the partial unique index on order_id holds exactly these."""
    return {"order_id": {"$in": order_ids}, "status": ChargeStatus.SUCCEEDED.value}


def free_tickets() -> dict[str, Any]:
    """Tickets not reserved (GET /api/tickets); index (order_id, _id desc)."""
    return {"order_id": None}


def all_tickets() -> dict[str, Any]:
    """Every ticket, free or reserved (the web page /); index (_id desc)."""
    return {}


def orders_of(user_id: str) -> dict[str, Any]:
    """One user's orders (GET /api/orders); index (user_id, _id desc)."""
    return {"user_id": user_id}


def id_window(equals: Mapping[str, Any], lower: ObjectId | None, upper: ObjectId | None) -> dict[str, Any]:
    """`equals` with `lower <= _id < upper` (either bound may be absent)."""
    bounds: dict[str, ObjectId] = {}
    if lower is not None:
        bounds["$gte"] = lower
    if upper is not None:
        bounds["$lt"] = upper
    return {**equals, "_id": bounds} if bounds else dict(equals)


NEWEST_FIRST = [("_id", -1)]

# Windows reach back in time: 1 s, then x16 while empty (16 s, 4 min, 68 min, 18 h, 12 days,
# 194 days), then one open-ended query. A window that found documents sizes the next one from
# their rate, so a dense list overshoots its page by a little, not by 16 times.
FIRST_WINDOW = timedelta(seconds=1)
WINDOW_GROWTH = 16
OPEN_AFTER = timedelta(days=366)
_EPOCH = datetime(1970, 1, 2, tzinfo=UTC)


@dataclass
class _Seen:
    """What the last pages of one list showed, per process. Only the cost depends on it: the first
    window is open above, and the windows always cover every `_id`."""

    head: ObjectId | None = None  # where its first page began: the next first page starts there,
    # so a list whose newest documents are hours old is not reached through ever wider windows
    per_doc: timedelta | None = None  # time between its documents on a full page: the first time
    # window is sized to hold a page, so a steady list is read in one or two windows


_SEEN: OrderedDict[tuple[str, tuple[tuple[str, Any], ...]], _Seen] = OrderedDict()
LISTS_KEPT = 10_000


def _ids_below(oid: ObjectId, count: int) -> ObjectId:
    """The id `count` below `oid` as a 96-bit number: one process's ids of one second count up by
    one (time, process, counter), so this spans the `count` ids it made just before `oid`."""
    return ObjectId(max(int.from_bytes(oid.binary, "big") - count, 0).to_bytes(12, "big"))


async def newest_first(
    collection: Any, equals: Mapping[str, Any], *, limit: int, before: ObjectId | None = None
) -> list[dict[str, Any]]:
    """Up to `limit` documents matching `equals` with `_id < before`, newest (highest `_id`) first.

    ObjectIds start with their creation second, so an `_id` range is a time range. The page is read
    in adjacent `_id` windows going back from `before` (or from where the previous first page
    began, or from now), each served by an index (equals…, _id desc), so the server fetches about
    the page's documents, not every match (see the module docstring). The first window is the page's
    worth of ids just below that id, which holds the page when one process made them in a burst.
    A list smaller than a page ends with one open-ended window that fetches the rest: small too.
    """
    key = (str(collection.full_name), tuple(sorted(equals.items())))
    seen = _SEEN.get(key) or _Seen()
    anchor = before if before is not None else seen.head
    found: list[dict[str, Any]] = []
    upper = before

    async def read(lower: ObjectId | None) -> bool:
        """Add the window [lower, upper); True when the page is complete."""
        cursor = collection.find(id_window(equals, lower, upper)).sort(NEWEST_FIRST).limit(limit - len(found))
        found.extend(await cursor.to_list())
        return len(found) >= limit or lower is None

    if anchor is not None:
        below_anchor = _ids_below(anchor, 2 * limit)
        if await read(below_anchor):
            return _done(key, seen, before, found, limit)
        upper = below_anchor
    top = anchor.generation_time if anchor is not None else datetime.now(UTC)
    reach = FIRST_WINDOW
    if seen.per_doc:
        reach = min(max(reach, seen.per_doc * limit * 1.25), OPEN_AFTER)
    while True:
        start = top - reach
        lower = None if reach > OPEN_AFTER or start < _EPOCH else ObjectId.from_datetime(start)
        if lower is None or upper is None or lower < upper:  # else: nothing is left in this window
            if await read(lower):
                return _done(key, seen, before, found, limit)
            upper = lower
        if found:  # documents arrive at about len(found)/reach: aim the next window at the rest
            wanted = reach * (limit / len(found)) * 1.25
            reach = min(max(wanted, reach * 2), reach * WINDOW_GROWTH)
        else:
            reach *= WINDOW_GROWTH


def _done(
    key: tuple[str, tuple[tuple[str, Any], ...]],
    seen: _Seen,
    before: ObjectId | None,
    found: list[dict[str, Any]],
    limit: int,
) -> list[dict[str, Any]]:
    if before is None:  # a first page: remember where it began
        seen.head = found[0]["_id"] if found else None
    if len(found) == limit and limit > 1:
        span = found[0]["_id"].generation_time - found[-1]["_id"].generation_time
        seen.per_doc = span / (limit - 1)
    _SEEN.pop(key, None)
    _SEEN[key] = seen
    if len(_SEEN) > LISTS_KEPT:
        _SEEN.popitem(last=False)
    return found


# ── the shapes, for the plan test and docs/queries.md ───────────────────────────────────────────
@dataclass(frozen=True)
class Shape:
    name: str
    collection: str
    operation: str  # what is sent: find, update_one, upsert (update_one upsert=True)
    where: str  # the code that sends it
    index: str  # the index that should serve it
    filter: Callable[[Samples], dict[str, Any]]
    sort: list[tuple[str, int]] = field(default_factory=list)
    # SecantusDB's explain has no plan for `_id` equality plus other fields, which its executor
    # serves as an `_id` point lookup (the other fields are checked on the one document): the test
    # explains the `_id` clause and times the whole filter against a collection scan.
    id_lookup: bool = False


@dataclass(frozen=True)
class Samples:
    """Values present in the test's collections, for building example filters."""

    ticket_id: ObjectId
    order_id: ObjectId
    user_id: str
    email: str
    payment_intent_id: str
    attempt_key: str
    signin_key: str
    since: datetime
    window_lower: ObjectId
    window_upper: ObjectId


SHAPES: list[Shape] = [
    Shape(
        "user by email", "users", "find", "api/users.py signin", "email_1 (unique)", lambda s: user_by_email(s.email)
    ),
    Shape(
        "recent failed sign-ins of a key",
        "signin_failures",
        "count_documents",
        "api/users.py SigninLimiter.blocked",
        "key_at",
        lambda s: signin_failures_since(s.signin_key, s.since),
    ),
    Shape(
        "ticket by id",
        "tickets",
        "find",
        "api/tickets.py show/update, api/orders.py create, activities/orders.py reserve/release",
        "_id_",
        lambda s: by_id(s.ticket_id),
    ),
    Shape(
        "free tickets, newest first (one window)",
        "tickets",
        "find",
        "api/tickets.py list (ticketing/queries.py newest_first)",
        "order_id_1__id_-1",
        lambda s: id_window(free_tickets(), s.window_lower, s.window_upper),
        NEWEST_FIRST,
    ),
    Shape(
        "free tickets, newest first (first window)",
        "tickets",
        "find",
        "api/tickets.py list",
        "order_id_1__id_-1",
        lambda s: id_window(free_tickets(), s.window_lower, None),
        NEWEST_FIRST,
    ),
    Shape(
        "free tickets, newest first (last window)",
        "tickets",
        "find",
        "api/tickets.py list",
        "order_id_1__id_-1",
        lambda s: id_window(free_tickets(), None, s.window_upper),
        NEWEST_FIRST,
    ),
    Shape(
        "free tickets (no bound)",
        "tickets",
        "find",
        "api/tickets.py list (a window reaching back past a year)",
        "order_id_1__id_-1",
        lambda s: free_tickets(),
        NEWEST_FIRST,
    ),
    Shape(
        "every ticket, newest first (one window)",
        "tickets",
        "find",
        "api/web.py / (ticketing/queries.py newest_first)",
        "_id_-1",
        lambda s: id_window(all_tickets(), s.window_lower, s.window_upper),
        NEWEST_FIRST,
    ),
    Shape(
        "every ticket, newest first (first window)",
        "tickets",
        "find",
        "api/web.py /",
        "_id_-1",
        lambda s: id_window(all_tickets(), s.window_lower, None),
        NEWEST_FIRST,
    ),
    Shape(
        "every ticket, newest first (last window)",
        "tickets",
        "find",
        "api/web.py /",
        "_id_-1",
        lambda s: id_window(all_tickets(), None, s.window_upper),
        NEWEST_FIRST,
    ),
    Shape(
        "every ticket (no bound)",
        "tickets",
        "find",
        "api/web.py / (a window reaching back past a year)",
        "_id_-1",
        lambda s: all_tickets(),
        NEWEST_FIRST,
    ),
    Shape(
        "reserve a free ticket",
        "tickets",
        "update_one",
        "activities/orders.py _take_ticket",
        "_id_",
        lambda s: ticket_free_at(s.ticket_id, 0),
        id_lookup=True,
    ),
    Shape(
        "edit a free ticket",
        "tickets",
        "update_one",
        "api/tickets.py update",
        "_id_",
        lambda s: ticket_free_at(s.ticket_id, 0),
        id_lookup=True,
    ),
    Shape(
        "release a held ticket",
        "tickets",
        "update_one",
        "activities/orders.py release_ticket",
        "_id_",
        lambda s: ticket_held_at(s.ticket_id, str(s.order_id), 1),
        id_lookup=True,
    ),
    Shape(
        "order by id",
        "orders",
        "find",
        "api/orders.py show/cancel/create, api/payments.py, activities (change, refund)",
        "_id_",
        lambda s: by_id(s.order_id),
    ),
    Shape(
        "change an open order",
        "orders",
        "update_one",
        "activities/orders.py _change_order",
        "_id_",
        lambda s: order_open_at(s.order_id, 0),
        id_lookup=True,
    ),
    Shape(
        "a user's orders, newest first (one window)",
        "orders",
        "find",
        "api/orders.py list, api/web.py /orders (ticketing/queries.py newest_first)",
        "user_id_1__id_-1",
        lambda s: id_window(orders_of(s.user_id), s.window_lower, s.window_upper),
        NEWEST_FIRST,
    ),
    Shape(
        "a user's orders, newest first (first window)",
        "orders",
        "find",
        "api/orders.py list",
        "user_id_1__id_-1",
        lambda s: id_window(orders_of(s.user_id), s.window_lower, None),
        NEWEST_FIRST,
    ),
    Shape(
        "a user's orders, newest first (last window)",
        "orders",
        "find",
        "api/orders.py list",
        "user_id_1__id_-1",
        lambda s: id_window(orders_of(s.user_id), None, s.window_upper),
        NEWEST_FIRST,
    ),
    Shape(
        "a user's orders (no bound)",
        "orders",
        "find",
        "api/orders.py list (a window reaching back past a year)",
        "user_id_1__id_-1",
        lambda s: orders_of(s.user_id),
        NEWEST_FIRST,
    ),
    Shape(
        "charge by PaymentIntent",
        "charges",
        "find",
        "activities/orders.py complete_order (its insert met the unique index), activities/payments.py refund_payment",
        "stripe_id_1 (unique)",
        lambda s: charge_by_intent(s.payment_intent_id),
    ),
    Shape(
        "record a refund",
        "charges",
        "upsert",
        "activities/payments.py refund_payment",
        "stripe_id_1 (unique)",
        lambda s: charge_by_intent(s.payment_intent_id),
    ),
    Shape(
        "orders by ids",
        "orders",
        "find",
        "activities/reconcile.py plan (a page of PaymentIntents)",
        "_id_",
        lambda s: by_ids([s.order_id, s.ticket_id]),
    ),
    Shape(
        "succeeded charges of orders",
        "charges",
        "find",
        "activities/reconcile.py plan",
        "one_succeeded_charge_per_order (partial, unique)",
        lambda s: kept_charges_of([str(s.order_id), str(s.ticket_id)]),
    ),
    Shape(
        "charges by PaymentIntents",
        "charges",
        "find",
        "activities/reconcile.py plan",
        "stripe_id_1 (unique)",
        lambda s: charges_by_intents([s.payment_intent_id, "pi_1"]),
    ),
    Shape(
        "record a missing charge",
        "charges",
        "upsert",
        "activities/reconcile.py record_charge ($setOnInsert)",
        "stripe_id_1 (unique)",
        lambda s: charge_by_intent(s.payment_intent_id),
    ),
    Shape(
        "reconciliation watermark",
        "reconcile_state",
        "find, upsert ($max)",
        "activities/reconcile.py window, save_watermark",
        "_id_",
        lambda s: by_id("payments"),
    ),
    Shape(
        "payment attempt by (order, attempt)",
        "payment_attempts",
        "find",
        "activities/payments.py charge_order",
        "_id_",
        lambda s: by_id(s.attempt_key),
    ),
]
"""Inserts (users, tickets, orders, charges, payment_attempts: Beanie `.insert()` / `insert_one`) read
nothing and are not listed; each index above costs every insert and every update of its fields."""
