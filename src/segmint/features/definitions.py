"""Backend-neutral feature definitions: SQL over the canonical tables, as of a date.

A feature is a SQL expression written in DuckDB's dialect (the canonical one, see
:mod:`segmint.engine.dialect`) that yields one value per person. It takes one of
three forms:

aggregate
    An expression over the columns of named per-person *relations* (``WITH``
    blocks below, such as ``_order_stats``); several features share one relation,
    so the engine scans each canonical table once or twice for all of them.
derived
    An expression over other features (``inputs``), e.g. ``aov_per_visit`` or
    ``lifecycle_stage``.
query
    A user's ``SELECT customer_id, <expr> AS value FROM ... GROUP BY customer_id``
    over the canonical tables (see :func:`user_feature`).

Every definition is evaluated *as of* a timestamp, which is a bound parameter
(``$as_of``, never formatted into the SQL): only orders with ``ordered_at <=
as_of``, events with ``timestamp <= as_of`` and customers with ``signup_at`` null
or ``<= as_of`` are used. The session gap is the bound parameter
``$session_gap_seconds``. :func:`render_query` assembles definitions into one
statement and renders it for another dialect with SQLGlot
(:func:`segmint.engine.dialect.transpile`).

The person key
--------------
The key is :data:`PERSON_KEY` (``customer_id``). Orders reach it through
``orders.customer_id``, events through ``events.user_id`` (the Segment ``userId``
is the CRM customer id). After identity resolution (``segmint identity resolve``)
a person is keyed by the smallest of its customer ids, its *representative*
(view ``identifier_representative``): the orders and events of all its customer
ids, user ids and anonymous ids count for that one row, and merges and unmerges
change the rows at the next run. Events that carry only an unresolved
``anonymous_id`` are ignored; so are orders and events whose customer is not in
``customers``. Only the three person-keyed views ``_PEOPLE``,
``_COMPLETED_ORDERS`` and ``_KNOWN_EVENTS`` name the key.

Built-in features
-----------------
One row per customer in ``customers`` (signed up by ``as_of`` or without a
signup date). *Completed* orders are those with ``status`` null or
``'completed'``. Counts and sums are ``0`` for a customer without orders or
events; means, ratios, shares and times since an event are ``NULL`` when they are
undefined (no orders, no sessions, no checkout, ...). Days are fractional
(seconds / 86,400).

========================= ===================================================================
feature                   definition
========================= ===================================================================
recency_days              days from the last completed order to ``as_of`` (NULL: never ordered)
frequency                 completed orders (0)
monetary                  sum of ``amount`` of completed orders (0)
avg_order_value           monetary / frequency (NULL: no orders)
tenure_days               days from the earlier of ``signup_at`` and the first completed
                          order to ``as_of`` (NULL: neither known)
interpurchase_mean_days   mean gap between consecutive completed orders (NULL: < 2 orders)
interpurchase_std_days    population standard deviation of those gaps (NULL: < 2 orders;
                          0 with exactly 2)
category_count            distinct product categories bought (order_items x products;
                          lines of unknown products or without a category are left out) (0)
category_entropy          Shannon entropy in bits of the quantity bought per category
                          (0: one category; NULL: nothing bought)
discount_share            sum(discount) / (sum(amount) + sum(discount)) over completed orders,
                          a null discount counting as 0 (NULL: no orders or both sums 0)
channel_share_web, _app,  share of completed orders with that ``channel``; orders of other
_store                    or unknown channels count in the denominator (NULL: no orders)
sessions                  visits: a new session starts at a customer's first visit event and
                          after every gap longer than the session gap (30 minutes) (0)
pages_per_session         ``page`` and ``screen`` events / sessions (NULL: no sessions)
product_views             ``Product Viewed`` track events (0)
cart_adds                 ``Product Added`` track events (0)
cart_abandonment_rate     share of ``Checkout Started`` events not followed by an
                          ``Order Completed`` event in the same session (a completion at
                          the same instant counts as following) (NULL: no checkout)
email_open_rate           ``Email Opened`` / (``Email Delivered`` + ``Email Sent``) events,
                          capped at 1 since an email can be opened twice (NULL: no email
                          delivery recorded)
email_opens_30d           ``Email Opened`` events in the 30 days up to ``as_of`` (0)
days_since_last_visit     days from the last visit event to ``as_of`` (NULL: no visits)
aov_per_visit             avg_order_value / sessions (NULL: either undefined or 0 sessions)
========================= ===================================================================

*Visit events* are ``page`` and ``screen`` calls and ``track`` calls other than
email events (``Email ...``, sent by an email provider, not by a visit);
``identify``, ``group`` and ``alias`` calls are not visits. ``lifecycle_stage``
is added by :mod:`segmint.features.lifecycle`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import sqlglot
import sqlglot.expressions as exp

from segmint.engine.dialect import CANONICAL, quote, transpile
from segmint.errors import UserInputError

__all__ = [
    "AS_OF",
    "BUILTIN_DEFINITIONS",
    "FeatureDefinition",
    "PERSON_KEY",
    "as_of_query",
    "RELATIONS",
    "Relation",
    "builtin",
    "parameters_of",
    "render_query",
    "user_feature",
]

#: The column that identifies a person in every feature relation and the features table.
PERSON_KEY = "customer_id"

#: The as-of timestamp, a bound parameter (``$as_of``) of every feature query.
AS_OF = "CAST($as_of AS TIMESTAMP)"

#: The session inactivity gap in seconds, a bound parameter.
SESSION_GAP = "CAST($session_gap_seconds AS DOUBLE)"

Kind = Literal["numeric", "categorical"]
TransformHint = Literal["auto", "log1p", "none", "onehot"]
KINDS: tuple[str, ...] = ("numeric", "categorical")
TRANSFORM_HINTS: tuple[str, ...] = ("auto", "log1p", "none", "onehot")

#: Columns of the features table that are not features.
RESERVED_NAMES = frozenset({PERSON_KEY, "snapshot_id", "as_of", "value"})

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_K = quote(PERSON_KEY)
_USER_PREFIX = "_user_"


def _days_since(timestamp: str) -> str:
    """SQL for the fractional days from ``timestamp`` to the as-of timestamp."""
    return f"(epoch({AS_OF}) - epoch({timestamp})) / 86400.0"


def check_name(name: object, *, what: str = "feature") -> str:
    """Validate a feature name: lower-case letters, digits and ``_``, starting with a letter.

    Examples
    --------
    >>> check_name("orders_90d")
    'orders_90d'
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserInputError(
            f"invalid {what} name {name!r}: use 1-63 lower-case letters, digits and '_', "
            "starting with a letter",
            where=f"features.{name}",
        )
    if name in RESERVED_NAMES:
        raise UserInputError(
            f"{what} name {name!r} is reserved (it names a column of the features table)",
            where=f"features.{name}",
        )
    return name


