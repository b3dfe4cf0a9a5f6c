"""Pseudonymisation: keyed HMAC-SHA256 of identifiers, in Python and inside queries.

The key comes from the environment -- ``SEGMINT_PSEUDONYMIZATION_KEY`` (the secret
itself) or ``SEGMINT_PSEUDONYMIZATION_KEY_FILE`` (a file holding it) -- and lives
only in process memory: it is never written to the database, to logs or to
reports. What may be stored is its *key id*, an HMAC of a fixed label, which
tells keys apart without revealing them.

Identifiers are normalised before hashing (surrounding space trimmed, e-mail
addresses lower-cased), so ``" Ada@Example.com"`` and ``"ada@example.com"``
get the same pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from segmint.data.schema import TABLES
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

KEY_ENV = "SEGMINT_PSEUDONYMIZATION_KEY"
KEY_FILE_ENV = "SEGMINT_PSEUDONYMIZATION_KEY_FILE"
#: Shortest key accepted (bytes): HMAC-SHA256 keys shorter than this are guessable.
MIN_KEY_BYTES = 16
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PrivacySettings(BaseSettings):
    """Privacy settings from the environment (``SEGMINT_*``).

    Examples
    --------
    >>> settings = PrivacySettings(pseudonymization_key="0123456789abcdef0123")
    >>> settings.pseudonymization_key          # the secret never shows in a repr
    SecretStr('**********')
    """

    model_config = SettingsConfigDict(env_prefix="SEGMINT_", extra="ignore")

    pseudonymization_key: SecretStr | None = None
    pseudonymization_key_file: Path | None = None


def load_key(settings: PrivacySettings | None = None) -> bytes | None:
    """The configured pseudonymisation key, or ``None`` when none is configured.

    Raises
    ------
    UserInputError
        Both the key and a key file are set, the key file cannot be read, or the
        key is shorter than :data:`MIN_KEY_BYTES`.

    Examples
    --------
    >>> load_key(PrivacySettings(pseudonymization_key=None, pseudonymization_key_file=None))
    >>> len(load_key(PrivacySettings(pseudonymization_key="s" * 32)))
    32
    """
    settings = settings if settings is not None else PrivacySettings()
    secret, path = settings.pseudonymization_key, settings.pseudonymization_key_file
    if secret is not None and path is not None:
        raise UserInputError(f"set either {KEY_ENV} or {KEY_FILE_ENV}, not both")
    if secret is not None:
        key = secret.get_secret_value().encode("utf-8")
        origin = KEY_ENV
    elif path is not None:
        try:
            key = path.expanduser().read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise UserInputError(
                f"cannot read the pseudonymisation key file: {e.strerror or e}",
                where=f"{KEY_FILE_ENV}={path}",
            ) from e
        origin = KEY_FILE_ENV
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise UserInputError(
            f"the pseudonymisation key from {origin} is too short: use at least "
            f"{MIN_KEY_BYTES} bytes of secret (e.g. `openssl rand -hex 32`)"
        )
    return key


def require_key(settings: PrivacySettings | None = None) -> bytes:
    """The configured pseudonymisation key; an error naming the variable when there is none.

    Examples
    --------
    >>> require_key(PrivacySettings(pseudonymization_key=None))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    segmint.errors.UserInputError: no pseudonymisation key: set SEGMINT_PSEUDONYMIZATION_KEY ...
    """
    key = load_key(settings)
    if key is None:
        raise UserInputError(
            f"no pseudonymisation key: set {KEY_ENV} to a secret of at least "
            f"{MIN_KEY_BYTES} bytes (or {KEY_FILE_ENV} to a file holding it)"
        )
    return key


def key_id(key: bytes) -> str:
    """A short public id of a key (safe to store): tells keys apart, reveals nothing.

    Examples
    --------
    >>> key_id(b"0123456789abcdef") == key_id(b"0123456789abcdef")
    True
    >>> len(key_id(b"0123456789abcdef"))
    16
    """
    return hmac.new(key, b"segmint key id", hashlib.sha256).hexdigest()[:16]


def normalise_identifier(value: str | None) -> str | None:
    """Trim an identifier and lower-case it if it is an e-mail address; empty is ``None``.

    Examples
    --------
    >>> normalise_identifier("  Ada@Example.COM ")
    'ada@example.com'
    >>> normalise_identifier(" C-17 ")
    'C-17'
    >>> normalise_identifier("   ") is None
    True
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    return text.lower() if "@" in text else text


