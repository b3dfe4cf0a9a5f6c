"""Tests of the model registry (segmint.segments.registry)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segmint.data.schema import TABLES
from segmint.engine import Warehouse
from segmint.errors import EngineError, UserInputError
from segmint.segments.estimators import KMeansSegmenter
from segmint.segments.registry import (
    GONE,
    NEW,
    UNSCORED,
    Lineage,
    SegmentName,
    active_version,
    current_assignments,
    data_fingerprint,
    diff_versions,
    get_version,
    list_versions,
    migration_matrix,
    normalise_version,
    publish_version,
    rollback,
    segment_sizes,
)
from segmint.segments.scoring import ScoringSpec, spec_from_model

SEED = 20240917
AT = datetime(2025, 1, 31, 6, 0)


@pytest.fixture
def wh() -> Iterator[Warehouse]:
    warehouse = Warehouse(":memory:")
    yield warehouse
    warehouse.close()


def _line_spec(*centers: float) -> ScoringSpec:
    """A one-feature nearest-centroid model with the given centres."""
    return ScoringSpec(
        kind="centroid",
        feature_names=("x",),
        centers=tuple((c,) for c in centers),
        segment_ids=tuple(range(len(centers))),
    )


def _values(wh: Warehouse, name: str, values: dict[str, float | None]) -> None:
    """A table ``name`` of (customer_id, v)."""
    wh.execute(f'CREATE OR REPLACE TABLE "{name}" (customer_id VARCHAR, v DOUBLE)')
    for customer, value in values.items():
        wh.execute(f'INSERT INTO "{name}" VALUES (?, ?)', [customer, value])


def _publish_line(
    wh: Warehouse, source: str, *centers: float, activate: bool = True, **lineage: object
) -> str:
    return publish_version(
        wh,
        spec=_line_spec(*centers),
        inputs={"x": "v"},
        lineage=Lineage(**lineage),  # type: ignore[arg-type]
        names=None,
        algorithm="kmeans",
        k=len(centers),
        activate=activate,
        source=source,
        assigned_at=AT,
    )


@pytest.fixture
def two_versions(wh: Warehouse) -> tuple[Warehouse, str, str]:
    """Two k-means versions on a features table: k=2 on (a, b), then k=3 on (a, b, c)."""
    rng = np.random.default_rng(SEED)
    centers = np.array([[0, 0, 0], [6, 6, 0], [0, 6, 6]], dtype=float)
    X = centers[rng.integers(0, 3, 120)] + rng.normal(0, 0.7, (120, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame.insert(0, "customer_id", [f"c{i:03d}" for i in range(len(frame))])
    wh.register("frame", frame)
    wh.execute("CREATE TABLE features AS SELECT * FROM frame")
    wh.unregister("frame")
    first = KMeansSegmenter(n_clusters=2, random_state=SEED).fit(frame[["a", "b"]])
    second = KMeansSegmenter(n_clusters=3, random_state=SEED).fit(frame[["a", "b", "c"]])
    v1 = publish_version(
        wh,
        spec=spec_from_model(first),
        inputs={"a": '"a"', "b": '"b"'},
        lineage=Lineage(
            parameters={"n_clusters": 2, "n_init": "auto"},
            seed=SEED,
            features={"a": "sum(amount)", "b": "count(*)"},
            metrics={"silhouette": 0.41},
            data_fingerprint=data_fingerprint(wh, ["features"]),
            training_window=(datetime(2024, 1, 1), datetime(2024, 12, 31)),
        ),
        names={0: "Casual", 1: SegmentName("Loyal", "Buys often")},
        algorithm="kmeans",
        k=2,
        source="features",
        assigned_at=AT,
    )
    v2 = publish_version(
        wh,
        spec=spec_from_model(second),
        inputs={"a": '"a"', "b": '"b"', "c": '"c"'},
        lineage=Lineage(
            parameters={"n_clusters": 3, "n_init": "auto"},
            seed=SEED,
            features={"a": "sum(amount)", "b": "count(*)", "c": "max(days)"},
            metrics={"silhouette": 0.55},
            data_fingerprint=data_fingerprint(wh, ["features"]),
            training_window=(datetime(2024, 1, 1), datetime(2024, 12, 31)),
        ),
        names={0: "Casual", 1: "Loyal", 2: "Browsers"},
        algorithm="kmeans",
        k=3,
        source="features",
        assigned_at=AT,
    )
    return wh, v1, v2


# --------------------------------------------------------------- publishing
def test_versions_are_listed_in_order_with_one_active(two_versions: tuple) -> None:
    wh, v1, v2 = two_versions
    assert (v1, v2) == ("v0001", "v0002")
    listing = list_versions(wh)
    assert listing["version"].tolist() == ["v0001", "v0002"]
    assert listing["status"].tolist() == ["inactive", "active"]
    assert listing["k"].tolist() == [2, 3]
    assert listing["customers"].tolist() == [120, 120]
    assert listing["parent_version"].tolist()[1] == "v0001"
    assert pd.isna(listing["parent_version"].tolist()[0])
    assert active_version(wh).version == "v0002"  # type: ignore[union-attr]


def test_a_version_keeps_spec_inputs_names_and_lineage(two_versions: tuple) -> None:
    wh, v1, _ = two_versions
    model = get_version(wh, v1)
    assert model.k == 2 and model.algorithm == "kmeans" and not model.active
    assert model.inputs == {"a": '"a"', "b": '"b"'}
    assert model.spec.feature_names == ("a", "b")
    assert model.names[1] == SegmentName("Loyal", "Buys often")
    assert model.name_of(0) == "Casual"
    assert model.lineage.seed == SEED
    assert model.lineage.training_window == ("2024-01-01T00:00:00", "2024-12-31T00:00:00")
    assert model.lineage.features == {"a": "sum(amount)", "b": "count(*)"}
    assert model.lineage.algorithm == "kmeans"


def test_lineage_records_library_versions(two_versions: tuple) -> None:
    wh, v1, _ = two_versions
    raw = json.loads(wh.scalar('SELECT "lineage" FROM models WHERE "version" = ?', [v1]))
    import duckdb
    import numpy
    import sklearn

    libraries = raw["libraries"]
    assert libraries["numpy"] == numpy.__version__
    assert libraries["scikit-learn"] == sklearn.__version__
    assert libraries["duckdb"] == duckdb.__version__
    assert {"python", "segmint"} <= set(libraries)


def test_the_stored_spec_rescores_everyone_identically(two_versions: tuple) -> None:
    wh, _, v2 = two_versions
    model = get_version(wh, v2)
    fresh = wh.df(model.scoring_sql(source="features") + " ORDER BY customer_id")
    stored = current_assignments(wh)
    assert fresh["customer_id"].tolist() == stored["customer_id"].tolist()
    assert fresh["segment_id"].tolist() == stored["segment_id"].tolist()
    assert fresh["distance"].tolist() == stored["distance"].tolist()


def test_failed_publication_keeps_nothing(two_versions: tuple) -> None:
    wh, _, v2 = two_versions
    with pytest.raises(EngineError):
        publish_version(
            wh,
            spec=_line_spec(0.0, 1.0),
            inputs={"x": '"no_such_column"'},
            lineage=Lineage(),
            names=None,
            algorithm="kmeans",
            k=2,
            source="features",
        )
    assert list_versions(wh)["version"].tolist() == ["v0001", "v0002"]
    assert active_version(wh).version == v2  # type: ignore[union-attr]
    assert wh.scalar("SELECT count(DISTINCT model_version) FROM segment_assignments") == 2


def test_publication_checks_k_names_and_inputs(wh: Warehouse) -> None:
    common = {"lineage": Lineage(), "algorithm": "kmeans"}
    with pytest.raises(UserInputError, match="k=3"):
        publish_version(wh, spec=_line_spec(0, 1), inputs={"x": "v"}, names=None, k=3, **common)
    with pytest.raises(UserInputError, match="segment 5"):
        publish_version(
            wh, spec=_line_spec(0, 1), inputs={"x": "v"}, names={5: "Ghost"}, k=2, **common
        )
    with pytest.raises(UserInputError, match="inputs"):
        publish_version(wh, spec=_line_spec(0, 1), inputs={"y": "v"}, names=None, k=2, **common)
    assert list_versions(wh).empty


def test_unactivated_publication_keeps_the_active_version(wh: Warehouse) -> None:
    _values(wh, "f", {"a": 1.0})
    v1 = _publish_line(wh, "f", 0.0, 10.0)
    v2 = _publish_line(wh, "f", 0.0, 5.0, activate=False)
    assert active_version(wh).version == v1  # type: ignore[union-attr]
    assert get_version(wh, v2).status == "inactive"
    assert get_version(wh, v2).parent_version == v1


# ----------------------------------------------------------------- diffing
def test_diff_shows_what_changed(two_versions: tuple) -> None:
    wh, v1, v2 = two_versions
    diff = diff_versions(wh, v1, v2)
    assert diff["k"] == {"a": 2, "b": 3}
    assert diff["features"] == {"c": {"a": None, "b": "max(days)"}}
    assert diff["inputs"] == {"c": {"a": None, "b": '"c"'}}
    assert diff["parameters"] == {"n_clusters": {"a": 2, "b": 3}}
    assert diff["metrics"] == {"silhouette": {"a": 0.41, "b": 0.55}}
    assert diff["names"] == {2: {"a": None, "b": "Browsers"}}
    assert diff["descriptions"] == {1: {"a": "Buys often", "b": None}}
    sizes_a, sizes_b = segment_sizes(wh, v1), segment_sizes(wh, v2)
    assert sum(sizes_a.values()) == sum(sizes_b.values()) == 120
    assert set(diff["segment_sizes"]) == {
        s for s in set(sizes_a) | set(sizes_b) if sizes_a.get(s) != sizes_b.get(s)
    }
    for unchanged in ("algorithm", "seed", "data_fingerprint", "training_window", "libraries"):
        assert unchanged not in diff


def test_identical_versions_have_no_differences(wh: Warehouse) -> None:
    _values(wh, "f", {"a": 1.0, "b": 8.0})
    v1 = _publish_line(wh, "f", 0.0, 10.0, seed=3)
    v2 = _publish_line(wh, "f", 0.0, 10.0, seed=3)
    assert diff_versions(wh, v1, v2) == {}


# ---------------------------------------------------------------- rollback
def test_rollback_restores_the_older_assignments_unchanged(two_versions: tuple) -> None:
    wh, v1, v2 = two_versions
    rollback(wh, v1)  # assignments of v1 as they were, before any rollback
    before = current_assignments(wh)
    rollback(wh, v2)
    assert current_assignments(wh)["model_version"].unique().tolist() == [v2]

    restored = rollback(wh, "v1")
    assert restored.version == v1 and restored.active
    assert list_versions(wh)["status"].tolist() == ["active", "inactive"]
    after = current_assignments(wh)
    pd.testing.assert_frame_equal(after, before)
    assert after["model_version"].unique().tolist() == [v1]
    assert after["assigned_at"].unique().tolist() == [pd.Timestamp(AT)]
    assert set(after["segment_name"]) == {"Casual", "Loyal"}
    # and they are v1's labels of every customer, not v2's
    features = wh.df("SELECT a, b FROM features ORDER BY customer_id")
    expected = get_version(wh, v1).spec.predict(features)[0]
    assert after["segment_id"].tolist() == expected.tolist()


def test_versions_keep_increasing_after_a_rollback(wh: Warehouse) -> None:
    _values(wh, "f", {"a": 1.0})
    v1 = _publish_line(wh, "f", 0.0)
    _publish_line(wh, "f", 1.0)
    rollback(wh, v1)
    v3 = _publish_line(wh, "f", 2.0)
    assert v3 == "v0003"
    assert get_version(wh, v3).parent_version == v1


# ---------------------------------------------------------------- migration
def test_migration_matrix_counts_moves_between_versions(wh: Warehouse) -> None:
    # v1: centres 0 and 10; v2: centres 0, 10 and 20
    _values(wh, "before", {"c1": 1.0, "c2": 2.0, "c3": 9.0, "c4": 11.0, "c6": None})
    _values(wh, "after", {"c2": 2.0, "c3": 19.0, "c4": 11.0, "c5": 21.0, "c6": 3.0})
    v1 = _publish_line(wh, "before", 0.0, 10.0)
    v2 = _publish_line(wh, "after", 0.0, 10.0, 20.0)
    matrix = migration_matrix(wh, v1, v2)
    assert matrix.index.tolist() == [0, 1, UNSCORED, NEW]
    assert matrix.columns.tolist() == [0, 1, 2, GONE]
    assert matrix.index.name == v1 and matrix.columns.name == v2
    assert matrix.values.tolist() == [
        [1, 0, 0, 1],  # c2 stays in 0; c1 is gone
        [0, 1, 1, 0],  # c4 stays in 1; c3 moves to 2
        [1, 0, 0, 0],  # c6 had no input in v1, segment 0 in v2
        [0, 0, 1, 0],  # c5 is new, in 2
    ]
    assert int(matrix.values.sum()) == 6
    # the other way round, "(new)" and "(gone)" swap roles
    reverse = migration_matrix(wh, v2, v1)
    assert reverse.index.tolist() == [0, 1, 2, NEW]
    assert reverse.columns.tolist() == [0, 1, UNSCORED, GONE]
    assert reverse.values.tolist() == [
        [1, 0, 1, 0],  # c2 stays in 0; c6 was unscored in v1
        [0, 1, 0, 0],  # c4
        [0, 1, 0, 1],  # c3 came from 1; c5 is gone in v1
        [1, 0, 0, 0],  # c1 only in v1
    ]


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("call", ["get", "rollback", "diff", "migration", "sizes"])
def test_unknown_versions_are_user_errors(two_versions: tuple, call: str) -> None:
    wh, v1, _ = two_versions
    calls = {
        "get": lambda: get_version(wh, "v7"),
        "rollback": lambda: rollback(wh, "v7"),
        "diff": lambda: diff_versions(wh, v1, "v7"),
        "migration": lambda: migration_matrix(wh, "v7", v1),
        "sizes": lambda: segment_sizes(wh, "v7"),
    }
    with pytest.raises(UserInputError, match="no model version v0007 .known: v0001, v0002"):
        calls[call]()
    assert active_version(wh).version == "v0002"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["abc", "v0", "", "v-1", "1.5"])
def test_malformed_versions_are_user_errors(bad: str) -> None:
    with pytest.raises(UserInputError, match="not a model version"):
        normalise_version(bad)


def test_nothing_is_active_in_an_empty_registry(wh: Warehouse) -> None:
    assert active_version(wh) is None
    assert list_versions(wh).empty
    with pytest.raises(UserInputError, match="no model version is active"):
        current_assignments(wh)


# --------------------------------------------------------------- durability
def test_registry_survives_reopening_the_database(tmp_path: Path) -> None:
    path = tmp_path / "segmint.duckdb"
    with Warehouse(path) as wh:
        _values(wh, "f", {"a": 1.0, "b": 8.0})
        v1 = _publish_line(wh, "f", 0.0, 10.0, seed=1, metrics={"silhouette": float("nan")})
        _publish_line(wh, "f", 5.0, seed=2)
        rollback(wh, v1)
        listing = list_versions(wh)
        assignments = current_assignments(wh)
        spec = get_version(wh, v1).spec
    with Warehouse(path, read_only=True) as wh:
        pd.testing.assert_frame_equal(list_versions(wh), listing)
        pd.testing.assert_frame_equal(current_assignments(wh), assignments)
        model = get_version(wh, v1)
        assert model.active and model.spec == spec
        assert model.lineage.metrics == {"silhouette": None}


# -------------------------------------------------------------- fingerprint
def test_fingerprint_follows_keys_and_timestamps(wh: Warehouse) -> None:
    wh.execute(TABLES["orders"].ddl())
    insert = "INSERT INTO orders (order_id, customer_id, ordered_at, amount) VALUES (?, ?, ?, ?)"
    rows = [
        ("o1", "c1", datetime(2024, 5, 1), 10.0),
        ("o2", "c2", datetime(2024, 5, 2), 20.0),
    ]
    for row in rows:
        wh.execute(insert, list(row))
    first = data_fingerprint(wh, ["orders"])
    assert data_fingerprint(wh, ["orders"]) == first

    # the same rows in another order, in a fresh warehouse: same fingerprint
    with Warehouse(":memory:") as other:
        other.execute(TABLES["orders"].ddl())
        for row in reversed(rows):
            other.execute(insert, list(row))
        assert data_fingerprint(other, ["orders"]) == first

    # a non-key, non-timestamp edit does not change it (documented)
    wh.execute("UPDATE orders SET amount = 11.0 WHERE order_id = 'o1'")
    assert data_fingerprint(wh, ["orders"]) == first
    wh.execute("UPDATE orders SET ordered_at = ? WHERE order_id = 'o1'", [datetime(2024, 5, 3)])
    moved = data_fingerprint(wh, ["orders"])
    assert moved != first
    # a duplicate row changes it (no cancellation)
    wh.execute(insert, ["o2", "c2", datetime(2024, 5, 2), 20.0])
    assert data_fingerprint(wh, ["orders"]) not in {first, moved}


def test_fingerprint_hashes_whole_rows_of_undeclared_tables(wh: Warehouse) -> None:
    _values(wh, "scratch", {"a": 1.0, "b": 2.0})
    before = data_fingerprint(wh, ["scratch"])
    wh.execute("UPDATE scratch SET v = 2.5 WHERE customer_id = 'b'")
    assert data_fingerprint(wh, ["scratch"]) != before
    assert data_fingerprint(wh, ["scratch", "scratch"]) == data_fingerprint(wh, ["scratch"])
    with pytest.raises(UserInputError, match="no table"):
        data_fingerprint(wh, ["missing"])