# --------------------------------------------------------------------------- relations


@dataclass(frozen=True)
class Relation:
    """A named per-person relation (a ``WITH`` block) that feature expressions read.

    Parameters
    ----------
    name
        Name of the ``WITH`` block; features qualify its columns with it.
    sql
        A DuckDB ``SELECT`` with one row per :data:`PERSON_KEY`.
    sources
        Canonical tables it reads.

    Examples
    --------
    >>> RELATIONS["_order_stats"].sources
    ('orders',)
    """

    name: str
    sql: str
    sources: tuple[str, ...]


# Person-keyed views of the canonical tables, inlined as subqueries where used (a
# table scan with a pushed-down filter is cheaper than materialising a shared block).
# Identity resolution maps every identifier of a person to the customer id that represents
# it (view identifier_representative); without resolution each id stands for itself.
_USER_REP = """(
    SELECT identifier_value AS id, min(representative) AS rep FROM identifier_representative
    WHERE identifier_type IN ('customer_id', 'user_id') GROUP BY identifier_value
)"""
_ANONYMOUS_REP = """(
    SELECT identifier_value AS id, min(representative) AS rep FROM identifier_representative
    WHERE identifier_type = 'anonymous_id' GROUP BY identifier_value
)"""
_PEOPLE = f"""
SELECT coalesce(r.rep, c.customer_id) AS {_K}, min(c.signup_at) AS signup_at
FROM customers AS c
LEFT JOIN {_USER_REP} AS r ON r.id = c.customer_id
WHERE c.customer_id IS NOT NULL
GROUP BY 1
HAVING min(c.signup_at) IS NULL OR min(c.signup_at) <= {AS_OF}
"""
_COMPLETED_ORDERS = f"""(
    SELECT coalesce(r.rep, o.customer_id) AS {_K}, o.order_id, o.ordered_at, o.amount,
           coalesce(o.discount, 0.0) AS discount, lower(o.channel) AS channel
    FROM orders AS o
    LEFT JOIN {_USER_REP} AS r ON r.id = o.customer_id
    WHERE o.customer_id IS NOT NULL
      AND o.ordered_at <= {AS_OF}
      AND (o.status IS NULL OR o.status = 'completed')
)"""
_KNOWN_EVENTS = f"""(
    SELECT coalesce(ru.rep, e.user_id, ra.rep) AS {_K}, e."timestamp" AS ts, e.type, e.event,
           e.type IN ('page', 'screen')
             OR (e.type = 'track' AND coalesce(e.event, '') NOT LIKE 'Email %') AS is_visit
    FROM events AS e
    LEFT JOIN {_USER_REP} AS ru ON ru.id = e.user_id
    LEFT JOIN {_ANONYMOUS_REP} AS ra ON e.user_id IS NULL AND ra.id = e.anonymous_id
    WHERE coalesce(ru.rep, e.user_id, ra.rep) IS NOT NULL AND e."timestamp" <= {AS_OF}
)"""

