"""Erasure ("right to be forgotten"): every row of a person, in every table, gone.

:func:`erase` runs a request through three recorded states:

``pending``
    The request is written to ``erasure_requests`` (with the identifier to
    erase) and committed before any work starts.
``erased``
    One transaction resolves every identifier of the person
    (:func:`~segmint.data.privacy.identifiers.resolve_identifiers`), deletes the
    person's rows from every table that holds identifiers -- raw, derived,
    quarantine, dead letters, found by column name, not by a fixed list --
    adds hashes of the identifiers to the suppression list, clears the
    identifier from the request, checks that no identifier is left in any text
    column, and writes an audit entry (tables and row counts, never values).
    A crash rolls all of it back: the request is still ``pending``.
``done``
    The database file is compacted
    (:func:`~segmint.data.privacy.compaction.compact_database`), because DuckDB
    leaves deleted values in freed blocks. A crash here leaves the request
    ``erased`` and the compaction is simply run again.

Running :func:`erase` again, or :func:`resume_erasures`, completes every request
left ``pending`` or ``erased``. Erasing the same person twice is harmless: the
second request deletes nothing and reports zero rows.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from segmint.data.privacy import compaction
from segmint.data.privacy.audit import record_audit, utcnow
from segmint.data.privacy.identifiers import (
    IDS_TABLE,
    PersonIdentifiers,
    classify_column,
    in_kinds,
    in_kinds_list,
    resolve_identifiers,
    token_pattern,
)
from segmint.data.privacy.pseudonymise import normalise_identifier
from segmint.data.privacy.suppression import add_to_suppression
from segmint.data.privacy.tables import PRIVACY_TABLES, ensure_privacy_tables
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

SUBJECT_TYPES = ("person", "email", "customer_id")
_PRIVACY_TABLE_NAMES = frozenset(t.name for t in PRIVACY_TABLES)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure request did (counts only, never the erased values)."""

    request_id: str
    subject_type: str
    state: str
    identifiers: dict[str, int] = field(default_factory=dict)
    rows_deleted: dict[str, int] = field(default_factory=dict)
    suppressed_added: int = 0
    residual: tuple[str, ...] = ()
    compacted: bool = False

    @property
    def total_rows(self) -> int:
        """Rows deleted over all tables."""
        return sum(self.rows_deleted.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "subject_type": self.subject_type,
            "state": self.state,
            "identifiers": dict(self.identifiers),
            "rows_deleted": dict(self.rows_deleted),
            "total_rows": self.total_rows,
            "suppressed_added": self.suppressed_added,
            "residual": list(self.residual),
            "compacted": self.compacted,
        }