def pseudonymise(value: str, key: bytes) -> str:
    """HMAC-SHA256 of the normalised identifier, as 64 hex characters.

    Examples
    --------
    >>> key = b"0123456789abcdef0123456789abcdef"
    >>> pseudonymise("Ada@Example.com", key) == pseudonymise("ada@example.com ", key)
    True
    >>> len(pseudonymise("c1", key))
    64
    """
    normalised = normalise_identifier(value)
    if normalised is None:
        raise UserInputError("cannot pseudonymise an empty identifier")
    return hmac.new(key, normalised.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonymise_array(values: pa.Array | pa.ChunkedArray, key: bytes) -> pa.Array:
    """Pseudonymise an Arrow array of identifiers; nulls and blanks stay null.

    Examples
    --------
    >>> key = b"0123456789abcdef0123456789abcdef"
    >>> out = pseudonymise_array(pa.array(["c1", None]), key)
    >>> out[1].as_py() is None, out[0].as_py() == pseudonymise("c1", key)
    (True, True)
    """
    out: list[str | None] = []
    for value in values.to_pylist():
        normalised = normalise_identifier(None if value is None else str(value))
        out.append(
            None
            if normalised is None
            else hmac.new(key, normalised.encode("utf-8"), hashlib.sha256).hexdigest()
        )
    return pa.array(out, pa.string())


def register_pseudonymise_function(
    wh: Warehouse, key: bytes | None = None, *, name: str = "pseudonymise"
) -> str:
    """Make ``name(VARCHAR) -> VARCHAR`` available to SQL on this connection.

    The function is an Arrow-batched Python UDF holding the key in memory; it is
    not stored in the database and disappears when the connection closes (also
    when the warehouse is compacted after an erasure). Without ``key``, the
    configured key is used (an error if there is none).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> key = b"0123456789abcdef0123456789abcdef"
    >>> register_pseudonymise_function(wh, key)
    'pseudonymise'
    >>> wh.scalar("SELECT pseudonymise(' Ada@Example.com')") == pseudonymise("ada@example.com", key)
    True
    """
    from duckdb.func import FunctionNullHandling, PythonUDFType
    from duckdb.sqltypes import VARCHAR

    if not _NAME.match(name):
        raise UserInputError(f"not a valid function name: {name!r}")
    secret = key if key is not None else require_key()

    def _udf(values: pa.Array) -> pa.Array:
        return pseudonymise_array(values, secret)

    with wh._lock:
        try:
            wh.con.remove_function(name)
        except Exception:  # noqa: BLE001 - not registered yet
            pass
        wh.con.create_function(
            name,
            _udf,
            [VARCHAR],
            VARCHAR,
            type=PythonUDFType.ARROW,
            null_handling=FunctionNullHandling.SPECIAL,
            side_effects=False,
        )
    logger.info("registered SQL function %s (key id %s)", name, key_id(secret))
    return name


def default_pseudonymised_columns(wh: Warehouse, table: str) -> tuple[list[str], list[str]]:
    """The PII columns of ``table``: (text columns to pseudonymise, other columns to drop).

    PII columns are those flagged in the data dictionary, or, for tables it does
    not describe, columns named like identifiers or raw payloads.
    """
    from segmint.data.privacy.identifiers import classify_column

    types = dict(
        wh.fetchall(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        )
    )
    described = TABLES.get(table)
    hashed: list[str] = []
    dropped: list[str] = []
    for column, data_type in types.items():
        if described is not None and column in {c.name for c in described.columns}:
            pii = described.column(column).pii
        else:
            pii = classify_column(column) is not None
        if not pii:
            continue
        role = classify_column(column)
        if data_type == "VARCHAR" and not (role is not None and role.text):
            hashed.append(column)
        else:
            dropped.append(column)
    return hashed, dropped


def create_pseudonymised_view(
    wh: Warehouse,
    table: str,
    columns: Sequence[str] | None = None,
    key: bytes | None = None,
    *,
    view: str | None = None,
) -> str:
    """Create a temporary view of ``table`` with identifier columns pseudonymised.

    Parameters
    ----------
    wh
        The warehouse.
    table
        Table to expose.
    columns
        Columns to pseudonymise (cast to text first). By default every PII column:
        text identifiers are pseudonymised, and PII that is not an identifier
        (dates of birth, JSON payloads, raw rows) is left out of the view.
    key
        The pseudonymisation key; the configured one when omitted.
    view
        Name of the view (default ``<table>_pseudonymised``).

    Returns
    -------
    str
        The view's name. The view is temporary: it lives on this connection only,
        like the function it calls, so exports and analytics read it in-process.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE customers (customer_id VARCHAR, age INTEGER)")
    >>> wh.execute("INSERT INTO customers VALUES ('c1', 30)")
    >>> name = create_pseudonymised_view(wh, "customers", ["customer_id"], b"k" * 32)
    >>> wh.fetchall(f"SELECT length(customer_id), age FROM {name}")
    [(64, 30)]
    """
    if not wh.has_table(table):
        raise UserInputError(f"unknown table {table!r}")
    present = wh.columns(table)
    if columns is None:
        hashed, dropped = default_pseudonymised_columns(wh, table)
    else:
        unknown = [c for c in columns if c not in present]
        if unknown:
            raise UserInputError(
                f"{', '.join(map(repr, unknown))} not in {table} (columns: {', '.join(present)})"
            )
        hashed, dropped = list(dict.fromkeys(columns)), []
    name = view or f"{table}_pseudonymised"
    function = register_pseudonymise_function(wh, key, name="segmint_pseudonymise")
    select = "*"
    if dropped:
        select += f" EXCLUDE ({', '.join(quote(c) for c in dropped)})"
    if hashed:
        select += (
            " REPLACE ("
            + ", ".join(f"{function}(CAST({quote(c)} AS VARCHAR)) AS {quote(c)}" for c in hashed)
            + ")"
        )
    wh.execute(f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS SELECT {select} FROM {quote(table)}")
    logger.info(
        "created view %s: %d columns pseudonymised, %d left out", name, len(hashed), len(dropped)
    )
    return name
