"""Tests of segmint.segments.validation: stability, separation, warnings."""

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

from segmint.errors import UserInputError
from segmint.segments.validation import (
    DOUBTFUL_JACCARD,
    STABLE_JACCARD,
    SegmentStability,
    StabilityResult,
    WarningCode,
    _best_jaccard,
    bootstrap_stability,
    segment_distinction,
    segment_warnings,
    separation_tests,
    stability_verdict,
    temporal_stability,
)

SEED = 42
CENTERS = np.array([(0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0)])


def kmeans(k: int) -> KMeans:
    return KMeans(n_clusters=k, n_init=3, random_state=0)


class Relabelled:
    """Wraps an estimator and renames its labels: label l becomes perm[l]."""

    def __init__(self, inner: Any, perm: list[int]) -> None:
        self.inner = inner
        self.perm = np.asarray(perm)

    def fit(self, X: Any, y: Any = None) -> Relabelled:
        self.inner.fit(X)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.perm[np.asarray(self.inner.predict(X))]


class WithOutliers:
    """KMeans that leaves rows far from every centre unassigned (label -1)."""

    def __init__(self, k: int, radius: float = 2.0) -> None:
        self.inner = KMeans(n_clusters=k, n_init=3, random_state=0)
        self.radius = radius

    def fit(self, X: Any, y: Any = None) -> WithOutliers:
        self.inner.fit(X)
        return self

    def predict(self, X: Any) -> np.ndarray:
        labels = np.asarray(self.inner.predict(X))
        far = self.inner.transform(X).min(axis=1) > self.radius
        return np.where(far, -1, labels)


class RecordingFactory:
    """Makes KMeans estimators, remembering each one and its training size."""

    def __init__(self, perm: list[int] | None = None) -> None:
        self.perm = perm
        self.made: list[Any] = []
        self.fit_rows: list[int] = []

    def __call__(self, k: int) -> Any:
        factory = self

        class Recorded(KMeans):
            def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Recorded:
                factory.fit_rows.append(len(X))
                return super().fit(X, y, sample_weight)

        est: Any = Recorded(n_clusters=k, n_init=3, random_state=0)
        if self.perm is not None:
            est = Relabelled(est, self.perm)
        self.made.append(est)
        return est


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=2000, centers=CENTERS, cluster_std=1.0, random_state=SEED)
    return X, y


@pytest.fixture(scope="module")
def blob_stability(blobs: tuple[np.ndarray, np.ndarray]) -> StabilityResult:
    return bootstrap_stability(blobs[0], kmeans, 4, n_boot=8, sample_size=1000)


@pytest.fixture(scope="module")
def noise_stability() -> StabilityResult:
    U = np.random.default_rng(SEED).uniform(size=(3000, 4))
    return bootstrap_stability(U, kmeans, 6, n_boot=8, sample_size=800)


# ------------------------------------------------------------------ bootstrap
def test_well_separated_blobs_are_stable(blob_stability: StabilityResult) -> None:
    r = blob_stability
    assert r.k == 4 and r.n_boot == 8 and r.sample_size == 1000
    assert len(r.segments) == 4
    assert all(s.verdict == "stable" for s in r.segments)
    assert all(s.mean_jaccard >= STABLE_JACCARD for s in r.segments)
    assert all(s.dissolved_rate == 0.0 for s in r.segments)
    assert r.mean_ari >= 0.9
    assert sum(s.base_size for s in r.segments) == 1000


def test_uniform_noise_is_less_stable_than_blobs(
    blob_stability: StabilityResult, noise_stability: StabilityResult
) -> None:
    assert noise_stability.mean_jaccard < blob_stability.mean_jaccard - 0.2
    assert noise_stability.mean_ari < 0.9
    assert any(v != "stable" for v in noise_stability.verdicts.values())


def test_bootstrap_cost_is_bounded_by_the_sample() -> None:
    X, _ = make_blobs(n_samples=40_000, centers=CENTERS, random_state=SEED)
    factory = RecordingFactory()
    r = bootstrap_stability(X, factory, 4, n_boot=3, sample_size=600)
    assert factory.fit_rows == [600] * 4  # one base fit, three refits
    assert r.sample_size == 600


