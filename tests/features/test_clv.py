"""Tests of the CLV models (BG/NBD, Gamma-Gamma) and the RFM summary they use."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import beta as beta_fn
from scipy.special import gamma as gamma_fn
from scipy.special import hyp2f1
from sklearn.base import clone

from segmint.errors import DataValidationError, NotFittedError, UserInputError
from segmint.features.clv import BetaGeoModel, GammaGammaModel, rfm_summary

FloatArray = npt.NDArray[np.float64]

# Fader, Hardie & Lee (2005), CDNOW 1/10 sample, 39-week calibration, weeks.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_BGNBD_LL = -9582.4
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "v": 15.44}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240607)


@pytest.fixture
def published() -> BetaGeoModel:
    return BetaGeoModel.from_params(**PUBLISHED_BGNBD)


def simulate_bgnbd(
    rng: np.random.Generator,
    n: int,
    *,
    r: float,
    alpha: float,
    a: float,
    b: float,
    t_max: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Draw (frequency, recency, T) from the BG/NBD generative process.

    Time 0 is the first purchase. While alive, purchases arrive at rate lambda;
    after each repeat purchase the customer drops out with probability p.
    """
    rates = rng.gamma(r, 1.0 / alpha, n)
    dropout = rng.beta(a, b, n)
    age = rng.uniform(t_max / 4, t_max, n)
    frequency = np.zeros(n)
    recency = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1.0 / rates[i])
            if t > age[i]:
                break
            frequency[i] += 1
            recency[i] = t
            if rng.random() < dropout[i]:
                break
    return frequency, recency, age


# --------------------------------------------------------------------------- BG/NBD formulas


def paper_likelihood(
    r: float, alpha: float, a: float, b: float, x: int, tx: float, T: float
) -> float:
    """FHL (2005) eq. 6, written out with gamma and beta functions."""
    front = gamma_fn(r + x) * alpha**r / gamma_fn(r)
    value = beta_fn(a, b + x) / beta_fn(a, b) * front / (alpha + T) ** (r + x)
    if x > 0:
        value += beta_fn(a + 1, b + x - 1) / beta_fn(a, b) * front / (alpha + tx) ** (r + x)
    return float(value)


def paper_expected_purchases(
    r: float, alpha: float, a: float, b: float, t: float, x: int, tx: float, T: float
) -> float:
    """FHL (2005) eq. 10, in the paper's own form (no transformation)."""
    c = a + b + x - 1
    head = c / (a - 1)
    tail = ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, c, t / (alpha + T + t))
    denominator = 1 + (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x)
    return float(head * (1 - tail) / denominator)


def integrated_expected_purchases(
    r: float, alpha: float, a: float, b: float, t: float, x: int, tx: float, T: float
) -> float:
    """E[Y(t) | x, t_x, T] by numerical integration over the dropout probability.

    Given alive at T, lambda ~ Gamma(r + x, alpha + T) and p ~ Beta(a, b + x); given
    both, E[purchases in t] = (1 - exp(-lambda p t)) / p. Integrating lambda out
    analytically leaves a one-dimensional integral over p.
    """
    density = stats.beta(a, b + x)

    def integrand(p: float) -> float:
        return float((1 - ((alpha + T) / (alpha + T + p * t)) ** (r + x)) / p * density.pdf(p))

    lo, hi = density.ppf(1e-12), density.ppf(1 - 1e-12)
    value, _ = integrate.quad(integrand, lo, hi, points=[density.mean()], limit=200)
    alive = 1.0
    if x > 0:
        alive = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x))
    return float(value * alive)


@pytest.mark.parametrize(
    ("x", "tx", "T"),
    [(0, 0.0, 38.86), (1, 1.71, 38.86), (2, 30.43, 38.86), (7, 12.5, 20.0), (3, 5.0, 5.0)],
)
def test_log_likelihood_of_one_customer_matches_paper_formula(x: int, tx: float, T: float) -> None:
    model = BetaGeoModel.from_params(**PUBLISHED_BGNBD)
    expected = math.log(paper_likelihood(**PUBLISHED_BGNBD, x=x, tx=tx, T=T))
    assert model.log_likelihood(x, tx, T) == pytest.approx(expected, rel=1e-12)


