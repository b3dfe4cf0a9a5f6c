"""The warehouse: one DuckDB file, reached through a raw connection and Ibis.

Statements take user values as bound parameters only; database errors are
re-raised as :class:`~segmint.errors.EngineError` carrying the SQL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from segmint.errors import EngineError, UserInputError

logger = logging.getLogger(__name__)

# Up to this many values (rows x columns), insert_rows / delete_rows bind VALUES; beyond,
# binding (~9 us a value) costs more than handing DuckDB an Arrow table (~1 ms); measured
# even at ~105 values.
_VALUES_CELLS = 100
# Up to this many keys, delete_rows matches them with OR-ed equalities: a third cheaper
# than joining a VALUES list for a few keys (measured 0.7 ms vs 1.1 ms for one key).
_OR_KEYS = 16


class Warehouse:
    """A connection to the segmint warehouse.

    Parameters
    ----------
    path
        DuckDB database file, or ``":memory:"``.
    read_only
        Open without write access (several readers may share the file).
    memory_limit
        DuckDB memory limit such as ``"8GB"`` (default: DuckDB's, 80% of RAM).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> wh.fetchall("SELECT ? + 1", [41])
    [(42,)]
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        read_only: bool = False,
        memory_limit: str | None = None,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        self.memory_limit = memory_limit
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._ibis: Any = None
        self.con = self._connect()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            con = duckdb.connect(self.path, read_only=self.read_only)
        except duckdb.IOException as e:
            raise UserInputError(f"cannot open the warehouse: {e}", where=self.path) from e
        con.execute("SET TimeZone = 'UTC'")
        if self.memory_limit:
            # Beyond the limit DuckDB spills to <database>.tmp instead of growing.
            try:
                con.execute("SET memory_limit = ?", [self.memory_limit])
            except duckdb.Error as e:
                raise UserInputError(f"invalid memory limit {self.memory_limit!r}: {e}") from e
        return con

    def reopen(self) -> None:
        """Reconnect to the same file with the same settings (after it was rewritten).

        Temporary tables, registered frames and Ibis expressions of the old connection
        are gone afterwards.
        """
        if self.path == ":memory:":
            raise UserInputError("an in-memory warehouse cannot be reopened")
        with self._lock:
            self.con = self._connect()
            self._ibis = None

    # ------------------------------------------------------------------ SQL
    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> None:
        """Run a statement for its effect."""
        with self._lock:
            try:
                self.con.execute(sql, params)
            except duckdb.Error as e:
                raise EngineError(f"{type(e).__name__}: {e}", sql=sql) from e

    def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[Any]:
        """Run a query and return its rows as tuples."""
        with self._lock:
            try:
                return self.con.execute(sql, params).fetchall()
            except duckdb.Error as e:
                raise EngineError(f"{type(e).__name__}: {e}", sql=sql) from e

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        rows = self.fetchall(sql, params)
        return rows[0][0] if rows else None

    def arrow(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run a query and return an Arrow table (no per-row Python objects)."""
        with self._lock:
            try:
                result = self.con.execute(sql, params)
                return result.to_arrow_table()
            except duckdb.Error as e:
                raise EngineError(f"{type(e).__name__}: {e}", sql=sql) from e

    def df(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """Run a query and return a pandas DataFrame."""
        return self.arrow(sql, params).to_pandas()

    def register(self, name: str, data: Any) -> None:
        """Expose an Arrow table or data frame to SQL under ``name``."""
        with self._lock:
            self.con.register(name, data)

    def unregister(self, name: str) -> None:
        with self._lock:
            self.con.unregister(name)

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        schema: pa.Schema | None = None,
    ) -> None:
        """Insert rows (values bound): multi-row ``VALUES`` for a few, Arrow for many.

        A handful of rows is what a real-time group commit writes; binding them costs a
        fraction of scanning an Arrow table, but binding grows with the number of
        values, so wide or long batches go through Arrow. ``schema`` types the Arrow
        path (else inferred).

        Examples
        --------
        >>> wh = Warehouse(":memory:")
        >>> wh.execute("CREATE TABLE t (a VARCHAR, b BIGINT)")
        >>> wh.insert_rows("t", ["a", "b"], [("x", 1), ("y", 2)])
        >>> wh.fetchall("SELECT * FROM t ORDER BY a")
        [('x', 1), ('y', 2)]
        """
        if not rows:
            return
        names = ", ".join(f'"{c}"' for c in columns)
        if len(rows) * len(columns) <= _VALUES_CELLS:
            marks = "(" + ", ".join("?" * len(columns)) + ")"
            self.execute(
                f'INSERT INTO "{table}" ({names}) VALUES {", ".join([marks] * len(rows))}',
                [value for row in rows for value in row],
            )
            return
        data = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
        batch = pa.table(data, schema=schema) if schema is not None else pa.table(data)
        self._execute_over(
            f'INSERT INTO "{table}" ({names}) SELECT {names} FROM segmint_rows', batch
        )

    def _execute_over(self, sql: str, segmint_rows: pa.Table) -> None:
        """Run ``sql``, in which the name ``segmint_rows`` is this Arrow table.

        DuckDB finds the caller's local variable by name (a replacement scan), which
        costs a third of registering and dropping a view for each statement. A table or
        view of that name in the warehouse would shadow it; segmint makes none.
        """
        with self._lock:
            try:
                self.con.execute(sql)
            except duckdb.Error as e:
                raise EngineError(f"{type(e).__name__}: {e}", sql=sql) from e

    def delete_rows(
        self, table: str, columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> None:
        """Delete the rows whose ``columns`` equal one of ``keys`` (values bound).

        Examples
        --------
        >>> wh = Warehouse(":memory:")
        >>> wh.execute("CREATE TABLE t (a VARCHAR, b BIGINT)")
        >>> wh.insert_rows("t", ["a", "b"], [("x", 1), ("y", 2), ("x", 3)])
        >>> wh.delete_rows("t", ["a", "b"], [("x", 1), ("y", 2)])
        >>> wh.fetchall("SELECT * FROM t")
        [('x', 3)]
        """
        if not keys:
            return
        if len(keys) <= _OR_KEYS:
            match = "(" + " AND ".join(f'"{c}" = ?' for c in columns) + ")"
            self.execute(
                f'DELETE FROM "{table}" WHERE {" OR ".join([match] * len(keys))}',
                [value for key in keys for value in key],
            )
            return
        names = ", ".join(f'"{c}"' for c in columns)
        if len(keys) * len(columns) <= _VALUES_CELLS:
            marks = "(" + ", ".join("?" * len(columns)) + ")"
            self.execute(
                f'DELETE FROM "{table}" WHERE ({names}) IN '
                f"(SELECT * FROM (VALUES {', '.join([marks] * len(keys))}))",
                [value for key in keys for value in key],
            )
            return
        keys_table = pa.table({c: [k[i] for k in keys] for i, c in enumerate(columns)})
        self._execute_over(
            f'DELETE FROM "{table}" WHERE ({names}) IN (SELECT {names} FROM segmint_rows)',
            keys_table,
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Warehouse]:
        """All statements inside commit together or not at all."""
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            else:
                self.con.execute("COMMIT")

    # ------------------------------------------------------------------ schema
    def has_table(self, name: str) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
            )
        )

    def columns(self, table: str) -> list[str]:
        rows = self.fetchall(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        )
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ ibis
    @property
    def ibis(self) -> Any:
        """The Ibis backend over this connection (portable expressions)."""
        if self._ibis is None:
            import ibis

            self._ibis = ibis.duckdb.from_connection(self.con)
        return self._ibis

    def table(self, name: str) -> Any:
        """An Ibis table expression."""
        return self.ibis.table(name)

    def checkpoint(self) -> None:
        """Flush the write-ahead log into the database file."""
        self.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            self.con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
