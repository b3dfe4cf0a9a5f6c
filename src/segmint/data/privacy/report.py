"""The PII report: which personal data is stored where, and how much."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from segmint.data.privacy.identifiers import RECORD_KINDS, classify_column
from segmint.data.schema import TABLES
from segmint.engine import Warehouse
from segmint.engine.dialect import quote


@dataclass(frozen=True)
class PiiColumnStats:
    """One column holding personal data, with how much of it there is.

    ``basis`` says why the column counts as PII: ``schema`` (flagged in the data
    dictionary) or ``name`` (named like a person identifier or a raw payload,
    in a table the dictionary does not describe or where it is not flagged). ``kind`` is
    ``identifier``, ``raw text`` or ``personal data`` (names, addresses, ...).
    """

    table: str
    column: str
    type: str
    basis: str
    kind: str
    rows: int
    non_null: int
    distinct: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pii_columns(table: str, columns: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """(column, data type, basis, kind) of the PII columns of a table."""
    described = TABLES.get(table)
    known = {c.name: c for c in described.columns} if described is not None else {}
    found = []
    for column, data_type in columns:
        role = classify_column(column)
        if role is None:
            kind = "personal data"
        elif role.text:
            kind = "raw text"
        else:
            kind = "identifier"
        if column in known and known[column].pii:
            found.append((column, data_type, "schema", kind))
        elif role is not None and not (role.kinds and set(role.kinds) <= set(RECORD_KINDS)):
            # Named like a person identifier: personal data even where the
            # dictionary does not flag it (a pseudonymous person id still is).
            found.append((column, data_type, "name", kind))
    return found


def pii_report(wh: Warehouse) -> list[PiiColumnStats]:
    """For every table and PII column: rows, non-null values and distinct values.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE customers AS SELECT * FROM (VALUES ('c1', 'a@b.co'), "
    ...            "('c2', NULL)) t(customer_id, email)")
    >>> [(s.column, s.rows, s.non_null, s.distinct) for s in pii_report(wh)]
    [('customer_id', 2, 2, 2), ('email', 2, 1, 1)]
    """
    rows = wh.fetchall(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t ON t.table_catalog = c.table_catalog "
        "AND t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE t.table_type = 'BASE TABLE' AND t.table_catalog = current_database() "
        "AND t.table_schema = 'main' ORDER BY c.table_name, c.ordinal_position"
    )
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        tables.setdefault(table, []).append((column, data_type))
    report: list[PiiColumnStats] = []
    for table, columns in tables.items():
        pii = _pii_columns(table, columns)
        if not pii:
            continue
        select = ["count(*)"]
        for column, data_type, _, _ in pii:
            value = quote(column)
            if data_type == "JSON":
                value = f"CAST({value} AS VARCHAR)"
            select += [f"count({value})", f"count(DISTINCT {value})"]
        counts = wh.fetchall(f"SELECT {', '.join(select)} FROM {quote(table)}")[0]
        total = int(counts[0])
        for i, (column, data_type, basis, kind) in enumerate(pii):
            report.append(
                PiiColumnStats(
                    table=table,
                    column=column,
                    type=data_type,
                    basis=basis,
                    kind=kind,
                    rows=total,
                    non_null=int(counts[1 + 2 * i]),
                    distinct=int(counts[2 + 2 * i]),
                )
            )
    return report