_RELATION_LIST = (
    Relation("_people", _PEOPLE, ("customers",)),
    Relation(
        "_order_stats",
        f"""
        SELECT {_K},
               count(*) AS n_orders,
               coalesce(sum(amount), 0.0) AS amount_total,
               sum(discount) AS discount_total,
               min(ordered_at) AS first_order_at,
               max(ordered_at) AS last_order_at,
               count(*) FILTER (WHERE channel = 'web') AS n_web,
               count(*) FILTER (WHERE channel = 'app') AS n_app,
               count(*) FILTER (WHERE channel = 'store') AS n_store
        FROM {_COMPLETED_ORDERS} AS o
        GROUP BY {_K}
        """,
        ("orders",),
    ),
    Relation(
        # Gaps between consecutive orders: the one window over orders, on two columns.
        "_order_gaps",
        f"""
        SELECT {_K},
               avg(gap_seconds) / 86400.0 AS gap_mean_days,
               stddev_pop(gap_seconds) / 86400.0 AS gap_std_days
        FROM (
            SELECT {_K},
                   epoch(ordered_at)
                     - epoch(lag(ordered_at) OVER (PARTITION BY {_K} ORDER BY ordered_at))
                     AS gap_seconds
            FROM {_COMPLETED_ORDERS} AS o
        ) AS gaps
        WHERE gap_seconds IS NOT NULL
        GROUP BY {_K}
        """,
        ("orders",),
    ),
    Relation(
        "_category_stats",
        f"""
        SELECT {_K},
               count(*) AS n_categories,
               greatest(log2(sum(quantity)) - sum(quantity * log2(quantity)) / sum(quantity), 0.0)
                 AS entropy_bits
        FROM (
            SELECT o.{_K}, p.category, sum(i.quantity) AS quantity
            FROM order_items AS i
            JOIN {_COMPLETED_ORDERS} AS o ON o.order_id = i.order_id
            JOIN (
                SELECT product_id, min(category) AS category FROM products GROUP BY product_id
            ) AS p ON p.product_id = i.product_id
            WHERE i.quantity > 0 AND p.category IS NOT NULL
            GROUP BY o.{_K}, p.category
        ) AS per_category
        GROUP BY {_K}
        """,
        ("orders", "order_items", "products"),
    ),
    Relation(
        "_event_stats",
        f"""
        SELECT {_K},
               count(*) FILTER (WHERE is_visit AND type IN ('page', 'screen')) AS n_pages,
               count(*) FILTER (WHERE type = 'track' AND event = 'Product Viewed')
                 AS n_product_views,
               count(*) FILTER (WHERE type = 'track' AND event = 'Product Added') AS n_cart_adds,
               count(*) FILTER (WHERE event = 'Email Opened') AS n_email_opens,
               count(*) FILTER (WHERE event = 'Email Opened' AND ts > {AS_OF} - INTERVAL 30 DAY)
                 AS n_email_opens_30d,
               count(*) FILTER (WHERE event IN ('Email Delivered', 'Email Sent'))
                 AS n_emails_sent,
               max(ts) FILTER (WHERE is_visit) AS last_visit_at
        FROM {_KNOWN_EVENTS} AS e
        GROUP BY {_K}
        """,
        ("events",),
    ),
    Relation(
        # Sessionisation, two windows. The first, over every visit event (key, time and
        # a small code only), flags session starts. Session starts and checkout events
        # go on to a second, much smaller window, where a checkout is converted when the
        # first 'Order Completed' after it comes before the next session start (rows in
        # (time, code) order, so that a completion at the checkout's instant follows it).
        "_session_stats",
        f"""
        SELECT {_K},
               count(*) FILTER (WHERE is_start = 1) AS n_sessions,
               count(*) FILTER (WHERE code = 1) AS n_checkouts,
               count(*) FILTER (WHERE code = 1
                                  AND (next_completed_at IS NULL
                                       OR (next_start_at IS NOT NULL
                                           AND next_start_at <= next_completed_at)))
                 AS n_abandoned_checkouts
        FROM (
            SELECT {_K}, code, is_start,
                   min(CASE WHEN code = 2 THEN ts END) OVER following AS next_completed_at,
                   min(CASE WHEN is_start = 1 THEN ts END) OVER following AS next_start_at
            FROM (
                SELECT {_K}, ts, code,
                       CASE WHEN prev_ts IS NULL OR epoch(ts) - epoch(prev_ts) > {SESSION_GAP}
                            THEN 1 ELSE 0 END AS is_start
                FROM (
                    SELECT {_K}, ts, code,
                           lag(ts) OVER (PARTITION BY {_K} ORDER BY ts, code) AS prev_ts
                    FROM (
                        SELECT {_K}, ts,
                               CASE WHEN event = 'Checkout Started' THEN 1
                                    WHEN event = 'Order Completed' THEN 2
                                    ELSE 0 END AS code
                        FROM {_KNOWN_EVENTS} AS e
                        WHERE is_visit
                    ) AS visits
                ) AS lagged
            ) AS flagged
            WHERE is_start = 1 OR code > 0
            WINDOW following AS (
                PARTITION BY {_K} ORDER BY ts, code
                ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
            )
        ) AS marked
        GROUP BY {_K}
        """,
        ("events",),
    ),
)

