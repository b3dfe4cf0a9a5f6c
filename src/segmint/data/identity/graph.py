"""Deterministic identity resolution: every identifier mapped to one person, with history.

:func:`resolve_identities` reads the identifiers of ``customers`` and ``events``,
links them by their evidence, and writes one row per identifier to
``identities`` (identifier -> ``person_id``). Manual merges, their undoing and
every change of person made by a run are kept in ``identity_merges``, an
append-only history, so each merge can be explained and undone.

Identifiers and evidence
------------------------
Identifier types are ``customer_id``, ``user_id``, ``loyalty_id``, ``email``,
``phone``, ``anonymous_id`` and ``external``. Links (``identity_links``) come from:

* a **customer record**: its ``customer_id`` with its e-mail, phone and loyalty id;
* an event of a type in ``event_types`` (``identify`` and ``alias`` by default)
  carrying both a ``userId`` and an ``anonymousId``;
* the **traits** of an ``identify`` event: ``traits.email``, ``traits.phone``
  (only numbers written in international ``+...`` form; others need a region to
  be read) and ``context.externalIds`` (``external`` identifiers ``<type>:<id>``),
  each with the event's ``userId`` (else its ``anonymousId``);
* an ``alias`` event: its ``previousId`` with its ``userId``. The events table has
  no ``previous_id`` column, so the id is read from a ``previous_id`` column if the
  table has one, else from ``properties``, ``traits`` or ``context`` (keys
  ``previousId`` or ``previous_id``); the intake must keep it there. A previous
  id that is a known user or customer id is a ``user_id``, else an ``anonymous_id``
  (Segment's analytics.js aliases the anonymous id by default);
* ``user id = customer id``: the Segment ``userId`` is the CRM customer id, so a
  ``user_id`` equal to a ``customer_id`` is the same person
  (``user_id_is_customer_id``);
* probabilistic matches (Splink, see :mod:`segmint.data.identity.review`),
  manual merges and accepted review pairs.

The partition policy
--------------------
*Anchors* are ``customer_id`` and ``user_id`` identifiers: each names a known
person. Links are *hard* (``user id = customer id``, ``alias previousId``,
probabilistic matches, manual merges, accepted reviews: pairwise evidence that
two records are one person) or *soft* (everything else: a shared e-mail, phone,
loyalty id, anonymous id or trait). Then:

1. Blocked values (:data:`DEFAULT_BLOCKED_VALUES`: shared test e-mails, ``n/a``,
   phones ending in seven identical digits, ``undefined`` anonymous ids, ...) are
   dropped before anything else: they are neither identifiers nor links.
2. A value (other than a ``customer_id``) linked by soft links to more distinct
   identifiers than its type's limit (:class:`ResolveLimits`) is *too common*:
   its soft links are not used and, unless it is an anchor, it belongs to no person.
3. Hard links join identifiers into *units*; a unit holding an anchor is a person.
4. Soft links never join two persons. A shared identifier (a unit without an
   anchor) linked directly to exactly one person joins it; linked directly to
   several, it is *ambiguous*: it belongs to none and is reported as a conflict
   ("shared by several persons"). Two CRM customers sharing an e-mail therefore
   stay two persons and the e-mail is reported.
5. Shared identifiers linked only to each other (an anonymous id and the e-mail
   it gave) form clusters: a cluster touching one person joins it, touching none
   is a person of its own (an anonymous visitor), touching several leaves its
   unattached members ambiguous ("links several persons").

The result depends only on the set of records, never on their order.

Stable person ids
-----------------
A person keeps its id across runs. Each previous person's *oldest member* (its
oldest anchor if it has one, else its oldest identifier: earliest ``first_seen``,
ties broken by type in :data:`IDENTIFIER_TYPES` order, then value) decides where
the id goes: to the new person holding that member. A new person claimed by
several previous ids keeps the id of the *older* person (earliest ``first_seen``
of its identifiers, then the smaller id) and records a merge; a person claimed
by none gets ``p_`` + the first 16 hex digits of the SHA-256 of its founding
identifier (its first identifier by type, then value; hashed as
``type + "\\x1f" + value``), so a rebuild from scratch reproduces the same ids.
Identifiers that change person are recorded as merges or splits in
``identity_merges``.

Merges and their undoing
------------------------
:func:`merge_persons` moves one person's identifiers to the other (the older
survives) and adds a hard ``manual merge`` link, so later runs keep the merge.
:func:`unmerge` restores the recorded identifiers to their previous person and
marks the merge undone (its link too). An undone merge keeps the two persons
apart in later runs: each side's founding identifier acts as an anchor (so soft
links cannot join them) and hard links between them that came from data or
scores are ignored; only an explicit link (a new manual merge, an accepted
review) joins them again. Per the real-time design, a merge touches only the two
persons and yields an event keyed by the surviving person
(:meth:`MergeRecord.to_event`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from segmint.config import IDENTIFIER_TYPES
from segmint.data.normalise import normalise_email, normalise_phone
from segmint.data.schema import Column, Table, register_table
from segmint.engine.warehouse import Warehouse
from segmint.errors import UserInputError

if TYPE_CHECKING:
    from segmint.data.identity.probabilistic import MatchConfig

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

__all__ = [
    "ANCHOR_TYPES",
    "DEFAULT_BLOCKED_VALUES",
    "DEFAULT_MAX_LINKS",
    "IDENTIFIER_TYPES",
    "IDENTITIES",
    "IDENTITY_CONFLICTS",
    "IDENTITY_LINKS",
    "IDENTITY_MERGES",
    "IDENTITY_REVIEW",
    "Conflict",
    "IdentifierRecord",
    "LinkRecord",
    "MergeRecord",
    "MovedIdentifier",
    "PersonView",
    "ResolveLimits",
    "ResolveResult",
    "UnmergeResult",
    "ensure_identity_tables",
    "iter_history",
    "merge_persons",
    "person_of",
    "resolve_identities",
    "show_person",
    "unmerge",
]

#: Types that name a known person; soft links never join two of them.
ANCHOR_TYPES: tuple[str, ...] = ("customer_id", "user_id")
assert IDENTIFIER_TYPES[: len(ANCHOR_TYPES)] == ANCHOR_TYPES  # anchors rank first

_SEVEN = tuple(f"*{d * 7}" for d in "0123456789")
#: Values never used as identifiers: glob patterns (``*``, ``?``), case-insensitive,
#: matched against the normalised value, per identifier type; ``"any"`` applies to
#: every type but ``customer_id`` (customer records are never dropped).
DEFAULT_BLOCKED_VALUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "any": (
            "",
            "-",
            "0",
            "n/a",
            "na",
            "none",
            "null",
            "nil",
            "nan",
            "undefined",
            "unknown",
            "test",
            "00000000-0000-0000-0000-000000000000",
        ),
        "email": (
            "test@test.com",
            "test@example.com",
            "*@example.com",
            "*@example.org",
            "*@example.net",
            "*@test.com",
            "noreply@*",
            "no-reply@*",
            "donotreply@*",
            "do-not-reply@*",
            "unknown@*",
            "none@*",
            "null@*",
            "noemail@*",
            "no-email@*",
            "nomail@*",
            "email@email.com",
            "a@a.com",
            "x@x.com",
        ),
        "phone": (*_SEVEN, "+1234567890", "+11234567890", "+10123456789"),
        "loyalty_id": ("00000*",),
    }
)
#: Default limits of distinct identifiers a value may be softly linked to.
DEFAULT_MAX_LINKS: Mapping[str, int] = MappingProxyType(
    {
        "user_id": 10_000,
        "loyalty_id": 100,
        "email": 100,
        "phone": 100,
        "anonymous_id": 100,
        "external": 100,
    }
)

_HARD, _SOFT = "hard", "soft"
_SHARED = "shared by several persons"
_BRIDGE = "links several persons"
_CROSS = "linked to another person"
_TOO_COMMON = "too common"
_BLOCKED = "blocked value"
_PERSISTENT_ORIGINS = ("splink", "manual", "review")
_EXPLICIT_ORIGINS = ("manual", "review")
_MAX_US = np.iinfo(np.int64).max

# ------------------------------------------------------------------ tables
IDENTITIES = Table(
    "identities",
    "Identity resolution: every identifier and the person it belongs to (person_id NULL: "
    "ambiguous, see identity_conflicts). The view customer_person maps customer_id to "
    "person_id.",
    (
        Column(
            "identifier_type",
            "string",
            "customer_id | user_id | loyalty_id | email | phone | anonymous_id | external.",
        ),
        Column("identifier_value", "string", "The identifier (normalised).", pii=True),
        Column("person_id", "string", "Person the identifier belongs to; NULL when ambiguous."),
        Column("first_seen", "timestamp", "Earliest observation (UTC)."),
        Column("last_seen", "timestamp", "Latest observation (UTC)."),
        Column("source", "string", "Source (or table) of the earliest observation."),
        Column("assigned_at", "timestamp", "Since when the identifier has its person_id (UTC)."),
    ),
    key=("identifier_type", "identifier_value"),
)

IDENTITY_LINKS = Table(
    "identity_links",
    "Evidence that two identifiers belong to one person: one row per pair, rule and origin.",
    (
        Column("type_a", "string", "Type of the first identifier."),
        Column("value_a", "string", "First identifier.", pii=True),
        Column("type_b", "string", "Type of the second identifier."),
        Column("value_b", "string", "Second identifier.", pii=True),
        Column(
            "rule",
            "string",
            "customer record | <type> event | identify traits | alias previousId | user id = "
            "customer id | splink match <p> | manual merge | review accepted <p>.",
        ),
        Column("strength", "string", "hard (joins persons) or soft (never joins two persons)."),
        Column("origin", "string", "data | splink | manual | review."),
        Column("weight", "float", "Match weight (log2 Bayes factor) of probabilistic links."),
        Column(
            "ref",
            "string",
            "Record behind the link: customer_id, first message_id, merge_id or review_id.",
            pii=True,
        ),
        Column("observations", "integer", "Records that showed the link."),
        Column("first_seen", "timestamp", "Earliest observation (UTC)."),
        Column("last_seen", "timestamp", "Latest observation (UTC)."),
        Column("created_at", "timestamp", "When segmint first recorded the link (UTC)."),
        Column("undone_at", "timestamp", "When the merge that made the link was undone."),
    ),
)

IDENTITY_MERGES = Table(
    "identity_merges",
    "Append-only history of persons merged (and split) with the identifiers moved.",
    (
        Column("merge_id", "string", "Identifier of the change (m_...)."),
        Column("action", "string", "merge | split."),
        Column(
            "person_id",
            "string",
            "merge: the surviving person; split: the person identifiers left.",
        ),
        Column(
            "other_person_ids",
            "string[]",
            "merge: the persons merged into person_id; split: the receiving person (empty: "
            "the identifiers became ambiguous).",
        ),
        Column("rule", "string", "Evidence that caused it (link rules, comma-separated)."),
        Column("weight", "float", "Largest match weight among the links, if probabilistic."),
        Column(
            "identifiers",
            "json",
            "Identifiers moved: [{type, value, from, to, since}], 'from' being the previous "
            "person and 'since' its previous assigned_at.",
            pii=True,
        ),
        Column("origin", "string", "resolve | manual | review."),
        Column("reason", "string", "Reason given for a manual merge."),
        Column("at", "timestamp", "When (UTC)."),
        Column("undone_at", "timestamp", "When the merge was undone (NULL: in force)."),
    ),
    key=("merge_id",),
    timestamp_column="at",
)

IDENTITY_CONFLICTS = Table(
    "identity_conflicts",
    "Identifiers whose evidence points at several persons, too common or blocked (last run).",
    (
        Column("identifier_type", "string", "Type of the identifier."),
        Column("identifier_value", "string", "The identifier.", pii=True),
        Column(
            "reason",
            "string",
            "shared by several persons | links several persons | linked to another person | "
            "too common | blocked value.",
        ),
        Column("person_ids", "string[]", "Persons involved (empty when not known)."),
        Column("links", "integer", "Distinct identifiers the value is linked to."),
        Column("detected_at", "timestamp", "Run that found it (UTC)."),
    ),
)

IDENTITY_REVIEW = Table(
    "identity_review",
    "Probabilistic pairs of customers in the review band, waiting for (or given) a decision.",
    (
        Column("review_id", "string", "Identifier of the pair (r_...)."),
        Column("customer_id_l", "string", "First customer.", pii=True),
        Column("customer_id_r", "string", "Second customer.", pii=True),
        Column("match_probability", "float", "Probability that they are one person."),
        Column("match_weight", "float", "Match weight (log2 Bayes factor)."),
        Column("evidence", "json", "Per-field levels and weights (see MatchResult.explain)."),
        Column("status", "string", "pending | accepted | rejected."),
        Column("created_at", "timestamp", "When the pair was first queued (UTC)."),
        Column("decided_at", "timestamp", "When it was accepted or rejected (UTC)."),
        Column("reason", "string", "Reason given with the decision."),
        Column("merge_id", "string", "Merge made when the pair was accepted."),
    ),
    key=("review_id",),
)

_TABLES = (IDENTITIES, IDENTITY_LINKS, IDENTITY_MERGES, IDENTITY_CONFLICTS, IDENTITY_REVIEW)
for _table in _TABLES:
    register_table(_table)

_VIEW_SQL = (
    "CREATE OR REPLACE VIEW customer_person AS SELECT identifier_value AS customer_id, "
    "person_id FROM identities WHERE identifier_type = 'customer_id'"
)
# Features are keyed by customer id; a person with several CRM records is represented by
# the smallest of its customer ids, and every identifier of the person (user ids,
# customer ids, anonymous ids) maps to that representative.
_REPRESENTATIVE_SQL = (
    "CREATE OR REPLACE VIEW identifier_representative AS "
    "WITH reps AS (SELECT person_id, min(identifier_value) AS representative FROM identities "
    "WHERE identifier_type = 'customer_id' AND person_id IS NOT NULL GROUP BY person_id) "
    "SELECT i.identifier_type, i.identifier_value, r.representative FROM identities i "
    "JOIN reps r USING (person_id) "
    "WHERE i.identifier_type IN ('customer_id', 'user_id', 'anonymous_id')"
)


def ensure_identity_tables(wh: Warehouse) -> None:
    """Create the identity tables and the views ``customer_person`` and
    ``identifier_representative`` (identifier -> the customer id representing its person).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_identity_tables(wh)
    >>> wh.fetchall("SELECT count(*) FROM customer_person")
    [(0,)]
    """
    for table in _TABLES:
        wh.execute(table.ddl())
    wh.execute(_VIEW_SQL)
    wh.execute(_REPRESENTATIVE_SQL)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# ------------------------------------------------------------------ options and results
@dataclass(frozen=True)
class ResolveLimits:
    """Per-type limits on how many distinct identifiers one value may be softly linked to.

    A value over its limit is *too common* (a shared office phone, a kiosk
    e-mail): its soft links are not used. ``customer_id`` has no limit.

    Parameters
    ----------
    max_links
        Identifier type -> limit; types left out keep :data:`DEFAULT_MAX_LINKS`.

    Examples
    --------
    >>> ResolveLimits({"email": 5}).limit("email"), ResolveLimits().limit("phone")
    (5, 100)
    """

    max_links: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        merged = dict(DEFAULT_MAX_LINKS)
        for type_, limit in self.max_links.items():
            if type_ not in DEFAULT_MAX_LINKS:
                raise UserInputError(
                    f"no limit can be set for {type_!r}; types are {list(DEFAULT_MAX_LINKS)}",
                    where="limits.max_links",
                )
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise UserInputError(
                    f"must be a positive integer, not {limit!r}", where=f"limits.{type_}"
                )
            merged[type_] = limit
        object.__setattr__(self, "max_links", MappingProxyType(merged))

    def limit(self, identifier_type: str) -> int:
        """The limit of a type (no limit for ``customer_id``)."""
        return self.max_links.get(identifier_type, int(_MAX_US))


@dataclass(frozen=True)
class Conflict:
    """An identifier whose evidence could not be used as it stands.

    Attributes
    ----------
    identifier_type, identifier_value
        The identifier.
    reason
        ``shared by several persons``, ``links several persons``, ``linked to
        another person``, ``too common`` or ``blocked value``.
    person_ids
        The persons involved.
    links
        Distinct identifiers the value is linked to.
    """

    identifier_type: str
    identifier_value: str
    reason: str
    person_ids: tuple[str, ...]
    links: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "person_ids": list(self.person_ids)}


@dataclass(frozen=True)
class MovedIdentifier:
    """One identifier moved by a merge or split: from one person to another."""

    type: str
    value: str
    from_person: str | None
    to_person: str | None
    since: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "value": self.value,
            "from": self.from_person,
            "to": self.to_person,
            "since": None if self.since is None else self.since.isoformat(),
        }

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> MovedIdentifier:
        since = item.get("since")
        return cls(
            str(item["type"]),
            str(item["value"]),
            item.get("from"),
            item.get("to"),
            None if since is None else datetime.fromisoformat(since),
        )


@dataclass(frozen=True)
class MergeRecord:
    """One entry of the identity history (``identity_merges``).

    Attributes
    ----------
    merge_id
        ``m_...``; pass it to :func:`unmerge`.
    action
        ``merge`` (``other_person_ids`` merged into ``person_id``) or ``split``
        (identifiers of ``person_id`` moved to ``other_person_ids``).
    rule, weight
        Evidence behind it: link rules, and the largest match weight if any.
    identifiers
        The identifiers moved, each with its previous person.
    origin
        ``resolve``, ``manual`` or ``review``.
    """

    merge_id: str
    action: str
    person_id: str
    other_person_ids: tuple[str, ...]
    rule: str
    weight: float | None
    identifiers: tuple[MovedIdentifier, ...]
    origin: str
    reason: str | None
    at: datetime
    undone_at: datetime | None = None

    @property
    def partition_key(self) -> str:
        """The person whose partition processes this change (the survivor)."""
        return self.person_id

    def to_event(self) -> dict[str, Any]:
        """The change as an event for the real-time processor, keyed by the survivor.

        Examples
        --------
        >>> record = MergeRecord("m_1", "merge", "p_a", ("p_b",), "manual merge", None, (),
        ...                      "manual", "same person", datetime(2024, 1, 1))
        >>> record.to_event()["person_id"], record.to_event()["merged_person_ids"]
        ('p_a', ['p_b'])
        """
        return {
            "type": "identity_merge" if self.action == "merge" else "identity_split",
            "merge_id": self.merge_id,
            "person_id": self.person_id,
            "merged_person_ids": list(self.other_person_ids),
            "at": self.at.isoformat(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "merge_id": self.merge_id,
            "action": self.action,
            "person_id": self.person_id,
            "other_person_ids": list(self.other_person_ids),
            "rule": self.rule,
            "weight": self.weight,
            "identifiers": [i.to_json() for i in self.identifiers],
            "origin": self.origin,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "undone_at": None if self.undone_at is None else self.undone_at.isoformat(),
        }


@dataclass(frozen=True)
class ResolveResult:
    """What a run of :func:`resolve_identities` did.

    Attributes
    ----------
    identifiers, persons, ambiguous
        Identifiers written, distinct persons, identifiers left without a person.
    links
        Evidence links used as input (after blocking).
    blocked
        Distinct blocked values met in the data.
    new_persons
        Persons that got a new id.
    merges, splits
        Changes of person recorded in ``identity_merges`` by this run.
    conflicts
        Everything reported in ``identity_conflicts``.
    probabilistic_matches, review_pending
        Probabilistic links used, and pairs waiting for review (with ``probabilistic``).
    seconds
        Wall-clock time of the run.
    """

    identifiers: int
    persons: int
    ambiguous: int
    links: int
    blocked: int
    new_persons: int
    merges: tuple[MergeRecord, ...]
    splits: tuple[MergeRecord, ...]
    conflicts: tuple[Conflict, ...]
    probabilistic_matches: int
    review_pending: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifiers": self.identifiers,
            "persons": self.persons,
            "ambiguous": self.ambiguous,
            "links": self.links,
            "blocked": self.blocked,
            "new_persons": self.new_persons,
            "merges": [m.to_dict() for m in self.merges],
            "splits": [s.to_dict() for s in self.splits],
            "conflicts": [c.to_dict() for c in self.conflicts],
            "probabilistic_matches": self.probabilistic_matches,
            "review_pending": self.review_pending,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class IdentifierRecord:
    """One row of ``identities``."""

    type: str
    value: str
    person_id: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    source: str | None
    assigned_at: datetime | None


@dataclass(frozen=True)
class LinkRecord:
    """One row of ``identity_links``: evidence between two identifiers."""

    type_a: str
    value_a: str
    type_b: str
    value_b: str
    rule: str
    strength: str
    origin: str
    weight: float | None
    ref: str | None
    observations: int
    first_seen: datetime | None
    last_seen: datetime | None
    created_at: datetime | None
    undone_at: datetime | None


@dataclass(frozen=True)
class PersonView:
    """A person: identifiers, the links between them and their history.

    Attributes
    ----------
    person_id
        The person shown.
    identifiers
        Its identifiers (``identities`` rows).
    links
        Every link touching one of its identifiers, undone ones included.
    history
        Merges and splits involving the person, oldest first.
    conflicts
        Conflicts of the last run naming the person.
    redirected_from
        The id asked for when it had been merged into ``person_id``.
    """

    person_id: str
    identifiers: tuple[IdentifierRecord, ...]
    links: tuple[LinkRecord, ...]
    history: tuple[MergeRecord, ...]
    conflicts: tuple[Conflict, ...]
    redirected_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        return {
            "person_id": self.person_id,
            "redirected_from": self.redirected_from,
            "identifiers": [{k: plain(v) for k, v in asdict(i).items()} for i in self.identifiers],
            "links": [{k: plain(v) for k, v in asdict(i).items()} for i in self.links],
            "history": [m.to_dict() for m in self.history],
            "conflicts": [c.to_dict() for c in self.conflicts],
        }


@dataclass(frozen=True)
class UnmergeResult:
    """What :func:`unmerge` did.

    Attributes
    ----------
    merge_id
        The merge.
    restored
        Identifiers given back their previous person.
    skipped
        Recorded identifiers left alone: gone, or moved by a later change.
    already_undone
        True when the merge had been undone before (nothing changed).
    """

    merge_id: str
    restored: int
    skipped: int
    already_undone: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ input checks
def _check_blocked(blocked: Mapping[str, Sequence[str]] | None) -> list[tuple[str, str]]:
    """(type, lower-cased glob) pairs; ``"any"`` covers every type but customer_id."""
    source = DEFAULT_BLOCKED_VALUES if blocked is None else blocked
    patterns: list[tuple[str, str]] = []
    for type_, values in source.items():
        if type_ == "customer_id":
            raise UserInputError(
                "customer ids cannot be blocked (each customer is a person)",
                where="blocked_values",
            )
        if type_ != "any" and type_ not in IDENTIFIER_TYPES:
            raise UserInputError(
                f"unknown identifier type {type_!r}; types are {['any', *IDENTIFIER_TYPES]}",
                where="blocked_values",
            )
        if isinstance(values, str):
            raise UserInputError(
                "must be a list of values or glob patterns", where=f"blocked_values.{type_}"
            )
        for value in values:
            if not isinstance(value, str):
                raise UserInputError(f"not a string: {value!r}", where=f"blocked_values.{type_}")
            patterns.append((type_, value.strip().lower()))
    return patterns


_EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")


def _check_event_types(event_types: Sequence[str]) -> list[str]:
    if isinstance(event_types, str):
        raise UserInputError("must be a list of event types", where="event_types")
    unknown = sorted(set(event_types) - set(_EVENT_TYPES))
    if unknown:
        raise UserInputError(
            f"unknown event type(s) {unknown}; types are {list(_EVENT_TYPES)}",
            where="event_types",
        )
    return list(dict.fromkeys(event_types))


# ------------------------------------------------------------------ extraction (SQL)
_PHONE_TRAIT = (
    "CASE WHEN starts_with(trim({p}), '+') AND regexp_full_match("
    "'+' || regexp_replace(replace({p}, '(0)', ''), '[^0-9]', '', 'g'), '\\+[1-9][0-9]{{6,14}}') "
    "THEN '+' || regexp_replace(replace({p}, '(0)', ''), '[^0-9]', '', 'g') END"
)


def _extract(
    wh: Warehouse,
    *,
    event_types: list[str],
    link_traits: bool,
    user_id_is_customer_id: bool,
) -> None:
    """Fill ``_ident_obs`` (identifier observations) and ``_ident_raw`` (link evidence)."""
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_obs (type VARCHAR, value VARCHAR, "
        "first_at TIMESTAMP, last_at TIMESTAMP, source VARCHAR)"
    )
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_raw (type_a VARCHAR, value_a VARCHAR, "
        "type_b VARCHAR, value_b VARCHAR, rule VARCHAR, strength VARCHAR, origin VARCHAR, "
        "weight DOUBLE, ref VARCHAR, n BIGINT, first_at TIMESTAMP, last_at TIMESTAMP, "
        "created_at TIMESTAMP)"
    )
    if wh.has_table("customers"):
        _extract_customers(wh)
    if wh.has_table("events"):
        _extract_events(wh, event_types, link_traits)
    if user_id_is_customer_id:
        wh.execute(
            "INSERT INTO _ident_raw SELECT 'customer_id', c.value, 'user_id', u.value, "
            "'user id = customer id', 'hard', 'data', NULL, NULL, 1, u.first_at, u.last_at, "
            "NULL FROM (SELECT value, min(first_at) AS first_at, max(last_at) AS last_at "
            "FROM _ident_obs WHERE type = 'user_id' GROUP BY value) u "
            "JOIN (SELECT DISTINCT value FROM _ident_obs WHERE type = 'customer_id') c "
            "ON c.value = u.value"
        )


def _extract_customers(wh: Warehouse) -> None:
    columns = set(wh.columns("customers"))

    def col(name: str, fallback: str = "NULL") -> str:
        return f'"{name}"' if name in columns else fallback

    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_customers AS SELECT customer_id, "
        f"nullif(lower(trim({col('email')})), '') AS email, "
        f"nullif(trim({col('phone')}), '') AS phone, "
        f"nullif(trim(CAST({col('loyalty_id')} AS VARCHAR)), '') AS loyalty_id, "
        f"coalesce({col('signup_at')}, {col('updated_at')}, {col('_loaded_at')}) AS first_at, "
        f"coalesce({col('updated_at')}, {col('_loaded_at')}, {col('signup_at')}) AS last_at, "
        f"coalesce({col('_source')}, 'customers') AS source "
        "FROM customers WHERE customer_id IS NOT NULL AND customer_id <> ''"
    )
    wh.execute(
        "INSERT INTO _ident_obs SELECT 'customer_id', customer_id, first_at, last_at, source "
        "FROM _ident_customers "
        + " ".join(
            f"UNION ALL SELECT '{t}', {t}, first_at, last_at, source FROM _ident_customers "
            f"WHERE {t} IS NOT NULL"
            for t in ("email", "phone", "loyalty_id")
        )
    )
    wh.execute(
        "INSERT INTO _ident_raw "
        + " UNION ALL ".join(
            f"SELECT 'customer_id', customer_id, '{t}', {t}, 'customer record', 'soft', "
            "'data', NULL, customer_id, 1, first_at, last_at, NULL FROM _ident_customers "
            f"WHERE {t} IS NOT NULL"
            for t in ("email", "phone", "loyalty_id")
        )
    )
    wh.execute("DROP TABLE IF EXISTS _ident_customers")


def _previous_id_sql(columns: set[str]) -> str:
    candidates = (
        ["nullif(trim(CAST(previous_id AS VARCHAR)), '')"] if "previous_id" in columns else []
    )
    for json_column in ("properties", "traits", "context"):
        if json_column in columns:
            for key in ("previousId", "previous_id"):
                candidates.append(
                    f"nullif(trim(json_extract_string({json_column}, '$.{key}')), '')"
                )
    return f"coalesce({', '.join(candidates)})" if candidates else "NULL"


def _extract_events(wh: Warehouse, event_types: list[str], link_traits: bool) -> None:
    columns = set(wh.columns("events"))
    source = "coalesce(_source, 'events')" if "_source" in columns else "'events'"
    ids = (
        "WITH e AS (SELECT nullif(trim(user_id), '') AS user_id, "
        "nullif(trim(anonymous_id), '') AS anonymous_id, type, message_id, timestamp, "
        f"{source} AS source FROM events) "
    )
    wh.execute(
        "INSERT INTO _ident_obs "
        + ids
        + " UNION ALL ".join(
            f"SELECT '{t}', {t}, min(timestamp), max(timestamp), "
            f"arg_min(source, (timestamp, source)) FROM e WHERE {t} IS NOT NULL GROUP BY {t}"
            for t in ("user_id", "anonymous_id")
        )
    )
    if event_types:
        wh.execute(
            "INSERT INTO _ident_raw "
            + ids
            + "SELECT 'user_id', user_id, 'anonymous_id', anonymous_id, type || ' event', "
            "'soft', 'data', NULL, arg_min(message_id, (timestamp, message_id)), count(*), "
            "min(timestamp), max(timestamp), NULL FROM e WHERE user_id IS NOT NULL AND "
            "anonymous_id IS NOT NULL AND list_contains(?::VARCHAR[], type) "
            "GROUP BY user_id, anonymous_id, type",
            [event_types],
        )
    if link_traits and "identify" in event_types:
        _extract_traits(wh, columns, source)
    if "alias" in event_types:
        _extract_alias(wh, columns, source)


def _extract_traits(wh: Warehouse, columns: set[str], source: str) -> None:
    has_traits, has_context = "traits" in columns, "context" in columns
    if not (has_traits or has_context):
        return
    email = "nullif(lower(trim(json_extract_string(traits, '$.email'))), '')"
    phone = _PHONE_TRAIT.format(p="json_extract_string(traits, '$.phone')")
    external = (
        "list_transform(json_extract(context, '$.externalIds[*]'), x -> "
        "nullif(trim(json_extract_string(x, '$.type')), '') || ':' || "
        "nullif(trim(json_extract_string(x, '$.id')), ''))"
    )
    parts = []
    if has_traits:
        parts += [f"SELECT 'email' AS type, {email} AS value, * FROM centre"]
        parts += [f"SELECT 'phone', {phone}, * FROM centre"]
    if has_context:
        parts += [f"SELECT 'external', unnest({external}), * FROM centre"]
    traits_col = "traits" if has_traits else "NULL AS traits"
    context_col = "context" if has_context else "NULL AS context"
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_traits AS WITH centre AS (SELECT "
        "CASE WHEN nullif(trim(user_id), '') IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' "
        "END AS ctype, coalesce(nullif(trim(user_id), ''), nullif(trim(anonymous_id), '')) "
        f"AS cvalue, message_id, timestamp, {source} AS source, {traits_col}, {context_col} "
        "FROM events WHERE type = 'identify') "
        "SELECT type, value, ctype, cvalue, message_id, timestamp, source FROM ("
        + " UNION ALL ".join(parts)
        + ") WHERE value IS NOT NULL AND cvalue IS NOT NULL"
    )
    wh.execute(
        "INSERT INTO _ident_obs SELECT type, value, min(timestamp), max(timestamp), "
        "arg_min(source, (timestamp, source)) FROM _ident_traits GROUP BY type, value"
    )
    wh.execute(
        "INSERT INTO _ident_raw SELECT ctype, cvalue, type, value, 'identify traits', 'soft', "
        "'data', NULL, arg_min(message_id, (timestamp, message_id)), count(*), min(timestamp), "
        "max(timestamp), NULL FROM _ident_traits GROUP BY ctype, cvalue, type, value"
    )
    wh.execute("DROP TABLE IF EXISTS _ident_traits")


def _extract_alias(wh: Warehouse, columns: set[str], source: str) -> None:
    previous = _previous_id_sql(columns)
    if previous == "NULL":
        return
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_alias AS SELECT a.*, CASE WHEN EXISTS ("
        "SELECT 1 FROM _ident_obs o WHERE o.value = a.previous_id AND o.type IN "
        "('user_id', 'customer_id')) THEN 'user_id' ELSE 'anonymous_id' END AS ptype FROM ("
        f"SELECT nullif(trim(user_id), '') AS user_id, {previous} AS previous_id, message_id, "
        f"timestamp, {source} AS source FROM events WHERE type = 'alias') a "
        "WHERE a.user_id IS NOT NULL AND a.previous_id IS NOT NULL"
    )
    wh.execute(
        "INSERT INTO _ident_obs SELECT ptype, previous_id, min(timestamp), max(timestamp), "
        "arg_min(source, (timestamp, source)) FROM _ident_alias GROUP BY ptype, previous_id"
    )
    wh.execute(
        "INSERT INTO _ident_raw SELECT ptype, previous_id, 'user_id', user_id, "
        "'alias previousId', 'hard', 'data', NULL, arg_min(message_id, (timestamp, message_id)), "
        "count(*), min(timestamp), max(timestamp), NULL FROM _ident_alias "
        "GROUP BY ptype, previous_id, user_id"
    )
    wh.execute("DROP TABLE IF EXISTS _ident_alias")


def _has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _build_graph(wh: Warehouse, patterns: list[tuple[str, str]]) -> None:
    """Nodes (numbered by type then value, with their previous person) and coded edges.

    Blocked values are removed first. Exact patterns are matched by a hash join;
    wildcard patterns are tested only against the identifiers of their own type.
    """
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_patterns (type VARCHAR, pattern VARCHAR, "
        "exact BOOLEAN)"
    )
    if patterns:
        wh.register(
            "_ident_patterns_in",
            pa.table(
                {
                    "type": [t for t, _ in patterns],
                    "pattern": [p for _, p in patterns],
                    "exact": [not _has_wildcard(p) for _, p in patterns],
                }
            ),
        )
        wh.execute("INSERT INTO _ident_patterns SELECT DISTINCT * FROM _ident_patterns_in")
        wh.unregister("_ident_patterns_in")
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_distinct AS "
        "SELECT type, value, min(first_at) AS first_seen, max(last_at) AS last_seen, "
        "arg_min(source, (first_at, source)) AS source FROM _ident_obs GROUP BY type, value"
    )
    wh.execute("DROP TABLE _ident_obs")
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_blocked AS SELECT DISTINCT type, value FROM ("
        "SELECT d.type, d.value FROM _ident_distinct d JOIN _ident_patterns p "
        "ON p.exact AND p.type = d.type AND p.pattern = lower(d.value) "
        "UNION ALL SELECT d.type, d.value FROM _ident_distinct d JOIN _ident_patterns p "
        "ON p.exact AND p.type = 'any' AND p.pattern = lower(d.value) "
        "WHERE d.type <> 'customer_id' "
        "UNION ALL SELECT d.type, d.value FROM _ident_distinct d JOIN _ident_patterns p "
        "ON NOT p.exact AND p.type = d.type WHERE lower(d.value) GLOB p.pattern "
        "UNION ALL SELECT d.type, d.value FROM _ident_distinct d, "
        "(SELECT pattern FROM _ident_patterns WHERE NOT exact AND type = 'any') p "
        "WHERE d.type <> 'customer_id' AND lower(d.value) GLOB p.pattern)"
    )
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_prev AS SELECT person_id, "
        "(row_number() OVER (ORDER BY person_id) - 1)::BIGINT AS code, "
        "coalesce(epoch_us(min(first_seen)), ?) AS age FROM identities "
        "WHERE person_id IS NOT NULL GROUP BY person_id",
        [int(_MAX_US)],
    )
    # Node numbers are row ids: the table is written in (type, value) order, which
    # a parallel sort does much faster than a row_number() window.
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_nodes AS SELECT d.*, "
        "o.assigned_at AS prev_since, coalesce(p.code, -1) AS prev, "
        "o.identifier_value IS NOT NULL AS existed FROM _ident_distinct d "
        "LEFT JOIN identities o ON o.identifier_type = d.type AND o.identifier_value = d.value "
        "LEFT JOIN _ident_prev p ON p.person_id = o.person_id "
        "WHERE NOT EXISTS (SELECT 1 FROM _ident_blocked b WHERE b.type = d.type "
        "AND b.value = d.value) ORDER BY d.type, d.value"
    )
    wh.execute("DROP TABLE _ident_distinct")
    # Persistent links (probabilistic ones were added by the caller) still in force.
    wh.execute(
        "INSERT INTO _ident_raw SELECT type_a, value_a, type_b, value_b, rule, strength, origin, "
        "weight, ref, observations, first_seen, last_seen, created_at FROM identity_links "
        "WHERE origin IN ('manual', 'review') AND undone_at IS NULL"
    )
    # Each extraction aggregates its own links, so rows are distinct by
    # (identifiers, rule, origin) and need no second aggregation.
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_edges AS SELECT a.rowid AS a, b.rowid AS b, "
        "r.type_a, r.value_a, r.type_b, r.value_b, r.rule, r.strength, r.origin, r.weight, "
        "r.ref, r.n AS observations, r.first_at AS first_seen, r.last_at AS last_seen, "
        "r.created_at FROM _ident_raw r "
        "JOIN _ident_nodes a ON a.type = r.type_a AND a.value = r.value_a "
        "JOIN _ident_nodes b ON b.type = r.type_b AND b.value = r.value_b WHERE a.rowid <> b.rowid"
    )
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_blocked_links AS WITH hits AS ("
        "SELECT b.type, b.value, r.type_b || chr(31) || r.value_b AS other "
        "FROM _ident_blocked b JOIN _ident_raw r ON r.type_a = b.type AND r.value_a = b.value "
        "UNION ALL SELECT b.type, b.value, r.type_a || chr(31) || r.value_a "
        "FROM _ident_blocked b JOIN _ident_raw r ON r.type_b = b.type AND r.value_b = b.value) "
        "SELECT b.type, b.value, count(DISTINCT h.other) AS links FROM _ident_blocked b "
        "LEFT JOIN hits h USING (type, value) GROUP BY b.type, b.value"
    )
    wh.execute("DROP TABLE _ident_raw")


def _blocked_conflicts(wh: Warehouse) -> pd.DataFrame:
    """Blocked values met in the data, with how many identifiers each was linked to."""
    return wh.df("SELECT type, value, links FROM _ident_blocked_links ORDER BY type, value")


# ------------------------------------------------------------------ the partition (numpy)
def _components(n: int, a: IntArray, b: IntArray) -> IntArray:
    """Connected-component label of each of ``n`` nodes (numbered by first discovery)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if len(a) == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.bool_), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels, dtype=np.int64)


