"""Normalisers for identifiers: e-mail, phone (E.164), country (ISO 3166-1 alpha-2).

Each returns ``None`` for a value it cannot normalise; ingestion turns that into a
``format`` failure for the row. They are applied to *distinct* values only, so their
per-value Python cost does not grow with the number of rows.
"""

from __future__ import annotations

import functools

import phonenumbers
import pycountry


def normalise_email(value: str | None) -> str | None:
    """Trim and lower-case an e-mail address; empty becomes ``None``.

    Examples
    --------
    >>> normalise_email("  Ada.Lovelace@Example.COM ")
    'ada.lovelace@example.com'
    """
    if value is None:
        return None
    cleaned = value.strip().lower()
    return cleaned or None


def normalise_phone(value: str | None, default_region: str = "US") -> str | None:
    """Parse a phone number and format it as E.164; ``None`` if it is not a valid number.

    Numbers written without a ``+country`` prefix are read in ``default_region``.

    Examples
    --------
    >>> normalise_phone("030 1234567", "DE")
    '+49301234567'
    >>> normalise_phone("not a phone") is None
    True
    """
    if value is None or not value.strip():
        return None
    try:
        parsed = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=4096)
def normalise_country(value: str | None) -> str | None:
    """Map a country code or name to its ISO 3166-1 alpha-2 code.

    Accepts alpha-2, alpha-3, numeric codes and English names, in any case.

    Examples
    --------
    >>> normalise_country("deu"), normalise_country("Germany"), normalise_country("de")
    ('DE', 'DE', 'DE')
    >>> normalise_country("Atlantis") is None
    True
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.upper() == "UK":
        return "GB"
    try:
        country = pycountry.countries.lookup(text)
    except LookupError:
        return None
    return str(country.alpha_2)


NORMALISERS = {"email", "phone", "country", "lower"}
