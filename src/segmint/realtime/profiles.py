"""Real-time profiles: each committed event updates its person's profile incrementally.

A :class:`Profile` holds one person's counters, totals, first and last seen times,
open-cart state, traits from ``identify`` calls, the identifiers seen and, for the
event keys given a *window*, the recent event times that triggers count over
(``count_between``). :class:`Profiles` is the in-memory store the real-time
processor keeps (person id -> profile); :func:`save_profiles` and
:func:`load_profiles` persist it in the ``profiles`` table, and :func:`profiles_sql`
computes the same fields in batch, in the engine, from the ``events`` table. A
property test proves that streaming events one by one gives what the batch SQL
gives, NULLs included.

Fields
------
:data:`PROFILE_FIELD_TYPES` lists the fields rules and triggers may use (they are
also queryable columns of the ``profiles`` table). An event's *key* is
:func:`segmint.realtime.events.event_key`: a ``track`` call's event name, else the
call type (``page``, ``identify``, ...).

================= ========= ==============================================================
field             type      definition
================= ========= ==============================================================
event_count       number    events of any type
page_views        number    ``page`` and ``screen`` calls
product_views     number    ``Product Viewed`` events
cart_adds         number    ``Product Added`` events
cart_removes      number    ``Product Removed`` events
checkouts_started number    ``Checkout Started`` events
order_count       number    ``Order Completed`` events
email_opens       number    ``Email Opened`` events
revenue_total     number    sum over ``Order Completed`` events of the property ``revenue``,
                            or ``total`` where ``revenue`` is not a number (0.0: none)
cart_items        number    units in the open cart (see *Cart*) (0)
cart_value        number    sum of quantity x price over the open cart (0.0)
checkout_open     boolean   a ``Checkout Started`` happened after the last ``Order
                            Completed`` (strictly later; any one when there is no order)
identified        boolean   some event carried a ``userId``
first_seen_at     timestamp earliest event time
last_seen_at      timestamp latest event time
last_order_at     timestamp latest ``Order Completed`` time (NULL: never ordered)
================= ========= ==============================================================

Counters, totals, minima and maxima do not depend on the order in which events
arrive. Event times are the (clock-skew corrected) ``timestamp`` of the events.

Property values
    A *number* is a JSON number that is finite (``true``/``false`` and numeric text
    such as ``"12.5"`` are not numbers and are ignored). A *quantity* is the
    ``quantity`` property when it is a JSON integer from 0 to
    :data:`MAX_QUANTITY`, otherwise 1. A *product* is identified by ``product_id``
    when it is non-empty text or a JSON integer (as text), else by ``sku`` on the
    same terms, else it is the unnamed product ``None``.

Cart
    The open cart is made of the ``Product Added`` and ``Product Removed`` events
    strictly later than the person's last ``Order Completed`` (all of them when
    the person never ordered). Per product, quantity = max(0, units added - units
    removed); its price is the ``price`` number of the product's latest add by
    (timestamp, message id), NULL when that add has none. ``cart_items`` is the sum
    of quantities and ``cart_value`` the sum of quantity x price, a NULL price
    counting as 0. Adds and removes are kept individually until the next order, so
    a late event (or a late order) is placed correctly by its time.

Traits
    Per trait key, the value from the latest ``identify`` call by (timestamp,
    message id) wins, ``null`` values included.

Windows
    :class:`Profiles` takes *windows*: event key -> how much history to keep for
    :meth:`Profile.count_between`. For such a key a profile keeps the times of
    the events later than (latest time of that key - window), so
    ``count_between(key, t - window, t)`` is exact for any ``t`` at or after the
    latest event of that key. Asking for a key without a window raises
    :class:`~segmint.errors.UserInputError`: triggers declare what they need.

Limits and their effect
-----------------------
A profile's size is bounded whatever a client sends. Per key at most
:data:`MAX_HISTORY` event times are kept (the oldest go first). At most
:data:`MAX_CART_EVENTS` cart events are kept individually; beyond that the older
half is folded into per-product totals, which stays exact for events in time
order but cannot separate those folded events from a later-arriving ``Order
Completed`` that happened before some of them (they then stay in the cart). At
most :data:`MAX_EVENT_KEYS` distinct event keys are counted individually (the
keys behind the fields and the windowed keys always are), at most
:data:`MAX_TRAITS` trait keys are kept (new keys beyond are ignored) and at most
:data:`MAX_IDENTIFIERS` user ids and anonymous ids each (the least recently seen
go first). Two events with the same time and message id (which deduplication
upstream rules out) tie on traits and prices; the first applied wins.

Persistence
-----------
The real-time writer applies committed events, then, inside its own transaction,
calls :func:`save_profiles` for :meth:`Profiles.dirty` and
:func:`delete_profiles` for :meth:`Profiles.removed` (persons merged away), and
after the commit :meth:`Profiles.mark_clean`. The ``profiles`` table has
``person_id`` (primary key), one column per field, ``traits`` (JSON),
``state`` (the full state as orjson bytes, history included) and
``updated_at`` (UTC time of the write).

Examples
--------
>>> from datetime import datetime, timedelta
>>> from segmint.realtime.events import Event, EventType
>>> profiles = Profiles(windows={"Product Viewed": timedelta(hours=1)})
>>> t = datetime(2026, 1, 1, 12, 0)
>>> p = profiles.apply("u1", Event("m1", EventType.track, t, t, event="Product Viewed",
...                                user_id="u1", properties={"product_id": "P1"}))
>>> p = profiles.apply("u1", Event("m2", EventType.track, t, t, event="Product Added",
...                                user_id="u1", properties={"product_id": "P1",
...                                                          "price": 9.5, "quantity": 2}))
>>> p.field_values()["cart_value"], p.count_between("Product Viewed", t - timedelta(hours=1), t)
(19.0, 1)
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_right, insort
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from heapq import merge as heap_merge
from typing import Any

import orjson
import pyarrow as pa

from segmint.engine import RowWriter, Warehouse
from segmint.errors import DataValidationError, UserInputError
from segmint.realtime.events import Event, EventType, event_key
from segmint.segments.rules import FieldType

__all__ = [
    "MAX_CART_EVENTS",
    "MAX_EVENT_KEYS",
    "MAX_HISTORY",
    "MAX_IDENTIFIERS",
    "MAX_QUANTITY",
    "MAX_TRAITS",
    "PROFILE_FIELD_TYPES",
    "PROFILES_TABLE",
    "PROFILE_JOURNAL",
    "Profile",
    "Profiles",
    "compact_profiles",
    "delete_profiles",
    "ensure_profiles_table",
    "journal_profiles",
    "journal_seq",
    "load_profiles",
    "profiles_sql",
    "save_profiles",
]

logger = logging.getLogger(__name__)

PRODUCT_VIEWED = "Product Viewed"
PRODUCT_ADDED = "Product Added"
PRODUCT_REMOVED = "Product Removed"
CHECKOUT_STARTED = "Checkout Started"
ORDER_COMPLETED = "Order Completed"
EMAIL_OPENED = "Email Opened"

#: Largest ``quantity`` property taken as given; larger or invalid ones count as 1.
MAX_QUANTITY = 1_000_000
#: Event times kept per windowed event key.
MAX_HISTORY = 10_000
#: Cart events kept individually before the older half is folded into totals.
MAX_CART_EVENTS = 1_000
#: Distinct event keys counted individually per profile.
MAX_EVENT_KEYS = 1_000
#: Trait keys kept per profile.
MAX_TRAITS = 1_000
#: User ids (and, separately, anonymous ids) kept per profile.
MAX_IDENTIFIERS = 100

#: Name of the table :func:`save_profiles` writes.
PROFILES_TABLE = "profiles"
#: Profile states appended at every group commit; folded into ``profiles`` now and then.
PROFILE_JOURNAL = "profile_journal"

#: The fields rules and triggers may use, with their types (see the module docstring).
PROFILE_FIELD_TYPES: dict[str, FieldType] = {
    "event_count": FieldType.NUMBER,
    "page_views": FieldType.NUMBER,
    "product_views": FieldType.NUMBER,
    "cart_adds": FieldType.NUMBER,
    "cart_removes": FieldType.NUMBER,
    "checkouts_started": FieldType.NUMBER,
    "order_count": FieldType.NUMBER,
    "email_opens": FieldType.NUMBER,
    "revenue_total": FieldType.NUMBER,
    "cart_items": FieldType.NUMBER,
    "cart_value": FieldType.NUMBER,
    "checkout_open": FieldType.BOOLEAN,
    "identified": FieldType.BOOLEAN,
    "first_seen_at": FieldType.TIMESTAMP,
    "last_seen_at": FieldType.TIMESTAMP,
    "last_order_at": FieldType.TIMESTAMP,
}

# Column types of the fields in the ``profiles`` table and in profiles_sql's result.
_FIELD_SQL_TYPES: dict[str, str] = {
    "event_count": "BIGINT",
    "page_views": "BIGINT",
    "product_views": "BIGINT",
    "cart_adds": "BIGINT",
    "cart_removes": "BIGINT",
    "checkouts_started": "BIGINT",
    "order_count": "BIGINT",
    "email_opens": "BIGINT",
    "revenue_total": "DOUBLE",
    "cart_items": "BIGINT",
    "cart_value": "DOUBLE",
    "checkout_open": "BOOLEAN",
    "identified": "BOOLEAN",
    "first_seen_at": "TIMESTAMP",
    "last_seen_at": "TIMESTAMP",
    "last_order_at": "TIMESTAMP",
}
_ARROW_TYPES = {
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
}

# Event keys whose counts feed fields: always counted, whatever MAX_EVENT_KEYS says.
_FIELD_KEYS = frozenset(
    {PRODUCT_VIEWED, PRODUCT_ADDED, PRODUCT_REMOVED, CHECKOUT_STARTED, ORDER_COMPLETED}
    | {EMAIL_OPENED}
    | {t.value for t in EventType}
)

_TRACK = EventType.track
_PAGE = EventType.page
_SCREEN = EventType.screen
_IDENTIFY = EventType.identify

_STATE_VERSION = 1

# A cart event: (timestamp, message_id, product key, is_add, quantity, price).
_CartEvent = tuple[datetime, str, str | None, bool, int, float | None]


# --------------------------------------------------------------------------- values


def _number(value: Any) -> float | None:
    """A finite JSON number as float; ``None`` for anything else (bool and text too)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _quantity(value: Any) -> int:
    """The ``quantity`` property: an integer from 0 to MAX_QUANTITY, otherwise 1."""
    if type(value) is int and 0 <= value <= MAX_QUANTITY:
        return value
    return 1


