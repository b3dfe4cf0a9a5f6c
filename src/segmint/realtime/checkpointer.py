"""DuckDB checkpoints in the flusher thread, so that acknowledging events never waits.

DuckDB folds its write-ahead log into the database file at a checkpoint, and
nothing else can write meanwhile: on a warehouse of a few hundred thousand events
that takes about a second. Left to DuckDB, it happens inside whichever commit
makes the WAL cross ``checkpoint_threshold``. The service turns automatic
checkpoints off and asks :class:`Checkpointer` after each flush, in the flusher
thread; while it checkpoints, the writer goes on applying, logging
(:mod:`segmint.realtime.intake_log`) and answering groups, and the next flush
starts when the checkpoint is done.
"""

from __future__ import annotations

import logging
import os

from segmint.engine import Warehouse

__all__ = ["Checkpointer"]

logger = logging.getLogger(__name__)


class Checkpointer:
    """Runs ``CHECKPOINT`` when the WAL has reached ``wal_bytes``."""

    def __init__(self, wh: Warehouse, wal_bytes: int) -> None:
        self.wh = wh
        self.wal_bytes = wal_bytes
        self._wal = f"{wh.path}.wal" if wh.path != ":memory:" else None

    def wal_size(self) -> int:
        try:
            return os.stat(self._wal).st_size if self._wal is not None else 0
        except FileNotFoundError:
            return 0

    def run_if_due(self) -> bool:
        """Checkpoint if the WAL is big enough; returns whether it did. A failure is
        logged (the WAL stays; the next flush asks again)."""
        if self.wal_size() < self.wal_bytes:
            return False
        try:
            self.wh.execute("CHECKPOINT")
        except Exception:
            logger.exception("checkpoint failed")
            return False
        return True
