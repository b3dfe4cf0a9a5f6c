"""Tests of segmint.features.stability: PSI, its reading, and snapshot comparison."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError
from segmint.features.compute import compute_features
from segmint.features.definitions import builtin
from segmint.features.stability import EPSILON, feature_stability, psi, psi_status

SEED = 20261123


def test_identical_distributions_have_zero_psi() -> None:
    rng = np.random.default_rng(SEED)
    a = rng.normal(size=10_000)
    assert psi(a, a) == 0.0
    assert psi(a, rng.permutation(a)) == 0.0
    assert psi(a, rng.normal(size=10_000)) < 0.01


def test_shifted_distribution_has_psi_above_0_2() -> None:
    rng = np.random.default_rng(SEED)
    a = rng.normal(size=10_000)
    value = psi(a, rng.normal(loc=1.0, size=10_000))
    assert value > 0.2
    assert psi_status(value) == "significant"


def test_hand_checked_numeric_psi() -> None:
    reference = np.arange(100, dtype=float)  # ten bins of 10% each
    current = np.concatenate([np.arange(50.0), np.arange(50.0)])  # the lower half, twice
    expected = 5 * (0.2 - 0.1) * math.log(0.2 / 0.1) + 5 * (EPSILON - 0.1) * math.log(EPSILON / 0.1)
    assert psi(reference, current) == pytest.approx(expected)


def test_missing_values_have_their_own_bin() -> None:
    reference = np.arange(100, dtype=float)
    current = reference.copy()
    current[:10] = np.nan  # the first decile went missing
    # bin 0: 0.1 -> eps, missing: eps -> 0.1
    expected = 2 * (0.1 - EPSILON) * math.log(0.1 / EPSILON)
    assert psi(reference, current) == pytest.approx(expected)


def test_hand_checked_categorical_psi() -> None:
    reference = np.array(["a"] * 50 + ["b"] * 50, dtype=object)
    current = np.array(["a"] * 80 + ["b"] * 10 + [None] * 10, dtype=object)
    expected = (
        (0.8 - 0.5) * math.log(0.8 / 0.5)
        + (0.1 - 0.5) * math.log(0.1 / 0.5)
        + (0.1 - EPSILON) * math.log(0.1 / EPSILON)
    )
    assert psi(reference, current) == pytest.approx(expected)
    assert psi(reference, reference) == 0.0


def test_fewer_distinct_values_than_bins() -> None:
    reference = np.array([0.0] * 90 + [1.0] * 10)
    assert psi(reference, reference[::-1].copy()) == 0.0
    assert psi(reference, np.array([0.0] * 50 + [1.0] * 50)) > 0.2


def test_psi_status_thresholds() -> None:
    assert psi_status(0.0) == "stable"
    assert psi_status(0.0999) == "stable"
    assert psi_status(0.1) == "moderate"
    assert psi_status(0.2) == "moderate"
    assert psi_status(0.2001) == "significant"


def test_bad_inputs() -> None:
    with pytest.raises(UserInputError, match="bins"):
        psi([1.0, 2.0], [1.0], bins=1)
    with pytest.raises(UserInputError, match="at least one value"):
        psi([], [1.0])
    with pytest.raises(UserInputError, match="one-dimensional"):
        psi(np.ones((2, 2)), np.ones(2))


values = st.one_of(st.floats(min_value=-1e9, max_value=1e9), st.just(np.nan))


@settings(max_examples=200, deadline=None)
@given(
    reference=arrays(np.float64, st.integers(1, 60), elements=values),
    current=arrays(np.float64, st.integers(1, 60), elements=values),
    bins=st.integers(2, 20),
)
def test_psi_is_non_negative_and_zero_on_itself(
    reference: np.ndarray, current: np.ndarray, bins: int
) -> None:
    value = psi(reference, current, bins)
    assert value >= 0.0
    assert math.isfinite(value)
    assert psi(reference, reference, bins) == 0.0


@settings(max_examples=100, deadline=None)
@given(
    reference=st.lists(st.one_of(st.none(), st.sampled_from("abcd")), min_size=1, max_size=40),
    current=st.lists(st.one_of(st.none(), st.sampled_from("abce")), min_size=1, max_size=40),
)
def test_categorical_psi_is_non_negative(reference: list, current: list) -> None:
    value = psi(np.array(reference, dtype=object), np.array(current, dtype=object))
    assert value >= 0.0 and math.isfinite(value)


# --------------------------------------------------------------------------- snapshots


@pytest.fixture(scope="module")
def two_snapshots() -> Warehouse:
    """200 customers; between January and July, the big spenders double their orders."""
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    rng = np.random.default_rng(SEED)
    start = datetime(2023, 1, 1)
    for i in range(200):
        wh.execute(
            "INSERT INTO customers (customer_id, signup_at) VALUES (?, ?)",
            [f"c{i:03d}", start],
        )
    rows = []
    n = 0
    for i in range(200):
        for _ in range(int(rng.integers(1, 4))):
            when = start + timedelta(days=int(rng.integers(0, 360)))
            rows.append((f"o{n}", f"c{i:03d}", when, float(rng.uniform(10, 100))))
            n += 1
        if i % 2 == 0:  # half the customers buy a lot more in 2024
            for _ in range(5):
                when = datetime(2024, 1, 1) + timedelta(days=int(rng.integers(0, 150)))
                rows.append((f"o{n}", f"c{i:03d}", when, float(rng.uniform(200, 400))))
                n += 1
    wh.con.executemany(
        "INSERT INTO orders (order_id, customer_id, ordered_at, amount) VALUES (?, ?, ?, ?)",
        rows,
    )
    defs = [builtin("frequency"), builtin("monetary"), builtin("tenure_days")]
    compute_features(wh, as_of=datetime(2023, 12, 31), snapshot="jan", definitions=defs)
    compute_features(wh, as_of=datetime(2023, 12, 31), snapshot="jan_again", definitions=defs)
    compute_features(wh, as_of=datetime(2024, 6, 1), snapshot="jun", definitions=defs)
    return wh


def test_feature_stability_between_snapshots(two_snapshots: Warehouse) -> None:
    report = feature_stability(two_snapshots, "jan", "jun").set_index("feature")
    assert list(report.index) == ["frequency", "monetary", "tenure_days"]
    assert report.loc["monetary", "status"] == "significant"
    assert report.loc["frequency", "psi"] > 0.2
    assert (report["reference_rows"] == 200).all() and (report["current_rows"] == 200).all()
    # every customer's tenure grew by the same 153 days: a complete shift out of the bins
    assert report.loc["tenure_days", "psi"] > 0.2
    same = feature_stability(two_snapshots, "jan", "jan_again")
    assert (same["psi"] == 0.0).all() and (same["status"] == "stable").all()


def test_feature_stability_equals_psi_of_the_frames(two_snapshots: Warehouse) -> None:
    frame = two_snapshots.df("SELECT * FROM features ORDER BY customer_id")
    jan = frame[frame.snapshot_id == "jan"]["monetary"].to_numpy()
    jun = frame[frame.snapshot_id == "jun"]["monetary"].to_numpy()
    report = feature_stability(two_snapshots, "jan", "jun", features=["monetary"], bins=5)
    assert report["psi"].iloc[0] == pytest.approx(psi(jan, jun, bins=5))


def test_categorical_feature_stability() -> None:
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    wh.execute(
        "INSERT INTO customers (customer_id, signup_at) VALUES ('a', '2023-01-01'), "
        "('b', '2023-01-01'), ('c', '2023-12-20')"
    )
    compute_features(wh, as_of=datetime(2023, 12, 31), snapshot="s1")
    compute_features(wh, as_of=datetime(2025, 1, 1), snapshot="s2")
    report = feature_stability(wh, "s1", "s2").set_index("feature")
    row = report.loc["lifecycle_stage"]
    assert row["kind"] == "categorical"
    # s1: prospect x2, new x1; s2: churned x3
    expected = (
        (EPSILON - 2 / 3) * math.log(EPSILON / (2 / 3))
        + (EPSILON - 1 / 3) * math.log(EPSILON / (1 / 3))
        + (1 - EPSILON) * math.log(1 / EPSILON)
    )
    assert row["psi"] == pytest.approx(expected)


def test_unknown_snapshot_or_feature(two_snapshots: Warehouse) -> None:
    with pytest.raises(UserInputError, match="unknown snapshot 'nope'"):
        feature_stability(two_snapshots, "jan", "nope")
    with pytest.raises(UserInputError, match="unknown features"):
        feature_stability(two_snapshots, "jan", "jun", features=["snapshot_id"])
    empty = Warehouse(":memory:")
    with pytest.raises(UserInputError, match="compute features first"):
        feature_stability(empty, "a", "b")
