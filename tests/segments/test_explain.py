"""Tests of segmint.segments.explain: surrogate tree, its rules and SQL, and why_segment."""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlglot
import sqlglot.expressions as exp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from segmint.errors import UserInputError
from segmint.segments.explain import (
    Condition,
    SurrogateTree,
    fit_surrogate_tree,
    why_segment,
)


def planted(n: int = 3_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Integer RFM data whose segments follow known rules.

    1: recency_days <= 30 AND frequency > 8;  2: recency_days > 180;  0: the rest.
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "recency_days": rng.integers(0, 366, n),
            "frequency": rng.integers(0, 30, n),
            "monetary": rng.gamma(2.0, 100.0, n),
        }
    )
    labels = np.where(
        (frame["recency_days"] <= 30) & (frame["frequency"] > 8),
        1,
        np.where(frame["recency_days"] > 180, 2, 0),
    )
    return frame, labels


def sql_predict(tree: SurrogateTree, table: pa.Table) -> list[int]:
    con = duckdb.connect()
    try:
        con.register("t", table)
        rows = con.execute(f"SELECT {tree.to_sql()} FROM t ORDER BY __row").fetchall()
    finally:
        con.close()
    return [int(r[0]) for r in rows]


def arrow_table(columns: dict[str, list[float | None]]) -> pa.Table:
    """None becomes SQL NULL, float('nan') stays NaN; __row keeps the order."""
    n = len(next(iter(columns.values())))
    data = {name: pa.array(values, type=pa.float64()) for name, values in columns.items()}
    data["__row"] = pa.array(range(n), type=pa.int64())
    return pa.table(data)


def as_frame(columns: dict[str, list[float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {k: [np.nan if v is None else v for v in values] for k, values in columns.items()},
        dtype=np.float64,
    )


# ======================================================================= tree
def test_fidelity_is_perfect_on_separable_data_and_depth_at_most_four() -> None:
    frame, labels = planted()
    tree = fit_surrogate_tree(frame, labels, features=list(frame.columns))
    assert tree.estimator_.get_depth() <= 4
    assert tree.fidelity_.accuracy == 1.0
    per = tree.fidelity_.per_segment
    assert per.index.tolist() == [0, 1, 2]
    assert (per["precision"] == 1.0).all() and (per["recall"] == 1.0).all()
    assert per["support"].tolist() == [int((labels == s).sum()) for s in (0, 1, 2)]


def test_depth_limit_is_respected_and_fidelity_drops_honestly() -> None:
    frame, labels = planted()
    tree = fit_surrogate_tree(frame, labels, features=list(frame.columns), max_depth=1)
    assert tree.estimator_.get_depth() == 1
    assert tree.fidelity_.accuracy < 1.0
    assert tree.fidelity_.accuracy == pytest.approx(np.mean(tree.predict(frame) == labels))
    # one leaf predicts neither 1 nor both: some segment gets no rule and zero recall
    assert any(not rules for rules in tree.rules_.values())


def test_rule_text_is_the_planted_conjunction() -> None:
    frame, labels = planted()
    tree = fit_surrogate_tree(frame, labels, features=list(frame.columns))
    (rule,) = tree.rules_[1]
    assert rule.text == "recency_days <= 30 AND frequency > 8"
    assert rule.support == int((labels == 1).sum())
    assert rule.purity == 1.0 and rule.coverage == 1.0
    parsed = sqlglot.parse_one(rule.text, read="duckdb")
    assert isinstance(parsed, exp.And)
    comparisons = {
        (c.this.name, type(c).__name__, float(c.expression.this)) for c in parsed.flatten()
    }
    assert comparisons == {("recency_days", "LTE", 30.0), ("frequency", "GT", 8.0)}
    # exact thresholds are kept for SQL
    assert [c.threshold for c in rule.conditions] == [30.5, 8.5]
    assert [r.text for r in tree.rules_[2]] == ["recency_days > 180"]


def test_readable_rules_partition_the_training_rows_like_the_tree() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=800), "b": rng.gamma(1.0, 37.0, size=800)})
    labels = (frame["a"] > 0.3).astype(int) + 2 * (frame["b"] > 50).astype(int)
    tree = fit_surrogate_tree(frame, labels, features=["a", "b"], max_depth=3)
    rules = [r for rs in tree.rules_.values() for r in rs]
    con = duckdb.connect()
    con.register("t", frame)
    hits = np.array(con.execute(f"SELECT {', '.join(r.text for r in rules)} FROM t").fetchall())
    assert (hits.sum(axis=1) == 1).all()
    by_rule = np.array([r.segment for r in rules])[hits.argmax(axis=1)]
    assert (by_rule == tree.predict(frame)).all()


