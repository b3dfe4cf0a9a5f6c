"""API keys and roles: creation, revocation and authentication of presented keys.

A key looks like ``sgm_3f9a2c1d_<43 url-safe characters>``. The middle part is the
public half of its id (``sk_3f9a2c1d``), so a presented key is looked up by id and
its hash compared in constant time. Only the SHA-256 hash of a key is stored, in
``api_keys``; the plaintext is returned once by :func:`create_key` and never
stored or logged.

Clients present a key as ``Authorization: Bearer <key>`` or, like the Segment
SDKs do with their write key, as the HTTP Basic user name
(``Authorization: Basic base64(<key>:)``); :func:`parse_authorization` reads both.

The server authenticates each request in memory with a :class:`KeyCache`, loaded
once and refreshed after a revoke made through the same process. DuckDB lets one
process write a database file, so while ``segmint serve`` runs, keys are managed
through its admin API; the ``segmint keys`` commands work when the server is
stopped.

Writing functions here never open or commit a transaction: callers (the CLI, the
server's writer) group them with other statements in theirs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from segmint.data.privacy.audit import record_audit
from segmint.data.schema import Column, Table, register_table
from segmint.engine import Warehouse
from segmint.errors import DataValidationError, EngineError, UserInputError

logger = logging.getLogger(__name__)

__all__ = [
    "API_KEYS",
    "ApiKeyInfo",
    "KeyCache",
    "Role",
    "allowed",
    "authenticate",
    "create_key",
    "ensure_keys_table",
    "hash_key",
    "list_keys",
    "parse_authorization",
    "parse_role",
    "revoke_key",
]


class Role(StrEnum):
    """What a key may do; every route of the API declares the roles it accepts.

    ``admin``
        Everything, including managing keys.
    ``analyst``
        Read profiles, features, segments, models and reports.
    ``marketer``
        Read segments and their members, with identifiers pseudonymised.
    ``ingest``
        Write events (the tracking API) and nothing else.
    ``auditor``
        Read the audit log, lineage and governance reports.
    """

    admin = "admin"
    analyst = "analyst"
    marketer = "marketer"
    ingest = "ingest"
    auditor = "auditor"


ROLE_HELP: dict[Role, str] = {
    Role.admin: "everything, including managing keys",
    Role.analyst: "read profiles, features, segments, models and reports",
    Role.marketer: "segments and members, identifiers pseudonymised",
    Role.ingest: "write events only",
    Role.auditor: "audit log, lineage and governance reports",
}


class _KeyedTable(Table):
    """A table whose DDL declares its key as the primary key."""

    def ddl(self) -> str:
        keys = ", ".join(f'"{k}"' for k in self.key)
        return super().ddl()[:-1] + f", PRIMARY KEY ({keys}))"


API_KEYS = _KeyedTable(
    "api_keys",
    "API keys of the service: role and SHA-256 hash of each key (never the key).",
    (
        Column("key_id", "string", "Public id of the key, e.g. sk_3f9a2c1d."),
        Column("name", "string", "Label for humans (what or who uses the key)."),
        Column("role", "string", "admin | analyst | marketer | ingest | auditor."),
        Column("key_hash", "string", "Hex SHA-256 digest of the full key."),
        Column("created_at", "timestamp", "When the key was created (UTC)."),
        Column("revoked_at", "timestamp", "When it was revoked (UTC); NULL while active."),
        Column("last_used_at", "timestamp", "When it last authenticated a request (UTC)."),
    ),
    key=("key_id",),
    timestamp_column="created_at",
)
register_table(API_KEYS)

KEY_PREFIX = "sgm"
ID_PREFIX = "sk_"
MAX_NAME_LENGTH = 200
# Longest Authorization value worth decoding; real keys are 56 characters.
MAX_CREDENTIAL_LENGTH = 512
_KEY_PATTERN = re.compile(r"sgm_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_COLUMNS = "key_id, name, role, key_hash, created_at, revoked_at, last_used_at"


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What is known about a key, without its secret or hash.

    Attributes
    ----------
    key_id
        Public id such as ``sk_3f9a2c1d`` (shown in lists and logs, used to revoke).
    name
        Optional label.
    role
        The key's role.
    created_at, revoked_at, last_used_at
        Naive UTC times; ``revoked_at`` is ``None`` while the key is active.

    Examples
    --------
    >>> info = ApiKeyInfo("sk_3f9a2c1d", "etl", Role.ingest, datetime(2026, 1, 1))
    >>> info.active
    True
    """

    key_id: str
    name: str | None
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        """The key has not been revoked."""
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (times in ISO 8601, UTC)."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat() + "Z"

        return {
            "key_id": self.key_id,
            "name": self.name,
            "role": self.role.value,
            "active": self.active,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


def parse_role(text: str | Role) -> Role:
    """The role named ``text`` (case-insensitive).

    Raises
    ------
    UserInputError
        The name is not a role; the message lists the roles.

    Examples
    --------
    >>> parse_role("Analyst")
    <Role.analyst: 'analyst'>
    """
    if isinstance(text, Role):
        return text
    try:
        return Role(str(text).strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise UserInputError(f"unknown role {text!r}; choose one of {known}") from None


def allowed(role: Role, required: Collection[Role]) -> bool:
    """Whether a key of ``role`` may use a route that accepts the ``required`` roles.

    ``admin`` may use every route.

    Examples
    --------
    >>> allowed(Role.marketer, {Role.analyst, Role.marketer})
    True
    >>> allowed(Role.ingest, {Role.analyst})
    False
    >>> allowed(Role.admin, {Role.ingest})
    True
    """
    return role is Role.admin or role in required


def hash_key(key: str) -> str:
    """Hex SHA-256 digest of a full key, as stored in ``api_keys.key_hash``.

    Keys carry 256 random bits, so a fast hash is the accepted practice (as for
    GitHub's and Stripe's tokens): brute force or dictionaries cannot find a key
    from its hash, which is what slow password hashes (bcrypt, Argon2) guard
    against for low-entropy passwords -- at a cost of tens of milliseconds per
    request that the read API's 10 ms p99 cannot afford.

    Examples
    --------
    >>> len(hash_key("sgm_3f9a2c1d_" + "A" * 43))
    64
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _split_key(presented: object) -> str | None:
    """The key id of a well-formed key, else ``None``."""
    if not isinstance(presented, str) or len(presented) > MAX_CREDENTIAL_LENGTH:
        return None
    match = _KEY_PATTERN.fullmatch(presented)
    return None if match is None else ID_PREFIX + match.group(1)


def parse_authorization(header: str | None) -> str | None:
    """The key presented in an ``Authorization`` header, or ``None``.

    Accepts ``Bearer <key>`` and ``Basic base64(<key>:<anything>)`` (the key as
    user name, as the Segment SDKs send their write key). The scheme is
    case-insensitive. Anything else (no header, another scheme, invalid base64,
    no colon, an empty key) gives ``None``. The key's own format is checked by
    :func:`authenticate`.

    Examples
    --------
    >>> parse_authorization("Bearer sgm_x")
    'sgm_x'
    >>> parse_authorization("Basic " + base64.b64encode(b"sgm_x:").decode())
    'sgm_x'
    >>> parse_authorization("Digest abc") is None
    True
    """
    if not header or len(header) > MAX_CREDENTIAL_LENGTH:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not value or any(ch.isspace() for ch in value):
        return None
    scheme = scheme.lower()
    if scheme == "bearer":
        return value
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, _password = decoded.partition(":")
    if not colon or not user or any(ch.isspace() or not ch.isprintable() for ch in user):
        return None
    return user


# ---------------------------------------------------------------------- storage
def ensure_keys_table(wh: Warehouse) -> None:
    """Create ``api_keys`` if it does not exist.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_keys_table(wh)
    >>> wh.has_table("api_keys")
    True
    """
    wh.execute(API_KEYS.ddl())


def _info(row: tuple[Any, ...]) -> ApiKeyInfo:
    key_id, name, role, _hash, created_at, revoked_at, last_used_at = row
    try:
        parsed = Role(role)
    except ValueError:
        raise DataValidationError(
            f"API key {key_id} has an unknown role {role!r}", where="api_keys"
        ) from None
    return ApiKeyInfo(key_id, name, parsed, created_at, revoked_at, last_used_at)


def _get(wh: Warehouse, key_id: str) -> tuple[Any, ...] | None:
    rows = wh.fetchall(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", [key_id])
    return tuple(rows[0]) if rows else None


def _clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name:
        return None
    if len(name) > MAX_NAME_LENGTH:
        raise UserInputError(f"key name is longer than {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise UserInputError("key name contains control characters")
    return name


def create_key(
    wh: Warehouse, role: Role | str, *, name: str | None = None, actor: str = "system"
) -> tuple[ApiKeyInfo, str]:
    """Create a key; returns its description and the key itself.

    The key is returned only here: store it at once, ``api_keys`` keeps its hash.
    The creation is recorded in ``audit_log`` (id and role, never the key).

    Parameters
    ----------
    wh
        The warehouse.
    role
        A :class:`Role` or its name.
    name
        Optional label (what or who uses the key).
    actor
        Who creates it, for the audit log.

    Raises
    ------
    UserInputError
        Unknown role, or a name that is too long or holds control characters.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> info, key = create_key(wh, "ingest", name="web site")
    >>> authenticate(wh, key) == info
    True
    """
    parsed_role = parse_role(role)
    label = _clean_name(name)
    ensure_keys_table(wh)
    for _ in range(16):
        id_part = secrets.token_hex(4)
        key_id = ID_PREFIX + id_part
        if _get(wh, key_id) is None:
            break
    else:  # 16 collisions in a 32-bit id space: the random source is broken
        raise EngineError("could not draw an unused API key id")
    key = f"{KEY_PREFIX}_{id_part}_{secrets.token_urlsafe(32)}"
    info = ApiKeyInfo(key_id, label, parsed_role, _utcnow())
    wh.execute(
        "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL, NULL)",
        [key_id, label, parsed_role.value, hash_key(key), info.created_at],
    )
    record_audit(
        wh,
        actor=actor,
        action="api_key_created",
        details={"key_id": key_id, "role": parsed_role.value},
        at=info.created_at,
    )
    logger.info("created API key %s (role %s)", key_id, parsed_role.value)
    return info, key


def list_keys(wh: Warehouse) -> list[ApiKeyInfo]:
    """Every key, revoked ones included, oldest first (no hashes, no secrets).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> list_keys(wh)
    []
    """
    if not wh.has_table("api_keys"):
        return []
    rows = wh.fetchall(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
    return [_info(row) for row in rows]


def revoke_key(wh: Warehouse, key_id: str, *, actor: str = "system") -> ApiKeyInfo:
    """Revoke a key; revoking a revoked key changes nothing and returns it.

    A server must :meth:`KeyCache.refresh` afterwards for the revoke to apply to
    the keys it holds in memory.

    Raises
    ------
    UserInputError
        No key has this id.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> info, key = create_key(wh, "analyst")
    >>> revoke_key(wh, info.key_id).active
    False
    >>> authenticate(wh, key) is None
    True
    """
    key_id = key_id.strip()
    row = _get(wh, key_id) if wh.has_table("api_keys") else None
    if row is None:
        raise UserInputError(f"no API key with id {key_id!r}")
    info = _info(row)
    if not info.active:
        return info
    revoked_at = _utcnow()
    wh.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [revoked_at, key_id])
    record_audit(
        wh,
        actor=actor,
        action="api_key_revoked",
        details={"key_id": key_id, "role": info.role.value},
        at=revoked_at,
    )
    logger.info("revoked API key %s (role %s)", key_id, info.role.value)
    return ApiKeyInfo(
        info.key_id, info.name, info.role, info.created_at, revoked_at, info.last_used_at
    )


def _matches(presented: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_key(presented), key_hash)


def authenticate(wh: Warehouse, presented_key: str | None) -> ApiKeyInfo | None:
    """The active key ``presented_key`` is, or ``None`` (unknown, malformed, revoked).

    Reads the warehouse on each call; the server uses :class:`KeyCache` instead.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> info, key = create_key(wh, "auditor")
    >>> authenticate(wh, key).role
    <Role.auditor: 'auditor'>
    >>> authenticate(wh, "sgm_not-a-key") is None
    True
    """
    key_id = _split_key(presented_key)
    if key_id is None or not wh.has_table("api_keys"):
        return None
    row = _get(wh, key_id)
    if row is None or row[5] is not None:
        return None
    assert presented_key is not None  # _split_key accepted it
    if not _matches(presented_key, row[3]):
        return None
    try:
        return _info(row)
    except DataValidationError as e:
        logger.warning("refused a key: %s", e)
        return None


class KeyCache:
    """The active keys in memory, for authenticating requests without a query.

    Load it once (:meth:`load`) and call :meth:`refresh` after creating or
    revoking a key through the same process. Uses are remembered in memory and
    written to ``api_keys.last_used_at`` by :meth:`flush_usage`. Thread-safe.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> info, key = create_key(wh, "marketer")
    >>> cache = KeyCache.load(wh)
    >>> cache.authenticate(key).key_id == info.key_id
    True
    >>> _ = revoke_key(wh, info.key_id)
    >>> cache.refresh(wh)
    >>> cache.authenticate(key) is None
    True
    """

    def __init__(self) -> None:
        # key_id -> (hex hash, info); replaced as a whole on refresh.
        self._keys: dict[str, tuple[str, ApiKeyInfo]] = {}
        self._used: dict[str, datetime] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, wh: Warehouse) -> KeyCache:
        """A cache holding the active keys of ``wh``."""
        cache = cls()
        cache.refresh(wh)
        return cache

    def refresh(self, wh: Warehouse) -> None:
        """Reload the active keys (after a key was created or revoked)."""
        rows: Iterable[tuple[Any, ...]] = []
        if wh.has_table("api_keys"):
            rows = wh.fetchall(f"SELECT {_COLUMNS} FROM api_keys WHERE revoked_at IS NULL")
        keys: dict[str, tuple[str, ApiKeyInfo]] = {}
        for row in rows:
            try:
                keys[row[0]] = (row[3], _info(tuple(row)))
            except DataValidationError as e:
                logger.warning("API key not loaded: %s", e)
        self._keys = keys
        logger.debug("loaded %d active API keys", len(keys))

    def authenticate(self, presented_key: str | None) -> ApiKeyInfo | None:
        """The active key ``presented_key`` is, or ``None`` (unknown, malformed, revoked)."""
        key_id = _split_key(presented_key)
        if key_id is None:
            return None
        entry = self._keys.get(key_id)
        if entry is None:
            return None
        key_hash, info = entry
        assert presented_key is not None  # _split_key accepted it
        if not _matches(presented_key, key_hash):
            return None
        with self._lock:
            self._used[key_id] = _utcnow()
        return info

    def flush_usage(self, wh: Warehouse) -> int:
        """Write the last use of each key used since the previous flush; returns how many.

        Opens no transaction: call it inside the writer's.
        """
        with self._lock:
            used, self._used = self._used, {}
        for key_id, at in used.items():
            wh.execute(
                "UPDATE api_keys SET last_used_at = greatest(coalesce(last_used_at, ?), ?) "
                "WHERE key_id = ?",
                [at, at, key_id],
            )
        return len(used)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys
