"""Customer-lifetime-value models: BG/NBD purchase counts and Gamma-Gamma spend.

Two models from the customer-base-analysis literature, fitted by maximum
likelihood with numpy and scipy:

* :class:`BetaGeoModel` -- the BG/NBD model of Fader, Hardie & Lee (2005),
  "Counting your customers the easy way: an alternative to the Pareto/NBD
  model", *Marketing Science* 24(2). While alive, a customer buys as a Poisson
  process with rate ``lambda ~ Gamma(r, alpha)``; after every purchase they
  drop out with probability ``p ~ Beta(a, b)``.
* :class:`GammaGammaModel` -- the spend model of Fader, Hardie & Lee (2005),
  "RFM and CLV: using iso-value curves for customer base analysis", *Journal of
  Marketing Research* 42(4), as written up in Fader & Hardie (2013), "The
  Gamma-Gamma model of monetary value". Each transaction value is
  ``Gamma(p, nu)`` with ``nu ~ Gamma(q, gamma)`` across customers.

Both models work on the per-customer summary made by :func:`rfm_summary`:

``frequency``
    number of *repeat* purchase days (the first purchase is not counted, and
    several purchases on one calendar day count once);
``recency``
    time from the first purchase to the last one (``0`` when ``frequency`` is 0);
``T``
    time from the first purchase to the end of the calibration period;
``monetary_value``
    mean value of the repeat purchase days, a day's value being the sum of that
    day's purchases (undefined, ``NaN``, when ``frequency`` is 0).

Times are in any one unit (weeks for the published CDNOW results). With that
convention, the CDNOW 1/10 sample (calibration 1997-01-01 .. 1997-09-30,
weeks, T up to 272/7 = 38.86 weeks) reproduces the published estimates:
BG/NBD ``r=0.243, alpha=4.414, a=0.793, b=2.426`` (log-likelihood -9582.4) and
Gamma-Gamma ``p=6.25, q=3.74, gamma=15.44`` (946 customers with a repeat
purchase).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from segmint.errors import DataValidationError, NotFittedError, UserInputError

__all__ = ["BetaGeoModel", "GammaGammaModel", "rfm_summary"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

# Log-parameters are kept inside this box so that exp() never overflows.
_LOG_PARAM_BOUND = 30.0
# Relative slack allowed when checking recency <= T (both often come from day / 7).
_RECENCY_SLACK = 1e-9
# E[purchases] has a removable singularity at a = 1; it is evaluated this far from it.
_A_NEAR_ONE = 1e-6
# Cap on terms when summing a hypergeometric series by hand (z very close to 1 is slow).
_SERIES_MAX_TERMS = 200_000


# --------------------------------------------------------------------------- validation


def _as_float_array(values: ArrayLike, name: str) -> FloatArray:
    """Return ``values`` as a float array of at most one dimension, all finite."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{name} must be numeric", where=name) from exc
    if array.ndim > 1:
        raise UserInputError(
            f"{name} must be a scalar or one-dimensional, got shape {array.shape}", where=name
        )
    bad = ~np.isfinite(array)
    if bad.any():
        raise UserInputError(
            f"{name} has {int(bad.sum())} missing or infinite value(s)"
            f" (first at position {_first(bad)})",
            where=name,
        )
    return array


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(np.atleast_1d(mask))[0])


def _broadcast(names: Sequence[str], arrays: Sequence[FloatArray]) -> list[FloatArray]:
    try:
        return [np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*arrays)]
    except ValueError as exc:
        lengths = ", ".join(f"{n}={np.size(a)}" for n, a in zip(names, arrays, strict=True))
        raise UserInputError(f"mismatched lengths: {lengths}") from exc


def _check_same_length(names: Sequence[str], arrays: Sequence[FloatArray]) -> None:
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1 or np.ndim(arrays[0]) != 1:
        lengths = ", ".join(f"{n}={np.size(a)}" for n, a in zip(names, arrays, strict=True))
        raise UserInputError(f"mismatched lengths, expected equal 1-D arrays: {lengths}")
    if np.size(arrays[0]) == 0:
        raise UserInputError("no customers to fit: the inputs are empty")


def _check_frequency(frequency: FloatArray) -> None:
    negative = frequency < 0
    if negative.any():
        raise UserInputError(
            f"frequency must be >= 0; {int(negative.sum())} negative value(s)"
            f" (first at position {_first(negative)})",
            where="frequency",
        )
    fractional = frequency != np.round(frequency)
    if fractional.any():
        raise UserInputError(
            "frequency counts repeat purchases and must be a whole number;"
            f" {int(fractional.sum())} fractional value(s)"
            f" (first at position {_first(fractional)})",
            where="frequency",
        )


def _check_rfm(frequency: FloatArray, recency: FloatArray, T: FloatArray) -> None:
    """Check the BG/NBD summary statistics of (broadcast) customers."""
    _check_frequency(frequency)
    for name, values in (("recency", recency), ("T", T)):
        negative = values < 0
        if negative.any():
            raise UserInputError(
                f"{name} must be >= 0; {int(negative.sum())} negative value(s)"
                f" (first at position {_first(negative)})",
                where=name,
            )
    after_end = recency > T * (1.0 + _RECENCY_SLACK) + _RECENCY_SLACK
    if after_end.any():
        raise UserInputError(
            "recency (time of the last purchase) cannot exceed T (age of the customer);"
            f" {int(after_end.sum())} customer(s) (first at position {_first(after_end)})",
            where="recency",
        )
    no_repeat = (frequency == 0) & (recency != 0)
    if no_repeat.any():
        raise UserInputError(
            "recency must be 0 for customers with frequency 0 (no repeat purchase);"
            f" {int(no_repeat.sum())} customer(s) (first at position {_first(no_repeat)})",
            where="recency",
        )


