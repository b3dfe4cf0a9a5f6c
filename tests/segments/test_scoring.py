"""Tests of model compilation to SQL and in-engine scoring (segmint.segments.scoring)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from segmint.data.schema import TABLES
from segmint.engine import Warehouse
from segmint.engine.dialect import transpile
from segmint.errors import DataValidationError, EngineError, NotFittedError, UserInputError
from segmint.segments.estimators import (
    UNASSIGNED,
    DensitySegmenter,
    FuzzyCMeansSegmenter,
    GaussianMixtureSegmenter,
    KMeansSegmenter,
    WardSegmenter,
    squared_distances,
)
from segmint.segments.scoring import (
    SEGMENT_ASSIGNMENTS,
    ScoringSpec,
    compile_scoring_sql,
    score_in_engine,
    spec_from_model,
)

SEED = 20240917

PROPERTY_SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Estimator factories by name, called with (number of clusters, number of features).
FACTORIES: dict[str, Callable[[int, int], Any]] = {
    "kmeans": lambda k, d: KMeansSegmenter(n_clusters=k, random_state=SEED),
    "ward": lambda k, d: WardSegmenter(n_clusters=k, sample_size=60, random_state=SEED),
    "fcm": lambda k, d: FuzzyCMeansSegmenter(n_clusters=k, random_state=SEED),
    "hdbscan": lambda k, d: DensitySegmenter(
        min_cluster_size=8, radius_quantile=0.8, random_state=SEED
    ),
    "dbscan": lambda k, d: DensitySegmenter(
        method="dbscan",
        eps=0.9 * d**0.5 + 0.3,
        min_samples=4,
        min_cluster_size=6,
        random_state=SEED,
    ),
    "gmm-full": lambda k, d: GaussianMixtureSegmenter(n_components=k, random_state=SEED),
    "gmm-tied": lambda k, d: GaussianMixtureSegmenter(
        n_components=k, covariance_type="tied", random_state=SEED
    ),
    "gmm-diag": lambda k, d: GaussianMixtureSegmenter(
        n_components=k, covariance_type="diag", random_state=SEED
    ),
    "gmm-spherical": lambda k, d: GaussianMixtureSegmenter(
        n_components=k, covariance_type="spherical", random_state=SEED
    ),
}


@pytest.fixture
def wh() -> Iterator[Warehouse]:
    warehouse = Warehouse(":memory:")
    yield warehouse
    warehouse.close()


@pytest.fixture(scope="module")
def shared_wh() -> Iterator[Warehouse]:
    warehouse = Warehouse(":memory:")
    yield warehouse
    warehouse.close()


def _register(wh: Warehouse, X: np.ndarray, name: str = "raw") -> list[str]:
    """Expose rows as table ``name`` (ids c0, c1, ... and columns f0, f1, ...)."""
    ids = [f"c{i}" for i in range(X.shape[0])]
    columns = {f"f{j}": pa.array(X[:, j], type=pa.float64()) for j in range(X.shape[1])}
    wh.register(name, pa.table({"customer_id": ids, **columns}))
    return ids


def _identity_inputs(spec: ScoringSpec) -> dict[str, str]:
    return {name: f'"f{j}"' for j, name in enumerate(spec.feature_names)}


def _sql_scores(
    wh: Warehouse, spec: ScoringSpec, X: np.ndarray, inputs: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score X in DuckDB; segment ids (-2 for NULL), distances and probabilities (NaN = NULL)."""
    _register(wh, X)
    sql = compile_scoring_sql(spec, inputs or _identity_inputs(spec), source="raw")
    table = wh.arrow(sql + ' ORDER BY CAST(substr("customer_id", 2) AS INTEGER)')
    segment = np.array([-2 if v is None else v for v in table["segment_id"].to_pylist()])
    distance = np.array([np.nan if v is None else v for v in table["distance"].to_pylist()])
    probability = np.array([np.nan if v is None else v for v in table["probability"].to_pylist()])
    return segment, distance, probability


def _blobs(seed: int, n_features: int, n_centers: int, n_rows: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-6.0, 6.0, size=(n_centers, n_features))
    picks = rng.integers(0, n_centers, size=n_rows)
    return centers[picks] + rng.normal(0.0, 1.0, size=(n_rows, n_features))