#: Every relation by name, in dependency order.
RELATIONS: dict[str, Relation] = {r.name: r for r in _RELATION_LIST}


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class FeatureDefinition:
    """One feature: a SQL expression yielding one value per person, as of a date.

    Parameters
    ----------
    name
        Column name in the features table (lower-case identifier).
    description
        What the value means, including what a person without data gets.
    expression
        DuckDB SQL expression. Aggregate form: over columns of ``relations``,
        qualified by relation name. Derived form: over the feature columns named in
        ``inputs``. Query form: ignored (``value``).
    sources
        Canonical tables the feature reads.
    kind
        ``numeric`` or ``categorical``.
    transform
        Default transform hint for :class:`~segmint.features.transforms.FeatureTransformer`:
        ``auto`` (decided from the data), ``log1p``, ``none`` (scaling only) or ``onehot``.
    unit
        Unit of the value (``days``, ``orders``, ``currency``, ``share``, ...).
    relations
        Relations of :data:`RELATIONS` the expression reads (aggregate form); found in
        the expression (``relation.column``) when not given.
    inputs
        Features the expression reads (derived form).
    query
        A ``SELECT customer_id, <expr> AS value ...`` over the canonical tables (query
        form, see :func:`user_feature`).

    Examples
    --------
    >>> d = builtin("frequency")
    >>> d.kind, d.relations
    ('numeric', ('_order_stats',))
    >>> "$as_of" in d.sql()
    True
    """

    name: str
    description: str
    expression: str
    sources: tuple[str, ...]
    kind: Kind = "numeric"
    transform: TransformHint = "auto"
    unit: str | None = None
    relations: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    query: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.kind not in KINDS:
            raise UserInputError(f"kind must be one of {KINDS}, not {self.kind!r}", where=self.name)
        if self.transform not in TRANSFORM_HINTS:
            raise UserInputError(
                f"transform must be one of {TRANSFORM_HINTS}, not {self.transform!r}",
                where=self.name,
            )
        forms = sum(bool(x) for x in (self.relations, self.inputs, self.query is not None))
        if forms > 1:
            raise UserInputError(
                "a feature reads relations, other features or a query, not several",
                where=self.name,
            )
        if self.query is None:
            try:
                tree = sqlglot.parse_one(self.expression, read=CANONICAL)
            except sqlglot.errors.ParseError as e:
                raise UserInputError(f"expression does not parse: {e}", where=self.name) from e
            qualifiers = {c.table for c in tree.find_all(exp.Column) if c.table}
            if self.inputs and qualifiers:
                raise UserInputError(
                    "a derived feature reads feature columns by name, unqualified",
                    where=self.name,
                )
            unknown = sorted((qualifiers | set(self.relations)) - set(RELATIONS))
            if unknown:
                raise UserInputError(f"unknown relations {unknown}", where=self.name)
            found = tuple(r for r in RELATIONS if r in qualifiers or r in self.relations)
            object.__setattr__(self, "relations", found)

    @property
    def derived(self) -> bool:
        """True when the feature is computed from other features."""
        return bool(self.inputs)

    def sql(self, dialect: str = CANONICAL) -> str:
        """A standalone query ``SELECT customer_id, <feature>`` for ``dialect``.

        Derived features resolve their inputs among the built-ins.
        """
        return render_query([self], dialect=dialect)