def _distinct(values: IntArray) -> IntArray:
    """Sorted distinct values (sorting: numpy 2's hash-based ``unique`` is far slower)."""
    ordered = np.sort(values, kind="stable")
    if len(ordered) == 0:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def _pair_keys(x: IntArray, y: IntArray, size: int) -> tuple[IntArray, IntArray]:
    """Distinct (x, y) pairs, sorted by x then y."""
    keys = _distinct(x * np.int64(size) + y)
    return keys // size, keys % size


@dataclass
class _Partition:
    label: IntArray  # per node: group >= 0, or -1 (no person)
    n_groups: int
    keep: BoolArray  # per edge: used as evidence (not dropped by a guard)
    conflicts: pd.DataFrame  # node, reason, group (-1: none)
    degree: IntArray  # distinct identifiers each node is linked to


def _partition(
    n: int,
    anchor: BoolArray,
    a: IntArray,
    b: IntArray,
    hard: BoolArray,
    max_links: IntArray,
    natural: BoolArray | None = None,
) -> _Partition:
    """Split ``n`` identifiers into persons by the policy of the module docstring.

    ``anchor`` may include identifiers pinned by undone merges; ``natural`` (the
    true anchors, default ``anchor``) decides which end of a soft link between
    two persons is reported as the conflict.
    """
    natural = anchor if natural is None else natural
    all_lo, all_hi = _pair_keys(np.minimum(a, b), np.maximum(a, b), max(n, 1))
    degree = np.bincount(all_lo, minlength=n) + np.bincount(all_hi, minlength=n)
    soft = ~hard
    lo, hi = _pair_keys(np.minimum(a[soft], b[soft]), np.maximum(a[soft], b[soft]), max(n, 1))
    soft_degree = np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n)
    too_common = soft_degree > max_links
    loose_common = too_common & ~anchor
    keep = ~((soft & (too_common[a] | too_common[b])) | loose_common[a] | loose_common[b])
    a, b, hard = a[keep], b[keep], hard[keep]
    soft = ~hard

    unit = _components(n, a[hard], b[hard])
    nu = int(unit.max()) + 1 if n else 0
    units = np.arange(nu, dtype=np.int64)
    anchored = np.zeros(nu, dtype=np.bool_)
    anchored[unit[anchor]] = True

    ea, eb = a[soft], b[soft]
    ua, ub = unit[ea], unit[eb]
    cross = ua != ub
    ea, eb, ua, ub = ea[cross], eb[cross], ua[cross], ub[cross]
    aa, ab = anchored[ua], anchored[ub]

    # Shared units linked directly to persons: one person owns them, several: ambiguous.
    attach = aa != ab
    shared_u = np.where(aa[attach], ub[attach], ua[attach])
    person_u = np.where(aa[attach], ua[attach], ub[attach])
    s_u, g_u = _pair_keys(shared_u, person_u, max(nu, 1))
    count = np.bincount(s_u, minlength=nu)
    ambiguous = count >= 2
    owner = np.full(nu, -1, dtype=np.int64)
    single = count[s_u] == 1
    owner[s_u[single]] = g_u[single]

    # Clusters of shared units linked to each other.
    between = ~aa & ~ab
    x, y = ua[between], ub[between]
    usable = ~ambiguous[x] & ~ambiguous[y]
    cluster = _components(nu, x[usable], y[usable])
    nk = int(cluster.max()) + 1 if nu else 0
    owned = units[owner >= 0]
    kk, gg = _pair_keys(cluster[owned], owner[owned], max(nu, 1))
    kcount = np.bincount(kk, minlength=nk)
    kgroup = np.full(nk, -1, dtype=np.int64)
    one = kcount[kk] == 1
    kgroup[kk[one]] = gg[one]

    final = np.full(nu, -1, dtype=np.int64)
    final[anchored] = units[anchored]
    final[owner >= 0] = owner[owner >= 0]
    floating = units[~anchored & (owner < 0) & ~ambiguous]
    fk = kcount[cluster[floating]]
    final[floating[fk == 1]] = kgroup[cluster[floating[fk == 1]]]
    final[floating[fk == 0]] = nu + cluster[floating[fk == 0]]
    bridged = floating[fk >= 2]

    raw = final[unit]
    raw[loose_common] = -1
    valid = raw >= 0
    groups = _distinct(raw[valid])
    compact = np.searchsorted(groups, raw[valid])
    label = np.full(n, -1, dtype=np.int64)
    label[valid] = compact

    def to_group(raw_groups: IntArray) -> IntArray:
        return np.searchsorted(groups, raw_groups).astype(np.int64)

    def nodes_of(some_units: IntArray) -> pd.DataFrame:
        members = np.flatnonzero(np.isin(unit, some_units))
        return pd.DataFrame({"node": members, "unit": unit[members]})

    frames = []
    amb = ambiguous[s_u]
    shared_pairs = pd.DataFrame({"unit": s_u[amb], "group": to_group(g_u[amb])})
    frames.append(nodes_of(s_u[amb]).merge(shared_pairs, on="unit").assign(reason=_SHARED))
    bridged_k = kcount[kk] >= 2
    bridge_pairs = pd.DataFrame({"k": kk[bridged_k], "group": to_group(gg[bridged_k])})
    bridged_units = pd.DataFrame({"unit": bridged, "k": cluster[bridged]})
    frames.append(
        nodes_of(bridged)
        .merge(bridged_units, on="unit")
        .merge(bridge_pairs, on="k")
        .assign(reason=_BRIDGE)
    )
    both = aa & ab
    ca, cb, ga, gb = ea[both], eb[both], to_group(ua[both]), to_group(ub[both])
    report_a = ~natural[ca] | natural[cb]
    report_b = ~natural[cb] | natural[ca]
    for nodes, mask in ((ca, report_a), (cb, report_b)):
        for grp in (ga, gb):
            frames.append(pd.DataFrame({"node": nodes[mask], "group": grp[mask], "reason": _CROSS}))
    common = np.flatnonzero(too_common)
    frames.append(pd.DataFrame({"node": common, "group": -1, "reason": _TOO_COMMON}))
    conflicts = pd.concat(
        [f[["node", "reason", "group"]] for f in frames], ignore_index=True
    ).astype({"node": np.int64, "group": np.int64})
    return _Partition(label, len(groups), keep, conflicts, degree.astype(np.int64))


