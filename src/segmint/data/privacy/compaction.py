"""Compaction: rewrite the database file so deleted rows are gone from its bytes.

DuckDB does not overwrite the blocks a ``DELETE`` frees: the deleted values stay
readable in the file (and in the write-ahead log) until the blocks are reused.
After an erasure that is not good enough, so the database is rewritten:

1. checkpoint, then ``ATTACH`` a new file next to it and
   ``COPY FROM DATABASE`` old ``TO`` new (live rows only);
2. close the connection, drop a stale write-ahead log, and atomically replace
   the old file with the new one (``os.replace``);
3. reopen the same :class:`~segmint.engine.Warehouse` object on the new file, so
   every holder of it (a :class:`~segmint.project.Project`, a service) goes on
   working.

Every step can be re-run: a leftover ``.compact`` file from a crash is removed
and the copy starts again; until the replace, the old file is untouched.

Other processes must not hold the file while it is compacted: DuckDB locks it
against other writers, but a process that keeps it open read-only would go on
reading the old, replaced file (including the erased rows) until it reopens.
Connection-scoped objects -- temporary tables and views, registered data frames,
Python functions such as the pseudonymisation function -- are gone after the
reopen. Copies outside the file (backups, file-system snapshots, exports) are
not reached; delete or rotate them by policy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import EngineError

logger = logging.getLogger(__name__)

_ALIAS = "segmint_compact_target"


@dataclass(frozen=True)
class CompactionResult:
    """Sizes of the database file before and after compaction (bytes)."""

    path: str
    bytes_before: int
    bytes_after: int


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def wal_path(path: str | Path) -> Path:
    """The write-ahead log DuckDB keeps next to a database file."""
    return Path(f"{path}.wal")


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def compact_database(wh: Warehouse) -> CompactionResult | None:
    """Rewrite the warehouse file with live rows only and reopen ``wh`` on it.

    Returns ``None`` for an in-memory warehouse (there is no file to clean).
    Must not run inside a transaction.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> wh = Warehouse(pathlib.Path(tempfile.mkdtemp()) / "w.duckdb")
    >>> wh.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
    >>> wh.execute("DELETE FROM t WHERE x > 0")
    >>> result = compact_database(wh)
    >>> wh.scalar("SELECT count(*) FROM t")
    1
    """
    if wh.path == ":memory:":
        return None
    path = Path(wh.path)
    target = path.with_name(path.name + ".compact")
    with wh._lock:
        _remove(target)
        _remove(wal_path(target))
        wh.checkpoint()
        before = path.stat().st_size
        name = str(wh.scalar("SELECT current_database()"))
        wh.execute(f"ATTACH {_sql_string(str(target))} AS {_ALIAS}")
        try:
            wh.execute(f"COPY FROM DATABASE {quote(name)} TO {_ALIAS}")
            wh.execute(f"CHECKPOINT {_ALIAS}")
        except EngineError:
            with contextlib.suppress(EngineError):
                wh.execute(f"DETACH {_ALIAS}")
            _remove(target)
            _remove(wal_path(target))
            raise
        wh.execute(f"DETACH {_ALIAS}")
        if wal_path(target).exists():  # pragma: no cover - DETACH checkpoints
            raise EngineError(f"the compacted copy left a write-ahead log: {wal_path(target)}")
        wh.close()
        try:
            # Everything in the old log was committed and is in the copy.
            _remove(wal_path(path))
            shutil.copymode(path, target)
            os.replace(target, path)
            _fsync_folder(path.parent)
        finally:
            wh.reopen()
    after = path.stat().st_size
    logger.info("compacted %s: %d -> %d bytes", path.name, before, after)
    return CompactionResult(str(path), before, after)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