def _count(name: str, column: str, relation: str, description: str, unit: str) -> FeatureDefinition:
    sources = RELATIONS[relation].sources
    return FeatureDefinition(
        name,
        description,
        f"coalesce({relation}.{column}, 0)",
        sources,
        transform="log1p",
        unit=unit,
        relations=(relation,),
    )


def _share(name: str, channel: str) -> FeatureDefinition:
    return FeatureDefinition(
        name,
        f"Share of completed orders placed in the '{channel}' channel (NULL: no completed orders).",
        f"CAST(_order_stats.n_{channel} AS DOUBLE) / nullif(_order_stats.n_orders, 0)",
        ("orders",),
        transform="none",
        unit="share",
    )


BUILTIN_DEFINITIONS: tuple[FeatureDefinition, ...] = (
    FeatureDefinition(
        "recency_days",
        "Days from the last completed order to as_of (NULL: never ordered).",
        _days_since("_order_stats.last_order_at"),
        ("orders",),
        transform="log1p",
        unit="days",
    ),
    _count("frequency", "n_orders", "_order_stats", "Completed orders (0: none).", "orders"),
    FeatureDefinition(
        "monetary",
        "Sum of the amounts of completed orders (0: none).",
        "coalesce(_order_stats.amount_total, 0.0)",
        ("orders",),
        transform="log1p",
        unit="currency",
    ),
    FeatureDefinition(
        "avg_order_value",
        "Mean amount of a completed order (NULL: never ordered).",
        "_order_stats.amount_total / nullif(_order_stats.n_orders, 0)",
        ("orders",),
        transform="log1p",
        unit="currency",
    ),
    FeatureDefinition(
        "tenure_days",
        "Days from the earlier of signup and first completed order to as_of (NULL: neither known).",
        _days_since("least(_people.signup_at, _order_stats.first_order_at)"),
        ("customers", "orders"),
        transform="log1p",
        unit="days",
    ),
    FeatureDefinition(
        "interpurchase_mean_days",
        "Mean days between consecutive completed orders (NULL: fewer than 2 orders).",
        "_order_gaps.gap_mean_days",
        ("orders",),
        unit="days",
    ),
    FeatureDefinition(
        "interpurchase_std_days",
        "Population standard deviation of the days between consecutive completed orders "
        "(NULL: fewer than 2 orders).",
        "_order_gaps.gap_std_days",
        ("orders",),
        unit="days",
    ),
    _count(
        "category_count",
        "n_categories",
        "_category_stats",
        "Distinct product categories bought in completed orders (0: none).",
        "categories",
    ),
    FeatureDefinition(
        "category_entropy",
        "Shannon entropy (bits) of the quantity bought per product category "
        "(0: one category; NULL: nothing bought).",
        "_category_stats.entropy_bits",
        ("orders", "order_items", "products"),
        transform="none",
        unit="bits",
    ),
    FeatureDefinition(
        "discount_share",
        "Discount / (amount + discount) over completed orders (NULL: no orders).",
        "_order_stats.discount_total "
        "/ nullif(_order_stats.amount_total + _order_stats.discount_total, 0)",
        ("orders",),
        transform="none",
        unit="share",
    ),
    _share("channel_share_web", "web"),
    _share("channel_share_app", "app"),
    _share("channel_share_store", "store"),
    _count(
        "sessions",
        "n_sessions",
        "_session_stats",
        "Visits, split where a customer is inactive longer than the session gap (0: none).",
        "sessions",
    ),
    FeatureDefinition(
        "pages_per_session",
        "Page and screen events per session (NULL: no sessions).",
        "CAST(_event_stats.n_pages AS DOUBLE) / nullif(_session_stats.n_sessions, 0)",
        ("events",),
        unit="pages",
    ),
    _count(
        "product_views",
        "n_product_views",
        "_event_stats",
        "'Product Viewed' events (0: none).",
        "events",
    ),
    _count(
        "cart_adds", "n_cart_adds", "_event_stats", "'Product Added' events (0: none).", "events"
    ),
    FeatureDefinition(
        "cart_abandonment_rate",
        "Share of 'Checkout Started' events not followed by an 'Order Completed' in the "
        "same session (NULL: no checkout).",
        "CAST(_session_stats.n_abandoned_checkouts AS DOUBLE) "
        "/ nullif(_session_stats.n_checkouts, 0)",
        ("events",),
        transform="none",
        unit="share",
    ),
    FeatureDefinition(
        "email_open_rate",
        "'Email Opened' / ('Email Delivered' + 'Email Sent') events, capped at 1 "
        "(NULL: no delivery recorded).",
        "CASE WHEN _event_stats.n_emails_sent > 0 THEN least(1.0, "
        "CAST(_event_stats.n_email_opens AS DOUBLE) / _event_stats.n_emails_sent) END",
        ("events",),
        transform="none",
        unit="share",
    ),
    _count(
        "email_opens_30d",
        "n_email_opens_30d",
        "_event_stats",
        "'Email Opened' events in the 30 days up to as_of (0: none).",
        "events",
    ),
    FeatureDefinition(
        "days_since_last_visit",
        "Days from the last visit event to as_of (NULL: no visits).",
        _days_since("_event_stats.last_visit_at"),
        ("events",),
        transform="log1p",
        unit="days",
    ),
    FeatureDefinition(
        "aov_per_visit",
        "avg_order_value / sessions (NULL: no orders or no sessions).",
        "avg_order_value / nullif(sessions, 0)",
        ("orders", "events"),
        transform="log1p",
        unit="currency",
        inputs=("avg_order_value", "sessions"),
    ),
)