def _product_key(properties: Mapping[str, Any]) -> str | None:
    """``product_id``, else ``sku``: non-empty text or an integer (as text); else ``None``."""
    for name in ("product_id", "sku"):
        value = properties.get(name)
        kind = type(value)
        if kind is str:
            if value:
                return value
        elif kind is int:
            return str(value)
    return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _check_windows(windows: Mapping[str, timedelta] | None) -> dict[str, timedelta]:
    checked: dict[str, timedelta] = {}
    for key, window in (windows or {}).items():
        if not isinstance(key, str) or not key:
            raise UserInputError(f"window keys must be event keys (non-empty text), got {key!r}")
        if not isinstance(window, timedelta) or window <= timedelta(0):
            raise UserInputError(
                f"a window must be a positive timedelta, got {window!r}", where=key
            )
        checked[key] = window
    return checked


# --------------------------------------------------------------------------- profile


class Profile:
    """One person's profile, updated event by event.

    Parameters
    ----------
    person_id
        The person the profile belongs to.
    windows
        Event key -> history to keep for :meth:`count_between` (usually the
        :class:`Profiles` store's mapping, shared by all its profiles).

    Attributes
    ----------
    person_id : str
    event_count, page_views, order_count : int
    revenue_total : float
    identified : bool
    first_seen_at, last_seen_at, last_order_at, last_checkout_at : datetime or None

    Notes
    -----
    Events are not copied: trait values are kept by reference, so an event must not
    be changed after it was applied.

    Examples
    --------
    >>> from datetime import datetime
    >>> from segmint.realtime.events import Event, EventType
    >>> t = datetime(2026, 1, 1)
    >>> p = Profile("u1")
    >>> p.apply(Event("m1", EventType.track, t, t, event="Order Completed",
    ...               user_id="u1", properties={"revenue": 42.5}))
    >>> p.field_values()["revenue_total"], p.last_event_at("Order Completed")
    (42.5, datetime.datetime(2026, 1, 1, 0, 0))
    """

    __slots__ = (
        "person_id",
        "event_count",
        "page_views",
        "order_count",
        "revenue_total",
        "identified",
        "first_seen_at",
        "last_seen_at",
        "last_order_at",
        "last_checkout_at",
        "_windows",
        "_counts",
        "_last_at",
        "_cart",
        "_cart_base",
        "_cart_compacted_to",
        "_products",
        "_traits",
        "_user_ids",
        "_anonymous_ids",
        "_history",
    )

    def __init__(self, person_id: str, windows: Mapping[str, timedelta] | None = None) -> None:
        self.person_id = person_id
        self._windows: Mapping[str, timedelta] = windows if windows is not None else {}
        self.event_count = 0
        self.page_views = 0
        self.order_count = 0
        self.revenue_total = 0.0
        self.identified = False
        self.first_seen_at: datetime | None = None
        self.last_seen_at: datetime | None = None
        self.last_order_at: datetime | None = None
        self.last_checkout_at: datetime | None = None
        self._counts: dict[str, int] = {}
        self._last_at: dict[str, datetime] = {}
        # Cart events later than last_order_at, one by one ...
        self._cart: list[_CartEvent] = []
        # ... plus the folded totals of older ones (see MAX_CART_EVENTS):
        # product -> [added, removed, price_ts, price_message_id, price].
        self._cart_base: dict[str | None, list[Any]] = {}
        self._cart_compacted_to: datetime | None = None
        # Both together per product, same layout as _cart_base.
        self._products: dict[str | None, list[Any]] = {}
        self._traits: dict[str, tuple[Any, datetime, str]] = {}
        self._user_ids: dict[str, datetime] = {}
        self._anonymous_ids: dict[str, datetime] = {}
        self._history: dict[str, list[datetime]] = {}

    def __repr__(self) -> str:
        return f"Profile({self.person_id!r}, events={self.event_count})"

    @property
    def windows(self) -> Mapping[str, timedelta]:
        """Event key -> history kept for :meth:`count_between`."""
        return self._windows

    # ------------------------------------------------------------------ updating
    def apply(self, event: Event) -> None:
        """Update the profile with one event (any arrival order gives the same result).

        Parameters
        ----------
        event
            A validated event of this person.

        Examples
        --------
        >>> from datetime import datetime
        >>> from segmint.realtime.events import Event, EventType
        >>> t = datetime(2026, 1, 1)
        >>> p = Profile("u1")
        >>> p.apply(Event("m1", EventType.page, t, t, event="Home", anonymous_id="a1"))
        >>> p.page_views, p.identified
        (1, False)
        """
        ts = event.timestamp
        key = event_key(event)
        self.event_count += 1
        first = self.first_seen_at
        if first is None or ts < first:
            self.first_seen_at = ts
        last = self.last_seen_at
        if last is None or ts > last:
            self.last_seen_at = ts

        counts = self._counts
        count = counts.get(key)
        if count is not None:
            counts[key] = count + 1
            if ts > self._last_at[key]:
                self._last_at[key] = ts
        elif len(counts) < MAX_EVENT_KEYS or key in _FIELD_KEYS or key in self._windows:
            counts[key] = 1
            self._last_at[key] = ts

        user_id = event.user_id
        if user_id is not None:
            self.identified = True
            _see(self._user_ids, user_id, ts)
        anonymous_id = event.anonymous_id
        if anonymous_id is not None:
            _see(self._anonymous_ids, anonymous_id, ts)

        window = self._windows.get(key)
        if window is not None:
            self._remember(key, ts, window)

        etype = event.type
        if etype is _TRACK:
            if key == PRODUCT_ADDED or key == PRODUCT_REMOVED:
                self._cart_event(event, ts, key == PRODUCT_ADDED)
            elif key == ORDER_COMPLETED:
                self._order(event, ts)
            elif key == CHECKOUT_STARTED:
                checkout = self.last_checkout_at
                if checkout is None or ts > checkout:
                    self.last_checkout_at = ts
        elif etype is _PAGE or etype is _SCREEN:
            self.page_views += 1
        elif etype is _IDENTIFY and event.traits:
            self._set_traits(event.traits, ts, event.message_id)

    def _remember(self, key: str, ts: datetime, window: timedelta) -> None:
        history = self._history.get(key)
        if history is None:
            self._history[key] = [ts]
            return
        if not history or ts >= history[-1]:
            history.append(ts)
        elif ts > history[-1] - window:
            insort(history, ts)
        else:
            return  # older than the retained horizon: would be trimmed at once
        _trim(history, window)

    def _cart_event(self, event: Event, ts: datetime, is_add: bool) -> None:
        order = self.last_order_at
        if order is not None and ts <= order:
            return  # belongs to a cart that was already ordered
        properties = event.properties
        if type(properties) is not dict:
            properties = {}
        price = _number(properties.get("price")) if is_add else None
        entry: _CartEvent = (
            ts,
            event.message_id,
            _product_key(properties),
            is_add,
            _quantity(properties.get("quantity")),
            price,
        )
        self._cart.append(entry)
        _fold(self._products, entry)
        if len(self._cart) > MAX_CART_EVENTS:
            self._compact_cart()

    def _order(self, event: Event, ts: datetime) -> None:
        self.order_count += 1
        properties = event.properties
        if type(properties) is dict:
            revenue = _number(properties.get("revenue"))
            if revenue is None:
                revenue = _number(properties.get("total"))
            if revenue is not None:
                self.revenue_total += revenue
        order = self.last_order_at
        if order is None or ts > order:
            self.last_order_at = ts
            self._close_cart(ts)

    def _close_cart(self, order_ts: datetime) -> None:
        """Drop the cart events at or before an order's time; rebuild the product totals."""
        if not self._cart and not self._cart_base:
            return
        self._cart = [e for e in self._cart if e[0] > order_ts]
        compacted = self._cart_compacted_to
        if compacted is not None and compacted <= order_ts:
            self._cart_base = {}
            self._cart_compacted_to = None
        products = {k: list(v) for k, v in self._cart_base.items()}
        for entry in self._cart:
            _fold(products, entry)
        self._products = products

    def _compact_cart(self) -> None:
        """Fold the older half of the cart events into per-product totals."""
        self._cart.sort()
        half = len(self._cart) // 2
        old, self._cart = self._cart[:half], self._cart[half:]
        for entry in old:
            _fold(self._cart_base, entry)
        newest = old[-1][0]
        if self._cart_compacted_to is None or newest > self._cart_compacted_to:
            self._cart_compacted_to = newest

    def _set_traits(self, traits: Mapping[str, Any], ts: datetime, message_id: str) -> None:
        if type(traits) is not dict:
            return
        mine = self._traits
        for name, value in traits.items():
            current = mine.get(name)
            if current is None:
                if len(mine) < MAX_TRAITS:
                    mine[name] = (value, ts, message_id)
            elif ts > current[1] or (ts == current[1] and message_id > current[2]):
                mine[name] = (value, ts, message_id)

    def merge_from(self, other: Profile) -> None:
        """Fold another profile's state into this one (an identity merge).

        The result is what applying both profiles' events to one profile gives:
        counters and totals add, first/last times take the minimum/maximum, traits
        the latest value per key, the cart the union of both carts' events after
        the later of the two last orders, windowed histories the union.

        Examples
        --------
        >>> from datetime import datetime
        >>> from segmint.realtime.events import Event, EventType
        >>> t = datetime(2026, 1, 1)
        >>> a, b = Profile("a"), Profile("b")
        >>> a.apply(Event("m1", EventType.page, t, t, anonymous_id="x"))
        >>> b.apply(Event("m2", EventType.identify, t, t, user_id="u", traits={"plan": "pro"}))
        >>> a.merge_from(b)
        >>> a.event_count, a.identified, a.to_dict()["traits"]
        (2, True, {'plan': 'pro'})
        """
        if other is self:
            return
        self.event_count += other.event_count
        self.page_views += other.page_views
        self.order_count += other.order_count
        self.revenue_total += other.revenue_total
        self.identified = self.identified or other.identified
        self.first_seen_at = _min_time(self.first_seen_at, other.first_seen_at)
        self.last_seen_at = _max_time(self.last_seen_at, other.last_seen_at)
        self.last_checkout_at = _max_time(self.last_checkout_at, other.last_checkout_at)

        for key, count in other._counts.items():
            mine = self._counts.get(key)
            if mine is not None:
                self._counts[key] = mine + count
                self._last_at[key] = max(self._last_at[key], other._last_at[key])
            elif len(self._counts) < MAX_EVENT_KEYS or key in _FIELD_KEYS or key in self._windows:
                self._counts[key] = count
                self._last_at[key] = other._last_at[key]

        for user_id, seen in other._user_ids.items():
            _see(self._user_ids, user_id, seen)
        for anonymous_id, seen in other._anonymous_ids.items():
            _see(self._anonymous_ids, anonymous_id, seen)

        for name, (value, ts, message_id) in other._traits.items():
            current = self._traits.get(name)
            if current is None:
                if len(self._traits) < MAX_TRAITS:
                    self._traits[name] = (value, ts, message_id)
            elif (ts, message_id) > (current[1], current[2]):
                self._traits[name] = (value, ts, message_id)

        for key, theirs in other._history.items():
            window = self._windows.get(key)
            if window is None:
                continue
            ours = self._history.get(key)
            history = list(heap_merge(ours, theirs)) if ours else list(theirs)
            _trim(history, window)
            self._history[key] = history

        self._merge_cart(other)

    def _merge_cart(self, other: Profile) -> None:
        self._cart.extend(other._cart)
        for product, totals in other._cart_base.items():
            _add_totals(self._cart_base, product, totals)
        self._cart_compacted_to = _max_time(self._cart_compacted_to, other._cart_compacted_to)
        order = _max_time(self.last_order_at, other.last_order_at)
        self.last_order_at = order
        if order is not None:
            self._cart = [e for e in self._cart if e[0] > order]
            if self._cart_compacted_to is not None and self._cart_compacted_to <= order:
                self._cart_base = {}
                self._cart_compacted_to = None
        products = {k: list(v) for k, v in self._cart_base.items()}
        for entry in self._cart:
            _fold(products, entry)
        self._products = products
        while len(self._cart) > MAX_CART_EVENTS:
            self._compact_cart()

    # ------------------------------------------------------------------ reading
    @property
    def checkout_open(self) -> bool:
        """A ``Checkout Started`` strictly later than the last ``Order Completed``."""
        checkout = self.last_checkout_at
        if checkout is None:
            return False
        order = self.last_order_at
        return order is None or checkout > order

    def cart(self) -> list[tuple[str | None, int, float | None]]:
        """The open cart: (product, quantity, price) for products with a quantity above 0.

        Sorted by product (the unnamed product ``None`` first).

        Examples
        --------
        >>> from datetime import datetime
        >>> from segmint.realtime.events import Event, EventType
        >>> t = datetime(2026, 1, 1)
        >>> p = Profile("u1")
        >>> p.apply(Event("m1", EventType.track, t, t, event="Product Added", user_id="u1",
        ...               properties={"sku": "S-1", "quantity": 3, "price": 2.0}))
        >>> p.cart()
        [('S-1', 3, 2.0)]
        """
        items = []
        for product, (added, removed, _ts, _mid, price) in self._products.items():
            quantity = added - removed
            if quantity > 0:
                items.append((product, quantity, price))
        items.sort(key=lambda item: (item[0] is not None, item[0] or ""))
        return items

    def field_values(self) -> dict[str, Any]:
        """The values of the :data:`PROFILE_FIELD_TYPES` fields, as rules evaluate them.

        Examples
        --------
        >>> Profile("u1").field_values()["last_seen_at"] is None
        True
        """
        counts = self._counts
        cart_items = 0
        cart_value = 0.0
        for added, removed, _ts, _mid, price in self._products.values():
            quantity = added - removed
            if quantity > 0:
                cart_items += quantity
                if price is not None:
                    cart_value += quantity * price
        return {
            "event_count": self.event_count,
            "page_views": self.page_views,
            "product_views": counts.get(PRODUCT_VIEWED, 0),
            "cart_adds": counts.get(PRODUCT_ADDED, 0),
            "cart_removes": counts.get(PRODUCT_REMOVED, 0),
            "checkouts_started": counts.get(CHECKOUT_STARTED, 0),
            "order_count": self.order_count,
            "email_opens": counts.get(EMAIL_OPENED, 0),
            "revenue_total": self.revenue_total,
            "cart_items": cart_items,
            "cart_value": cart_value,
            "checkout_open": self.checkout_open,
            "identified": self.identified,
            "first_seen_at": self.first_seen_at,
            "last_seen_at": self.last_seen_at,
            "last_order_at": self.last_order_at,
        }

    @property
    def traits(self) -> dict[str, Any]:
        """Current traits: per key the value of the latest ``identify`` call."""
        return {name: entry[0] for name, entry in self._traits.items()}

    def event_counts(self) -> dict[str, int]:
        """Events counted per event key (see :data:`MAX_EVENT_KEYS`)."""
        return dict(self._counts)

    def last_event_at(self, key: str | None = None) -> datetime | None:
        """Time of the latest event, or of the latest event with that event key.

        ``None`` when there is none (or the key is beyond :data:`MAX_EVENT_KEYS`).

        Examples
        --------
        >>> Profile("u1").last_event_at("Order Completed") is None
        True
        """
        if key is None:
            return self.last_seen_at
        return self._last_at.get(key)

    def count_between(self, key: str, start: datetime, end: datetime) -> int:
        """Events with that key and ``start < timestamp <= end``, among retained history.

        Raises
        ------
        UserInputError
            If no window (history) is kept for ``key``.

        Examples
        --------
        >>> from datetime import datetime, timedelta
        >>> from segmint.realtime.events import Event, EventType
        >>> t = datetime(2026, 1, 1, 12)
        >>> p = Profile("u1", {"page": timedelta(hours=1)})
        >>> for i, minutes in enumerate([0, 20, 50]):
        ...     p.apply(Event(f"m{i}", EventType.page, t + timedelta(minutes=minutes), t,
        ...                   user_id="u1"))
        >>> p.count_between("page", t, t + timedelta(minutes=50))
        2
        """
        if key not in self._windows:
            known = ", ".join(sorted(self._windows)) or "none"
            raise UserInputError(
                f"no history is kept for event key {key!r}: give it a window "
                f"(keys with a window: {known})",
                where=key,
            )
        history = self._history.get(key)
        if not history or end <= start:
            return 0
        return bisect_right(history, end) - bisect_right(history, start)

    def to_dict(self) -> dict[str, Any]:
        """The profile as the API shows it (JSON-ready; times as ISO 8601 text).

        Keys: ``person_id``, ``fields`` (:meth:`field_values`), ``events`` (per
        event key: ``count`` and ``last_at``), ``cart`` (open cart items with
        ``product_id``, ``quantity``, ``price``), ``traits``, ``user_ids`` and
        ``anonymous_ids`` (most recently seen first). No internal history.

        Examples
        --------
        >>> Profile("u1").to_dict()["fields"]["event_count"]
        0
        """
        fields = self.field_values()
        for name in ("first_seen_at", "last_seen_at", "last_order_at"):
            fields[name] = _iso(fields[name])
        return {
            "person_id": self.person_id,
            "fields": fields,
            "events": {
                key: {"count": count, "last_at": _iso(self._last_at[key])}
                for key, count in sorted(self._counts.items())
            },
            "cart": [
                {"product_id": product, "quantity": quantity, "price": price}
                for product, quantity, price in self.cart()
            ],
            "traits": self.traits,
            "user_ids": _by_recency(self._user_ids),
            "anonymous_ids": _by_recency(self._anonymous_ids),
        }

    # ------------------------------------------------------------------ persistence
    def to_row(self) -> dict[str, Any]:
        """The ``profiles`` table row: ``person_id``, the fields, ``traits``, ``state``.

        ``traits`` is JSON text; ``state`` holds the full state, history included, as
        orjson bytes (:meth:`from_row` reads it back).

        Examples
        --------
        >>> row = Profile("u1").to_row()
        >>> Profile.from_row(row).to_dict() == Profile("u1").to_dict()
        True
        """
        row: dict[str, Any] = {"person_id": self.person_id}
        row.update(self.field_values())
        row["traits"] = _dumps(self.traits).decode()
        row["state"] = self.state_bytes()
        return row

    def state_bytes(self) -> bytes:
        """The full state as orjson bytes (the ``state`` column; :meth:`from_row` reads it)."""
        return _dumps(self._state())

    def _state(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "events": self.event_count,
            "page_views": self.page_views,
            "orders": self.order_count,
            "revenue": self.revenue_total,
            "identified": self.identified,
            "first": self.first_seen_at,
            "last": self.last_seen_at,
            "last_order": self.last_order_at,
            "last_checkout": self.last_checkout_at,
            "counts": self._counts,
            "last_at": self._last_at,
            "cart": self._cart,
            "cart_base": [[product, *totals] for product, totals in self._cart_base.items()],
            "cart_compacted_to": self._cart_compacted_to,
            "traits": self._traits,
            "user_ids": self._user_ids,
            "anonymous_ids": self._anonymous_ids,
            "history": self._history,
        }

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], windows: Mapping[str, timedelta] | None = None
    ) -> Profile:
        """Rebuild a profile from its ``profiles`` row (only ``person_id`` and ``state`` are read).

        History is kept for the keys of ``windows`` only (and trimmed to it); keys
        newly given a window start without history.

        Raises
        ------
        DataValidationError
            If the state cannot be read.

        Examples
        --------
        >>> Profile.from_row({"person_id": "u1", "state": b'{"v": 99}'})
        Traceback (most recent call last):
        ...
        segmint.errors.DataValidationError: u1: unreadable profile state: unknown version 99
        """
        person_id = str(row["person_id"])
        try:
            state = orjson.loads(row["state"])
            if state.get("v") != _STATE_VERSION:
                raise ValueError(f"unknown version {state.get('v')}")
            profile = cls(person_id, windows)
            profile._restore(state)
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise DataValidationError(f"unreadable profile state: {e}", where=person_id) from e
        return profile

    def _restore(self, state: dict[str, Any]) -> None:
        t = _parse_time
        self.event_count = int(state["events"])
        self.page_views = int(state["page_views"])
        self.order_count = int(state["orders"])
        self.revenue_total = float(state["revenue"])
        self.identified = bool(state["identified"])
        self.first_seen_at = t(state["first"])
        self.last_seen_at = t(state["last"])
        self.last_order_at = t(state["last_order"])
        self.last_checkout_at = t(state["last_checkout"])
        last_at = state["last_at"]
        for key, count in state["counts"].items():
            self._counts[key] = int(count)
            self._last_at[key] = datetime.fromisoformat(last_at[key])
        self._cart = [
            (datetime.fromisoformat(ts), mid, product, bool(is_add), int(quantity), price)
            for ts, mid, product, is_add, quantity, price in state["cart"]
        ]
        for product, added, removed, price_ts, price_mid, price in state["cart_base"]:
            self._cart_base[product] = [added, removed, t(price_ts), price_mid, price]
        self._cart_compacted_to = t(state["cart_compacted_to"])
        products = {k: list(v) for k, v in self._cart_base.items()}
        for entry in self._cart:
            _fold(products, entry)
        self._products = products
        for name, (value, ts, mid) in state["traits"].items():
            self._traits[name] = (value, datetime.fromisoformat(ts), mid)
        for user_id, seen in state["user_ids"].items():
            self._user_ids[user_id] = datetime.fromisoformat(seen)
        for anonymous_id, seen in state["anonymous_ids"].items():
            self._anonymous_ids[anonymous_id] = datetime.fromisoformat(seen)
        for key, times in state["history"].items():
            window = self._windows.get(key)
            if window is None:
                continue
            history = sorted(datetime.fromisoformat(ts) for ts in times)
            _trim(history, window)
            self._history[key] = history