def _check_penalizer(penalizer: float) -> None:
    if not (isinstance(penalizer, int | float) and math.isfinite(penalizer) and penalizer >= 0):
        raise UserInputError(f"penalizer must be a finite number >= 0, got {penalizer!r}")


def _check_tol_and_iter(tol: float, max_iter: int) -> None:
    if not (isinstance(tol, int | float) and tol > 0):
        raise UserInputError(f"tol must be a number > 0, got {tol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise UserInputError(f"max_iter must be an integer >= 1, got {max_iter!r}")


def _check_params(params: dict[str, float], names: Sequence[str]) -> dict[str, float]:
    if set(params) != set(names):
        raise UserInputError(f"expected parameters {list(names)}, got {sorted(params)}")
    out: dict[str, float] = {}
    for name in names:
        value = float(params[name])
        if not (math.isfinite(value) and value > 0):
            raise UserInputError(f"parameter {name} must be finite and > 0, got {value!r}")
        out[name] = value
    return out


# --------------------------------------------------------------------------- optimisation


def _maximise(
    objective: Callable[[FloatArray], tuple[float, FloatArray]],
    start: FloatArray,
    *,
    tol: float,
    max_iter: int,
    model: str,
) -> tuple[FloatArray, bool, int]:
    """Minimise ``objective`` (mean negative log-likelihood) over log-parameters."""
    bounds = [(-_LOG_PARAM_BOUND, _LOG_PARAM_BOUND)] * len(start)
    # L-BFGS-B calls BLAS on 3-4 element vectors; threads only add overhead (~5x).
    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": max_iter, "ftol": tol, "gtol": tol},
        )
    converged = bool(result.success)
    if not converged:
        logger.warning("%s fit did not converge: %s", model, result.message)
    at_bound = np.abs(result.x) >= _LOG_PARAM_BOUND - 1e-6
    if at_bound.any():
        logger.warning(
            "%s fit: a parameter reached exp(+-%s); the data may not identify it",
            model,
            _LOG_PARAM_BOUND,
        )
    return np.asarray(result.x, dtype=np.float64), converged, int(result.nit)


def _weights(weights: ArrayLike | None, n: int) -> FloatArray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = _as_float_array(weights, "weights")
    if w.shape != (n,):
        raise UserInputError(f"mismatched lengths: weights={w.size}, customers={n}")
    if (w < 0).any() or w.sum() <= 0:
        raise UserInputError("weights must be >= 0 with a positive sum", where="weights")
    return w


# --------------------------------------------------------------------------- BG/NBD