def test_rules_merge_repeated_bounds_on_a_feature() -> None:
    x = np.arange(100, dtype=float)
    labels = np.select([x < 20, x < 40, x < 60], [0, 1, 2], 3)
    tree = fit_surrogate_tree(pd.DataFrame({"x": x}), labels, features=["x"], max_depth=3)
    texts = {s: [r.text for r in rs] for s, rs in tree.rules_.items()}
    assert texts == {
        0: ["x <= 19"],
        1: ["x > 19 AND x <= 39"],
        2: ["x > 39 AND x <= 59"],
        3: ["x > 59"],
    }


def test_missing_values_take_the_training_median() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, np.nan, 9.0, 10.0, 11.0, np.nan]})
    labels = [0, 0, 1, 1, 1, 1, 1]
    tree = fit_surrogate_tree(frame, labels, features=["x"], min_samples_leaf=1)
    assert tree.fill_values_ == {"x": 9.0}
    assert tree.predict(pd.DataFrame({"x": [np.nan, None, 0.0]})).tolist() == [1, 1, 0]
    never = fit_surrogate_tree(
        pd.DataFrame({"x": [1.0, 2.0], "empty": [np.nan, np.nan]}),
        [0, 1],
        features=["x", "empty"],
        min_samples_leaf=1,
    )
    assert never.fill_values_["empty"] == 0.0


def test_sql_equals_predict_on_planted_data_with_nulls_and_nan() -> None:
    frame, labels = planted(n=1_000, seed=5)
    frame = frame.astype(float)
    frame.loc[frame.index % 7 == 0, "frequency"] = np.nan
    tree = fit_surrogate_tree(frame, labels, features=list(frame.columns))
    columns: dict[str, list[float | None]] = {
        c: [None if math.isnan(v) else float(v) for v in frame[c]] for c in frame.columns
    }
    # a few NaN (not NULL) values in the engine too
    columns["recency_days"][:5] = [math.nan] * 5
    assert sql_predict(tree, arrow_table(columns)) == tree.predict(as_frame(columns)).tolist()


def test_sql_quotes_columns_and_handles_the_unassigned_segment() -> None:
    frame = pd.DataFrame({"avg order value": [1.0, 2.0, 3.0, 50.0, 60.0, 70.0]})
    labels = [-1, -1, -1, 4, 4, 4]
    tree = fit_surrogate_tree(frame, labels, features=["avg order value"], min_samples_leaf=1)
    assert '"avg order value"' in tree.to_sql()
    assert tree.rules_[-1][0].text == '"avg order value" <= 10'
    con = duckdb.connect()
    con.register("t", frame)
    got = con.execute(f"SELECT {tree.to_sql('t')} FROM t").fetchall()
    assert [r[0] for r in got] == labels


def test_single_segment_gives_a_constant_tree() -> None:
    tree = fit_surrogate_tree(pd.DataFrame({"x": [1.0, 2.0]}), [3, 3], features=["x"])
    assert tree.to_sql() == "3"
    assert [r.text for r in tree.rules_[3]] == ["TRUE"]
    assert tree.fidelity_.accuracy == 1.0


def test_to_dict_is_json_serialisable() -> None:
    frame, labels = planted(n=500)
    doc = fit_surrogate_tree(frame, labels, features=list(frame.columns)).to_dict()
    back = json.loads(json.dumps(doc, allow_nan=False))
    assert back["fidelity"]["accuracy"] == 1.0
    assert back["rules"]["1"][0]["text"] == "recency_days <= 30 AND frequency > 8"
    assert back["sql"].startswith("CASE WHEN")


