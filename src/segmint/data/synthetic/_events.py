"""Behavioural events in Segment spec shape, grouped into sessions.

A *purchase session* ends with the ``Order Completed`` event of a web or app
order (same ``order_id``, at the order's time), after views and cart adds of the
ordered products and a ``Checkout Started``. A *browse session* has a page view,
product views and sometimes cart adds or an abandoned checkout. The first
identified session on each device starts with an ``identify`` call; a few
sessions are anonymous (``anonymousId`` only). E-mail campaigns add
``Email Delivered`` / ``Email Opened`` events for customers whose e-mail
marketing consent is granted at send time. Some devices run a slow clock: their
``timestamp`` and ``sentAt`` are early by the same amount, ``receivedAt`` is
right, so ``receivedAt - (sentAt - timestamp)`` recovers the true time.

Events are drawn as numbers (:class:`Drawn`); ``_event_text`` renders them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmint.data.synthetic import _segments
from segmint.data.synthetic._catalog import Catalog
from segmint.data.synthetic._clock import DAY_S, Clock
from segmint.data.synthetic._consents import EMAIL, Consents
from segmint.data.synthetic._orders import Orders, sample_products
from segmint.data.synthetic._people import People

# Event kinds, in their order within a session.
IDENTIFY, PAGE, VIEWED, ADDED, CHECKOUT, COMPLETED, DELIVERED, OPENED = range(8)
KIND_TYPE = ("identify", "page", "track", "track", "track", "track", "track", "track")
KIND_EVENT: tuple[str | None, ...] = (
    None,
    None,
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Email Delivered",
    "Email Opened",
)

WEB, APP, SERVER = 0, 1, 2
ANONYMOUS_SHARE = 0.06  # browse sessions without a userId
SKEWED_DEVICE_SHARE = 0.03  # devices whose clock is behind
ACTIVE_WINDOW_DAYS = 150  # browse sessions of active customers fall in this window
LAPSED_RECENT_SHARE = 0.05  # share of a lapsed customer's browse sessions in the last 90 days
CAMPAIGN_EVERY_DAYS = 21
CAMPAIGN_HISTORY_DAYS = 183
_SAFETY_S = 3 * 3600  # browse sessions start at least this long before the end
_END_MARGIN_S = 300  # and end at least this long before it


@dataclass
class Drawn:
    """Events as numbers only (text is rendered once, after sorting).

    Times are ms since the epoch; ``true_ms`` is when the event really happened,
    ``timestamp_ms`` what the device's clock said.
    """

    kind: np.ndarray
    customer: np.ndarray  # index into the chunk's People
    device: np.ndarray  # WEB, APP or SERVER
    anonymous: np.ndarray
    true_ms: np.ndarray
    timestamp_ms: np.ndarray
    sent_ms: np.ndarray
    received_ms: np.ndarray
    product: np.ndarray  # -1 when none
    quantity: np.ndarray
    page: np.ndarray  # -1 when none
    order: np.ndarray  # -1 when none
    cart_cents: np.ndarray  # value of an abandoned checkout, else 0
    campaign: np.ndarray  # -1 when none

    def __len__(self) -> int:
        return len(self.kind)

    def take(self, index: np.ndarray) -> Drawn:
        """The events at ``index``, in that order."""
        return Drawn(**{k: v[index] for k, v in vars(self).items()})

    @staticmethod
    def concat(parts: list[Drawn]) -> Drawn:
        """All events of ``parts``, one part after the other."""
        return Drawn(**{k: np.concatenate([vars(p)[k] for p in parts]) for k in vars(parts[0])})


def draw_events(
    rng: np.random.Generator,
    people: People,
    orders: Orders,
    consents: Consents,
    catalog: Catalog,
    clock: Clock,
) -> Drawn:
    """Draw the chunk's session and e-mail events, sorted by ``receivedAt``."""
    drawn = Drawn.concat(
        [
            _session_events(rng, people, orders, catalog, clock),
            _email_events(rng, people, consents, clock),
        ]
    )
    return drawn.take(np.argsort(drawn.received_ms, kind="stable"))