def test_probability_alive_is_one_without_repeat_purchase(published: BetaGeoModel) -> None:
    alive = published.probability_alive([0, 0, 0], [0, 0, 0], [0.0, 10.0, 1000.0])
    assert alive.tolist() == [1.0, 1.0, 1.0]


def test_probability_alive_matches_hand_computation(published: BetaGeoModel) -> None:
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    x, tx, T = 2, 30.43, 38.86
    by_hand = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x))
    assert published.probability_alive(x, tx, T) == pytest.approx(by_hand, rel=1e-12)
    # A customer who bought recently is more likely alive than one who went quiet.
    assert published.probability_alive(x, 38.0, T) > published.probability_alive(x, 5.0, T)


@pytest.mark.parametrize(
    ("t", "x", "tx", "T"),
    [(39.0, 2, 30.43, 38.86), (39.0, 0, 0.0, 38.86), (10.0, 5, 20.0, 30.0), (1.0, 1, 0.5, 1.0)],
)
def test_expected_purchases_matches_paper_eq_10(
    published: BetaGeoModel, t: float, x: int, tx: float, T: float
) -> None:
    expected = paper_expected_purchases(**PUBLISHED_BGNBD, t=t, x=x, tx=tx, T=T)
    assert published.expected_purchases(t, x, tx, T) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("params", "t", "x", "tx", "T"),
    [
        (PUBLISHED_BGNBD, 39.0, 300, 38.0, 38.86),  # very frequent buyer
        (PUBLISHED_BGNBD, 390.0, 2000, 38.0, 38.86),  # the paper's form overflows here
        ({"r": 0.7, "alpha": 7.0, "a": 400.0, "b": 1200.0}, 39.0, 3, 20.0, 39.0),
        ({"r": 0.7, "alpha": 7.0, "a": 2e5, "b": 6e5}, 10.0, 5, 35.0, 39.0),  # Euler overflows
        ({"r": 0.3, "alpha": 2.0, "a": 3.0, "b": 0.5}, 1000.0, 30, 10.0, 10.0),
        # integer parameters where scipy's hyp2f1 returns inf in both forms
        ({"r": 1.0, "alpha": 0.5, "a": 2.0, "b": 1.0}, 5.0, 101, 0.0, 0.0),
        ({"r": 1.0, "alpha": 0.5, "a": 2.0, "b": 1.0}, 5.0, 99, 0.0, 0.0),
        ({"r": 1.0, "alpha": 1.0, "a": 5.0, "b": 1.0}, 74.0, 99, 0.0, 0.0),
        # x = 0 and a + b = 1: 2F1 has a pole at c = a + b + x - 1 = 0, the product does not
        ({"r": 4.0, "alpha": 10.7, "a": 0.5, "b": 0.5}, 68.0, 0, 0.0, 0.0),
    ],
)
def test_expected_purchases_is_accurate_at_extreme_values(
    params: dict[str, float], t: float, x: int, tx: float, T: float
) -> None:
    model = BetaGeoModel.from_params(**params)
    expected = integrated_expected_purchases(**params, t=t, x=x, tx=tx, T=T)
    assert model.expected_purchases(t, x, tx, T) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("params", "x", "varied"),
    [
        ({"r": 0.5, "alpha": 5.0, "a": 1.0, "b": 2.0}, 3, "a"),  # c / (a - 1) is 0 / 0
        ({"r": 4.0, "alpha": 10.7, "a": 0.5, "b": 0.5}, 0, "b"),  # c = a + b - 1 = 0
    ],
)
def test_expected_purchases_is_continuous_at_removable_singularities(
    params: dict[str, float], x: int, varied: str
) -> None:
    tx, T = (10.0, 15.0) if x else (0.0, 15.0)
    value = BetaGeoModel.from_params(**params).expected_purchases(20.0, x, tx, T)
    assert np.isfinite(value) and value > 0
    for step in (-1e-4, 1e-4):
        moved = dict(params, **{varied: params[varied] + step})
        nearby = BetaGeoModel.from_params(**moved).expected_purchases(20.0, x, tx, T)
        assert nearby == pytest.approx(value, rel=1e-3)