# ------------------------------------------------------------------ stable ids
@dataclass
class _Nodes:
    """The identifiers of a run, indexed by node number (type, then value, order)."""

    table: pa.Table  # type, value, prev_since, first_seen, last_seen, source
    rank: IntArray  # position of the type in IDENTIFIER_TYPES
    first_us: IntArray  # first_seen in microseconds (NULL: the largest int64)
    prev: IntArray  # previous person (code into the previous ids) or -1
    existed: BoolArray  # the identifier was in identities before the run

    def take(self, column: str, index: IntArray | Sequence[int]) -> list[Any]:
        """Python values of ``column`` at the given nodes."""
        return list(self.table.column(column).take(pa.array(index, type=pa.int64())).to_pylist())


def _first_per_group(group: IntArray, *keys: IntArray) -> tuple[IntArray, IntArray]:
    """For each distinct group (>= 0): the index with the smallest ``keys`` (in order)."""
    idx = np.flatnonzero(group >= 0)
    order = np.lexsort((idx, *reversed([k[idx] for k in keys]), group[idx]))
    sorted_idx = idx[order]
    g = group[sorted_idx]
    first = np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, dtype=np.bool_)
    return g[first], sorted_idx[first]


def _person_at(person: ObjArray, groups: IntArray) -> ObjArray:
    """The person id of each group number (``None`` for -1)."""
    out = np.full(len(groups), None, dtype=object)
    known = groups >= 0
    out[known] = person[groups[known]]
    return out