def _session_events(
    rng: np.random.Generator, people: People, orders: Orders, catalog: Catalog, clock: Clock
) -> Drawn:
    """Events of purchase and browse sessions (identify, page, track)."""
    s = _sessions(rng, people, orders, clock)
    n_s = len(s.customer)
    segment = people.segment[s.customer]
    lines = np.zeros(n_s, dtype=np.int64)
    lines[s.purchase] = orders.line_count[s.order[s.purchase]]

    # Events per session, in this order: identify, page, views, adds, checkout, completed.
    c_ident = _first_identified(s).astype(np.int64)
    c_page = (rng.random(n_s) < np.where(s.purchase, 0.3, 0.75)).astype(np.int64)
    extra_views = np.maximum(_segments.column("views_per_browse")[segment] - 1, 0)
    c_view = np.where(s.purchase, lines + rng.poisson(0.2, n_s), 1 + rng.poisson(extra_views))
    cart = rng.random(n_s) < _segments.column("cart_add_prob")[segment]
    c_add = np.where(s.purchase, lines, np.minimum(cart * (1 + (rng.random(n_s) < 0.3)), c_view))
    c_check = np.where(s.purchase, 1, (c_add > 0) & (rng.random(n_s) < 0.15)).astype(np.int64)
    size = c_ident + c_page + c_view + c_add + c_check + s.purchase

    n_e = int(size.sum())
    session = np.repeat(np.arange(n_s), size)
    s_start = (np.cumsum(size) - size).astype(np.int64)
    pos = np.arange(n_e) - s_start[session]
    b1 = c_ident[session]
    b2 = b1 + c_page[session]
    b3 = b2 + c_view[session]
    b4 = b3 + c_add[session]
    b5 = b4 + c_check[session]
    kind = np.select(
        [pos < b1, pos < b2, pos < b3, pos < b4, pos < b5],
        [IDENTIFY, PAGE, VIEWED, ADDED, CHECKOUT],
        COMPLETED,
    )

    # Times: gaps of a few seconds to minutes inside a session; a purchase
    # session ends at its order's time.
    gaps = np.where(pos == 0, 0, np.minimum(4000 + rng.exponential(40_000, n_e), 600_000))
    cumulative = np.cumsum(gaps.astype(np.int64))
    offset = cumulative - cumulative[s_start][session]
    span = offset[s_start + size - 1][session]
    purchase = s.purchase[session]
    # A browse session starts early enough to end (and be received) before the end.
    latest_start = (clock.end_s - _END_MARGIN_S) * 1000 - span
    anchor = np.where(
        purchase, s.anchor_ms[session], np.minimum(s.anchor_ms[session], latest_start)
    )
    true_ms = np.where(purchase, anchor - (span - offset), anchor + offset)
    customer = s.customer[session]
    device = s.device[session]

    # Products: purchase sessions view and add the ordered lines.
    order = np.where(purchase, s.order[session], -1)
    extra = (c_view - lines)[session]
    view_no = pos - b2
    product = sample_products(rng, catalog, people, customer)
    item_view = purchase & (kind == VIEWED) & (view_no >= extra)
    item_add = purchase & (kind == ADDED)
    from_order = item_view | item_add
    quantity = np.ones(n_e, dtype=np.int64)
    if from_order.any():
        line_no = np.where(item_view, view_no - extra, pos - b3)[from_order]
        line_index = orders.line_start[order[from_order]] + line_no
        product[from_order] = orders.product[line_index]
        quantity[from_order] = np.where(item_add[from_order], orders.quantity[line_index], 1)
    # A browse-session cart add is one of the products just viewed.
    browse_add = np.flatnonzero((kind == ADDED) & ~purchase)
    product[browse_add] = product[
        s_start[session[browse_add]] + 2 * b3[browse_add] - 1 - pos[browse_add]
    ]
    product = np.where((kind == VIEWED) | (kind == ADDED), product, -1)
    add_value = np.where(kind == ADDED, catalog.price_cents[np.maximum(product, 0)] * quantity, 0)
    cart_cents = np.bincount(session, weights=add_value, minlength=n_s).round().astype(np.int64)

    # Pages: home, sale (bargain hunters love it), search, or a category.
    is_bargain = segment[session] == _segments.SEGMENT_NAMES.index("bargain_hunters")
    u = rng.random(n_e)
    sale_cut = np.where(is_bargain, 0.80, 0.55)
    category_page = 3 + np.where(
        rng.random(n_e) < 0.7,
        people.favourite[customer],
        rng.integers(0, len(catalog.category_size), n_e),
    )
    page = np.select([u < 0.45, u < sale_cut, u < sale_cut + 0.1], [0, 1, 2], category_page)

    # Clock skew per device, send and receive delays.
    n_people = len(people)
    skewed = rng.random((n_people, 2)) < SKEWED_DEVICE_SHARE
    skew = np.where(skewed, -rng.integers(5_000, 900_000, (n_people, 2)), 0)[customer, device]
    send_delay = rng.integers(0, np.where(device == APP, 60_000, 10_000))
    latency = rng.integers(50, 1_500, n_e)
    return Drawn(
        kind=kind,
        customer=customer,
        device=device,
        anonymous=s.anonymous[session],
        true_ms=true_ms,
        timestamp_ms=true_ms + skew,
        sent_ms=true_ms + send_delay + skew,
        received_ms=true_ms + send_delay + latency,
        product=product,
        quantity=quantity,
        page=np.where(kind == PAGE, page, -1),
        order=np.where((kind == CHECKOUT) | (kind == COMPLETED), order, -1),
        cart_cents=np.where((kind == CHECKOUT) & ~purchase, cart_cents[session], 0),
        campaign=np.full(n_e, -1),
    )


