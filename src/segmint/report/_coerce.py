"""Read the loosely typed report data with clear errors.

The report data is a JSON-like dict in which any key may be missing or ``None``
(the section then says "not available"). A value of the *wrong type* is a bug in
whoever produced the data; it raises :class:`~segmint.errors.UserInputError`
naming the key path (``where``), e.g. ``report.segments[2].share``.

Numbers that are NaN or infinite are read as ``None`` (a gap), because JSON
has no NaN and charts show a gap better than a wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from segmint.errors import UserInputError


def _wrong(value: Any, expected: str, where: str) -> UserInputError:
    return UserInputError(
        f"expected {expected}, got {type(value).__name__} {value!r:.60}", where=where
    )


def _is_numpy_scalar(value: Any) -> bool:
    """numpy scalars (``np.int64``, ``np.bool_``, ...) have ``item()`` and an empty shape."""
    return getattr(value, "shape", None) == () and callable(getattr(value, "item", None))


def mapping(value: Any, where: str) -> Mapping[str, Any] | None:
    """Return ``value`` as a mapping, ``None`` when missing.

    Examples
    --------
    >>> mapping({"a": 1}, "report.x")
    {'a': 1}
    >>> mapping(None, "report.x") is None
    True
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _wrong(value, "an object", where)
    return value


def items(value: Any, where: str) -> list[Any] | None:
    """Return ``value`` as a list, ``None`` when missing (strings are not lists).

    Examples
    --------
    >>> items((1, 2), "report.x")
    [1, 2]
    """
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        if hasattr(value, "tolist"):  # numpy arrays and pandas series
            converted = value.tolist()
            if isinstance(converted, list):
                return converted
        raise _wrong(value, "a list", where)
    return list(value)


def number(value: Any, where: str) -> float | None:
    """Return ``value`` as a float; ``None`` when missing, NaN or infinite.

    Examples
    --------
    >>> number(3, "report.x"), number(float("nan"), "report.x")
    (3.0, None)
    """
    if value is None:
        return None
    if _is_numpy_scalar(value):
        return number(value.item(), where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(value, "a number", where)
    result = float(value)
    return result if math.isfinite(result) else None


def integer(value: Any, where: str) -> int | None:
    """Return ``value`` as an int (integral floats accepted), ``None`` when missing.

    Examples
    --------
    >>> integer(6.0, "report.k")
    6
    """
    result = number(value, where)
    if result is None:
        return None
    if not result.is_integer():
        raise _wrong(value, "a whole number", where)
    return int(result)


def text(value: Any, where: str) -> str | None:
    """Return ``value`` as text, ``None`` when missing; numbers are formatted.

    Examples
    --------
    >>> text(3, "report.segment"), text("Loyal", "report.segment")
    ('3', 'Loyal')
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if _is_numpy_scalar(value):
        return text(value.item(), where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(value, "text", where)
    return str(value)


def flag(value: Any, where: str) -> bool | None:
    """Return ``value`` as a boolean (numpy booleans accepted), ``None`` when missing.

    Examples
    --------
    >>> flag(True, "x"), flag(None, "x")
    (True, None)
    """
    if value is None:
        return None
    if _is_numpy_scalar(value):
        return flag(value.item(), where)
    if not isinstance(value, bool):
        raise _wrong(value, "true or false", where)
    return value


def numbers(value: Any, where: str) -> list[float | None] | None:
    """Return a list of numbers (NaN and infinities as ``None``), ``None`` when missing."""
    values = items(value, where)
    if values is None:
        return None
    return [number(v, f"{where}[{i}]") for i, v in enumerate(values)]


def texts(value: Any, where: str) -> list[str] | None:
    """Return a list of texts, ``None`` when missing; ``None`` entries become ``""``."""
    values = items(value, where)
    if values is None:
        return None
    return [text(v, f"{where}[{i}]") or "" for i, v in enumerate(values)]
