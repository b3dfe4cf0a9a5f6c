"""Run-time semantics of rule values, written to agree with DuckDB.

Values are ``None`` (SQL NULL), ``int`` (``BIGINT``, or ``INTEGER`` for constant
expressions), ``float`` (``DOUBLE``), ``str``, ``bool`` and naive ``datetime``
(``TIMESTAMP``, in UTC). The functions here never see ``None``: the nodes of the
syntax tree handle NULL propagation before calling them.
"""

from __future__ import annotations

import decimal
import functools
import math
import numbers
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from segmint.errors import RuleEvaluationError
from segmint.segments._rules.base import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    FieldType,
    NumKind,
)

Number = int | float


# --------------------------------------------------------------------------- numbers


def check_int(value: int, kind: NumKind | None) -> int:
    """Raise like DuckDB when an integer result does not fit its type."""
    if kind is NumKind.INT32:
        if not INT32_MIN <= value <= INT32_MAX:
            raise RuleEvaluationError(f"integer overflow: {value} does not fit in INTEGER")
    elif not INT64_MIN <= value <= INT64_MAX:
        raise RuleEvaluationError(f"integer overflow: {value} does not fit in BIGINT")
    return value


def as_kind(value: Any, kind: NumKind | None) -> Any:
    """Convert an integer to float where the expression is statically ``DOUBLE``."""
    if kind is NumKind.DOUBLE and type(value) is int:
        return float(value)
    return value


def _both_int(a: Number, b: Number, kind: NumKind | None) -> bool:
    return kind is not NumKind.DOUBLE and type(a) is int and type(b) is int


def add(a: Number, b: Number, kind: NumKind | None) -> Number:
    """``a + b``."""
    if _both_int(a, b, kind):
        return check_int(int(a) + int(b), kind)
    return float(a) + float(b)


def subtract(a: Number, b: Number, kind: NumKind | None) -> Number:
    """``a - b``."""
    if _both_int(a, b, kind):
        return check_int(int(a) - int(b), kind)
    return float(a) - float(b)


def multiply(a: Number, b: Number, kind: NumKind | None) -> Number:
    """``a * b``."""
    if _both_int(a, b, kind):
        return check_int(int(a) * int(b), kind)
    return float(a) * float(b)


def divide(a: Number, b: Number, kind: NumKind | None) -> float | None:
    """``a / b``: always floating point; NULL when ``b`` is zero (rendered ``NULLIF(b, 0)``)."""
    if b == 0:
        return None
    return float(a) / float(b)


def modulo(a: Number, b: Number, kind: NumKind | None) -> Number | None:
    """``a % b`` with the sign of ``a`` (C ``fmod``); NULL when ``b`` is zero."""
    if b == 0:
        return None
    if _both_int(a, b, kind):
        ia, ib = int(a), int(b)
        smallest = INT32_MIN if kind is NumKind.INT32 else INT64_MIN
        if ia == smallest and ib == -1:
            raise RuleEvaluationError(f"integer overflow in {ia} % {ib}")
        remainder = abs(ia) % abs(ib)
        return -remainder if ia < 0 else remainder
    fa, fb = float(a), float(b)
    if math.isinf(fa) or math.isnan(fa) or math.isnan(fb):
        return math.nan
    return math.fmod(fa, fb)


def negate(a: Number, kind: NumKind | None) -> Number:
    """Unary minus."""
    if type(a) is int:
        return check_int(-a, kind)
    return -a


def absolute(a: Number, kind: NumKind | None) -> Number:
    """``abs(a)``."""
    if type(a) is int:
        return check_int(abs(a), kind)
    return abs(a)


def _round_half_away(value: float) -> float:
    """C's ``round``: to the nearest integer, halves away from zero (exact)."""
    if math.isinf(value) or math.isnan(value):
        return value
    magnitude = abs(value)
    whole = math.floor(magnitude)
    rounded = float(whole) + (1.0 if magnitude - whole >= 0.5 else 0.0)
    return math.copysign(rounded, value)


def _pow10(exponent: int) -> float:
    try:
        return 10.0**exponent
    except OverflowError:
        return math.inf


def round_number(a: Number, digits: int | None, kind: NumKind | None) -> Number:
    """``round(a[, digits])``, half away from zero, as DuckDB computes it."""
    if type(a) is int:
        value = int(a)
        if digits is None or digits >= 0:
            return value
        if digits <= -39:
            return 0
        power = 10**-digits
        half = power // 2
        quotient = abs(value) // power * (-1 if value < 0 else 1)
        remainder = value - quotient * power
        if remainder >= half:
            quotient += 1
        elif remainder <= -half:
            quotient -= 1
        if quotient == 0:
            return 0
        return check_int(quotient * power, kind)
    x = float(a)
    if digits is None:
        return _round_half_away(x)
    if digits < 0:
        modifier = _pow10(-digits)
        rounded = _round_half_away(x / modifier) * modifier
        return rounded if math.isfinite(rounded) else 0.0
    modifier = _pow10(digits)
    rounded = _round_half_away(x * modifier) / modifier
    return rounded if math.isfinite(rounded) else x