def test_expected_purchases_new_matches_eq_9_and_a_new_customer(published: BetaGeoModel) -> None:
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    t = np.array([0.0, 1.0, 39.0, 78.0])
    eq_9 = (
        (a + b - 1)
        / (a - 1)
        * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))
    )
    new = published.expected_purchases_new(t)
    np.testing.assert_allclose(new, eq_9, rtol=1e-10)
    np.testing.assert_allclose(new, published.expected_purchases(t, 0, 0, 0), rtol=1e-12)
    assert new[0] == 0.0


def test_predictions_broadcast_a_scalar_horizon(published: BetaGeoModel) -> None:
    values = published.expected_purchases(39.0, [0, 2, 5], [0, 30.43, 38.0], 38.86)
    assert values.shape == (3,)
    one = published.expected_purchases(39.0, 2, 30.43, 38.86)
    assert values[1] == pytest.approx(float(one))


# --------------------------------------------------------------------------- BG/NBD fitting


@pytest.fixture
def simulated(rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray]:
    return simulate_bgnbd(rng, 6000, r=1.0, alpha=4.0, a=0.8, b=2.5, t_max=104.0)


def test_fit_recovers_simulated_parameters(
    simulated: tuple[FloatArray, FloatArray, FloatArray],
) -> None:
    model = BetaGeoModel().fit(*simulated)
    assert model.converged_
    truth = {"r": 1.0, "alpha": 4.0, "a": 0.8, "b": 2.5}
    for name, value in truth.items():
        assert model.params_[name] == pytest.approx(value, rel=0.15), name
    fitted = model.params_
    assert fitted["a"] / (fitted["a"] + fitted["b"]) == pytest.approx(0.8 / 3.3, abs=0.03)


def test_fit_is_a_maximum_of_the_likelihood(
    simulated: tuple[FloatArray, FloatArray, FloatArray],
) -> None:
    model = BetaGeoModel().fit(*simulated)
    best = float(model.log_likelihood(*simulated).sum())
    assert best == pytest.approx(model.log_likelihood_)
    for name in ("r", "alpha", "a", "b"):
        for factor in (0.99, 1.01):
            moved = dict(model.params_, **{name: model.params_[name] * factor})
            other = BetaGeoModel.from_params(**moved).log_likelihood(*simulated).sum()
            assert other < best, (name, factor)


def test_fit_is_invariant_to_the_time_unit(
    simulated: tuple[FloatArray, FloatArray, FloatArray],
) -> None:
    frequency, recency, age = simulated
    weeks = BetaGeoModel().fit(frequency, recency, age)
    days = BetaGeoModel().fit(frequency, recency * 7, age * 7)
    assert days.params_["alpha"] == pytest.approx(7 * weeks.params_["alpha"], rel=1e-4)
    for name in ("r", "a", "b"):
        assert days.params_[name] == pytest.approx(weeks.params_[name], rel=1e-4)


def test_weights_equal_repeated_rows() -> None:
    frequency = np.array([0, 1, 2, 0, 4, 1])
    recency = np.array([0.0, 3.0, 20.0, 0.0, 35.0, 30.0])
    age = np.array([39.0, 39.0, 30.0, 20.0, 39.0, 35.0])
    weights = np.array([30, 5, 4, 20, 3, 6])
    aggregated = BetaGeoModel().fit(frequency, recency, age, weights=weights)
    expanded = BetaGeoModel().fit(
        np.repeat(frequency, weights), np.repeat(recency, weights), np.repeat(age, weights)
    )
    for name in ("r", "alpha", "a", "b"):
        assert aggregated.params_[name] == pytest.approx(expanded.params_[name], rel=1e-4)
    assert aggregated.log_likelihood_ == pytest.approx(expanded.log_likelihood_, rel=1e-8)
    assert aggregated.n_customers_ == int(weights.sum())


def test_penalizer_shrinks_parameters(
    simulated: tuple[FloatArray, FloatArray, FloatArray],
) -> None:
    plain = BetaGeoModel().fit(*simulated)
    shrunk = BetaGeoModel(penalizer=0.1).fit(*simulated)
    size = sum(v**2 for v in plain.params_.values())
    assert sum(v**2 for v in shrunk.params_.values()) < size
    assert shrunk.log_likelihood_ < plain.log_likelihood_