# ----------------------------------------------------------- the property
@pytest.mark.parametrize("name", sorted(FACTORIES))
@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_features=st.sampled_from([1, 2, 3, 5, 8, 9, 17]),
    n_clusters=st.integers(1, 4),
    n_rows=st.integers(40, 90),
)
def test_engine_scoring_equals_the_fitted_model(
    wh: Warehouse, name: str, seed: int, n_features: int, n_clusters: int, n_rows: int
) -> None:
    X = _blobs(seed, n_features, n_clusters, n_rows)
    model = FACTORIES[name](n_clusters, n_features).fit(X)
    spec = spec_from_model(model)
    # training rows plus new rows spread wider than the training data
    rng = np.random.default_rng(seed + 1)
    rows = np.vstack([X, rng.normal(0.0, 8.0, size=(30, n_features))])
    expected = model.predict(rows)

    labels, score = spec.predict(rows)
    np.testing.assert_array_equal(labels, expected)

    segment, distance, probability = _sql_scores(wh, spec, rows)
    np.testing.assert_array_equal(segment, expected)

    python = spec.score(rows)
    if spec.kind == "gaussian_mixture":
        assert np.isnan(distance).all()
        np.testing.assert_allclose(probability, python.probability, rtol=0, atol=1e-12)
        posterior = model.predict_proba(rows).max(axis=1)
        np.testing.assert_allclose(probability, posterior, rtol=0, atol=1e-9)
        np.testing.assert_allclose(score, posterior, rtol=0, atol=1e-9)
        return
    # same operations in the same order: bit-identical distances
    np.testing.assert_array_equal(distance, python.distance)
    if spec.n_segments:
        nearest = np.sqrt(squared_distances(rows, model.cluster_centers_).min(axis=1))
        np.testing.assert_allclose(distance, nearest, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(score, distance)
    else:
        assert (segment == UNASSIGNED).all() and np.isnan(distance).all()
    if isinstance(model, FuzzyCMeansSegmenter):
        membership = model.predict_proba(rows).max(axis=1)
        np.testing.assert_allclose(probability, membership, rtol=0, atol=1e-9)
    else:
        assert np.isnan(probability).all()


def test_many_features_use_numpy_summation_order_exactly(wh: Warehouse) -> None:
    # 130 features: numpy splits sums of more than 128 items in halves
    X = _blobs(SEED, 130, 3, 60)
    model = KMeansSegmenter(n_clusters=3, random_state=SEED).fit(X)
    spec = spec_from_model(model)
    rows = np.vstack([X, np.random.default_rng(SEED).normal(0.0, 5.0, size=(20, 130))])
    segment, distance, _ = _sql_scores(wh, spec, rows)
    np.testing.assert_array_equal(segment, model.predict(rows))
    np.testing.assert_array_equal(distance, spec.score(rows).distance)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    center=st.floats(min_value=-1e150, max_value=1e150, allow_nan=False, allow_subnormal=False),
    x=st.floats(min_value=-1e150, max_value=1e150, allow_nan=False, allow_subnormal=False),
)
def test_numbers_keep_full_precision_in_sql(shared_wh: Warehouse, center: float, x: float) -> None:
    spec = ScoringSpec(
        kind="centroid", feature_names=("v",), centers=((center,), (0.0,)), segment_ids=(0, 1)
    )
    segment, distance, _ = _sql_scores(shared_wh, spec, np.array([[x]]))
    expected = spec.score(np.array([[x]]))
    assert segment.tolist() == expected.segment_id.tolist()
    assert distance.tolist() == expected.distance.tolist()


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_decimal_looking_numbers_are_read_back_exactly(shared_wh: Warehouse, seed: int) -> None:
    # numbers like 0.30000000000000004 would be DECIMAL literals, and a DECIMAL
    # converted to DOUBLE is not always the nearest double
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-1.0, 1.0, size=(3, 40)) * 10.0 ** rng.integers(-3, 15, size=(3, 40))
    spec = ScoringSpec(
        kind="centroid",
        feature_names=tuple(f"x{j}" for j in range(40)),
        centers=centers.tolist(),
        segment_ids=(0, 1, 2),
    )
    rows = np.vstack([np.zeros(40), centers, rng.normal(size=(5, 40))])
    _, distance, _ = _sql_scores(shared_wh, spec, rows)
    np.testing.assert_array_equal(distance, spec.score(rows).distance)
    # a row exactly on a centre is at distance 0: every coordinate was read back exactly
    assert distance[1:4].tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------- ties
