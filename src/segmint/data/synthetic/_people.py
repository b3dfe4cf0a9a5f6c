"""Customers: identity, demographics and the behaviour parameters of their segment."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segmint.data.synthetic import _phones, _segments, _text
from segmint.data.synthetic._catalog import Catalog
from segmint.data.synthetic._clock import DAY_S, Clock
from segmint.data.synthetic._names import (
    COUNTRIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    ascii_slug,
)

LANGUAGES: tuple[str, ...] = tuple(FIRST_NAMES)

# Multipliers of affine permutations: coprime with 10, so ``(a * i + b) mod 10**k``
# gives distinct values for distinct customer numbers below ``10**k``.
_PHONE_MULTIPLIER = 741_457
_EMAIL_MULTIPLIER = 3_162_277
_LOYALTY_MULTIPLIER = 7_919_004_133


@dataclass(frozen=True)
class _Lists:
    first: pa.StringArray
    first_slug: pa.StringArray
    first_start: np.ndarray  # (language, gender) -> first index
    first_size: np.ndarray
    last: pa.StringArray
    last_slug: pa.StringArray
    last_start: np.ndarray
    last_size: np.ndarray
    city: pa.StringArray
    city_postcode: pa.StringArray
    city_start: np.ndarray  # per country
    city_size: np.ndarray
    street: pa.StringArray
    street_start: np.ndarray
    street_size: np.ndarray
    country_alpha2: pa.StringArray
    country_alpha3: pa.StringArray
    country_name: pa.StringArray
    country_language: np.ndarray
    country_weight: np.ndarray


@functools.cache
def _lists() -> _Lists:
    first: list[str] = []
    first_start = np.zeros((len(LANGUAGES), 2), dtype=np.int64)
    first_size = np.zeros((len(LANGUAGES), 2), dtype=np.int64)
    last: list[str] = []
    last_start = np.zeros(len(LANGUAGES), dtype=np.int64)
    last_size = np.zeros(len(LANGUAGES), dtype=np.int64)
    for li, language in enumerate(LANGUAGES):
        for gi, names in enumerate(FIRST_NAMES[language]):
            first_start[li, gi], first_size[li, gi] = len(first), len(names)
            first.extend(names)
        last_start[li], last_size[li] = len(last), len(LAST_NAMES[language])
        last.extend(LAST_NAMES[language])
    cities: list[tuple[str, str]] = []
    streets: list[str] = []
    city_start, city_size, street_start, street_size = ([] for _ in range(4))
    for country in COUNTRIES:
        city_start.append(len(cities))
        city_size.append(len(country.cities))
        cities.extend(country.cities)
        street_start.append(len(streets))
        street_size.append(len(country.streets))
        streets.extend(country.streets)
    weight = np.array([c.weight for c in COUNTRIES])
    return _Lists(
        first=pa.array(first),
        first_slug=pa.array([ascii_slug(n) for n in first]),
        first_start=first_start,
        first_size=first_size,
        last=pa.array(last),
        last_slug=pa.array([ascii_slug(n) for n in last]),
        last_start=last_start,
        last_size=last_size,
        city=pa.array([c[0] for c in cities]),
        city_postcode=pa.array([c[1] for c in cities]),
        city_start=np.array(city_start),
        city_size=np.array(city_size),
        street=pa.array(streets),
        street_start=np.array(street_start),
        street_size=np.array(street_size),
        country_alpha2=pa.array([c.alpha2 for c in COUNTRIES]),
        country_alpha3=pa.array([c.alpha3 for c in COUNTRIES]),
        country_name=pa.array([c.name for c in COUNTRIES]),
        country_language=np.array([LANGUAGES.index(c.language) for c in COUNTRIES]),
        country_weight=weight / weight.sum(),
    )


@dataclass
class People:
    """One chunk of original customers: CRM fields and behaviour parameters.

    Times are seconds since the epoch (UTC); ``birth_day`` is days since the epoch.
    """

    number: np.ndarray  # global customer number, 0-based
    customer_id: pa.StringArray
    segment: np.ndarray
    country: np.ndarray
    first_name: pa.StringArray
    last_name: pa.StringArray
    email: pa.StringArray  # clean (lower-case) address
    email_crm: pa.StringArray  # as typed into the CRM (sometimes capitalised)
    phone_range: np.ndarray
    phone_form: np.ndarray
    phone_free: np.ndarray
    phone: pa.StringArray
    phone_e164: pa.StringArray
    birth_day: np.ndarray
    age: np.ndarray
    gender: pa.Array
    street: pa.StringArray
    city: pa.StringArray
    postcode: pa.StringArray
    country_text: pa.StringArray
    signup_s: np.ndarray
    updated_s: np.ndarray
    loyalty_id: pa.Array
    income: pa.Array
    # behaviour
    n_orders: np.ndarray
    first_active_s: np.ndarray
    last_order_s: np.ndarray
    price_quantile: np.ndarray
    favourite: np.ndarray
    app_share: np.ndarray  # share of online activity in the app
    email_open: np.ndarray
    consent_manager: np.ndarray  # their site sessions carry a consent object

    def __len__(self) -> int:
        return len(self.number)


def _affine(number: np.ndarray, multiplier: int, offset: int, modulus: int) -> np.ndarray:
    """A permutation of ``0 .. modulus - 1`` applied to customer numbers."""
    return (number * (multiplier % modulus) + offset % modulus) % modulus


def _postcodes(rng: np.random.Generator, country: np.ndarray, city: np.ndarray) -> pa.Array:
    lists = _lists()
    n = len(country)
    order = np.argsort(country, kind="stable")
    pieces: list[pa.Array] = []
    bounds = np.flatnonzero(np.diff(country[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows) == 0:
            continue
        pattern = COUNTRIES[int(country[rows[0]])].postcode
        matrix = np.empty((len(rows), len(pattern)), dtype=np.uint8)
        for j, ch in enumerate(pattern):
            if ch == "9":
                matrix[:, j] = rng.integers(ord("0"), ord("9") + 1, len(rows))
            elif ch == "A":
                matrix[:, j] = rng.integers(ord("A"), ord("Z") + 1, len(rows))
            else:
                matrix[:, j] = ord(ch)
        pieces.append(_text.from_fixed_width(matrix))
    rest = pa.concat_arrays(pieces) if pieces else pa.array([], pa.string())
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return _text.join(_text.pick(lists.city_postcode, city), rest.take(pa.array(inverse)))


def _ages(birth_day: np.ndarray, end_day: int) -> np.ndarray:
    """Completed years of life on ``end_day``."""
    by, bm, bd = _text._civil(birth_day)
    ey, em, ed = _text._civil(np.array([end_day]))
    before_birthday = (em[0] < bm) | ((em[0] == bm) & (ed[0] < bd))
    return (ey[0] - by - before_birthday).astype(np.int64)


def _emails(
    rng: np.random.Generator,
    number: np.ndarray,
    first_slug: pa.Array,
    last_slug: pa.Array,
    email_offset: int,
) -> pa.StringArray:
    n = len(number)
    code = _text.number_strings(_affine(number, _EMAIL_MULTIPLIER, email_offset, 10**7))
    style = rng.integers(0, 5, n)
    initial = pc.utf8_slice_codeunits(first_slug, 0, 1)
    head = _text.where(style == 2, initial, first_slug)
    swap = style == 4
    part_a = _text.where(swap, last_slug, head)
    part_b = _text.where(swap, first_slug, last_slug)
    separator = pa.array(np.array([".", "", "", "_", "."])[style])
    domain = pa.array(np.array(EMAIL_DOMAINS)[rng.integers(0, len(EMAIL_DOMAINS), n)])
    return _text.join(part_a, separator, part_b, code, "@", domain)


def draw_people(
    rng: np.random.Generator,
    first_number: int,
    n: int,
    clock: Clock,
    catalog: Catalog,
    *,
    id_width: int,
    salts: np.ndarray,
) -> People:
    """Draw ``n`` original customers numbered from ``first_number``.

    ``salts`` (three integers drawn once per data set) shift the permutations
    that make e-mails, phone numbers and loyalty numbers unique.
    """
    number = np.arange(first_number, first_number + n, dtype=np.int64)
    segment = _segments.assign(rng, n)
    country = rng.choice(len(COUNTRIES), size=n, p=_lists().country_weight)
    gender_code = (rng.random(n) < 0.47).astype(np.int64)  # 0 female, 1 male
    return People(
        number=number,
        customer_id=_text.padded_ids("C", number + 1, id_width),
        segment=segment,
        country=country,
        **_identity(rng, number, country, gender_code, salts),
        **_demographics(rng, number, segment, country, gender_code, clock, salts),
        **_behaviour(rng, segment, clock, catalog),
    )


def _identity(
    rng: np.random.Generator,
    number: np.ndarray,
    country: np.ndarray,
    gender_code: np.ndarray,
    salts: np.ndarray,
) -> dict[str, Any]:
    """Names, e-mail addresses and phone numbers."""
    n = len(number)
    lists = _lists()
    language = lists.country_language[country]
    first_idx = lists.first_start[language, gender_code] + (
        rng.random(n) * lists.first_size[language, gender_code]
    ).astype(np.int64)
    # A tenth of customers carry a family name from another language area.
    last_language = np.where(rng.random(n) < 0.1, rng.integers(0, len(LANGUAGES), n), language)
    last_idx = lists.last_start[last_language] + (
        rng.random(n) * lists.last_size[last_language]
    ).astype(np.int64)
    email = _emails(
        rng,
        number,
        _text.pick(lists.first_slug, first_idx),
        _text.pick(lists.last_slug, last_idx),
        int(salts[0]),
    )
    capitalised = rng.random(n) < 0.05
    phone_range = _phones.choose_ranges(rng, country, mobile_share=0.8)
    phone_form = rng.choice(len(_phones.FORMATS), size=n, p=_phones.FORMAT_WEIGHTS)
    phone_free = _affine(number, _PHONE_MULTIPLIER, int(salts[1]), 10**_phones.FREE_DIGITS)
    return {
        "first_name": _text.pick(lists.first, first_idx),
        "last_name": _text.pick(lists.last, last_idx),
        "email": email,
        "email_crm": _text.where(capitalised, pc.utf8_capitalize(email), email),
        "phone_range": phone_range,
        "phone_form": phone_form,
        "phone_free": phone_free,
        "phone": _phones.render(phone_range, phone_form, phone_free),
        "phone_e164": _phones.render(phone_range, np.zeros(n, dtype=np.int64), phone_free),
    }


def _demographics(
    rng: np.random.Generator,
    number: np.ndarray,
    segment: np.ndarray,
    country: np.ndarray,
    gender_code: np.ndarray,
    clock: Clock,
    salts: np.ndarray,
) -> dict[str, Any]:
    """Birth date and age, gender, address, income and loyalty number."""
    n = len(number)
    lists = _lists()
    age_years = np.clip(
        rng.normal(_segments.column("age_mean")[segment], _segments.column("age_sd")[segment]),
        18,
        92,
    )
    birth_day = clock.end_day - np.floor(age_years * 365.2425).astype(np.int64)
    gender_draw = rng.random(n)
    gender_word = np.where(gender_code == 1, "male", "female")
    gender_word = np.where(rng.random(n) < 0.12, np.char.capitalize(gender_word), gender_word)
    gender_word = np.where(gender_draw < 0.015, "diverse", gender_word)

    city = lists.city_start[country] + (rng.random(n) * lists.city_size[country]).astype(np.int64)
    street_idx = lists.street_start[country] + (rng.random(n) * lists.street_size[country]).astype(
        np.int64
    )
    house = _text.number_strings(rng.integers(1, 180, n))
    street_name = _text.pick(lists.street, street_idx)
    number_first = np.array([c.number_first for c in COUNTRIES])[country]
    country_form = rng.random(n)
    country_text = _text.where(
        country_form < 0.85,
        _text.pick(lists.country_alpha2, country),
        _text.where(
            country_form < 0.95,
            _text.pick(lists.country_name, country),
            _text.pick(lists.country_alpha3, country),
        ),
    )
    income = np.round(
        _segments.column("income_median")[segment] * np.exp(rng.normal(0, 0.35, n)), -2
    )
    loyalty_number = _affine(number, _LOYALTY_MULTIPLIER, int(salts[2]), 10**10)
    return {
        "birth_day": birth_day,
        "age": _ages(birth_day, clock.end_day),
        "gender": pa.array(gender_word, mask=gender_draw > 0.96),
        "street": _text.where(
            number_first,
            _text.join(house, " ", street_name),
            _text.join(street_name, " ", house),
        ),
        "city": _text.pick(lists.city, city),
        "postcode": _postcodes(rng, country, city),
        "country_text": country_text,
        "income": pa.array(income, mask=rng.random(n) < 0.08),
        "loyalty_id": pc.if_else(
            pa.array(rng.random(n) < 0.7),
            _text.padded_ids("L", loyalty_number, 10),
            pa.scalar(None, pa.string()),
        ),
    }


def _behaviour(
    rng: np.random.Generator, segment: np.ndarray, clock: Clock, catalog: Catalog
) -> dict[str, Any]:
    """Signup, order count and timing, price level, tastes and engagement of each segment."""
    n = len(segment)
    seg = _segments.SEGMENTS
    history = clock.history_days
    tenure_low = np.array([s.tenure[0] for s in seg])[segment]
    tenure_high = np.array(
        [s.tenure[1] if s.tenure[1] is not None else history + 365.0 for s in seg]
    )[segment]
    tenure = tenure_low + rng.random(n) * (tenure_high - tenure_low)
    fresh = np.array([s.fresh for s in seg])[segment]

    orders_mean = _segments.column("orders_mean")[segment]
    shape = _segments.column("orders_shape")[segment]
    n_orders = rng.poisson(rng.gamma(shape, orders_mean / shape))
    n_orders = np.maximum(n_orders, _segments.column("orders_min")[segment].astype(np.int64))
    buyer = rng.random(n) < _segments.column("buyer_share")[segment]
    n_orders = np.where(fresh, 1 + (rng.random(n) < orders_mean - 1), n_orders)
    n_orders = np.where(buyer, n_orders, 0).astype(np.int64)

    low, high, scale = (np.array([s.recency[i] for s in seg])[segment] for i in range(3))
    high = np.minimum(high, history - 1.0)
    exponential = np.minimum(low + rng.exponential(1.0, n) * scale, high)
    uniform = low + rng.random(n) * (high - low)
    recency = np.where(scale > 0, exponential, uniform)
    # Established buyers signed up at least two months before their last order;
    # fresh customers ordered after signing up.
    tenure = np.where(fresh | (n_orders == 0), tenure, np.maximum(tenure, recency + 60.0))
    active_days = np.minimum(tenure, history)
    recency = np.where(fresh, rng.random(n) * tenure, np.minimum(recency, active_days - 1.0))
    recency = np.maximum(recency, 0.05)

    day_fraction = rng.random(n)
    signup_s = clock.end_s - np.round(tenure * DAY_S).astype(np.int64)
    signup_s = np.minimum(signup_s, clock.end_s - 3 * 3600)
    first_active_s = np.maximum(signup_s, clock.start_s)
    last_order_s = clock.end_s - np.round((recency + 0.02 * day_fraction) * DAY_S).astype(np.int64)
    last_order_s = np.clip(last_order_s, first_active_s + 60, clock.end_s - 3 * 3600)
    updated_s = signup_s + (rng.random(n) * (clock.end_s - 60 - signup_s)).astype(np.int64)

    favourite = rng.choice(len(catalog.category_weight), size=n, p=catalog.category_weight)
    for s_index, profile in enumerate(seg):
        if profile.categories is not None:
            rows = np.flatnonzero(segment == s_index)
            choice = rng.integers(0, len(profile.categories), len(rows))
            favourite[rows] = np.array(profile.categories)[choice]
    web, app, _store = (np.array([s.channel[i] for s in seg])[segment] for i in range(3))
    open_mean = _segments.column("email_open")[segment]
    concentration = 14.0
    return {
        "signup_s": signup_s,
        "updated_s": updated_s,
        "n_orders": n_orders,
        "first_active_s": first_active_s,
        "last_order_s": last_order_s,
        "price_quantile": np.clip(
            _segments.column("price_quantile")[segment] + rng.normal(0, 0.06, n), 0.01, 0.99
        ),
        "favourite": favourite,
        "app_share": np.divide(app, web + app, out=np.zeros(n), where=web + app > 0),
        "email_open": rng.beta(open_mean * concentration, (1 - open_mean) * concentration),
        "consent_manager": rng.random(n) < 0.5,
    }
