"""Which columns hold identifiers, and every identifier of one person.

Columns are recognised by name, so tables written later (identity graph,
memberships, dead letters, ...) are covered without registering them here:

* *person keys* -- ``customer_id``, ``person_id``, ``user_id`` and their paired
  forms (``customer_id_l``, ``survivor_person_id``, ``id_l``, ...);
* *typed identifiers* -- ``email``, ``phone``, ``anonymous_id``, ``loyalty_id``;
* *record keys* -- ``order_id``, ``message_id`` (the person's orders and events);
* *any identifier* -- ``identifier_value``, ``survivor_key``, ``merged_key``,
  ``ref``, paired ``value_a`` / ``value_b``;
* *raw text* -- ``raw``, ``payload``, ``properties``, ``traits``, ``context``,
  ``identifiers``: searched for the identifiers as whole tokens.

List columns (``person_ids``, ``other_person_ids``) match when any element does.

:func:`resolve_identifiers` grows a seed identifier into all identifiers of the
person: through the ``identities`` table when it exists, the ``customers``
records sharing an identifier, customer merges in ``dedupe_merges``, and the
devices (``anonymous_id``) seen on the person's identified events.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from segmint.data.privacy.pseudonymise import normalise_identifier
from segmint.engine import Warehouse
from segmint.engine.dialect import quote

logger = logging.getLogger(__name__)

#: Kinds of identifier that belong to a person (suppressed and searched in raw text).
PERSON_KINDS: tuple[str, ...] = (
    "customer_id",
    "person_id",
    "email",
    "phone",
    "anonymous_id",
    "loyalty_id",
    "other",
)
#: Kinds of key of the person's records (deleted with the person; orders also suppressed).
RECORD_KINDS: tuple[str, ...] = ("order_id", "message_id")
KEY_KINDS: tuple[str, ...] = ("customer_id", "person_id")

_KEY_NAMES = {"customer_id", "person_id", "user_id", "id_l", "id_r", "unique_id_l", "unique_id_r"}
_TYPED_NAMES = {
    "email": ("email",),
    "phone": ("phone",),
    "anonymous_id": ("anonymous_id",),
    "loyalty_id": ("loyalty_id",),
    "order_id": ("order_id",),
    "message_id": ("message_id",),
}
_ANY_NAMES = {"identifier_value", "identifier", "survivor_key", "merged_key", "ref"}
TEXT_NAMES = frozenset({"raw", "payload", "properties", "traits", "context", "identifiers"})
_PREFIXES = (
    "other_",
    "left_",
    "right_",
    "from_",
    "to_",
    "survivor_",
    "surviving_",
    "merged_",
    "old_",
    "new_",
    "source_",
    "target_",
    "canonical_",
    "winner_",
    "loser_",
    "previous_",
)
_SUFFIXES = ("_l", "_r", "_left", "_right", "_a", "_b", "_1", "_2", "_old", "_new")

# Identifier identities.identifier_type -> kind.
_TYPE_KINDS = {
    "customer_id": "customer_id",
    "customer": "customer_id",
    "crm_id": "customer_id",
    "user_id": "customer_id",
    "userid": "customer_id",
    "person_id": "person_id",
    "email": "email",
    "phone": "phone",
    "anonymous_id": "anonymous_id",
    "anonymousid": "anonymous_id",
    "device_id": "anonymous_id",
    "loyalty_id": "loyalty_id",
}

# A character that can be part of an identifier: a match needs none on either side.
_ID_CHAR = r"A-Za-z0-9_@+\-"
_META = re.compile(r"([\\.^$|?*+()\[\]{}\-])")


@dataclass(frozen=True)
class ColumnRole:
    """What a column holds: identifier kinds (``None``: any kind) or raw text."""

    kinds: tuple[str, ...] | None = None
    text: bool = False

    @property
    def person_key(self) -> bool:
        return self.kinds == KEY_KINDS


def _strip(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
            break
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return name


def classify_column(name: str) -> ColumnRole | None:
    """The role of a column by its name, or ``None`` if it holds no identifier.

    Examples
    --------
    >>> classify_column("customer_id_l").kinds
    ('customer_id', 'person_id')
    >>> classify_column("email").kinds
    ('email',)
    >>> classify_column("survivor_key").kinds is None
    True
    >>> classify_column("raw").text
    True
    >>> classify_column("other_person_ids").kinds, classify_column("value_b").kinds
    (('customer_id', 'person_id'), None)
    >>> classify_column("amount") is None
    True
    """
    lowered = name.lower()
    if lowered in TEXT_NAMES:
        return ColumnRole(text=True)
    if lowered in _ANY_NAMES:
        return ColumnRole(kinds=None)
    forms = [lowered, lowered[:-1]] if lowered.endswith("_ids") else [lowered]
    for candidate in (*forms, *(_strip(f) for f in forms)):
        if candidate in _KEY_NAMES:
            return ColumnRole(kinds=KEY_KINDS)
        if candidate in _TYPED_NAMES:
            return ColumnRole(kinds=_TYPED_NAMES[candidate])
        if candidate in _ANY_NAMES:
            return ColumnRole(kinds=None)
    if lowered != "value" and _strip(lowered) == "value":  # value_a, value_b, ... of a pair
        return ColumnRole(kinds=None)
    return None


def normalised_sql(expression: str) -> str:
    """SQL normalising an identifier like :func:`normalise_identifier` does."""
    text = f"CAST({expression} AS VARCHAR)"
    return f"CASE WHEN contains({text}, '@') THEN lower(trim({text})) ELSE trim({text}) END"


def token_pattern(values: Iterable[str]) -> str | None:
    """A regular expression matching any value as a whole token (e-mails in any case).

    Examples
    --------
    >>> import re
    >>> pattern = token_pattern(["c1", "ada@example.com"])
    >>> bool(re.search(pattern, '{"id": "c1"}')), bool(re.search(pattern, '{"id": "c12"}'))
    (True, False)
    >>> bool(re.search(pattern, '{"id": "C1"}'))
    False
    >>> bool(re.search(pattern, "mail ADA@example.com."))
    True
    """
    unique = sorted({v for v in values if v}, key=lambda v: (-len(v), v))
    if not unique:
        return None
    alternatives = "|".join(f"(?i:{_escape(v)})" if "@" in v else _escape(v) for v in unique)
    return f"(?:^|[^{_ID_CHAR}])(?:{alternatives})(?:$|[^{_ID_CHAR}])"


def _escape(value: str) -> str:
    """Escape regex metacharacters the same way for Python's re and DuckDB's RE2."""
    return _META.sub(r"\\\1", value)


@dataclass
class PersonIdentifiers:
    """Every identifier of one person, by kind, normalised.

    ``shared_devices`` are anonymous ids also seen on other persons' events: the
    person's anonymous rows on them are erased, but they are not suppressed.
    """

    by_kind: dict[str, set[str]] = field(default_factory=dict)
    shared_devices: set[str] = field(default_factory=set)

    def add(self, kind: str, value: object) -> bool:
        """Add one identifier; True when it is new."""
        normalised = normalise_identifier(None if value is None else str(value))
        if normalised is None:
            return False
        values = self.by_kind.setdefault(kind, set())
        if normalised in values:
            return False
        values.add(normalised)
        return True

    def values(self, kinds: Iterable[str] | None = None) -> set[str]:
        wanted = self.by_kind if kinds is None else {k: self.by_kind.get(k, set()) for k in kinds}
        return {v for values in wanted.values() for v in values}

    def person_values(self) -> set[str]:
        """Identifiers of the person (no record keys, no shared devices)."""
        return self.values(PERSON_KINDS) - self.shared_devices

    def suppressible(self) -> list[tuple[str, str]]:
        """(kind, value) pairs that go on the suppression list."""
        pairs = {
            (kind, value)
            for kind in (*PERSON_KINDS, "order_id")
            for value in self.by_kind.get(kind, set())
            if not (kind == "anonymous_id" and value in self.shared_devices)
        }
        return sorted(pairs)

    def counts(self) -> dict[str, int]:
        counts = {kind: len(values) for kind, values in sorted(self.by_kind.items()) if values}
        if self.shared_devices:
            counts["shared_anonymous_id"] = len(self.shared_devices)
        return counts

    def arrow(self) -> pa.Table:
        rows = sorted((k, v) for k, values in self.by_kind.items() for v in values)
        return pa.table(
            {
                "kind": pa.array([k for k, _ in rows], pa.string()),
                "value": pa.array([v for _, v in rows], pa.string()),
            }
        )


IDS_TABLE = "_segmint_erasure_ids"


def stage_identifiers(wh: Warehouse, ids: PersonIdentifiers) -> str:
    """Write the identifiers to a temporary table (never stored in the file)."""
    wh.register("_segmint_erasure_ids_arrow", ids.arrow())
    try:
        wh.execute(
            f"CREATE OR REPLACE TEMP TABLE {IDS_TABLE} AS SELECT * FROM _segmint_erasure_ids_arrow"
        )
    finally:
        wh.unregister("_segmint_erasure_ids_arrow")
    return IDS_TABLE


def in_kinds(expression: str, kinds: Iterable[str] | None) -> tuple[str, list[str]]:
    """``<normalised expression> IN (identifiers of these kinds)`` and its parameters."""
    if kinds is None:
        return f"{normalised_sql(expression)} IN (SELECT value FROM {IDS_TABLE})", []
    kinds = list(kinds)
    marks = ", ".join("?" for _ in kinds)
    return (
        f"{normalised_sql(expression)} IN (SELECT value FROM {IDS_TABLE} WHERE kind IN ({marks}))",
        kinds,
    )


def in_kinds_list(expression: str, kinds: Iterable[str] | None) -> tuple[str, list[str]]:
    """A list column holds any identifier of these kinds (elements are compared as stored)."""
    where, params = "", []
    if kinds is not None:
        params = list(kinds)
        where = f" WHERE kind IN ({', '.join('?' for _ in params)})"
    return (
        f"coalesce(list_has_any(CAST({expression} AS VARCHAR[]), "
        f"(SELECT list(value) FROM {IDS_TABLE}{where})), false)",
        params,
    )


def _table_columns(wh: Warehouse, table: str) -> list[str]:
    return wh.columns(table) if wh.has_table(table) else []


def resolve_identifiers(
    wh: Warehouse, seeds: Iterable[tuple[str, str]], *, max_rounds: int = 20
) -> PersonIdentifiers:
    """All identifiers of the person one or more seed identifiers name.

    Parameters
    ----------
    wh
        The warehouse.
    seeds
        ``(kind, value)`` pairs, e.g. ``[("email", "ada@example.com")]``.
    max_rounds
        Bound on the expansion rounds (each follows one more link).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE customers (customer_id VARCHAR, email VARCHAR, "
    ...            "phone VARCHAR, loyalty_id VARCHAR)")
    >>> wh.execute("INSERT INTO customers VALUES ('c1', 'ada@example.com', NULL, 'L7')")
    >>> ids = resolve_identifiers(wh, [("email", "Ada@Example.com")])
    >>> sorted(ids.values())
    ['L7', 'ada@example.com', 'c1']
    """
    ids = PersonIdentifiers()
    for kind, value in seeds:
        ids.add(kind, value)
    for _ in range(max_rounds):
        stage_identifiers(wh, ids)
        found = _expand(wh, ids)
        if not found:
            break
    stage_identifiers(wh, ids)
    _add_records(wh, ids)
    _find_shared_devices(wh, ids)
    stage_identifiers(wh, ids)
    logger.info("resolved identifiers: %s", ids.counts())
    return ids


def _expand(wh: Warehouse, ids: PersonIdentifiers) -> bool:
    """One round of following links; True when anything new was found."""
    new = False
    new |= _from_identities(wh, ids)
    new |= _from_customers(wh, ids)
    new |= _from_customer_merges(wh, ids)
    new |= _from_events(wh, ids)
    return new


def _from_identities(wh: Warehouse, ids: PersonIdentifiers) -> bool:
    columns = _table_columns(wh, "identities")
    if not {"identifier_value", "person_id"} <= set(columns):
        return False
    by_value, params = in_kinds("identifier_value", None)
    by_person, person_params = in_kinds("person_id", KEY_KINDS)
    persons = f"SELECT person_id FROM identities WHERE {by_value} OR {by_person}"
    type_column = "identifier_type" if "identifier_type" in columns else "NULL"
    rows = wh.fetchall(
        f"SELECT DISTINCT CAST({type_column} AS VARCHAR), CAST(identifier_value AS VARCHAR), "
        f"CAST(person_id AS VARCHAR) FROM identities WHERE person_id IN ({persons})",
        [*params, *person_params],
    )
    new = False
    for identifier_type, value, person in rows:
        kind = _TYPE_KINDS.get(str(identifier_type or "").strip().lower(), "other")
        new |= ids.add(kind, value)
        new |= ids.add("person_id", person)
    return new


def _from_customers(wh: Warehouse, ids: PersonIdentifiers) -> bool:
    columns = set(_table_columns(wh, "customers"))
    present = [c for c in ("customer_id", "email", "phone", "loyalty_id") if c in columns]
    if not present:
        return False
    conditions, params = [], []
    for column in present:
        kinds = KEY_KINDS if column == "customer_id" else (column,)
        condition, kind_params = in_kinds(column, kinds)
        conditions.append(condition)
        params += kind_params
    rows = wh.fetchall(
        f"SELECT {', '.join(quote(c) for c in present)} FROM customers "
        f"WHERE {' OR '.join(conditions)}",
        params,
    )
    new = False
    for row in rows:
        for column, value in zip(present, row, strict=True):
            new |= ids.add(column, value)
    return new


def _from_customer_merges(wh: Warehouse, ids: PersonIdentifiers) -> bool:
    if not {"survivor_key", "merged_key", "table_name"} <= set(_table_columns(wh, "dedupe_merges")):
        return False
    survivor, p1 = in_kinds("survivor_key", None)
    merged, p2 = in_kinds("merged_key", None)
    rows = wh.fetchall(
        f"SELECT survivor_key, merged_key FROM dedupe_merges WHERE table_name = 'customers' "
        f"AND ({survivor} OR {merged})",
        [*p1, *p2],
    )
    new = False
    for survivor_key, merged_key in rows:
        for value in (survivor_key, merged_key):
            kind = "email" if value is not None and "@" in str(value) else "customer_id"
            new |= ids.add(kind, value)
    return new


def _from_events(wh: Warehouse, ids: PersonIdentifiers) -> bool:
    if not {"user_id", "anonymous_id"} <= set(_table_columns(wh, "events")):
        return False
    condition, params = in_kinds("user_id", KEY_KINDS)
    rows = wh.fetchall(
        f"SELECT DISTINCT anonymous_id FROM events WHERE anonymous_id IS NOT NULL AND {condition}",
        params,
    )
    new = False
    for (anonymous_id,) in rows:
        new |= ids.add("anonymous_id", anonymous_id)
    return new


def _add_records(wh: Warehouse, ids: PersonIdentifiers) -> None:
    """The keys of the person's orders and events."""
    if {"order_id", "customer_id"} <= set(_table_columns(wh, "orders")):
        condition, params = in_kinds("customer_id", KEY_KINDS)
        for (order_id,) in wh.fetchall(
            f"SELECT DISTINCT order_id FROM orders WHERE {condition}", params
        ):
            ids.add("order_id", order_id)
    events = set(_table_columns(wh, "events"))
    if "message_id" in events:
        conditions, params = [], []
        if "user_id" in events:
            condition, params = in_kinds("user_id", KEY_KINDS)
            conditions.append(condition)
        if "anonymous_id" in events:
            # Anonymous events only: identified events on a shared device are someone else's.
            condition, kind_params = in_kinds("anonymous_id", ("anonymous_id",))
            unidentified = " AND user_id IS NULL" if "user_id" in events else ""
            conditions.append(f"({condition}{unidentified})")
            params = [*params, *kind_params]
        if conditions:
            for (message_id,) in wh.fetchall(
                f"SELECT DISTINCT message_id FROM events WHERE {' OR '.join(conditions)}", params
            ):
                ids.add("message_id", message_id)


def _find_shared_devices(wh: Warehouse, ids: PersonIdentifiers) -> None:
    """Anonymous ids that also appear on another person's identified events."""
    if not ids.by_kind.get("anonymous_id"):
        return
    if not {"user_id", "anonymous_id"} <= set(_table_columns(wh, "events")):
        return
    device, p1 = in_kinds("anonymous_id", ("anonymous_id",))
    person, p2 = in_kinds("user_id", KEY_KINDS)
    rows = wh.fetchall(
        f"SELECT DISTINCT anonymous_id FROM events WHERE {device} AND user_id IS NOT NULL "
        f"AND NOT ({person})",
        [*p1, *p2],
    )
    ids.shared_devices = {str(normalise_identifier(r[0])) for r in rows}
