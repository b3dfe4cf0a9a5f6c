"""Logging that cannot be forged: line breaks in logged values are escaped.

Ids, event names and other values a client sends end up in log messages; a
``\\r`` or ``\\n`` in them would let a client write fake log lines. The
formatter escapes them (and other control characters) in the final message.
"""

from __future__ import annotations

import logging

__all__ = ["SafeFormatter", "configure_logging"]

_ESCAPES = {i: f"\\x{i:02x}" for i in range(32) if i not in (9,)}
_ESCAPES[10] = "\\n"
_ESCAPES[13] = "\\r"
_ESCAPES.update({i: f"\\x{i:02x}" for i in range(0x7F, 0xA0)})  # DEL and C1 controls (NEL)
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})  # Unicode line/paragraph separators


class SafeFormatter(logging.Formatter):
    """A formatter escaping control characters of the message (tracebacks kept as is).

    Examples
    --------
    >>> record = logging.LogRecord("x", logging.INFO, "", 0, "id %s", ("a\\r\\nFAKE",), None)
    >>> SafeFormatter("%(message)s").format(record)
    'id a\\\\r\\\\nFAKE'
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        record.message = record.getMessage().translate(_ESCAPES)
        return super().formatMessage(record)


def configure_logging(level: int) -> None:
    """Log to stderr at ``level`` through :class:`SafeFormatter`."""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
