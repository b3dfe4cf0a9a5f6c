"""Numbers as people read them: ``48,210``, ``12.5%``, ``0.312``, ``—`` when missing.

These are plain functions, also registered as Jinja filters by :mod:`segmint.report.html`.
"""

from __future__ import annotations

import math
from datetime import datetime

#: Shown wherever a value is missing.
MISSING = "—"

# English month abbreviations, independent of the process locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _finite(value: float | int | None) -> bool:
    return value is not None and not isinstance(value, bool) and math.isfinite(value)


def fmt_int(value: float | int | None) -> str:
    """A count with thousands separators.

    Examples
    --------
    >>> fmt_int(48210), fmt_int(None)
    ('48,210', '—')
    """
    if value is None or not _finite(value):
        return MISSING
    return f"{round(value):,}"


def fmt_pct(value: float | int | None, digits: int = 1) -> str:
    """A share (0..1) as a percentage; tiny non-zero shares show as ``<0.1%``.

    Examples
    --------
    >>> fmt_pct(0.125), fmt_pct(0.0004), fmt_pct(0), fmt_pct(None)
    ('12.5%', '<0.1%', '0.0%', '—')
    """
    if value is None or not _finite(value):
        return MISSING
    floor = 10.0**-digits / 100
    if 0 < abs(value) < floor:
        return f"<{floor * 100:.{digits}f}%" if value > 0 else f">-{floor * 100:.{digits}f}%"
    return f"{value * 100:.{digits}f}%"


def fmt_num(value: float | int | None) -> str:
    """A measurement with about three significant figures.

    Examples
    --------
    >>> [fmt_num(v) for v in (0, 0.31234, 2.5, 123.456, 98765.4, 1.2e-9, None)]
    ['0', '0.312', '2.50', '123.5', '98,765', '1.2e-09', '—']
    """
    if value is None or not _finite(value):
        return MISSING
    size = abs(value)
    if size == 0:
        return "0"
    if size < 0.001:
        return f"{value:.1e}"
    if size < 1:
        return f"{value:.3f}"
    if size < 100:
        return f"{value:.2f}"
    if size < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def fmt_signed(value: float | int | None) -> str:
    """A z-score or difference with its sign, two decimals.

    Examples
    --------
    >>> fmt_signed(1.234), fmt_signed(-0.5)
    ('+1.23', '-0.50')
    """
    if value is None or not _finite(value):
        return MISSING
    return f"{value:+.2f}"


def fmt_when(value: str | None) -> str:
    """An ISO 8601 date or timestamp as ``23 Nov 2026`` or ``23 Nov 2026, 20:15 UTC``.

    Text that is not ISO 8601 is shown as it is.

    Examples
    --------
    >>> fmt_when("2026-11-23"), fmt_when("2026-11-23T20:15:00+00:00")
    ('23 Nov 2026', '23 Nov 2026, 20:15 UTC')
    >>> fmt_when("2026-11-23T20:15:00+02:00"), fmt_when("last week"), fmt_when(None)
    ('23 Nov 2026, 20:15 +02:00', 'last week', '—')
    """
    if value is None:
        return MISSING
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    day = f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year}"
    if len(value.strip()) <= 10:
        return day
    shown = f"{day}, {moment.hour:02d}:{moment.minute:02d}"
    offset = moment.utcoffset()
    if offset is None:
        return shown
    if not offset:
        return f"{shown} UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"{shown} {sign}{hours:02d}:{rest:02d}"