@pytest.mark.parametrize(
    ("frame", "labels", "kwargs", "match"),
    [
        (pd.DataFrame({"x": [1.0]}), [0], {"features": []}, "at least one feature"),
        (pd.DataFrame({"x": [1.0]}), [0], {"features": ["x"], "max_depth": 0}, "max_depth"),
        (pd.DataFrame({"x": [1.0]}), [0], {"features": ["x"], "max_depth": True}, "max_depth"),
        (pd.DataFrame({"x": [1.0, 2.0]}), [0], {"features": ["x"]}, "1 labels for 2 rows"),
        (pd.DataFrame({"x": [1.0, np.inf]}), [0, 1], {"features": ["x"]}, "infinite"),
        (pd.DataFrame({"x": [1.0]}), [0], {"features": ["y"]}, "missing columns"),
        (pd.DataFrame({"x": []}), [], {"features": ["x"]}, "no rows"),
        (pd.DataFrame({"x": [1.0]}), [0], {"features": "x"}, "list of column names"),
        (pd.DataFrame({"x": [1.0]}), [0], {"features": ["x", "x"]}, "duplicate"),
    ],
)
def test_bad_input_is_a_user_error(
    frame: pd.DataFrame, labels: list[int], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(UserInputError, match=match):
        fit_surrogate_tree(frame, labels, **kwargs)  # type: ignore[arg-type]


def test_condition_text_rounds_but_keeps_the_exact_threshold() -> None:
    c = Condition("monetary", ">", 127.34999, 130.0)
    assert c.text == "monetary > 130"
    assert Condition("share", "<=", 0.2500001, 0.25).text == "share <= 0.25"


VALUES = st.one_of(
    st.none(),
    st.just(math.nan),
    st.sampled_from([0.0, 1.0, 2.5, -3.0, 10.0, 1e-9]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(st.integers(-1, 3), VALUES, VALUES, VALUES), min_size=2, max_size=60),
    depth=st.integers(1, 4),
    probes=st.lists(st.tuples(VALUES, VALUES, VALUES), max_size=10),
)
# A threshold like 0.0026755... written as a bare SQL literal is read as a DECIMAL and
# converted to DOUBLE one unit in the last place off; the value just above it then
# went left in SQL and right in Python.
@example(
    rows=[
        (0, 0.005351150713302476, None, None),
        (1, None, None, None),
        (1, None, None, None),
        (0, 0.0, None, None),
    ],
    depth=1,
    probes=[],
)
def test_property_sql_case_equals_predict(
    rows: list[tuple[int, float | None, float | None, float | None]],
    depth: int,
    probes: list[tuple[float | None, float | None, float | None]],
) -> None:
    names = ["a", "b c", "d"]
    labels = [r[0] for r in rows]
    train = {n: [r[i + 1] for r in rows] for i, n in enumerate(names)}
    tree = fit_surrogate_tree(
        as_frame(train), labels, features=names, max_depth=depth, min_samples_leaf=1
    )
    # score the training rows, random probes, and values on and next to every threshold
    test: dict[str, list[float | None]] = {n: list(v) for n, v in train.items()}
    for probe in probes:
        for n, v in zip(names, probe, strict=True):
            test[n].append(v)
    inner = tree.estimator_.tree_.children_left >= 0
    for j, t in zip(
        tree.estimator_.tree_.feature[inner], tree.estimator_.tree_.threshold[inner], strict=True
    ):
        for v in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)):
            for n in names:
                test[n].append(float(v) if n == names[j] else None)
    expected = tree.predict(as_frame(test)).tolist()
    assert sql_predict(tree, arrow_table(test)) == expected
    # each row satisfies exactly one leaf rule's SQL, and it names the predicted segment
    rules = [r for rs in tree.rules_.values() for r in rs]
    con = duckdb.connect()
    con.register("t", arrow_table(test))
    hits = np.array(
        con.execute(f"SELECT {', '.join(r.sql for r in rules)} FROM t ORDER BY __row").fetchall()
    )
    con.close()
    assert (hits.sum(axis=1) == 1).all()
    assert np.array([r.segment for r in rules])[hits.argmax(axis=1)].tolist() == expected


