"""The canonical data model: every table segmint writes, with meaning and PII flags.

Source tables (``customers``, ``orders``, ...) have *user columns*, which a source
maps onto, and *lineage columns* (prefixed ``_``) that ingestion fills in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Logical type -> DuckDB column type. Other backends get theirs from SQLGlot.
SQL_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "json": "JSON",
    "string[]": "VARCHAR[]",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    meaning: str
    pii: bool = False
    required: bool = False
    normalise: str | None = None  # email | phone | country | lower

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.type]


@dataclass(frozen=True)
class Table:
    name: str
    meaning: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    source_kind: bool = False
    timestamp_column: str | None = None
    # Each entry is a key: a column, or a tuple of columns forming one composite key.
    default_dedupe_keys: tuple[str | tuple[str, ...], ...] = field(default=())

    def user_columns(self) -> list[str]:
        return [c.name for c in self.columns if not c.name.startswith("_")]

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def ddl(self) -> str:
        body = ", ".join(f'"{c.name}" {c.sql_type}' for c in self.columns)
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" ({body})'


def _lineage() -> tuple[Column, ...]:
    return (
        Column("_source", "string", "Name of the source in the project file."),
        Column("_file", "string", "File the row was read from (or 'frame:<name>')."),
        Column(
            "_line", "integer", "Line (CSV/JSONL, header is line 1) or row (Parquet) in the file."
        ),
        Column("_load_id", "string", "Load that wrote the row (see the loads table)."),
        Column("_loaded_at", "timestamp", "When the row was loaded (UTC)."),
        Column("_imputed", "string[]", "Columns whose value was imputed, not observed."),
    )


CUSTOMERS = Table(
    "customers",
    "CRM records: one row per customer after deduplication.",
    (
        Column(
            "customer_id",
            "string",
            "Customer identifier in the source CRM.",
            pii=True,
            required=True,
        ),
        Column(
            "email",
            "string",
            "E-mail address, trimmed and lower-cased.",
            pii=True,
            normalise="email",
        ),
        Column("phone", "string", "Phone number in E.164 form.", pii=True, normalise="phone"),
        Column("first_name", "string", "Given name.", pii=True),
        Column("last_name", "string", "Family name.", pii=True),
        Column("birth_date", "date", "Date of birth.", pii=True),
        Column("age", "integer", "Age in years as recorded in the CRM."),
        Column(
            "gender", "string", "Gender as recorded (free text, lower-cased).", normalise="lower"
        ),
        Column("street", "string", "Street address.", pii=True),
        Column("city", "string", "City.", pii=True),
        Column("postcode", "string", "Postal code.", pii=True),
        Column("country", "string", "ISO 3166-1 alpha-2 country code.", normalise="country"),
        Column("signup_at", "timestamp", "When the customer signed up (UTC)."),
        Column("updated_at", "timestamp", "When the CRM record last changed (UTC)."),
        Column("loyalty_id", "string", "Loyalty-programme number.", pii=True),
        Column("income", "float", "Household income estimate."),
        *_lineage(),
    ),
    key=("customer_id",),
    source_kind=True,
    timestamp_column="updated_at",
    default_dedupe_keys=("customer_id", "email"),
)

ORDERS = Table(
    "orders",
    "Orders: one row per order.",
    (
        Column("order_id", "string", "Order identifier.", required=True),
        Column("customer_id", "string", "Customer who placed the order.", pii=True, required=True),
        Column("ordered_at", "timestamp", "When the order was placed (UTC).", required=True),
        Column(
            "amount", "float", "Order total after discounts, in the order currency.", required=True
        ),
        Column("currency", "string", "ISO 4217 currency code."),
        Column("discount", "float", "Discount granted on the order (>= 0)."),
        Column("channel", "string", "Sales channel (web, app, store, ...).", normalise="lower"),
        Column(
            "status",
            "string",
            "Order status (completed, returned, cancelled, ...).",
            normalise="lower",
        ),
        *_lineage(),
    ),
    key=("order_id",),
    source_kind=True,
    timestamp_column="ordered_at",
    default_dedupe_keys=("order_id",),
)

ORDER_ITEMS = Table(
    "order_items",
    "Order lines: one row per product in an order.",
    (
        Column("order_id", "string", "Order the line belongs to.", required=True),
        Column("line_no", "integer", "Line number within the order."),
        Column("product_id", "string", "Product bought.", required=True),
        Column("quantity", "integer", "Units bought (> 0).", required=True),
        Column("unit_price", "float", "Price per unit (>= 0)."),
        Column("discount", "float", "Discount on the line (>= 0)."),
        *_lineage(),
    ),
    key=("order_id", "line_no"),
    source_kind=True,
    default_dedupe_keys=(("order_id", "line_no", "product_id"),),
)

EVENTS = Table(
    "events",
    "Behavioural events in Segment spec shape: one row per event message.",
    (
        Column("message_id", "string", "Segment messageId, unique per event.", required=True),
        Column(
            "type",
            "string",
            "track | identify | page | screen | group | alias.",
            required=True,
            normalise="lower",
        ),
        Column("event", "string", "Event name for track calls (e.g. 'Product Viewed')."),
        Column("user_id", "string", "Known user id (Segment userId).", pii=True),
        Column("anonymous_id", "string", "Device / cookie id (Segment anonymousId).", pii=True),
        Column(
            "timestamp",
            "timestamp",
            "When the event happened (UTC, clock-skew corrected).",
            required=True,
        ),
        Column("sent_at", "timestamp", "When the client sent it (UTC)."),
        Column("received_at", "timestamp", "When segmint received it (UTC)."),
        Column("properties", "json", "Event properties (JSON)."),
        Column("traits", "json", "User traits (JSON), from identify calls.", pii=True),
        Column(
            "context",
            "json",
            "Segment context object (JSON): ip, userAgent, consent, ...",
            pii=True,
        ),
        *_lineage(),
    ),
    key=("message_id",),
    source_kind=True,
    timestamp_column="timestamp",
    default_dedupe_keys=("message_id",),
)

CONSENTS = Table(
    "consents",
    "Consent history: one row per grant or withdrawal of a purpose.",
    (
        Column("customer_id", "string", "Person the consent belongs to.", pii=True, required=True),
        Column(
            "purpose",
            "string",
            "analytics | personalization | email_marketing | advertising | ...",
            required=True,
            normalise="lower",
        ),
        Column("granted", "boolean", "True when granted, false when withdrawn.", required=True),
        Column("at", "timestamp", "When the choice was made (UTC).", required=True),
        Column("source", "string", "Where the choice was recorded (web form, app, CRM, ...)."),
        *_lineage(),
    ),
    key=("customer_id", "purpose", "at"),
    source_kind=True,
    timestamp_column="at",
    default_dedupe_keys=(("customer_id", "purpose", "at"),),
)

PRODUCTS = Table(
    "products",
    "Product catalogue: one row per product.",
    (
        Column("product_id", "string", "Product identifier.", required=True),
        Column("name", "string", "Product name."),
        Column("category", "string", "Category.", normalise="lower"),
        Column("brand", "string", "Brand."),
        Column("price", "float", "List price (>= 0)."),
        *_lineage(),
    ),
    key=("product_id",),
    source_kind=True,
    default_dedupe_keys=("product_id",),
)

QUARANTINE = Table(
    "quarantine",
    "Rejected input rows: kept with the reason, never dropped.",
    (
        Column("load_id", "string", "Load that rejected the row."),
        Column("source", "string", "Source name."),
        Column("table_name", "string", "Canonical table the row was meant for."),
        Column("file", "string", "File the row came from."),
        Column("line", "integer", "Line (CSV/JSONL) or row (Parquet) in the file."),
        Column(
            "raw",
            "string",
            "The raw row as read (JSON object of source columns, or the line).",
            pii=True,
        ),
        Column(
            "rule",
            "string",
            "First rule that failed (required, type, min, max, regex, "
            "allowed, not_in_future, malformed, suppressed).",
        ),
        Column("column_name", "string", "Column the rule applies to."),
        Column("message", "string", "Every failure of the row, human-readable."),
        Column("quarantined_at", "timestamp", "When (UTC)."),
    ),
)

LOADS = Table(
    "loads",
    "One row per file (or data frame) loaded; the fingerprint makes reloads no-ops.",
    (
        Column("load_id", "string", "Load identifier."),
        Column("source", "string", "Source name."),
        Column("table_name", "string", "Canonical table written."),
        Column("file", "string", "File path or 'frame:<name>'."),
        Column("fingerprint", "string", "SHA-256 of the file bytes (or of the frame)."),
        Column("rows_read", "integer", "Rows read from the file."),
        Column("rows_loaded", "integer", "Rows written to the table."),
        Column("rows_quarantined", "integer", "Rows sent to quarantine."),
        Column("rows_duplicate", "integer", "Rows merged into another (exact or key duplicate)."),
        Column("started_at", "timestamp", "Start (UTC)."),
        Column("finished_at", "timestamp", "End (UTC)."),
    ),
)

DEDUPE_MERGES = Table(
    "dedupe_merges",
    "Record of every row merged into another by deduplication.",
    (
        Column("load_id", "string", "Load in which the merge happened."),
        Column("table_name", "string", "Canonical table."),
        Column(
            "survivor_key", "string", "Key of the row that survived (e.g. customer_id).", pii=True
        ),
        Column("merged_key", "string", "Key of the row merged into it.", pii=True),
        Column("matched_on", "string", "exact | key column(s) that matched."),
        Column("file", "string", "File of the merged row."),
        Column("line", "integer", "Line of the merged row."),
        Column("merged_at", "timestamp", "When (UTC)."),
    ),
)

QUALITY_RUNS = Table(
    "quality_runs",
    "Data-quality reports, one row per run, kept to compare quality over time.",
    (
        Column("run_id", "string", "Run identifier."),
        Column("run_at", "timestamp", "When (UTC)."),
        Column("report", "json", "The full report (JSON)."),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        CUSTOMERS,
        ORDERS,
        ORDER_ITEMS,
        EVENTS,
        CONSENTS,
        PRODUCTS,
        QUARANTINE,
        LOADS,
        DEDUPE_MERGES,
        QUALITY_RUNS,
    )
}

SOURCE_TABLES = [t for t in TABLES.values() if t.source_kind]


def register_table(table: Table) -> None:
    """Add a derived table (features, assignments, ...) to the data dictionary."""
    TABLES[table.name] = table