def test_estimator_follows_sklearn_conventions() -> None:
    model = BetaGeoModel(penalizer=0.01, tol=1e-8)
    assert model.get_params() == {"penalizer": 0.01, "tol": 1e-8, "max_iter": 2000}
    fitted = model.fit([0, 1, 3], [0, 2.0, 9.0], [10.0, 10.0, 10.0])
    assert fitted is model
    assert not hasattr(clone(model), "params_")
    with pytest.raises(TypeError):
        BetaGeoModel(0.01)  # type: ignore[misc]


# --------------------------------------------------------------------------- BG/NBD properties

bgnbd_params = st.fixed_dictionaries(
    {
        "r": st.floats(0.05, 5.0),
        "alpha": st.floats(0.1, 50.0),
        "a": st.floats(0.1, 5.0),
        "b": st.floats(0.1, 10.0),
    }
)


@settings(max_examples=80, deadline=None)
@given(
    params=bgnbd_params,
    x=st.integers(0, 200),
    share=st.floats(0.0, 1.0),
    T=st.floats(0.0, 100.0),
    t1=st.floats(0.0, 200.0),
    t2=st.floats(0.0, 200.0),
)
def test_bgnbd_predictions_are_well_behaved(
    params: dict[str, float], x: int, share: float, T: float, t1: float, t2: float
) -> None:
    model = BetaGeoModel.from_params(**params)
    tx = share * T if x > 0 else 0.0
    alive = float(model.probability_alive(x, tx, T))
    assert 0.0 <= alive <= 1.0
    short, long = sorted((t1, t2))
    first, second = model.expected_purchases([short, long], x, tx, T)
    assert np.isfinite(first) and np.isfinite(second)
    # Non-decreasing up to rounding (c / (a - 1) magnifies it when a is near 1).
    assert 0.0 <= first <= second * (1 + 1e-9) + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    params=bgnbd_params,
    x=st.integers(1, 100),
    T=st.floats(0.5, 100.0),
    t=st.floats(0.1, 100.0),
    share=st.floats(0.0, 1.0),
)
def test_bgnbd_more_and_more_recent_purchases_mean_more_future_purchases(
    params: dict[str, float], x: int, T: float, t: float, share: float
) -> None:
    model = BetaGeoModel.from_params(**params)
    # Same recency and T (both at the end of the period): more purchases, more expected.
    fewer, more = model.expected_purchases(t, [x, x + 1], [T, T], T)
    assert more >= fewer * (1 - 1e-9)
    # Same frequency and T: a later last purchase means more alive and more expected.
    early, late = model.expected_purchases(t, x, [share * T, T], T)
    assert late >= early * (1 - 1e-9)
    assert model.probability_alive(x, T, T) >= model.probability_alive(x, share * T, T) - 1e-12


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([1, -1], [1.0, 0.0], [2.0, 2.0], "frequency must be >= 0"),
        ([1, 1.5], [1.0, 1.0], [2.0, 2.0], "whole number"),
        ([1, 1], [1.0, -1.0], [2.0, 2.0], "recency must be >= 0"),
        ([1, 1], [1.0, 1.0], [2.0, -2.0], "T must be >= 0"),
        ([1, 2], [1.0, 3.0], [2.0, 2.0], "cannot exceed T"),
        ([0, 1], [0.5, 1.0], [2.0, 2.0], "recency must be 0 for customers with frequency 0"),
        ([1, 2, 3], [1.0, 1.0], [2.0, 2.0], "mismatched lengths"),
        ([1, np.nan], [1.0, 1.0], [2.0, 2.0], "missing or infinite"),
        ([], [], [], "empty"),
        (["a"], [1.0], [2.0], "numeric"),
    ],
)
def test_bgnbd_rejects_bad_input(
    frequency: list[float], recency: list[float], T: list[float], message: str
) -> None:
    with pytest.raises(UserInputError, match=message):
        BetaGeoModel().fit(frequency, recency, T)


def test_bgnbd_predictions_validate_input(published: BetaGeoModel) -> None:
    with pytest.raises(UserInputError, match="cannot exceed T"):
        published.probability_alive(1, 5.0, 4.0)
    with pytest.raises(UserInputError, match="mismatched lengths"):
        published.expected_purchases(1.0, [1, 2], [1.0, 2.0, 3.0], 4.0)
    with pytest.raises(UserInputError, match="t .* must be >= 0"):
        published.expected_purchases(-1.0, 1, 1.0, 4.0)
    with pytest.raises(UserInputError, match="t .* must be >= 0"):
        published.expected_purchases_new(-1.0)