_BUILTINS = {d.name: d for d in BUILTIN_DEFINITIONS}


def builtin(name: str) -> FeatureDefinition:
    """The built-in definition called ``name``.

    Examples
    --------
    >>> builtin("monetary").unit
    'currency'
    """
    try:
        return _BUILTINS[name]
    except KeyError:
        raise UserInputError(
            f"unknown built-in feature {name!r}; known: {', '.join(_BUILTINS)}",
            where=f"features.{name}",
        ) from None


# --------------------------------------------------------------------------- user features

# How a user query sees each canonical table as of the as-of timestamp.
_AS_OF_FILTERS: dict[str, str] = {
    "customers": f"signup_at IS NULL OR signup_at <= {AS_OF}",
    "orders": f"ordered_at <= {AS_OF}",
    "order_items": f"order_id IN (SELECT order_id FROM orders WHERE ordered_at <= {AS_OF})",
    "events": f'"timestamp" <= {AS_OF}',
    "consents": f'"at" <= {AS_OF}',
}
_CANONICAL = ("customers", "orders", "order_items", "events", "consents", "products")


def as_of_query(name: str, query: str) -> tuple[str, tuple[str, ...]]:
    """Rewrite a user query so that canonical tables only show rows as of ``$as_of``.

    Returns the rewritten query and the canonical tables it reads.
    """
    where = f"features.{name}"
    try:
        statements = sqlglot.parse(query, read=CANONICAL)
    except sqlglot.errors.ParseError as e:
        raise UserInputError(f"feature {name!r}: SQL does not parse: {e}", where=where) from e
    statements = [s for s in statements if s is not None]
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise UserInputError(f"feature {name!r} must be a single SELECT statement", where=where)
    tree = statements[0]
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    shadowing = sorted(ctes & set(_AS_OF_FILTERS))
    if shadowing:
        raise UserInputError(
            f"feature {name!r}: a WITH block may not be named like the table {shadowing[0]!r}",
            where=where,
        )
    used: list[str] = []
    read: set[str] = set()
    for table in list(tree.find_all(exp.Table)):
        if table.name in _CANONICAL and table.db in ("", "main") and not table.catalog:
            read.add(table.name)
        if table.name in _AS_OF_FILTERS and table.db in ("", "main") and not table.catalog:
            if table.name not in used:
                used.append(table.name)
            alias = table.alias or table.name
            table.replace(
                exp.Table(
                    this=exp.to_identifier(f"_asof_{table.name}", quoted=True),
                    alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)),
                )
            )
    body = tree.sql(dialect=CANONICAL)
    sources = tuple(t for t in _CANONICAL if t in read)
    if not used:
        return body, sources
    blocks = ",\n".join(
        f'"_asof_{t}" AS (SELECT * FROM {quote(t)} WHERE {_AS_OF_FILTERS[t]})' for t in used
    )
    return f"WITH {blocks}\nSELECT * FROM ({body}) AS _user_query", sources


