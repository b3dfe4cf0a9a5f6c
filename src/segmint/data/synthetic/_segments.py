"""The six planted segments and the behaviour parameters that define them.

Every customer is drawn from exactly one profile. Each number below is a centre;
customers vary around it (negative-binomial order counts, exponential or uniform
recency, per-customer noise on price level, discounting and open rate), so the
segments overlap at the edges like real ones but stay separable on RFM and
engagement features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BrowseMode = Literal["active", "recent", "lapsed"]


@dataclass(frozen=True)
class SegmentProfile:
    """Behaviour of one planted segment.

    Attributes
    ----------
    name, share, description
        Segment label written to ``truth.csv``, its expected share of customers,
        and one sentence for the manifest.
    orders_mean, orders_shape, orders_min
        Orders over the history: negative binomial with this mean and gamma
        shape (smaller shape = more spread), at least ``orders_min``.
        ``buyer_share`` is the share of customers with any order at all.
    recency
        ``(low, high, scale)`` in days between the last order and the end:
        ``low + Exponential(scale)`` capped at ``high``, or uniform on
        ``[low, high]`` when ``scale`` is 0.
    tenure
        ``(low, high)`` days between signup and the end; ``high`` of ``None``
        means one year before the history starts.
    fresh
        Signed up recently: every order falls after signup.
    price_quantile, lines_extra
        Price level within a category (0 cheapest, 1 dearest) and extra lines
        per order (``1 + Poisson(lines_extra)``).
    discount_prob, discount_rate
        Share of orders with a coupon and the coupon's rate range.
    channel
        Probabilities of web, app and store orders.
    browse_sessions, browse_min, browse_mode, views_per_browse, cart_add_prob
        Mean (and minimum) number of sessions without a purchase; when they happen
        (``active``: spread over the last five months of activity,
        ``recent``: mostly the last weeks, ``lapsed``: mostly before the last
        order); product views per such
        session; chance such a session adds to cart.
    email_consent, email_open
        Chance of opting in to e-mail marketing at signup and of opening a
        delivered campaign.
    categories
        Favourite category indices (``None``: any category).
    age_mean, age_sd, income_median
        Demographics (not used to plant the segment, but correlated with it).
    """

    name: str
    share: float
    description: str
    orders_mean: float
    orders_shape: float
    orders_min: int
    buyer_share: float
    recency: tuple[float, float, float]
    tenure: tuple[float, float | None]
    fresh: bool
    price_quantile: float
    lines_extra: float
    discount_prob: float
    discount_rate: tuple[float, float]
    channel: tuple[float, float, float]
    browse_sessions: float
    browse_min: int
    browse_mode: BrowseMode
    views_per_browse: float
    cart_add_prob: float
    email_consent: float
    email_open: float
    categories: tuple[int, ...] | None
    age_mean: float
    age_sd: float
    income_median: float


SEGMENTS: tuple[SegmentProfile, ...] = (
    SegmentProfile(
        name="champions",
        share=0.08,
        description="Recent, very frequent, high-spending customers.",
        orders_mean=40.0,
        orders_shape=10.0,
        orders_min=24,
        buyer_share=1.0,
        recency=(0.2, 30.0, 6.0),
        tenure=(400.0, None),
        fresh=False,
        price_quantile=0.80,
        lines_extra=1.1,
        discount_prob=0.06,
        discount_rate=(0.05, 0.10),
        channel=(0.35, 0.25, 0.40),
        browse_sessions=3.0,
        browse_min=0,
        browse_mode="active",
        views_per_browse=1.5,
        cart_add_prob=0.15,
        email_consent=0.80,
        email_open=0.60,
        categories=(0, 1, 2, 4),
        age_mean=42.0,
        age_sd=11.0,
        income_median=62_000.0,
    ),
    SegmentProfile(
        name="loyal",
        share=0.22,
        description="Regular customers with mid-range spend and moderate recency.",
        orders_mean=10.5,
        orders_shape=30.0,
        orders_min=7,
        buyer_share=1.0,
        recency=(3.0, 80.0, 18.0),
        tenure=(300.0, None),
        fresh=False,
        price_quantile=0.50,
        lines_extra=0.6,
        discount_prob=0.10,
        discount_rate=(0.05, 0.15),
        channel=(0.40, 0.20, 0.40),
        browse_sessions=3.0,
        browse_min=2,
        browse_mode="active",
        views_per_browse=1.5,
        cart_add_prob=0.15,
        email_consent=0.70,
        email_open=0.35,
        categories=(1, 2, 4, 5, 8),
        age_mean=47.0,
        age_sd=13.0,
        income_median=52_000.0,
    ),
    SegmentProfile(
        name="big_spenders_at_risk",
        share=0.10,
        description="High average order value, but the last order was 4-9 months ago "
        "and they rarely visit any more.",
        orders_mean=4.5,
        orders_shape=10.0,
        orders_min=2,
        buyer_share=1.0,
        recency=(122.0, 270.0, 0.0),
        tenure=(330.0, None),
        fresh=False,
        price_quantile=0.90,
        lines_extra=0.6,
        discount_prob=0.04,
        discount_rate=(0.05, 0.10),
        channel=(0.30, 0.10, 0.60),
        browse_sessions=2.0,
        browse_min=0,
        browse_mode="lapsed",
        views_per_browse=1.5,
        cart_add_prob=0.10,
        email_consent=0.55,
        email_open=0.10,
        categories=(0, 1, 4),
        age_mean=50.0,
        age_sd=12.0,
        income_median=88_000.0,
    ),
    SegmentProfile(
        name="new",
        share=0.12,
        description="Signed up in the last 45 days with one or two orders.",
        orders_mean=1.35,
        orders_shape=50.0,
        orders_min=1,
        buyer_share=1.0,
        recency=(0.0, 45.0, 0.0),
        tenure=(1.0, 45.0),
        fresh=True,
        price_quantile=0.45,
        lines_extra=0.5,
        discount_prob=0.50,
        discount_rate=(0.10, 0.10),
        channel=(0.60, 0.30, 0.10),
        browse_sessions=3.0,
        browse_min=1,
        browse_mode="active",
        views_per_browse=2.0,
        cart_add_prob=0.20,
        email_consent=0.65,
        email_open=0.45,
        categories=None,
        age_mean=31.0,
        age_sd=9.0,
        income_median=42_000.0,
    ),
    SegmentProfile(
        name="bargain_hunters",
        share=0.20,
        description="Frequent small orders, most of them with a coupon.",
        orders_mean=20.0,
        orders_shape=8.0,
        orders_min=10,
        buyer_share=1.0,
        recency=(0.5, 70.0, 12.0),
        tenure=(300.0, None),
        fresh=False,
        price_quantile=0.15,
        lines_extra=0.3,
        discount_prob=0.85,
        discount_rate=(0.20, 0.45),
        channel=(0.40, 0.20, 0.40),
        browse_sessions=2.0,
        browse_min=0,
        browse_mode="active",
        views_per_browse=2.0,
        cart_add_prob=0.20,
        email_consent=0.85,
        email_open=0.55,
        categories=(3, 6, 7, 9),
        age_mean=38.0,
        age_sd=12.0,
        income_median=38_000.0,
    ),
    SegmentProfile(
        name="dormant_browsers",
        share=0.28,
        description="Browse a lot, recently, but almost never buy.",
        orders_mean=1.0,
        orders_shape=50.0,
        orders_min=1,
        buyer_share=0.02,
        recency=(200.0, 10_000.0, 0.0),
        tenure=(60.0, None),
        fresh=False,
        price_quantile=0.50,
        lines_extra=0.3,
        discount_prob=0.20,
        discount_rate=(0.10, 0.20),
        channel=(0.50, 0.10, 0.40),
        browse_sessions=7.0,
        browse_min=2,
        browse_mode="recent",
        views_per_browse=3.5,
        cart_add_prob=0.30,
        email_consent=0.40,
        email_open=0.08,
        categories=None,
        age_mean=29.0,
        age_sd=8.0,
        income_median=35_000.0,
    ),
)

SEGMENT_NAMES: tuple[str, ...] = tuple(s.name for s in SEGMENTS)


def column(attribute: str) -> np.ndarray:
    """One parameter of every segment as an array indexed by segment number."""
    return np.array([getattr(s, attribute) for s in SEGMENTS], dtype=np.float64)


def assign(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw the segment number of ``n`` customers with the documented shares."""
    shares = column("share")
    return rng.choice(len(SEGMENTS), size=n, p=shares / shares.sum())