@pytest.mark.parametrize(
    "model",
    [BetaGeoModel(penalizer=-1.0), BetaGeoModel(tol=0.0), BetaGeoModel(max_iter=0)],
)
def test_bgnbd_rejects_bad_hyper_parameters(model: BetaGeoModel) -> None:
    with pytest.raises(UserInputError):
        model.fit([1, 0], [1.0, 0.0], [2.0, 2.0])


def test_from_params_rejects_non_positive_values() -> None:
    with pytest.raises(UserInputError, match="alpha"):
        BetaGeoModel.from_params(r=1.0, alpha=0.0, a=1.0, b=1.0)
    with pytest.raises(UserInputError, match="q"):
        GammaGammaModel.from_params(p=1.0, q=-2.0, v=1.0)


def test_unfitted_models_raise_not_fitted() -> None:
    bgnbd = BetaGeoModel()
    for call in (
        lambda: bgnbd.probability_alive(1, 1.0, 2.0),
        lambda: bgnbd.expected_purchases(1.0, 1, 1.0, 2.0),
        lambda: bgnbd.expected_purchases_new(1.0),
        lambda: bgnbd.log_likelihood(1, 1.0, 2.0),
    ):
        with pytest.raises(NotFittedError):
            call()
    spend = GammaGammaModel()
    with pytest.raises(NotFittedError):
        spend.conditional_expected_average_profit(1, 10.0)
    fitted_spend = GammaGammaModel.from_params(p=6.0, q=4.0, v=15.0)
    with pytest.raises(NotFittedError):
        fitted_spend.customer_lifetime_value(bgnbd, 1, 1.0, 2.0, 10.0, 12, 0.01)


# --------------------------------------------------------------------------- Gamma-Gamma


def simulate_spend(
    rng: np.random.Generator, n: int, *, p: float, q: float, v: float
) -> tuple[FloatArray, FloatArray]:
    """Draw (x, mean spend) with x ~ 1 + Poisson(3) transactions per customer."""
    frequency = 1 + rng.poisson(3.0, n)
    nu = rng.gamma(q, 1.0 / v, n)
    means = np.array([rng.gamma(p, 1.0 / nu[i], frequency[i]).mean() for i in range(n)])
    return frequency.astype(float), means


def test_gamma_gamma_likelihood_of_one_customer_matches_formula() -> None:
    p, q, v, x, m = 6.25, 3.74, 15.44, 3, 42.0
    by_hand = (
        gamma_fn(p * x + q) / (gamma_fn(p * x) * gamma_fn(q))
        * v**q * m ** (p * x - 1) * x ** (p * x) / (v + x * m) ** (p * x + q)
    )  # fmt: skip
    model = GammaGammaModel.from_params(p=p, q=q, v=v)
    ll = model.log_likelihood([x, 0], [m, np.nan])
    assert ll[0] == pytest.approx(math.log(by_hand), rel=1e-12)
    assert np.isnan(ll[1])


def test_gamma_gamma_fit_is_a_maximum_of_the_likelihood(rng: np.random.Generator) -> None:
    frequency, means = simulate_spend(rng, 500, p=6.0, q=4.0, v=15.0)
    model = GammaGammaModel().fit(frequency, means)
    best = float(model.log_likelihood(frequency, means).sum())
    assert best == pytest.approx(model.log_likelihood_)
    for name in ("p", "q", "v"):
        for factor in (0.99, 1.01):
            moved = dict(model.params_, **{name: model.params_[name] * factor})
            other = GammaGammaModel.from_params(**moved).log_likelihood(frequency, means).sum()
            assert other < best, (name, factor)


def test_gamma_gamma_recovers_simulated_parameters(rng: np.random.Generator) -> None:
    frequency, means = simulate_spend(rng, 4000, p=6.0, q=4.0, v=15.0)
    model = GammaGammaModel().fit(frequency, means)
    assert model.converged_
    assert model.n_customers_ == 4000
    for name, value in {"p": 6.0, "q": 4.0, "v": 15.0}.items():
        assert model.params_[name] == pytest.approx(value, rel=0.2), name
    population_mean = model.params_["p"] * model.params_["v"] / (model.params_["q"] - 1)
    assert population_mean == pytest.approx(6.0 * 15.0 / 3.0, rel=0.1)