def seed_person_id(type_: str, value: str, attempt: int) -> str:
    text = f"{type_}\x1f{value}" + (f"\x1f{attempt}" if attempt else "")
    return "p_" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class _Assignment:
    person: ObjArray  # per group
    survivor: IntArray  # per group: previous person code kept, or -1
    claims: pd.DataFrame  # group, prev (every previous person whose oldest member is there)


def _assign_ids(
    nodes: _Nodes,
    label: IntArray,
    n_groups: int,
    prev_ids: ObjArray,
    prev_age: IntArray,
) -> _Assignment:
    """Give every group a person id, keeping previous ids (see module docstring)."""
    node_index = np.arange(len(label), dtype=np.int64)
    present = np.where(label >= 0, nodes.prev, -1)
    not_anchor = (nodes.rank >= len(ANCHOR_TYPES)).astype(np.int64)
    key_prev, key_node = _first_per_group(
        present, not_anchor, nodes.first_us, nodes.rank, node_index
    )
    heir = np.full(len(prev_ids), -1, dtype=np.int64)
    heir[key_prev] = label[key_node]
    claimed = np.flatnonzero(heir >= 0)
    prev_codes = np.arange(len(prev_ids), dtype=np.int64)
    claim_group = np.full(len(prev_ids), -1, dtype=np.int64)
    claim_group[claimed] = heir[claimed]
    groups_kept, survivor_code = _first_per_group(claim_group, prev_age, prev_codes)
    survivor = np.full(n_groups, -1, dtype=np.int64)
    survivor[groups_kept] = survivor_code
    person = np.empty(n_groups, dtype=object)
    person[groups_kept] = prev_ids[survivor_code]

    founders_group, founders = _first_per_group(label, nodes.rank, node_index)
    new = survivor[founders_group] < 0
    taken = set(person[groups_kept].tolist())
    taken.update(prev_ids[claimed[~np.isin(claimed, survivor_code)]].tolist())
    new_founders = founders[new]
    types = nodes.take("type", new_founders)
    values = nodes.take("value", new_founders)
    fresh = pd.Series(
        [seed_person_id(t, v, 0) for t, v in zip(types, values, strict=True)], dtype=object
    )
    clash = (fresh.duplicated(keep=False) | fresh.isin(taken)).to_numpy()
    for i in np.flatnonzero(clash):
        attempt, candidate = 0, str(fresh.iat[int(i)])
        while candidate in taken:
            attempt += 1
            candidate = seed_person_id(types[i], values[i], attempt)
        fresh.iat[int(i)] = candidate
        taken.add(candidate)
    person[founders_group[new]] = fresh.to_numpy(dtype=object)
    claims = pd.DataFrame({"group": heir[claimed], "prev": claimed})
    return _Assignment(person, survivor, claims)