def _dumps(value: Any) -> bytes:
    """orjson bytes; values JSON cannot hold (only events built in code have them) made safe."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:  # an integer beyond 64 bits, a dict key that is not text
        return orjson.dumps(_json_safe(value), default=str)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if type(value) is int and not -(2**63) <= value < 2**64:
        return _number(value)
    return value


def _see(seen: dict[str, datetime], identifier: str, ts: datetime) -> None:
    """Record an identifier's latest sighting, keeping at most MAX_IDENTIFIERS."""
    previous = seen.get(identifier)
    if previous is None:
        seen[identifier] = ts
        if len(seen) > MAX_IDENTIFIERS:
            del seen[min(seen, key=seen.__getitem__)]
    elif ts > previous:
        seen[identifier] = ts


def _by_recency(seen: Mapping[str, datetime]) -> list[str]:
    return sorted(seen, key=lambda identifier: (seen[identifier], identifier), reverse=True)


def _trim(history: list[datetime], window: timedelta) -> None:
    """Keep the times later than (latest - window), at most MAX_HISTORY of them."""
    if not history:
        return
    cutoff = history[-1] - window
    if history[0] <= cutoff:
        del history[: bisect_right(history, cutoff)]
    if len(history) > MAX_HISTORY:
        del history[: len(history) - MAX_HISTORY]