def test_gamma_gamma_ignores_customers_without_repeat_purchase(rng: np.random.Generator) -> None:
    frequency, means = simulate_spend(rng, 300, p=6.0, q=4.0, v=15.0)
    alone = GammaGammaModel().fit(frequency, means)
    with_zeros = GammaGammaModel().fit(
        np.concatenate([frequency, [0, 0]]), np.concatenate([means, [np.nan, 0.0]])
    )
    assert with_zeros.n_customers_ == 300
    assert with_zeros.params_ == pytest.approx(alone.params_)


def test_conditional_expected_average_profit_by_hand() -> None:
    model = GammaGammaModel.from_params(p=6.25, q=3.74, v=15.44)
    population = 6.25 * 15.44 / 2.74
    values = model.conditional_expected_average_profit([0, 1, 10], [np.nan, 50.0, 50.0])
    assert values[0] == pytest.approx(population)
    assert values[1] == pytest.approx(6.25 * (15.44 + 50.0) / (6.25 + 2.74))
    assert values[2] == pytest.approx(6.25 * (15.44 + 500.0) / (62.5 + 2.74))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    p=st.floats(0.5, 20.0),
    q=st.floats(1.1, 20.0),
    v=st.floats(0.1, 100.0),
    x=st.integers(1, 500),
    m=st.floats(0.01, 10_000.0),
)
def test_expected_spend_lies_between_own_and_population_mean(
    p: float, q: float, v: float, x: int, m: float
) -> None:
    model = GammaGammaModel.from_params(p=p, q=q, v=v)
    population = p * v / (q - 1)
    value = float(model.conditional_expected_average_profit(x, m))
    lo, hi = sorted((population, m))
    assert lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9)


@pytest.mark.parametrize(
    ("frequency", "monetary", "message"),
    [
        ([1, 2], [10.0, 0.0], "finite and > 0"),
        ([1, 2], [10.0, np.nan], "finite and > 0"),
        ([1, 2], [10.0, -5.0], "finite and > 0"),
        ([1, 2, 3], [10.0, 5.0], "mismatched lengths"),
        ([0, 0], [np.nan, np.nan], "no customer has a repeat purchase"),
        ([1.5, 2], [10.0, 5.0], "whole number"),
    ],
)
def test_gamma_gamma_rejects_bad_input(
    frequency: list[float], monetary: list[float], message: str
) -> None:
    with pytest.raises(UserInputError, match=message):
        GammaGammaModel().fit(frequency, monetary)


# --------------------------------------------------------------------------- CLV


def test_customer_lifetime_value_is_discounted_sum(published: BetaGeoModel) -> None:
    spend = GammaGammaModel.from_params(p=6.25, q=3.74, v=15.44)
    x, tx, T, m = [0, 2, 6], [0.0, 30.43, 20.0], [38.86, 38.86, 38.86], [np.nan, 45.0, 20.0]
    expected_spend = spend.conditional_expected_average_profit(x, m)

    one = spend.customer_lifetime_value(published, x, tx, T, m, 1, 0.0, period_length=4.0)
    np.testing.assert_allclose(one, published.expected_purchases(4.0, x, tx, T) * expected_spend)

    undiscounted = spend.customer_lifetime_value(published, x, tx, T, m, 12, 0.0, period_length=4.0)
    np.testing.assert_allclose(
        undiscounted, published.expected_purchases(48.0, x, tx, T) * expected_spend
    )

    rate = 0.02
    cumulative = [published.expected_purchases(4.0 * k, x, tx, T) for k in range(13)]
    by_hand = (
        sum((cumulative[k] - cumulative[k - 1]) / (1 + rate) ** k for k in range(1, 13))
        * expected_spend
    )
    discounted = spend.customer_lifetime_value(published, x, tx, T, m, 12, rate, period_length=4.0)
    np.testing.assert_allclose(discounted, by_hand)
    assert np.all(discounted < undiscounted)
    assert np.all(discounted > 0)