# ------------------------------------------------------------------ history of a run
def _run_history(
    nodes: _Nodes,
    label: IntArray,
    assignment: _Assignment,
    prev_ids: ObjArray,
    edges: pd.DataFrame,
    now: datetime,
) -> tuple[list[MergeRecord], list[MergeRecord]]:
    """Merges (several previous persons now one) and splits (identifiers moved away)."""
    survivor = assignment.survivor
    kept = np.where(label >= 0, survivor[np.maximum(label, 0)], -1)
    moved_nodes = np.flatnonzero((nodes.prev >= 0) & ((label < 0) | (kept != nodes.prev)))
    if len(moved_nodes) == 0:
        return [], []
    size = np.int64(max(len(prev_ids), 1))
    claims = assignment.claims
    claim_group = claims["group"].to_numpy(dtype=np.int64)
    claim_prev = claims["prev"].to_numpy(dtype=np.int64)
    lost = survivor[claim_group] != claim_prev
    merged_keys = claim_group[lost] * size + claim_prev[lost]
    groups = label[moved_nodes]
    prevs = nodes.prev[moved_nodes]
    is_merge = (groups >= 0) & np.isin(groups * size + prevs, merged_keys)
    person = assignment.person
    frame = pd.DataFrame(
        {
            "node": moved_nodes,
            "group": groups,
            "from": prev_ids[prevs],
            "to": _person_at(person, groups),
            "merge": is_merge,
        }
    )

    def moved(rows: pd.DataFrame) -> tuple[MovedIdentifier, ...]:
        index = rows["node"].to_numpy()
        return tuple(
            MovedIdentifier(type_, value, src, dst, since)
            for type_, value, since, src, dst in zip(
                nodes.take("type", index),
                nodes.take("value", index),
                nodes.take("prev_since", index),
                rows["from"],
                rows["to"],
                strict=True,
            )
        )

    evidence = _merge_evidence(nodes, label, edges, set(claim_group[lost].tolist()))
    merges = []
    for key, rows in frame[frame["merge"]].groupby("group", sort=True):
        group = int(str(key))
        rules, weight = evidence.get(group, ("", None))
        merges.append(
            MergeRecord(
                _new_merge_id(),
                "merge",
                str(person[group]),
                tuple(sorted(set(rows["from"]))),
                rules,
                weight,
                moved(rows),
                "resolve",
                None,
                now,
            )
        )
    splits = []
    rest = frame[~frame["merge"]].assign(dest=lambda f: f["to"].fillna(""))
    for (src, dst), rows in rest.groupby(["from", "dest"], sort=True):
        splits.append(
            MergeRecord(
                _new_merge_id(),
                "split",
                str(src),
                (str(dst),) if dst else (),
                "",
                None,
                moved(rows),
                "resolve",
                None,
                now,
            )
        )
    return merges, splits


def _merge_evidence(
    nodes: _Nodes, label: IntArray, edges: pd.DataFrame, groups: set[int]
) -> dict[int, tuple[str, float | None]]:
    """Rules (and largest weight) of the links joining previously different persons."""
    if not groups or edges.empty:
        return {}
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    same = (label[a] == label[b]) & np.isin(label[a], list(groups))
    crossing = same & (nodes.prev[a] != nodes.prev[b])
    chosen = edges[crossing].assign(group=label[a[crossing]])
    out: dict[int, tuple[str, float | None]] = {}
    for group, rows in chosen.groupby("group"):
        rules = ", ".join(sorted(set(rows["rule"])))
        weights = rows["weight"].dropna()
        out[int(group)] = (rules, float(weights.max()) if len(weights) else None)
    return out


def _new_merge_id() -> str:
    return "m_" + uuid.uuid4().hex[:16]


# ------------------------------------------------------------------ separations
def _active_merges(wh: Warehouse) -> dict[str, str]:
    """Merged person id -> surviving person id, for merges in force (latest wins)."""
    rows = wh.fetchall(
        "SELECT person_id, other_person_ids FROM identity_merges "
        "WHERE action = 'merge' AND undone_at IS NULL ORDER BY \"at\", merge_id"
    )
    survivor_of: dict[str, str] = {}
    for survivor, others in rows:
        for other in others or ():
            survivor_of[other] = survivor
    return survivor_of


