"""The consent registry and THE purpose check every consumer calls.

Consent is history, not a flag: the ``consents`` table keeps one row per grant
or withdrawal of a purpose (``customer_id, purpose, granted, at, source``).
Choices come from consent sources loaded by ingestion, from
:func:`record_consent`, and from the consent manager state that Segment-style
events carry in ``context.consent.categoryPreferences``
(:func:`sync_event_consents`).

The policy (:class:`ConsentPolicy`)
-----------------------------------
For a person, a purpose and a moment ``at``:

1. a suppressed (erased) person may be used for nothing;
2. otherwise the person's **latest choice** for the purpose made at or before
   ``at`` decides (two choices at the same instant: the withdrawal wins);
3. with no choice recorded, the purpose's default applies: *opt-out* purposes
   (by default ``analytics``) are allowed unless withdrawn, *opt-in* purposes
   (by default ``personalization``, ``email_marketing``, ``advertising``, and any
   purpose the policy does not name) need a grant that was not later withdrawn.

:func:`may_use` answers for one person in Python; :func:`permitted_persons_sql`
is the same policy as one set-based query for batch exports. A property test
keeps the two in agreement.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from segmint.data.privacy.audit import utcnow
from segmint.data.privacy.suppression import is_suppressed
from segmint.data.schema import CONSENTS
from segmint.engine import RowWriter, Warehouse
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

#: The purposes segmint knows; others may be recorded and default to opt-in.
PURPOSES: tuple[str, ...] = ("analytics", "personalization", "email_marketing", "advertising")


def _purpose(name: str) -> str:
    purpose = str(name).strip().lower()
    if not purpose:
        raise UserInputError("a consent purpose cannot be empty")
    return purpose


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class ConsentPolicy:
    """Which purposes are allowed without a recorded choice.

    Parameters
    ----------
    opt_out
        Purposes allowed unless the person withdrew (legitimate interest).
    opt_in
        Purposes that need a grant not later withdrawn.
    unknown_needs_grant
        Whether purposes named in neither set need a grant (the safe default).

    Examples
    --------
    >>> policy = ConsentPolicy()
    >>> policy.default("analytics"), policy.default("email_marketing"), policy.default("x")
    (True, False, False)
    >>> strict = ConsentPolicy(opt_out=frozenset(), opt_in=frozenset(PURPOSES))
    >>> strict.default("analytics")
    False
    """

    opt_out: frozenset[str] = field(default_factory=lambda: frozenset({"analytics"}))
    opt_in: frozenset[str] = field(
        default_factory=lambda: frozenset({"personalization", "email_marketing", "advertising"})
    )
    unknown_needs_grant: bool = True

    def __post_init__(self) -> None:
        opt_out = frozenset(_purpose(p) for p in self.opt_out)
        opt_in = frozenset(_purpose(p) for p in self.opt_in)
        both = opt_out & opt_in
        if both:
            raise UserInputError(
                f"purposes cannot be both opt-out and opt-in: {', '.join(sorted(both))}"
            )
        object.__setattr__(self, "opt_out", opt_out)
        object.__setattr__(self, "opt_in", opt_in)

    def default(self, purpose: str) -> bool:
        """Whether ``purpose`` is allowed for a person who never made a choice."""
        purpose = _purpose(purpose)
        if purpose in self.opt_out:
            return True
        if purpose in self.opt_in:
            return False
        return not self.unknown_needs_grant

    def allows(self, purpose: str, choice: ConsentChoice | None) -> bool:
        """The decision given the latest choice (``None``: no choice recorded)."""
        return choice.granted if choice is not None else self.default(purpose)


DEFAULT_POLICY = ConsentPolicy()


@dataclass(frozen=True)
class ConsentChoice:
    """One grant or withdrawal of a purpose."""

    purpose: str
    granted: bool
    at: datetime
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "granted": self.granted,
            "at": self.at.isoformat(),
            "source": self.source,
        }


class BoundSql(NamedTuple):
    """A statement and its bound parameters: ``wh.fetchall(*bound)``."""

    sql: str
    params: list[Any]


def _ensure_consents(wh: RowWriter) -> None:
    wh.execute(CONSENTS.ddl())


def record_consent(
    wh: Warehouse,
    customer_id: str,
    purpose: str,
    granted: bool,
    *,
    at: datetime | None = None,
    source: str = "api",
) -> ConsentChoice:
    """Record a grant (``granted=True``) or withdrawal of a purpose.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> _ = record_consent(wh, "c1", "Email_Marketing", True, at=datetime(2024, 1, 1))
    >>> may_use(wh, "c1", "email_marketing")
    True
    """
    person, choice = new_consent(customer_id, purpose, granted, at=at, source=source)
    insert_consents(wh, [(person, choice)])
    return choice


def new_consent(
    customer_id: str,
    purpose: str,
    granted: bool,
    *,
    at: datetime | None = None,
    source: str = "api",
) -> tuple[str, ConsentChoice]:
    """A validated choice and its customer id, to be written with :func:`insert_consents`."""
    person = str(customer_id).strip()
    if not person:
        raise UserInputError("a consent needs a customer id")
    choice = ConsentChoice(
        _purpose(purpose), bool(granted), _naive_utc(at) or utcnow(), source or None
    )
    return person, choice


def insert_consents(wh: RowWriter, choices: Sequence[tuple[str, ConsentChoice]]) -> None:
    """Append choices (customer id, choice) to ``consents``."""
    if not choices:
        return
    _ensure_consents(wh)
    load_id = f"consent-{uuid.uuid4().hex[:12]}"
    loaded_at = utcnow()
    wh.insert_rows(
        "consents",
        ["customer_id", "purpose", "granted", "at", "source", "_source", "_load_id", "_loaded_at"],
        [
            (person, c.purpose, c.granted, c.at, c.source, "api", load_id, loaded_at)
            for person, c in choices
        ],
    )


def consent_history(wh: Warehouse, person: str) -> list[ConsentChoice]:
    """Every choice of a person, oldest first (at the same instant, withdrawals last).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> _ = record_consent(wh, "c1", "advertising", True, at=datetime(2024, 1, 1))
    >>> _ = record_consent(wh, "c1", "advertising", False, at=datetime(2024, 3, 1))
    >>> [(c.purpose, c.granted) for c in consent_history(wh, "c1")]
    [('advertising', True), ('advertising', False)]
    """
    _ensure_consents(wh)
    rows = wh.fetchall(
        'SELECT purpose, granted, "at", source FROM consents WHERE customer_id = ? '
        'AND purpose IS NOT NULL AND granted IS NOT NULL AND "at" IS NOT NULL '
        'ORDER BY "at", granted DESC, purpose',
        [str(person).strip()],
    )
    return [ConsentChoice(_purpose(r[0]), bool(r[1]), r[2], r[3]) for r in rows]


def latest_choice(
    history: Iterable[ConsentChoice], purpose: str, at: datetime | None = None
) -> ConsentChoice | None:
    """The choice in force for ``purpose`` at ``at`` (latest; a tie goes to the withdrawal).

    Examples
    --------
    >>> t = datetime(2024, 1, 1)
    >>> history = [ConsentChoice("ads", True, t), ConsentChoice("ads", False, t)]
    >>> latest_choice(history, "ads").granted
    False
    """
    purpose = _purpose(purpose)
    at = _naive_utc(at)
    candidates = [c for c in history if c.purpose == purpose and (at is None or c.at <= at)]
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.at, not c.granted))


def consent_state(
    wh: Warehouse, person: str, at: datetime | None = None
) -> dict[str, ConsentChoice]:
    """The choice in force per purpose at ``at`` (default: the latest of all).

    Purposes without any recorded choice are absent; see
    :meth:`ConsentPolicy.default` for what applies to them.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> _ = record_consent(wh, "c1", "analytics", True, at=datetime(2024, 1, 1))
    >>> _ = record_consent(wh, "c1", "analytics", False, at=datetime(2024, 6, 1))
    >>> consent_state(wh, "c1", at=datetime(2024, 3, 1))["analytics"].granted
    True
    >>> consent_state(wh, "c1")["analytics"].granted
    False
    """
    history = consent_history(wh, person)
    state: dict[str, ConsentChoice] = {}
    for purpose in sorted({c.purpose for c in history}):
        choice = latest_choice(history, purpose, at)
        if choice is not None:
            state[purpose] = choice
    return state


def may_use(
    wh: Warehouse,
    person: str,
    purpose: str,
    at: datetime | None = None,
    *,
    policy: ConsentPolicy = DEFAULT_POLICY,
) -> bool:
    """THE purpose check: may this person's data be used for this purpose at ``at``?

    Every consumer (exports, personalization, activation, the real-time
    service) calls this, or its set-based twin :func:`permitted_persons_sql`.

    Parameters
    ----------
    wh
        The warehouse.
    person
        The person's customer id.
    purpose
        ``analytics``, ``personalization``, ``email_marketing``, ``advertising``, ...
    at
        The moment of use (default: now, i.e. every recorded choice counts).
    policy
        Defaults for persons without a choice (see :class:`ConsentPolicy`).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> may_use(wh, "c1", "analytics"), may_use(wh, "c1", "email_marketing")
    (True, False)
    """
    purpose = _purpose(purpose)
    if is_suppressed(wh, person):
        return False
    choice = latest_choice(consent_history(wh, person), purpose, at)
    return policy.allows(purpose, choice)


class ConsentBook:
    """Every recorded choice held in memory, for checks on every event (the real-time path).

    Answers exactly like :func:`may_use` for persons who are not erased (the real-time
    intake refuses erased persons' events before any check): the choice in force at the
    moment, else the policy's default. Load it once; :meth:`record` keeps it current
    (write the choice to ``consents`` too, with :func:`record_consent`).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> _ = record_consent(wh, "c1", "personalization", False, at=datetime(2024, 1, 1))
    >>> book = ConsentBook.load(wh)
    >>> book.may_use("c1", "personalization", datetime(2024, 2, 1))
    False
    >>> book.record("c1", ConsentChoice("personalization", True, datetime(2024, 3, 1)))
    >>> book.may_use("c1", "personalization", datetime(2024, 4, 1))
    True
    """

    def __init__(self, policy: ConsentPolicy = DEFAULT_POLICY) -> None:
        self.policy = policy
        self._history: dict[str, list[ConsentChoice]] = {}

    @classmethod
    def load(cls, wh: Warehouse, policy: ConsentPolicy = DEFAULT_POLICY) -> ConsentBook:
        _ensure_consents(wh)
        book = cls(policy)
        rows = wh.fetchall(
            'SELECT customer_id, purpose, granted, "at", source FROM consents '
            "WHERE customer_id IS NOT NULL AND purpose IS NOT NULL AND granted IS NOT NULL "
            'AND "at" IS NOT NULL ORDER BY "at"'
        )
        for customer, purpose, granted, at, source in rows:
            book.record(
                str(customer).strip(), ConsentChoice(_purpose(purpose), bool(granted), at, source)
            )
        return book

    def record(self, person: str, choice: ConsentChoice) -> None:
        self._history.setdefault(person, []).append(choice)

    def latest(self, person: str, purpose: str) -> bool | None:
        """The latest choice for a purpose (``None``: none recorded)."""
        choice = latest_choice(self._history.get(person, ()), purpose)
        return None if choice is None else choice.granted

    def may_use(self, person: str, purpose: str, at: datetime | None = None) -> bool:
        choice = latest_choice(self._history.get(str(person).strip(), ()), purpose, at)
        return self.policy.allows(purpose, choice)


DEFAULT_UNIVERSE = (
    "SELECT CAST(customer_id AS VARCHAR) AS customer_id FROM customers "
    "WHERE customer_id IS NOT NULL "
    "UNION SELECT CAST(customer_id AS VARCHAR) FROM consents WHERE customer_id IS NOT NULL"
)


def permitted_persons_sql(
    purpose: str,
    at: datetime | None = None,
    *,
    policy: ConsentPolicy = DEFAULT_POLICY,
    universe_sql: str = DEFAULT_UNIVERSE,
) -> BoundSql:
    """A query of the customer ids that may be used for ``purpose`` at ``at``.

    The same policy as :func:`may_use`, evaluated for everyone at once in the
    engine. Suppressed persons are not in it: erasure deleted their rows.

    Parameters
    ----------
    purpose
        The purpose.
    at
        The moment of use (default: every recorded choice counts).
    policy
        Defaults for persons without a choice.
    universe_sql
        A query (without parameters) of the candidate ids in a column
        ``customer_id``; by default everyone in ``customers`` or ``consents``.

    Returns
    -------
    BoundSql
        One column, ``customer_id``.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> from segmint.data.store import ensure_tables
    >>> ensure_tables(wh)
    >>> _ = record_consent(wh, "c1", "advertising", True, at=datetime(2024, 1, 1))
    >>> wh.fetchall(*permitted_persons_sql("advertising"))
    [('c1',)]
    """
    purpose = _purpose(purpose)
    at = _naive_utc(at)
    when = ' AND "at" <= ?' if at is not None else ""
    sql = (
        f"WITH universe AS ({universe_sql}), "
        "latest AS (SELECT customer_id, granted FROM (SELECT CAST(customer_id AS VARCHAR) "
        "AS customer_id, granted, row_number() OVER (PARTITION BY customer_id "
        'ORDER BY "at" DESC, granted ASC) AS _rank FROM consents WHERE lower(trim(purpose)) = ? '
        f'AND granted IS NOT NULL AND "at" IS NOT NULL{when}) WHERE _rank = 1) '
        "SELECT DISTINCT u.customer_id FROM universe u LEFT JOIN latest l "
        "ON l.customer_id = u.customer_id WHERE coalesce(l.granted, ?) ORDER BY 1"
    )
    params: list[Any] = [purpose, *([at] if at is not None else []), policy.default(purpose)]
    return BoundSql(sql, params)


def permitted_persons(
    wh: Warehouse,
    purpose: str,
    at: datetime | None = None,
    *,
    policy: ConsentPolicy = DEFAULT_POLICY,
) -> list[str]:
    """The customer ids :func:`permitted_persons_sql` selects, as a list.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> from segmint.data.store import ensure_tables
    >>> ensure_tables(wh)
    >>> permitted_persons(wh, "analytics")
    []
    """
    return [r[0] for r in wh.fetchall(*permitted_persons_sql(purpose, at, policy=policy))]


def sync_event_consents(wh: Warehouse) -> int:
    """Copy consent choices carried by events into ``consents``; returns rows added.

    Segment's consent management sends the preferences in force with each event
    as ``context.consent.categoryPreferences`` (``{"analytics": true, ...}``).
    For identified events (with a ``user_id``) every boolean preference becomes a
    choice at the event's time with source ``event:<message_id>`` -- but only
    where it *changes* the person's state for that purpose, so a preference
    repeated on thousands of events is one row. Running it again adds nothing.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> from segmint.data.store import ensure_tables
    >>> ensure_tables(wh)
    >>> wh.execute("INSERT INTO events (message_id, type, user_id, timestamp, context) "
    ...     "VALUES ('m1', 'track', 'c1', TIMESTAMP '2024-01-01', "
    ...     "'{\\"consent\\": {\\"categoryPreferences\\": {\\"advertising\\": true}}}')")
    >>> sync_event_consents(wh), sync_event_consents(wh)
    (1, 0)
    >>> consent_history(wh, "c1")[0].source
    'event:m1'
    """
    _ensure_consents(wh)
    if not {"user_id", "context", "message_id", "timestamp"} <= set(wh.columns("events")):
        return 0
    load_id = f"consent-sync-{uuid.uuid4().hex[:12]}"
    rows = wh.fetchall(
        'INSERT INTO consents (customer_id, purpose, granted, "at", source, _source, _load_id, '
        "_loaded_at) "
        "WITH observed AS ("
        "  SELECT CAST(e.user_id AS VARCHAR) AS customer_id, lower(trim(p.key)) AS purpose, "
        '  CAST(p.value AS BOOLEAN) AS granted, e.timestamp AS "at", '
        "  'event:' || e.message_id AS source, 1 AS is_new "
        "  FROM events e, json_each(e.context, '$.consent.categoryPreferences') p "
        "  WHERE e.user_id IS NOT NULL AND e.timestamp IS NOT NULL AND p.type = 'BOOLEAN' "
        "), timeline AS ("
        "  SELECT * FROM observed UNION ALL "
        '  SELECT customer_id, lower(trim(purpose)), granted, "at", source, 0 FROM consents '
        '  WHERE granted IS NOT NULL AND "at" IS NOT NULL'
        "), ordered AS ("
        "  SELECT *, lag(granted) OVER (PARTITION BY customer_id, purpose "
        '  ORDER BY "at", is_new, granted DESC, source) AS previous FROM timeline'
        ") "
        "SELECT customer_id, purpose, granted, \"at\", min(source), 'events', ?, ? "
        "FROM ordered WHERE is_new = 1 AND (previous IS NULL OR previous <> granted) "
        'GROUP BY customer_id, purpose, granted, "at"',
        [load_id, utcnow()],
    )
    added = int(rows[0][0]) if rows else 0
    logger.info("synced %d consent changes from events", added)
    return added


def purposes_of(wh: Warehouse, extra: Sequence[str] = PURPOSES) -> list[str]:
    """The known purposes plus every purpose recorded in ``consents``.

    Examples
    --------
    >>> purposes_of(Warehouse(":memory:"))
    ['analytics', 'personalization', 'email_marketing', 'advertising']
    """
    _ensure_consents(wh)
    recorded = [r[0] for r in wh.fetchall("SELECT DISTINCT lower(trim(purpose)) FROM consents")]
    return list(dict.fromkeys([*extra, *sorted(p for p in recorded if p)]))