def test_base_model_labels_are_kept(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    model = Relabelled(kmeans(4), [10, 11, 12, 13]).fit(X)
    r = bootstrap_stability(X, kmeans, 4, n_boot=3, sample_size=500, base_model=model)
    assert sorted(r.verdicts) == [10, 11, 12, 13]
    assert set(r.verdicts.values()) == {"stable"}


def test_jaccard_counts_resampled_rows_with_multiplicity() -> None:
    # hand-checked: seven drawn rows (duplicates count as often as drawn)
    base_codes = np.array([0, 0, 0, 1, 1, 0, 1])  # base segment of each drawn row
    boot = np.array([5, 5, 5, 7, 7, 7, 7])  # refit segment of each drawn row
    # segment 0: 4 drawn rows; vs boot 5 (3 rows, 3 shared) -> 3/4; vs 7 -> 1/7
    # segment 1: 3 drawn rows; vs boot 7 (4 rows, 3 shared) -> 3/4
    assert _best_jaccard(base_codes, boot, 2).tolist() == [0.75, 0.75]
    # a segment absent from the resample is NaN; unassigned refit rows match nothing
    best = _best_jaccard(np.array([0, 0, 2, 2]), np.array([-1, -1, 3, 3]), 2)
    assert best[0] == 0.0 and math.isnan(best[1])


def test_unassigned_rows_are_not_a_segment(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    r = bootstrap_stability(X, WithOutliers, 4, n_boot=4, sample_size=800)
    assert sorted(r.verdicts) == [0, 1, 2, 3]
    assert set(r.verdicts.values()) == {"stable"}
    assert sum(s.base_size for s in r.segments) < 800  # outliers were left out
    t = temporal_stability(X[:1000], X[1000:], WithOutliers, 4, sample_size=1000)
    assert sorted(t.mapping) == [0, 1, 2, 3]
    assert -1 not in t.mapping.values() and t.unmatched_a == ()


def test_same_seed_gives_the_same_result(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    a = bootstrap_stability(blobs[0], kmeans, 3, n_boot=3, sample_size=300, random_state=5)
    b = bootstrap_stability(blobs[0], kmeans, 3, n_boot=3, sample_size=300, random_state=5)
    assert a == b


def test_stability_to_dict_is_json_serialisable(noise_stability: StabilityResult) -> None:
    d = json.loads(json.dumps(noise_stability.to_dict(), allow_nan=False))
    assert d["k"] == 6 and len(d["segments"]) == 6 and len(d["ari"]) == 8
    assert {s["verdict"] for s in d["segments"]} <= {"stable", "doubtful", "unstable"}


def test_verdict_thresholds() -> None:
    assert stability_verdict(STABLE_JACCARD) == "stable"
    assert stability_verdict(STABLE_JACCARD - 1e-9) == "doubtful"
    assert stability_verdict(DOUBTFUL_JACCARD) == "doubtful"
    assert stability_verdict(DOUBTFUL_JACCARD - 1e-9) == "unstable"
    assert stability_verdict(math.nan) == "unstable"


@pytest.mark.parametrize(("k", "n_boot", "match"), [(1, 3, "k must"), (3, 0, "n_boot")])
def test_bootstrap_rejects_bad_arguments(
    blobs: tuple[np.ndarray, np.ndarray], k: int, n_boot: int, match: str
) -> None:
    with pytest.raises(UserInputError, match=match):
        bootstrap_stability(blobs[0], kmeans, k, n_boot=n_boot)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    k=st.integers(min_value=2, max_value=5),
    spread=st.floats(min_value=0.5, max_value=8.0),
)
def test_jaccard_and_ari_stay_in_range(seed: int, k: int, spread: float) -> None:
    X, _ = make_blobs(n_samples=150, centers=3, cluster_std=spread, random_state=seed)
    r = bootstrap_stability(X, kmeans, k, n_boot=3, sample_size=150, random_state=seed)
    assert all(-0.5 - 1e-9 <= a <= 1.0 + 1e-9 for a in r.ari)
    assert -0.5 - 1e-9 <= r.mean_ari <= 1.0 + 1e-9
    for s in r.segments:
        assert 0.0 <= s.mean_jaccard <= 1.0
        assert 0.0 <= s.dissolved_rate <= 1.0 and 0.0 <= s.recovered_rate <= 1.0
        assert s.verdict == stability_verdict(s.mean_jaccard)


@settings(max_examples=12, deadline=None)
@given(perm=st.permutations(list(range(4))), seed=st.integers(min_value=0, max_value=1000))
def test_relabelling_does_not_change_per_segment_jaccard(perm: list[int], seed: int) -> None:
    X, _ = make_blobs(n_samples=200, centers=4, cluster_std=2.5, random_state=seed)
    base = kmeans(4).fit(X)
    plain = bootstrap_stability(X, kmeans, 4, n_boot=3, random_state=seed, base_model=base)
    # relabel the base partition
    renamed = bootstrap_stability(
        X, kmeans, 4, n_boot=3, random_state=seed, base_model=Relabelled(base, perm)
    )
    # relabel every bootstrap refit too
    both = bootstrap_stability(
        X,
        RecordingFactory(perm),
        4,
        n_boot=3,
        random_state=seed,
        base_model=Relabelled(base, perm),
    )
    assert renamed.ari == pytest.approx(plain.ari, abs=1e-12)
    assert both.ari == pytest.approx(plain.ari, abs=1e-12)
    for seg, jac in plain.jaccard.items():
        assert renamed.jaccard[perm[seg]] == pytest.approx(jac, abs=1e-12)
        assert both.jaccard[perm[seg]] == pytest.approx(jac, abs=1e-12)


# ------------------------------------------------------------------- temporal
def test_same_distribution_in_two_periods_matches_permuted_labels() -> None:
    A, _ = make_blobs(n_samples=1500, centers=CENTERS, cluster_std=1.0, random_state=1)
    B, _ = make_blobs(n_samples=1500, centers=CENTERS, cluster_std=1.0, random_state=2)
    perm = [2, 0, 3, 1]
    factory = RecordingFactory()
    permuting = RecordingFactory(perm)

    def make(k: int) -> Any:
        # first call is period A (plain labels), second is period B (renamed labels)
        return factory(k) if not factory.made else permuting(k)

    r = temporal_stability(A, B, make, 4, sample_size=1000)
    model_a, model_b = factory.made[0], permuting.made[0]
    assert r.ari >= 0.95
    assert r.agreement >= 0.97
    assert r.n_reference == 2000
    assert r.unmatched_a == () and r.unmatched_b == ()
    # the segment holding each true centre in period A maps to the one holding it in B
    expected = dict(
        zip(model_a.predict(CENTERS).tolist(), model_b.predict(CENTERS).tolist(), strict=True)
    )
    assert r.mapping == expected
    assert sorted(r.mapping.values()) == [0, 1, 2, 3]
    assert all(m.jaccard >= 0.95 for m in r.matches)
    json.dumps(r.to_dict(), allow_nan=False)


def test_a_shifted_segment_lowers_temporal_agreement() -> None:
    A, _ = make_blobs(n_samples=1500, centers=CENTERS, cluster_std=1.0, random_state=1)
    moved = CENTERS.copy()
    moved[3] = (20.0, 20.0)
    B, _ = make_blobs(n_samples=1500, centers=moved, cluster_std=1.0, random_state=2)
    same = temporal_stability(A, A[::-1].copy(), kmeans, 4, sample_size=1000)
    shifted = temporal_stability(A, B, kmeans, 4, sample_size=1000)
    assert same.ari >= 0.95
    assert shifted.ari < same.ari - 0.05
    assert min(m.jaccard for m in shifted.matches) < 0.8


def test_temporal_rejects_different_feature_counts() -> None:
    with pytest.raises(UserInputError, match="feature counts"):
        temporal_stability(np.zeros((20, 2)), np.zeros((20, 3)), kmeans, 2)


# ----------------------------------------------------------------- separation
@pytest.fixture(scope="module")
def feature_frame(blobs: tuple[np.ndarray, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
    X, y = blobs
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame(
        {
            "informative": X[:, 0] + 10 * X[:, 1],
            "noise": rng.normal(size=len(X)),
            "constant": 3.0,
        }
    )
    return frame, y


def test_separation_flags_the_informative_feature_not_noise(
    feature_frame: tuple[pd.DataFrame, np.ndarray],
) -> None:
    frame, y = feature_frame
    out = separation_tests(frame, y)
    assert list(out.index) == ["informative", "noise", "constant"]
    assert out.loc["informative", "separating"]
    assert not out.loc["noise", "separating"]
    assert not out.loc["constant", "separating"]
    assert out.loc["informative", "epsilon_squared"] > 0.5
    assert out.loc["noise", "epsilon_squared"] < 0.01
    assert out.loc["constant", "kruskal_p"] == 1.0
    assert out.loc["informative", "eta_squared"] > 0.9
    assert (out["n"] == 2000).all()


def test_separation_statistics_on_a_hand_checked_example() -> None:
    # groups {1,2,3} and {4,5,6}: H = 12/42 * (6**2/3 + 15**2/3) - 21 = 27/7
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    out = separation_tests(frame, ["a", "a", "a", "b", "b", "b"])
    row = out.loc["x"]
    assert row["kruskal_h"] == pytest.approx(27 / 7)
    assert row["epsilon_squared"] == pytest.approx((27 / 7) / 5)
    # SS_between = 13.5, SS_total = 17.5, F = 13.5 / (4 / 4)
    assert row["anova_f"] == pytest.approx(13.5)
    assert row["eta_squared"] == pytest.approx(13.5 / 17.5)


def test_separation_uses_a_bounded_sample_and_skips_missing_values() -> None:
    rng = np.random.default_rng(SEED)
    labels = rng.integers(0, 3, size=5000)
    x = labels + rng.normal(scale=0.3, size=5000)
    with_gaps = x.copy()
    with_gaps[::2] = np.nan
    frame = pd.DataFrame({"x": x, "gappy": with_gaps})
    out = separation_tests(frame, labels, sample_size=1000)
    assert out.loc["x", "n"] == 1000
    assert 300 < out.loc["gappy", "n"] < 700
    assert out["separating"].all()


def test_unassigned_labels_are_left_out_of_the_tests(
    feature_frame: tuple[pd.DataFrame, np.ndarray],
) -> None:
    frame, y = feature_frame
    labels = np.where(np.arange(len(y)) < 100, -1, y)
    out = separation_tests(frame, labels)
    assert (out["n"] == 1900).all()
    pairs = segment_distinction(frame, labels)
    assert set(pairs["segment_a"]) | set(pairs["segment_b"]) == {0, 1, 2, 3}


def test_separation_rejects_bad_input() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "name": ["a", "b", "c"]})
    with pytest.raises(UserInputError, match="non-numeric"):
        separation_tests(frame, [0, 1, 0])
    with pytest.raises(UserInputError, match="one entry per row"):
        separation_tests(frame[["x"]], [0, 1])
    with pytest.raises(UserInputError, match="DataFrame"):
        separation_tests(np.zeros((3, 1)), [0, 1, 0])  # type: ignore[arg-type]


def test_distinction_finds_two_segments_that_no_feature_tells_apart(
    feature_frame: tuple[pd.DataFrame, np.ndarray],
) -> None:
    frame, y = feature_frame
    labels = y.copy()
    # split true cluster 0 at random into segments 0 and 9
    rng = np.random.default_rng(SEED)
    labels[(y == 0) & (rng.random(len(y)) < 0.5)] = 9
    out = segment_distinction(frame, labels)
    assert len(out) == 10  # 5 segments -> 10 pairs
    pair = out[(out["segment_a"] == 0) & (out["segment_b"] == 9)].iloc[0]
    assert not pair["distinguished"]
    assert abs(pair["cliffs_delta"]) < 0.147
    others = out[~((out["segment_a"] == 0) & (out["segment_b"] == 9))]
    assert others["distinguished"].all()
    assert (others["feature"] == "informative").all()
    assert (others["cliffs_delta"].abs() >= 0.147).all()


# ------------------------------------------------------------------- warnings
def test_no_warnings_for_a_good_segmentation(
    blob_stability: StabilityResult,
    feature_frame: tuple[pd.DataFrame, np.ndarray],
) -> None:
    frame, y = feature_frame
    sizes = pd.Series(y).value_counts()
    warnings = segment_warnings(
        sizes,
        blob_stability,
        separation_tests(frame, y),
        distinction=segment_distinction(frame, y),
    )
    assert warnings == []


def test_warning_for_a_too_small_segment() -> None:
    warnings = segment_warnings({0: 600, 1: 390, 2: 10}, None, None, min_share=0.02)
    assert [w.code for w in warnings] == [WarningCode.TOO_SMALL]
    w = warnings[0]
    assert w.segments == (2,)
    assert w.value == pytest.approx(0.01)
    assert "segment 2" in w.message and "1.0%" in w.message and "2.0%" in w.message


def test_warnings_for_unstable_and_doubtful_segments(noise_stability: StabilityResult) -> None:
    warnings = segment_warnings(
        {s.segment: 100 for s in noise_stability.segments}, noise_stability, None
    )
    flagged = {w.segments[0]: w.code for w in warnings}
    expected = {s.segment: s.verdict for s in noise_stability.segments if s.verdict != "stable"}
    assert flagged == expected and flagged
    assert all("Jaccard" in w.message for w in warnings)

    made_up = StabilityResult(
        k=2,
        n_boot=10,
        sample_size=100,
        mean_ari=0.5,
        ari=(0.5,) * 10,
        segments=(
            SegmentStability(0, 50, 0.7, 0.1, 0.4, "doubtful"),
            SegmentStability(1, 50, 0.4, 0.8, 0.0, "unstable"),
        ),
    )
    codes = [w.code for w in segment_warnings({0: 50, 1: 50}, made_up, None)]
    assert codes == [WarningCode.DOUBTFUL, WarningCode.UNSTABLE]


def test_warning_when_no_feature_separates(
    feature_frame: tuple[pd.DataFrame, np.ndarray],
) -> None:
    frame, y = feature_frame
    separation = separation_tests(frame[["noise", "constant"]], y)
    warnings = segment_warnings({0: 1, 1: 1}, None, separation)
    assert [w.code for w in warnings] == [WarningCode.NO_SEPARATING_FEATURE]
    assert warnings[0].segments == ()


def test_warning_for_segments_not_distinguished(
    feature_frame: tuple[pd.DataFrame, np.ndarray],
) -> None:
    frame, y = feature_frame
    labels = np.where((y == 1) & (np.arange(len(y)) % 2 == 0), 7, y)
    distinction = segment_distinction(frame, labels)
    warnings = segment_warnings(
        pd.Series(labels).value_counts(), None, None, distinction=distinction
    )
    assert [(w.code, w.segments) for w in warnings] == [(WarningCode.NOT_DISTINGUISHED, (1, 7))]
    assert "segments 1 and 7" in warnings[0].message
    json.dumps([w.to_dict() for w in warnings], allow_nan=False)


def test_unassigned_customers_are_not_a_too_small_segment() -> None:
    warnings = segment_warnings({-1: 5, 0: 500, 1: 495, 2: 3}, None, None)
    assert [w.segments for w in warnings] == [(2,)]
    assert "0.3%" in warnings[0].message  # share of all customers, unassigned included


def test_warnings_accept_named_segments() -> None:
    warnings = segment_warnings({"champions": 990, "at risk": 10}, None, None)
    assert [w.segments for w in warnings] == [("at risk",)]


def test_warnings_reject_empty_sizes() -> None:
    with pytest.raises(UserInputError, match="sizes"):
        segment_warnings({}, None, None)
    with pytest.raises(UserInputError, match="sizes"):
        segment_warnings({0: 0, 1: 0}, None, None)