def test_ties_go_to_the_lowest_index_like_the_model(wh: Warehouse) -> None:
    # three training points, three clusters: the centres are the points
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    model = KMeansSegmenter(n_clusters=3, random_state=SEED).fit(X)
    rows = np.array([[0.0, 0.0], [0.0, -5.0], [5.0, 0.0], [-5.0, 0.0]])
    # (0, 0) is at distance 1 from all three; (0, -5) ties the two x-axis centres
    d2 = squared_distances(rows, model.cluster_centers_)
    assert (d2[0] == 1.0).all() and d2[1, :].tolist().count(26.0) == 2
    expected = model.predict(rows)
    segment, distance, _ = _sql_scores(wh, spec_from_model(model), rows)
    assert segment.tolist() == expected.tolist()
    assert segment[0] == 0
    assert distance[0] == 1.0


def test_radius_boundary_is_inside_and_beyond_is_unassigned(wh: Warehouse) -> None:
    spec = ScoringSpec(
        kind="centroid_radius",
        feature_names=("a",),
        centers=((0.0,), (10.0,)),
        radius=(2.0, 1.0),
        segment_ids=(4, 7),
    )
    rows = np.array([[2.0], [2.0000000001], [5.0], [9.0], [11.5]])
    expected = [4, UNASSIGNED, UNASSIGNED, 7, UNASSIGNED]
    assert spec.score(rows).segment_id.tolist() == expected
    segment, distance, _ = _sql_scores(wh, spec, rows)
    assert segment.tolist() == expected
    assert distance.tolist() == [2.0, 2.0000000001, 5.0, 1.0, 1.5]


def test_mixture_tie_and_posterior_in_sql(wh: Warehouse) -> None:
    # two mirror-image components with equal weights: x = 0 is an exact tie
    spec = ScoringSpec(
        kind="gaussian_mixture",
        feature_names=("a",),
        centers=((-1.0,), (1.0,)),
        segment_ids=(0, 1),
        weights=(0.5, 0.5),
        precisions_cholesky=(((2.0,),), ((2.0,),)),
        log_det=(float(np.log(2.0)), float(np.log(2.0))),
        covariance_type="spherical",
    )
    rows = np.array([[0.0], [0.5], [-3.0]])
    segment, distance, probability = _sql_scores(wh, spec, rows)
    assert segment.tolist() == [0, 1, 0]
    assert probability[0] == 0.5
    assert np.isnan(distance).all()
    # posterior of component 1 at 0.5: logistic of the log-density difference
    expected = 1.0 / (1.0 + np.exp(-0.5 * 4.0 * (1.5**2 - 0.5**2)))
    assert probability[1] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(probability, spec.score(rows).probability, atol=1e-12)


def test_fuzzy_probability_on_a_centre_is_shared_equally(wh: Warehouse) -> None:
    spec = ScoringSpec(
        kind="centroid",
        feature_names=("a",),
        centers=((0.0,), (0.0,), (4.0,)),
        segment_ids=(0, 1, 2),
        fuzzifier=2.0,
    )
    rows = np.array([[0.0], [4.0], [1.0]])
    segment, _, probability = _sql_scores(wh, spec, rows)
    assert segment.tolist() == [0, 2, 0]
    assert probability[:2].tolist() == [0.5, 1.0]
    # memberships at distance 1, 1 and 3 with m = 2: (1, 1, 1/9) / (2 + 1/9)
    assert probability[2] == pytest.approx(1.0 / (2.0 + 1.0 / 9.0), abs=1e-12)
    np.testing.assert_allclose(probability, spec.score(rows).probability, atol=1e-12)


# ------------------------------------------------------------ missing values
@pytest.mark.parametrize("name", ["kmeans", "fcm", "hdbscan", "gmm-full"])
def test_missing_inputs_give_a_null_segment(wh: Warehouse, name: str) -> None:
    X = _blobs(SEED, 2, 2, 60)
    spec = spec_from_model(FACTORIES[name](2, 2).fit(X))
    wh.execute(
        "CREATE TABLE raw AS SELECT * FROM (VALUES "
        "('ok', 0.5, 0.5), ('null', NULL, 1.0), ('nan', 'NaN'::DOUBLE, 1.0), "
        "('inf', 1.0, '-Infinity'::DOUBLE)) t(customer_id, f0, f1)"
    )
    sql = compile_scoring_sql(spec, _identity_inputs(spec), source="raw")
    rows = {r[0]: r[1:] for r in wh.fetchall(sql)}
    assert rows["null"] == rows["nan"] == rows["inf"] == (None, None, None)
    assert rows["ok"][0] == spec.predict(np.array([[0.5, 0.5]]))[0][0]
    with pytest.raises(DataValidationError):
        spec.score(np.array([[np.nan, 1.0]]))