def _follow(person_id: str, survivor_of: Mapping[str, str], current: set[str]) -> str | None:
    seen: set[str] = set()
    pid: str | None = person_id
    while pid is not None and pid not in seen:
        if pid in current:
            return pid
        seen.add(pid)
        pid = survivor_of.get(pid)
    return None


def _separations(wh: Warehouse, prev_index: Mapping[str, int]) -> list[tuple[int, int]]:
    """Pairs of previous persons kept apart because a merge between them was undone."""
    rows = wh.fetchall(
        "SELECT person_id, other_person_ids FROM identity_merges "
        "WHERE action = 'merge' AND undone_at IS NOT NULL"
    )
    if not rows:
        return []
    survivor_of = _active_merges(wh)
    current = set(prev_index)
    pairs = set()
    for survivor, others in rows:
        s = _follow(survivor, survivor_of, current)
        for other in others or ():
            o = _follow(other, survivor_of, current)
            if s is not None and o is not None and s != o:
                x, y = prev_index[s], prev_index[o]
                pairs.add((min(x, y), max(x, y)))
    return sorted(pairs)


# ------------------------------------------------------------------ resolve
def resolve_identities(
    wh: Warehouse,
    *,
    blocked_values: Mapping[str, Sequence[str]] | None = None,
    limits: ResolveLimits | None = None,
    event_types: Sequence[str] = ("identify", "alias"),
    link_traits: bool = True,
    user_id_is_customer_id: bool = True,
    probabilistic: bool = False,
    match_config: MatchConfig | None = None,
    now: datetime | None = None,
) -> ResolveResult:
    """Link every identifier of ``customers`` and ``events`` to a person.

    Writes ``identities``, ``identity_links`` (evidence), ``identity_conflicts``
    and, for persons that changed, ``identity_merges``, in one transaction. See
    the module docstring for the policy and how person ids stay stable.

    Parameters
    ----------
    wh
        The warehouse.
    blocked_values
        Identifier type (or ``"any"``) -> glob patterns never used as identifiers;
        replaces :data:`DEFAULT_BLOCKED_VALUES` (extend it with ``{**DEFAULT_BLOCKED_VALUES,
        ...}``).
    limits
        Limits on how widely a value may be shared (:class:`ResolveLimits`).
    event_types
        Event types whose ``userId`` / ``anonymousId`` pairs are links.
    link_traits
        Also link e-mail, phone and ``context.externalIds`` of ``identify`` events.
    user_id_is_customer_id
        A ``userId`` equal to a ``customer_id`` is that customer.
    probabilistic
        Also match customer records probabilistically (Splink): pairs at or above
        the match threshold become hard links, pairs in the review band go to
        ``identity_review``.
    match_config
        Configuration of the probabilistic matcher (default
        ``MatchConfig.for_customers()``).
    now
        Time recorded for this run (UTC; default: the clock).

    Returns
    -------
    ResolveResult

    Examples
    --------
    >>> from segmint.data.store import ensure_tables
    >>> wh = Warehouse(":memory:")
    >>> ensure_tables(wh)
    >>> wh.execute("INSERT INTO customers (customer_id, email) VALUES "
    ...            "('c1', 'ada@mail.org'), ('c2', 'bob@mail.org')")
    >>> result = resolve_identities(wh)
    >>> result.persons, result.identifiers
    (2, 4)
    >>> person_of(wh, "email", "Ada@Mail.org") == person_of(wh, "customer_id", "c1")
    True
    """
    started = time.perf_counter()
    ensure_identity_tables(wh)
    patterns = _check_blocked(blocked_values)
    limits = limits or ResolveLimits()
    if not isinstance(limits, ResolveLimits):
        raise UserInputError("must be a ResolveLimits", where="limits")
    types = _check_event_types(event_types)
    now = now or utcnow()
    try:
        _extract(
            wh,
            event_types=types,
            link_traits=link_traits,
            user_id_is_customer_id=user_id_is_customer_id,
        )
        matches = pd.DataFrame()
        review = pd.DataFrame()
        if probabilistic:
            from segmint.data.identity import review as review_mod

            matches, review = review_mod.score_customers(wh, match_config)
            review_mod.add_match_links(wh, matches)
        else:
            wh.execute(
                "INSERT INTO _ident_raw SELECT type_a, value_a, type_b, value_b, rule, strength, "
                "origin, weight, ref, observations, first_seen, last_seen, created_at "
                "FROM identity_links WHERE origin = 'splink' AND undone_at IS NULL"
            )
        _build_graph(wh, patterns)
        return _resolve_graph(
            wh, limits, now, started, probabilistic=probabilistic, matches=matches, review=review
        )
    finally:
        for name in (
            "_ident_obs",
            "_ident_raw",
            "_ident_patterns",
            "_ident_distinct",
            "_ident_blocked",
            "_ident_blocked_links",
            "_ident_nodes",
            "_ident_edges",
            "_ident_prev",
            "_ident_links_new",
        ):
            wh.execute(f"DROP TABLE IF EXISTS {name}")


def _load_nodes(wh: Warehouse) -> tuple[_Nodes, ObjArray, IntArray]:
    """The run's nodes with their previous person, and the previous persons by code."""
    prev = wh.arrow("SELECT person_id, age FROM _ident_prev ORDER BY code")
    table = wh.arrow(
        "SELECT type, value, prev_since, first_seen, last_seen, source, "
        "(list_position(?::VARCHAR[], type) - 1)::BIGINT AS rank, "
        "coalesce(epoch_us(first_seen), ?) AS first_us, prev, existed "
        "FROM _ident_nodes ORDER BY rowid",
        [list(IDENTIFIER_TYPES), int(_MAX_US)],
    )
    nodes = _Nodes(
        table=table.select(["type", "value", "prev_since", "first_seen", "last_seen", "source"]),
        rank=table.column("rank").to_numpy().astype(np.int64),
        first_us=table.column("first_us").to_numpy().astype(np.int64),
        prev=table.column("prev").to_numpy().astype(np.int64),
        existed=table.column("existed").to_numpy(zero_copy_only=False).astype(np.bool_),
    )
    prev_ids = prev.column("person_id").to_numpy(zero_copy_only=False).astype(object)
    prev_age = prev.column("age").to_numpy().astype(np.int64)
    return nodes, prev_ids, prev_age


def _load_edges(wh: Warehouse) -> pd.DataFrame:
    """The coded edges: a, b, hard, explicit, rule (categorical), weight."""
    table = wh.arrow(
        "SELECT a, b, strength = 'hard' AS hard, origin IN ('manual', 'review') AS explicit, "
        "rule, weight FROM _ident_edges"
    )
    rule = table.column("rule").combine_chunks().dictionary_encode()
    return pd.DataFrame(
        {
            "a": table.column("a").to_numpy().astype(np.int64),
            "b": table.column("b").to_numpy().astype(np.int64),
            "hard": table.column("hard").to_numpy(zero_copy_only=False).astype(np.bool_),
            "explicit": table.column("explicit").to_numpy(zero_copy_only=False).astype(np.bool_),
            "rule": pd.Categorical.from_codes(
                rule.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                categories=pd.Index(rule.dictionary.to_pylist(), dtype=object),
            ),
            "weight": table.column("weight").to_numpy(zero_copy_only=False).astype(np.float64),
        }
    )


def _resolve_graph(
    wh: Warehouse,
    limits: ResolveLimits,
    now: datetime,
    started: float,
    *,
    probabilistic: bool,
    matches: pd.DataFrame,
    review: pd.DataFrame,
) -> ResolveResult:
    nodes, prev_ids, prev_age = _load_nodes(wh)
    n = len(nodes.rank)
    edges = _load_edges(wh)
    a = edges["a"].to_numpy()
    b = edges["b"].to_numpy()
    hard = edges["hard"].to_numpy()
    natural = nodes.rank < len(ANCHOR_TYPES)
    anchor = natural
    # Undone merges keep their two persons apart: each side's founding identifier
    # acts as an anchor (so soft links cannot join them) and the hard links between
    # them that came from data or scores are dropped. Explicit links stay.
    prev_index = {str(p): i for i, p in enumerate(prev_ids)}
    separations = _separations(wh, prev_index)
    if separations:
        pair_keys = np.array([x * len(prev_ids) + y for x, y in separations], dtype=np.int64)
        pa_, pb_ = nodes.prev[a], nodes.prev[b]
        lo, hi = np.minimum(pa_, pb_), np.maximum(pa_, pb_)
        apart = (lo >= 0) & np.isin(lo * len(prev_ids) + hi, pair_keys)
        apart &= hard & ~edges["explicit"].to_numpy()
        edges, a, b, hard = edges[~apart], a[~apart], b[~apart], hard[~apart]
        sides = _distinct(np.array(separations, dtype=np.int64).ravel())
        node_index = np.arange(n, dtype=np.int64)
        side_prev = np.where(np.isin(nodes.prev, sides), nodes.prev, -1)
        _, pinned = _first_per_group(side_prev, nodes.rank, node_index)
        anchor = anchor.copy()
        anchor[pinned] = True
    type_limits = np.array([limits.limit(t) for t in IDENTIFIER_TYPES], dtype=np.int64)
    max_links = type_limits[nodes.rank]
    part = _partition(n, anchor, a, b, hard, max_links, natural)
    assignment = _assign_ids(nodes, part.label, part.n_groups, prev_ids, prev_age)
    label = part.label
    merges, splits = _run_history(nodes, label, assignment, prev_ids, edges, now)
    conflicts = _conflicts(wh, nodes, part, assignment.person)
    pending = 0
    with wh.transaction():
        _write_identities(wh, nodes, label, assignment, now)
        _write_links(wh, now, replace=("data", "splink") if probabilistic else ("data",))
        _write_history(wh, [*merges, *splits])
        _write_conflicts(wh, conflicts, now)
        if probabilistic:
            from segmint.data.identity import review as review_mod

            pending = review_mod.write_review_queue(wh, review, now)
    result = ResolveResult(
        identifiers=n,
        persons=int(part.n_groups),
        ambiguous=int((part.label < 0).sum()),
        links=len(edges),
        blocked=sum(1 for c in conflicts if c.reason == _BLOCKED),
        new_persons=int((assignment.survivor < 0).sum()),
        merges=tuple(merges),
        splits=tuple(splits),
        conflicts=tuple(conflicts),
        probabilistic_matches=len(matches),
        review_pending=pending,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "resolved %d identifiers into %d persons (%d ambiguous) in %.1fs: "
        "%d merges, %d splits, %d conflicts",
        n,
        result.persons,
        result.ambiguous,
        result.seconds,
        len(merges),
        len(splits),
        len(conflicts),
    )
    return result


