"""The suppression list: hashes of erased persons' identifiers, checked on every load.

An erased person's identifiers are kept only as hashes, so later data about them
can be recognised and dropped without keeping who they were. Two schemes:

``hmac-sha256:<key id>``
    HMAC-SHA256 under the pseudonymisation key (``SEGMINT_PSEUDONYMIZATION_KEY``),
    used whenever a key is configured. The database alone does not let anyone
    test a guess ("was ada@example.com erased?"): that needs the key, which is
    never stored. The cost: the key must stay available -- a database whose
    list was written under a key refuses to load data without it.
``sha256-salted``
    SHA-256 over a random per-database salt kept in ``privacy_settings``, used
    when no key is configured. It defeats precomputed tables and linking lists
    across databases, but whoever holds the database file holds the salt and can
    test guesses of low-entropy identifiers such as e-mail addresses. Configure
    a key where that matters.

Each hash records its scheme, so lists written before a key was configured keep
working after. Identifiers are normalised before hashing (trimmed; e-mail
addresses lower-cased), and the hash does not depend on the identifier's type:
a customer id erased as ``customer_id`` also blocks events whose ``user_id`` is
that id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from segmint.data.privacy.audit import utcnow
from segmint.data.privacy.pseudonymise import (
    KEY_ENV,
    PrivacySettings,
    key_id,
    load_key,
    normalise_identifier,
)
from segmint.data.privacy.tables import ensure_privacy_tables
from segmint.data.readers import MalformedLine, StagedInput
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

SALTED = "sha256-salted"
HMAC_PREFIX = "hmac-sha256:"
SALT_SETTING = "suppression_salt"
_HMAC_LABEL = b"segmint suppression\x00"

#: Splits raw text (a JSON object, a CSV line) into candidate identifier tokens.
TOKEN_SPLIT = r"[\s\"',;{}\[\]()<>|\\]+"
_TOKEN_SPLIT_RE = re.compile(TOKEN_SPLIT)


@dataclass(frozen=True)
class HashScheme:
    """A way of hashing identifiers for the suppression list (the secret is not shown)."""

    name: str
    secret: bytes = field(repr=False)

    def digest(self, value: str) -> str:
        """Hash an already-normalised identifier."""
        data = value.encode("utf-8")
        if self.name == SALTED:
            return hashlib.sha256(self.secret + b":" + data).hexdigest()
        return hmac.new(self.secret, _HMAC_LABEL + data, hashlib.sha256).hexdigest()


def _salt(wh: Warehouse, *, create: bool) -> bytes | None:
    value = wh.scalar("SELECT value FROM privacy_settings WHERE name = ?", [SALT_SETTING])
    if value is None and create:
        value = secrets.token_hex(32)
        wh.execute("INSERT INTO privacy_settings VALUES (?, ?, ?)", [SALT_SETTING, value, utcnow()])
    return None if value is None else bytes.fromhex(value)


def writing_scheme(wh: Warehouse, settings: PrivacySettings | None = None) -> HashScheme:
    """The scheme new hashes are written with: HMAC under the key if one is configured.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_privacy_tables(wh)
    >>> writing_scheme(wh, PrivacySettings(pseudonymization_key=None)).name
    'sha256-salted'
    >>> writing_scheme(wh, PrivacySettings(pseudonymization_key="k" * 32)).name.startswith("hmac")
    True
    """
    key = load_key(settings)
    if key is not None:
        return HashScheme(HMAC_PREFIX + key_id(key), key)
    salt = _salt(wh, create=True)
    assert salt is not None
    return HashScheme(SALTED, salt)


def reading_schemes(wh: Warehouse, settings: PrivacySettings | None = None) -> list[HashScheme]:
    """The schemes of the hashes on the list, with their secrets.

    Raises
    ------
    UserInputError
        The list holds hashes made under a key that is not configured: without it
        erased persons could not be recognised, so nothing may be loaded.
    """
    if not wh.has_table("suppression_list"):
        return []
    names = [r[0] for r in wh.fetchall("SELECT DISTINCT scheme FROM suppression_list")]
    if not names:
        return []
    schemes = []
    key: bytes | None = None
    for name in sorted(names):
        if name == SALTED:
            salt = _salt(wh, create=False)
            if salt is None:
                raise UserInputError(
                    "the suppression list has salted hashes but the salt is missing "
                    "from privacy_settings; restore it from a backup"
                )
            schemes.append(HashScheme(name, salt))
            continue
        if not name.startswith(HMAC_PREFIX):
            raise UserInputError(f"unknown suppression hash scheme {name!r}")
        key = key if key is not None else load_key(settings)
        wanted = name.removeprefix(HMAC_PREFIX)
        if key is None or key_id(key) != wanted:
            have = "no key is configured" if key is None else f"the configured key is {key_id(key)}"
            raise UserInputError(
                f"the suppression list holds hashes made with the pseudonymisation key "
                f"{wanted} but {have}: set {KEY_ENV} to that key so erased persons stay blocked"
            )
        schemes.append(HashScheme(name, key))
    return schemes


def add_to_suppression(
    wh: Warehouse,
    identifiers: Iterable[tuple[str, str]],
    *,
    request_id: str | None = None,
    settings: PrivacySettings | None = None,
) -> int:
    """Add hashes of ``(identifier_type, value)`` pairs; returns how many were new.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> add_to_suppression(wh, [("email", "Ada@Example.com")])
    1
    >>> add_to_suppression(wh, [("email", "ada@example.com")])   # already listed
    0
    >>> is_suppressed(wh, "ADA@example.com")
    True
    """
    ensure_privacy_tables(wh)
    scheme = writing_scheme(wh, settings)
    rows: dict[str, str] = {}
    for kind, value in identifiers:
        normalised = normalise_identifier(value)
        if normalised is not None:
            rows.setdefault(scheme.digest(normalised), kind)
    if not rows:
        return 0
    table = pa.table(
        {
            "identifier_type": pa.array(list(rows.values()), pa.string()),
            "hash": pa.array(list(rows), pa.string()),
        }
    )
    wh.register("_segmint_new_suppressions", table)
    try:
        added = wh.fetchall(
            "INSERT INTO suppression_list SELECT n.identifier_type, n.hash, ?, ?, ? "
            "FROM _segmint_new_suppressions n WHERE NOT EXISTS (SELECT 1 FROM suppression_list s "
            "WHERE s.scheme = ? AND s.hash = n.hash)",
            [scheme.name, request_id, utcnow(), scheme.name],
        )
    finally:
        wh.unregister("_segmint_new_suppressions")
    return int(added[0][0]) if added else 0


def suppressed_values(
    wh: Warehouse, values: Iterable[str | None], settings: PrivacySettings | None = None
) -> set[str]:
    """The given values (as given) whose normalised form is on the suppression list.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> _ = add_to_suppression(wh, [("customer_id", "c1")])
    >>> sorted(suppressed_values(wh, ["c1", " c1 ", "c2", None]))
    [' c1 ', 'c1']
    """
    schemes = reading_schemes(wh, settings)
    if not schemes:
        return set()
    candidates: dict[str, str] = {}
    for value in values:
        normalised = normalise_identifier(value)
        if normalised is not None and value is not None:
            candidates[value] = normalised
    if not candidates:
        return set()
    raw, hashes, names = [], [], []
    for value, normalised in candidates.items():
        for scheme in schemes:
            raw.append(value)
            hashes.append(scheme.digest(normalised))
            names.append(scheme.name)
    probe = pa.table(
        {
            "value": pa.array(raw, pa.string()),
            "hash": pa.array(hashes, pa.string()),
            "scheme": pa.array(names, pa.string()),
        }
    )
    wh.register("_segmint_suppression_probe", probe)
    try:
        rows = wh.fetchall(
            "SELECT DISTINCT p.value FROM _segmint_suppression_probe p "
            "JOIN suppression_list s ON s.hash = p.hash AND s.scheme = p.scheme"
        )
    finally:
        wh.unregister("_segmint_suppression_probe")
    return {r[0] for r in rows}


def is_suppressed(
    wh: Warehouse, *values: str | None, settings: PrivacySettings | None = None
) -> bool:
    """True when any of the identifiers belongs to an erased (suppressed) person.

    The check the real-time intake makes for each event (user id, anonymous id,
    e-mail), and the one :func:`~segmint.data.privacy.consent.may_use` makes.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> is_suppressed(wh, "c1")
    False
    """
    return bool(suppressed_values(wh, values, settings))


@dataclass(frozen=True)
class SuppressionCount:
    """How many hashes of one identifier type and scheme are on the list."""

    identifier_type: str
    scheme: str
    hashes: int


def suppression_counts(wh: Warehouse) -> list[SuppressionCount]:
    """Counts of the suppression list per identifier type and scheme (never values).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> _ = add_to_suppression(wh, [("email", "a@b.co"), ("customer_id", "c1")])
    >>> [(c.identifier_type, c.hashes) for c in suppression_counts(wh)]
    [('customer_id', 1), ('email', 1)]
    """
    ensure_privacy_tables(wh)
    rows = wh.fetchall(
        "SELECT identifier_type, scheme, count(*) FROM suppression_list "
        "GROUP BY ALL ORDER BY identifier_type, scheme"
    )
    return [SuppressionCount(r[0], r[1], int(r[2])) for r in rows]


# --------------------------------------------------------------------------- ingest

# Validated column -> SQL giving the identifier it holds (per row of the checked batch).
_ROW_IDENTIFIERS = {
    "customer_id": "CAST(customer_id AS VARCHAR)",
    "user_id": "CAST(user_id AS VARCHAR)",
    "anonymous_id": "CAST(anonymous_id AS VARCHAR)",
    "email": "CAST(email AS VARCHAR)",
    "phone": "CAST(phone AS VARCHAR)",
    "loyalty_id": "CAST(loyalty_id AS VARCHAR)",
    "order_id": "CAST(order_id AS VARCHAR)",
    "traits": "json_extract_string(traits, '$.email')",
}


def tokens(text: str | None) -> list[str]:
    """Candidate identifiers in raw text: the whole text and its tokens.

    Examples
    --------
    >>> tokens('c1,Ada@Example.com,"x y"')
    ['c1,Ada@Example.com,"x y"', 'c1', 'Ada@Example.com', 'x', 'y']
    """
    if text is None:
        return []
    return [text, *(t for t in _TOKEN_SPLIT_RE.split(text) if t)]


def drop_suppressed(
    wh: Warehouse, table: str, checked: str, staged: StagedInput
) -> tuple[int, StagedInput]:
    """Delete rows of suppressed persons from a validated batch before it is stored.

    Called by ingestion after validation and before quarantine and dedupe, so a
    suppressed person's rows land nowhere -- not in ``table``, not in quarantine.
    A row is dropped when one of its identifier columns (customer id, user id,
    anonymous id, e-mail, phone, loyalty id, order id, the e-mail in identify
    traits) is suppressed; a row that failed validation, or a malformed line, is
    also dropped when any token of its raw text is.

    Parameters
    ----------
    wh
        The warehouse (inside the load's transaction).
    table
        The canonical table the batch is for.
    checked
        Temporary table of validated rows (``_ordinal``, typed columns, ``_fail_rule``).
    staged
        The staged input.

    Returns
    -------
    tuple[int, StagedInput]
        Rows and malformed lines dropped, and the staged input without those lines.
    """
    schemes = reading_schemes(wh)
    if not schemes:
        return 0, staged
    present = set(wh.columns(checked))
    expressions = [sql for column, sql in _ROW_IDENTIFIERS.items() if column in present]
    candidates = f"{checked}_idv"
    parts = []
    if expressions:
        parts.append(f"SELECT _ordinal, unnest([{', '.join(expressions)}]) AS v FROM {checked}")
    source_columns = [c for c in staged.columns if c != "_ordinal"]
    for column in source_columns:
        text = f"CAST(s.{quote(column)} AS VARCHAR)"
        failed = (
            f"FROM {checked} c JOIN {staged.table} s ON s._ordinal = c._ordinal "
            f"WHERE c._fail_rule IS NOT NULL AND {text} IS NOT NULL"
        )
        parts.append(f"SELECT c._ordinal, trim({text}) AS v {failed}")
        parts.append(f"SELECT c._ordinal, unnest(regexp_split_to_array({text}, ?)) AS v {failed}")
    params = [TOKEN_SPLIT] * sum(1 for p in parts if "regexp_split_to_array" in p)
    dropped = 0
    if parts:
        wh.execute(
            f"CREATE OR REPLACE TEMP TABLE {candidates} AS SELECT * FROM ("
            + " UNION ALL ".join(parts)
            + ") WHERE v IS NOT NULL AND v <> ''",
            params,
        )
        try:
            distinct = [r[0] for r in wh.fetchall(f"SELECT DISTINCT v FROM {candidates}")]
            hits = suppressed_values(wh, distinct)
            if hits:
                wh.register(f"{candidates}_hits", pa.table({"v": pa.array(sorted(hits))}))
                try:
                    removed = wh.fetchall(
                        f"DELETE FROM {checked} WHERE _ordinal IN "
                        f"(SELECT _ordinal FROM {candidates} WHERE v IN "
                        f"(SELECT v FROM {candidates}_hits))"
                    )
                finally:
                    wh.unregister(f"{candidates}_hits")
                dropped = int(removed[0][0]) if removed else 0
        finally:
            wh.execute(f"DROP TABLE IF EXISTS {candidates}")
    kept = _unsuppressed_lines(wh, staged)
    dropped_lines = len(staged.malformed) - len(kept)
    if dropped or dropped_lines:
        logger.info(
            "dropped %d rows and %d malformed lines of suppressed persons from %s",
            dropped,
            dropped_lines,
            staged.file,
        )
    return dropped + dropped_lines, dataclasses.replace(staged, malformed=kept)


def _unsuppressed_lines(wh: Warehouse, staged: StagedInput) -> list[MalformedLine]:
    if not staged.malformed:
        return []
    words = {t for line in staged.malformed for t in tokens(line.raw)}
    hits = suppressed_values(wh, words)
    return [line for line in staged.malformed if not hits.intersection(tokens(line.raw))]
