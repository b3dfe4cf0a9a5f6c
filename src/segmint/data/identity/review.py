"""The probabilistic step of identity resolution and its review queue.

With ``resolve_identities(..., probabilistic=True)`` the customer records are
scored by :class:`~segmint.data.identity.probabilistic.ProbabilisticMatcher`
(Splink, Fellegi-Sunter). The model is trained on every customer record (the
expectation-maximisation needs the pairs that share identifiers too), then:

* pairs at or above the match threshold become *hard* links
  (``splink match <probability>``, origin ``splink``, with their match weight)
  between the two ``customer_id`` identifiers: they join two CRM records that
  share no identifier, which shared identifiers alone never do;
* pairs in the review band whose customers are still different persons go to
  ``identity_review`` as ``pending``. :func:`accept_review` merges the two persons
  (undoable with :func:`~segmint.data.identity.graph.unmerge`) and
  :func:`reject_review` keeps them apart: a rejected pair is never used as a
  probabilistic link again, even if a later model scores it above the threshold.

Decisions survive re-runs; pending pairs are replaced by each probabilistic run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from segmint.data.identity.graph import (
    MergeRecord,
    _merge_persons,
    ensure_identity_tables,
    utcnow,
)
from segmint.data.identity.probabilistic import MatchConfig, MatchResult, ProbabilisticMatcher
from segmint.engine.warehouse import Warehouse
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

__all__ = [
    "REVIEW_STATUSES",
    "ReviewItem",
    "accept_review",
    "add_match_links",
    "list_review",
    "reject_review",
    "score_customers",
    "write_review_queue",
]

#: The states of a review pair.
REVIEW_STATUSES: tuple[str, ...] = ("pending", "accepted", "rejected")

_PAIR_ID = "'r_' || left(sha256(least({l}, {r}) || chr(31) || greatest({l}, {r})), 12)"


@dataclass(frozen=True)
class ReviewItem:
    """A pair of customers the matcher was unsure about.

    Attributes
    ----------
    review_id
        ``r_...``; pass it to :func:`accept_review` or :func:`reject_review`.
    customer_id_l, customer_id_r
        The two customers.
    person_l, person_r
        Their persons now (``None`` if a customer is gone).
    match_probability, match_weight
        The matcher's score.
    evidence
        ``{"prior": w0, field: (level, weight), ...}``; the weights add up to
        ``match_weight``.
    status, created_at, decided_at, reason, merge_id
        The decision and its record.
    """

    review_id: str
    customer_id_l: str
    customer_id_r: str
    person_l: str | None
    person_r: str | None
    match_probability: float
    match_weight: float
    evidence: dict[str, Any]
    status: str
    created_at: datetime | None
    decided_at: datetime | None
    reason: str | None
    merge_id: str | None

    def top_evidence(self, n: int = 3) -> list[tuple[str, str, float]]:
        """The ``n`` fields that weigh most (either way): ``(field, level, weight)``.

        Examples
        --------
        >>> item = ReviewItem("r_1", "a", "b", None, None, 0.7, 1.2,
        ...                   {"prior": -9.0, "surname": ("exact", 7.0), "email": ("else", -2.5)},
        ...                   "pending", None, None, None, None)
        >>> item.top_evidence(1)
        [('surname', 'exact', 7.0)]
        """
        fields = [
            (name, str(level), float(weight))
            for name, value in self.evidence.items()
            if name != "prior"
            for level, weight in [value]
        ]
        return sorted(fields, key=lambda f: (-abs(f[2]), f[0]))[:n]

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        return {
            key: plain(getattr(self, key)) for key in self.__dataclass_fields__ if key != "evidence"
        } | {
            "evidence": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.evidence.items()
            }
        }


# ------------------------------------------------------------------ used by resolve
def score_customers(
    wh: Warehouse, config: MatchConfig | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the customer records; return ``(matches, review)`` pair frames.

    Both have ``id_l``, ``id_r`` (customer ids), ``match_probability``,
    ``match_weight`` and ``evidence``.

    Raises
    ------
    UserInputError
        A configuration whose id column is not ``customer_id``, or customers the
        matcher cannot work on (too few records, no usable column).
    """
    config = config or MatchConfig.for_customers()
    if not isinstance(config, MatchConfig):
        raise UserInputError("must be a MatchConfig", where="match_config")
    if config.id_column != "customer_id":
        raise UserInputError(
            f"the customers table is keyed by customer_id, not {config.id_column!r}",
            where="match_config.id_column",
        )
    with ProbabilisticMatcher(config=config, backend=wh) as matcher:
        result: MatchResult = matcher.fit("customers").predict()
    columns = ["id_l", "id_r", "match_probability", "match_weight", "evidence"]
    logger.info(
        "probabilistic matching: %d matches, %d pairs for review",
        len(result.matches),
        len(result.review),
    )
    return result.matches[columns].copy(), result.review[columns].copy()


