"""DuckDB checkpoints in a thread of their own, so that acknowledging events never waits.

DuckDB folds its write-ahead log into the database file at a checkpoint, and
nothing else can write meanwhile: on a warehouse of a few hundred thousand events
that takes about a second. Left to DuckDB, it happens inside whichever commit
makes the WAL cross ``checkpoint_threshold``, in the writer thread, and every
request queued behind it waits. The service turns automatic checkpoints off and
asks :class:`Checkpointer` after each flush; when the WAL has grown past
``wal_bytes`` it checkpoints in a background thread while the writer goes on
applying, logging (:mod:`segmint.realtime.intake_log`) and answering groups and
skips its warehouse work until the checkpoint is done.
"""

from __future__ import annotations

import logging
import os
import threading

from segmint.engine import Warehouse

__all__ = ["Checkpointer"]

logger = logging.getLogger(__name__)


class Checkpointer:
    """Starts a background ``CHECKPOINT`` when the WAL reaches ``wal_bytes``."""

    def __init__(self, wh: Warehouse, wal_bytes: int) -> None:
        self.wh = wh
        self.wal_bytes = wal_bytes
        self._wal = f"{wh.path}.wal" if wh.path != ":memory:" else None
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        """A checkpoint is running (the warehouse connection is taken)."""
        return self._thread is not None and self._thread.is_alive()

    def wal_size(self) -> int:
        try:
            return os.stat(self._wal).st_size if self._wal is not None else 0
        except FileNotFoundError:
            return 0

    def start_if_due(self) -> bool:
        """Start a checkpoint if the WAL is big enough and none runs; returns whether one
        is running now."""
        if self.busy:
            return True
        if self.wal_size() < self.wal_bytes:
            return False
        self._thread = threading.Thread(target=self._run, name="segmint-checkpoint", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        try:
            self.wh.execute("CHECKPOINT")
        except Exception:  # the WAL stays; the next flush asks again
            logger.exception("background checkpoint failed")

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