def natural_log(a: Number, kind: NumKind | None = None) -> float:
    """``ln(a)``; like DuckDB, zero and negative numbers are errors."""
    x = float(a)
    if x < 0:
        raise RuleEvaluationError("cannot take logarithm of a negative number")
    if x == 0:
        raise RuleEvaluationError("cannot take logarithm of zero")
    return math.log(x)


def square_root(a: Number, kind: NumKind | None = None) -> float:
    """``sqrt(a)``; like DuckDB, negative numbers are errors."""
    x = float(a)
    if x < 0:
        raise RuleEvaluationError("cannot take square root of a negative number")
    return math.sqrt(x)


# --------------------------------------------------------------------------- comparison


def compare(a: Any, b: Any) -> int:
    """Three-way comparison of two non-NULL values of one type, as DuckDB orders them.

    Integers meeting floats are converted to float (``BIGINT`` to ``DOUBLE``); NaN
    equals NaN and is greater than every other number; strings compare by code point.
    """
    if type(a) is float or type(b) is float:
        fa, fb = float(a), float(b)
        a_nan, b_nan = fa != fa, fb != fb
        if a_nan or b_nan:
            return int(a_nan) - int(b_nan)
        return -1 if fa < fb else (1 if fa > fb else 0)
    return -1 if a < b else (1 if a > b else 0)


def pick_extreme(values: Sequence[Any], *, greatest: bool) -> Any:
    """``least`` / ``greatest``: NULLs are skipped; NULL only if all are NULL."""
    best: Any = None
    for value in values:
        if value is None:
            continue
        if best is None:
            best = value
            continue
        order = compare(value, best)
        if (order > 0) if greatest else (order < 0):
            best = value
    return best


# --------------------------------------------------------------------------- strings

# DuckDB maps case one code point at a time (utf8proc's simple case mapping). Python's
# str.upper/lower use the full mapping ("ß" -> "SS") and a final-sigma rule, so the
# simple mapping is rebuilt per character; these are the code points where the
# one-character fallback below does not give utf8proc's answer.
_UPPER_EXCEPTIONS = {"\u00df": "\u1e9e"}
_LOWER_EXCEPTIONS = {"\u0130": "i"}


@functools.lru_cache(maxsize=4096)
def _upper_char(char: str) -> str:
    special = _UPPER_EXCEPTIONS.get(char)
    if special is not None:
        return special
    upper = char.upper()
    if len(upper) == 1:
        return upper
    title = char.title()
    return title if len(title) == 1 else char


@functools.lru_cache(maxsize=4096)
def _lower_char(char: str) -> str:
    special = _LOWER_EXCEPTIONS.get(char)
    if special is not None:
        return special
    lower = char.lower()
    return lower if len(lower) == 1 else char


def upper(text: str) -> str:
    """``upper(text)``, one code point at a time as DuckDB does."""
    if text.isascii():
        return text.upper()
    return "".join([_upper_char(c) for c in text])


def lower(text: str) -> str:
    """``lower(text)``, one code point at a time as DuckDB does."""
    if text.isascii():
        return text.lower()
    return "".join([_lower_char(c) for c in text])


def upper_function(text: str, kind: NumKind | None = None) -> str:
    """``upper`` with the signature of the other one-argument functions."""
    return upper(text)


def lower_function(text: str, kind: NumKind | None = None) -> str:
    """``lower`` with the signature of the other one-argument functions."""
    return lower(text)


def length_function(text: str, kind: NumKind | None = None) -> int:
    """``length(text)``: the number of code points (DuckDB counts code points too)."""
    return len(text)


LikeSegment = tuple[str | None, ...]


@functools.lru_cache(maxsize=512)
def compile_like(pattern: str, escape: str | None) -> tuple[LikeSegment, ...]:
    """Split a LIKE pattern at its ``%`` wildcards; ``None`` in a segment stands for ``_``.

    Raises
    ------
    RuleEvaluationError
        If the pattern ends with the escape character (DuckDB refuses it too).
    """
    segments: list[list[str | None]] = [[]]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if escape is not None and char == escape:
            if index + 1 >= len(pattern):
                raise RuleEvaluationError(
                    f"LIKE pattern {pattern!r} must not end with the escape character"
                )
            segments[-1].append(pattern[index + 1])
            index += 2
            continue
        if char == "%":
            segments.append([])
        elif char == "_":
            segments[-1].append(None)
        else:
            segments[-1].append(char)
        index += 1
    return tuple(tuple(segment) for segment in segments)


def _matches_at(text: str, start: int, segment: LikeSegment) -> bool:
    for offset, token in enumerate(segment):
        if token is not None and text[start + offset] != token:
            return False
    return True