def user_feature(name: str, query: str, *, description: str | None = None) -> FeatureDefinition:
    """A feature defined by a user's query over the canonical tables.

    The query must be one ``SELECT`` returning the columns ``customer_id`` (at most one
    row per customer) and ``value`` (a number, text or boolean), e.g.
    ``SELECT customer_id, count(*) AS value FROM orders WHERE channel = 'app' GROUP BY
    customer_id``. Canonical tables it reads are filtered *as of* the snapshot
    (``orders``, ``order_items`` through their order, ``events``, ``consents``,
    ``customers``), so a user feature cannot see the future; the as-of timestamp is
    also available as the parameter ``$as_of``. Customers the query returns no row for
    get ``NULL``.

    Examples
    --------
    >>> f = user_feature("app_orders", "SELECT customer_id, count(*) AS value FROM orders "
    ...                  "WHERE channel = 'app' GROUP BY customer_id")
    >>> "_asof_orders" in f.sql()
    True
    """
    check_name(name)
    if not isinstance(query, str) or not query.strip():
        raise UserInputError(f"feature {name!r} needs a SQL query", where=f"features.{name}")
    _, sources = as_of_query(name, query)  # validates the statement early
    return FeatureDefinition(
        name,
        description or f"User-defined feature {name!r}.",
        "value",
        sources,
        query=query,
    )


# --------------------------------------------------------------------------- rendering


def _resolve(definitions: Sequence[FeatureDefinition]) -> list[FeatureDefinition]:
    """The definitions plus the (non-derived) inputs of derived ones, without repeats."""
    by_name: dict[str, FeatureDefinition] = {}
    for d in definitions:
        if d.name in by_name:
            raise UserInputError(f"feature {d.name!r} is defined twice", where=f"features.{d.name}")
        by_name[d.name] = d
    resolved = dict(by_name)
    for d in definitions:
        for name in d.inputs:
            source = by_name.get(name) or _BUILTINS.get(name)
            if source is None:
                raise UserInputError(
                    f"feature {d.name!r} reads unknown feature {name!r}", where=f"features.{d.name}"
                )
            if source.derived:
                raise UserInputError(
                    f"feature {d.name!r} reads {name!r}, itself derived; derive from base "
                    "features only",
                    where=f"features.{d.name}",
                )
            resolved.setdefault(name, source)
    return list(resolved.values())