@pytest.mark.parametrize(
    ("time_periods", "discount_rate", "period_length", "message"),
    [
        (0, 0.0, 1.0, "time_periods must be >= 1"),
        (2.5, 0.0, 1.0, "integer"),
        (3, -0.1, 1.0, "discount_rate"),
        (3, 0.1, 0.0, "period_length"),
    ],
)
def test_customer_lifetime_value_rejects_bad_arguments(
    published: BetaGeoModel,
    time_periods: int,
    discount_rate: float,
    period_length: float,
    message: str,
) -> None:
    spend = GammaGammaModel.from_params(p=6.25, q=3.74, v=15.44)
    with pytest.raises(UserInputError, match=message):
        spend.customer_lifetime_value(
            published, 1, 1.0, 2.0, 10.0, time_periods, discount_rate, period_length=period_length
        )


# --------------------------------------------------------------------------- RFM summary


def test_rfm_summary_by_hand() -> None:
    log = pd.DataFrame(
        {
            "cid": ["a", "a", "a", "a", "b", "c", "c", "d", "e"],
            "ts": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-08 10:00",
                    "2024-01-08 18:30",  # same day: one purchase day worth 5 + 7
                    "2024-01-15 12:00",
                    "2024-01-10 08:00",
                    "2024-01-03 08:00",
                    "2024-01-29 23:59",  # on calibration_end: included
                    "2024-01-30 00:00",  # after calibration_end: customer d absent
                    "2023-12-31 23:00",  # before observation_start: customer e absent
                ]
            ),
            "amount": [10.0, 5.0, 7.0, 20.0, 9.0, 4.0, 6.0, 3.0, 2.0],
        }
    )
    summary = rfm_summary(
        log,
        customer_col="cid",
        date_col="ts",
        value_col="amount",
        observation_start="2024-01-01",
        calibration_end="2024-01-29",
        unit_days=7.0,
    )
    assert summary.index.tolist() == ["a", "b", "c"]
    assert summary.index.name == "cid"
    assert summary["frequency"].tolist() == [2, 0, 1]
    assert summary["frequency"].dtype == np.int64
    np.testing.assert_allclose(summary["recency"], [14 / 7, 0.0, 26 / 7])
    np.testing.assert_allclose(summary["T"], [28 / 7, 19 / 7, 26 / 7])
    assert summary.loc["a", "monetary_value"] == pytest.approx((12.0 + 20.0) / 2)
    assert np.isnan(summary.loc["b", "monetary_value"])
    assert summary.loc["c", "monetary_value"] == pytest.approx(6.0)


def test_rfm_summary_in_days_without_values() -> None:
    log = pd.DataFrame({"id": [1, 1, 2], "day": ["2024-03-01", "2024-03-05", "2024-03-02"]})
    summary = rfm_summary(
        log, customer_col="id", date_col="day", calibration_end="2024-03-10", unit_days=1
    )
    assert list(summary.columns) == ["frequency", "recency", "T"]
    assert summary.loc[1].tolist() == [1, 4.0, 9.0]
    assert summary.loc[2].tolist() == [0, 0.0, 8.0]


@pytest.mark.filterwarnings("ignore:Could not infer format")
def test_rfm_summary_rejects_bad_input() -> None:
    log = pd.DataFrame({"id": [1, 2], "day": ["2024-03-01", "2024-03-05"], "v": [1.0, 2.0]})
    with pytest.raises(DataValidationError, match="missing column"):
        rfm_summary(log, customer_col="customer", date_col="day", calibration_end="2024-03-10")
    with pytest.raises(DataValidationError, match="missing value"):
        rfm_summary(
            log.assign(v=[1.0, None]),
            customer_col="id",
            date_col="day",
            value_col="v",
            calibration_end="2024-03-10",
        )
    with pytest.raises(DataValidationError, match="cannot parse dates"):
        rfm_summary(
            log.assign(day=["x", "y"]),
            customer_col="id",
            date_col="day",
            calibration_end="2024-03-10",
        )
    with pytest.raises(UserInputError, match="unit_days"):
        rfm_summary(
            log, customer_col="id", date_col="day", calibration_end="2024-03-10", unit_days=0
        )
    with pytest.raises(UserInputError, match="after calibration_end"):
        rfm_summary(
            log,
            customer_col="id",
            date_col="day",
            observation_start="2024-04-01",
            calibration_end="2024-03-10",
        )
    with pytest.raises(UserInputError, match="no transaction"):
        rfm_summary(log, customer_col="id", date_col="day", calibration_end="2023-01-01")
    with pytest.raises(UserInputError, match="not a date"):
        rfm_summary(log, customer_col="id", date_col="day", calibration_end="tomorrow-ish")