def _find_segment(text: str, segment: LikeSegment, start: int, stop: int) -> int:
    """First position ``>= start`` where ``segment`` fits entirely before ``stop``; -1 if none."""
    if None not in segment:
        return text.find("".join(segment), start, stop)  # type: ignore[arg-type]
    for position in range(start, stop - len(segment) + 1):
        if _matches_at(text, position, segment):
            return position
    return -1


def like(text: str, pattern: str, escape: str | None) -> bool:
    """SQL ``LIKE``: ``%`` any run of characters, ``_`` one character, exact otherwise.

    Runs in ``O(len(text) * len(pattern))`` at worst (no regular expressions, so no
    catastrophic backtracking on hostile patterns).
    """
    segments = compile_like(pattern, escape)
    if len(segments) == 1:
        only = segments[0]
        return len(text) == len(only) and _matches_at(text, 0, only)
    first, last = segments[0], segments[-1]
    if len(text) < len(first) + len(last):
        return False
    if not _matches_at(text, 0, first):
        return False
    stop = len(text) - len(last)
    if not _matches_at(text, stop, last):
        return False
    position = len(first)
    for segment in segments[1:-1]:
        found = _find_segment(text, segment, position, stop)
        if found < 0:
            return False
        position = found + len(segment)
    return True


# --------------------------------------------------------------------------- timestamps


def parse_timestamp(text: str) -> datetime | None:
    """Parse an ISO 8601 date or date-time; ``None`` if it is not one.

    Offsets are applied and the result is naive UTC.
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return normalize_datetime(parsed)


def normalize_datetime(value: datetime) -> datetime:
    """Naive UTC: aware values are converted, naive ones are taken as UTC already.

    Subclasses such as pandas' ``Timestamp`` become plain ``datetime`` (microseconds,
    as the engine's ``TIMESTAMP`` stores them).
    """
    if value.tzinfo is not None and value.utcoffset() is not None:
        value = value.astimezone(UTC)
    if type(value) is not datetime:
        value = datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
        )
    return value.replace(tzinfo=None)


def format_timestamp(value: datetime) -> str:
    """Canonical text of a timestamp literal, read identically by every SQL engine."""
    return value.isoformat(sep=" ")


# --------------------------------------------------------------------------- records


def _is_missing(value: Any) -> bool:
    return value is None or type(value).__name__ in ("NAType", "NaTType")


def _is_boolean(value: Any) -> bool:
    return isinstance(value, bool) or (
        type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")
    )


def coerce_value(name: str, field_type: FieldType, value: Any) -> Any:
    """Turn a record's value into the rule's run-time representation of ``field_type``.

    ``None``, pandas' ``NA``/``NaT`` and float NaN are NULL. Numbers become ``int``
    or ``float`` (``Decimal`` becomes ``float``); timestamps become naive UTC
    ``datetime`` (a ``date`` is midnight; ISO 8601 text is parsed).

    Raises
    ------
    RuleEvaluationError
        If the value does not have the field's type.
    """
    exact = type(value)
    if exact is int and field_type is FieldType.NUMBER and INT64_MIN <= value <= INT64_MAX:
        return value
    if exact is float and field_type is FieldType.NUMBER:
        return None if value != value else value
    if (exact is str and field_type is FieldType.STRING) or (
        exact is bool and field_type is FieldType.BOOLEAN
    ):
        return value
    if _is_missing(value):
        return None
    if field_type is FieldType.NUMBER:
        if _is_boolean(value):
            pass
        elif isinstance(value, numbers.Integral):
            integer = int(value)
            if not INT64_MIN <= integer <= INT64_MAX:
                raise RuleEvaluationError(
                    f"value {integer} is out of the 64-bit integer range", where=name
                )
            return integer
        elif isinstance(value, numbers.Real | decimal.Decimal):
            number = float(value)
            return None if math.isnan(number) else number
    elif field_type is FieldType.STRING:
        if isinstance(value, str):
            return str(value)
    elif field_type is FieldType.BOOLEAN:
        if _is_boolean(value):
            return bool(value)
    elif field_type is FieldType.TIMESTAMP:
        if isinstance(value, datetime):
            return normalize_datetime(value)
        if isinstance(value, date):
            return datetime.combine(value, time())
        if type(value).__name__ == "datetime64":  # numpy
            converted = value.astype("datetime64[us]").item()
            if isinstance(converted, datetime):
                return converted
            if converted is None:
                return None
        if isinstance(value, str):
            parsed = parse_timestamp(value)
            if parsed is not None:
                return parsed
            raise RuleEvaluationError(f"{value!r} is not an ISO 8601 date or timestamp", where=name)
    raise RuleEvaluationError(
        f"expected a {field_type.value} value, got {type(value).__name__} {value!r}",
        where=name,
    )