def _distinct_persons(values: pd.Series) -> tuple[str, ...]:
    return tuple(sorted({str(v) for v in values if v is not None}))


def _conflicts(wh: Warehouse, nodes: _Nodes, part: _Partition, person: ObjArray) -> list[Conflict]:
    out = []
    frame = part.conflicts
    if not frame.empty:
        frame = frame.assign(person=_person_at(person, frame["group"].to_numpy(dtype=np.int64)))
        persons = (
            frame.groupby(["node", "reason"], sort=True)["person"]
            .agg(_distinct_persons)
            .reset_index()
        )
        index = persons["node"].to_numpy()
        for type_, value, reason, ids, node in zip(
            nodes.take("type", index),
            nodes.take("value", index),
            persons["reason"],
            persons["person"],
            index,
            strict=True,
        ):
            out.append(Conflict(type_, value, str(reason), ids, int(part.degree[node])))
    blocked = _blocked_conflicts(wh)
    for type_, value, links in blocked.itertuples(index=False):
        out.append(Conflict(str(type_), str(value), _BLOCKED, (), int(links)))
    return sorted(out, key=lambda c: (c.reason, c.identifier_type, c.identifier_value))


# ------------------------------------------------------------------ writes
def _write_identities(
    wh: Warehouse, nodes: _Nodes, label: IntArray, assignment: _Assignment, now: datetime
) -> None:
    """Rewrite ``identities``; ``assigned_at`` changes only where the person changed."""
    kept = np.where(label >= 0, assignment.survivor[np.maximum(label, 0)], -1)
    same = np.where(
        label >= 0, (nodes.prev >= 0) & (kept == nodes.prev), (nodes.prev < 0) & nodes.existed
    )
    since = nodes.table.column("prev_since").combine_chunks()
    now_array = pa.array(np.full(len(label), np.datetime64(now, "us")), type=since.type)
    assigned = pc.if_else(pa.array(same), pc.coalesce(since, now_array), now_array)
    person = pa.array(assignment.person.tolist(), type=pa.string()).take(
        pa.array(np.where(label >= 0, label, 0), type=pa.int64())
    )
    person = pc.if_else(pa.array(label >= 0), person, pa.scalar(None, pa.string()))
    table = pa.table(
        {
            "identifier_type": nodes.table.column("type"),
            "identifier_value": nodes.table.column("value"),
            "person_id": person,
            "first_seen": nodes.table.column("first_seen"),
            "last_seen": nodes.table.column("last_seen"),
            "source": nodes.table.column("source"),
            "assigned_at": assigned,
        }
    )
    wh.register("_ident_assign", table)
    try:
        wh.execute("DELETE FROM identities")
        wh.execute("INSERT INTO identities BY NAME SELECT * FROM _ident_assign")
    finally:
        wh.unregister("_ident_assign")


_LINK_COLUMNS = (
    "type_a, value_a, type_b, value_b, rule, strength, origin, weight, ref, observations, "
    "first_seen, last_seen, created_at, undone_at"
)


def _write_links(wh: Warehouse, now: datetime, *, replace: tuple[str, ...]) -> None:
    """Replace the links derived from data (and probabilistic ones when re-matched)."""
    wh.execute(
        "CREATE OR REPLACE TEMP TABLE _ident_links_new AS SELECT e.type_a, e.value_a, e.type_b, "
        "e.value_b, e.rule, e.strength, e.origin, e.weight, e.ref, e.observations, "
        "e.first_seen, e.last_seen, coalesce(o.created_at, ?) AS created_at, "
        "NULL::TIMESTAMP AS undone_at FROM _ident_edges e LEFT JOIN (SELECT type_a, value_a, "
        "type_b, value_b, rule, origin, min(created_at) AS created_at FROM identity_links "
        "GROUP BY ALL) o USING (type_a, value_a, type_b, value_b, rule, origin) "
        "WHERE list_contains(?::VARCHAR[], e.origin)",
        [now, list(replace)],
    )
    wh.execute(
        "DELETE FROM identity_links WHERE list_contains(?::VARCHAR[], origin)", [list(replace)]
    )
    wh.execute(f"INSERT INTO identity_links ({_LINK_COLUMNS}) SELECT * FROM _ident_links_new")


def _write_history(wh: Warehouse, records: Sequence[MergeRecord]) -> None:
    if not records:
        return
    wh.register(
        "_ident_history",
        pa.table(
            {
                "merge_id": [r.merge_id for r in records],
                "action": [r.action for r in records],
                "person_id": [r.person_id for r in records],
                "other_person_ids": pa.array(
                    [list(r.other_person_ids) for r in records], type=pa.list_(pa.string())
                ),
                "rule": [r.rule for r in records],
                "weight": pa.array([r.weight for r in records], type=pa.float64()),
                "identifiers": [json.dumps([i.to_json() for i in r.identifiers]) for r in records],
                "origin": [r.origin for r in records],
                "reason": pa.array([r.reason for r in records], type=pa.string()),
                "at": pa.array([r.at for r in records], type=pa.timestamp("us")),
            }
        ),
    )
    try:
        wh.execute(
            "INSERT INTO identity_merges SELECT merge_id, action, person_id, other_person_ids, "
            'rule, weight, identifiers::JSON, origin, reason, "at", NULL FROM _ident_history'
        )
    finally:
        wh.unregister("_ident_history")


def _write_conflicts(wh: Warehouse, conflicts: Sequence[Conflict], now: datetime) -> None:
    wh.execute("DELETE FROM identity_conflicts")
    if not conflicts:
        return
    wh.register(
        "_ident_conflicts_in",
        pa.table(
            {
                "identifier_type": [c.identifier_type for c in conflicts],
                "identifier_value": [c.identifier_value for c in conflicts],
                "reason": [c.reason for c in conflicts],
                "person_ids": pa.array(
                    [list(c.person_ids) for c in conflicts], type=pa.list_(pa.string())
                ),
                "links": pa.array([c.links for c in conflicts], type=pa.int64()),
            }
        ),
    )
    try:
        wh.execute(
            "INSERT INTO identity_conflicts SELECT identifier_type, identifier_value, reason, "
            "person_ids, links, ? FROM _ident_conflicts_in",
            [now],
        )
    finally:
        wh.unregister("_ident_conflicts_in")


# ------------------------------------------------------------------ look-ups
def _normalise(identifier_type: str, value: str) -> str:
    if identifier_type == "email":
        return normalise_email(value) or value.strip()
    if identifier_type == "phone":
        return normalise_phone(value) or value.strip()
    return value.strip()


def _check_type(identifier_type: str) -> None:
    if identifier_type not in IDENTIFIER_TYPES:
        raise UserInputError(
            f"unknown identifier type {identifier_type!r}; types are {list(IDENTIFIER_TYPES)}"
        )


def person_of(wh: Warehouse, identifier_type: str, value: str) -> str | None:
    """The person an identifier belongs to (``None``: unknown or ambiguous).

    E-mails and phones are normalised first, as ingestion does.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_identity_tables(wh)
    >>> person_of(wh, "email", "nobody@mail.org") is None
    True
    """
    _check_type(identifier_type)
    ensure_identity_tables(wh)
    row = wh.fetchall(
        "SELECT person_id FROM identities WHERE identifier_type = ? AND identifier_value = ?",
        [identifier_type, _normalise(identifier_type, value)],
    )
    return row[0][0] if row else None


def _person_exists(wh: Warehouse, person_id: str) -> bool:
    return bool(
        wh.scalar("SELECT count(*) FROM identities WHERE person_id = ? LIMIT 1", [person_id])
    )


def _current_person(wh: Warehouse, person_id: str) -> str | None:
    """``person_id`` if it exists, else the person it was merged into (following chains)."""
    survivor_of = _active_merges(wh)
    seen: set[str] = set()
    pid: str | None = person_id
    while pid is not None and pid not in seen:
        if _person_exists(wh, pid):
            return pid
        seen.add(pid)
        pid = survivor_of.get(pid)
    return None


def _find_person(wh: Warehouse, text: str) -> tuple[str, str | None]:
    """(person id, the retired id asked for) for a person id or an identifier.

    Accepts a person id, ``type:value`` or a bare identifier value.
    """
    text = text.strip()
    if not text:
        raise UserInputError("give a person id or an identifier")
    type_, sep, value = text.partition(":")
    if sep and type_ in IDENTIFIER_TYPES:
        rows = wh.fetchall(
            "SELECT identifier_type, identifier_value, person_id FROM identities "
            "WHERE identifier_type = ? AND identifier_value = ?",
            [type_, _normalise(type_, value)],
        )
    else:
        if _person_exists(wh, text):
            return text, None
        if wh.scalar(
            "SELECT count(*) FROM identity_merges WHERE list_contains(other_person_ids, ?) "
            "AND action = 'merge'",
            [text],
        ):
            current = _current_person(wh, text)
            if current is not None:
                return current, text
        candidates = {text, _normalise("email", text), _normalise("phone", text)}
        rows = wh.fetchall(
            "SELECT identifier_type, identifier_value, person_id FROM identities "
            "WHERE list_contains(?::VARCHAR[], identifier_value) "
            "ORDER BY identifier_type, identifier_value",
            [sorted(candidates)],
        )
    if not rows:
        raise UserInputError(f"no person or identifier {text!r}")
    persons = sorted({r[2] for r in rows if r[2] is not None})
    if len(persons) == 1:
        return persons[0], None
    names = ", ".join(f"{t}:{v}" for t, v, _ in rows)
    if not persons:
        shared = wh.fetchall(
            "SELECT DISTINCT unnest(person_ids) FROM identity_conflicts "
            "WHERE identifier_type = ? AND identifier_value = ? ORDER BY 1",
            [rows[0][0], rows[0][1]],
        )
        among = f" (persons {', '.join(r[0] for r in shared)})" if shared else ""
        raise UserInputError(f"{names} belongs to no single person: it is ambiguous{among}")
    raise UserInputError(
        f"{text!r} matches identifiers of several persons ({names}); write it as type:value"
    )


def _merge_from_row(row: Sequence[Any]) -> MergeRecord:
    (
        merge_id,
        action,
        person_id,
        others,
        rule,
        weight,
        identifiers,
        origin,
        reason,
        at,
        undone_at,
    ) = row
    items = json.loads(identifiers) if identifiers else []
    return MergeRecord(
        merge_id,
        action,
        person_id,
        tuple(others or ()),
        rule or "",
        weight,
        tuple(MovedIdentifier.from_json(i) for i in items),
        origin,
        reason,
        at,
        undone_at,
    )


