"""Synthetic retail data with planted segments and known dirt.

:func:`generate` writes a complete, realistic data set for one online and
in-store retailer: a CRM export, a product catalogue, orders and order lines,
Segment-spec behavioural events, consent history, and the answers (which
segment each customer was drawn from, and which CRM records are duplicates of
which). It is used for tests, demos and benchmarks, and to measure how well
segmint recovers the planted structure.

Planted segments
----------------
Each original customer belongs to one of six segments (share of customers in
brackets), separable on RFM and engagement features (recency, order count,
monetary value, average order value, discount share, sessions, product views,
cart adds, e-mail open rate, days since the last visit):

``champions`` (8 %)
    About 40 orders over two years (at least 24), last order within days,
    dear products (median order value about 270 EUR, highest total spend),
    few coupons, open about half of the e-mails.
``loyal`` (22 %)
    About 10 orders (at least 7), last order within a few weeks (at most
    80 days), mid-range products (median order value about 85 EUR), regular
    visits.
``big_spenders_at_risk`` (10 %)
    About 4 orders of the dearest products (highest average order value,
    median about 330 EUR), last order 4-9 months ago, hardly any visits
    since, rarely open e-mails.
``new`` (12 %)
    Signed up in the last 45 days; one or two orders, half with a welcome
    coupon.
``bargain_hunters`` (20 %)
    About 20 small orders (at least 10) of cheap products, 85 % with a
    20-45 % coupon (highest discount share), many sale-page views.
``dormant_browsers`` (28 %)
    Several recent sessions with many product views and some cart adds, but
    98 % never ordered (the rest once, long ago); rarely open e-mails.

Overall a customer has about 10 orders (1.6 lines each) and 55 events. With
log-scaled, standardised RFM and engagement features, k-means with k=6
recovers the planted segments with an adjusted Rand index of about 0.94-0.96
(the tests require at least 0.9). Segment parameters are in
``segmint.data.synthetic._segments``.

Dirt
----
With ``dirty=True`` the defects of :class:`DirtRates` are injected at its
rates (defaults: missing e-mail 3 %, missing phone 10 %, missing age 5 %,
duplicate customers 2 %, exact duplicate rows 0.5 %, impossible age 0.5 %,
negative amount 0.2 %, future timestamp 0.1 %, malformed lines 0.05 %). Every
defect is counted in ``GeneratedData.dirt`` and ``manifest.json`` (also per
file). Rates are fractions of the rows a defect can hit: customer rows
(duplicate records included) for the customer defects, original customers for
duplicates, customer and order rows for exact copies, order rows and event rows
for future timestamps, text lines for malformed lines. Defects are applied
before exact copies are made, so a copied row carries its defect twice but is
counted once. A duplicate CRM record never lacks its e-mail, and store orders
placed after it was created are booked on it. Malformed lines are extra,
broken copies of real lines (Parquet output has none). Phones come
in E.164, international, national and ``00``-prefixed forms, countries as
alpha-2 codes and sometimes as names or alpha-3 codes, e-mails sometimes
capitalised: these are normal variety to normalise, not counted as dirt.

Files
-----
``customers``
    customer_id, email, phone, first_name, last_name, birth_date (YYYY-MM-DD),
    age, gender, street, city, postcode, country, signup_at, updated_at,
    loyalty_id, income. Duplicate CRM records are extra rows.
``products``
    product_id, name, category (10 categories), brand, price.
``orders``
    order_id, customer_id, ordered_at, amount, currency (EUR), discount,
    channel (web, app, store), status (completed, returned, cancelled).
    ``amount`` is the sum of ``quantity * unit_price - discount`` over the
    order's lines (except injected negative amounts, which have the sign
    flipped) and ``discount`` the sum of the line discounts.
``order_items``
    order_id, line_no, product_id, quantity, unit_price, discount.
``events``
    Segment spec messages (sorted by receivedAt within each chunk of
    customers): messageId, type (track, page, identify), event
    (``Product Viewed``, ``Product Added``, ``Checkout Started``,
    ``Order Completed``, ``Email Delivered``, ``Email Opened``), userId (the
    customer_id; absent on anonymous sessions), anonymousId (device id;
    absent on e-mail events), timestamp, sentAt, receivedAt (ISO 8601 with
    ``Z``), properties, context (ip, userAgent, locale, library, sometimes
    consent.categoryPreferences), traits (identify only). Each web or app
    order has an ``Order Completed`` event with its order_id at its time.
    About 6 % of browse sessions are anonymous (stitched by an earlier
    ``identify`` on the same device) and 3 % of devices run a slow clock
    (``receivedAt - (sentAt - timestamp)`` gives the true time).
    CSV output writes ``events.jsonl`` (one object per line, absent keys
    omitted); Parquet output writes ``events.parquet`` with properties,
    context and traits as JSON text.
``consents``
    customer_id, purpose (analytics, personalization, email_marketing,
    advertising), granted, at, source (web_form, app, crm): a choice per
    purpose at signup, some changed later.
``truth.csv``
    customer_id, segment: the planted segment of every original customer.
``duplicates.csv``
    duplicate_customer_id, original_customer_id.
``manifest.json``
    Seed, arguments, history window, row counts, dirt rates and counts (also
    per file), segment shares and sizes.

CSV timestamps are ``YYYY-MM-DD HH:MM:SS`` in UTC; Parquet timestamps are
typed (UTC). Everything happens before ``end`` except injected future
timestamps. Output is deterministic: the same arguments give byte-identical
files. Data is drawn and written in chunks of customers, so memory stays
bounded whatever the size.

Examples
--------
>>> import tempfile
>>> from segmint.data.synthetic import generate
>>> data = generate(tempfile.mkdtemp(), customers=500, seed=7, fmt="parquet")
>>> data.counts["truth"]
500
"""

from __future__ import annotations

from segmint.data.synthetic._dirt import DirtRates
from segmint.data.synthetic._generate import GeneratedData, generate
from segmint.data.synthetic._segments import SEGMENT_NAMES, SEGMENTS, SegmentProfile

__all__ = ["SEGMENTS", "SEGMENT_NAMES", "DirtRates", "GeneratedData", "SegmentProfile", "generate"]