def _needed_relations(definitions: Iterable[FeatureDefinition]) -> list[Relation]:
    wanted = {"_people", *(r for d in definitions for r in d.relations)}
    return [r for r in RELATIONS.values() if r.name in wanted]


def render_query(
    definitions: Sequence[FeatureDefinition],
    *,
    dialect: str = CANONICAL,
    tables: Mapping[str, str] | None = None,
) -> str:
    """One ``SELECT customer_id, <one column per definition>`` over the canonical tables.

    Parameters
    ----------
    definitions
        Features, in output column order. Inputs of derived features are computed but
        not output unless listed.
    dialect
        SQL dialect to render for (SQLGlot name, e.g. ``spark``).
    tables
        For query-form features: feature name -> table already holding its
        ``customer_id, value`` rows (otherwise the query is inlined).

    Returns
    -------
    str
        The query, with the bound parameters ``$as_of`` and (when sessions are used)
        ``$session_gap_seconds``; see :func:`parameters_of`.

    Examples
    --------
    >>> sql = render_query([builtin("frequency"), builtin("recency_days")])
    >>> sql.count("FROM orders")
    1
    """
    tables = dict(tables or {})
    resolved = _resolve(definitions)
    base = [d for d in resolved if not d.derived]
    blocks = [f"{r.name} AS ({_dedent(r.sql)})" for r in _needed_relations(base)]
    joins = [
        f"LEFT JOIN {r.name} ON {r.name}.{_K} = _people.{_K}"
        for r in _needed_relations(base)
        if r.name != "_people"
    ]
    columns = []
    for d in base:
        if d.query is None:
            columns.append(f"{d.expression} AS {quote(d.name)}")
            continue
        alias = quote(f"{_USER_PREFIX}{d.name}")
        if d.name in tables:
            source = quote(tables[d.name])
        else:
            blocks.append(f"{alias} AS ({as_of_query(d.name, d.query)[0]})")
            source = alias
        joins.append(f"LEFT JOIN {source} AS {alias} ON {alias}.{_K} = _people.{_K}")
        columns.append(f"{alias}.value AS {quote(d.name)}")
    features = (
        f"SELECT _people.{_K}"
        + "".join(f",\n       {c}" for c in columns)
        + "\nFROM _people"
        + "".join(f"\n{j}" for j in joins)
    )
    blocks.append(f"_features AS ({features})")
    outputs = [
        f"{d.expression} AS {quote(d.name)}" if d.derived else quote(d.name) for d in definitions
    ]
    sql = (
        "WITH "
        + ",\n".join(blocks)
        + f"\nSELECT {_K}"
        + "".join(f", {o}" for o in outputs)
        + "\nFROM _features"
    )
    return transpile(sql, dialect)


def parameters_of(sql: str, values: Mapping[str, object]) -> dict[str, object]:
    """The bound parameters a DuckDB statement uses, taken from ``values``.

    DuckDB rejects named parameters a statement does not use, so callers pass all they
    have and keep the ones the statement names.

    Examples
    --------
    >>> parameters_of("SELECT $as_of", {"as_of": 1, "other": 2})
    {'as_of': 1}
    """
    names = {p.name for p in sqlglot.parse_one(sql, read=CANONICAL).find_all(exp.Placeholder)}
    if any(n in ("", "?") or n.isdigit() for n in names):
        raise UserInputError("use named parameters ($as_of), not positional ones (?, $1)")
    missing = names - set(values)
    if missing:
        raise UserInputError(f"the query uses unknown parameters {sorted(missing)}")
    return {k: v for k, v in values.items() if k in names}


def _dedent(sql: str) -> str:
    lines = [line for line in sql.strip("\n").splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    return "\n".join(line[indent:] for line in lines)