def campaigns(clock: Clock) -> np.ndarray:
    """Send times (s) of the e-mail campaigns, newest first."""
    first = clock.end_s - 3 * DAY_S + 9 * 3600
    count = CAMPAIGN_HISTORY_DAYS // CAMPAIGN_EVERY_DAYS
    sent = first - np.arange(count, dtype=np.int64) * CAMPAIGN_EVERY_DAYS * DAY_S
    return sent[sent > clock.start_s]


def _email_events(
    rng: np.random.Generator, people: People, consents: Consents, clock: Clock
) -> Drawn:
    """Campaign deliveries to consenting customers, and the opens."""
    n = len(people)
    campaign_s = campaigns(clock)
    k = len(campaign_s)
    customer = np.repeat(np.arange(n), k)
    campaign = np.tile(np.arange(k), n)
    at_s = campaign_s[campaign]
    granted = consents.state_at(customer, at_s)[:, EMAIL]
    delivered = granted & (people.signup_s[customer] < at_s)
    customer, campaign = customer[delivered], campaign[delivered]
    delivered_ms = campaign_s[campaign] * 1000 + rng.integers(0, 45 * 60_000, len(customer))
    opened = rng.random(len(customer)) < people.email_open[customer]
    delay = np.minimum(rng.exponential(5 * 3_600_000, len(customer)), 9 * DAY_S * 1000)
    opened_ms = delivered_ms + delay.astype(np.int64)
    opened &= opened_ms < (clock.end_s - 120) * 1000
    n_opened = int(opened.sum())
    customer = np.concatenate([customer, customer[opened]])
    campaign = np.concatenate([campaign, campaign[opened]])
    true_ms = np.concatenate([delivered_ms, opened_ms[opened]])
    m = len(true_ms)
    kind = np.concatenate([np.full(m - n_opened, DELIVERED), np.full(n_opened, OPENED)])
    sent_ms = true_ms + rng.integers(1_000, 30_000, m)
    none = np.full(m, -1)
    return Drawn(
        kind=kind,
        customer=customer,
        device=np.full(m, SERVER),
        anonymous=np.zeros(m, dtype=bool),
        true_ms=true_ms,
        timestamp_ms=true_ms,
        sent_ms=sent_ms,
        received_ms=sent_ms + rng.integers(50, 500, m),
        product=none,
        quantity=np.ones(m, dtype=np.int64),
        page=none,
        order=none,
        cart_cents=np.zeros(m, dtype=np.int64),
        campaign=campaign,
    )