def _bgnbd_loglik_terms(
    r: float, alpha: float, a: float, b: float, x: FloatArray, tx: FloatArray, T: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (log-likelihood, log first term, log second term) per customer.

    The likelihood of one customer (FHL 2005, eq. 6) is::

        L = B(a, b + x) / B(a, b) * G(r + x) alpha^r / (G(r) (alpha + T)^(r + x))
          + [x > 0] B(a + 1, b + x - 1) / B(a, b)
                    * G(r + x) alpha^r / (G(r) (alpha + t_x)^(r + x))

    and ``B(a + 1, b + x - 1) = B(a, b + x) * a / (b + x - 1)``, so both terms share
    the factor ``B(a, b + x) G(r + x) alpha^r / (B(a, b) G(r))``. The sum is taken
    with ``logaddexp``; for ``x = 0`` the second term is absent (log = -inf).
    """
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    log_first = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    b_x_1 = np.where(repeat, b + x - 1.0, 1.0)
    log_second = np.where(repeat, np.log(a) - np.log(b_x_1) - (r + x) * np.log(alpha + tx), -np.inf)
    return common + np.logaddexp(log_first, log_second), log_first, log_second


def _bgnbd_objective(
    theta: FloatArray,
    x: FloatArray,
    tx: FloatArray,
    T: FloatArray,
    w: FloatArray,
    penalizer: float,
) -> tuple[float, FloatArray]:
    """Weighted mean negative log-likelihood (plus L2 penalty) and its gradient in theta."""
    r, alpha, a, b = np.exp(theta)
    ll, log_first, log_second = _bgnbd_loglik_terms(r, alpha, a, b, x, tx, T)
    total = float(np.sum(w * ll))
    if not math.isfinite(total):
        return 1e300, np.zeros_like(theta)
    # Weights of the two terms of the logaddexp (they sum to one per customer).
    lse = np.logaddexp(log_first, log_second)
    s1 = np.exp(log_first - lse)
    s2 = np.exp(log_second - lse)
    repeat = x > 0
    b_x_1 = np.where(repeat, b + x - 1.0, 1.0)
    d_r = (
        digamma(r + x) - digamma(r) + np.log(alpha)
        - s1 * np.log(alpha + T) - s2 * np.log(alpha + tx)
    )  # fmt: skip
    d_alpha = r / alpha - s1 * (r + x) / (alpha + T) - s2 * (r + x) / (alpha + tx)
    d_a = digamma(a + b) - digamma(a + b + x) + s2 / a
    d_b = digamma(b + x) - digamma(a + b + x) - digamma(b) + digamma(a + b) - s2 / b_x_1
    params = np.array([r, alpha, a, b])
    grad_params = np.array([np.sum(w * d) for d in (d_r, d_alpha, d_a, d_b)])
    n = float(np.sum(w))
    value = -total / n + penalizer * float(np.sum(params**2))
    grad = (-grad_params / n + 2.0 * penalizer * params) * params
    return value, grad


class BetaGeoModel(BaseEstimator):
    """BG/NBD model of repeat-purchase counts (Fader, Hardie & Lee 2005).

    While "alive", a customer buys as a Poisson process with rate ``lambda``;
    after each purchase they become inactive with probability ``p``. Across
    customers ``lambda ~ Gamma(shape=r, rate=alpha)`` and ``p ~ Beta(a, b)``.
    The four parameters are fitted by maximum likelihood over their logarithms
    (L-BFGS-B with the analytic gradient).

    Parameters
    ----------
    penalizer
        L2 penalty ``penalizer * (r^2 + alpha^2 + a^2 + b^2)`` added to the mean
        negative log-likelihood (the same form as the ``lifetimes`` library).
        ``0`` gives the maximum-likelihood estimate.
    tol
        Convergence tolerance of the optimiser (on the objective and gradient).
    max_iter
        Maximum number of optimiser iterations.

    Attributes
    ----------
    params_ : dict[str, float]
        Fitted ``{"r", "alpha", "a", "b"}``. ``alpha`` is in the time unit of the data.
    log_likelihood_ : float
        Total (weighted) log-likelihood of the data at ``params_``, without penalty.
    n_customers_ : int
        Number of customers (sum of weights) the model was fitted on.
    converged_ : bool
        Whether the optimiser reported convergence.
    n_iter_ : int
        Optimiser iterations used.

    Examples
    --------
    >>> model = BetaGeoModel().fit(
    ...     frequency=[0, 1, 2, 0, 5, 3], recency=[0, 3.0, 20.0, 0, 35.0, 10.0], T=[39.0] * 6
    ... )
    >>> sorted(model.params_)
    ['a', 'alpha', 'b', 'r']
    >>> model.converged_
    True
    >>> model.probability_alive([0, 5], [0, 35.0], [39.0, 39.0]).shape
    (2,)
    """

    _param_names = ("r", "alpha", "a", "b")

    def __init__(self, *, penalizer: float = 0.0, tol: float = 1e-10, max_iter: int = 2000):
        self.penalizer = penalizer
        self.tol = tol
        self.max_iter = max_iter

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_params(cls, *, r: float, alpha: float, a: float, b: float) -> BetaGeoModel:
        """Build a model with known parameters (e.g. published ones) without fitting.

        ``log_likelihood_`` is ``nan`` and ``n_customers_`` is ``0`` on such a model.

        Examples
        --------
        >>> model = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> round(float(model.expected_purchases_new(39.0)), 3) > 0
        True
        """
        model = cls()
        model.params_ = _check_params({"r": r, "alpha": alpha, "a": a, "b": b}, cls._param_names)
        model.log_likelihood_ = math.nan
        model.n_customers_ = 0
        model.converged_ = True
        model.n_iter_ = 0
        return model

    # ---------------------------------------------------------------- fitting

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        *,
        weights: ArrayLike | None = None,
    ) -> BetaGeoModel:
        """Fit the model by maximum likelihood.

        Parameters
        ----------
        frequency
            Number of repeat purchases of each customer (whole numbers >= 0).
        recency
            Time of the last purchase, measured from the first purchase
            (``0`` when ``frequency`` is 0).
        T
            Age of each customer: time from the first purchase to the end of the
            calibration period. Same unit as ``recency``; ``recency <= T``.
        weights
            Optional number of customers each row stands for (rows of identical
            ``(frequency, recency, T)`` may be aggregated this way).

        Returns
        -------
        BetaGeoModel
            ``self``, fitted.

        Raises
        ------
        UserInputError
            If the inputs are of different lengths, empty, negative, non-finite,
            fractional frequencies, ``recency > T``, or ``recency != 0`` with
            ``frequency == 0``; or a hyper-parameter is invalid.
        """
        _check_penalizer(self.penalizer)
        _check_tol_and_iter(self.tol, self.max_iter)
        x = _as_float_array(frequency, "frequency")
        tx = _as_float_array(recency, "recency")
        age = _as_float_array(T, "T")
        _check_same_length(("frequency", "recency", "T"), (x, tx, age))
        _check_rfm(x, tx, age)
        w = _weights(weights, x.size)

        # Start from a mean purchase rate matching the data's time unit.
        mean_age = float(np.average(np.maximum(age, 1e-12), weights=w))
        start = np.log(np.array([1.0, max(mean_age, 1e-6), 1.0, 1.0]))

        def objective(theta: FloatArray) -> tuple[float, FloatArray]:
            return _bgnbd_objective(theta, x, tx, age, w, float(self.penalizer))

        theta, converged, n_iter = _maximise(
            objective, start, tol=self.tol, max_iter=self.max_iter, model="BG/NBD"
        )
        r, alpha, a, b = (float(v) for v in np.exp(theta))
        self.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
        ll = _bgnbd_loglik_terms(r, alpha, a, b, x, tx, age)[0]
        self.log_likelihood_ = float(np.sum(w * ll))
        self.n_customers_ = int(round(float(w.sum())))
        self.converged_ = converged
        self.n_iter_ = n_iter
        logger.info(
            "BG/NBD fitted on %d customers: r=%.4f alpha=%.4f a=%.4f b=%.4f LL=%.3f",
            self.n_customers_, r, alpha, a, b, self.log_likelihood_,
        )  # fmt: skip
        return self

    # ---------------------------------------------------------------- predictions

    def _fitted_params(self) -> tuple[float, float, float, float]:
        if not hasattr(self, "params_"):
            raise NotFittedError(
                "this BetaGeoModel is not fitted yet; call fit() or from_params() first"
            )
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def _customers(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, *extra: tuple[str, ArrayLike]
    ) -> list[FloatArray]:
        names = ["frequency", "recency", "T"] + [name for name, _ in extra]
        arrays = [
            _as_float_array(frequency, "frequency"),
            _as_float_array(recency, "recency"),
            _as_float_array(T, "T"),
        ] + [_as_float_array(values, name) for name, values in extra]
        arrays = _broadcast(names, arrays)
        _check_rfm(arrays[0], arrays[1], arrays[2])
        return arrays

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
        """Log-likelihood of each customer's ``(frequency, recency, T)`` under the model.

        Examples
        --------
        >>> model = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> bool(model.log_likelihood([0, 2], [0, 30.43], [38.86, 38.86]).max() < 0)
        True
        """
        r, alpha, a, b = self._fitted_params()
        x, tx, age = self._customers(frequency, recency, T)
        return _bgnbd_loglik_terms(r, alpha, a, b, x, tx, age)[0]

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Probability that each customer is still active at age ``T`` (FHL 2005, eq. 11).

        ``P(alive) = 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x))``.
        In the BG/NBD a customer can only drop out right after a purchase, so a
        customer with no repeat purchase is alive with probability 1.

        Examples
        --------
        >>> model = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> model.probability_alive([0, 3, 3], [0, 38.0, 5.0], [38.86] * 3).round(3).tolist()
        [1.0, 0.839, 0.038]
        """
        r, alpha, a, b = self._fitted_params()
        x, tx, age = self._customers(frequency, recency, T)
        return _probability_alive(r, alpha, a, b, x, tx, age)

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Expected number of purchases in the next ``t`` time units (FHL 2005, eq. 10).

        ``E[Y(t) | x, t_x, T] = (a + b + x - 1) / (a - 1)
        * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
        * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] * P(alive)``.

        The hypergeometric term is evaluated with scipy after Euler's
        transformation, ``(1 - z)^(r + x) 2F1(r + x, b + x; c; z) = (1 - z)^(a - 1)
        2F1(a + b - 1 - r, a - 1; c; z)``, which stays accurate for large ``x``.
        A result outside ``[0, (r + x) t / (alpha + T)]`` (the bound with no
        dropout) is recomputed in the paper's form (accurate for very large ``a``)
        and then, if still out of bounds, by summing the series that converges
        at ``z = 1``. The removable singularity at ``a = 1`` is evaluated at
        ``a = 1 + 1e-6``.

        Parameters
        ----------
        t
            Length of the future period, in the model's time unit (scalar or per customer).
        frequency, recency, T
            The customers' summary, as in :meth:`fit`.

        Examples
        --------
        >>> model = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> round(float(model.expected_purchases(39, frequency=2, recency=30.43, T=38.86)), 3)
        1.226
        """
        r, alpha, a, b = self._fitted_params()
        x, tx, age, horizon = self._customers(frequency, recency, T, ("t", t))
        _check_horizon(horizon)
        alive = _probability_alive(r, alpha, a, b, x, tx, age)
        return _purchases_if_alive(r, alpha, a, b, x, age, horizon) * alive

    def expected_purchases_new(self, t: ArrayLike) -> FloatArray:
        """Expected purchases ``E[X(t)]`` of a new customer in ``t`` time units (FHL 2005, eq. 9).

        ``E[X(t)] = (a + b - 1) / (a - 1)
        * [1 - (alpha / (alpha + t))^r 2F1(r, b; a + b - 1; t / (alpha + t))]``,
        i.e. :meth:`expected_purchases` of a customer with ``frequency = recency = T = 0``.
        The count excludes the purchase at time 0 that starts the clock.

        Examples
        --------
        >>> model = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> model.expected_purchases_new([0.0, 39.0, 78.0]).round(3).tolist()
        [0.0, 1.197, 1.861]
        """
        r, alpha, a, b = self._fitted_params()
        horizon = _as_float_array(t, "t")
        _check_horizon(horizon)
        zero = np.zeros_like(horizon)
        return _purchases_if_alive(r, alpha, a, b, zero, zero, horizon)


def _purchases_if_alive(
    r: float,
    alpha: float,
    a: float,
    b: float,
    x: FloatArray,
    T: FloatArray,
    horizon: FloatArray,
) -> FloatArray:
    """Expected purchases in ``(T, T + t]`` of a customer known to be alive at ``T``.

    ``(c / (a - 1)) * (1 - (1 - z)^(r + x) 2F1(r + x, b + x; c; z))`` with
    ``c = a + b + x - 1`` and ``z = t / (alpha + T + t)``. The value must lie in
    ``[0, (r + x) t / (alpha + T)]`` (the mean with no dropout); where scipy's
    ``hyp2f1`` gives something else (it fails for some integer parameters near
    ``z = 1``), the paper's untransformed form is tried, then the series of
    whichever form converges at ``z = 1`` is summed directly.
    """
    if abs(a - 1.0) < _A_NEAR_ONE:
        a = 1.0 + _A_NEAR_ONE  # removable singularity at a = 1
    c = a + b + x - 1.0
    z = horizon / (alpha + T + horizon)
    ceiling = (r + x) * horizon / (alpha + T)

    # 1 - tail loses ~1e-16 absolutely, which c / (a - 1) magnifies.
    slack = 1e-9 * ceiling + 1e-12 * np.abs(c / (a - 1.0))

    def plausible(value: FloatArray) -> npt.NDArray[np.bool_]:
        return np.isfinite(value) & (value >= -slack) & (value <= ceiling + slack)

    with np.errstate(all="ignore"):
        # Euler's transformation: parameters of the series do not grow with x.
        tail = (1.0 - z) ** (a - 1.0) * hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        value = c / (a - 1.0) * (1.0 - tail)
        retry = ~plausible(value)
        if retry.any():
            # The paper's form: well behaved when a and b are large.
            tail = (1.0 - z) ** (r + x) * hyp2f1(r + x, b + x, c, z)
            value = np.where(retry, c / (a - 1.0) * (1.0 - tail), value)
            retry = ~plausible(value)
    if retry.any():
        # Sum the series of whichever form converges at z = 1 (c - A - B >= 0):
        # the two forms' c - A - B are x + r + 1 - a and a - 1 - r - x.
        x_, z_, c_ = (np.broadcast_to(v, retry.shape)[retry] for v in (x, z, c))
        euler = x_ + r + 1.0 - a >= 0
        upper_a = np.where(euler, a + b - 1.0 - r, r + x_)
        upper_b = np.where(euler, a - 1.0, b + x_)
        power = np.where(euler, a - 1.0, r + x_)
        with np.errstate(all="ignore"):
            # c (1 - (1 - z)^P F) = c (1 - (1 - z)^P) - (1 - z)^P c (F - 1): finite at c = 0.
            kept = (1.0 - z_) ** power
            excess = _hyp2f1_excess(upper_a, upper_b, c_, z_)
            fixed = (c_ * (1.0 - kept) - kept * excess) / (a - 1.0)
        value = np.array(np.broadcast_to(value, retry.shape), dtype=np.float64)
        value[retry] = fixed
        if not np.all(plausible(value)):
            logger.warning("BG/NBD expected purchases could not be evaluated for some customers")
    # max(., 0) only turns -0.0 at t = 0 (and rounding noise) into 0.
    return np.asarray(np.maximum(value, 0.0), dtype=np.float64)


def _hyp2f1_excess(
    upper_a: FloatArray, upper_b: FloatArray, lower: FloatArray, z: FloatArray
) -> FloatArray:
    """``C (2F1(A, B; C; z) - 1)`` for ``0 <= z < 1`` and ``C > -1``, by summing the series.

    ``C (F - 1) = A B z sum_j (A + 1)_j (B + 1)_j / ((C + 1)_j (j + 1)!) z^j``, which
    stays finite at ``C = 0`` (``x = 0`` with ``a + b = 1``, where ``2F1`` itself has a
    pole). Used only where scipy's ``hyp2f1`` fails; stops when every term is below
    ``1e-16`` of its sum while the terms shrink, or after ``_SERIES_MAX_TERMS``
    terms (``NaN`` then).
    """
    total = np.ones_like(z)
    term = np.ones_like(z)
    active = np.ones(z.shape, dtype=bool)
    for j in range(_SERIES_MAX_TERMS):
        if not active.any():
            break
        ratio = (upper_a + 1.0 + j) * (upper_b + 1.0 + j) / ((lower + 1.0 + j) * (j + 2.0)) * z
        term = np.where(active, term * ratio, 0.0)
        total = total + term
        shrinking = np.abs(ratio) < 1.0
        active &= ~(shrinking & (np.abs(term) <= 1e-16 * np.abs(total)))
    return np.asarray(np.where(active, np.nan, upper_a * upper_b * z * total), dtype=np.float64)


def _check_horizon(horizon: FloatArray) -> None:
    negative = horizon < 0
    if negative.any():
        raise UserInputError(
            f"t (the future period) must be >= 0; {int(negative.sum())} negative value(s)",
            where="t",
        )


def _probability_alive(
    r: float, alpha: float, a: float, b: float, x: FloatArray, tx: FloatArray, T: FloatArray
) -> FloatArray:
    repeat = x > 0
    b_x_1 = np.where(repeat, b + x - 1.0, 1.0)
    log_odds_dead = np.log(a) - np.log(b_x_1) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
    return np.asarray(np.where(repeat, expit(-log_odds_dead), 1.0), dtype=np.float64)


# --------------------------------------------------------------------------- Gamma-Gamma


def _gg_loglik(p: float, q: float, v: float, x: FloatArray, m: FloatArray) -> FloatArray:
    """Log density of the mean spend ``m`` of ``x`` transactions (Fader & Hardie 2013, eq. 4).

    ``f(m | x) = G(p x + q) / (G(p x) G(q)) * v^q m^(p x - 1) x^(p x) / (v + x m)^(p x + q)``.
    """
    px = p * x
    return (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
        + (px - 1.0) * np.log(m) + px * np.log(x) - (px + q) * np.log(x * m + v)
    )  # fmt: skip


def _gg_objective(
    theta: FloatArray, x: FloatArray, m: FloatArray, w: FloatArray, penalizer: float
) -> tuple[float, FloatArray]:
    p, q, v = np.exp(theta)
    ll = _gg_loglik(p, q, v, x, m)
    total = float(np.sum(w * ll))
    if not math.isfinite(total):
        return 1e300, np.zeros_like(theta)
    px = p * x
    common = digamma(px + q)
    log_xm_v = np.log(x * m + v)
    d_p = x * (common - digamma(px) + np.log(m) + np.log(x) - log_xm_v)
    d_q = common - digamma(q) + np.log(v) - log_xm_v
    d_v = q / v - (px + q) / (x * m + v)
    params = np.array([p, q, v])
    grad_params = np.array([np.sum(w * d) for d in (d_p, d_q, d_v)])
    n = float(np.sum(w))
    value = -total / n + penalizer * float(np.sum(params**2))
    grad = (-grad_params / n + 2.0 * penalizer * params) * params
    return value, grad


class GammaGammaModel(BaseEstimator):
    """Gamma-Gamma model of the average transaction value (Fader, Hardie & Lee 2005).

    A customer's transaction values are ``Gamma(shape=p, rate=nu)`` with a mean
    ``p / nu`` that varies across customers as ``nu ~ Gamma(shape=q, rate=gamma)``.
    The model is fitted on each customer's number of repeat transactions ``x``
    and their mean value ``m``; customers with ``x = 0`` carry no information
    and are left out of the fit. The model assumes spend is independent of
    purchase frequency; check that (e.g. their correlation) before relying on it.

    The published third parameter ``gamma`` is called ``v`` here (as in the
    ``lifetimes`` library), to avoid a clash with the gamma function.

    Parameters
    ----------
    penalizer
        L2 penalty ``penalizer * (p^2 + q^2 + v^2)`` added to the mean negative
        log-likelihood. ``0`` gives the maximum-likelihood estimate.
    tol
        Convergence tolerance of the optimiser.
    max_iter
        Maximum number of optimiser iterations.

    Attributes
    ----------
    params_ : dict[str, float]
        Fitted ``{"p", "q", "v"}`` (``v`` is the papers' ``gamma``).
    log_likelihood_ : float
        Total log-likelihood of the customers fitted on, without penalty.
    n_customers_ : int
        Number of customers with ``frequency > 0`` used in the fit.
    converged_ : bool
        Whether the optimiser reported convergence.
    n_iter_ : int
        Optimiser iterations used.

    Examples
    --------
    >>> model = GammaGammaModel().fit(
    ...     frequency=[1, 2, 4, 1, 3, 0, 6], monetary_value=[20.0, 35.0, 28.0, 60.0, 15.0, 0, 40.0]
    ... )
    >>> model.n_customers_
    6
    >>> spend = model.conditional_expected_average_profit([0, 4], [float("nan"), 28.0])
    >>> spend.shape
    (2,)
    """

    _param_names = ("p", "q", "v")

    def __init__(self, *, penalizer: float = 0.0, tol: float = 1e-10, max_iter: int = 2000):
        self.penalizer = penalizer
        self.tol = tol
        self.max_iter = max_iter

    @classmethod
    def from_params(cls, *, p: float, q: float, v: float) -> GammaGammaModel:
        """Build a model with known parameters (``v`` is the papers' ``gamma``) without fitting.

        Examples
        --------
        >>> model = GammaGammaModel.from_params(p=6.25, q=3.74, v=15.44)
        >>> round(float(model.conditional_expected_average_profit(0, 0.0)), 2)
        35.22
        """
        model = cls()
        model.params_ = _check_params({"p": p, "q": q, "v": v}, cls._param_names)
        model.log_likelihood_ = math.nan
        model.n_customers_ = 0
        model.converged_ = True
        model.n_iter_ = 0
        return model

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGammaModel:
        """Fit the model by maximum likelihood on the customers with ``frequency > 0``.

        Parameters
        ----------
        frequency
            Number of repeat transactions ``x`` of each customer (whole numbers >= 0).
            Rows with ``frequency == 0`` are ignored (their ``monetary_value`` may be
            ``NaN``).
        monetary_value
            Mean value of those ``x`` repeat transactions; must be > 0 where
            ``frequency > 0``.

        Returns
        -------
        GammaGammaModel
            ``self``, fitted.

        Raises
        ------
        UserInputError
            On mismatched lengths, invalid frequencies, non-positive or missing
            spend of a repeat customer, or when no customer has ``frequency > 0``.
        """
        _check_penalizer(self.penalizer)
        _check_tol_and_iter(self.tol, self.max_iter)
        x, m = _spend_inputs(frequency, monetary_value, same_length=True)
        repeat = x > 0
        if not repeat.any():
            raise UserInputError(
                "no customer has a repeat purchase (frequency > 0): nothing to fit",
                where="frequency",
            )
        logger.debug("Gamma-Gamma: ignoring %d customers with frequency 0", int((~repeat).sum()))
        x, m = x[repeat], m[repeat]
        w = np.ones_like(x)
        start = np.log(np.array([1.0, 1.0, max(float(np.mean(m)), 1e-6)]))

        def objective(theta: FloatArray) -> tuple[float, FloatArray]:
            return _gg_objective(theta, x, m, w, float(self.penalizer))

        theta, converged, n_iter = _maximise(
            objective, start, tol=self.tol, max_iter=self.max_iter, model="Gamma-Gamma"
        )
        p, q, v = (float(value) for value in np.exp(theta))
        self.params_ = {"p": p, "q": q, "v": v}
        self.log_likelihood_ = float(np.sum(_gg_loglik(p, q, v, x, m)))
        self.n_customers_ = int(x.size)
        self.converged_ = converged
        self.n_iter_ = n_iter
        if q <= 1:
            logger.warning(
                "Gamma-Gamma fit has q=%.3f <= 1: the population mean spend is infinite", q
            )
        logger.info(
            "Gamma-Gamma fitted on %d customers: p=%.4f q=%.4f v=%.4f LL=%.3f",
            self.n_customers_, p, q, v, self.log_likelihood_,
        )  # fmt: skip
        return self

    def _fitted_params(self) -> tuple[float, float, float]:
        if not hasattr(self, "params_"):
            raise NotFittedError(
                "this GammaGammaModel is not fitted yet; call fit() or from_params() first"
            )
        return self.params_["p"], self.params_["q"], self.params_["v"]

    def log_likelihood(self, frequency: ArrayLike, monetary_value: ArrayLike) -> FloatArray:
        """Log-density of each customer's mean spend given their number of transactions.

        ``NaN`` for customers with ``frequency == 0``, who are not modelled.

        Examples
        --------
        >>> model = GammaGammaModel.from_params(p=6.25, q=3.74, v=15.44)
        >>> ll = model.log_likelihood([0, 3], [float("nan"), 42.0])
        >>> bool(np.isnan(ll[0])), bool(ll[1] < 0)
        (True, True)
        """
        p, q, v = self._fitted_params()
        x, m = _spend_inputs(frequency, monetary_value, same_length=False)
        repeat = x > 0
        safe_x, safe_m = np.where(repeat, x, 1.0), np.where(repeat, m, 1.0)
        return np.asarray(np.where(repeat, _gg_loglik(p, q, v, safe_x, safe_m), np.nan))

    def conditional_expected_average_profit(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> FloatArray:
        """Expected mean transaction value of each customer (Fader & Hardie 2013, eq. 5).

        ``E[M | x, m] = p (v + x m) / (p x + q - 1)``, a weighted average of the
        population mean ``p v / (q - 1)`` and the customer's own mean ``m``. For
        ``frequency == 0`` it is the population mean (``monetary_value`` is ignored
        and may be ``NaN``). Infinite where ``p x + q <= 1``.

        Examples
        --------
        >>> model = GammaGammaModel.from_params(p=6.25, q=3.74, v=15.44)
        >>> model.conditional_expected_average_profit([0, 1, 10], [0, 50.0, 50.0]).round(2)
        array([35.22, 45.49, 49.38])
        """
        p, q, v = self._fitted_params()
        x, m = _spend_inputs(frequency, monetary_value, same_length=False)
        m = np.where(x > 0, m, 0.0)
        denominator = p * x + q - 1.0
        safe = np.where(denominator > 0, denominator, 1.0)
        return np.asarray(np.where(denominator > 0, p * (v + x * m) / safe, np.inf))

    def customer_lifetime_value(
        self,
        bgnbd: BetaGeoModel,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        monetary_value: ArrayLike,
        time_periods: int,
        discount_rate: float,
        *,
        period_length: float = 1.0,
    ) -> FloatArray:
        """Discounted expected value of each customer's purchases over the next periods.

        ``CLV = sum_{k=1..K} (E[Y(k L)] - E[Y((k - 1) L)]) * E[M] / (1 + d)^k``

        where ``E[Y(t)]`` is ``bgnbd.expected_purchases(t, ...)``, ``E[M]`` is
        :meth:`conditional_expected_average_profit`, ``K = time_periods``,
        ``L = period_length`` (in the BG/NBD time unit) and ``d = discount_rate``
        per period. Purchases of period ``k`` are discounted as if made at its
        end. The result is in the currency of ``monetary_value`` (revenue unless
        the spend was already a margin: multiply by a margin to get profit).

        Parameters
        ----------
        bgnbd
            A fitted :class:`BetaGeoModel` for the purchase counts.
        frequency, recency, T
            The customers' BG/NBD summary.
        monetary_value
            Mean repeat-transaction value (ignored, may be ``NaN``, for frequency 0).
        time_periods
            Number of future periods ``K`` (>= 1).
        discount_rate
            Discount rate per period (>= 0), e.g. ``0.01`` a month.
        period_length
            Length of one period in the BG/NBD time unit (e.g. ``52 / 12`` for
            months when the model is in weeks).

        Examples
        --------
        >>> bgnbd = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> spend = GammaGammaModel.from_params(p=6.25, q=3.74, v=15.44)
        >>> clv = spend.customer_lifetime_value(
        ...     bgnbd, [0, 2], [0, 30.43], [38.86, 38.86], [float("nan"), 45.0],
        ...     time_periods=12, discount_rate=0.01, period_length=52 / 12,
        ... )
        >>> bool(clv[1] > clv[0] > 0)
        True
        """
        if not isinstance(bgnbd, BetaGeoModel):
            raise UserInputError("bgnbd must be a BetaGeoModel", where="bgnbd")
        bgnbd._fitted_params()
        if isinstance(time_periods, bool) or not isinstance(time_periods, int | np.integer):
            raise UserInputError(f"time_periods must be an integer, got {time_periods!r}")
        if time_periods < 1:
            raise UserInputError(f"time_periods must be >= 1, got {time_periods}")
        if not (math.isfinite(discount_rate) and discount_rate >= 0):
            raise UserInputError(f"discount_rate must be >= 0, got {discount_rate!r}")
        if not (math.isfinite(period_length) and period_length > 0):
            raise UserInputError(f"period_length must be > 0, got {period_length!r}")
        spend = self.conditional_expected_average_profit(frequency, monetary_value)
        x, tx, age = bgnbd._customers(frequency, recency, T)
        x, tx, age, spend = _broadcast(
            ("frequency", "recency", "T", "monetary_value"), (x, tx, age, spend)
        )
        value = np.zeros_like(x)
        previous = np.zeros_like(x)
        for k in range(1, int(time_periods) + 1):
            cumulative = bgnbd.expected_purchases(k * period_length, x, tx, age)
            value = value + (cumulative - previous) / (1.0 + discount_rate) ** k
            previous = cumulative
        return np.asarray(value * spend, dtype=np.float64)


def _spend_inputs(
    frequency: ArrayLike, monetary_value: ArrayLike, *, same_length: bool
) -> tuple[FloatArray, FloatArray]:
    x = _as_float_array(frequency, "frequency")
    try:
        m = np.asarray(monetary_value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UserInputError("monetary_value must be numeric", where="monetary_value") from exc
    if m.ndim > 1:
        raise UserInputError("monetary_value must be one-dimensional", where="monetary_value")
    if same_length:
        _check_same_length(("frequency", "monetary_value"), (x, m))
    else:
        x, m = _broadcast(("frequency", "monetary_value"), (x, m))
    _check_frequency(x)
    repeat = x > 0
    bad = repeat & ~(np.isfinite(m) & (m > 0))
    if bad.any():
        raise UserInputError(
            "monetary_value must be finite and > 0 for customers with frequency > 0;"
            f" {int(bad.sum())} customer(s) (first at position {_first(bad)})",
            where="monetary_value",
        )
    return x, m


# --------------------------------------------------------------------------- RFM summary

DateLike = str | date | datetime | pd.Timestamp


def _to_day(value: DateLike, name: str, tz: Any) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{name} is not a date: {value!r}", where=name) from exc
    if stamp is pd.NaT:
        raise UserInputError(f"{name} is not a date: {value!r}", where=name)
    if tz is not None and stamp.tzinfo is None:
        stamp = stamp.tz_localize(tz)
    elif tz is None and stamp.tzinfo is not None:
        stamp = stamp.tz_convert(None)
    elif tz is not None:
        stamp = stamp.tz_convert(tz)
    return stamp.normalize()


def rfm_summary(
    transactions: pd.DataFrame,
    *,
    customer_col: str,
    date_col: str,
    value_col: str | None = None,
    observation_start: DateLike | None = None,
    calibration_end: DateLike,
    unit_days: float = 7.0,
) -> pd.DataFrame:
    """Summarise a transaction log into the per-customer statistics of the CLV models.

    The convention (that of Fader, Hardie & Lee and of the ``lifetimes`` library):

    1. Timestamps are truncated to calendar days (in their own time zone). Only
       transactions on days ``observation_start <= day <= calibration_end`` are
       used; both bounds are inclusive and ``observation_start=None`` means no
       lower bound. Customers are those with a transaction in that window, and
       their *first purchase day* is their first day in the window (so choose
       ``observation_start`` before or at the start of the acquisition cohort).
    2. All transactions of a customer on one day form one *purchase day*, whose
       value is the sum of the day's values.
    3. ``frequency`` = number of purchase days - 1 (repeat purchase days).
    4. ``recency`` = (last purchase day - first purchase day) in days / ``unit_days``.
    5. ``T`` = (``calibration_end`` - first purchase day) in days / ``unit_days``;
       a customer who first bought on ``calibration_end`` has ``T = 0``.
    6. ``monetary_value`` = mean value of the repeat purchase days (the first
       purchase day excluded); ``NaN`` when ``frequency`` is 0.

    With ``calibration_end="1997-09-30"`` and ``unit_days=7`` a CDNOW customer
    who first bought on 1997-01-01 has ``T = 272 / 7 = 38.86`` weeks, the value
    in the published data, with which the published BG/NBD and Gamma-Gamma
    estimates are reproduced.

    Parameters
    ----------
    transactions
        One row per transaction.
    customer_col
        Column identifying the customer.
    date_col
        Column with the transaction date or timestamp (datetime, date or parseable strings).
    value_col
        Optional column with the transaction value; without it there is no
        ``monetary_value`` column in the result.
    observation_start
        First day to use (inclusive), or ``None``.
    calibration_end
        Last day of the calibration period (inclusive).
    unit_days
        Length of the time unit in days (7 for weeks, 1 for days).

    Returns
    -------
    pandas.DataFrame
        Indexed by customer (sorted), with ``frequency`` (int), ``recency``,
        ``T`` and, if ``value_col`` is given, ``monetary_value``.

    Raises
    ------
    DataValidationError
        If a column is missing, or has missing or unparseable values.
    UserInputError
        If the window or ``unit_days`` is invalid, or no transaction falls in the window.

    Examples
    --------
    >>> log = pd.DataFrame({
    ...     "customer": ["a", "a", "a", "a", "b"],
    ...     "day": ["2024-01-01", "2024-01-08", "2024-01-08", "2024-01-15", "2024-01-10"],
    ...     "amount": [10.0, 5.0, 7.0, 20.0, 9.0],
    ... })
    >>> rfm_summary(log, customer_col="customer", date_col="day", value_col="amount",
    ...             calibration_end="2024-01-29").round(3)  # doctest: +NORMALIZE_WHITESPACE
              frequency  recency      T  monetary_value
    customer
    a                 2      2.0  4.000            16.0
    b                 0      0.0  2.714             NaN
    """
    if not isinstance(transactions, pd.DataFrame):
        raise UserInputError("transactions must be a pandas DataFrame", where="transactions")
    if not (isinstance(unit_days, int | float) and math.isfinite(unit_days) and unit_days > 0):
        raise UserInputError(
            f"unit_days must be a number > 0, got {unit_days!r}", where="unit_days"
        )
    columns = [customer_col, date_col] + ([value_col] if value_col is not None else [])
    missing = [c for c in columns if c not in transactions.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing}; available: {list(transactions.columns)}",
            where="transactions",
        )
    frame = transactions[columns]
    for column in columns:
        nulls = int(frame[column].isna().sum())
        if nulls:
            raise DataValidationError(f"{nulls} missing value(s)", where=column)

    stamps = frame[date_col]
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        try:
            stamps = pd.to_datetime(stamps)
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"cannot parse dates: {exc}", where=date_col) from exc
    tz = getattr(stamps.dt, "tz", None)
    days = stamps.dt.normalize()

    end = _to_day(calibration_end, "calibration_end", tz)
    start = (
        None if observation_start is None else _to_day(observation_start, "observation_start", tz)
    )
    if start is not None and start > end:
        raise UserInputError(
            f"observation_start {start.date()} is after calibration_end {end.date()}",
            where="observation_start",
        )

    in_window = days <= end
    if start is not None:
        in_window &= days >= start
    if not in_window.any():
        raise UserInputError(
            "no transaction falls in the observation window", where="calibration_end"
        )

    data = {"customer": frame[customer_col][in_window].to_numpy(), "day": days[in_window]}
    if value_col is not None:
        try:
            data["value"] = pd.to_numeric(frame[value_col][in_window]).astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"values are not numeric: {exc}", where=value_col) from exc
    log = pd.DataFrame(data)

    per_day = log.groupby(["customer", "day"], sort=True).agg(
        **({"value": ("value", "sum")} if value_col is not None else {"n": ("day", "size")})
    )
    per_day = per_day.reset_index()
    grouped = per_day.groupby("customer", sort=True)
    first = grouped["day"].min()
    last = grouped["day"].max()
    n_days = grouped.size()

    summary = pd.DataFrame(index=first.index)
    summary["frequency"] = (n_days - 1).astype(np.int64)
    summary["recency"] = (last - first).dt.days.astype(np.float64) / float(unit_days)
    summary["T"] = (end - first).dt.days.astype(np.float64) / float(unit_days)
    if value_col is not None:
        is_repeat = per_day["day"].to_numpy() != first.reindex(per_day["customer"]).to_numpy()
        repeat_value = per_day.loc[is_repeat].groupby("customer")["value"].mean()
        summary["monetary_value"] = repeat_value.reindex(summary.index).astype(np.float64)
    summary.index.name = customer_col
    logger.info(
        "RFM summary of %d customers from %d transactions (%g days per unit)",
        len(summary), int(in_window.sum()), unit_days,
    )  # fmt: skip
    return summary