def _fold(products: dict[str | None, list[Any]], entry: _CartEvent) -> None:
    """Add one cart event to per-product totals [added, removed, price_ts, price_mid, price]."""
    ts, message_id, product, is_add, quantity, price = entry
    totals = products.get(product)
    if totals is None:
        totals = products[product] = [0, 0, None, None, None]
    if is_add:
        totals[0] += quantity
        price_ts = totals[2]
        if price_ts is None or ts > price_ts or (ts == price_ts and message_id > totals[3]):
            totals[2] = ts
            totals[3] = message_id
            totals[4] = price
    else:
        totals[1] += quantity


def _add_totals(
    products: dict[str | None, list[Any]], product: str | None, other: list[Any]
) -> None:
    totals = products.get(product)
    if totals is None:
        products[product] = list(other)
        return
    totals[0] += other[0]
    totals[1] += other[1]
    if other[2] is not None and (
        totals[2] is None or (other[2], other[3]) > (totals[2], totals[3])
    ):
        totals[2], totals[3], totals[4] = other[2], other[3], other[4]


def _min_time(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _max_time(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


# --------------------------------------------------------------------------- store


class Profiles:
    """The in-memory profile store of the real-time processor: person id -> :class:`Profile`.

    Parameters
    ----------
    windows
        Event key (see :func:`~segmint.realtime.events.event_key`) -> history to
        keep for :meth:`Profile.count_between`. Keys not listed keep none, and
        asking for them raises :class:`~segmint.errors.UserInputError`.

    Raises
    ------
    UserInputError
        If a window is not a positive ``timedelta``.

    Examples
    --------
    >>> from datetime import datetime, timedelta
    >>> from segmint.realtime.events import Event, EventType
    >>> t = datetime(2026, 1, 1)
    >>> store = Profiles(windows={"page": timedelta(minutes=30)})
    >>> _ = store.apply("u1", Event("m1", EventType.page, t, t, user_id="u1"))
    >>> len(store), "u1" in store, store.dirty()
    (1, True, {'u1'})
    """

    def __init__(self, windows: Mapping[str, timedelta] | None = None) -> None:
        self._windows = _check_windows(windows)
        self._profiles: dict[str, Profile] = {}
        self._dirty: set[str] = set()
        self._removed: set[str] = set()

    @property
    def windows(self) -> Mapping[str, timedelta]:
        """Event key -> history kept (shared by every profile of the store)."""
        return self._windows

    def get(self, person_id: str) -> Profile | None:
        """The person's profile, or ``None``."""
        return self._profiles.get(person_id)

    def get_or_create(self, person_id: str) -> Profile:
        """The person's profile, created empty (and not marked dirty) when missing."""
        profile = self._profiles.get(person_id)
        if profile is None:
            profile = self._profiles[person_id] = Profile(person_id, self._windows)
        return profile

    def apply(self, person_id: str, event: Event) -> Profile:
        """Apply one event to the person's profile (created if needed); marks it dirty."""
        profile = self._profiles.get(person_id)
        if profile is None:
            profile = self._profiles[person_id] = Profile(person_id, self._windows)
            self._removed.discard(person_id)
        profile.apply(event)
        self._dirty.add(person_id)
        return profile

    def merge(self, survivor: str, merged: str) -> Profile:
        """Fold ``merged``'s profile into ``survivor``'s and drop ``merged``.

        See :meth:`Profile.merge_from`. The survivor is marked dirty and ``merged``
        removed (:meth:`removed`), so the writer deletes its row.

        Examples
        --------
        >>> from datetime import datetime
        >>> from segmint.realtime.events import Event, EventType
        >>> t = datetime(2026, 1, 1)
        >>> store = Profiles()
        >>> _ = store.apply("anon", Event("m1", EventType.page, t, t, anonymous_id="a"))
        >>> _ = store.apply("u1", Event("m2", EventType.page, t, t, user_id="u1"))
        >>> store.merge("u1", "anon").page_views, "anon" in store, store.removed()
        (2, False, {'anon'})
        """
        target = self.get_or_create(survivor)
        if survivor == merged:
            return target
        source = self._profiles.pop(merged, None)
        if source is not None:
            target.merge_from(source)
            self._dirty.add(survivor)
            self._dirty.discard(merged)
            self._removed.add(merged)
            self._removed.discard(survivor)
        return target

    def dirty(self) -> set[str]:
        """Persons whose profile changed since :meth:`mark_clean` (a copy)."""
        return set(self._dirty)

    def removed(self) -> set[str]:
        """Persons whose profile was merged away since :meth:`mark_clean` (a copy)."""
        return set(self._removed)

    def mark_clean(self, person_ids: Iterable[str] | None = None) -> None:
        """Forget changes once written: all of them, or those of ``person_ids``."""
        if person_ids is None:
            self._dirty.clear()
            self._removed.clear()
            return
        for person_id in person_ids:
            self._dirty.discard(person_id)
            self._removed.discard(person_id)

    def values(self) -> Iterator[Profile]:
        """Every profile of the store."""
        return iter(self._profiles.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._profiles)

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, person_id: object) -> bool:
        return person_id in self._profiles


# --------------------------------------------------------------------------- warehouse

_BATCH_VIEW = "_segmint_profiles_batch"


def _table_columns() -> dict[str, str]:
    return {
        "person_id": "VARCHAR",
        **_FIELD_SQL_TYPES,
        "traits": "JSON",
        "state": "BLOB",
        "updated_at": "TIMESTAMP",
    }


def ensure_profiles_table(wh: Warehouse) -> None:
    """Create the ``profiles`` table and its journal if they do not exist.

    Columns: ``person_id`` (primary key), one per :data:`PROFILE_FIELD_TYPES`
    field, ``traits`` (JSON), ``state`` (BLOB) and ``updated_at`` (TIMESTAMP, UTC).
    The journal (:data:`PROFILE_JOURNAL`: ``seq``, ``person_id``, ``state``) holds
    the states written since the last :func:`compact_profiles`.

    Raises
    ------
    DataValidationError
        If a ``profiles`` table with other columns exists.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_profiles_table(wh)
    >>> wh.columns("profiles")[:3]
    ['person_id', 'event_count', 'page_views']
    """
    _ensure_journal(wh)
    columns = _table_columns()
    if wh.has_table(PROFILES_TABLE):
        found = wh.columns(PROFILES_TABLE)
        if found != list(columns):
            raise DataValidationError(
                f"the table has columns {found}, expected {list(columns)}: it was written by "
                "another version of segmint; drop it to rebuild the profiles from the events",
                where=PROFILES_TABLE,
            )
        return
    body = ", ".join(f'"{name}" {sql_type}' for name, sql_type in columns.items())
    wh.execute(f'CREATE TABLE "{PROFILES_TABLE}" ({body}, PRIMARY KEY ("person_id"))')


def _ensure_journal(wh: Warehouse) -> None:
    wh.execute(
        f'CREATE TABLE IF NOT EXISTS "{PROFILE_JOURNAL}" '
        '("seq" BIGINT NOT NULL, "person_id" VARCHAR NOT NULL, "state" BLOB)'
    )


def save_profiles(wh: RowWriter, profiles: Iterable[Profile]) -> int:
    """Upsert profiles into the ``profiles`` table; returns rows written.

    Runs inside the caller's transaction (it opens and commits none). When a person
    appears twice, the last profile given wins.

    Examples
    --------
    >>> from datetime import datetime
    >>> from segmint.realtime.events import Event, EventType
    >>> wh = Warehouse(":memory:")
    >>> ensure_profiles_table(wh)
    >>> store = Profiles()
    >>> t = datetime(2026, 1, 1)
    >>> _ = store.apply("u1", Event("m1", EventType.page, t, t, user_id="u1"))
    >>> save_profiles(wh, store.values())
    1
    >>> wh.fetchall("SELECT person_id, page_views FROM profiles")
    [('u1', 1)]
    """
    latest = {profile.person_id: profile for profile in profiles}
    delete_profiles(wh, latest)
    _insert_profiles(wh, latest.values())
    logger.debug("saved %d profiles", len(latest))
    return len(latest)


def _insert_profiles(wh: RowWriter, profiles: Collection[Profile]) -> None:
    """Insert rows of persons who have none (a plain insert costs a third of an upsert
    through the primary key)."""
    if not profiles:
        return
    columns = [name for name in _table_columns() if name != "updated_at"]
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for profile in profiles:
        row = profile.to_row()
        rows.append((*(row[name] for name in columns), now))
    schema = pa.schema(
        [("person_id", pa.string())]
        + [(name, _ARROW_TYPES[sql_type]) for name, sql_type in _FIELD_SQL_TYPES.items()]
        + [("traits", pa.string()), ("state", pa.binary()), ("updated_at", pa.timestamp("us"))]
    )
    wh.insert_rows(PROFILES_TABLE, [*columns, "updated_at"], rows, schema=schema)


def delete_profiles(wh: RowWriter, person_ids: Iterable[str]) -> int:
    """Delete the rows of these persons (e.g. merged away); returns how many were asked for.

    Runs inside the caller's transaction.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_profiles_table(wh)
    >>> delete_profiles(wh, ["gone"])
    1
    """
    ids = sorted(set(person_ids))
    wh.delete_rows(PROFILES_TABLE, ["person_id"], [(person_id,) for person_id in ids])
    return len(ids)


def journal_profiles(
    wh: RowWriter, seq: int, profiles: Iterable[Profile], removed: Iterable[str] = ()
) -> int:
    """Append profile states to the journal under ``seq``; returns rows written.

    The real-time writer calls this in every group commit instead of upserting the wide
    ``profiles`` rows: one narrow append costs a fraction of an upsert through the
    primary key. A removed (merged-away) person gets a row without state.
    :func:`load_profiles` reads the journal over the table, so nothing committed is
    lost; :func:`compact_profiles` folds it into ``profiles``. Runs inside the
    caller's transaction.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_profiles_table(wh)
    >>> journal_profiles(wh, 1, [Profile("u1")], removed=["anon"])
    2
    >>> sorted(p.person_id for p in load_profiles(wh).values())
    ['u1']
    """
    rows: list[tuple[int, str, bytes | None]] = [
        (seq, profile.person_id, profile.state_bytes()) for profile in profiles
    ]
    rows.extend((seq, person_id, None) for person_id in removed)
    wh.insert_rows(
        PROFILE_JOURNAL,
        ["seq", "person_id", "state"],
        rows,
        schema=pa.schema([("seq", pa.int64()), ("person_id", pa.string()), ("state", pa.binary())]),
    )
    return len(rows)


def journal_seq(wh: Warehouse) -> int:
    """The highest ``seq`` in the journal (0 when empty): the next append uses more."""
    return int(wh.scalar(f'SELECT coalesce(max("seq"), 0) FROM "{PROFILE_JOURNAL}"'))


def compact_profiles(
    wh: RowWriter, store: Profiles, person_ids: Iterable[str], *, through_seq: int | None = None
) -> int:
    """Write the profiles of ``person_ids`` into ``profiles``; returns the persons done.

    Their rows are written from ``store`` (the in-memory profiles, which equal their
    latest journal rows) or deleted when the store no longer has them. Journal rows
    are left in place, so a step costs no journal scan: a journal row never holds a
    newer state than what was just written. With ``through_seq`` every journal row up to
    that ``seq`` is dropped (the caller has written every person journaled up to it).
    Runs inside the caller's transaction.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_profiles_table(wh)
    >>> store = Profiles()
    >>> _ = store.get_or_create("u1")
    >>> _ = journal_profiles(wh, 1, store.values(), removed=["anon"])
    >>> compact_profiles(wh, store, ["u1", "anon"], through_seq=1)
    2
    >>> wh.fetchall("SELECT person_id FROM profiles")
    [('u1',)]
    >>> wh.scalar("SELECT count(*) FROM profile_journal")
    0
    """
    ids = sorted(set(person_ids))
    delete_profiles(wh, ids)
    kept = [profile for person_id in ids if (profile := store.get(person_id)) is not None]
    _insert_profiles(wh, kept)
    if through_seq is not None:
        wh.execute(f'DELETE FROM "{PROFILE_JOURNAL}" WHERE "seq" <= ?', [through_seq])
    return len(ids)


def load_profiles(wh: Warehouse, windows: Mapping[str, timedelta] | None = None) -> Profiles:
    """Read every saved profile into a new :class:`Profiles` store.

    Journal rows (see :func:`journal_profiles`) override table rows; the persons they
    name are left dirty (or removed), so the next :func:`compact_profiles` writes
    them. An absent ``profiles`` table gives an empty store.

    Raises
    ------
    DataValidationError
        If a saved state cannot be read.

    Examples
    --------
    >>> len(load_profiles(Warehouse(":memory:")))
    0
    """
    store = Profiles(windows)
    if not wh.has_table(PROFILES_TABLE):
        return store
    # The latest journal row of a person overrides its table row (no state: removed).
    sql = f'''
        WITH latest AS (
            SELECT "person_id", arg_max_null("state", "seq") AS "state", true AS journaled
            FROM "{PROFILE_JOURNAL}" GROUP BY "person_id"
        )
        SELECT "person_id", coalesce(l.journaled, false) AS journaled,
               CASE WHEN l.journaled THEN l."state" ELSE p."state" END AS "state"
        FROM "{PROFILES_TABLE}" p FULL OUTER JOIN latest l USING ("person_id")
    '''
    table = (
        wh.arrow(sql)
        if wh.has_table(PROFILE_JOURNAL)
        else wh.arrow(f'SELECT "person_id", false AS journaled, "state" FROM "{PROFILES_TABLE}"')
    )
    person_ids = table.column("person_id").to_pylist()
    journaled = table.column("journaled").to_pylist()
    states = table.column("state").to_pylist()
    for person_id, in_journal, state in zip(person_ids, journaled, states, strict=True):
        if state is None:
            if in_journal:
                store._removed.add(person_id)
            continue
        profile = Profile.from_row({"person_id": person_id, "state": state}, store.windows)
        store._profiles[profile.person_id] = profile
        if in_journal:
            store._dirty.add(person_id)
    logger.debug("loaded %d profiles", len(store))
    return store


# --------------------------------------------------------------------------- batch SQL

_RELATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")


def _json_number(path: str) -> str:
    """SQL for a finite JSON number at ``path`` of ``properties`` as DOUBLE, else NULL."""
    value = f"TRY_CAST(json_extract(properties, '{path}') AS DOUBLE)"
    return (
        f"CASE WHEN json_type(properties, '{path}') IN ('BIGINT', 'UBIGINT', 'DOUBLE') "
        f"AND isfinite({value}) THEN {value} END"
    )


def _json_id(path: str) -> str:
    """SQL for non-empty text or an integer (as text) at ``path`` of ``properties``."""
    text = f"json_extract_string(properties, '{path}')"
    kind = f"json_type(properties, '{path}')"
    return (
        f"WHEN {kind} = 'VARCHAR' AND {text} <> '' THEN {text} "
        f"WHEN {kind} IN ('BIGINT', 'UBIGINT') THEN {text}"
    )


def profiles_sql(events_relation: str) -> str:
    """Batch SQL (DuckDB) computing the profile fields per person from events.

    The result has ``person_id``, one column per :data:`PROFILE_FIELD_TYPES` field
    (the types of the ``profiles`` table), ``traits`` (JSON object, NULL when no
    ``identify`` call carried traits) and ``cart`` (the open cart: a list of
    ``{product_id, quantity, price}`` with quantity above 0, by product, the unnamed
    product first), with the semantics of the module docstring, so it equals what
    streaming the same events through :class:`Profiles` gives.

    Parameters
    ----------
    events_relation
        Name of a table or view (optionally schema-qualified) with the columns of the
        ``events`` table (:data:`segmint.data.schema.EVENTS`) plus ``person_id``.
        Rows without ``person_id`` or ``timestamp`` are left out.

    Raises
    ------
    UserInputError
        If ``events_relation`` is not a plain (dotted) name.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> from segmint.data.store import ensure_tables
    >>> ensure_tables(wh)
    >>> wh.execute("CREATE VIEW ev AS SELECT *, user_id AS person_id FROM events")
    >>> wh.execute("INSERT INTO events (message_id, type, event, user_id, timestamp, properties)"
    ...            " VALUES ('m1', 'track', 'Order Completed', 'u1', TIMESTAMP '2026-01-01',"
    ...            " '{\\"revenue\\": 20}')")
    >>> wh.fetchall(f"SELECT person_id, order_count, revenue_total FROM ({profiles_sql('ev')})")
    [('u1', 1, 20.0)]
    """
    if not isinstance(events_relation, str) or not _RELATION_NAME.fullmatch(events_relation):
        raise UserInputError(
            f"expected a table or view name such as 'events_by_person', got {events_relation!r}"
        )
    relation = ".".join(f'"{part}"' for part in events_relation.split("."))
    quantity = "TRY_CAST(json_extract(properties, '$.quantity') AS BIGINT)"
    return f"""
WITH ev AS (
    SELECT person_id, message_id, type, user_id, "timestamp" AS ts, properties, traits,
        CASE WHEN type = 'track' AND coalesce(event, '') <> '' THEN event ELSE type END AS event_key
    FROM {relation}
    WHERE person_id IS NOT NULL AND "timestamp" IS NOT NULL
),
base AS (
    SELECT person_id,
        count(*) AS event_count,
        count(*) FILTER (WHERE type IN ('page', 'screen')) AS page_views,
        count(*) FILTER (WHERE event_key = '{PRODUCT_VIEWED}') AS product_views,
        count(*) FILTER (WHERE event_key = '{PRODUCT_ADDED}') AS cart_adds,
        count(*) FILTER (WHERE event_key = '{PRODUCT_REMOVED}') AS cart_removes,
        count(*) FILTER (WHERE event_key = '{CHECKOUT_STARTED}') AS checkouts_started,
        count(*) FILTER (WHERE event_key = '{ORDER_COMPLETED}') AS order_count,
        count(*) FILTER (WHERE event_key = '{EMAIL_OPENED}') AS email_opens,
        sum(coalesce({_json_number("$.revenue")}, {_json_number("$.total")}))
            FILTER (WHERE event_key = '{ORDER_COMPLETED}') AS revenue_total,
        bool_or(user_id IS NOT NULL) AS identified,
        min(ts) AS first_seen_at,
        max(ts) AS last_seen_at,
        max(ts) FILTER (WHERE event_key = '{ORDER_COMPLETED}') AS last_order_at,
        max(ts) FILTER (WHERE event_key = '{CHECKOUT_STARTED}') AS last_checkout_at
    FROM ev
    GROUP BY person_id
),
cart_events AS (
    SELECT ev.person_id, ev.ts, ev.message_id, ev.event_key = '{PRODUCT_ADDED}' AS is_add,
        CASE {_json_id("$.product_id")} {_json_id("$.sku")} END AS product,
        CASE WHEN json_type(properties, '$.quantity') IN ('BIGINT', 'UBIGINT')
            AND {quantity} BETWEEN 0 AND {MAX_QUANTITY} THEN {quantity} ELSE 1 END AS quantity,
        {_json_number("$.price")} AS price
    FROM ev JOIN base USING (person_id)
    WHERE ev.event_key IN ('{PRODUCT_ADDED}', '{PRODUCT_REMOVED}')
        AND (base.last_order_at IS NULL OR ev.ts > base.last_order_at)
),
cart_products AS (
    SELECT person_id, product,
        greatest(coalesce(sum(quantity) FILTER (WHERE is_add), 0)
            - coalesce(sum(quantity) FILTER (WHERE NOT is_add), 0), 0)::BIGINT AS quantity,
        arg_max_null(price, (ts, message_id)) FILTER (WHERE is_add) AS price
    FROM cart_events
    GROUP BY person_id, product
),
cart AS (
    SELECT person_id, sum(quantity) AS cart_items,
        sum(quantity * coalesce(price, 0)) AS cart_value,
        list({{'product_id': product, 'quantity': quantity, 'price': price}}
            ORDER BY product NULLS FIRST) FILTER (WHERE quantity > 0) AS items
    FROM cart_products
    GROUP BY person_id
),
trait_values AS (
    SELECT ev.person_id, t.key AS name, arg_max_null(t.value, (ev.ts, ev.message_id)) AS value
    FROM ev, json_each(ev.traits) AS t
    WHERE ev.type = 'identify' AND json_type(ev.traits) = 'OBJECT'
    GROUP BY ev.person_id, t.key
),
trait_objects AS (
    SELECT person_id, json_group_object(name, value) AS traits
    FROM trait_values
    GROUP BY person_id
)
SELECT base.person_id,
    base.event_count::BIGINT AS event_count,
    base.page_views::BIGINT AS page_views,
    base.product_views::BIGINT AS product_views,
    base.cart_adds::BIGINT AS cart_adds,
    base.cart_removes::BIGINT AS cart_removes,
    base.checkouts_started::BIGINT AS checkouts_started,
    base.order_count::BIGINT AS order_count,
    base.email_opens::BIGINT AS email_opens,
    coalesce(base.revenue_total, 0)::DOUBLE AS revenue_total,
    coalesce(cart.cart_items, 0)::BIGINT AS cart_items,
    coalesce(cart.cart_value, 0)::DOUBLE AS cart_value,
    (base.last_checkout_at IS NOT NULL AND (base.last_order_at IS NULL
        OR base.last_checkout_at > base.last_order_at)) AS checkout_open,
    base.identified AS identified,
    base.first_seen_at::TIMESTAMP AS first_seen_at,
    base.last_seen_at::TIMESTAMP AS last_seen_at,
    base.last_order_at::TIMESTAMP AS last_order_at,
    trait_objects.traits AS traits,
    coalesce(cart.items, []) AS cart
FROM base
LEFT JOIN cart USING (person_id)
LEFT JOIN trait_objects USING (person_id)
"""
