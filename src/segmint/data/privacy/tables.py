"""The bookkeeping tables of the privacy layer, registered in the data dictionary.

``suppression_list``, ``privacy_settings``, ``erasure_requests`` and ``audit_log``
are created with the canonical tables (:func:`segmint.data.store.ensure_tables`)
once this module is imported; :func:`ensure_privacy_tables` creates them on
their own for callers that work on a bare warehouse.
"""

from __future__ import annotations

from segmint.data.schema import Column, Table, register_table
from segmint.engine import Warehouse

SUPPRESSION_LIST = Table(
    "suppression_list",
    "Keyed hashes of the identifiers of erased persons; rows carrying one are never loaded.",
    (
        Column(
            "identifier_type",
            "string",
            "customer_id | person_id | email | phone | anonymous_id | loyalty_id | order_id "
            "| other.",
        ),
        Column("hash", "string", "Hex digest of the normalised identifier (never the value)."),
        Column(
            "scheme",
            "string",
            "How the hash was made: 'hmac-sha256:<key id>' (pseudonymisation key) or "
            "'sha256-salted' (per-database salt in privacy_settings).",
        ),
        Column("request_id", "string", "Erasure request that added the hash."),
        Column("added_at", "timestamp", "When (UTC)."),
    ),
    key=("scheme", "hash"),
    timestamp_column="added_at",
)

PRIVACY_SETTINGS = Table(
    "privacy_settings",
    "Settings of the privacy layer kept with the data (e.g. the suppression salt).",
    (
        Column("name", "string", "Setting name."),
        Column("value", "string", "Setting value."),
        Column("updated_at", "timestamp", "When it was set (UTC)."),
    ),
    key=("name",),
)

ERASURE_REQUESTS = Table(
    "erasure_requests",
    "Erasure requests and their progress; the subject's value is cleared once erased.",
    (
        Column("request_id", "string", "Request identifier."),
        Column("requested_at", "timestamp", "When the request was made (UTC)."),
        Column("actor", "string", "Who asked for the erasure (user, service, 'cli')."),
        Column("subject_type", "string", "person | email | customer_id."),
        Column(
            "subject_value",
            "string",
            "The identifier to erase; kept only while the request is pending.",
            pii=True,
        ),
        Column("state", "string", "pending | erased (compaction pending) | done."),
        Column("erased_at", "timestamp", "When the rows were deleted (UTC)."),
        Column("completed_at", "timestamp", "When the database file was compacted (UTC)."),
        Column("identifiers", "json", "Identifiers found, counted per type (no values)."),
        Column("rows_deleted", "json", "Rows deleted per table."),
        Column("suppressed_added", "integer", "Hashes added to the suppression list."),
        Column(
            "residual", "json", "Columns still holding an identifier after the deletes (table.col)."
        ),
    ),
    key=("request_id",),
    timestamp_column="requested_at",
)

AUDIT_LOG = Table(
    "audit_log",
    "Who did what and when: erasures, retention runs, compactions (never erased values).",
    (
        Column("audit_id", "string", "Entry identifier."),
        Column("at", "timestamp", "When (UTC)."),
        Column("actor", "string", "Who (user, service, 'cli')."),
        Column("action", "string", "erasure | retention | compaction | ..."),
        Column("details", "json", "What: tables and row counts, request ids, settings."),
    ),
    key=("audit_id",),
    timestamp_column="at",
)

PRIVACY_TABLES: tuple[Table, ...] = (
    SUPPRESSION_LIST,
    PRIVACY_SETTINGS,
    ERASURE_REQUESTS,
    AUDIT_LOG,
)

for _table in PRIVACY_TABLES:
    register_table(_table)


def ensure_privacy_tables(wh: Warehouse) -> None:
    """Create the privacy tables that do not exist yet.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_privacy_tables(wh)
    >>> wh.has_table("suppression_list")
    True
    """
    for table in PRIVACY_TABLES:
        wh.execute(table.ddl())
