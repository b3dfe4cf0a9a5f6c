"""Tests of segmint.features.definitions and segmint.features.lifecycle."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmint.data.identity.graph import ensure_identity_tables
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError
from segmint.features.definitions import (
    BUILTIN_DEFINITIONS,
    PERSON_KEY,
    RELATIONS,
    FeatureDefinition,
    as_of_query,
    builtin,
    check_name,
    parameters_of,
    render_query,
    user_feature,
)
from segmint.features.lifecycle import (
    STAGES,
    LifecycleThresholds,
    lifecycle_case,
    lifecycle_definition,
    lifecycle_stage,
)

VALUES = {"as_of": datetime(2024, 2, 10), "session_gap_seconds": 1800.0}
_WH = Warehouse(":memory:")


@pytest.fixture(scope="module")
def empty_wh() -> Warehouse:
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    ensure_identity_tables(wh)
    wh.execute("INSERT INTO customers (customer_id) VALUES ('c1')")
    return wh


# --------------------------------------------------------------------------- built-ins


def test_builtin_names_are_unique_valid_and_documented() -> None:
    names = [d.name for d in BUILTIN_DEFINITIONS]
    assert len(names) == len(set(names))
    expected = {
        "recency_days",
        "frequency",
        "monetary",
        "avg_order_value",
        "tenure_days",
        "interpurchase_mean_days",
        "interpurchase_std_days",
        "category_count",
        "category_entropy",
        "discount_share",
        "channel_share_web",
        "channel_share_app",
        "channel_share_store",
        "sessions",
        "pages_per_session",
        "product_views",
        "cart_adds",
        "cart_abandonment_rate",
        "email_open_rate",
        "email_opens_30d",
        "days_since_last_visit",
        "aov_per_visit",
    }
    assert set(names) == expected
    for d in BUILTIN_DEFINITIONS:
        assert check_name(d.name) == d.name
        assert d.description
        assert set(d.sources) <= {"customers", "orders", "order_items", "events", "products"}


def test_every_relation_is_read_by_a_builtin() -> None:
    read = {r for d in BUILTIN_DEFINITIONS for r in d.relations}
    assert read == set(RELATIONS)


def test_relations_are_found_from_the_expression() -> None:
    assert builtin("recency_days").relations == ("_order_stats",)
    assert builtin("tenure_days").relations == ("_people", "_order_stats")
    assert builtin("interpurchase_std_days").relations == ("_order_gaps",)
    assert builtin("aov_per_visit").relations == ()
    assert builtin("aov_per_visit").inputs == ("avg_order_value", "sessions")


@pytest.mark.parametrize("definition", BUILTIN_DEFINITIONS, ids=lambda d: d.name)
def test_every_builtin_runs_alone_with_bound_as_of(
    empty_wh: Warehouse, definition: FeatureDefinition
) -> None:
    sql = definition.sql()
    assert "$as_of" in sql
    assert "2024" not in sql  # the as-of timestamp is bound, never formatted in
    rows = empty_wh.fetchall(sql, parameters_of(sql, VALUES))
    assert [r[0] for r in rows] == ["c1"]


@pytest.mark.parametrize("definition", BUILTIN_DEFINITIONS, ids=lambda d: d.name)
def test_every_builtin_transpiles_to_spark(definition: FeatureDefinition) -> None:
    sql = definition.sql("spark")
    assert ":as_of" in sql
    assert "$as_of" not in sql


def test_unknown_builtin_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown built-in feature 'nope'"):
        builtin("nope")


def test_person_key_is_the_only_key_spelling() -> None:
    assert PERSON_KEY == "customer_id"
    sql = render_query(list(BUILTIN_DEFINITIONS))
    assert sql.startswith("WITH ")
    assert f'SELECT "{PERSON_KEY}"' in sql


def test_relations_are_shared_not_repeated() -> None:
    sql = render_query([builtin("frequency"), builtin("monetary"), builtin("recency_days")])
    assert sql.count("_order_stats AS (") == 1
    assert "_session_stats" not in sql


def test_session_gap_is_a_bound_parameter() -> None:
    sql = render_query([builtin("sessions")])
    assert "$session_gap_seconds" in sql
    assert "1800" not in sql
    assert set(parameters_of(sql, VALUES)) == {"as_of", "session_gap_seconds"}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ["Recency", "1x", "a-b", "", "x" * 64, "snapshot_id", "as_of"])
def test_bad_feature_names_are_rejected(name: str) -> None:
    with pytest.raises(UserInputError):
        check_name(name)


def test_definition_validates_kind_transform_and_references() -> None:
    with pytest.raises(UserInputError, match="kind"):
        FeatureDefinition("x", "d", "1", (), kind="ordinal")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="transform"):
        FeatureDefinition("x", "d", "1", (), transform="sqrt")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="unknown relations"):
        FeatureDefinition("x", "d", "_nope.n_orders", ())
    with pytest.raises(UserInputError, match="unqualified"):
        FeatureDefinition("x", "d", "_order_stats.n_orders", (), inputs=("frequency",))
    with pytest.raises(UserInputError, match="does not parse"):
        FeatureDefinition("x", "d", "1 +* (", ())


def test_custom_aggregate_and_derived_definitions_render_and_run(empty_wh: Warehouse) -> None:
    orders_per_web = FeatureDefinition(
        "web_orders", "Completed web orders.", "coalesce(_order_stats.n_web, 0)", ("orders",)
    )
    ratio = FeatureDefinition(
        "web_ratio",
        "web orders per order",
        "web_orders / nullif(frequency, 0)",
        ("orders",),
        inputs=("web_orders", "frequency"),
    )
    sql = render_query([ratio, orders_per_web])
    rows = empty_wh.fetchall(sql, parameters_of(sql, VALUES))
    assert rows == [("c1", None, 0)]
    # inputs that are not requested are computed but not output
    sql = render_query([builtin("aov_per_visit")])
    assert empty_wh.fetchall(sql, parameters_of(sql, VALUES)) == [("c1", None)]


def test_derived_from_derived_and_unknown_inputs_are_rejected() -> None:
    twice = FeatureDefinition("twice", "d", "aov_per_visit * 2", (), inputs=("aov_per_visit",))
    with pytest.raises(UserInputError, match="itself derived"):
        render_query([twice])
    missing = FeatureDefinition("m", "d", "nope + 1", (), inputs=("nope",))
    with pytest.raises(UserInputError, match="unknown feature 'nope'"):
        render_query([missing])
    with pytest.raises(UserInputError, match="defined twice"):
        render_query([builtin("frequency"), builtin("frequency")])


def test_parameters_of_keeps_used_names_and_rejects_positional() -> None:
    assert parameters_of("SELECT $as_of", VALUES) == {"as_of": VALUES["as_of"]}
    assert parameters_of("SELECT 1", VALUES) == {}
    with pytest.raises(UserInputError, match="named parameters"):
        parameters_of("SELECT ?", VALUES)
    with pytest.raises(UserInputError, match="unknown parameters"):
        parameters_of("SELECT $other", VALUES)


# --------------------------------------------------------------------------- user features


def test_user_query_sees_canonical_tables_as_of() -> None:
    sql, sources = as_of_query(
        "f",
        "SELECT o.customer_id, count(*) AS value FROM orders AS o "
        "JOIN order_items i USING (order_id) JOIN products p USING (product_id) "
        "GROUP BY 1",
    )
    assert sources == ("orders", "order_items", "products")
    assert '"_asof_orders" AS "o"' in sql
    assert '"_asof_order_items" AS "i"' in sql
    assert "_asof_products" not in sql  # the catalogue has no time
    assert "ordered_at <= CAST($as_of AS TIMESTAMP)" in sql


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("DROP TABLE orders", "single SELECT"),
        ("SELECT 1; SELECT 2", "single SELECT"),
        ("INSERT INTO orders SELECT * FROM orders", "single SELECT"),
        ("SELECT FROM WHERE (", "does not parse"),
        (
            "WITH orders AS (SELECT * FROM orders) SELECT customer_id, 1 AS value FROM orders",
            "may not be named like the table 'orders'",
        ),
        ("   ", "needs a SQL query"),
    ],
)
def test_bad_user_queries_are_rejected_before_running(query: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as info:
        user_feature("my_feature", query)
    assert info.value.where == "features.my_feature"


def test_user_feature_renders_inline_with_as_of(empty_wh: Warehouse) -> None:
    f = user_feature(
        "app_orders",
        "SELECT customer_id, count(*) AS value FROM orders WHERE channel = 'app' "
        "GROUP BY customer_id",
    )
    assert f.query is not None and f.sources == ("orders",)
    sql = f.sql()
    assert empty_wh.fetchall(sql, parameters_of(sql, VALUES)) == [("c1", None)]


# --------------------------------------------------------------------------- lifecycle

T = LifecycleThresholds()


@pytest.mark.parametrize(
    ("tenure", "recency", "stage"),
    [
        (30.0, None, "new"),
        (30.0, 5.0, "new"),
        (30.000001, 5.0, "active"),
        (400.0, 90.0, "active"),
        (400.0, 90.000001, "at_risk"),
        (400.0, 180.0, "at_risk"),
        (400.0, 180.000001, "dormant"),
        (400.0, 365.0, "dormant"),
        (400.0, 365.000001, "churned"),
        (365.0, None, "prospect"),
        (365.000001, None, "churned"),
        (None, None, "prospect"),
        (math.nan, math.nan, "prospect"),
    ],
)
def test_lifecycle_stages_at_the_thresholds(
    tenure: float | None, recency: float | None, stage: str
) -> None:
    assert lifecycle_stage(tenure, recency, T) == stage
    t_val = None if tenure is None or math.isnan(tenure) else tenure
    r_val = None if recency is None or math.isnan(recency) else recency
    assert _WH.scalar(_case_sql(T), {"t": t_val, "r": r_val}) == stage


def _case_sql(thresholds: LifecycleThresholds) -> str:
    case = lifecycle_case(thresholds, tenure="CAST($t AS DOUBLE)", recency="CAST($r AS DOUBLE)")
    return f"SELECT {case}"


def test_lifecycle_thresholds_are_validated() -> None:
    with pytest.raises(UserInputError, match="increase"):
        LifecycleThresholds(active_max_recency_days=200.0)
    with pytest.raises(UserInputError, match=">= 0"):
        LifecycleThresholds(new_max_tenure_days=-1.0)
    with pytest.raises(UserInputError, match="number of days"):
        LifecycleThresholds(new_max_tenure_days="30")  # type: ignore[arg-type]
    assert LifecycleThresholds(active_max_recency_days=60).active_max_recency_days == 60.0


def test_lifecycle_definition_is_categorical_and_derived() -> None:
    d = lifecycle_definition(LifecycleThresholds(new_max_tenure_days=14))
    assert (d.name, d.kind, d.transform) == ("lifecycle_stage", "categorical", "onehot")
    assert d.inputs == ("tenure_days", "recency_days")
    assert "14.0" in d.expression


days = st.one_of(st.none(), st.floats(min_value=0, max_value=1000, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(
    tenure=days,
    recency=days,
    cut=st.lists(st.floats(min_value=0, max_value=500), min_size=5, max_size=5),
)
def test_lifecycle_sql_agrees_with_python(
    tenure: float | None, recency: float | None, cut: list[float]
) -> None:
    new, prospect, *recency_cuts = cut
    a, b, c = sorted(recency_cuts[:3])
    thresholds = LifecycleThresholds(
        new_max_tenure_days=new,
        active_max_recency_days=a,
        at_risk_max_recency_days=b,
        dormant_max_recency_days=c,
        prospect_max_tenure_days=prospect,
    )
    got = _WH.scalar(_case_sql(thresholds), {"t": tenure, "r": recency})
    assert got == lifecycle_stage(tenure, recency, thresholds)
    assert got in STAGES
