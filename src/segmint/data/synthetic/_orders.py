"""Orders and order lines, with amounts that add up to their lines in cents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from segmint.data.synthetic import _segments, _text
from segmint.data.synthetic._catalog import Catalog
from segmint.data.synthetic._people import People

CHANNELS: tuple[str, ...] = ("web", "app", "store")
STATUSES: tuple[str, ...] = ("completed", "returned", "cancelled")
STATUS_WEIGHTS = np.array([0.92, 0.05, 0.03])
MAX_LINES = 8

#: Chance that a product comes from the customer's favourite category.
FAVOURITE_SHARE = 0.75


def order_ids(number: np.ndarray) -> pa.StringArray:
    """Order identifiers like ``O0000000042``."""
    return _text.padded_ids("O", number, 10)


@dataclass
class Orders:
    """Orders of one chunk (sorted by customer, then time) and their lines."""

    number: np.ndarray  # global order number, 1-based
    customer: np.ndarray  # index into the chunk's People
    at_s: np.ndarray
    channel: np.ndarray
    status: np.ndarray
    discount_cents: np.ndarray
    amount_cents: np.ndarray
    line_start: np.ndarray  # index of the order's first line
    line_count: np.ndarray
    # lines
    line_order: np.ndarray  # index into the orders above
    line_no: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    unit_price_cents: np.ndarray
    line_discount_cents: np.ndarray

    def __len__(self) -> int:
        return len(self.number)


def sample_products(
    rng: np.random.Generator, catalog: Catalog, people: People, customer: np.ndarray
) -> np.ndarray:
    """Products a customer would look at or buy: favourite category, own price level."""
    n = len(customer)
    other = rng.choice(len(catalog.category_weight), size=n, p=catalog.category_weight)
    category = np.where(rng.random(n) < FAVOURITE_SHARE, people.favourite[customer], other)
    quantile = np.clip(people.price_quantile[customer] + rng.normal(0.0, 0.12, n), 0.0, 0.999)
    return catalog.sample(rng, category, quantile)


def draw_orders(
    rng: np.random.Generator, people: People, catalog: Catalog, first_number: int
) -> Orders:
    """Draw every order of the chunk's customers, numbered from ``first_number``."""
    counts = people.n_orders
    total = int(counts.sum())
    customer = np.repeat(np.arange(len(people)), counts)
    starts = np.cumsum(counts) - counts
    position = np.arange(total) - np.repeat(starts, counts)
    first = people.first_active_s[customer]
    last = people.last_order_s[customer]
    spread = first + (rng.random(total) * (last - first)).astype(np.int64)
    at_s = np.where(position == 0, last, spread)
    order = np.lexsort((at_s, customer))
    customer, at_s = customer[order], at_s[order]

    segment = people.segment[customer]
    profiles = _segments.SEGMENTS
    web = np.array([p.channel[0] for p in profiles])[segment]
    app = np.array([p.channel[1] for p in profiles])[segment]
    u = rng.random(total)
    channel = (u >= web).astype(np.int64) + (u >= web + app)
    status = rng.choice(len(STATUSES), size=total, p=STATUS_WEIGHTS)

    lines = np.minimum(1 + rng.poisson(_segments.column("lines_extra")[segment]), MAX_LINES)
    discounted = rng.random(total) < _segments.column("discount_prob")[segment]
    low = np.array([p.discount_rate[0] for p in profiles])[segment]
    high = np.array([p.discount_rate[1] for p in profiles])[segment]
    rate = np.where(discounted, low + rng.random(total) * (high - low), 0.0)

    n_lines = int(lines.sum())
    line_order = np.repeat(np.arange(total), lines)
    line_start = (np.cumsum(lines) - lines).astype(np.int64)
    line_no = np.arange(n_lines) - line_start[line_order] + 1
    product = sample_products(rng, catalog, people, customer[line_order])
    q = rng.random(n_lines)
    quantity = 1 + (q < 0.15).astype(np.int64) + (q < 0.04)
    unit_price = catalog.price_cents[product]
    line_discount = np.round(quantity * unit_price * rate[line_order]).astype(np.int64)
    net = quantity * unit_price - line_discount
    amount = np.bincount(line_order, weights=net, minlength=total).round().astype(np.int64)
    discount = np.bincount(line_order, weights=line_discount, minlength=total)

    return Orders(
        number=np.arange(first_number, first_number + total, dtype=np.int64),
        customer=customer,
        at_s=at_s,
        channel=channel,
        status=status,
        discount_cents=discount.round().astype(np.int64),
        amount_cents=amount,
        line_start=line_start,
        line_count=lines,
        line_order=line_order,
        line_no=line_no,
        product=product,
        quantity=quantity,
        unit_price_cents=unit_price,
        line_discount_cents=line_discount,
    )
