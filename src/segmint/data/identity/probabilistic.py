"""Probabilistic record linkage of person records with Splink (Fellegi-Sunter).

:class:`ProbabilisticMatcher` deduplicates one table of person records that share
no common identifier. It standardises the columns it knows (names, date of birth,
address, ...), blocks candidate pairs, trains a Fellegi-Sunter model (u by random
sampling, the prior match rate from deterministic rules, m by expectation
maximisation) and scores every candidate pair. Pairs above
:attr:`MatchConfig.match_threshold` are matches and are merged into clusters
(connected components); pairs in the review band are kept for a person to look
at and never merged automatically.

All work runs in the database through a Splink ``DatabaseAPI``: DuckDB by default
(segmint's warehouse or any DuckDB connection), or any other Splink backend such
as ``splink.SparkAPI``. The standardisation SQL is written once and transpiled by
SQLGlot for the backend in use.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import sqlglot
from splink import ColumnExpression, DuckDBAPI, Linker, SettingsCreator, block_on
from splink import comparison_level_library as cll
from splink.internals.comparison_level_creator import ComparisonLevelCreator
from splink.internals.comparison_library import CustomComparison
from splink.internals.database_api import DatabaseAPI
from splink.internals.exceptions import SplinkException
from splink.internals.splink_dataframe import SplinkDataFrame
from sqlglot import exp

from segmint.config import MATCH_ROLES
from segmint.engine.warehouse import Warehouse
from segmint.errors import DataValidationError, EngineError, NotFittedError, UserInputError

logger = logging.getLogger(__name__)

#: Semantic roles a column can play, in the order comparisons are listed.
ROLES = MATCH_ROLES

#: Column map of segmint's canonical ``customers`` table.
CUSTOMERS_COLUMNS: Mapping[str, str] = {
    "given_name": "first_name",
    "surname": "last_name",
    "date_of_birth": "birth_date",
    "email": "email",
    "phone": "phone",
    "address_1": "street",
    "suburb": "city",
    "postcode": "postcode",
    "country": "country",
}

#: Column map of the Febrl synthetic person data sets (every role but contact and country).
FEBRL_COLUMNS: Mapping[str, str] = {
    role: role for role in MATCH_ROLES if role not in ("email", "phone", "country")
}

#: Candidate pairs: records agreeing on any one of these are compared. An element
#: is a role or a SQL expression over roles (DuckDB dialect).
DEFAULT_BLOCKING_RULES: tuple[tuple[str, ...], ...] = (
    ("postcode",),
    ("surname", "substr(given_name, 1, 1)"),
    ("date_of_birth",),
    ("soc_sec_id",),
    ("email",),
    ("phone",),
    ("given_name", "suburb"),
)

#: Rules precise enough to count as certain matches, used to estimate the prior
#: probability that two random records match.
DEFAULT_DETERMINISTIC_RULES: tuple[tuple[str, ...], ...] = (
    ("given_name", "surname", "date_of_birth"),
    ("given_name", "surname", "address_1"),
    ("soc_sec_id",),
    ("email",),
)

#: Blocking rules of the EM training sessions, tried in order until every compared
#: role has had its m probabilities estimated by a session whose rule leaves it free.
#: Person keys come first: pairs that share an address are often different people
#: of one household, from which EM would learn that names may disagree.
DEFAULT_TRAINING_RULES: tuple[tuple[str, ...], ...] = (
    ("date_of_birth",),
    ("given_name", "surname"),
    ("email",),
    ("phone",),
    ("address_1",),
    ("postcode",),
)

_PRIOR_WEIGHT_KEY = "prior"
_MAX_ABS_WEIGHT = 99.0


def _roles_in(expression: str) -> set[str]:
    """Return the column names an SQL expression refers to."""
    try:
        tree = sqlglot.parse_one(expression, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise UserInputError(f"not a valid SQL expression: {e}", where=expression) from e
    return {column.name for column in tree.find_all(exp.Column)}


def _check_rules(name: str, rules: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    checked = []
    for rule in rules:
        if isinstance(rule, str) or not rule:
            raise UserInputError(
                "each rule must be a non-empty tuple of roles or expressions", where=name
            )
        for element in rule:
            unknown = _roles_in(element) - set(ROLES)
            if unknown:
                raise UserInputError(
                    f"unknown role(s) {sorted(unknown)} in {element!r}; roles are {list(ROLES)}",
                    where=name,
                )
        checked.append(tuple(rule))
    return tuple(checked)


@dataclass(frozen=True)
class MatchConfig:
    """How person records are compared, blocked, trained and thresholded.

    Columns are addressed by *role* (``given_name``, ``surname``,
    ``date_of_birth``, ...; see :data:`ROLES`). ``column_map`` says which input
    column plays which role; roles whose column is absent from the input are
    skipped, together with every rule that uses them, so one configuration works
    on sources with different columns.

    Parameters
    ----------
    id_column
        Column with a unique identifier of each record.
    column_map
        Role -> input column. Roles left out are not used.
    blocking_rules
        Candidate pairs are the record pairs that agree exactly on every element
        of at least one rule. An element is a role or an SQL expression over
        roles, such as ``"substr(given_name, 1, 1)"``.
    deterministic_rules
        Rules that (nearly) only admit true matches; with ``deterministic_recall``
        they estimate the probability that two random records match.
    deterministic_recall
        Share of all true matches the deterministic rules are believed to find.
    training_rules
        Blocking rules of the expectation-maximisation sessions that estimate the
        m probabilities. They are tried in order; a rule runs only if it leaves a
        compared role free that no earlier session has estimated.
    match_threshold
        Pairs with a match probability at or above this are matches (merged).
    review_threshold
        Pairs with ``review_threshold <= probability < match_threshold`` go to
        the review queue instead of being merged.
    min_pair_probability
        Scored pairs below this probability are not returned (0 keeps all).
    u_max_pairs
        Number of random record pairs sampled to estimate the u probabilities;
        raise it for large inputs (Splink suggests 1e7 or more for a final model).
    max_iterations
        Maximum number of EM iterations per training session.
    m_floor
        Smallest m probability of any comparison level after training. EM drives
        the m of levels that no true match shows in the training pairs to zero,
        which would make one disagreeing field veto a pair outright; the floor
        keeps that evidence strong (about -10 match weight) but finite, so such
        pairs can still reach the review queue.
    seed
        Seed of the random sampling; the same data and seed give the same model.

    Examples
    --------
    >>> config = MatchConfig.for_febrl(match_threshold=0.95)
    >>> config.review_band
    (0.5, 0.95)
    >>> config.column_map["surname"]
    'surname'
    """

    id_column: str = "customer_id"
    column_map: Mapping[str, str] = field(default_factory=lambda: dict(CUSTOMERS_COLUMNS))
    blocking_rules: tuple[tuple[str, ...], ...] = DEFAULT_BLOCKING_RULES
    deterministic_rules: tuple[tuple[str, ...], ...] = DEFAULT_DETERMINISTIC_RULES
    deterministic_recall: float = 0.7
    training_rules: tuple[tuple[str, ...], ...] = DEFAULT_TRAINING_RULES
    match_threshold: float = 0.9
    review_threshold: float = 0.5
    min_pair_probability: float = 0.01
    u_max_pairs: float = 5e5
    max_iterations: int = 25
    m_floor: float = 1e-3
    seed: int = 42

    def __post_init__(self) -> None:
        if not isinstance(self.id_column, str) or not self.id_column:
            raise UserInputError("must be a non-empty column name", where="id_column")
        unknown = set(self.column_map) - set(ROLES)
        if unknown:
            raise UserInputError(
                f"unknown role(s) {sorted(unknown)}; roles are {list(ROLES)}",
                where="column_map",
            )
        for role, column in self.column_map.items():
            if not isinstance(column, str) or not column:
                raise UserInputError("must be a non-empty column name", where=f"column_map.{role}")
        object.__setattr__(self, "column_map", dict(self.column_map))
        for name in ("blocking_rules", "deterministic_rules", "training_rules"):
            object.__setattr__(self, name, _check_rules(name, getattr(self, name)))
        if not self.blocking_rules:
            raise UserInputError("at least one blocking rule is needed", where="blocking_rules")
        if not 0 < self.match_threshold <= 1:
            raise UserInputError("must be in (0, 1]", where="match_threshold")
        if not 0 <= self.review_threshold <= self.match_threshold:
            raise UserInputError("must be in [0, match_threshold]", where="review_threshold")
        if not 0 <= self.min_pair_probability <= self.review_threshold:
            raise UserInputError("must be in [0, review_threshold]", where="min_pair_probability")
        if not 0 < self.deterministic_recall <= 1:
            raise UserInputError("must be in (0, 1]", where="deterministic_recall")
        if not self.u_max_pairs >= 1:
            raise UserInputError("must be at least 1", where="u_max_pairs")
        if self.max_iterations < 1:
            raise UserInputError("must be at least 1", where="max_iterations")
        if not 0 <= self.m_floor < 0.1:
            raise UserInputError("must be in [0, 0.1)", where="m_floor")

    @property
    def review_band(self) -> tuple[float, float]:
        """The half-open probability interval ``[low, high)`` sent to review."""
        return (self.review_threshold, self.match_threshold)

    @classmethod
    def for_customers(cls, **overrides: Any) -> MatchConfig:
        """Configuration for segmint's canonical ``customers`` table.

        Examples
        --------
        >>> MatchConfig.for_customers().column_map["given_name"]
        'first_name'
        """
        return cls(**overrides)

    @classmethod
    def for_febrl(cls, **overrides: Any) -> MatchConfig:
        """Configuration for the Febrl person data sets (id column ``rec_id``).

        Examples
        --------
        >>> MatchConfig.for_febrl().id_column
        'rec_id'
        """
        values: dict[str, Any] = {"id_column": "rec_id", "column_map": dict(FEBRL_COLUMNS)}
        values.update(overrides)
        return cls(**values)


# ---------------------------------------------------------------- comparisons
@dataclass(frozen=True)
class _ComparisonSpec:
    """A comparison on one role: its levels (most to least similar), each labelled."""

    role: str
    levels: tuple[tuple[str, ComparisonLevelCreator], ...]

    def splink(self) -> CustomComparison:
        levels: list[ComparisonLevelCreator | dict[str, Any]] = [cll.NullLevel(self.role)]
        for label, level in self.levels:
            levels.append(level.configure(label_for_charts=label))
        levels.append(cll.ElseLevel().configure(label_for_charts="else"))
        return CustomComparison(levels, output_column_name=self.role)

    @property
    def labels_by_gamma(self) -> dict[int, str]:
        """Splink numbers the non-null levels from n-1 (first) down to 0 (else)."""
        labels = [label for label, _ in self.levels] + ["else"]
        mapping = {len(labels) - 1 - i: label for i, label in enumerate(labels)}
        mapping[-1] = "null"
        return mapping


def _exact(role: str) -> tuple[str, ComparisonLevelCreator]:
    return ("exact", cll.ExactMatchLevel(role))


def _jaro_winkler(role: str, *thresholds: float) -> list[tuple[str, ComparisonLevelCreator]]:
    return [(f"jw>={t}", cll.JaroWinklerLevel(role, t)) for t in thresholds]


def _damerau(role: str, *distances: int) -> list[tuple[str, ComparisonLevelCreator]]:
    return [(f"dl<={d}", cll.DamerauLevenshteinLevel(role, d)) for d in distances]


def _comparison_spec(role: str) -> _ComparisonSpec:
    """The comparison levels of each role."""
    levels: list[tuple[str, ComparisonLevelCreator]] = [_exact(role)]
    if role in ("given_name", "surname"):
        levels += _jaro_winkler(role, 0.92, 0.88, 0.7)
    elif role == "date_of_birth":
        # Dates are standardised to 'yyyymmdd' text, so a typo or a swapped pair
        # of digits is one Damerau-Levenshtein edit.
        levels += _damerau(role, 1, 2)
        year = ColumnExpression(role).substr(1, 4)
        levels.append(("same year", cll.ExactMatchLevel(year)))
    elif role in ("soc_sec_id", "phone", "postcode"):
        levels += _damerau(role, 1)
    elif role == "email":
        user = ColumnExpression(role).regex_extract("^[^@]+")
        levels.append(("same user", cll.ExactMatchLevel(user)))
        levels += _jaro_winkler(role, 0.88)
    elif role in ("address_1", "address_2", "suburb"):
        levels += _jaro_winkler(role, 0.9, 0.7)
    # street_number, state, country: exact or not.
    return _ComparisonSpec(role, tuple(levels))


# ---------------------------------------------------------------- standardising
def _quoted(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")


def _standardise_sql(role: str, column: str) -> str:
    """DuckDB-dialect expression that standardises one input column for its role."""
    text = f"CAST({_quoted(column)} AS VARCHAR)"
    if role in ("date_of_birth",):
        # Digits only, first eight: '1990-01-02', '1990-01-02 00:00:00' and
        # '19900102' all become '19900102'.
        return f"NULLIF(LEFT(REGEXP_REPLACE({text}, '[^0-9]', '', 'g'), 8), '')"
    if role in ("phone", "soc_sec_id"):
        return f"NULLIF(REGEXP_REPLACE({text}, '[^0-9]', '', 'g'), '')"
    if role == "postcode":
        return f"NULLIF(REGEXP_REPLACE(LOWER({text}), '\\s', '', 'g'), '')"
    return f"NULLIF(REGEXP_REPLACE(LOWER(TRIM({text})), '\\s+', ' ', 'g'), '')"


def _prepare_sql(source: str, id_column: str, columns: Mapping[str, str], dialect: str) -> str:
    """SELECT that renames the id to ``unique_id`` and standardises each role."""
    select = [f"{_quoted(id_column)} AS unique_id"]
    select += [f"{_standardise_sql(role, col)} AS {role}" for role, col in columns.items()]
    sql = f"SELECT {', '.join(select)} FROM {source}"
    return sqlglot.transpile(sql, read="duckdb", write=dialect)[0]


# ---------------------------------------------------------------- backend
class _Workspace:
    """A Splink DatabaseAPI, plus the clean-up of what segmint set up for it.

    For DuckDB, Splink works on its own cursor of the caller's database with an
    attached in-memory scratch database as its default, so Splink's intermediate
    tables never land in the caller's database file or schema. A read-only
    database cannot attach one: its input table is then copied (as Arrow) into a
    private in-memory database.
    """

    def __init__(self, backend: Any) -> None:
        self._owned_connection: duckdb.DuckDBPyConnection | None = None
        self._parent: duckdb.DuckDBPyConnection | None = None
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._scratch: str | None = None
        self._copy_from: duckdb.DuckDBPyConnection | None = None
        self._home: tuple[str, str] | None = None  # caller's (catalog, schema) in DuckDB
        if isinstance(backend, DatabaseAPI):
            self.db_api: DatabaseAPI[Any] = backend
            return
        if backend is None:
            self._owned_connection = duckdb.connect(":memory:")
            self.db_api = DuckDBAPI(self._owned_connection)
            return
        if isinstance(backend, Warehouse):
            parent = backend.con
        elif isinstance(backend, duckdb.DuckDBPyConnection):
            parent = backend
        else:
            raise UserInputError(
                "backend must be a DuckDB connection, a Warehouse or a Splink DatabaseAPI, "
                f"not {type(backend).__name__}",
                where="backend",
            )
        cursor = parent.cursor()
        row = cursor.execute("SELECT current_database(), current_schema()").fetchone()
        if row is None:  # pragma: no cover - DuckDB always answers
            raise EngineError("DuckDB did not report its current database")
        self._home = (str(row[0]), str(row[1]))
        scratch = f"segmint_match_{uuid.uuid4().hex[:12]}"
        try:
            cursor.execute(f"ATTACH ':memory:' AS {scratch}")
        except duckdb.Error as e:
            cursor.close()
            logger.info("cannot attach a scratch database (%s); matching on a copy", e)
            self._copy_from = parent
            self._owned_connection = duckdb.connect(":memory:")
            self.db_api = DuckDBAPI(self._owned_connection)
            return
        self._parent, self._scratch, self._cursor = parent, scratch, cursor
        cursor.execute(f"USE {scratch}")
        self.db_api = DuckDBAPI(cursor)

    @property
    def dialect(self) -> str:
        return str(self.db_api.sql_dialect.sqlglot_dialect)

    def source(self, data: Any) -> str:
        """Make the input reachable by SQL in the backend; return how to refer to it."""
        if data is None:
            raise UserInputError("no input data given", where="data")
        if isinstance(data, str):
            reference = self._table_reference(data)
            if self._copy_from is None:
                return reference
            try:
                data = self._copy_from.execute(f"SELECT * FROM {reference}").to_arrow_table()
            except duckdb.Error as e:
                raise UserInputError(f"cannot read the table: {e}", where=data) from e
        if isinstance(data, pd.DataFrame) and len(data.columns) == 0:
            raise DataValidationError("the input has no columns", where="data")
        with _engine_errors("registering the input"):
            return str(self.db_api.register(data).physical_name)

    def _table_reference(self, name: str) -> str:
        """The table name as SQL, qualified with the caller's catalog and schema (DuckDB)."""
        try:
            table = exp.to_table(name, dialect=self.dialect)
        except sqlglot.errors.ParseError as e:
            raise UserInputError(f"not a table name: {e}", where=name) from e
        if self._home is not None:
            if not table.args.get("db"):
                table.set("db", exp.to_identifier(self._home[1], quoted=True))
            if not table.args.get("catalog"):
                table.set("catalog", exp.to_identifier(self._home[0], quoted=True))
        return table.sql(self.dialect)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.db_api.delete_tables_created_by_splink_from_db()
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self._parent is not None and self._scratch is not None:
            with contextlib.suppress(duckdb.Error):
                self._parent.execute(f"DETACH DATABASE IF EXISTS {self._scratch}")
            self._scratch = None
        if self._owned_connection is not None:
            self._owned_connection.close()
            self._owned_connection = None


