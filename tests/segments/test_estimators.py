"""Tests of the clustering estimators (segmint.segments.estimators)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import cdist
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from segmint.errors import UserInputError
from segmint.segments.estimators import (
    SEGMENTERS,
    UNASSIGNED,
    DensitySegmenter,
    FuzzyCMeansSegmenter,
    GaussianMixtureSegmenter,
    KMeansSegmenter,
    SegmenterValueError,
    WardSegmenter,
    fuzzy_memberships,
    make_segmenter,
)

SEED = 20240611

# Four well separated blobs in three dimensions.
BLOB_CENTERS = np.array(
    [[0.0, 0.0, 0.0], [12.0, 0.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 12.0]], dtype=np.float64
)


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=800, centers=BLOB_CENTERS, cluster_std=1.0, random_state=SEED)
    return X, y


def _fitted_on_blobs(name: str) -> Any:
    """One estimator per algorithm, configured for the blobs data."""
    estimators: dict[str, Any] = {
        "kmeans": KMeansSegmenter(n_clusters=4, random_state=SEED),
        "gmm": GaussianMixtureSegmenter(n_components=4, random_state=SEED),
        "ward": WardSegmenter(n_clusters=4, sample_size=300, random_state=SEED),
        "hdbscan": DensitySegmenter(min_cluster_size=20, random_state=SEED),
        "dbscan": DensitySegmenter(
            method="dbscan", eps=1.5, min_samples=10, min_cluster_size=20, random_state=SEED
        ),
        "fcm": FuzzyCMeansSegmenter(n_clusters=4, random_state=SEED),
    }
    return estimators[name]


# --------------------------------------------------------- scikit-learn API
CONTRACT_ESTIMATORS = [
    KMeansSegmenter(n_clusters=3, random_state=0),
    GaussianMixtureSegmenter(n_components=3, random_state=0),
    WardSegmenter(n_clusters=3, random_state=0),
    DensitySegmenter(min_cluster_size=5, random_state=0),
    DensitySegmenter(method="dbscan", min_cluster_size=5, random_state=0),
    FuzzyCMeansSegmenter(n_clusters=3, random_state=0),
]


@parametrize_with_checks(CONTRACT_ESTIMATORS)
def test_follows_the_scikit_learn_contract(estimator: Any, check: Any) -> None:
    check(estimator)


# ---------------------------------------------------------- blob recovery
@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_recovers_well_separated_blobs(name: str, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    model = _fitted_on_blobs(name).fit(X)
    assert adjusted_rand_score(y, model.labels_) >= 0.95
    # Scoring the training rows reproduces the training labels.
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert model.labels_.dtype == np.int64
    assert model.cluster_centers_.shape == (4, 3)


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_is_deterministic_given_random_state(
    name: str, blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = blobs
    first = _fitted_on_blobs(name).fit(X)
    second = _fitted_on_blobs(name).fit(X)
    np.testing.assert_array_equal(first.labels_, second.labels_)
    np.testing.assert_array_equal(first.cluster_centers_, second.cluster_centers_)


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_records_feature_names_of_a_dataframe(
    name: str, blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = blobs
    frame = pd.DataFrame(X, columns=["recency", "frequency", "monetary"])
    model = _fitted_on_blobs(name).fit(frame)
    assert model.n_features_in_ == 3
    assert list(model.feature_names_in_) == ["recency", "frequency", "monetary"]
    np.testing.assert_array_equal(model.predict(frame), model.labels_)


@pytest.mark.parametrize(
    "estimator",
    [
        KMeansSegmenter(n_clusters=5),
        GaussianMixtureSegmenter(n_components=5),
        WardSegmenter(n_clusters=5),
        FuzzyCMeansSegmenter(n_clusters=5),
        DensitySegmenter(min_cluster_size=5),
    ],
    ids=lambda e: type(e).__name__,
)
def test_too_few_rows_is_a_clear_value_error(estimator: Any) -> None:
    X = np.arange(8.0).reshape(4, 2)
    with pytest.raises(SegmenterValueError, match="n_samples=4 should be >= ") as info:
        estimator.fit(X)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, UserInputError)


# ------------------------------------------------------------------ k-means
def test_kmeans_switches_to_minibatch_above_the_threshold(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = blobs
    small = KMeansSegmenter(n_clusters=4, minibatch_threshold=len(X), random_state=SEED).fit(X)
    large = KMeansSegmenter(
        n_clusters=4, minibatch_threshold=len(X) - 1, batch_size=256, random_state=SEED
    ).fit(X)
    assert type(small.estimator_) is KMeans
    assert type(large.estimator_) is MiniBatchKMeans
    assert adjusted_rand_score(y, large.labels_) >= 0.95


def test_kmeans_transform_and_inertia_are_euclidean(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    model = KMeansSegmenter(n_clusters=4, random_state=SEED).fit(X)
    distances = cdist(X, model.cluster_centers_)
    np.testing.assert_allclose(model.transform(X), distances, rtol=1e-10)
    np.testing.assert_allclose(model.inertia_, (distances.min(axis=1) ** 2).sum(), rtol=1e-10)
    assert list(model.get_feature_names_out()) == [f"kmeanssegmenter{k}" for k in range(4)]


@pytest.mark.filterwarnings(
    "ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"
)
@settings(max_examples=60, deadline=None)
@given(
    train=arrays(
        np.float64,
        st.tuples(st.integers(4, 30), st.integers(1, 4)),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    ),
    n_clusters=st.integers(1, 4),
    new_rows=st.lists(st.floats(-2e3, 2e3, allow_nan=False), min_size=4, max_size=40),
)
def test_kmeans_predict_is_the_nearest_centroid(
    train: np.ndarray, n_clusters: int, new_rows: list[float]
) -> None:
    model = KMeansSegmenter(n_clusters=n_clusters, n_init=1, random_state=0).fit(train)
    n_features = train.shape[1]
    usable = len(new_rows) - len(new_rows) % n_features
    X = np.vstack([train, np.asarray(new_rows[:usable]).reshape(-1, n_features)])
    labels = model.predict(X)
    distances = cdist(X, model.cluster_centers_)
    rows = np.arange(len(X))
    # The predicted centroid is a nearest one (ties may go either way) ...
    np.testing.assert_allclose(distances[rows, labels], distances.min(axis=1), rtol=1e-9, atol=1e-9)
    # ... and is *the* nearest one whenever that is unambiguous.
    ordered = np.sort(distances, axis=1)
    clear = (
        ordered[:, 1] - ordered[:, 0] > 1e-6 * (1 + ordered[:, 0])
        if n_clusters > 1
        else np.ones(len(X), dtype=bool)
    )
    np.testing.assert_array_equal(labels[clear], distances.argmin(axis=1)[clear])


# ---------------------------------------------------------- Gaussian mixture
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_predict_is_argmax_of_decomposed_log_densities(
    covariance_type: str, blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = blobs
    # Three components for four blobs, so that posteriors are not all 0/1.
    gmm = GaussianMixtureSegmenter(
        n_components=3, covariance_type=covariance_type, random_state=SEED
    ).fit(X)
    rng = np.random.default_rng(SEED)
    X_new = np.vstack([X, rng.uniform(-5, 17, size=(200, 3))])
    joint = np.log(gmm.weights_) + gmm.component_log_density(X_new)
    np.testing.assert_array_equal(gmm.predict(X_new), joint.argmax(axis=1))
    np.testing.assert_allclose(gmm.predict_proba(X_new), softmax(joint, axis=1), atol=1e-10)
    np.testing.assert_allclose(gmm.score_samples(X_new), logsumexp(joint, axis=1), rtol=1e-10)
    np.testing.assert_array_equal(gmm.cluster_centers_, gmm.means_)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_component_log_density_is_the_normal_log_pdf(covariance_type: str) -> None:
    rng = np.random.default_rng(SEED)
    X = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal([6, -3], [2, 0.5], (60, 2))])
    gmm = GaussianMixtureSegmenter(
        n_components=2, covariance_type=covariance_type, random_state=SEED
    ).fit(X)
    for k in range(2):
        if covariance_type == "full":
            cov = gmm.covariances_[k]
        elif covariance_type == "tied":
            cov = gmm.covariances_
        elif covariance_type == "diag":
            cov = np.diag(gmm.covariances_[k])
        else:
            cov = gmm.covariances_[k] * np.eye(2)
        expected = multivariate_normal(mean=gmm.means_[k], cov=cov).logpdf(X)
        np.testing.assert_allclose(gmm.component_log_density(X)[:, k], expected, rtol=1e-8)


def test_gmm_bic_prefers_the_true_number_of_components(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = blobs
    bics = {
        k: GaussianMixtureSegmenter(n_components=k, random_state=SEED).fit(X).bic(X)
        for k in (2, 4, 6)
    }
    assert min(bics, key=bics.__getitem__) == 4


# --------------------------------------------------------------------- Ward
def test_ward_fits_a_sample_and_labels_every_row() -> None:
    X, y = make_blobs(n_samples=3000, centers=BLOB_CENTERS, cluster_std=1.0, random_state=SEED)
    ward = WardSegmenter(n_clusters=4, sample_size=250, random_state=SEED).fit(X)
    idx = ward.sample_indices_
    assert len(idx) == 250 and len(np.unique(idx)) == 250
    assert ward.labels_.shape == (3000,)
    assert set(ward.labels_.tolist()) == {0, 1, 2, 3}
    assert adjusted_rand_score(y, ward.labels_) >= 0.95
    # Centroids are the means of the Ward clusters of the sample.
    sample_labels = ward.estimator_.labels_
    for k in range(4):
        np.testing.assert_allclose(ward.cluster_centers_[k], X[idx][sample_labels == k].mean(0))
    # Labels of all rows are the nearest centroid.
    np.testing.assert_array_equal(ward.labels_, cdist(X, ward.cluster_centers_).argmin(axis=1))


def test_ward_sample_depends_on_random_state() -> None:
    X, _ = make_blobs(n_samples=500, centers=BLOB_CENTERS, random_state=SEED)
    a = WardSegmenter(n_clusters=4, sample_size=100, random_state=1).fit(X)
    b = WardSegmenter(n_clusters=4, sample_size=100, random_state=2).fit(X)
    assert not np.array_equal(a.sample_indices_, b.sample_indices_)
    full = WardSegmenter(n_clusters=4, sample_size=10_000).fit(X)
    np.testing.assert_array_equal(full.sample_indices_, np.arange(500))


# ------------------------------------------------------------------ density
@pytest.fixture(scope="module")
def blobs_with_noise(
    blobs: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blobs plus 30 isolated points on a sphere of radius 60 around them."""
    X, y = blobs
    rng = np.random.default_rng(SEED)
    directions = rng.normal(size=(30, 3))
    noise = 4.0 + 60.0 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    is_noise = np.r_[np.zeros(len(X), dtype=bool), np.ones(30, dtype=bool)]
    return np.vstack([X, noise]), np.r_[y, np.full(30, -1)], is_noise