transaction_logs = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 60), st.integers(1, 100)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=transaction_logs, end=st.integers(0, 60), unit=st.sampled_from([1.0, 7.0, 30.0]))
def test_rfm_summary_matches_a_plain_python_count(
    rows: list[tuple[int, int, int]], end: int, unit: float
) -> None:
    assume(any(day <= end for _, day, _ in rows))
    start = pd.Timestamp("2024-01-01")
    log = pd.DataFrame(
        {
            "c": [c for c, _, _ in rows],
            "d": [start + pd.Timedelta(days=day) for _, day, _ in rows],
            "v": [float(v) for _, _, v in rows],
        }
    )
    summary = rfm_summary(
        log,
        customer_col="c",
        date_col="d",
        value_col="v",
        calibration_end=start + pd.Timedelta(days=end),
        unit_days=unit,
    )
    per_day: dict[int, dict[int, float]] = {}
    for c, day, value in rows:
        if day <= end:
            per_day.setdefault(c, {}).setdefault(day, 0.0)
            per_day[c][day] += value
    assert summary.index.tolist() == sorted(per_day)
    for c, days in per_day.items():
        ordered = sorted(days)
        row = summary.loc[c]
        assert row["frequency"] == len(ordered) - 1
        assert row["recency"] == pytest.approx((ordered[-1] - ordered[0]) / unit)
        assert row["T"] == pytest.approx((end - ordered[0]) / unit)
        assert row["recency"] <= row["T"]
        if len(ordered) > 1:
            repeat = [days[d] for d in ordered[1:]]
            assert row["monetary_value"] == pytest.approx(sum(repeat) / len(repeat))
        else:
            assert np.isnan(row["monetary_value"])
    # The summary is always valid model input.
    BetaGeoModel.from_params(r=1.0, alpha=1.0, a=1.5, b=1.5).probability_alive(
        summary["frequency"], summary["recency"], summary["T"]
    )


# --------------------------------------------------------------------------- CDNOW


def cdnow_dir() -> Path:
    override = os.environ.get("SEGMINT_DATA_DIR")
    base = Path(override) if override else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / "cdnow"


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    path = cdnow_dir() / "CDNOW_sample.txt"
    if not path.is_file():
        pytest.skip(f"CDNOW sample not found at {path}")
    log = pd.read_csv(
        path,
        sep=r"\s+",
        header=None,
        names=["master_customer_id", "sample_customer_id", "date", "number_of_cds", "dollar_value"],
        dtype={"date": str},
    )
    log["date"] = pd.to_datetime(log["date"], format="%Y%m%d")
    return rfm_summary(
        log,
        customer_col="sample_customer_id",
        date_col="date",
        value_col="dollar_value",
        observation_start="1997-01-01",
        calibration_end="1997-09-30",
        unit_days=7.0,
    )


def test_cdnow_summary_matches_published_data(cdnow_summary: pd.DataFrame) -> None:
    assert len(cdnow_summary) == 2357
    assert int((cdnow_summary["frequency"] > 0).sum()) == 946
    first = cdnow_summary.iloc[0]  # customer 1 in the papers' data: x=2, t_x=30.43, T=38.86
    assert (first["frequency"], round(first["recency"], 2), round(first["T"], 2)) == (
        2,
        30.43,
        38.86,
    )


def test_cdnow_bgnbd_reproduces_published_estimates(cdnow_summary: pd.DataFrame) -> None:
    model = BetaGeoModel().fit(
        cdnow_summary["frequency"], cdnow_summary["recency"], cdnow_summary["T"]
    )
    assert model.converged_
    for name, value in PUBLISHED_BGNBD.items():
        assert round(model.params_[name], 2) == round(value, 2), (name, model.params_[name])
    assert round(model.log_likelihood_, 1) == PUBLISHED_BGNBD_LL


def test_cdnow_gamma_gamma_reproduces_published_estimates(cdnow_summary: pd.DataFrame) -> None:
    model = GammaGammaModel().fit(cdnow_summary["frequency"], cdnow_summary["monetary_value"])
    assert model.converged_
    assert model.n_customers_ == 946
    for name, value in PUBLISHED_GG.items():
        assert round(model.params_[name], 2) == round(value, 2), (name, model.params_[name])
