"""Tests of segmint.features.transforms: the rule, the sklearn contract, SQL equality."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from segmint.engine.dialect import quote
from segmint.features.transforms import FeatureTransformer

SEED = 20261123


@parametrize_with_checks([FeatureTransformer(), FeatureTransformer(scaling="standard")])
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)


def skewed(rng: np.random.Generator, n: int = 500) -> np.ndarray:
    return rng.lognormal(mean=3.0, sigma=1.2, size=n)


def test_skewed_non_negative_money_gets_log1p_and_robust_scaling() -> None:
    rng = np.random.default_rng(SEED)
    X = pd.DataFrame({"monetary": skewed(rng), "sym": rng.normal(size=500)})
    t = FeatureTransformer().fit(X)
    money = t.transforms_["monetary"]
    assert money["transform"] == "log1p+robust"
    assert money["skewness"] > 1.0
    logged = np.log1p(X["monetary"].to_numpy())
    assert money["center"] == pytest.approx(np.median(logged))
    q1, q3 = np.percentile(logged, [25, 75])
    assert money["scale"] == pytest.approx(q3 - q1)
    assert t.transforms_["sym"]["transform"] == "robust"
    out = t.transform(X)
    assert np.median(out[:, 0]) == pytest.approx(0.0, abs=1e-12)
    q1, q3 = np.percentile(out[:, 0], [25, 75])
    assert q3 - q1 == pytest.approx(1.0)


def test_negative_values_are_never_logged() -> None:
    rng = np.random.default_rng(SEED)
    values = skewed(rng) - 5.0  # skewed but with negatives
    t = FeatureTransformer(hints={"x": "log1p"}).fit(pd.DataFrame({"x": values}))
    assert t.transforms_["x"]["log1p"] is False
    assert "negative" in t.transforms_["x"]["reason"]
    t = FeatureTransformer().fit(pd.DataFrame({"x": values}))
    assert t.transforms_["x"]["transform"] == "robust"


def test_hints_force_or_prevent_log1p() -> None:
    rng = np.random.default_rng(SEED)
    X = pd.DataFrame({"a": rng.uniform(0, 10, 300), "b": skewed(rng, 300)})
    t = FeatureTransformer(hints={"a": "log1p", "b": "none"}).fit(X)
    assert t.transforms_["a"]["transform"] == "log1p+robust"
    assert t.transforms_["b"]["transform"] == "robust"


def test_missing_values_are_filled_with_the_fitted_median() -> None:
    X = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0, 100.0]})
    t = FeatureTransformer(scaling="none", hints={"x": "none"}).fit(X)
    assert t.transforms_["x"]["fill"] == 3.0
    assert t.transform(pd.DataFrame({"x": [np.nan]}))[0, 0] == 3.0
    assert t.transforms_["x"]["transform"] == "identity"


def test_standard_scaling_and_constant_columns() -> None:
    rng = np.random.default_rng(SEED)
    X = pd.DataFrame({"x": rng.normal(5, 2, 400), "c": np.full(400, 7.0)})
    t = FeatureTransformer(scaling="standard").fit(X)
    out = t.transform(X)
    assert out[:, 0].mean() == pytest.approx(0.0, abs=1e-12)
    assert out[:, 0].std() == pytest.approx(1.0)
    assert t.transforms_["c"]["scale"] == 1.0
    assert np.all(out[:, 1] == 0.0)


def test_all_missing_column_is_filled_with_zero() -> None:
    t = FeatureTransformer().fit(pd.DataFrame({"x": [np.nan, np.nan], "y": [1.0, 2.0]}))
    assert t.transforms_["x"]["fill"] == 0.0
    assert np.all(t.transform(pd.DataFrame({"x": [np.nan], "y": [3.0]}))[:, 0] == 0.0)


def test_small_categoricals_are_one_hot_encoded() -> None:
    X = pd.DataFrame({"stage": ["new", "active", None, "active"], "n": [1.0, 2.0, 3.0, 4.0]})
    t = FeatureTransformer().fit(X)
    assert t.transforms_["stage"]["transform"] == "onehot"
    assert list(t.get_feature_names_out()) == ["stage_active", "stage_new", "n"]
    out = t.transform(pd.DataFrame({"stage": ["active", None, "unseen"], "n": [1.0, 1.0, 1.0]}))
    assert out[:, :2].tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]


def test_large_categoricals_keep_the_most_frequent_levels() -> None:
    levels = [f"l{i:02d}" for i in range(12)]
    values = [lvl for i, lvl in enumerate(levels) for _ in range(12 - i)]
    t = FeatureTransformer().fit(pd.DataFrame({"city": values}))
    spec = t.transforms_["city"]
    assert spec["transform"] == "onehot(top 10 of 12)"
    assert spec["levels"] == levels[:10]
    assert spec["n_levels"] == 12


def test_categorical_by_name_and_booleans_as_text() -> None:
    X = pd.DataFrame({"code": [1, 2, 2, 3], "flag": [True, False, True, True]})
    t = FeatureTransformer(categorical=["code"]).fit(X)
    assert t.transforms_["code"]["levels"] == ["1", "2", "3"]
    assert t.transforms_["flag"]["levels"] == ["false", "true"]


def test_bad_parameters_are_rejected_at_fit() -> None:
    X = np.ones((3, 1))
    for bad in (
        FeatureTransformer(scaling="minmax"),
        FeatureTransformer(max_categories=0),
        FeatureTransformer(skew_threshold=float("nan")),
        FeatureTransformer(hints={"x0": "sqrt"}),
    ):
        with pytest.raises(ValueError):
            bad.fit(X)


def test_unfitted_and_wrong_columns() -> None:
    with pytest.raises(NotFittedError):
        FeatureTransformer().to_sql()
    t = FeatureTransformer().fit(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}))
    with pytest.raises(ValueError):
        t.transform(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(ValueError, match="infinity"):
        t.transform(pd.DataFrame({"a": [np.inf], "b": [1.0]}))


def test_to_sql_renders_for_another_dialect() -> None:
    X = pd.DataFrame({"monetary": [0.0, 1.0, 2.0, 500.0], "stage": ["a", "b", "a", "a"]})
    t = FeatureTransformer(hints={"monetary": "log1p"}).fit(X)
    sql = t.to_sql({"monetary": "f.monetary", "stage": "f.stage"}, dialect="spark")
    assert list(sql) == ["monetary", "stage_a", "stage_b"]
    assert "LN(" in sql["monetary"] and "f.monetary" in sql["monetary"]
    assert "CAST((f.stage) AS STRING) = 'a'" in sql["stage_a"]


def test_sql_literals_escape_quotes() -> None:
    X = pd.DataFrame({"name": ["o'brien", "x"]})
    t = FeatureTransformer().fit(X)
    con = duckdb.connect()
    con.register("t", X)
    exprs = t.to_sql()
    got = con.execute(f"SELECT {exprs[next(iter(exprs))]} FROM t").fetchall()
    assert [r[0] for r in got] == t.transform(X)[:, 0].tolist()


# --------------------------------------------------------------------------- SQL == Python

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
money = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)


@st.composite
def frames(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str], str]:
    n = draw(st.integers(min_value=1, max_value=40))
    m = draw(st.integers(min_value=1, max_value=15))

    def column(values: st.SearchStrategy[float], size: int) -> list[float]:
        return draw(st.lists(st.one_of(st.none(), values), min_size=size, max_size=size))

    fit = pd.DataFrame(
        {
            "amount": pd.array(column(money, n), dtype="Float64").to_numpy(
                dtype=np.float64, na_value=np.nan
            ),
            "delta": pd.array(column(finite, n), dtype="Float64").to_numpy(
                dtype=np.float64, na_value=np.nan
            ),
            "stage": draw(
                st.lists(
                    st.one_of(st.none(), st.sampled_from(["a", "b", "c'd"])), min_size=n, max_size=n
                )
            ),
        }
    )
    new = pd.DataFrame(
        {
            "amount": pd.array(column(money, m), dtype="Float64").to_numpy(
                dtype=np.float64, na_value=np.nan
            ),
            "delta": pd.array(column(finite, m), dtype="Float64").to_numpy(
                dtype=np.float64, na_value=np.nan
            ),
            "stage": draw(
                st.lists(
                    st.one_of(st.none(), st.sampled_from(["a", "b", "e"])), min_size=m, max_size=m
                )
            ),
        }
    )
    hints = {"amount": draw(st.sampled_from(["auto", "log1p", "none"]))}
    scaling = draw(st.sampled_from(["robust", "standard", "none"]))
    return fit, new, hints, scaling


_CON = duckdb.connect()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_sql_equals_transform(data: tuple[pd.DataFrame, pd.DataFrame, dict[str, str], str]) -> None:
    fit, new, hints, scaling = data
    t = FeatureTransformer(hints=hints, scaling=scaling).fit(fit)
    expected = t.transform(new)
    exprs = t.to_sql({c: f"data.{quote(c)}" for c in new.columns})
    assert list(exprs) == list(t.get_feature_names_out())
    con = _CON
    con.register("data_view", new)
    # keep row order: number the rows, evaluate, sort back
    select = ", ".join(f"{sql} AS {quote(name)}" for name, sql in exprs.items())
    rows = con.execute(
        f"SELECT {select} FROM (SELECT *, row_number() OVER () AS _rn FROM data_view) AS data "
        "ORDER BY _rn"
    ).fetchall()
    got = np.asarray(rows, dtype=np.float64)
    assert got.shape == expected.shape
    for a, b in zip(got.ravel(), expected.ravel(), strict=True):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (a, b, t.transforms_)
