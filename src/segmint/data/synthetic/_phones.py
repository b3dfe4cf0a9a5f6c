"""Phone numbers that are valid for their country, in varied written forms.

Each country has number ranges (a national-number prefix followed by six free
digits) that ``phonenumbers`` validates. For each range the four written forms
are computed once with ``phonenumbers`` on a sample number; every customer's
number is then that template with its six digits filled in, so formatting is
vectorised and matches what ``phonenumbers`` itself would print.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import phonenumbers
import pyarrow as pa

from segmint.data.synthetic import _text
from segmint.data.synthetic._names import COUNTRIES

#: Written forms: E.164, international, national, and international with the
#: ``00`` dialling prefix (``1-`` long-distance form in the US).
FORMATS: tuple[str, ...] = ("e164", "international", "national", "dialling")
FORMAT_WEIGHTS = np.array([0.35, 0.25, 0.30, 0.10])

FREE_DIGITS = 6
_SAMPLE = "987654"


@dataclass(frozen=True)
class PhoneRange:
    """One number range: country index, national prefix, and one template per form."""

    country: int
    prefix: str
    mobile: bool
    templates: tuple[np.ndarray, ...]  # uint8 bytes of each written form
    slots: tuple[np.ndarray, ...]  # positions of the free digits in each template


def _slots(text: str) -> np.ndarray:
    positions = [i for i, ch in enumerate(text) if ch.isdigit()][-FREE_DIGITS:]
    return np.array(positions, dtype=np.int64)


def _forms(alpha2: str, national: str) -> tuple[str, ...]:
    number = phonenumbers.parse(f"+{phonenumbers.country_code_for_region(alpha2)}{national}")
    fmt = phonenumbers.PhoneNumberFormat
    international = phonenumbers.format_number(number, fmt.INTERNATIONAL)
    national_form = phonenumbers.format_number(number, fmt.NATIONAL)
    if alpha2 == "US":
        dialling = "1-" + international.removeprefix("+1 ")
    else:
        dialling = "00" + international.removeprefix("+")
    return (
        phonenumbers.format_number(number, fmt.E164),
        international,
        national_form,
        dialling,
    )


@functools.cache
def ranges() -> tuple[PhoneRange, ...]:
    """Every number range of every country (computed once per process)."""
    out: list[PhoneRange] = []
    for index, country in enumerate(COUNTRIES):
        for mobile, prefixes in ((True, country.mobile_prefixes), (False, country.fixed_prefixes)):
            for prefix in prefixes:
                forms = _forms(country.alpha2, prefix + _SAMPLE)
                out.append(
                    PhoneRange(
                        country=index,
                        prefix=prefix,
                        mobile=mobile,
                        templates=tuple(np.frombuffer(f.encode(), dtype=np.uint8) for f in forms),
                        slots=tuple(_slots(f) for f in forms),
                    )
                )
    return tuple(out)


def choose_ranges(rng: np.random.Generator, country: np.ndarray, mobile_share: float) -> np.ndarray:
    """A number range for each customer of the given countries (mostly mobile)."""
    all_ranges = ranges()
    mobile = rng.random(len(country)) < mobile_share
    chosen = np.empty(len(country), dtype=np.int64)
    pick = rng.random(len(country))
    for c in np.unique(country):
        for is_mobile in (True, False):
            options = [
                i for i, r in enumerate(all_ranges) if r.country == c and r.mobile == is_mobile
            ]
            rows = np.flatnonzero((country == c) & (mobile == is_mobile))
            chosen[rows] = np.array(options)[(pick[rows] * len(options)).astype(np.int64)]
    return chosen


def render(range_index: np.ndarray, form: np.ndarray, free: np.ndarray) -> pa.StringArray:
    """Write numbers: range, written form and the six free digits of each customer."""
    n = len(range_index)
    all_ranges = ranges()
    free_digits = _text.digits(free, FREE_DIGITS)
    key = range_index * len(FORMATS) + form
    order = np.argsort(key, kind="stable")
    pieces: list[pa.Array] = []
    sorted_key = key[order]
    bounds = np.flatnonzero(np.diff(sorted_key)) + 1
    for rows in np.split(order, bounds):
        if len(rows) == 0:
            continue
        r = all_ranges[int(range_index[rows[0]])]
        f = int(form[rows[0]])
        matrix = np.tile(r.templates[f], (len(rows), 1))
        matrix[:, r.slots[f]] = free_digits[rows]
        pieces.append(_text.from_fixed_width(matrix))
    if not pieces:
        return pa.array([], pa.string())
    combined = pa.concat_arrays(pieces)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return combined.take(pa.array(inverse))
