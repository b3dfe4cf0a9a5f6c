"""The model registry: published segment-model versions with lineage, rollback and comparison.

Every published model is a row of the ``models`` table, stored as data (no
pickle): its :class:`~segmint.segments.scoring.ScoringSpec` and the SQL of its
inputs (enough to score anyone again, in any engine), its segment names, and
its :class:`Lineage` (training window, data fingerprint, features and
transforms, algorithm, parameters, seed, library versions, metrics). Versions
are numbered ``v0001``, ``v0002``, ... in publication order; exactly one is
``active`` at a time (or none before the first publication).

Assignments live in ``segment_assignments``, one row per customer and model
version. Publishing a new version never deletes the assignments of earlier
versions, so :func:`rollback` only flips which version is active: nothing is
recomputed, and :func:`current_assignments` immediately returns the older
assignments, unchanged. :func:`migration_matrix` shows how customers moved
between two versions and :func:`diff_versions` what changed in the model.

Examples
--------
>>> from segmint.engine import Warehouse
>>> from segmint.segments.scoring import ScoringSpec
>>> wh = Warehouse(":memory:")
>>> wh.execute("CREATE TABLE f AS SELECT * FROM (VALUES ('a', 1.0), ('b', 8.0)) t(customer_id, v)")
>>> spec = ScoringSpec(kind="centroid", feature_names=("x",),
...                    centers=((0.0,), (10.0,)), segment_ids=(0, 1))
>>> publish_version(wh, spec=spec, inputs={"x": "v"}, lineage=Lineage(seed=7),
...                 names={1: "Loyal"}, algorithm="kmeans", k=2, source="f")
'v0001'
>>> active_version(wh).version
'v0001'
>>> current_assignments(wh)[["customer_id", "segment_name"]].values.tolist()
[['a', 'Segment 0'], ['b', 'Loyal']]
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import math
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from segmint.data.schema import TABLES, Column, Table, register_table
from segmint.engine.dialect import quote
from segmint.engine.warehouse import Warehouse
from segmint.errors import UserInputError
from segmint.segments.profiles import default_segment_name
from segmint.segments.scoring import (
    SEGMENT_ASSIGNMENTS,
    ScoringSpec,
    compile_scoring_sql,
    score_in_engine,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MODELS",
    "SEGMENT_ASSIGNMENTS",
    "Lineage",
    "ModelVersion",
    "SegmentName",
    "active_version",
    "current_assignments",
    "data_fingerprint",
    "diff_versions",
    "ensure_registry_tables",
    "get_version",
    "library_versions",
    "list_versions",
    "migration_matrix",
    "normalise_version",
    "publish_version",
    "rollback",
    "segment_sizes",
]

ACTIVE = "active"
INACTIVE = "inactive"
NEW = "(new)"
GONE = "(gone)"
UNSCORED = "(unscored)"
_VERSION = re.compile(r"^v?0*(\d{1,9})$")
# Distributions whose versions every model records.
_LIBRARIES = (
    "segmint",
    "numpy",
    "scikit-learn",
    "scipy",
    "pandas",
    "pyarrow",
    "duckdb",
    "sqlglot",
    "ibis-framework",
)

MODELS = Table(
    "models",
    "Published segment-model versions: scoring spec, segment names and lineage, stored as JSON.",
    (
        Column("version", "string", "Version, v0001, v0002, ... in publication order."),
        Column("created_at", "timestamp", "When the version was published (UTC)."),
        Column("activated_at", "timestamp", "When the version was last made active (UTC)."),
        Column("algorithm", "string", "Clustering algorithm (kmeans, gmm, ward, hdbscan, ...)."),
        Column("k", "integer", "Number of segments, not counting the unassigned segment."),
        Column("status", "string", "active (the one in use) | inactive."),
        Column(
            "lineage",
            "json",
            "Training window, data fingerprint, features, transforms, algorithm, "
            "parameters, seed, library versions, metrics.",
        ),
        Column("spec", "json", "Scoring spec and the SQL of its inputs (re-scores anyone)."),
        Column("names", "json", "Segment id -> name and description."),
        Column("parent_version", "string", "Version that was active when this one was published."),
    ),
    key=("version",),
    timestamp_column="created_at",
)
register_table(MODELS)

_ASSIGNMENT_COLUMNS = (
    "customer_id",
    "segment_id",
    "segment_name",
    "probability",
    "distance",
    "assigned_at",
    "model_version",
)


# -------------------------------------------------------------- data types
def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a fitted model depends on.

    Examples
    --------
    >>> sorted(library_versions())[:3]
    ['duckdb', 'ibis-framework', 'numpy']
    """
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _jsonable(value: Any) -> Any:
    """Plain JSON data: numpy scalars unwrapped, non-finite floats as None, dates as ISO."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    raise UserInputError(
        f"cannot store a {type(value).__name__} in the model lineage", where="lineage"
    )


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from: enough to explain and reproduce it.

    Parameters
    ----------
    algorithm
        Clustering algorithm (filled in by :func:`publish_version` when empty).
    parameters
        Hyper-parameters of the estimator and of the pipeline (sample size, ...).
    seed
        Random seed of sampling and fitting.
    features
        Raw feature name -> definition (SQL over the canonical tables).
    transforms
        Transformed input name -> how it is built from the raw features.
    training_window
        ``(start, end)`` of the data the model was fitted on (ISO strings or datetimes).
    as_of
        Snapshot time of the features.
    data_fingerprint
        :func:`data_fingerprint` of the input tables when the model was fitted.
    metrics
        Fit and validation metrics (silhouette, stability, ...); NaN is stored as null.
    libraries
        Library versions; defaults to :func:`library_versions` at creation.
    extra
        Anything else worth recording (JSON-serialisable).

    Examples
    --------
    >>> lin = Lineage(algorithm="kmeans", seed=42, parameters={"n_clusters": 4})
    >>> Lineage.from_dict(lin.to_dict()) == lin
    True
    >>> "numpy" in lin.libraries
    True
    """

    algorithm: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    features: Mapping[str, str] = field(default_factory=dict)
    transforms: Mapping[str, Any] = field(default_factory=dict)
    training_window: tuple[str | None, str | None] | None = None
    as_of: str | None = None
    data_fingerprint: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    libraries: Mapping[str, str] = field(default_factory=library_versions)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "as_of", _iso(self.as_of))
        if self.training_window is not None:
            window = tuple(self.training_window)
            if len(window) != 2:
                raise UserInputError("must be a (start, end) pair", where="training_window")
            set_(self, "training_window", (_iso(window[0]), _iso(window[1])))
        for name in ("parameters", "features", "transforms", "metrics", "libraries", "extra"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise UserInputError("must be a mapping", where=f"lineage.{name}")
            set_(self, name, _jsonable(value))
        if self.seed is not None:
            set_(self, "seed", int(self.seed))

    def to_dict(self) -> dict[str, Any]:
        """Return the lineage as JSON-serialisable data."""
        out: dict[str, Any] = _jsonable(dataclasses.asdict(self))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        """Rebuild a lineage from :meth:`to_dict` output (unknown keys go to ``extra``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown:
            args["extra"] = {**dict(args.get("extra") or {}), **unknown}
        if args.get("training_window") is not None:
            args["training_window"] = tuple(args["training_window"])
        return cls(**args)


@dataclass(frozen=True)
class SegmentName:
    """The display name and description of one segment.

    Examples
    --------
    >>> SegmentName("Loyal", "Frequent buyers with high spend").name
    'Loyal'
    """

    name: str
    description: str = ""


@dataclass(frozen=True)
class ModelVersion:
    """One published model version, as stored in ``models``.

    Attributes
    ----------
    version, status, created_at, activated_at, algorithm, k, parent_version
        The columns of ``models``.
    spec
        The scoring spec.
    inputs
        Feature name -> SQL expression over the raw feature columns.
    names
        Segment id -> name and description.
    lineage
        Where the model came from.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> from segmint.segments.scoring import ScoringSpec
    >>> wh = Warehouse(":memory:")
    >>> spec = ScoringSpec(kind="centroid", feature_names=("x",), centers=((0.0,),),
    ...                    segment_ids=(0,))
    >>> v = publish_version(wh, spec=spec, inputs={"x": "v"}, lineage=Lineage(),
    ...                     names={}, algorithm="kmeans", k=1)
    >>> get_version(wh, v).active
    True
    """

    version: str
    status: str
    created_at: datetime
    activated_at: datetime | None
    algorithm: str
    k: int
    parent_version: str | None
    spec: ScoringSpec
    inputs: dict[str, str]
    names: dict[int, SegmentName]
    lineage: Lineage

    @property
    def active(self) -> bool:
        """Whether this is the version in use."""
        return self.status == ACTIVE

    def name_of(self, segment_id: int) -> str:
        """Display name of a segment ("Segment <id>" / "Unassigned" when unnamed)."""
        named = self.names.get(segment_id)
        return named.name if named else default_segment_name(segment_id)

    def scoring_sql(self, *, source: str, id_column: str = "customer_id") -> str:
        """The ``SELECT`` scoring every row of ``source`` with this version.

        See :func:`~segmint.segments.scoring.compile_scoring_sql`.
        """
        return compile_scoring_sql(self.spec, self.inputs, source=source, id_column=id_column)


# -------------------------------------------------------------- helpers
def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def normalise_version(version: str | int) -> str:
    """The canonical form ``vNNNN`` of a version given as ``v3``, ``"0003"`` or ``3``.

    Raises
    ------
    UserInputError
        If it is not a version number.

    Examples
    --------
    >>> normalise_version("v3"), normalise_version(12), normalise_version("v0007")
    ('v0003', 'v0012', 'v0007')
    """
    text = str(version).strip().lower()
    match = _VERSION.match(text) if not isinstance(version, bool) else None
    if match is None or int(match.group(1)) == 0:
        raise UserInputError(
            f"not a model version: {version!r} (expected v0001, v2, ...)", where="version"
        )
    return f"v{int(match.group(1)):04d}"


def ensure_registry_tables(wh: Warehouse) -> None:
    """Create ``models`` and ``segment_assignments`` if they do not exist."""
    wh.execute(MODELS.ddl())
    wh.execute(SEGMENT_ASSIGNMENTS.ddl())


def _has_models(wh: Warehouse) -> bool:
    return wh.has_table(MODELS.name)


def _normalise_names(
    names: Mapping[int, str | SegmentName] | None, spec: ScoringSpec
) -> dict[int, SegmentName]:
    out: dict[int, SegmentName] = {}
    for key, value in (names or {}).items():
        segment = int(key)
        if segment not in spec.possible_segment_ids:
            raise UserInputError(
                f"name given for segment {segment}, which the model cannot assign "
                f"(segments: {list(spec.possible_segment_ids)})",
                where="names",
            )
        named = value if isinstance(value, SegmentName) else SegmentName(str(value))
        if not named.name.strip():
            raise UserInputError(f"segment {segment} has an empty name", where="names")
        out[segment] = named
    return out


def _version_from_row(row: Sequence[Any]) -> ModelVersion:
    version, created, activated, algorithm, k, status, lineage, spec, names, parent = row
    stored = json.loads(spec)
    names_data = json.loads(names)
    return ModelVersion(
        version=version,
        status=status,
        created_at=created,
        activated_at=activated,
        algorithm=algorithm,
        k=int(k),
        parent_version=parent,
        spec=ScoringSpec.from_dict(stored["scoring"]),
        inputs={name: sql for name, sql in stored["inputs"]},
        names={
            int(key): SegmentName(value["name"], value.get("description", ""))
            for key, value in names_data.items()
        },
        lineage=Lineage.from_dict(json.loads(lineage)),
    )


def _select_models(where: str = "") -> str:
    columns = ", ".join(quote(c.name) for c in MODELS.columns)
    return f"SELECT {columns} FROM {quote(MODELS.name)} {where}"


def _next_version(wh: Warehouse) -> str:
    last = wh.scalar(f'SELECT max(CAST(substr("version", 2) AS BIGINT)) FROM {quote(MODELS.name)}')
    return f"v{int(last or 0) + 1:04d}"


def _activate(wh: Warehouse, version: str) -> None:
    wh.execute(
        f'UPDATE {quote(MODELS.name)} SET "status" = CASE WHEN "version" = ? THEN ? ELSE ? END, '
        '"activated_at" = CASE WHEN "version" = ? THEN ? ELSE "activated_at" END '
        'WHERE "version" = ? OR "status" = ?',
        [version, ACTIVE, INACTIVE, version, _now(), version, ACTIVE],
    )


# ------------------------------------------------------------- publication
def publish_version(
    wh: Warehouse,
    *,
    spec: ScoringSpec,
    inputs: Mapping[str, str],
    lineage: Lineage,
    names: Mapping[int, str | SegmentName] | None,
    algorithm: str,
    k: int,
    activate: bool = True,
    source: str | None = None,
    id_column: str = "customer_id",
    assigned_at: datetime | None = None,
) -> str:
    """Record a new model version and, given a ``source``, score everyone with it.

    Everything happens in one transaction: the ``models`` row, the
    assignments of every row of ``source`` (scored in the engine by
    :func:`~segmint.segments.scoring.score_in_engine`) and the activation. If
    any step fails nothing is kept and the previously active version stays
    active. Do not call it inside :meth:`Warehouse.transaction` (DuckDB does
    not nest transactions). Without ``source`` only the model is recorded;
    score it later with ``score_in_engine(wh, ..., atomic=True)``.

    Parameters
    ----------
    wh
        The warehouse; ``models`` and ``segment_assignments`` are created if missing.
    spec, inputs
        The fitted model and the SQL of its inputs (validated by compiling them).
    lineage
        Where the model came from. ``algorithm`` is filled in when empty and
        ``libraries`` when empty.
    names
        Segment id -> name (or :class:`SegmentName`); unnamed segments show
        "Segment <id>".
    algorithm
        Clustering algorithm name.
    k
        Number of segments; must equal the number of centres of ``spec``.
    activate
        Make the new version the active one.
    source, id_column, assigned_at
        Table of transformed-feature inputs to score, its id column, and the
        assignment timestamp (default now).

    Returns
    -------
    str
        The new version, ``v0001`` for the first one.

    Raises
    ------
    UserInputError
        If ``k`` does not match the spec, the inputs do not match its
        features, or a name is given for a segment the model cannot assign.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> spec = ScoringSpec(kind="centroid", feature_names=("x",), centers=((0.0,),),
    ...                    segment_ids=(0,))
    >>> publish_version(wh, spec=spec, inputs={"x": "v"}, lineage=Lineage(), names=None,
    ...                 algorithm="kmeans", k=1, activate=False)
    'v0001'
    >>> active_version(wh) is None
    True
    """
    k = int(k)
    if k != spec.n_segments:
        raise UserInputError(f"k={k} but the model has {spec.n_segments} segments", where="k")
    compile_scoring_sql(spec, inputs, source=source or "features", id_column=id_column)
    named = _normalise_names(names, spec)
    if not lineage.algorithm:
        lineage = dataclasses.replace(lineage, algorithm=algorithm)
    if not lineage.libraries:
        lineage = dataclasses.replace(lineage, libraries=library_versions())
    stored_spec = {"scoring": spec.to_dict(), "inputs": [[n, inputs[n]] for n in inputs]}
    stored_names = {
        str(s): {"name": n.name, "description": n.description} for s, n in sorted(named.items())
    }
    ensure_registry_tables(wh)
    with wh.transaction():
        version = _next_version(wh)
        parent = wh.scalar(
            f'SELECT "version" FROM {quote(MODELS.name)} WHERE "status" = ?', [ACTIVE]
        )
        wh.execute(
            f"INSERT INTO {quote(MODELS.name)} "
            f"({', '.join(quote(c.name) for c in MODELS.columns)}) "
            "VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
            [
                version,
                _now(),
                algorithm,
                k,
                INACTIVE,
                json.dumps(lineage.to_dict(), allow_nan=False),
                json.dumps(stored_spec, allow_nan=False),
                json.dumps(stored_names, allow_nan=False),
                parent,
            ],
        )
        if source is not None:
            score_in_engine(
                wh,
                spec,
                inputs,
                source=source,
                model_version=version,
                names={s: n.name for s, n in named.items()},
                id_column=id_column,
                assigned_at=assigned_at,
                atomic=False,
            )
        if activate:
            _activate(wh, version)
    logger.info("published model %s (%s, k=%d, active=%s)", version, algorithm, k, activate)
    return version


def rename_segments(
    wh: Warehouse,
    version: str | int,
    names: Mapping[int, str],
    descriptions: Mapping[int, str] | None = None,
) -> None:
    """Set segment names (and descriptions) of a version, in ``models`` and its assignments.

    The pipeline names segments from their profiles, which exist only once everyone is
    scored; this records those names. Ids outside the model (e.g. the pipeline's fallback
    segment) may be named too.
    """
    version = normalise_version(version)
    get_version(wh, version)  # raises for an unknown version
    stored = {
        str(s): {"name": n, "description": (descriptions or {}).get(s, "")}
        for s, n in sorted(names.items())
    }
    with wh.transaction():
        wh.execute(
            f'UPDATE {quote(MODELS.name)} SET "names" = ? WHERE "version" = ?',
            [json.dumps(stored, allow_nan=False), version],
        )
        wh.execute(
            "UPDATE segment_assignments SET segment_name = n.name FROM "
            "(SELECT UNNEST(?::BIGINT[]) AS segment_id, UNNEST(?::VARCHAR[]) AS name) n "
            "WHERE segment_assignments.model_version = ? "
            "AND segment_assignments.segment_id = n.segment_id",
            [list(names), list(names.values()), version],
        )


# --------------------------------------------------------------- reading
def list_versions(wh: Warehouse) -> pd.DataFrame:
    """Every published version, oldest first, with the number of customers it assigned.

    Returns
    -------
    pandas.DataFrame
        Columns ``version``, ``status``, ``created_at``, ``activated_at``,
        ``algorithm``, ``k``, ``parent_version``, ``data_fingerprint``,
        ``customers``; empty before the first publication.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> list_versions(Warehouse(":memory:")).empty
    True
    """
    columns = [
        "version",
        "status",
        "created_at",
        "activated_at",
        "algorithm",
        "k",
        "parent_version",
        "data_fingerprint",
        "customers",
    ]
    if not _has_models(wh):
        return pd.DataFrame(columns=columns)
    counts = "0"
    join = ""
    if wh.has_table(SEGMENT_ASSIGNMENTS.name):
        join = (
            'LEFT JOIN (SELECT "model_version", count(*) AS n '
            f"FROM {quote(SEGMENT_ASSIGNMENTS.name)} GROUP BY 1) AS a "
            'ON a."model_version" = m."version"'
        )
        counts = "coalesce(a.n, 0)"
    frame = wh.df(
        'SELECT m."version", m."status", m."created_at", m."activated_at", m."algorithm", '
        'm."k", m."parent_version", '
        "json_extract_string(m.\"lineage\", '$.data_fingerprint') AS data_fingerprint, "
        f"{counts} AS customers FROM {quote(MODELS.name)} AS m {join} "
        'ORDER BY CAST(substr(m."version", 2) AS BIGINT)'
    )
    return frame[columns]


def get_version(wh: Warehouse, version: str | int) -> ModelVersion:
    """One published version with its spec, inputs, names and lineage.

    Raises
    ------
    UserInputError
        If there is no such version.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> get_version(Warehouse(":memory:"), "v9")
    Traceback (most recent call last):
    ...
    segmint.errors.UserInputError: version: no model version v0009 (none published yet)
    """
    wanted = normalise_version(version)
    rows = wh.fetchall(_select_models('WHERE "version" = ?'), [wanted]) if _has_models(wh) else []
    if not rows:
        known = list_versions(wh)["version"].tolist()
        hint = f"known: {', '.join(known)}" if known else "none published yet"
        raise UserInputError(f"no model version {wanted} ({hint})", where="version")
    return _version_from_row(rows[0])


def active_version(wh: Warehouse) -> ModelVersion | None:
    """The version in use, or None before the first (activated) publication."""
    if not _has_models(wh):
        return None
    rows = wh.fetchall(_select_models('WHERE "status" = ?'), [ACTIVE])
    return _version_from_row(rows[0]) if rows else None


def rollback(wh: Warehouse, version: str | int) -> ModelVersion:
    """Make an earlier (or any published) version the active one again.

    Nothing is recomputed: the version's assignments were kept when later
    versions were published, and :func:`current_assignments` returns them.

    Raises
    ------
    UserInputError
        If there is no such version.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> spec = ScoringSpec(kind="centroid", feature_names=("x",), centers=((0.0,),),
    ...                    segment_ids=(0,))
    >>> for _ in range(2):
    ...     _ = publish_version(wh, spec=spec, inputs={"x": "v"}, lineage=Lineage(),
    ...                         names=None, algorithm="kmeans", k=1)
    >>> rollback(wh, "v1").version, active_version(wh).version
    ('v0001', 'v0001')
    """
    target = get_version(wh, version)
    with wh.transaction():
        _activate(wh, target.version)
    logger.info("model %s is active again (rollback)", target.version)
    return get_version(wh, target.version)


def current_assignments(wh: Warehouse) -> pd.DataFrame:
    """The active version's assignments, one row per customer (pulled into memory).

    Returns
    -------
    pandas.DataFrame
        Columns ``customer_id``, ``segment_id``, ``segment_name``,
        ``probability``, ``distance``, ``assigned_at``, ``model_version``,
        ordered by ``customer_id``.

    Raises
    ------
    UserInputError
        If no version is active.
    """
    active = active_version(wh)
    if active is None:
        raise UserInputError("no model version is active; publish one first", where="models")
    return _assignments(wh, active.version)


def _assignments(wh: Warehouse, version: str) -> pd.DataFrame:
    if not wh.has_table(SEGMENT_ASSIGNMENTS.name):
        return pd.DataFrame(columns=list(_ASSIGNMENT_COLUMNS))
    columns = ", ".join(quote(c) for c in _ASSIGNMENT_COLUMNS)
    return wh.df(
        f"SELECT {columns} FROM {quote(SEGMENT_ASSIGNMENTS.name)} "
        'WHERE "model_version" = ? ORDER BY "customer_id"',
        [version],
    )


def segment_sizes(wh: Warehouse, version: str | int) -> dict[int | None, int]:
    """Customers per segment of a version (``None`` = inputs missing), counted in SQL.

    Raises
    ------
    UserInputError
        If there is no such version.
    """
    model = get_version(wh, version)
    if not wh.has_table(SEGMENT_ASSIGNMENTS.name):
        return {}
    rows = wh.fetchall(
        f'SELECT "segment_id", count(*) FROM {quote(SEGMENT_ASSIGNMENTS.name)} '
        'WHERE "model_version" = ? GROUP BY 1 ORDER BY 1 NULLS LAST',
        [model.version],
    )
    return {None if s is None else int(s): int(n) for s, n in rows}


# ------------------------------------------------------------- comparing
def _diff_mapping(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> dict[Any, dict[str, Any]]:
    keys = list(a) + [key for key in b if key not in a]
    return {key: {"a": a.get(key), "b": b.get(key)} for key in keys if a.get(key) != b.get(key)}


def diff_versions(wh: Warehouse, a: str | int, b: str | int) -> dict[str, Any]:
    """What differs between two versions; only aspects that differ are present.

    Scalar aspects (``algorithm``, ``k``, ``seed``, ``data_fingerprint``,
    ``as_of``, ``training_window``, ``kind``) map to ``{"a": ..., "b": ...}``.
    Mapping aspects (``parameters``, ``features``, ``transforms``,
    ``metrics``, ``libraries``, ``names``, ``descriptions``, ``segment_sizes``)
    map each differing key to ``{"a": ..., "b": ...}``, with ``None`` where a
    version lacks the key. ``inputs`` compares the SQL of the transformed
    inputs the same way.

    Raises
    ------
    UserInputError
        If either version does not exist.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> spec = ScoringSpec(kind="centroid", feature_names=("x",), centers=((0.0,),),
    ...                    segment_ids=(0,))
    >>> for seed in (1, 2):
    ...     _ = publish_version(wh, spec=spec, inputs={"x": "v"}, lineage=Lineage(seed=seed),
    ...                         names=None, algorithm="kmeans", k=1)
    >>> diff_versions(wh, "v1", "v2")
    {'seed': {'a': 1, 'b': 2}}
    """
    va, vb = get_version(wh, a), get_version(wh, b)
    la, lb = va.lineage, vb.lineage
    scalars = {
        "algorithm": (va.algorithm, vb.algorithm),
        "k": (va.k, vb.k),
        "kind": (va.spec.kind, vb.spec.kind),
        "seed": (la.seed, lb.seed),
        "data_fingerprint": (la.data_fingerprint, lb.data_fingerprint),
        "as_of": (la.as_of, lb.as_of),
        "training_window": (la.training_window, lb.training_window),
    }
    out: dict[str, Any] = {key: {"a": x, "b": y} for key, (x, y) in scalars.items() if x != y}
    mappings: dict[str, tuple[Mapping[Any, Any], Mapping[Any, Any]]] = {
        "parameters": (la.parameters, lb.parameters),
        "features": (la.features, lb.features),
        "transforms": (la.transforms, lb.transforms),
        "inputs": (va.inputs, vb.inputs),
        "metrics": (la.metrics, lb.metrics),
        "libraries": (la.libraries, lb.libraries),
        "names": (
            {s: va.name_of(s) for s in va.spec.possible_segment_ids},
            {s: vb.name_of(s) for s in vb.spec.possible_segment_ids},
        ),
        "descriptions": (
            {s: n.description for s, n in va.names.items() if n.description},
            {s: n.description for s, n in vb.names.items() if n.description},
        ),
        "segment_sizes": (segment_sizes(wh, va.version), segment_sizes(wh, vb.version)),
    }
    for key, (x, y) in mappings.items():
        changed = _diff_mapping(x, y)
        if changed:
            out[key] = changed
    return out


def _segment_order(ids: Sequence[int]) -> list[int]:
    """Regular segments ascending, then the unassigned segment ``-1``."""
    return sorted(i for i in ids if i >= 0) + [i for i in ids if i < 0]


def migration_matrix(wh: Warehouse, a: str | int, b: str | int) -> pd.DataFrame:
    """How customers moved between the segments of version ``a`` and version ``b``.

    Counted in SQL (a full outer join of both versions' assignments on the
    customer, then ``GROUP BY``).

    Returns
    -------
    pandas.DataFrame
        Rows: segments of ``a`` (every segment the model can assign, in id
        order with ``-1`` last), ``"(unscored)"`` when some customer had missing
        inputs, and ``"(new)"`` (customers only in ``b``). Columns: segments
        of ``b`` likewise, and ``"(gone)"`` (customers only in ``a``). Cells
        are customer counts. The index is named after ``a``, the columns after ``b``.

    Raises
    ------
    UserInputError
        If either version does not exist.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE f AS SELECT * FROM (VALUES ('a', 1.0), ('b', 8.0)) "
    ...            "t(customer_id, v)")
    >>> spec = ScoringSpec(kind="centroid", feature_names=("x",),
    ...                    centers=((0.0,), (10.0,)), segment_ids=(0, 1))
    >>> for _ in range(2):
    ...     _ = publish_version(wh, spec=spec, inputs={"x": "v"}, lineage=Lineage(),
    ...                         names=None, algorithm="kmeans", k=2, source="f")
    >>> migration_matrix(wh, "v1", "v2").values.tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    """
    va, vb = get_version(wh, a), get_version(wh, b)
    counts: dict[tuple[Any, Any], int] = {}
    if wh.has_table(SEGMENT_ASSIGNMENTS.name):
        table = quote(SEGMENT_ASSIGNMENTS.name)
        rows = wh.fetchall(
            f'WITH a AS (SELECT "customer_id", "segment_id" FROM {table} '
            'WHERE "model_version" = ?), '
            f'b AS (SELECT "customer_id", "segment_id" FROM {table} WHERE "model_version" = ?) '
            "SELECT a.customer_id IS NULL AS only_b, a.segment_id AS seg_a, "
            "b.customer_id IS NULL AS only_a, b.segment_id AS seg_b, count(*) AS n "
            "FROM a FULL OUTER JOIN b ON a.customer_id = b.customer_id "
            "GROUP BY ALL",
            [va.version, vb.version],
        )
        for only_b, seg_a, only_a, seg_b, n in rows:
            row = NEW if only_b else (UNSCORED if seg_a is None else int(seg_a))
            col = GONE if only_a else (UNSCORED if seg_b is None else int(seg_b))
            counts[(row, col)] = int(n)
    row_labels: list[Any] = _segment_order(
        sorted(set(va.spec.possible_segment_ids) | {r for r, _ in counts if isinstance(r, int)})
    )
    col_labels: list[Any] = _segment_order(
        sorted(set(vb.spec.possible_segment_ids) | {c for _, c in counts if isinstance(c, int)})
    )
    if any(r == UNSCORED for r, _ in counts):
        row_labels.append(UNSCORED)
    if any(c == UNSCORED for _, c in counts):
        col_labels.append(UNSCORED)
    row_labels.append(NEW)
    col_labels.append(GONE)
    matrix = pd.DataFrame(
        [[counts.get((r, c), 0) for c in col_labels] for r in row_labels],
        index=pd.Index(row_labels, name=va.version, dtype=object),
        columns=pd.Index(col_labels, name=vb.version, dtype=object),
        dtype=np.int64,
    )
    return matrix


# ----------------------------------------------------------- fingerprint
def data_fingerprint(wh: Warehouse, tables: Sequence[str]) -> str:
    """A cheap fingerprint of input tables, computed in SQL.

    Per table: the row count and the sum (as a 128-bit integer, so
    order-independent and without cancellation of duplicates) of DuckDB's
    ``hash`` of each row's key and timestamp columns, as declared in the
    canonical schema; tables without a declared key (e.g. ``features``) hash
    the whole row. The fingerprint is the SHA-256 of those figures.

    It changes when rows are added or removed, or when a key or timestamp
    value changes (any value for tables hashed whole). It does **not** change
    when rows are reordered or re-ingested identically, nor when a non-key,
    non-timestamp column is edited in a table with a declared key (sources
    record changes in their timestamp column). DuckDB's ``hash`` may change
    between DuckDB versions, which lineage records; compare fingerprints only
    within one DuckDB version.

    Parameters
    ----------
    wh
        The warehouse.
    tables
        Table names (order does not matter).

    Returns
    -------
    str
        64 hexadecimal characters.

    Raises
    ------
    UserInputError
        If a table does not exist.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE t AS SELECT 1 AS x")
    >>> len(data_fingerprint(wh, ["t"]))
    64
    """
    figures = []
    for name in sorted(set(tables)):
        if not wh.has_table(name):
            raise UserInputError(f"no table {name!r} to fingerprint", where="tables")
        present = set(wh.columns(name))
        declared = TABLES.get(name)
        hashed: list[str] = []
        if declared is not None and declared.key:
            hashed = [c for c in declared.key if c in present]
            if declared.timestamp_column and declared.timestamp_column in present:
                hashed.append(declared.timestamp_column)
        row_hash = f"hash({', '.join('t.' + quote(c) for c in hashed)})" if hashed else "hash(t)"
        count, total = wh.fetchall(
            f"SELECT count(*), coalesce(sum({row_hash}), 0) FROM {quote(name)} AS t"
        )[0]
        figures.append([name, int(count), str(total), hashed])
    digest = hashlib.sha256(json.dumps(figures, separators=(",", ":")).encode("utf-8"))
    return digest.hexdigest()