@pytest.mark.parametrize("method", ["hdbscan", "dbscan"])
def test_density_labels_planted_noise_as_unassigned(
    method: str, blobs_with_noise: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    X, y, is_noise = blobs_with_noise
    model = _fitted_on_blobs(method).fit(X)
    assert UNASSIGNED == -1
    assert model.n_clusters_ == 4
    assert (model.labels_[is_noise] == UNASSIGNED).all()
    assert adjusted_rand_score(y[~is_noise], model.labels_[~is_noise]) >= 0.95
    far = np.array([[500.0, 500.0, 500.0], [-300.0, 0.0, 40.0]])
    assert model.predict(far).tolist() == [UNASSIGNED, UNASSIGNED]
    np.testing.assert_array_equal(model.predict(X), model.labels_)


def test_density_predict_is_nearest_centroid_within_radius(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = blobs
    model = DensitySegmenter(min_cluster_size=20, random_state=SEED).fit(X)
    centers, radius = model.cluster_centers_, model.cluster_radius_
    for k in range(model.n_clusters_):
        others = np.delete(centers, k, axis=0)
        away = centers[k] - others[cdist(centers[k : k + 1], others).argmin()]
        away /= np.linalg.norm(away)
        inside = centers[k] + 0.99 * radius[k] * away
        outside = centers[k] + 1.01 * radius[k] * away
        assert model.predict(np.vstack([inside, outside])).tolist() == [k, UNASSIGNED]
    # With radius_quantile=1 the radius is the farthest member's distance.
    distances = cdist(X, centers)
    members = model.labels_ >= 0
    own = distances[members, model.labels_[members]]
    assert (own <= radius[model.labels_[members]]).all()


def test_dbscan_turns_clusters_below_min_cluster_size_into_noise() -> None:
    rng = np.random.default_rng(SEED)
    big_a = rng.normal([0, 0], 0.3, size=(60, 2))
    big_b = rng.normal([10, 0], 0.3, size=(60, 2))
    small = rng.normal([0, 10], 0.3, size=(8, 2))
    X = np.vstack([big_a, big_b, small])
    model = DensitySegmenter(method="dbscan", eps=0.8, min_cluster_size=20).fit(X)
    assert model.n_clusters_ == 2
    assert (model.labels_[-8:] == UNASSIGNED).all()
    assert (model.labels_[:120] >= 0).all()
    fraction = DensitySegmenter(method="dbscan", eps=0.8, min_cluster_size=0.1).fit(X)
    assert fraction.min_cluster_size_ == 13
    assert fraction.n_clusters_ == 2


def test_density_with_no_cluster_assigns_nobody() -> None:
    X = np.arange(20.0).reshape(10, 2) * 100.0
    model = DensitySegmenter(method="dbscan", eps=0.5, min_cluster_size=5).fit(X)
    assert model.n_clusters_ == 0
    assert model.cluster_centers_.shape == (0, 2)
    assert (model.labels_ == UNASSIGNED).all()
    assert (model.predict(X[:3]) == UNASSIGNED).all()


def test_density_sample_is_bounded_and_seeded(
    blobs_with_noise: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, _, _ = blobs_with_noise
    a = DensitySegmenter(min_cluster_size=10, sample_size=400, random_state=1).fit(X)
    b = DensitySegmenter(min_cluster_size=10, sample_size=400, random_state=2).fit(X)
    assert len(a.sample_indices_) == 400
    assert not np.array_equal(a.sample_indices_, b.sample_indices_)
    assert a.labels_.shape == (len(X),)


# ------------------------------------------------------------ fuzzy c-means
def test_fcm_memberships_sum_to_one_and_argmax_is_nearest_centroid(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = blobs
    fcm = FuzzyCMeansSegmenter(n_clusters=4, random_state=SEED).fit(X)
    rng = np.random.default_rng(SEED)
    X_new = np.vstack([X, rng.uniform(-5, 17, size=(300, 3))])
    proba = fcm.predict_proba(X_new)
    assert proba.shape == (len(X_new), 4)
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    nearest = cdist(X_new, fcm.cluster_centers_).argmin(axis=1)
    np.testing.assert_array_equal(proba.argmax(axis=1), nearest)
    np.testing.assert_array_equal(fcm.predict(X_new), nearest)


def test_fcm_reaches_bezdeks_fixed_point(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    fcm = FuzzyCMeansSegmenter(n_clusters=3, m=2.0, tol=1e-9, random_state=SEED).fit(X)
    weights = fcm.predict_proba(X) ** 2.0
    centers = weights.T @ X / weights.sum(axis=0)[:, None]
    np.testing.assert_allclose(fcm.cluster_centers_, centers, atol=1e-6)
    assert fcm.n_iter_ >= 1
    expected_objective = (weights * cdist(X, fcm.cluster_centers_, "sqeuclidean")).sum()
    np.testing.assert_allclose(fcm.objective_, expected_objective, rtol=1e-8)


@pytest.mark.parametrize(("m", "expected"), [(2.0, 81 / 82), (3.0, 0.9)])
def test_fcm_membership_matches_hand_computation(m: float, expected: float) -> None:
    # Centres converge to exactly 0 and 10; the point 1 is at distances 1 and 9.
    X = np.array([[0.0], [0.0], [0.0], [10.0], [10.0], [10.0]])
    fcm = FuzzyCMeansSegmenter(n_clusters=2, m=m, random_state=SEED).fit(X)
    order = np.argsort(fcm.cluster_centers_[:, 0])
    np.testing.assert_allclose(fcm.cluster_centers_[order, 0], [0.0, 10.0], atol=1e-12)
    proba = fcm.predict_proba(np.array([[1.0]]))[0, order]
    np.testing.assert_allclose(proba, [expected, 1 - expected], rtol=1e-12)


def test_fuzzy_memberships_of_a_point_on_a_centre() -> None:
    d2 = np.array([[0.0, 4.0, 0.0], [1.0, 1.0, 4.0]])
    u = fuzzy_memberships(d2, 2.0)
    np.testing.assert_allclose(u[0], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(u[1], [4 / 9, 4 / 9, 1 / 9])


@pytest.mark.parametrize("m", [1.0, 0.5, float("nan"), "2"])
def test_fcm_rejects_a_fuzzifier_not_above_one(m: Any) -> None:
    with pytest.raises(ValueError, match="m: must be a number"):
        FuzzyCMeansSegmenter(n_clusters=2, m=m).fit(np.arange(10.0).reshape(5, 2))


# ------------------------------------------------------------------- factory
@pytest.mark.parametrize(
    ("algorithm", "cls", "params"),
    [
        ("kmeans", KMeansSegmenter, {"n_clusters": 5}),
        ("gmm", GaussianMixtureSegmenter, {"n_components": 5}),
        ("ward", WardSegmenter, {"n_clusters": 5}),
        ("fcm", FuzzyCMeansSegmenter, {"n_clusters": 5}),
        (" KMeans ", KMeansSegmenter, {"n_clusters": 5}),
    ],
)
def test_make_segmenter_builds_the_named_estimator(
    algorithm: str, cls: type[Any], params: dict[str, int]
) -> None:
    model = make_segmenter(algorithm, 5, 7)
    assert type(model) is cls
    assert model.get_params()["random_state"] == 7
    for key, value in params.items():
        assert model.get_params()[key] == value


@pytest.mark.parametrize("method", ["hdbscan", "dbscan"])
def test_make_segmenter_density_methods(method: str) -> None:
    model = make_segmenter(method, None, 3)
    assert isinstance(model, DensitySegmenter)
    assert model.method == method
    assert model.random_state == 3
    with pytest.raises(UserInputError, match="n_clusters"):
        make_segmenter(method, 4, 3)


def test_make_segmenter_rejects_an_unknown_algorithm() -> None:
    with pytest.raises(UserInputError, match="unknown clustering algorithm 'spectral'") as info:
        make_segmenter("spectral", 4, 0)
    assert info.value.where == "algorithm"
    assert "kmeans" in str(info.value)


def test_make_segmenter_keeps_the_default_k_when_none() -> None:
    assert make_segmenter("kmeans", None, 0).get_params()["n_clusters"] == 8