@dataclass
class _Sessions:
    customer: np.ndarray
    device: np.ndarray
    anonymous: np.ndarray
    purchase: np.ndarray  # bool
    order: np.ndarray  # order index for purchase sessions, -1 otherwise
    anchor_ms: np.ndarray  # start of a browse session, end of a purchase session


def _sessions(rng: np.random.Generator, people: People, orders: Orders, clock: Clock) -> _Sessions:
    """A purchase session per web/app order and browse sessions timed by segment."""
    online = np.flatnonzero(orders.channel < 2)
    p_customer = orders.customer[online]
    p_anchor = orders.at_s[online] * 1000 + rng.integers(0, 1000, len(online))

    segment = people.segment
    mean = _segments.column("browse_sessions")[segment] * rng.gamma(4.0, 0.25, len(people))
    counts = np.maximum(rng.poisson(mean), _segments.column("browse_min")[segment].astype(np.int64))
    b_customer = np.repeat(np.arange(len(people)), counts)
    total = len(b_customer)
    first = people.first_active_s[b_customer].astype(np.float64)
    latest = float(clock.end_s - _SAFETY_S)
    uniform = first + rng.random(total) * (latest - first)
    active_from = np.maximum(first, latest - ACTIVE_WINDOW_DAYS * DAY_S)
    active = active_from + rng.random(total) * (latest - active_from)
    modes = np.array([s.browse_mode for s in _segments.SEGMENTS])[segment[b_customer]]
    recent = latest - rng.exponential(30.0 * DAY_S, total)
    recent = np.where(recent < first, uniform, recent)
    lapsed_end = np.minimum(people.last_order_s[b_customer] + 20.0 * DAY_S, latest)
    lapsed_end = np.maximum(lapsed_end, first)
    before = first + rng.random(total) * (lapsed_end - first)
    lately = np.maximum(latest - rng.random(total) * 90.0 * DAY_S, first)
    lapsed = np.where(rng.random(total) < 1 - LAPSED_RECENT_SHARE, before, lately)
    start_s = np.select([modes == "recent", modes == "lapsed"], [recent, lapsed], active)
    b_anchor = (start_s * 1000).astype(np.int64)
    b_device = (rng.random(total) < people.app_share[b_customer]).astype(np.int64)

    n_p = len(online)
    return _Sessions(
        customer=np.concatenate([p_customer, b_customer]),
        device=np.concatenate([orders.channel[online], b_device]),
        anonymous=np.concatenate([np.zeros(n_p, bool), rng.random(total) < ANONYMOUS_SHARE]),
        purchase=np.concatenate([np.ones(n_p, bool), np.zeros(total, bool)]),
        order=np.concatenate([online, np.full(total, -1)]),
        anchor_ms=np.concatenate([p_anchor, b_anchor]),
    )


def _first_identified(s: _Sessions) -> np.ndarray:
    """True for the first identified session of each customer on each device."""
    known = np.flatnonzero(~s.anonymous)
    order = known[np.lexsort((s.anchor_ms[known], s.device[known], s.customer[known]))]
    key = s.customer[order] * 2 + s.device[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    out = np.zeros(len(s.customer), dtype=bool)
    out[order[first]] = True
    return out
