"""Writes recorded now and run later, in another thread.

The real-time writer builds the rows of a flush while it owns the in-memory state
(so they are a consistent snapshot), and a flusher thread runs the statements
against DuckDB while the writer goes on answering requests. Code that only writes
takes a :class:`RowWriter`: a :class:`~segmint.engine.Warehouse` runs the
statements at once, a :class:`DeferredWrites` keeps them for :meth:`~DeferredWrites.apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pyarrow as pa

from segmint.engine.warehouse import Warehouse

__all__ = ["DeferredWrites", "RowWriter"]


class RowWriter(Protocol):
    """The write statements of :class:`~segmint.engine.Warehouse` (no reads)."""

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> None: ...

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        schema: pa.Schema | None = None,
    ) -> None: ...

    def delete_rows(
        self, table: str, columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> None: ...


class DeferredWrites:
    """Records write statements, in order, to run them later with :meth:`apply`.

    Callers hand over rows they no longer change (the real-time code builds a new
    list for every statement).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> writes = DeferredWrites()
    >>> writes.execute("CREATE TABLE t (a VARCHAR, b BIGINT)")
    >>> writes.insert_rows("t", ["a", "b"], [("x", 1), ("y", 2)])
    >>> writes.delete_rows("t", ["a"], [("x",)])
    >>> len(writes)
    3
    >>> writes.apply(wh)
    >>> wh.fetchall("SELECT * FROM t")
    [('y', 2)]
    """

    def __init__(self) -> None:
        self._statements: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._statements)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> None:
        self._statements.append(("execute", (sql, params), {}))

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        schema: pa.Schema | None = None,
    ) -> None:
        if rows:
            self._statements.append(("insert_rows", (table, columns, rows), {"schema": schema}))

    def delete_rows(
        self, table: str, columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> None:
        if keys:
            self._statements.append(("delete_rows", (table, columns, keys), {}))

    def apply(self, wh: Warehouse) -> None:
        """Run the recorded statements on ``wh``, in order (inside the caller's
        transaction, if any)."""
        for method, args, kwargs in self._statements:
            getattr(wh, method)(*args, **kwargs)