# ======================================================================= why
def test_why_segment_hand_computed_contributions() -> None:
    # x = (1.5, 2); centres c0 = (0, 0), c1 = (2, 2), c2 = (5, 5)
    # squared distances: c0 6.25, c1 0.25, c2 21.25 -> own 1, runner-up 0
    # contributions: j0 = 1.5^2 - 0.5^2 = 2.0; j1 = 2^2 - 0^2 = 4.0; margin 6.0
    e = why_segment(
        np.array([[1.5, 2.0]]),
        np.array([[0.0, 0.0], [2.0, 2.0], [5.0, 5.0]]),
        ["frequency", "monetary"],
        raw_values={"frequency": 14, "monetary": 2_350.0},
        segment_names={0: "Hibernating", 1: "Champions"},
    )
    assert (e.segment, e.runner_up) == (1, 0)
    assert e.distance == pytest.approx(0.5)
    assert e.runner_up_distance == pytest.approx(2.5)
    assert e.margin == pytest.approx(6.0)
    assert [(c.feature, c.contribution) for c in e.contributions] == [
        ("monetary", pytest.approx(4.0)),
        ("frequency", pytest.approx(2.0)),
    ]
    assert e.all_contributions.sum() == pytest.approx(e.margin)
    assert e.contributions[1].text == (
        "frequency is high (14), typical of Champions rather than Hibernating"
    )
    assert e.contributions[0].raw_value == 2_350.0
    assert e.text.startswith("In Champions rather than Hibernating: monetary is high (2,350)")


def test_why_segment_features_pulling_away_are_negative() -> None:
    # x = (3, 0.5); c0 = (0, 0), c1 = (4, 4): distances 9.25 and 13.25 -> own 0
    # j0 = (3-4)^2 - 3^2 = -8 (pulls towards 1); j1 = 3.5^2 - 0.5^2 = 12
    e = why_segment(np.array([3.0, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), ["a", "b"])
    assert (e.segment, e.runner_up) == (0, 1)
    assert e.margin == pytest.approx(4.0)
    assert [(c.feature, c.contribution, c.direction) for c in e.contributions] == [
        ("b", pytest.approx(12.0), "low"),
        ("a", pytest.approx(-8.0), "high"),
    ]
    assert e.contributions[1].text == "a is high (3), more like segment 1"
    assert e.contributions[0].text == "b is low (0.5), typical of segment 0 rather than segment 1"


def test_why_segment_top_forced_segment_and_one_centre() -> None:
    centres = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [9.0, 9.0, 9.0]])
    e = why_segment(np.array([0.2, 0.1, 0.0]), centres, ["a", "b", "c"], top=1)
    assert len(e.contributions) == 1
    assert e.contributions[0].feature == "c"  # (0-1)^2 - 0 = 1 is the largest
    forced = why_segment(np.array([0.2, 0.1, 0.0]), centres, ["a", "b", "c"], segment=2)
    assert (forced.segment, forced.runner_up) == (2, 0)
    assert forced.margin is not None and forced.margin < 0
    alone = why_segment(np.array([1.0]), np.array([[0.0]]), ["a"])
    assert alone.runner_up is None and alone.contributions == ()
    json.dumps(e.to_dict())


def test_why_segment_neutral_feature() -> None:
    e = why_segment(np.array([0.0, 5.0]), np.array([[0.0, 1.0], [1.0, 1.0]]), ["a", "b"])
    neutral = next(c for c in e.contributions if c.feature == "b")
    assert neutral.contribution == 0.0 and neutral.direction == "neutral"


@pytest.mark.parametrize(
    ("x", "centres", "names", "match"),
    [
        ([[1.0, 2.0], [1.0, 2.0]], [[0.0, 0.0]], ["a", "b"], "one row"),
        ([1.0, 2.0], [[0.0, 0.0, 0.0]], ["a", "b"], "centers"),
        ([1.0, 2.0], [[0.0, 0.0]], ["a"], "feature names"),
        ([1.0, math.nan], [[0.0, 0.0]], ["a", "b"], "finite"),
    ],
)
def test_why_segment_bad_input(
    x: list[float], centres: list[list[float]], names: list[str], match: str
) -> None:
    with pytest.raises(UserInputError, match=match):
        why_segment(np.array(x), np.array(centres), names)


@settings(max_examples=50, deadline=None)
@given(
    k=st.integers(2, 5),
    p=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_property_contributions_add_up_to_the_margin(k: int, p: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, p))
    x = rng.normal(size=p)
    e = why_segment(x, centres, [f"f{j}" for j in range(p)], top=p)
    sq = ((x - centres) ** 2).sum(axis=1)
    assert e.segment == int(np.argmin(sq))
    assert e.margin is not None and e.margin >= 0
    assert e.all_contributions.sum() == pytest.approx(e.margin, abs=1e-9)
    values = [c.contribution for c in e.contributions]
    assert values == sorted(values, reverse=True)