# ------------------------------------------------------------------ inputs
def test_inputs_are_sql_expressions_over_raw_columns(wh: Warehouse) -> None:
    raw = _blobs(SEED, 2, 3, 80) * 10.0 + 50.0
    transformed = np.column_stack([(raw[:, 0] - 50.0) / 10.0, np.log1p(np.abs(raw[:, 1]))])
    model = KMeansSegmenter(n_clusters=3, random_state=SEED).fit(transformed)
    spec = spec_from_model(model, feature_names=["spend_z", "log_visits"])
    inputs = {"spend_z": '("f0" - 50) / 10', "log_visits": 'LN(1 + ABS("f1"))'}
    segment, _, _ = _sql_scores(wh, spec, raw, inputs)
    # LN in the engine and log1p in numpy may differ in the last bit
    agree = (segment == model.predict(transformed)).mean()
    assert agree >= 0.99


def test_inputs_must_name_the_features_in_order() -> None:
    spec = ScoringSpec(
        kind="centroid", feature_names=("a", "b"), centers=((0.0, 0.0),), segment_ids=(0,)
    )
    for bad in ({"a": "x"}, {"b": "y", "a": "x"}, {"a": "x", "b": "y", "c": "z"}):
        with pytest.raises(UserInputError, match="inputs"):
            compile_scoring_sql(spec, bad, source="t")


@pytest.mark.parametrize(
    "expression",
    [
        "1) AS a FROM customers; DROP TABLE customers; SELECT (1",
        "1) FROM customers WHERE (1",
        "(SELECT max(x) FROM customers)",
        "1 -- comment",
        "",
    ],
)
def test_inputs_that_are_not_one_scalar_expression_are_rejected(expression: str) -> None:
    spec = ScoringSpec(kind="centroid", feature_names=("a",), centers=((0.0,),), segment_ids=(0,))
    with pytest.raises(UserInputError, match=r"inputs\.a"):
        compile_scoring_sql(spec, {"a": expression}, source="t")


def test_compiled_sql_transpiles_to_spark() -> None:
    X = _blobs(SEED, 3, 3, 60)
    for name in ("kmeans", "fcm", "hdbscan", "gmm-full"):
        spec = spec_from_model(FACTORIES[name](3, 3).fit(X))
        inputs = {f: f'CAST("f{j}" AS DOUBLE) / 2' for j, f in enumerate(spec.feature_names)}
        spark = transpile(compile_scoring_sql(spec, inputs, source="features"), "spark")
        parsed = sqlglot.parse_one(spark, read="spark")
        assert isinstance(parsed, sqlglot.exp.Select)
        assert "::" not in spark and '"' not in spark


# ------------------------------------------------------------------- spec
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_spec_round_trips_through_json_without_loss(name: str) -> None:
    X = _blobs(SEED, 3, 3, 80)
    model = FACTORIES[name](3, 3).fit(X)
    spec = spec_from_model(model)
    again = ScoringSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    np.testing.assert_array_equal(again.predict(X)[0], model.predict(X))
    np.testing.assert_array_equal(np.asarray(again.centers), model.cluster_centers_)


def test_spec_uses_the_names_the_model_was_fitted_with() -> None:
    import pandas as pd

    frame = pd.DataFrame(_blobs(SEED, 2, 2, 40), columns=["recency", "monetary"])
    model = KMeansSegmenter(n_clusters=2, random_state=SEED).fit(frame)
    spec = spec_from_model(model)
    assert spec.feature_names == ("recency", "monetary")
    # a frame is reordered by name
    np.testing.assert_array_equal(
        spec.predict(frame[["monetary", "recency"]])[0], model.predict(frame)
    )
    with pytest.raises(UserInputError, match="differ"):
        spec_from_model(model, feature_names=["monetary", "recency"])


def test_spec_from_model_rejects_other_estimators_and_unfitted_models() -> None:
    X = _blobs(SEED, 2, 2, 30)
    with pytest.raises(UserInputError, match="cannot compile a KMeans"):
        spec_from_model(KMeans(n_clusters=2, n_init=1).fit(X))
    with pytest.raises(NotFittedError):
        spec_from_model(KMeansSegmenter(n_clusters=2))


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"kind": "tree"}, "kind"),
        ({"centers": ((0.0, 1.0),)}, "centers"),
        ({"centers": ((float("nan"),),)}, "centers"),
        ({"segment_ids": (-1,)}, "segment_ids"),
        ({"radius": (1.0,)}, "radius"),
        ({"fuzzifier": 1.0}, "fuzzifier"),
    ],
)
def test_invalid_specs_are_rejected(changes: dict[str, Any], where: str) -> None:
    fields: dict[str, Any] = {
        "kind": "centroid",
        "feature_names": ("a",),
        "centers": ((0.0,),),
        "segment_ids": (0,),
    }
    with pytest.raises(UserInputError) as info:
        ScoringSpec(**{**fields, **changes})
    assert info.value.where == where


