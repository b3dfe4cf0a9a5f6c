"""Tests of segmint.segments.selection: choice of k."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from segmint.errors import UserInputError
from segmint.segments.selection import (
    ELBOW_SILHOUETTE_TOLERANCE,
    METRIC_COLUMNS,
    ClusterEstimator,
    KSelection,
    as_matrix,
    decide_k,
    sample_indices,
    select_k,
)

SEED = 42
CENTERS = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0)]


def kmeans(k: int) -> KMeans:
    return KMeans(n_clusters=k, n_init=3, random_state=0)


def gmm(k: int) -> GaussianMixture:
    return GaussianMixture(n_components=k, random_state=0)


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    X, _ = make_blobs(n_samples=2000, centers=CENTERS, cluster_std=1.0, random_state=SEED)
    return X


@pytest.fixture(scope="module")
def blobs_selection(blobs: np.ndarray) -> KSelection:
    return select_k(blobs, kmeans, k_range=range(2, 9))


@pytest.fixture(scope="module")
def tiny_cluster_data() -> np.ndarray:
    """Three big clusters and a far-away one holding 1% of the rows."""
    big, _ = make_blobs(
        n_samples=2970, centers=[(0, 0), (10, 0), (0, 10)], cluster_std=1.0, random_state=1
    )
    tiny = np.random.default_rng(SEED).normal((30.0, 30.0), 0.5, size=(30, 2))
    return np.vstack([big, tiny])


class RecordingFactory:
    """Makes KMeans estimators and remembers how many rows each was fitted on."""

    def __init__(self) -> None:
        self.fit_rows: list[int] = []

    def __call__(self, k: int) -> Any:
        factory = self

        class Recorded(KMeans):
            def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Recorded:
                factory.fit_rows.append(len(X))
                return super().fit(X, y, sample_weight)

        return Recorded(n_clusters=k, n_init=1, random_state=0)


# ------------------------------------------------------------------ select_k
def test_four_separated_blobs_give_k_4(blobs_selection: KSelection) -> None:
    assert blobs_selection.k == 4
    assert blobs_selection.criterion == "silhouette"
    assert blobs_selection.reason.startswith("k=4")
    assert "silhouette" in blobs_selection.reason
    assert "Rule:" in blobs_selection.reason
    assert "2.0%" in blobs_selection.reason  # the size floor is stated


def test_elbow_of_inertia_is_at_the_true_k(blobs_selection: KSelection) -> None:
    assert blobs_selection.elbow_k == 4
    inertia = blobs_selection.metrics["inertia"]
    assert inertia.is_monotonic_decreasing


def test_metrics_table_has_every_k_and_no_missing_values_except_bic(
    blobs_selection: KSelection,
) -> None:
    m = blobs_selection.metrics
    assert list(m.index) == list(range(2, 9))
    assert list(m.columns) == [*METRIC_COLUMNS, "eligible"]
    assert m[[c for c in METRIC_COLUMNS if c != "bic"]].notna().all().all()
    assert m["bic"].isna().all()  # KMeans has no BIC
    assert m["silhouette"].between(-1, 1).all()
    assert (m["min_share"] > 0).all() and (m["min_share"] <= 0.5).all()
    # the true k has the best internal indices
    assert m["calinski_harabasz"].idxmax() == 4
    assert m["davies_bouldin"].idxmin() == 4


def test_inertia_matches_sklearn_for_kmeans(blobs: np.ndarray) -> None:
    sel = select_k(blobs, kmeans, k_range=[3, 4], sample_size=len(blobs))
    fitted = kmeans(4).fit(blobs)
    assert sel.metrics.loc[4, "inertia"] == pytest.approx(fitted.inertia_, rel=1e-6)


def test_min_share_refuses_a_k_that_creates_a_tiny_segment(
    tiny_cluster_data: np.ndarray,
) -> None:
    strict = select_k(tiny_cluster_data, kmeans, k_range=range(2, 8), min_share=0.02)
    loose = select_k(tiny_cluster_data, kmeans, k_range=range(2, 8), min_share=0.0)
    # without the floor the tiny cluster wins; with it, it is refused
    assert loose.k == 4
    assert strict.k == 3
    assert strict.metrics.loc[4, "min_share"] == pytest.approx(0.01, abs=0.002)
    assert not strict.metrics.loc[4, "eligible"]
    assert strict.metrics.loc[strict.k, "min_share"] >= 0.02
    assert "excluded" in strict.reason


def test_when_no_k_meets_the_floor_the_largest_smallest_segment_wins(
    tiny_cluster_data: np.ndarray,
) -> None:
    sel = select_k(tiny_cluster_data, kmeans, k_range=range(2, 6), min_share=0.4)
    m = sel.metrics
    assert not m["eligible"].any()
    assert sel.criterion == "min_share"
    assert sel.k == int(m["min_share"].idxmax())
    assert "no k" in sel.reason and "size floor" in sel.reason


def test_gaussian_mixture_is_chosen_by_bic(blobs: np.ndarray) -> None:
    sel = select_k(blobs, gmm, k_range=range(2, 7))
    m = sel.metrics
    assert sel.criterion == "bic"
    assert "Rule: lowest BIC" in sel.reason
    assert m["bic"].notna().all()
    assert sel.k == int(m.loc[m["eligible"], "bic"].idxmin())
    assert sel.k == 4
    # a mixture has no cluster_centers_: inertia is still defined
    assert m["inertia"].notna().all()


def test_silhouette_criterion_can_be_forced_for_mixtures(blobs: np.ndarray) -> None:
    sel = select_k(blobs, gmm, k_range=range(2, 6), criterion="silhouette")
    assert sel.criterion == "silhouette"
    assert sel.k == 4


def test_bic_criterion_needs_an_estimator_with_bic(blobs: np.ndarray) -> None:
    with pytest.raises(UserInputError, match="bic"):
        select_k(blobs, kmeans, k_range=[2, 3], criterion="bic")


def test_fitting_uses_a_bounded_sample() -> None:
    X, _ = make_blobs(n_samples=30_000, centers=CENTERS, random_state=SEED)
    factory = RecordingFactory()
    sel = select_k(X, factory, k_range=[3, 4, 5], sample_size=1_500)
    assert factory.fit_rows == [1_500, 1_500, 1_500]
    assert sel.k == 4


def test_k_above_max_k_is_not_fitted(blobs: np.ndarray) -> None:
    factory = RecordingFactory()
    sel = select_k(blobs, factory, k_range=range(2, 9), max_k=5)
    assert list(sel.metrics.index) == [2, 3, 4, 5]
    assert len(factory.fit_rows) == 4
    assert sel.k == 4


def test_same_seed_gives_the_same_result(blobs: np.ndarray) -> None:
    a = select_k(blobs, kmeans, k_range=[2, 3, 4], sample_size=500, random_state=7)
    b = select_k(blobs, kmeans, k_range=[2, 3, 4], sample_size=500, random_state=7)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    assert a.reason == b.reason


def test_to_dict_is_json_serialisable(blobs_selection: KSelection) -> None:
    d = blobs_selection.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["k"] == 4
    assert back["elbow_k"] == 4
    assert [row["k"] for row in back["metrics"]] == list(range(2, 9))
    assert all(row["bic"] is None for row in back["metrics"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_range": []}, "empty"),
        ({"k_range": [1, 2]}, "at least 2"),
        ({"k_range": [12], "max_k": 10}, "max_k"),
        ({"min_share": 1.5}, "min_share"),
        ({"criterion": "gap"}, "criterion"),
    ],
)
def test_invalid_arguments_are_rejected(
    blobs: np.ndarray, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(UserInputError, match=match):
        select_k(blobs, kmeans, **kwargs)


def test_bad_data_is_rejected() -> None:
    with pytest.raises(UserInputError, match="NaN"):
        select_k(np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]), kmeans, k_range=[2])
    with pytest.raises(UserInputError, match="2-D"):
        select_k(np.arange(10.0), kmeans, k_range=[2])
    with pytest.raises(UserInputError, match="cannot be split"):
        select_k(np.eye(3), kmeans, k_range=[2, 3])


def test_sklearn_estimators_satisfy_the_protocol() -> None:
    assert isinstance(kmeans(2), ClusterEstimator)
    assert isinstance(gmm(2), ClusterEstimator)


def test_helpers() -> None:
    assert as_matrix([[1, 2]]).dtype == np.float64
    idx = sample_indices(100, 10, np.random.default_rng(0))
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert np.all(np.diff(idx) > 0)
    assert sample_indices(5, 10, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------ decide_k
def _table(sil: list[float], share: list[float], bic: list[float] | None = None) -> pd.DataFrame:
    ks = list(range(2, 2 + len(sil)))
    return pd.DataFrame(
        {
            "silhouette": sil,
            "bic": bic if bic is not None else [math.nan] * len(sil),
            "min_share": share,
        },
        index=pd.Index(ks, name="k"),
    )


def test_decide_k_prefers_the_elbow_within_tolerance() -> None:
    m = _table([0.50, 0.605, 0.60, 0.4], [0.3] * 4)
    k, used, reason = decide_k(m, min_share=0.02, max_k=10, elbow_k=4)
    assert (k, used) == (4, "silhouette")
    assert "elbow" in reason and "preferred" in reason


def test_decide_k_keeps_the_silhouette_best_when_ch_and_db_agree_with_it() -> None:
    m = _table([0.50, 0.605, 0.60, 0.4], [0.3] * 4)
    m["calinski_harabasz"] = [100.0, 150.0, 140.0, 90.0]
    m["davies_bouldin"] = [1.2, 0.9, 1.0, 1.3]
    k, _, reason = decide_k(m, min_share=0.02, max_k=10, elbow_k=4)
    assert k == 3
    assert "silhouette 0.605" in reason
    m["davies_bouldin"] = [1.2, 1.1, 1.0, 1.3]  # only CH favours k=3: the elbow wins
    assert decide_k(m, min_share=0.02, max_k=10, elbow_k=4)[0] == 4


def test_decide_k_ignores_an_elbow_far_from_the_silhouette_best() -> None:
    m = _table([0.50, 0.70, 0.60, 0.4], [0.3] * 4)
    assert decide_k(m, min_share=0.02, max_k=10, elbow_k=4)[0] == 3
    m = _table([0.50, 0.605, 0.60, 0.6049], [0.3] * 4)
    assert decide_k(m, min_share=0.02, max_k=10, elbow_k=5)[0] == 3


def test_decide_k_ties_go_to_the_smaller_k() -> None:
    m = _table([0.6, 0.6, 0.6], [0.3] * 3)
    assert decide_k(m, min_share=0.02, max_k=10, elbow_k=None)[0] == 2
    m = _table([0.6, 0.6, 0.6], [0.3] * 3, bic=[10.0, 10.0, 11.0])
    assert decide_k(m, min_share=0.02, max_k=10, elbow_k=None)[:2] == (2, "bic")


sil_values = st.floats(min_value=-1, max_value=1, allow_nan=False)
share_values = st.floats(min_value=0, max_value=0.5, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(sil_values, share_values), min_size=1, max_size=9),
    min_share=st.floats(min_value=0, max_value=0.2),
    elbow=st.one_of(st.none(), st.integers(min_value=2, max_value=10)),
)
def test_decide_k_respects_the_floor_and_the_silhouette(
    rows: list[tuple[float, float]], min_share: float, elbow: int | None
) -> None:
    m = _table([r[0] for r in rows], [r[1] for r in rows])
    k, used, reason = decide_k(m, min_share=min_share, max_k=10, elbow_k=elbow)
    assert k in m.index
    assert reason.startswith(f"k={k}")
    eligible = m[m["min_share"] >= min_share]
    if eligible.empty:
        assert used == "min_share"
        assert m.loc[k, "min_share"] == m["min_share"].max()
    else:
        assert used == "silhouette"
        assert k in eligible.index
        best = eligible["silhouette"].max()
        assert m.loc[k, "silhouette"] >= best - ELBOW_SILHOUETTE_TOLERANCE - 1e-12
        if m.loc[k, "silhouette"] < best:
            assert k == elbow
    # deterministic
    assert decide_k(m, min_share=min_share, max_k=10, elbow_k=elbow)[0] == k