def add_match_links(wh: Warehouse, matches: pd.DataFrame) -> None:
    """Add the matches (but rejected pairs) as hard links to the run's evidence."""
    if matches.empty:
        return
    frame = pa.table(
        {
            "id_l": pa.array(matches["id_l"].astype(str).tolist(), type=pa.string()),
            "id_r": pa.array(matches["id_r"].astype(str).tolist(), type=pa.string()),
            "p": pa.array(matches["match_probability"].astype(float), type=pa.float64()),
            "w": pa.array(matches["match_weight"].astype(float), type=pa.float64()),
        }
    )
    pair_id = _PAIR_ID.format(l="m.id_l", r="m.id_r")
    wh.register("_ident_matches_in", frame)
    try:
        wh.execute(
            "INSERT INTO _ident_raw SELECT 'customer_id', least(id_l, id_r), 'customer_id', "
            "greatest(id_l, id_r), 'splink match ' || printf('%.3f', p), 'hard', 'splink', w, "
            "pair_id, 1, NULL, NULL, NULL FROM ("
            f"SELECT m.*, {pair_id} AS pair_id FROM _ident_matches_in m) "
            "WHERE pair_id NOT IN (SELECT review_id FROM identity_review WHERE status = 'rejected')"
        )
    finally:
        wh.unregister("_ident_matches_in")


def write_review_queue(wh: Warehouse, review: pd.DataFrame, now: datetime) -> int:
    """Replace the pending pairs with ``review``'s pairs of still different persons.

    Decided pairs are kept as they are. Returns the number of pending pairs.
    """
    ensure_identity_tables(wh)
    frame = pa.table(
        {
            "id_l": pa.array(
                review.get("id_l", pd.Series(dtype=str)).astype(str).tolist(), type=pa.string()
            ),
            "id_r": pa.array(
                review.get("id_r", pd.Series(dtype=str)).astype(str).tolist(), type=pa.string()
            ),
            "p": pa.array(
                review.get("match_probability", pd.Series(dtype=float)).astype(float),
                type=pa.float64(),
            ),
            "w": pa.array(
                review.get("match_weight", pd.Series(dtype=float)).astype(float), type=pa.float64()
            ),
            "evidence": pa.array(
                review.get("evidence", pd.Series(dtype=str)).astype(str).tolist(), type=pa.string()
            ),
        }
    )
    pair_id = _PAIR_ID.format(l="id_l", r="id_r")
    wh.register("_ident_review_in", frame)
    try:
        wh.execute(
            "CREATE OR REPLACE TEMP TABLE _ident_review_new AS SELECT r.review_id, r.lo, r.hi, "
            "r.p, r.w, r.evidence::JSON AS evidence, 'pending' AS status, "
            "coalesce(o.created_at, ?::TIMESTAMP) AS created_at FROM ("
            f"SELECT {pair_id} AS review_id, least(id_l, id_r) AS lo, greatest(id_l, id_r) AS hi, "
            "p, w, evidence FROM _ident_review_in) r "
            "JOIN customer_person pl ON pl.customer_id = r.lo "
            "JOIN customer_person pr ON pr.customer_id = r.hi "
            "LEFT JOIN identity_review o ON o.review_id = r.review_id "
            "WHERE pl.person_id IS DISTINCT FROM pr.person_id "
            "AND (o.review_id IS NULL OR o.status = 'pending')",
            [now],
        )
        wh.execute("DELETE FROM identity_review WHERE status = 'pending'")
        wh.execute(
            "INSERT INTO identity_review SELECT review_id, lo, hi, p, w, evidence, status, "
            "created_at, NULL, NULL, NULL FROM _ident_review_new"
        )
        return int(wh.scalar("SELECT count(*) FROM _ident_review_new"))
    finally:
        wh.unregister("_ident_review_in")
        wh.execute("DROP TABLE IF EXISTS _ident_review_new")


# ------------------------------------------------------------------ the queue
_ITEM_SQL = (
    "SELECT r.review_id, r.customer_id_l, r.customer_id_r, pl.person_id, pr.person_id, "
    "r.match_probability, r.match_weight, r.evidence, r.status, r.created_at, r.decided_at, "
    "r.reason, r.merge_id FROM identity_review r "
    "LEFT JOIN customer_person pl ON pl.customer_id = r.customer_id_l "
    "LEFT JOIN customer_person pr ON pr.customer_id = r.customer_id_r "
)


def _item(row: Sequence[Any]) -> ReviewItem:
    (
        review_id,
        left,
        right,
        person_l,
        person_r,
        probability,
        weight,
        evidence,
        status,
        created_at,
        decided_at,
        reason,
        merge_id,
    ) = row
    return ReviewItem(
        review_id,
        left,
        right,
        person_l,
        person_r,
        float(probability),
        float(weight),
        MatchResult.explain(evidence) if evidence else {},
        status,
        created_at,
        decided_at,
        reason,
        merge_id,
    )


