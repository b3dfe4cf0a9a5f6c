"""Rendering drawn events as Segment messages: ids, properties, context, traits.

Text is assembled element-wise from small tables (one JSON fragment per product,
order, page, campaign, device or consent combination), so no per-event Python
runs and no large string array is shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segmint.data.synthetic import _text
from segmint.data.synthetic._catalog import SHOP_URL, Catalog
from segmint.data.synthetic._clock import DAY_S, Clock
from segmint.data.synthetic._consents import PURPOSES, Consents
from segmint.data.synthetic._events import (
    ADDED,
    CHECKOUT,
    COMPLETED,
    IDENTIFY,
    KIND_EVENT,
    KIND_TYPE,
    PAGE,
    SERVER,
    VIEWED,
    Drawn,
    campaigns,
)
from segmint.data.synthetic._names import COUNTRIES, CURRENCY
from segmint.data.synthetic._orders import Orders, order_ids
from segmint.data.synthetic._people import People

_LOCALES = {
    "DE": "de-DE",
    "FR": "fr-FR",
    "GB": "en-GB",
    "NL": "nl-NL",
    "ES": "es-ES",
    "IT": "it-IT",
    "AT": "de-AT",
    "BE": "fr-BE",
    "CH": "de-CH",
    "US": "en-US",
    "IE": "en-IE",
}
_WEB_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
)
_APP_AGENTS = (
    ("ios", "SegmintShop/4.2.1 (iPhone; iOS 17.4.1; Scale/3.00)", "analytics-ios", "4.1.8"),
    ("android", "SegmintShop/4.2.0 (Linux; Android 14; SM-S911B)", "analytics-android", "4.11.3"),
)
_SERVER_CONTEXT = '"library":{"name":"analytics-python","version":"2.3.2"}'
_IP_FIRST_OCTETS = np.array([23, 31, 46, 62, 77, 81, 84, 91, 93, 109, 151, 176, 185, 188, 212, 217])


@dataclass
class Events:
    """One chunk of rendered events, sorted by ``receivedAt``; times in ms since the epoch."""

    message_id: pa.StringArray
    kind: np.ndarray
    customer: np.ndarray  # index into the chunk's People
    user_id: pa.Array
    anonymous_id: pa.Array
    timestamp_ms: np.ndarray
    sent_ms: np.ndarray
    received_ms: np.ndarray
    properties: pa.StringArray
    context: pa.StringArray
    traits: pa.Array

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def type(self) -> pa.Array:
        return _text.pick(pa.array(KIND_TYPE), self.kind)

    @property
    def event(self) -> pa.Array:
        return _text.pick(pa.array(KIND_EVENT, pa.string()), self.kind)


def _with_sentinel(table: pa.Array, index: np.ndarray, fill: str | None = "") -> pa.Array:
    """``table[index]``, with ``fill`` where ``index`` is -1."""
    extended = pa.concat_arrays([table.cast(pa.string()), pa.array([fill], pa.string())])
    return _text.pick(extended, np.where(index < 0, len(table), index))


def _pages(catalog: Catalog) -> pa.StringArray:
    """Property objects of page views: Home, Sale, Search, then one per category."""
    fixed = [
        ("Home", "/", "Home"),
        ("Sale", "/sale", "Sale"),
        ("Search", "/search", "Search results"),
    ]
    texts = [
        f'{{"name":"{name}","path":"{path}","url":"{SHOP_URL}{path}","title":"{title}"}}'
        for name, path, title in fixed
    ]
    for name, slug in zip(
        catalog.category_names.to_pylist(), catalog.category_slugs.to_pylist(), strict=True
    ):
        texts.append(
            f'{{"name":"Category","category":"{name}","path":"/c/{slug}",'
            f'"url":"{SHOP_URL}/c/{slug}","title":"{name}"}}'
        )
    return pa.array(texts)


def _consent_objects() -> pa.StringArray:
    """``,"consent":{...}`` for each of the 16 combinations of the four purposes."""
    texts = []
    for code in range(2 ** len(PURPOSES)):
        prefs = ",".join(
            f'"{p}":{"true" if code >> j & 1 else "false"}' for j, p in enumerate(PURPOSES)
        )
        texts.append(f',"consent":{{"categoryPreferences":{{{prefs}}}}}')
    return pa.array(texts)


def _device_contexts(rng: np.random.Generator, people: People) -> pa.StringArray:
    """Context fragments per customer and device (index ``2 * customer + device``)."""
    n = len(people)
    locales = pa.array([_LOCALES[c.alpha2] for c in COUNTRIES])
    locale = _text.pick(locales, people.country)

    def ip() -> pa.Array:
        octets = [_text.number_strings(_IP_FIRST_OCTETS[rng.integers(0, len(_IP_FIRST_OCTETS), n)])]
        octets += [_text.number_strings(rng.integers(0, 256, n)) for _ in range(2)]
        octets.append(_text.number_strings(rng.integers(1, 255, n)))
        return pc.binary_join_element_wise(*octets, ".")

    web_agent = _text.pick(pa.array(_WEB_AGENTS), rng.integers(0, len(_WEB_AGENTS), n))
    web = _text.join(
        '"ip":"',
        ip(),
        '","locale":"',
        locale,
        '","userAgent":"',
        web_agent,
        '","library":{"name":"analytics.js","version":"2.11.1"}',
    )
    platform = rng.integers(0, len(_APP_AGENTS), n)

    def pick(field: int) -> pa.Array:
        return _text.pick(pa.array([agent[field] for agent in _APP_AGENTS]), platform)

    app = _text.join(
        '"ip":"',
        ip(),
        '","locale":"',
        locale,
        '","userAgent":"',
        pick(1),
        '","library":{"name":"',
        pick(2),
        '","version":"',
        pick(3),
        '"},"app":{"name":"Segmint Shop","build":"4210"},"device":{"type":"',
        pick(0),
        '"}',
    )
    both = pa.concat_arrays([web, app])
    interleave = np.empty(2 * n, dtype=np.int64)
    interleave[0::2] = np.arange(n)
    interleave[1::2] = n + np.arange(n)
    return both.take(pa.array(interleave))


def _traits(people: People) -> pa.StringArray:
    return _text.join(
        '{"email":"',
        people.email,
        '","firstName":"',
        people.first_name,
        '","lastName":"',
        people.last_name,
        '","phone":"',
        people.phone_e164,
        '","createdAt":"',
        _text.iso_timestamps(people.signup_s * 1000),
        '"}',
    )


def _campaign_properties(clock: Clock) -> pa.StringArray:
    day = _text.dates(campaigns(clock) // DAY_S)
    return _text.join(
        '{"campaign_id":"cmp-',
        pc.replace_substring(day, "-", ""),
        '","campaign_name":"Newsletter ',
        day,
        '","email_subject":"New in this week"}',
    )


def _properties(d: Drawn, orders: Orders, catalog: Catalog, clock: Clock) -> pa.Array:
    """Properties objects: each event picks one whole object from a table of them."""
    order_id = order_ids(orders.number)
    amount = _text.number_strings(_text.money(orders.amount_cents))
    completed = _text.join(
        '{"order_id":"',
        order_id,
        '","total":',
        amount,
        ',"revenue":',
        amount,
        ',"discount":',
        _text.number_strings(_text.money(orders.discount_cents)),
        ',"currency":"' + CURRENCY + '"}',
    )
    checkout = _text.join(
        '{"order_id":"', order_id, '","value":', amount, ',"currency":"' + CURRENCY + '"}'
    )
    abandoned_rows = np.flatnonzero((d.kind == CHECKOUT) & (d.order < 0))
    abandoned = _text.join(
        '{"value":',
        _text.number_strings(_text.money(d.cart_cents[abandoned_rows])),
        ',"currency":"' + CURRENCY + '"}',
    )
    n_products = len(catalog.json_fragment)
    most = int(d.quantity.max(initial=1))
    viewed = _text.join("{", catalog.json_fragment, "}")
    added = pa.concat_arrays(
        [_text.join("{", catalog.json_fragment, f',"quantity":{q}}}') for q in range(1, most + 1)]
    )
    pages = _pages(catalog)
    campaign = _campaign_properties(clock)
    tables = [viewed, added, pages, completed, checkout, campaign, abandoned, pa.array(["{}"])]
    starts = np.cumsum([0] + [len(t) for t in tables])
    at = dict(
        zip(
            ("viewed", "added", "pages", "completed", "checkout", "campaign", "abandoned", "empty"),
            starts[:-1],
            strict=True,
        )
    )
    index = np.full(len(d), at["empty"])
    product = np.maximum(d.product, 0)
    index = np.where(d.kind == VIEWED, at["viewed"] + product, index)
    index = np.where(d.kind == ADDED, at["added"] + (d.quantity - 1) * n_products + product, index)
    index = np.where(d.kind == PAGE, at["pages"] + d.page, index)
    index = np.where(d.kind == COMPLETED, at["completed"] + d.order, index)
    index = np.where((d.kind == CHECKOUT) & (d.order >= 0), at["checkout"] + d.order, index)
    index = np.where(d.campaign >= 0, at["campaign"] + d.campaign, index)
    index[abandoned_rows] = at["abandoned"] + np.arange(len(abandoned_rows))
    return _text.pick(pa.concat_arrays(tables), index)


def _contexts(rng: np.random.Generator, d: Drawn, people: People, consents: Consents) -> pa.Array:
    """Context objects: the device's fields plus, where a consent manager runs, the
    consent preferences in force at the time. Built once per distinct combination."""
    n_people = len(people)
    slot = np.where(d.device == SERVER, 2 * n_people, d.customer * 2 + np.minimum(d.device, 1))
    state = consents.state_at(d.customer, d.true_ms // 1000)
    code = (state * (1 << np.arange(len(PURPOSES)))).sum(axis=1)
    options = 2 ** len(PURPOSES)
    code = np.where(people.consent_manager[d.customer] & (d.device != SERVER), code, options)
    combos, inverse = np.unique(slot * (options + 1) + code, return_inverse=True)
    devices = pa.concat_arrays([_device_contexts(rng, people), pa.array([_SERVER_CONTEXT])])
    consent = pa.concat_arrays([_consent_objects(), pa.array([""])])
    table = _text.join(
        "{",
        _text.pick(devices, combos // (options + 1)),
        _text.pick(consent, combos % (options + 1)),
        "}",
    )
    return _text.pick(table, inverse.reshape(-1))


def render_events(
    rng: np.random.Generator,
    d: Drawn,
    people: People,
    orders: Orders,
    consents: Consents,
    catalog: Catalog,
    clock: Clock,
) -> Events:
    """Turn drawn events into Segment messages: ids, JSON properties, context, traits."""
    device_slot = np.where(d.device == SERVER, -1, d.customer * 2 + np.minimum(d.device, 1))
    anonymous_ids = _text.uuid4s(rng, 2 * len(people))
    return Events(
        message_id=_text.uuid4s(rng, len(d)),
        kind=d.kind,
        customer=d.customer,
        user_id=_with_sentinel(people.customer_id, np.where(d.anonymous, -1, d.customer), None),
        anonymous_id=_with_sentinel(anonymous_ids, device_slot, None),
        timestamp_ms=d.timestamp_ms,
        sent_ms=d.sent_ms,
        received_ms=d.received_ms,
        properties=_properties(d, orders, catalog, clock),
        context=_contexts(rng, d, people, consents),
        traits=_with_sentinel(_traits(people), np.where(d.kind == IDENTIFY, d.customer, -1), None),
    )