_MERGE_COLUMNS = (
    "merge_id, action, person_id, other_person_ids, rule, weight, identifiers, origin, reason, "
    '"at", undone_at'
)


def show_person(wh: Warehouse, person_or_identifier: str) -> PersonView:
    """A person with its identifiers, links and history.

    Parameters
    ----------
    wh
        The warehouse.
    person_or_identifier
        A person id (one merged into another shows the survivor), an identifier
        written ``type:value`` (``email:ada@mail.org``) or a bare identifier value.

    Raises
    ------
    UserInputError
        Unknown, ambiguous, or matching identifiers of several persons.

    Examples
    --------
    >>> view = show_person(wh, "email:ada@mail.org")  # doctest: +SKIP
    >>> [(i.type, i.value) for i in view.identifiers]  # doctest: +SKIP
    [('customer_id', 'c1'), ('email', 'ada@mail.org')]
    """
    ensure_identity_tables(wh)
    person_id, redirected = _find_person(wh, person_or_identifier)
    identifiers = tuple(
        IdentifierRecord(*row)
        for row in wh.fetchall(
            "SELECT identifier_type, identifier_value, person_id, first_seen, last_seen, source, "
            "assigned_at FROM identities WHERE person_id = ? "
            "ORDER BY list_position(?::VARCHAR[], identifier_type), identifier_value",
            [person_id, list(IDENTIFIER_TYPES)],
        )
    )
    links = tuple(
        LinkRecord(*row)
        for row in wh.fetchall(
            f"WITH mine AS (SELECT identifier_type AS t, identifier_value AS v FROM identities "
            f"WHERE person_id = ?) SELECT {_LINK_COLUMNS} FROM identity_links l WHERE EXISTS ("
            "SELECT 1 FROM mine WHERE t = l.type_a AND v = l.value_a) OR EXISTS ("
            "SELECT 1 FROM mine WHERE t = l.type_b AND v = l.value_b) "
            "ORDER BY first_seen NULLS LAST, type_a, value_a, type_b, value_b, rule",
            [person_id],
        )
    )
    history = tuple(
        _merge_from_row(row)
        for row in wh.fetchall(
            f"SELECT {_MERGE_COLUMNS} FROM identity_merges WHERE person_id = ? OR "
            'list_contains(other_person_ids, ?) ORDER BY "at", merge_id',
            [person_id, person_id],
        )
    )
    conflicts = tuple(
        Conflict(t, v, r, tuple(p or ()), int(n or 0))
        for t, v, r, p, n in wh.fetchall(
            "SELECT identifier_type, identifier_value, reason, person_ids, links "
            "FROM identity_conflicts WHERE list_contains(person_ids, ?) "
            "ORDER BY reason, identifier_type, identifier_value",
            [person_id],
        )
    )
    return PersonView(person_id, identifiers, links, history, conflicts, redirected)


# ------------------------------------------------------------------ merge and unmerge
def _person_age(wh: Warehouse, person_id: str) -> tuple[int, str]:
    first = wh.scalar(
        "SELECT coalesce(epoch_us(min(first_seen)), ?) FROM identities WHERE person_id = ?",
        [int(_MAX_US), person_id],
    )
    return int(first), person_id


def _founder(wh: Warehouse, person_id: str) -> tuple[str, str]:
    row = wh.fetchall(
        "SELECT identifier_type, identifier_value FROM identities WHERE person_id = ? "
        "ORDER BY list_position(?::VARCHAR[], identifier_type), identifier_value LIMIT 1",
        [person_id, list(IDENTIFIER_TYPES)],
    )
    return row[0][0], row[0][1]


def _require_current(wh: Warehouse, text: str) -> str:
    person_id, redirected = _find_person(wh, text)
    if redirected is not None:
        raise UserInputError(
            f"person {redirected} no longer exists: it was merged into {person_id}; use {person_id}"
        )
    return person_id


def merge_persons(wh: Warehouse, person_a: str, person_b: str, *, reason: str) -> MergeRecord:
    """Merge two persons by hand; the older one survives. Recorded, and undoable.

    The identifiers of the younger person (latest earliest ``first_seen``; ties:
    the larger id) move to the older one; a hard ``manual merge`` link between
    their founding identifiers keeps them together in later runs.

    Parameters
    ----------
    wh
        The warehouse.
    person_a, person_b
        Person ids or identifiers (``type:value``) of the two persons.
    reason
        Why: kept in the history.

    Returns
    -------
    MergeRecord
        Its ``merge_id`` undoes it with :func:`unmerge`.

    Raises
    ------
    UserInputError
        No reason, unknown person, or both are already one person.

    Examples
    --------
    >>> record = merge_persons(wh, "customer_id:c1", "customer_id:c2",
    ...                        reason="same person, confirmed by support")  # doctest: +SKIP
    >>> unmerge(wh, record.merge_id).restored  # doctest: +SKIP
    2
    """
    return _merge_persons(
        wh, person_a, person_b, reason=reason, origin="manual", link_rule="manual merge"
    )


def _merge_persons(
    wh: Warehouse,
    person_a: str,
    person_b: str,
    *,
    reason: str,
    origin: str,
    link_rule: str,
    link: tuple[tuple[str, str], tuple[str, str]] | None = None,
    weight: float | None = None,
    now: datetime | None = None,
    also: Callable[[str], None] | None = None,
) -> MergeRecord:
    """Merge two persons; ``also(merge_id)`` runs inside the same transaction."""
    ensure_identity_tables(wh)
    if not reason or not reason.strip():
        raise UserInputError("give a reason for the merge", where="reason")
    a = _require_current(wh, person_a)
    b = _require_current(wh, person_b)
    if a == b:
        raise UserInputError(f"{person_a} and {person_b} are already one person ({a})")
    survivor, merged = sorted((a, b), key=lambda p: _person_age(wh, p))
    now = now or utcnow()
    merge_id = _new_merge_id()
    moved = tuple(
        MovedIdentifier(t, v, merged, survivor, since)
        for t, v, since in wh.fetchall(
            "SELECT identifier_type, identifier_value, assigned_at FROM identities "
            "WHERE person_id = ? ORDER BY identifier_type, identifier_value",
            [merged],
        )
    )
    (ta, va), (tb, vb) = link or (_founder(wh, survivor), _founder(wh, merged))
    record = MergeRecord(
        merge_id,
        "merge",
        survivor,
        (merged,),
        link_rule,
        weight,
        moved,
        origin,
        reason.strip(),
        now,
    )
    with wh.transaction():
        wh.execute(
            "UPDATE identities SET person_id = ?, assigned_at = ? WHERE person_id = ?",
            [survivor, now, merged],
        )
        wh.execute(
            f"INSERT INTO identity_links ({_LINK_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, 'hard', ?, ?, ?, 1, ?, ?, ?, NULL)",
            [ta, va, tb, vb, link_rule, origin, weight, merge_id, now, now, now],
        )
        _write_history(wh, [record])
        if also is not None:
            also(merge_id)
    logger.info("merged %s into %s (%s, %s)", merged, survivor, merge_id, origin)
    return record


def _load_merge(wh: Warehouse, merge_id: str) -> MergeRecord:
    rows = wh.fetchall(
        f"SELECT {_MERGE_COLUMNS} FROM identity_merges WHERE merge_id = ?", [merge_id.strip()]
    )
    if not rows:
        raise UserInputError(f"no merge {merge_id!r}")
    return _merge_from_row(rows[0])


def unmerge(wh: Warehouse, merge_id: str, *, now: datetime | None = None) -> UnmergeResult:
    """Undo a recorded merge: give the moved identifiers back their previous person.

    Identifiers still with the survivor (or with whoever the survivor was merged
    into since) get their previous person id and ``assigned_at`` back; the merge
    and its link are marked undone, and later runs keep the two persons apart.
    Undoing an undone merge changes nothing.

    Parameters
    ----------
    wh
        The warehouse.
    merge_id
        The ``m_...`` id of a merge (from ``show`` or the history).

    Raises
    ------
    UserInputError
        Unknown id, or the id of a split (splits follow the data and cannot be undone).

    Examples
    --------
    >>> unmerge(wh, "m_0123456789abcdef").restored  # doctest: +SKIP
    3
    """
    ensure_identity_tables(wh)
    record = _load_merge(wh, merge_id)
    if record.action != "merge":
        raise UserInputError(
            f"{record.merge_id} is a {record.action}, not a merge; only merges can be undone"
        )
    if record.undone_at is not None:
        return UnmergeResult(record.merge_id, 0, 0, already_undone=True)
    now = now or utcnow()
    holders = sorted({record.person_id, _current_person(wh, record.person_id) or ""} - {""})
    restore = [i for i in record.identifiers if i.from_person is not None]
    with wh.transaction():
        restored = 0
        if restore:
            wh.register(
                "_ident_restore",
                pa.table(
                    {
                        "type": [i.type for i in restore],
                        "value": [i.value for i in restore],
                        "previous": [i.from_person for i in restore],
                        "since": pa.array([i.since for i in restore], type=pa.timestamp("us")),
                    }
                ),
            )
            try:
                restored = int(
                    wh.scalar(
                        "SELECT count(*) FROM identities i JOIN _ident_restore r ON "
                        "i.identifier_type = r.type AND i.identifier_value = r.value "
                        "WHERE list_contains(?::VARCHAR[], i.person_id)",
                        [holders],
                    )
                )
                wh.execute(
                    "UPDATE identities SET person_id = r.previous, "
                    "assigned_at = coalesce(r.since, ?) FROM _ident_restore r "
                    "WHERE identities.identifier_type = r.type "
                    "AND identities.identifier_value = r.value "
                    "AND list_contains(?::VARCHAR[], identities.person_id)",
                    [now, holders],
                )
            finally:
                wh.unregister("_ident_restore")
        wh.execute(
            "UPDATE identity_merges SET undone_at = ? WHERE merge_id = ?", [now, record.merge_id]
        )
        wh.execute(
            "UPDATE identity_links SET undone_at = ? WHERE ref = ? AND undone_at IS NULL "
            "AND origin IN ('manual', 'review')",
            [now, record.merge_id],
        )
        wh.execute(
            "UPDATE identity_review SET status = 'rejected', decided_at = ?, "
            "reason = 'merge undone' WHERE merge_id = ?",
            [now, record.merge_id],
        )
    logger.info("undid %s: %d identifiers restored", record.merge_id, restored)
    return UnmergeResult(record.merge_id, restored, len(record.identifiers) - restored, False)


def iter_history(wh: Warehouse) -> Iterator[MergeRecord]:
    """Every merge and split, oldest first."""
    ensure_identity_tables(wh)
    for row in wh.fetchall(f'SELECT {_MERGE_COLUMNS} FROM identity_merges ORDER BY "at", merge_id'):
        yield _merge_from_row(row)