@dataclass(frozen=True)
class _Target:
    """A table to erase from: its qualified name and its identifier columns."""

    schema: str
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, data type) of every column

    @property
    def qualified(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"


def _subject(person: str | None, email: str | None, customer_id: str | None) -> tuple[str, str]:
    given = [
        (kind, value)
        for kind, value in (("person", person), ("email", email), ("customer_id", customer_id))
        if value is not None
    ]
    if len(given) != 1:
        raise UserInputError("name exactly one of: a person id, an e-mail address, a customer id")
    kind, value = given[0]
    normalised = normalise_identifier(value)
    if normalised is None:
        raise UserInputError(f"the {kind.replace('_', ' ')} to erase is empty")
    if kind == "email" and not _EMAIL.match(normalised):
        raise UserInputError("not an e-mail address", where="--email")
    return kind, normalised


def _seeds(subject_type: str, value: str) -> list[tuple[str, str]]:
    if subject_type == "person":
        return [("person_id", value), ("customer_id", value)]
    return [(subject_type, value)]


def erase(
    wh: Warehouse,
    *,
    person: str | None = None,
    email: str | None = None,
    customer_id: str | None = None,
    actor: str = "cli",
    verify: bool = True,
) -> ErasureReport:
    """Erase a person from every table, suppress their identifiers and compact the file.

    Parameters
    ----------
    wh
        The warehouse; it is reopened in place by the compaction, and no other
        process may hold its file meanwhile.
    person, email, customer_id
        Exactly one: the person id (identity graph; treated as a customer id
        when there is no graph), an e-mail address, or a customer id.
    actor
        Who asks (recorded in the request and the audit log).
    verify
        After the deletes, search every text column for the identifiers and
        report the columns where one is left (``residual``).

    Returns
    -------
    ErasureReport
        Identifiers found per type, rows deleted per table, hashes added.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE orders (order_id VARCHAR, customer_id VARCHAR)")
    >>> wh.execute("INSERT INTO orders VALUES ('o1', 'c1'), ('o2', 'c2')")
    >>> report = erase(wh, customer_id="c1")
    >>> report.rows_deleted, report.state
    ({'orders': 1}, 'done')
    >>> erase(wh, customer_id="c1").total_rows   # idempotent
    0
    """
    subject_type, value = _subject(person, email, customer_id)
    ensure_privacy_tables(wh)
    request_id = uuid.uuid4().hex[:16]
    wh.execute(
        "INSERT INTO erasure_requests (request_id, requested_at, actor, subject_type, "
        "subject_value, state) VALUES (?, ?, ?, ?, ?, 'pending')",
        [request_id, utcnow(), actor, subject_type, value],
    )
    logger.info("erasure request %s (%s) recorded", request_id, subject_type)
    reports = {r.request_id: r for r in resume_erasures(wh, verify=verify)}
    return reports[request_id]


def resume_erasures(wh: Warehouse, *, verify: bool = True) -> list[ErasureReport]:
    """Complete every erasure request left ``pending`` or ``erased`` (e.g. by a crash).

    Examples
    --------
    >>> resume_erasures(Warehouse(":memory:"))
    []
    """
    ensure_privacy_tables(wh)
    pending = wh.fetchall(
        "SELECT request_id, actor, subject_type, subject_value FROM erasure_requests "
        "WHERE state = 'pending' ORDER BY requested_at, request_id"
    )
    for request_id, actor, subject_type, value in pending:
        _erase_rows(wh, request_id, actor, subject_type, value, verify=verify)
    unfinished = [
        r[0]
        for r in wh.fetchall(
            "SELECT request_id FROM erasure_requests WHERE state = 'erased' ORDER BY requested_at"
        )
    ]
    if not unfinished:
        return []
    result = compaction.compact_database(wh)
    now = utcnow()
    with wh.transaction():
        marks = ", ".join("?" for _ in unfinished)
        wh.execute(
            f"UPDATE erasure_requests SET state = 'done', completed_at = ? "
            f"WHERE request_id IN ({marks})",
            [now, *unfinished],
        )
        if result is not None:
            record_audit(
                wh,
                actor="segmint",
                action="compaction",
                details={
                    "requests": unfinished,
                    "bytes_before": result.bytes_before,
                    "bytes_after": result.bytes_after,
                },
                at=now,
            )
    return [_report(wh, request_id) for request_id in unfinished]


def erasure_requests(wh: Warehouse) -> list[ErasureReport]:
    """Every erasure request with its state and counts, oldest first.

    Examples
    --------
    >>> erasure_requests(Warehouse(":memory:"))
    []
    """
    ensure_privacy_tables(wh)
    ids = wh.fetchall("SELECT request_id FROM erasure_requests ORDER BY requested_at, request_id")
    return [_report(wh, r[0]) for r in ids]


def _report(wh: Warehouse, request_id: str) -> ErasureReport:
    row = wh.fetchall(
        "SELECT subject_type, state, CAST(identifiers AS VARCHAR), CAST(rows_deleted AS VARCHAR), "
        "suppressed_added, CAST(residual AS VARCHAR) FROM erasure_requests WHERE request_id = ?",
        [request_id],
    )[0]
    return ErasureReport(
        request_id=request_id,
        subject_type=row[0],
        state=row[1],
        identifiers=json.loads(row[2]) if row[2] else {},
        rows_deleted=json.loads(row[3]) if row[3] else {},
        suppressed_added=int(row[4] or 0),
        residual=tuple(json.loads(row[5]) if row[5] else ()),
        compacted=row[1] == "done" and wh.path != ":memory:",
    )


def _erase_rows(
    wh: Warehouse, request_id: str, actor: str, subject_type: str, value: str, *, verify: bool
) -> None:
    """The one transaction: resolve, delete, suppress, verify, record."""
    with wh.transaction():
        ids = resolve_identifiers(wh, _seeds(subject_type, value))
        deleted = _delete_rows(wh, ids)
        added = add_to_suppression(wh, ids.suppressible(), request_id=request_id)
        wh.execute(
            "UPDATE erasure_requests SET subject_value = NULL WHERE request_id = ?", [request_id]
        )
        residual = find_residual(wh, ids) if verify else []
        now = utcnow()
        wh.execute(
            "UPDATE erasure_requests SET state = 'erased', erased_at = ?, identifiers = ?, "
            "rows_deleted = ?, suppressed_added = ?, residual = ? WHERE request_id = ?",
            [
                now,
                json.dumps(ids.counts()),
                json.dumps(deleted),
                added,
                json.dumps(residual),
                request_id,
            ],
        )
        record_audit(
            wh,
            actor=actor,
            action="erasure",
            details={
                "request_id": request_id,
                "subject_type": subject_type,
                "identifiers": ids.counts(),
                "rows_deleted": deleted,
                "suppressed_added": added,
                "residual": residual,
            },
            at=now,
        )
        wh.execute(f"DROP TABLE IF EXISTS {IDS_TABLE}")
    if residual:
        logger.warning(
            "erasure %s: identifiers remain in %s (not identifier columns)",
            request_id,
            ", ".join(residual),
        )
    logger.info(
        "erasure %s: %d rows deleted from %d tables, %d hashes suppressed",
        request_id,
        sum(deleted.values()),
        len(deleted),
        added,
    )


def _tables(wh: Warehouse, *, include_privacy: bool) -> list[_Target]:
    rows = wh.fetchall(
        "SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
        "FROM information_schema.columns c JOIN information_schema.tables t "
        "ON t.table_catalog = c.table_catalog AND t.table_schema = c.table_schema "
        "AND t.table_name = c.table_name "
        "WHERE t.table_type = 'BASE TABLE' AND t.table_catalog = current_database() "
        "ORDER BY c.table_schema, c.table_name, c.ordinal_position"
    )
    grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, data_type in rows:
        grouped.setdefault((schema, table), []).append((column, data_type))
    return [
        _Target(schema, table, tuple(columns))
        for (schema, table), columns in grouped.items()
        if include_privacy or table not in _PRIVACY_TABLE_NAMES
    ]


def _delete_predicate(target: _Target, pattern: str | None) -> tuple[str, list[Any]] | None:
    roles = {name: classify_column(name) for name, _ in target.columns}
    keys = [name for name, role in roles.items() if role is not None and role.person_key]
    conditions: list[str] = []
    params: list[Any] = []
    types = dict(target.columns)
    for name, role in roles.items():
        if role is None:
            continue
        column = quote(name)
        if role.text:
            if pattern is not None:
                conditions.append(f"regexp_matches(CAST({column} AS VARCHAR), ?)")
                params.append(pattern)
            continue
        if types[name].endswith("[]"):
            condition, kind_params = in_kinds_list(column, role.kinds)
            conditions.append(condition)
            params += kind_params
            continue
        condition, kind_params = in_kinds(column, role.kinds)
        if role.kinds == ("anonymous_id",) and keys:
            # A device row that names another person is theirs (a shared device).
            unidentified = " AND ".join(f"{quote(k)} IS NULL" for k in keys)
            condition = f"({condition} AND {unidentified})"
        conditions.append(condition)
        params += kind_params
    if not conditions:
        return None
    return " OR ".join(conditions), params


def _delete_rows(wh: Warehouse, ids: PersonIdentifiers) -> dict[str, int]:
    """Delete the person's rows from every table with identifier columns."""
    pattern = token_pattern(ids.person_values())
    deleted: dict[str, int] = {}
    for target in _tables(wh, include_privacy=False):
        predicate = _delete_predicate(target, pattern)
        if predicate is None:
            continue
        condition, params = predicate
        rows = wh.fetchall(f"DELETE FROM {target.qualified} WHERE {condition}", params)
        count = int(rows[0][0]) if rows else 0
        if count:
            label = target.name if target.schema == "main" else f"{target.schema}.{target.name}"
            deleted[label] = count
    return deleted


def _is_text(data_type: str) -> bool:
    return data_type in ("VARCHAR", "JSON") or data_type.endswith("[]")


def find_residual(wh: Warehouse, ids: PersonIdentifiers) -> list[str]:
    """Text columns (``table.column``) in which any identifier of the person still occurs.

    Every text, JSON and list column of every table is searched for the
    identifiers as whole tokens -- identifier columns and everything else.
    """
    pattern = token_pattern(ids.person_values())
    if pattern is None:
        return []
    found: list[str] = []
    for target in _tables(wh, include_privacy=True):
        text_columns = [name for name, data_type in target.columns if _is_text(data_type)]
        if not text_columns:
            continue
        counts = wh.fetchall(
            "SELECT "
            + ", ".join(
                f"count(*) FILTER (WHERE regexp_matches(CAST({quote(c)} AS VARCHAR), $pattern))"
                for c in text_columns
            )
            + f" FROM {target.qualified}",
            {"pattern": pattern},
        )[0]
        label = target.name if target.schema == "main" else f"{target.schema}.{target.name}"
        found += [f"{label}.{c}" for c, n in zip(text_columns, counts, strict=True) if n]
    return found
