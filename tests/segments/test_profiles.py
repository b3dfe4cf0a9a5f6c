"""Tests of segmint.segments.profiles: hand-checked numbers and SQL == memory."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.engine.warehouse import Warehouse
from segmint.errors import UserInputError
from segmint.segments.profiles import (
    TOP_DRIVERS,
    SegmentProfiles,
    profile_segments,
    profile_segments_sql,
)

FEATURES = ["frequency", "monetary", "recency_days"]


@pytest.fixture
def hand() -> tuple[pd.DataFrame, list[int]]:
    """Six customers: segment 0 (3 rows), segment 1 (2 rows), unassigned (1 row)."""
    frame = pd.DataFrame(
        {
            "person_id": [1, 2, 3, 4, 5, 6],
            "frequency": [1, 2, 3, 10, 14, 0],
            "monetary": [10.0, 20.0, 30.0, 400.0, 500.0, 40.0],
            "recency_days": [100.0, 200.0, None, 5.0, 9.0, 50.0],
        }
    )
    return frame, [0, 0, 0, 1, 1, -1]


def test_sizes_shares_and_revenue_shares_by_hand(hand: tuple[pd.DataFrame, list[int]]) -> None:
    frame, labels = hand
    p = profile_segments(frame, labels, features=FEATURES)
    table = p.table.set_index("segment_id")
    assert p.segments == [0, 1, -1]  # unassigned last
    assert table["size"].to_dict() == {0: 3, 1: 2, -1: 1}
    assert table["share"].to_dict() == pytest.approx({0: 0.5, 1: 1 / 3, -1: 1 / 6})
    # revenue: 60 + 900 + 40 = 1000
    assert table["revenue"].to_dict() == pytest.approx({0: 60.0, 1: 900.0, -1: 40.0})
    assert table["revenue_share"].to_dict() == pytest.approx({0: 0.06, 1: 0.9, -1: 0.04})
    assert p.total_revenue == pytest.approx(1000.0)
    assert p.n_rows == 6
    assert table.loc[-1, "name"] == "Unassigned"
    assert table.loc[0, "name"] == "Segment 0"


def test_means_medians_lift_and_zscores_by_hand(hand: tuple[pd.DataFrame, list[int]]) -> None:
    frame, labels = hand
    p = profile_segments(frame, labels, features=FEATURES)
    # frequency: population mean 30 / 6 = 5; sample variance 160 / 5 = 32
    assert p.population_means["frequency"] == pytest.approx(5.0)
    assert p.population_stds["frequency"] == pytest.approx(math.sqrt(32))
    assert p.feature_means.loc[0, "frequency"] == pytest.approx(2.0)
    assert p.feature_means.loc[1, "frequency"] == pytest.approx(12.0)
    assert p.feature_medians.loc[1, "frequency"] == pytest.approx(12.0)
    assert p.lift.loc[0, "frequency"] == pytest.approx(0.4)
    assert p.lift.loc[1, "frequency"] == pytest.approx(2.4)
    assert p.lift.loc[-1, "frequency"] == pytest.approx(0.0)
    assert p.zscores.loc[1, "frequency"] == pytest.approx(7 / math.sqrt(32))
    assert p.zscores.loc[0, "frequency"] == pytest.approx(-3 / math.sqrt(32))
    # recency: the missing value is skipped (mean and median of 100 and 200)
    assert p.feature_means.loc[0, "recency_days"] == pytest.approx(150.0)
    assert p.feature_medians.loc[0, "recency_days"] == pytest.approx(150.0)
    assert p.population_means["recency_days"] == pytest.approx(364 / 5)
    assert p.population_medians["recency_days"] == pytest.approx(50.0)


def test_drivers_have_direction_and_are_sorted(hand: tuple[pd.DataFrame, list[int]]) -> None:
    frame, labels = hand
    p = profile_segments(frame, labels, features=FEATURES)
    drivers = p.drivers[1]
    assert {d.feature: d.direction for d in drivers} == {
        "frequency": "high",
        "monetary": "high",
        "recency_days": "low",
    }
    magnitudes = [abs(d.zscore) for d in drivers]
    assert magnitudes == sorted(magnitudes, reverse=True)
    for d in drivers:
        assert d.zscore == pytest.approx(p.zscores.loc[1, d.feature])


def test_at_most_top_drivers_and_constant_features_never_drive() -> None:
    rng = np.random.default_rng(0)
    n = 200
    labels = np.repeat([0, 1], n // 2)
    frame = pd.DataFrame(
        {f"f{i}": rng.normal(size=n) + labels * (i + 1) for i in range(TOP_DRIVERS + 2)}
    )
    frame["constant"] = 7.0
    features = [*frame.columns]
    p = profile_segments(frame, labels, features=features, revenue=None)
    assert len(p.drivers[1]) == TOP_DRIVERS
    # the largest shifts (f6, f5, ...) come first
    assert [d.feature for d in p.drivers[1]] == ["f6", "f5", "f4", "f3", "f2"]
    assert p.zscores["constant"].tolist() == [0.0, 0.0]
    assert p.lift["constant"].tolist() == [1.0, 1.0]
    assert all(d.feature != "constant" for ds in p.drivers.values() for d in ds)


def test_lift_is_nan_when_the_population_mean_is_zero() -> None:
    frame = pd.DataFrame({"balance": [-1.0, 1.0, -2.0, 2.0]})
    p = profile_segments(frame, [0, 0, 1, 1], features=["balance"], revenue=None)
    assert p.lift["balance"].isna().all()
    assert p.zscores["balance"].tolist() == [0.0, 0.0]


def test_without_revenue_the_shares_are_nan_and_json_has_nulls() -> None:
    frame = pd.DataFrame({"sessions": [1, 2, 3]})
    p = profile_segments(frame, [0, 1, 1], features=["sessions"], revenue=None)
    assert p.table["revenue_share"].isna().all()
    doc = p.to_dict()
    json.dumps(doc, allow_nan=False)
    assert doc["segments"][0]["revenue_share"] is None
    assert doc["total_revenue"] is None


def test_revenue_column_need_not_be_a_feature() -> None:
    frame = pd.DataFrame({"sessions": [1, 2, 3], "monetary": [0.0, 30.0, 10.0]})
    p = profile_segments(frame, [0, 1, 1], features=["sessions"])
    assert p.table["revenue_share"].tolist() == pytest.approx([0.0, 1.0])
    assert p.features == ("sessions",)


def test_to_dict_is_json_serialisable(hand: tuple[pd.DataFrame, list[int]]) -> None:
    frame, labels = hand
    doc = profile_segments(frame, labels, features=FEATURES).to_dict()
    text = json.dumps(doc, allow_nan=False)
    back = json.loads(text)
    assert [s["segment_id"] for s in back["segments"]] == [0, 1, -1]
    seg1 = back["segments"][1]
    assert seg1["size"] == 2
    assert seg1["features"]["frequency"]["mean"] == pytest.approx(12.0)
    assert seg1["drivers"][0]["direction"] in {"high", "low"}


def test_names_are_shown_and_unknown_names_rejected(hand: tuple[pd.DataFrame, list[int]]) -> None:
    frame, labels = hand
    p = profile_segments(frame, labels, features=FEATURES, names={1: "Champions"})
    assert p.name_of(1) == "Champions"
    assert p.name_of(0) == "Segment 0"
    renamed = p.with_names({0: "Hibernating"})
    assert renamed.name_of(0) == "Hibernating"
    assert p.name_of(0) == "Segment 0"  # the original is unchanged
    with pytest.raises(UserInputError, match="unknown segments"):
        p.with_names({7: "Ghosts"})
    with pytest.raises(UserInputError, match="unknown segments"):
        profile_segments(frame, labels, features=FEATURES, names={9: "x"})


@pytest.mark.parametrize(
    ("frame", "labels", "features", "match"),
    [
        (pd.DataFrame({"a": [1, 2]}), [0, 1], ["b"], "missing columns"),
        (pd.DataFrame({"a": ["x", "y"]}), [0, 1], ["a"], "not numeric"),
        (pd.DataFrame({"a": [1, 2]}), [0], ["a"], "1 labels for 2 rows"),
        (pd.DataFrame({"a": [1, 2]}), [0, None], ["a"], "finite integers"),
        (pd.DataFrame({"a": [1, 2]}), [0, 0.5], ["a"], "finite integers"),
        (pd.DataFrame({"a": []}), [], ["a"], "no rows"),
        (pd.DataFrame({"a": [1, 2]}), [0, 1], ["a", "a"], "duplicate"),
    ],
)
def test_bad_input_is_a_user_error(
    frame: pd.DataFrame, labels: list[float], features: list[str], match: str
) -> None:
    with pytest.raises(UserInputError, match=match):
        profile_segments(frame, labels, features=features, revenue=None)


# ======================================================================= SQL
def _load(wh: Warehouse, frame: pd.DataFrame, labels: list[int] | np.ndarray) -> None:
    wh.register("frame_df", frame)
    wh.execute("CREATE OR REPLACE TABLE features AS SELECT * FROM frame_df")
    assignments = pd.DataFrame(
        {"person_id": frame["person_id"], "segment": np.asarray(labels), "model_version": "v2"}
    )
    wh.register("assign_df", assignments)
    wh.execute("CREATE OR REPLACE TABLE assignments AS SELECT * FROM assign_df")
    # a stale version that must be filtered out by the bound parameter
    wh.execute(
        "INSERT INTO assignments SELECT person_id, 99, 'v1' FROM assignments WHERE person_id < 3"
    )


def _assert_same(a: SegmentProfiles, b: SegmentProfiles) -> None:
    assert a.segments == b.segments
    assert a.n_rows == b.n_rows
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=False, rtol=1e-9)
    for name in ("feature_means", "feature_medians", "lift", "zscores"):
        pd.testing.assert_frame_equal(
            getattr(a, name), getattr(b, name), check_exact=False, rtol=1e-9, atol=1e-12
        )
    for name in ("population_means", "population_medians", "population_stds"):
        pd.testing.assert_series_equal(
            getattr(a, name), getattr(b, name), check_exact=False, rtol=1e-9
        )
    assert {s: [d.feature for d in ds] for s, ds in a.drivers.items()} == {
        s: [d.feature for d in ds] for s, ds in b.drivers.items()
    }


ASSIGNMENTS = "SELECT person_id, segment FROM assignments WHERE model_version = ?"


def test_sql_equals_memory_on_the_hand_example(hand: tuple[pd.DataFrame, list[int]]) -> None:
    frame, labels = hand
    with Warehouse(":memory:") as wh:
        _load(wh, frame, labels)
        in_sql = profile_segments_sql(
            wh,
            assignments_sql=ASSIGNMENTS,
            features_table="features",
            features=FEATURES,
            revenue="monetary",
            params=["v2"],
            names={1: "Champions"},
        )
    in_memory = profile_segments(frame, labels, features=FEATURES, names={1: "Champions"})
    _assert_same(in_sql, in_memory)
    assert in_sql.table.set_index("segment_id").loc[1, "revenue_share"] == pytest.approx(0.9)


def test_sql_equals_memory_on_random_data_with_nulls_and_nan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2_000
    labels = rng.integers(-1, 5, size=n)
    frame = pd.DataFrame(
        {
            "person_id": np.arange(n),
            "frequency": rng.poisson(3 + labels.clip(0) * 2),
            "monetary": rng.gamma(2.0, 50.0, size=n),
            "avg order value": rng.normal(80, 20, size=n),  # needs quoting
            "email_open_rate": rng.uniform(size=n),
        }
    )
    frame.loc[rng.uniform(size=n) < 0.1, "email_open_rate"] = np.nan
    frame.loc[rng.uniform(size=n) < 0.05, "monetary"] = np.nan
    features = ["frequency", "monetary", "avg order value", "email_open_rate"]
    with Warehouse(":memory:") as wh:
        _load(wh, frame, labels)
        wh.execute("UPDATE features SET email_open_rate = 'NaN'::DOUBLE WHERE person_id % 97 = 0")
        stored = wh.df("SELECT * FROM features ORDER BY person_id")
        in_sql = profile_segments_sql(
            wh,
            assignments_sql=ASSIGNMENTS,
            features_table="features",
            features=features,
            params=["v2"],
        )
    in_memory = profile_segments(stored, labels, features=features)
    _assert_same(in_sql, in_memory)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-1, 3),
            st.one_of(st.none(), st.integers(-50, 50)),
            st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_property_sql_equals_memory(rows: list[tuple[int, int | None, float | None]]) -> None:
    labels = [r[0] for r in rows]
    frame = pd.DataFrame(
        {
            "person_id": np.arange(len(rows)),
            "x": pd.array([r[1] for r in rows], dtype="Int64"),
            "y": [np.nan if r[2] is None else r[2] for r in rows],
        }
    )
    with Warehouse(":memory:") as wh:
        _load(wh, frame, labels)
        in_sql = profile_segments_sql(
            wh,
            assignments_sql=ASSIGNMENTS,
            features_table="features",
            features=["x", "y"],
            revenue="y",
            params=["v2"],
        )
    in_memory = profile_segments(frame, labels, features=["x", "y"], revenue="y")
    _assert_same(in_sql, in_memory)


def test_sql_reports_missing_columns_and_null_segments(
    hand: tuple[pd.DataFrame, list[int]],
) -> None:
    frame, labels = hand
    with Warehouse(":memory:") as wh:
        _load(wh, frame, labels)
        with pytest.raises(UserInputError, match="missing columns"):
            profile_segments_sql(
                wh,
                assignments_sql=ASSIGNMENTS,
                features_table="features",
                features=["frequency", "no_such_feature"],
                params=["v2"],
            )
        with pytest.raises(UserInputError, match="NULL segment"):
            profile_segments_sql(
                wh,
                assignments_sql="SELECT person_id, NULL::INTEGER AS segment FROM features",
                features_table="features",
                features=["frequency"],
            )
        with pytest.raises(UserInputError, match="no assigned rows"):
            profile_segments_sql(
                wh,
                assignments_sql=ASSIGNMENTS,
                features_table="features",
                features=["frequency"],
                params=["no such version"],
            )


def test_sql_binds_values_instead_of_formatting_them(
    hand: tuple[pd.DataFrame, list[int]],
) -> None:
    frame, labels = hand
    with Warehouse(":memory:") as wh:
        _load(wh, frame, labels)
        # a hostile value is just a value: it matches no version
        with pytest.raises(UserInputError, match="no assigned rows"):
            profile_segments_sql(
                wh,
                assignments_sql=ASSIGNMENTS,
                features_table="features",
                features=["frequency"],
                params=["v2'; DROP TABLE features; --"],
            )
        assert wh.has_table("features")


def test_a_missing_revenue_column_says_how_to_do_without() -> None:
    frame = pd.DataFrame({"person_id": [1, 2], "sessions": [1, 2]})
    with pytest.raises(UserInputError, match="pass revenue=None") as info:
        profile_segments(frame, [0, 1], features=["sessions"])
    assert info.value.where == "revenue"
    with Warehouse(":memory:") as wh:
        _load(wh, frame, [0, 1])
        with pytest.raises(UserInputError, match="pass revenue=None"):
            profile_segments_sql(
                wh,
                assignments_sql=ASSIGNMENTS,
                features_table="features",
                features=["sessions"],
                params=["v2"],
            )
