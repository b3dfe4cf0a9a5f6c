"""Vectorised text building: fixed-width numbers, UUIDs, timestamps and joins.

Everything here works on whole numpy / Arrow arrays; no Python loop runs per row.
Fixed-width values are built as ``(n, width)`` byte matrices and handed to Arrow
as one buffer, which is much faster than ``pyarrow.compute.strftime``.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
_ZERO = ord("0")

#: Milliseconds in one second, minute, hour and day.
SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def from_fixed_width(matrix: np.ndarray) -> pa.StringArray:
    """Turn an ``(n, width)`` uint8 matrix of ASCII bytes into an Arrow string array."""
    n, width = matrix.shape
    data = np.ascontiguousarray(matrix, dtype=np.uint8)
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(width)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative integers as an ``(n, width)`` byte matrix."""
    values = np.asarray(values, dtype=np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + _ZERO).astype(np.uint8)


def padded_ids(prefix: str, values: np.ndarray, width: int) -> pa.StringArray:
    """Identifiers like ``C00000042``: a constant prefix and zero-padded numbers."""
    values = np.asarray(values, dtype=np.int64)
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    matrix = np.empty((len(values), len(head) + width), dtype=np.uint8)
    matrix[:, : len(head)] = head
    matrix[:, len(head) :] = digits(values, width)
    return from_fixed_width(matrix)


def uuid4s(rng: np.random.Generator, n: int) -> pa.StringArray:
    """``n`` random version-4 UUIDs in canonical 36-character form."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = _HEX[raw].view(np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, 0:8] = hexed[:, 0:8]
    out[:, 9:13] = hexed[:, 8:12]
    out[:, 14:18] = hexed[:, 12:16]
    out[:, 19:23] = hexed[:, 16:20]
    out[:, 24:36] = hexed[:, 20:32]
    return from_fixed_width(out)


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month and day of days since 1970-01-01 (proleptic Gregorian)."""
    z = days.astype(np.int64) + 719_468
    era = np.floor_divide(z, 146_097)
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _date_matrix(days: np.ndarray, width: int) -> np.ndarray:
    """``(n, width)`` matrix whose first ten columns hold ``YYYY-MM-DD``."""
    matrix = np.empty((len(days), width), dtype=np.uint8)
    if len(days) == 0:
        return matrix
    first = int(days.min())
    span = np.arange(first, int(days.max()) + 1, dtype=np.int64)
    year, month, day = _civil(span)
    table = np.empty((len(span), 10), dtype=np.uint8)
    table[:, 0:4] = digits(year, 4)
    table[:, 4] = ord("-")
    table[:, 5:7] = digits(month, 2)
    table[:, 7] = ord("-")
    table[:, 8:10] = digits(day, 2)
    matrix[:, 0:10] = table[days - first]
    return matrix


@functools.cache
def _clock_table() -> np.ndarray:
    """``HH:MM:SS`` for every second of a day, as an ``(86400, 8)`` byte matrix."""
    sod = np.arange(86_400, dtype=np.int64)
    table = np.empty((86_400, 8), dtype=np.uint8)
    table[:, 0:2] = digits(sod // 3600, 2)
    table[:, 2] = ord(":")
    table[:, 3:5] = digits(sod // 60 % 60, 2)
    table[:, 5] = ord(":")
    table[:, 6:8] = digits(sod % 60, 2)
    return table


@functools.cache
def _millis_table() -> np.ndarray:
    return digits(np.arange(1000), 3)


def dates(days: np.ndarray) -> pa.StringArray:
    """``YYYY-MM-DD`` strings of days since the epoch."""
    return from_fixed_width(_date_matrix(np.asarray(days, dtype=np.int64), 10))


def sql_timestamps(seconds: np.ndarray) -> pa.StringArray:
    """``YYYY-MM-DD HH:MM:SS`` strings of seconds since the epoch (UTC)."""
    seconds = np.asarray(seconds, dtype=np.int64)
    days = np.floor_divide(seconds, 86_400)
    matrix = _date_matrix(days, 19)
    matrix[:, 10] = ord(" ")
    matrix[:, 11:19] = _clock_table()[seconds - days * 86_400]
    return from_fixed_width(matrix)


def iso_timestamps(millis: np.ndarray) -> pa.StringArray:
    """ISO 8601 strings with milliseconds and ``Z``: ``2026-03-01T12:34:56.789Z``."""
    millis = np.asarray(millis, dtype=np.int64)
    seconds = np.floor_divide(millis, SECOND_MS)
    days = np.floor_divide(seconds, 86_400)
    matrix = _date_matrix(days, 24)
    matrix[:, 10] = ord("T")
    matrix[:, 11:19] = _clock_table()[seconds - days * 86_400]
    matrix[:, 19] = ord(".")
    matrix[:, 20:23] = _millis_table()[millis - seconds * SECOND_MS]
    matrix[:, 23] = ord("Z")
    return from_fixed_width(matrix)


def money(cents: np.ndarray) -> np.ndarray:
    """Amounts in cents as floats rounded to two decimals."""
    return np.round(np.asarray(cents, dtype=np.int64) / 100.0, 2)


def number_strings(values: np.ndarray) -> pa.StringArray:
    """Shortest round-trip decimal text of numbers (valid JSON numbers)."""
    return pc.cast(pa.array(values), pa.string())


def join(*parts: pa.Array | str) -> pa.StringArray:
    """Concatenate string arrays and constants element-wise (no separator)."""
    return pc.binary_join_element_wise(*parts, "")


def pick(choices: pa.Array, index: np.ndarray) -> pa.Array:
    """Gather ``choices[index]`` (e.g. a precomputed text fragment per product).

    Decoding a dictionary array is several times faster than ``take`` for
    strings, which matters for the tens of millions of event fragments.
    """
    codes = pa.array(np.asarray(index, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(codes, choices).cast(choices.type)


def where(mask: np.ndarray, when_true: pa.Array | str, when_false: pa.Array | str) -> pa.Array:
    """Element-wise choice between two string arrays or constants."""
    return pc.if_else(pa.array(np.asarray(mask, dtype=bool)), when_true, when_false)
