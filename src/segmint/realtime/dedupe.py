"""Dedupe of real-time messages by ``messageId`` over a time window.

Scope: one warehouse. A ``messageId`` seen by the intake, a stream consumer or
reprocessing of a dead letter (any source, any write key) within the window,
measured on ``received_at``, is a duplicate. The window is rebuilt from the
``events`` table at start-up, so it survives restarts and crashes: an event is
in the window exactly when it is committed. Events loaded in batch from files
are in ``events`` too but are not part of the window unless they carry a
``received_at`` inside it.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from segmint.engine import Warehouse

__all__ = ["MessageWindow"]


class MessageWindow:
    """The ``messageId`` values received within the last ``window``.

    Examples
    --------
    >>> from datetime import datetime, timedelta
    >>> w = MessageWindow(timedelta(hours=24))
    >>> t = datetime(2026, 1, 1)
    >>> w.seen("m1"), w.add("m1", t), w.seen("m1")
    (False, None, True)
    >>> w.prune(t + timedelta(hours=25)); w.seen("m1")
    False
    """

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self._ids: set[str] = set()
        self._order: deque[tuple[datetime, str]] = deque()

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, message_id: str) -> bool:
        return message_id in self._ids

    def add(self, message_id: str, received_at: datetime) -> None:
        if message_id not in self._ids:
            self._ids.add(message_id)
            self._order.append((received_at, message_id))

    def prune(self, now: datetime) -> None:
        """Forget ids received before ``now - window``."""
        horizon = now - self.window
        order = self._order
        while order and order[0][0] < horizon:
            self._ids.discard(order.popleft()[1])

    def load(self, wh: Warehouse, now: datetime) -> None:
        """Fill the window from the committed events (at start-up, and after a failure
        that reloads the state: ids of a group that failed are forgotten)."""
        self._ids.clear()
        self._order.clear()
        rows = wh.fetchall(
            "SELECT message_id, received_at FROM events WHERE received_at >= ? "
            "AND message_id IS NOT NULL ORDER BY received_at",
            [now - self.window],
        )
        for message_id, received_at in rows:
            self.add(message_id, received_at)
