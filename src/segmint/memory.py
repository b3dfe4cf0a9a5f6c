"""Peak memory of this process, per stage of work (Linux; ``None`` elsewhere).

The kernel keeps the process's peak resident set size (``VmHWM``) and lets the
process reset it (``/proc/self/clear_refs``), so the peak of one stage can be read
without sampling.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["peak_rss_mb", "reset_peak_rss"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Start a new peak at the current resident size; ``False`` where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float | None:
    """Peak resident set size since the start or the last :func:`reset_peak_rss`, in MB.

    Examples
    --------
    >>> peak = peak_rss_mb()
    >>> peak is None or peak > 0
    True
    """
    try:
        status = _STATUS.read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None