@contextlib.contextmanager
def _engine_errors(step: str) -> Iterator[None]:
    """Re-raise Splink and database failures as :class:`EngineError`."""
    try:
        yield
    except SplinkException as e:
        raise EngineError(f"record linkage failed while {step}: {e}") from e
    except duckdb.Error as e:
        raise EngineError(f"record linkage failed while {step}: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- results
def split_pairs(
    pairs: pd.DataFrame, match_threshold: float, review_threshold: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split scored pairs into matches and the review queue.

    Parameters
    ----------
    pairs
        Scored pairs with a ``match_probability`` column.
    match_threshold
        Pairs at or above it are matches.
    review_threshold
        Pairs at or above it but below ``match_threshold`` are for review.

    Returns
    -------
    tuple of DataFrame
        ``(matches, review)``, disjoint, index reset.

    Examples
    --------
    >>> frame = pd.DataFrame({"match_probability": [0.99, 0.7, 0.2]})
    >>> matches, review = split_pairs(frame, 0.9, 0.5)
    >>> len(matches), len(review)
    (1, 1)
    """
    probability = pairs["match_probability"]
    is_match = probability >= match_threshold
    is_review = (probability >= review_threshold) & ~is_match
    return (
        pairs.loc[is_match].reset_index(drop=True),
        pairs.loc[is_review].reset_index(drop=True),
    )


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Scored pairs, their routing (match / review) and the resulting clusters.

    Attributes
    ----------
    pairs
        Candidate pairs scored at or above ``min_pair_probability``: ``id_l``,
        ``id_r``, ``match_probability``, ``match_weight``, ``blocking_rule`` (the
        rule that made the pair a candidate) and ``evidence``, a JSON object
        ``{"prior": w0, role: [level, weight], ...}`` whose weights (log2 Bayes
        factors) add up to ``match_weight``. It records why a merge happened.
    matches
        Pairs with ``match_probability >= match_threshold``.
    review
        Pairs in the review band, not merged.
    match_threshold, review_threshold
        The thresholds used.

    Examples
    --------
    >>> result = MatchResult(
    ...     pairs=pd.DataFrame({"id_l": ["a"], "id_r": ["b"], "match_probability": [0.99]}),
    ...     matches=pd.DataFrame({"id_l": ["a"], "id_r": ["b"], "match_probability": [0.99]}),
    ...     review=pd.DataFrame({"id_l": [], "id_r": [], "match_probability": []}),
    ...     match_threshold=0.9,
    ...     review_threshold=0.5,
    ...     cluster_table=pd.DataFrame({"id": ["a", "b"], "cluster_id": ["a", "a"]}),
    ... )
    >>> result.clusters()["cluster_id"].nunique()
    1
    """

    pairs: pd.DataFrame
    matches: pd.DataFrame
    review: pd.DataFrame
    match_threshold: float
    review_threshold: float
    cluster_table: pd.DataFrame = field(repr=False)

    def clusters(self) -> pd.DataFrame:
        """Every record with its cluster (connected components of the matches).

        Returns
        -------
        DataFrame
            Columns ``id`` and ``cluster_id``; a record without matches is its
            own cluster. The cluster id is the id of one member of the cluster.
        """
        return self.cluster_table.copy()

    @staticmethod
    def explain(evidence: str) -> dict[str, Any]:
        """Decode one ``evidence`` value into ``{role: (level, weight)}`` plus the prior.

        Examples
        --------
        >>> MatchResult.explain('{"prior": -8.2, "surname": ["exact", 6.1]}')
        {'prior': -8.2, 'surname': ('exact', 6.1)}
        """
        decoded = json.loads(evidence)
        return {
            key: value if key == _PRIOR_WEIGHT_KEY else (value[0], value[1])
            for key, value in decoded.items()
        }


def _evidence(frame: pd.DataFrame, specs: Sequence[_ComparisonSpec], prior: float) -> pd.Series:
    """Compact JSON of the level and match weight of every comparison, one per pair."""
    parts = pd.Series(f'{{"{_PRIOR_WEIGHT_KEY}": {prior:.4f}', index=frame.index, dtype=object)
    for spec in specs:
        labels = frame[f"gamma_{spec.role}"].map(spec.labels_by_gamma).fillna("?").astype(str)
        weights = np.nan_to_num(frame[f"mw_{spec.role}"].astype(float).to_numpy(), nan=0.0)
        weights = np.clip(weights, -_MAX_ABS_WEIGHT, _MAX_ABS_WEIGHT)
        text = pd.Series([f"{w:.4f}" for w in weights], index=frame.index, dtype=object)
        parts = parts + f', "{spec.role}": ["' + labels + '", ' + text + "]"
    return parts + "}"


# ---------------------------------------------------------------- matcher
class ProbabilisticMatcher:
    """Deduplicate person records without a shared identifier (Fellegi-Sunter, Splink).

    Parameters
    ----------
    config
        Columns, rules and thresholds; :class:`MatchConfig` defaults (segmint's
        ``customers`` table) when omitted.
    backend
        Where the work runs: a DuckDB connection, a segmint
        :class:`~segmint.engine.warehouse.Warehouse`, or any Splink
        ``DatabaseAPI`` (e.g. ``splink.SparkAPI(spark_session=spark)``). A private
        in-memory DuckDB database when omitted.

    Attributes
    ----------
    roles_
        The roles compared (those of ``column_map`` found in the input).
    blocking_rules_
        The blocking rules applied, as readable text.
    n_records_
        Number of input records.
    probability_two_random_records_match_
        The estimated prior match probability.
    model_
        The trained Splink model (settings with m and u probabilities) as a dict,
        for lineage.

    Examples
    --------
    Deduplicate the ``customers`` table of a warehouse:

    >>> from segmint.engine.warehouse import Warehouse
    >>> with Warehouse("segmint.duckdb") as wh:  # doctest: +SKIP
    ...     with ProbabilisticMatcher(backend=wh) as matcher:
    ...         result = matcher.fit("customers").predict()
    >>> result.matches[["id_l", "id_r", "match_probability"]].head(2)  # doctest: +SKIP
          id_l     id_r  match_probability
    0  c-10412  c-88121           0.999987
    1  c-20455  c-20901           0.999871
    >>> result.clusters().head(2)  # doctest: +SKIP
            id cluster_id
    0  c-10412    c-10412
    1  c-88121    c-10412
    """

    linker_: Linker | None
    config_: MatchConfig
    roles_: tuple[str, ...]
    blocking_rules_: tuple[str, ...]
    n_records_: int
    probability_two_random_records_match_: float
    model_: dict[str, Any]

    def __init__(self, *, config: MatchConfig | None = None, backend: Any = None) -> None:
        self.config = config
        self.backend = backend
        self._workspace: _Workspace | None = None
        self._specs: list[_ComparisonSpec] = []

    # ------------------------------------------------------------ public API
    def fit(self, data: Any) -> ProbabilisticMatcher:
        """Standardise the records and train the linkage model.

        Parameters
        ----------
        data
            A table name in the backend's database, a pandas DataFrame, a pyarrow
            Table, or a frame the backend accepts (a Spark DataFrame for Spark).

        Returns
        -------
        ProbabilisticMatcher
            ``self``, fitted.

        Raises
        ------
        DataValidationError
            Missing id column, no usable column, empty input, missing or
            duplicate ids.
        UserInputError
            Unknown table or invalid backend.
        """
        config = self.config if self.config is not None else MatchConfig()
        if not isinstance(config, MatchConfig):
            raise UserInputError("must be a MatchConfig", where="config")
        self.close()
        self._workspace = _Workspace(self.backend)
        try:
            self._fit(config, data)
        except BaseException:
            self.close()
            raise
        return self

    def predict(self) -> MatchResult:
        """Score the candidate pairs of the fitted records and cluster the matches.

        Returns
        -------
        MatchResult
            Pairs, matches, the review queue and clusters.

        Raises
        ------
        NotFittedError
            If :meth:`fit` has not been called.
        """
        linker = getattr(self, "linker_", None)
        if linker is None:
            raise NotFittedError("ProbabilisticMatcher is not fitted; call fit() first")
        config = self.config_
        threshold = config.min_pair_probability or None
        with _engine_errors("scoring pairs"):
            predictions = linker.inference.predict(
                threshold_match_probability=threshold, warning_mode="never"
            )
            clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
                predictions, threshold_match_probability=config.match_threshold
            )
            raw_pairs = predictions.as_pandas_dataframe()
            raw_clusters = clustered.as_pandas_dataframe()
            for table in (clustered, predictions):
                table.drop_table_from_database_and_remove_from_cache()
        pairs = self._pairs_frame(raw_pairs)
        matches, review = split_pairs(pairs, config.match_threshold, config.review_threshold)
        clusters = (
            raw_clusters[["unique_id", "cluster_id"]]
            .rename(columns={"unique_id": "id"})
            .sort_values(["cluster_id", "id"], kind="stable")
            .reset_index(drop=True)
        )
        logger.info(
            "scored %d pairs: %d matches, %d for review, %d clusters of %d records",
            len(pairs),
            len(matches),
            len(review),
            clusters["cluster_id"].nunique(),
            len(clusters),
        )
        return MatchResult(
            pairs=pairs,
            matches=matches,
            review=review,
            match_threshold=config.match_threshold,
            review_threshold=config.review_threshold,
            cluster_table=clusters,
        )

    def fit_predict(self, data: Any) -> MatchResult:
        """:meth:`fit` then :meth:`predict`."""
        return self.fit(data).predict()

    def close(self) -> None:
        """Drop the intermediate tables and detach the scratch database."""
        if self._workspace is not None:
            self._workspace.close()
            self._workspace = None
        self.linker_ = None

    def __enter__(self) -> ProbabilisticMatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ fitting
    def _fit(self, config: MatchConfig, data: Any) -> None:
        workspace = self._workspace
        assert workspace is not None
        db_api = workspace.db_api
        source = workspace.source(data)
        columns = self._input_columns(db_api, source, data)
        if config.id_column not in columns:
            raise DataValidationError(
                f"the id column {config.id_column!r} is missing; columns are {columns}",
                where=config.id_column,
            )
        present = {
            role: config.column_map[role]
            for role in ROLES
            if role in config.column_map and config.column_map[role] in columns
        }
        skipped = sorted(set(config.column_map) - set(present))
        if skipped:
            logger.info("columns absent from the input, not compared: %s", skipped)
        if not present:
            raise DataValidationError(
                "none of the configured columns "
                f"{sorted(config.column_map.values())} is in the input; columns are {columns}",
                where="column_map",
            )
        with _engine_errors("standardising the records"):
            prepared = db_api.query_sql(
                _prepare_sql(source, config.id_column, present, workspace.dialect)
            )
        assert isinstance(prepared, SplinkDataFrame)
        n_records = self._check_ids(prepared, config.id_column)

        roles = tuple(present)
        specs = [_comparison_spec(role) for role in roles]
        blocking = _usable_rules(config.blocking_rules, roles)
        if not blocking:
            raise DataValidationError(
                "no blocking rule can be applied: each uses a column that is missing "
                f"(compared: {list(roles)})",
                where="blocking_rules",
            )
        settings = SettingsCreator(
            link_type="dedupe_only",
            unique_id_column_name="unique_id",
            comparisons=[spec.splink() for spec in specs],
            blocking_rules_to_generate_predictions=[block_on(*rule) for rule in blocking],
            retain_matching_columns=True,  # gamma_ (level) columns
            retain_intermediate_calculation_columns=True,
            max_iterations=config.max_iterations,
        )
        with _engine_errors("setting up the model"):
            records = db_api.register(prepared.physical_name)
            linker = Linker(records, settings, log_level=None)
        self._train(linker, config, roles, n_records)
        model = _floor_m_probabilities(linker.misc.save_model_to_json(), config.m_floor)
        trained = tuple(c["output_column_name"] for c in model["comparisons"])
        if trained != roles:
            raise EngineError(f"the trained model compares {trained}, expected {roles}")
        with _engine_errors("loading the trained model"):
            linker = Linker(records, model, log_level=None)

        self.config_ = config
        self.linker_ = linker
        self.roles_ = roles
        self.blocking_rules_ = tuple(", ".join(rule) for rule in blocking)
        self.n_records_ = n_records
        self.model_ = model
        self.probability_two_random_records_match_ = float(
            model["probability_two_random_records_match"]
        )
        self._specs = specs

    @staticmethod
    def _input_columns(db_api: DatabaseAPI[Any], source: str, data: Any) -> list[str]:
        try:
            head = db_api.query_sql(f"SELECT * FROM {source} LIMIT 0", output_type="pandas")
        except SplinkException as e:
            if isinstance(data, str):
                raise UserInputError(f"cannot read the table: {e}", where=data) from e
            raise EngineError(f"cannot read the input: {e}") from e
        assert isinstance(head, pd.DataFrame)
        return [str(c) for c in head.columns]

    @staticmethod
    def _check_ids(prepared: SplinkDataFrame, id_column: str) -> int:
        with _engine_errors("checking the ids"):
            stats = prepared.query_sql(
                "SELECT COUNT(*) AS n, COUNT(unique_id) AS n_ids, "
                "COUNT(DISTINCT unique_id) AS n_distinct FROM {this}"
            )
            n, n_ids, n_distinct = (int(v) for v in stats.as_record_list()[0].values())
            stats.drop_table_from_database_and_remove_from_cache()
        if n == 0:
            raise DataValidationError("the input has no records", where="data")
        if n_ids < n:
            raise DataValidationError(f"{n - n_ids} record(s) have no id", where=id_column)
        if n_distinct < n:
            raise DataValidationError(
                f"ids must be unique: {n - n_distinct} duplicate id(s)", where=id_column
            )
        if n < 2:
            raise DataValidationError("at least two records are needed to match", where="data")
        return n

    @staticmethod
    def _train(linker: Linker, config: MatchConfig, roles: Sequence[str], n_records: int) -> None:
        training = linker.training
        deterministic = _usable_rules(config.deterministic_rules, roles)
        if deterministic:
            with _engine_errors("estimating the prior match probability"):
                try:
                    training.estimate_probability_two_random_records_match(
                        [block_on(*rule) for rule in deterministic],
                        recall=config.deterministic_recall,
                    )
                except ValueError as e:
                    raise DataValidationError(
                        f"cannot estimate how often records match: {e}",
                        where="deterministic_rules",
                    ) from e
        else:
            logger.warning(
                "no deterministic rule applies to the columns %s; using the prior "
                "match probability of one duplicate per record",
                list(roles),
            )
            linker._settings_obj._probability_two_random_records_match = min(
                0.5, 1.0 / max(n_records - 1, 1)
            )
        with _engine_errors("estimating u probabilities"):
            training.estimate_u_using_random_sampling(
                max_pairs=config.u_max_pairs, seed=config.seed
            )
        # Each session estimates m for the comparisons its rule leaves free; run
        # the rules in order until every comparison has been estimated once.
        estimated: set[str] = set()
        for rule in _usable_rules(config.training_rules, roles):
            free = set(roles) - set().union(*(_roles_in(e) for e in rule))
            if not free - estimated:
                continue
            _raise_current_m(linker, config.m_floor)
            if _expectation_maximisation(linker, rule, config.max_iterations):
                estimated |= free
        if not estimated:
            raise DataValidationError(
                "no EM training session could run: every training rule uses a missing "
                f"column or finds no pairs (compared: {list(roles)})",
                where="training_rules",
            )
        missing = [role for role in roles if role not in estimated]
        if missing:
            logger.warning(
                "m probabilities of %s were not estimated (add a training rule that "
                "does not use them); Splink defaults are used",
                missing,
            )

    # ------------------------------------------------------------ output
    def _pairs_frame(self, raw: pd.DataFrame) -> pd.DataFrame:
        prior = self.probability_two_random_records_match_
        prior_weight = math.log2(prior / (1 - prior)) if 0 < prior < 1 else 0.0
        rules = dict(enumerate(self.blocking_rules_))
        if raw.empty:
            return pd.DataFrame(
                {
                    "id_l": pd.Series(dtype=object),
                    "id_r": pd.Series(dtype=object),
                    "match_probability": pd.Series(dtype=float),
                    "match_weight": pd.Series(dtype=float),
                    "blocking_rule": pd.Series(dtype=object),
                    "evidence": pd.Series(dtype=object),
                }
            )
        frame = pd.DataFrame(
            {
                "id_l": raw["unique_id_l"],
                "id_r": raw["unique_id_r"],
                "match_probability": raw["match_probability"].astype(float),
                "match_weight": raw["match_weight"].astype(float),
                "blocking_rule": raw["match_key"].astype(int).map(rules),
                "evidence": _evidence(raw, self._specs, prior_weight),
            }
        )
        return frame.sort_values(
            ["match_probability", "id_l", "id_r"], ascending=[False, True, True], kind="stable"
        ).reset_index(drop=True)


def _raise_current_m(linker: Linker, floor: float) -> None:
    """Start the next EM session from m probabilities of at least ``floor``.

    A previous session may have driven an m to (nearly) zero, from which EM cannot
    move away. Only the starting values change; the estimates each session
    recorded, which Splink averages into the final model, are kept.
    """
    for comparison in linker._settings_obj.comparisons:
        for level in comparison._comparison_levels_excluding_null:
            m = level._m_probability
            if isinstance(m, float) and m < floor:
                level.m_probability = floor


def _expectation_maximisation(linker: Linker, rule: tuple[str, ...], max_iterations: int) -> bool:
    """Run one EM session blocked on ``rule``; return whether it ran.

    EM may legitimately drive an m probability to zero (a level that no true
    match shows, common in small inputs), which Splink 5 rejects. The session is
    then rerun with half as many iterations, which leaves that m tiny but positive.
    """
    settings = linker._settings_obj
    original = settings.training_settings
    iterations = max_iterations
    try:
        while True:
            settings.training_settings = dataclasses.replace(original, max_iterations=iterations)
            # A failed Splink session leaves the model it was given modified (the
            # blocked comparisons removed): keep a copy to start the retry from.
            model = settings.core_model_settings.copy()
            try:
                with _engine_errors(f"training on {', '.join(rule)}"):
                    linker.training.estimate_parameters_using_expectation_maximisation(
                        block_on(*rule), estimate_without_term_frequencies=True
                    )
                return True
            except ValueError as e:
                settings.core_model_settings = model
                if "below the minimum allowed" not in str(e) or iterations == 1:
                    raise EngineError(f"EM training on {', '.join(rule)} failed: {e}") from e
                iterations //= 2
                logger.info(
                    "EM on %s drove an m probability to zero; retrying with %d iterations",
                    rule,
                    iterations,
                )
            except EngineError as e:
                settings.core_model_settings = model
                logger.warning("EM training blocked on %s skipped: %s", rule, e)
                return False
    finally:
        settings.training_settings = original


def _floor_m_probabilities(model: dict[str, Any], floor: float) -> dict[str, Any]:
    """Raise every m probability to at least ``floor``, keeping each comparison's sum.

    EM on a modest number of pairs cannot tell "no true match shows this level"
    from "one in a thousand does", yet drives such m to zero: one disagreeing
    field would then veto any pair (weights of -100 and below) and hide it even
    from review. The floor keeps such evidence strong but finite.
    """
    model = copy.deepcopy(model)
    for comparison in model["comparisons"]:
        levels = [
            level for level in comparison["comparison_levels"] if not level.get("is_null_level")
        ]
        m = np.array(
            [
                level["m_probability"] if isinstance(level.get("m_probability"), float) else 0.0
                for level in levels
            ]
        )
        if floor > 0:
            m = np.maximum(m, floor)
        m = m / m.sum() if m.sum() > 0 else np.full(len(m), 1 / len(m))
        for level, value in zip(levels, m, strict=True):
            level["m_probability"] = float(value)
    return model


def _usable_rules(rules: Sequence[tuple[str, ...]], roles: Sequence[str]) -> list[tuple[str, ...]]:
    """The rules whose every referenced role is among ``roles``."""
    available = set(roles)
    return [rule for rule in rules if set().union(*(_roles_in(e) for e in rule)) <= available]


__all__ = [
    "CUSTOMERS_COLUMNS",
    "DEFAULT_BLOCKING_RULES",
    "DEFAULT_DETERMINISTIC_RULES",
    "DEFAULT_TRAINING_RULES",
    "FEBRL_COLUMNS",
    "ROLES",
    "MatchConfig",
    "MatchResult",
    "ProbabilisticMatcher",
    "split_pairs",
]