def test_from_dict_rejects_unknown_formats_and_keys() -> None:
    good = ScoringSpec(
        kind="centroid", feature_names=("a",), centers=((0.0,),), segment_ids=(0,)
    ).to_dict()
    with pytest.raises(UserInputError, match="format"):
        ScoringSpec.from_dict({**good, "format": 99})
    with pytest.raises(UserInputError, match="unknown keys"):
        ScoringSpec.from_dict({**good, "pickle": "x"})


def test_density_model_without_clusters_marks_everyone_unassigned(wh: Warehouse) -> None:
    spec = ScoringSpec(
        kind="centroid_radius", feature_names=("a",), centers=(), segment_ids=(), radius=()
    )
    segment, distance, _ = _sql_scores(wh, spec, np.array([[1.0], [2.0]]))
    assert segment.tolist() == [UNASSIGNED, UNASSIGNED]
    assert spec.score(np.array([[1.0]])).segment_id.tolist() == [UNASSIGNED]
    assert np.isnan(distance).all()


# -------------------------------------------------------------- the engine
def test_score_in_engine_writes_assignments(wh: Warehouse) -> None:
    spec = ScoringSpec(
        kind="centroid_radius",
        feature_names=("a",),
        centers=((0.0,), (10.0,)),
        radius=(3.0, 3.0),
        segment_ids=(0, 1),
    )
    wh.execute(
        "CREATE TABLE people AS SELECT * FROM (VALUES (1, 1.0), (2, 9.0), (3, 5.0), (4, NULL))"
        " t(person_id, v)"
    )
    at = datetime(2025, 3, 1, 12, 0)
    count = score_in_engine(
        wh,
        spec,
        {"a": '"v"'},
        source="people",
        id_column="person_id",
        model_version="v0001",
        names={0: "Casual", 1: "Loyal"},
        assigned_at=at,
    )
    assert count == 4
    rows = wh.fetchall(
        "SELECT customer_id, model_version, segment_id, segment_name, distance, probability, "
        "assigned_at FROM segment_assignments ORDER BY customer_id"
    )
    assert rows == [
        ("1", "v0001", 0, "Casual", 1.0, None, at),
        ("2", "v0001", 1, "Loyal", 1.0, None, at),
        ("3", "v0001", -1, "Unassigned", 5.0, None, at),
        ("4", "v0001", None, None, None, None, at),
    ]
    assert TABLES["segment_assignments"] is SEGMENT_ASSIGNMENTS


def test_scoring_a_version_again_replaces_only_that_version(wh: Warehouse) -> None:
    spec = ScoringSpec(
        kind="centroid", feature_names=("a",), centers=((0.0,), (10.0,)), segment_ids=(0, 1)
    )
    wh.execute("CREATE TABLE f AS SELECT * FROM (VALUES ('a', 1.0), ('b', 8.0)) t(customer_id, v)")
    score_in_engine(wh, spec, {"a": "v"}, source="f", model_version="v0001")
    score_in_engine(wh, spec, {"a": "v"}, source="f", model_version="v0002")
    wh.execute("UPDATE f SET v = 9.5 WHERE customer_id = 'a'")
    assert score_in_engine(wh, spec, {"a": "v"}, source="f", model_version="v0002") == 2
    rows = wh.fetchall(
        "SELECT model_version, customer_id, segment_id FROM segment_assignments ORDER BY 1, 2"
    )
    assert rows == [
        ("v0001", "a", 0),
        ("v0001", "b", 1),
        ("v0002", "a", 1),
        ("v0002", "b", 1),
    ]


def test_failed_scoring_leaves_earlier_assignments_intact(wh: Warehouse) -> None:
    spec = ScoringSpec(kind="centroid", feature_names=("a",), centers=((0.0,),), segment_ids=(0,))
    wh.execute("CREATE TABLE f AS SELECT 'a' AS customer_id, 1.0 AS v")
    score_in_engine(wh, spec, {"a": "v"}, source="f", model_version="v0001")
    with pytest.raises(EngineError):
        score_in_engine(wh, spec, {"a": "no_such_column"}, source="f", model_version="v0001")
    assert wh.fetchall("SELECT customer_id, model_version FROM segment_assignments") == [
        ("a", "v0001")
    ]