def list_review(
    wh: Warehouse, *, status: str | None = "pending", limit: int | None = None
) -> list[ReviewItem]:
    """Review pairs, most probable first.

    Parameters
    ----------
    wh
        The warehouse.
    status
        ``pending`` (default), ``accepted``, ``rejected``, or ``None`` for all.
    limit
        At most this many pairs.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> list_review(wh)
    []
    """
    ensure_identity_tables(wh)
    if status is not None and status not in REVIEW_STATUSES:
        raise UserInputError(f"unknown status {status!r}; statuses are {list(REVIEW_STATUSES)}")
    if limit is not None and limit < 1:
        raise UserInputError(f"must be at least 1, not {limit}", where="limit")
    rows = wh.fetchall(
        _ITEM_SQL
        + "WHERE ?::VARCHAR IS NULL OR r.status = ? "
        + "ORDER BY r.match_probability DESC, r.review_id"
        + (" LIMIT ?" if limit is not None else ""),
        [status, status] + ([limit] if limit is not None else []),
    )
    return [_item(row) for row in rows]


def _get(wh: Warehouse, review_id: str) -> ReviewItem:
    ensure_identity_tables(wh)
    rows = wh.fetchall(_ITEM_SQL + "WHERE r.review_id = ?", [review_id.strip()])
    if not rows:
        raise UserInputError(f"no review pair {review_id!r}")
    item = _item(rows[0])
    if item.status != "pending":
        raise UserInputError(f"review pair {item.review_id} was already {item.status}")
    return item


def accept_review(
    wh: Warehouse, review_id: str, *, reason: str | None = None
) -> tuple[ReviewItem, MergeRecord | None]:
    """Accept a pair: the two customers are one person.

    Their persons are merged (the older survives; undo with
    :func:`~segmint.data.identity.graph.unmerge`) and a hard ``review accepted``
    link keeps them together in later runs. If they are one person already, only
    the link and the decision are recorded.

    Returns
    -------
    tuple
        The decided pair and the merge (``None`` when nothing had to move).

    Raises
    ------
    UserInputError
        Unknown or already decided pair, or a customer that no longer exists.

    Examples
    --------
    >>> item, merge = accept_review(wh, "r_0123456789ab")  # doctest: +SKIP
    """
    item = _get(wh, review_id)
    if item.person_l is None or item.person_r is None:
        raise UserInputError(
            f"customer {item.customer_id_l if item.person_l is None else item.customer_id_r} "
            "has no person (run `segmint identity resolve`)"
        )
    now = utcnow()
    text = (reason or "").strip() or f"review {item.review_id} accepted"
    rule = f"review accepted {item.match_probability:.3f}"

    def decide(merge_id: str | None) -> None:
        wh.execute(
            "UPDATE identity_review SET status = 'accepted', decided_at = ?, reason = ?, "
            "merge_id = ? WHERE review_id = ?",
            [now, text, merge_id, item.review_id],
        )

    merge: MergeRecord | None = None
    if item.person_l == item.person_r:
        with wh.transaction():
            wh.execute(
                "INSERT INTO identity_links (type_a, value_a, type_b, value_b, rule, strength, "
                "origin, weight, ref, observations, first_seen, last_seen, created_at, undone_at) "
                "VALUES ('customer_id', ?, 'customer_id', ?, ?, 'hard', 'review', ?, ?, 1, ?, ?, "
                "?, NULL)",
                [
                    item.customer_id_l,
                    item.customer_id_r,
                    rule,
                    item.match_weight,
                    item.review_id,
                    now,
                    now,
                    now,
                ],
            )
            decide(None)
    else:
        merge = _merge_persons(
            wh,
            f"customer_id:{item.customer_id_l}",
            f"customer_id:{item.customer_id_r}",
            reason=text,
            origin="review",
            link_rule=rule,
            link=(("customer_id", item.customer_id_l), ("customer_id", item.customer_id_r)),
            weight=item.match_weight,
            now=now,
            also=decide,
        )
    return _decided(wh, item.review_id), merge


def reject_review(wh: Warehouse, review_id: str, *, reason: str | None = None) -> ReviewItem:
    """Reject a pair: the two customers are different people; never link them by score.

    Examples
    --------
    >>> reject_review(wh, "r_0123456789ab", reason="twins").status  # doctest: +SKIP
    'rejected'
    """
    item = _get(wh, review_id)
    wh.execute(
        "UPDATE identity_review SET status = 'rejected', decided_at = ?, reason = ? "
        "WHERE review_id = ?",
        [utcnow(), (reason or "").strip() or None, item.review_id],
    )
    return _decided(wh, item.review_id)


def _decided(wh: Warehouse, review_id: str) -> ReviewItem:
    return _item(wh.fetchall(_ITEM_SQL + "WHERE r.review_id = ?", [review_id])[0])
