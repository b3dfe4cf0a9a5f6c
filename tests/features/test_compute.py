"""Tests of segmint.features.compute on small hand-checked data sets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest

from segmint.data.schema import TABLES
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError
from segmint.features.compute import (
    FEATURES_TABLE,
    KEY_COLUMNS,
    compute_features,
    default_as_of,
    default_definitions,
)
from segmint.features.definitions import BUILTIN_DEFINITIONS, builtin, parameters_of
from segmint.features.lifecycle import LifecycleThresholds, lifecycle_definition

AS_OF = datetime(2024, 2, 10)


def insert(wh: Warehouse, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    marks = ", ".join("?" for _ in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    for row in rows:
        wh.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row))


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def build_shop() -> Warehouse:
    """Three customers with known orders and events (see the expected values below).

    c1 signed up 2023-01-01; completed orders o1 (2024-01-01, 100, web), o2 (01-11, 50,
    discount 10, app, status NULL), o3 (01-31, 30, web, discount NULL); o4 is returned and
    o5 comes after as_of. Items: 1 x p1 (cat a), 1 x p2 (cat b), 2 x p1. Events on
    2024-02-01 form three sessions (a 29-minute gap does not split, a 31- and a 35-minute
    gap do), with one converted and one abandoned checkout.
    c2 has no signup date, one store order (20, discount 5), no events.
    c3 signed up 2023-06-01 and has nothing else; c4 signs up after as_of.
    """
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    insert(
        wh,
        "customers",
        ["customer_id", "signup_at"],
        [
            ("c1", ts("2023-01-01")),
            ("c2", None),
            ("c3", ts("2023-06-01")),
            ("c4", ts("2024-03-01")),
        ],
    )
    insert(
        wh,
        "orders",
        ["order_id", "customer_id", "ordered_at", "amount", "discount", "channel", "status"],
        [
            ("o1", "c1", ts("2024-01-01"), 100.0, 0.0, "web", "completed"),
            ("o2", "c1", ts("2024-01-11"), 50.0, 10.0, "app", None),
            ("o3", "c1", ts("2024-01-31"), 30.0, None, "web", "completed"),
            ("o4", "c1", ts("2024-01-20"), 999.0, 0.0, "web", "returned"),
            ("o5", "c1", ts("2024-03-01"), 500.0, 0.0, "store", "completed"),
            ("o6", "c2", ts("2024-01-15"), 20.0, 5.0, "store", None),
        ],
    )
    insert(
        wh,
        "products",
        ["product_id", "category"],
        [("p1", "a"), ("p2", "b"), ("p3", "c")],
    )
    insert(
        wh,
        "order_items",
        ["order_id", "line_no", "product_id", "quantity"],
        [
            ("o1", 1, "p1", 1),
            ("o2", 1, "p2", 1),
            ("o3", 1, "p1", 2),
            ("o4", 1, "p3", 5),
            ("o5", 1, "p3", 7),
        ],
    )
    day = "2024-02-01 "
    events = [
        # session A: 10:00 .. 10:50, converted checkout
        ("page", None, "c1", day + "10:00"),
        ("page", None, "c1", day + "10:29"),
        ("track", "Product Viewed", "c1", day + "10:30"),
        ("track", "Product Added", "c1", day + "10:40"),
        ("track", "Checkout Started", "c1", day + "10:45"),
        ("track", "Order Completed", "c1", day + "10:50"),
        # session B: 31 minutes later, abandoned checkout
        ("page", None, "c1", day + "11:21"),
        ("track", "Checkout Started", "c1", day + "11:25"),
        # session C: 35 minutes later; its completion does not rescue session B's checkout
        ("page", None, "c1", day + "12:00"),
        ("track", "Order Completed", "c1", day + "12:10"),
        # email events are not visits
        ("track", "Email Delivered", "c1", "2024-02-05 09:00"),
        ("track", "Email Delivered", "c1", "2024-02-05 09:00"),
        ("track", "Email Delivered", "c1", "2024-01-05 09:00"),
        ("track", "Email Delivered", "c1", "2024-01-05 09:00"),
        ("track", "Email Opened", "c1", "2024-02-05 10:00"),
        ("track", "Email Opened", "c1", "2023-12-01 10:00"),
        # identify calls are not visits; later events are not seen
        ("identify", None, "c1", day + "18:00"),
        ("page", None, "c1", "2024-02-11 10:00"),
    ]
    rows: list[tuple[Any, ...]] = [
        (f"m{i}", type_, event, user, ts(when))
        for i, (type_, event, user, when) in enumerate(events)
    ]
    rows.append(("anon", "page", None, None, ts(day + "10:05")))  # anonymous only: ignored
    insert(wh, "events", ["message_id", "type", "event", "user_id", "timestamp"], rows)
    return wh


@pytest.fixture(scope="module")
def shop() -> Warehouse:
    return build_shop()


@pytest.fixture(scope="module")
def frame(shop: Warehouse) -> pd.DataFrame:
    return compute_features(shop, as_of=AS_OF, snapshot="feb").frame().set_index("customer_id")


def days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400.0


def test_one_row_per_customer_known_at_as_of(frame: pd.DataFrame) -> None:
    assert list(frame.index) == ["c1", "c2", "c3"]  # c4 signed up after as_of
    assert set(frame["snapshot_id"]) == {"feb"}
    assert set(frame["as_of"]) == {pd.Timestamp(AS_OF)}


def test_rfm_of_a_repeat_buyer(frame: pd.DataFrame) -> None:
    c1 = frame.loc["c1"]
    assert c1["recency_days"] == 10.0
    assert c1["frequency"] == 3  # returned and later orders excluded
    assert c1["monetary"] == 180.0
    assert c1["avg_order_value"] == 60.0
    assert c1["tenure_days"] == days(AS_OF - ts("2023-01-01"))
    assert c1["interpurchase_mean_days"] == pytest.approx(15.0)  # gaps 10 and 20 days
    assert c1["interpurchase_std_days"] == pytest.approx(5.0)
    assert c1["discount_share"] == pytest.approx(10.0 / 190.0)
    assert c1["channel_share_web"] == pytest.approx(2 / 3)
    assert c1["channel_share_app"] == pytest.approx(1 / 3)
    assert c1["channel_share_store"] == 0.0


def test_category_diversity_and_entropy(frame: pd.DataFrame) -> None:
    c1 = frame.loc["c1"]
    assert c1["category_count"] == 2  # the returned order's category c does not count
    # quantities: a = 1 + 2, b = 1 -> shares 3/4, 1/4
    assert c1["category_entropy"] == pytest.approx(
        -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    )
    assert frame.loc["c2", "category_count"] == 0
    assert math.isnan(frame.loc["c2", "category_entropy"])


def test_single_category_has_zero_entropy() -> None:
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    insert(wh, "customers", ["customer_id"], [("c1",)])
    insert(
        wh,
        "orders",
        ["order_id", "customer_id", "ordered_at", "amount"],
        [("o1", "c1", ts("2024-01-01"), 1.0), ("o2", "c1", ts("2024-01-02"), 1.0)],
    )
    insert(wh, "products", ["product_id", "category"], [("p1", "a"), ("p2", "a")])
    insert(
        wh,
        "order_items",
        ["order_id", "line_no", "product_id", "quantity"],
        [("o1", 1, "p1", 3), ("o2", 1, "p2", 1)],
    )
    row = compute_features(wh, as_of=AS_OF).frame().iloc[0]
    assert row["category_count"] == 1
    assert row["category_entropy"] == 0.0


def test_engagement_from_sessions(frame: pd.DataFrame) -> None:
    c1 = frame.loc["c1"]
    assert c1["sessions"] == 3
    assert c1["pages_per_session"] == pytest.approx(4 / 3)
    assert c1["product_views"] == 1
    assert c1["cart_adds"] == 1
    assert c1["cart_abandonment_rate"] == 0.5
    assert c1["email_open_rate"] == 0.5  # 2 opens / 4 deliveries
    assert c1["email_opens_30d"] == 1
    assert c1["days_since_last_visit"] == pytest.approx(days(AS_OF - ts("2024-02-01 12:10")))
    assert c1["aov_per_visit"] == pytest.approx(20.0)


def test_customers_without_data_get_zero_counts_and_null_ratios(frame: pd.DataFrame) -> None:
    c3 = frame.loc["c3"]
    for zero in (
        "frequency",
        "monetary",
        "category_count",
        "sessions",
        "product_views",
        "cart_adds",
        "email_opens_30d",
    ):
        assert c3[zero] == 0, zero
    for null in (
        "recency_days",
        "avg_order_value",
        "interpurchase_mean_days",
        "interpurchase_std_days",
        "category_entropy",
        "discount_share",
        "channel_share_web",
        "pages_per_session",
        "cart_abandonment_rate",
        "email_open_rate",
        "days_since_last_visit",
        "aov_per_visit",
    ):
        assert pd.isna(c3[null]), null
    assert c3["tenure_days"] == days(AS_OF - ts("2023-06-01"))


def test_single_order_customer(frame: pd.DataFrame) -> None:
    c2 = frame.loc["c2"]
    assert c2["recency_days"] == 26.0
    assert c2["tenure_days"] == 26.0  # no signup date: from the first order
    assert pd.isna(c2["interpurchase_mean_days"]) and pd.isna(c2["interpurchase_std_days"])
    assert c2["discount_share"] == pytest.approx(0.2)
    assert c2["channel_share_store"] == 1.0


def test_lifecycle_stages(frame: pd.DataFrame) -> None:
    assert frame["lifecycle_stage"].to_dict() == {"c1": "active", "c2": "new", "c3": "prospect"}


def session_warehouse(gaps_minutes: Sequence[float]) -> Warehouse:
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    insert(wh, "customers", ["customer_id"], [("c1",)])
    start = ts("2024-01-01 08:00")
    times = [start]
    for gap in gaps_minutes:
        times.append(times[-1] + timedelta(minutes=gap))
    insert(
        wh,
        "events",
        ["message_id", "type", "user_id", "timestamp"],
        [(f"m{i}", "page", "c1", t) for i, t in enumerate(times)],
    )
    return wh


def sessions(wh: Warehouse, **kwargs: Any) -> int:
    fs = compute_features(wh, as_of=AS_OF, definitions=[builtin("sessions")], **kwargs)
    return int(fs.frame()["sessions"].iloc[0])


@pytest.mark.parametrize(
    ("gaps", "expected"),
    [([29], 1), ([30], 1), ([31], 2), ([29, 31, 29, 31], 3), ([], 1), ([0, 0], 1)],
)
def test_sessions_split_on_gaps_longer_than_30_minutes(gaps: list[float], expected: int) -> None:
    assert sessions(session_warehouse(gaps)) == expected


def test_session_gap_is_configurable() -> None:
    wh = session_warehouse([29, 31])
    assert sessions(wh) == 2
    assert sessions(wh, session_gap_minutes=20) == 3
    assert sessions(wh, session_gap_minutes=60) == 1
    with pytest.raises(UserInputError, match="session_gap_minutes"):
        sessions(wh, session_gap_minutes=0)


def checkout_warehouse(events: list[tuple[str, str]]) -> Warehouse:
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    insert(wh, "customers", ["customer_id"], [("c1",)])
    insert(
        wh,
        "events",
        ["message_id", "type", "event", "user_id", "timestamp"],
        [
            (f"m{i}", "track", name, "c1", ts("2024-01-01 " + when))
            for i, (name, when) in enumerate(events)
        ],
    )
    return wh


def abandonment(wh: Warehouse) -> float:
    fs = compute_features(wh, as_of=AS_OF, definitions=[builtin("cart_abandonment_rate")])
    return float(fs.frame()["cart_abandonment_rate"].iloc[0])


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # completed at the same instant counts as following
        ([("Checkout Started", "10:00"), ("Order Completed", "10:00")], 0.0),
        # two checkouts, one completion after both: both converted
        (
            [
                ("Checkout Started", "10:00"),
                ("Checkout Started", "10:05"),
                ("Order Completed", "10:10"),
            ],
            0.0,
        ),
        # completion before the second checkout only converts the first
        (
            [
                ("Checkout Started", "10:00"),
                ("Order Completed", "10:05"),
                ("Checkout Started", "10:10"),
            ],
            0.5,
        ),
        # a completion in the next session does not count
        ([("Checkout Started", "10:00"), ("Order Completed", "10:31")], 1.0),
        # ... but a chain of short gaps keeps the session open
        (
            [
                ("Checkout Started", "10:00"),
                ("Product Viewed", "10:25"),
                ("Order Completed", "10:50"),
            ],
            0.0,
        ),
        # a completion that starts a new session at once does not count either
        (
            [
                ("Checkout Started", "10:00"),
                ("Product Viewed", "11:00"),
                ("Order Completed", "11:00"),
            ],
            1.0,
        ),
    ],
)
def test_cart_abandonment(events: list[tuple[str, str]], expected: float) -> None:
    assert abandonment(checkout_warehouse(events)) == expected


def test_as_of_excludes_later_data(shop: Warehouse) -> None:
    jan = compute_features(shop, as_of=ts("2024-01-15"), snapshot="jan15").frame()
    jan = jan.set_index("customer_id")
    c1 = jan.loc["c1"]
    assert (c1["frequency"], c1["monetary"], c1["recency_days"]) == (2, 150.0, 4.0)
    assert c1["sessions"] == 0 and c1["email_opens_30d"] == 0
    assert jan.loc["c2", "frequency"] == 1  # the order at 2024-01-15 00:00 is included
    assert jan.loc["c2", "recency_days"] == 0.0
    assert list(jan.index) == ["c1", "c2", "c3"]


def test_default_as_of_is_the_newest_order_or_event(shop: Warehouse) -> None:
    assert default_as_of(shop) == ts("2024-03-01")
    empty = Warehouse(":memory:")
    ensure_tables(empty)
    before = datetime.now(UTC).replace(tzinfo=None)
    assert default_as_of(empty) >= before


def test_aware_as_of_is_converted_to_utc(shop: Warehouse) -> None:
    aware = datetime(2024, 2, 10, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    fs = compute_features(shop, as_of=aware, snapshot="aware", definitions=[builtin("frequency")])
    assert fs.as_of == AS_OF


def test_snapshots_accumulate_and_recompute_replaces(shop: Warehouse) -> None:
    wh = build_shop()
    a = compute_features(wh, as_of=AS_OF, snapshot="a")
    compute_features(wh, as_of=ts("2024-01-15"), snapshot="b")
    assert wh.scalar("SELECT count(*) FROM features") == 6
    again = compute_features(wh, as_of=AS_OF, snapshot="a")
    assert wh.scalar("SELECT count(*) FROM features") == 6
    pd.testing.assert_frame_equal(a.frame(), again.frame())
    assert len(again) == 3
    default = compute_features(wh, as_of=AS_OF)
    assert default.snapshot_id == "2024-02-10T00:00:00"


def test_feature_set_views(shop: Warehouse) -> None:
    fs = compute_features(shop, as_of=AS_OF, snapshot="views")
    names = [d.name for d in default_definitions()]
    assert fs.columns == names
    assert list(fs.frame().columns) == [*KEY_COLUMNS, *names]
    table = fs.arrow()
    assert table.num_rows == 3 and table.column_names == [*KEY_COLUMNS, *names]
    assert fs.kinds["lifecycle_stage"] == "categorical" and fs.kinds["monetary"] == "numeric"
    assert fs.transform_hints["monetary"] == "log1p"
    dictionary = fs.dictionary()
    assert list(dictionary["name"]) == names
    assert {"name", "description", "sql", "transform"} <= set(dictionary.columns)
    assert all("$as_of" in sql for sql in dictionary["sql"])


def test_features_table_is_in_the_data_dictionary(shop: Warehouse) -> None:
    compute_features(shop, as_of=AS_OF, snapshot="dict")
    table = TABLES[FEATURES_TABLE]
    columns = {c.name: c for c in table.columns}
    assert list(columns)[:3] == list(KEY_COLUMNS)
    assert columns["customer_id"].pii
    assert columns["monetary"].type == "float"
    assert columns["frequency"].type == "integer"
    assert columns["lifecycle_stage"].type == "string"
    assert columns["as_of"].type == "timestamp"
    assert columns["frequency"].meaning == builtin("frequency").description


@pytest.mark.parametrize("definition", BUILTIN_DEFINITIONS, ids=lambda d: d.name)
def test_standalone_sql_of_a_feature_matches_the_table(
    shop: Warehouse, frame: pd.DataFrame, definition: Any
) -> None:
    sql = definition.sql()
    values = {"as_of": AS_OF, "session_gap_seconds": 1800.0}
    alone = dict(shop.fetchall(sql, parameters_of(sql, values)))
    for customer, value in alone.items():
        expected = frame.loc[customer, definition.name]
        if pd.isna(expected):
            assert value is None
        else:
            assert value == pytest.approx(expected)


def test_custom_lifecycle_thresholds(shop: Warehouse) -> None:
    defs = [
        *BUILTIN_DEFINITIONS,
        lifecycle_definition(LifecycleThresholds(active_max_recency_days=5.0)),
    ]
    fs = compute_features(shop, as_of=AS_OF, snapshot="lc", definitions=defs)
    stages = fs.frame().set_index("customer_id")["lifecycle_stage"].to_dict()
    assert stages == {"c1": "at_risk", "c2": "new", "c3": "prospect"}


def test_lifecycle_at_recency_thresholds() -> None:
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    recencies = {"r90": 90.0, "r90s": 90.0 + 1 / 86400, "r180": 180.0, "r365": 365.0, "r366": 366.0}
    insert(
        wh, "customers", ["customer_id", "signup_at"], [(c, ts("2020-01-01")) for c in recencies]
    )
    insert(
        wh,
        "orders",
        ["order_id", "customer_id", "ordered_at", "amount"],
        [(f"o{c}", c, AS_OF - timedelta(days=r), 1.0) for c, r in recencies.items()],
    )
    fs = compute_features(wh, as_of=AS_OF)
    stages = fs.frame().set_index("customer_id")["lifecycle_stage"].to_dict()
    assert stages == {
        "r90": "active",
        "r90s": "at_risk",
        "r180": "at_risk",
        "r365": "dormant",
        "r366": "churned",
    }


# --------------------------------------------------------------------------- user features

STORE_ORDERS = (
    "SELECT customer_id, count(*) AS value FROM orders WHERE channel = 'store' GROUP BY customer_id"
)


def test_user_feature_is_computed_as_of_and_left_joined(shop: Warehouse) -> None:
    fs = compute_features(
        shop,
        as_of=AS_OF,
        snapshot="user",
        user_features={
            "store_orders": STORE_ORDERS,
            "first_channel": "SELECT customer_id, min(channel) AS value FROM orders "
            "GROUP BY customer_id",
        },
    )
    frame = fs.frame().set_index("customer_id")
    # o5 (store, after as_of) is invisible even though the query does not filter time
    assert pd.isna(frame.loc["c1", "store_orders"])
    assert frame.loc["c2", "store_orders"] == 1
    assert pd.isna(frame.loc["c3", "store_orders"])  # no row from the query: NULL
    assert fs.kinds["store_orders"] == "numeric"
    assert fs.kinds["first_channel"] == "categorical"
    assert frame.loc["c1", "first_channel"] == "app"
    info = fs.dictionary().set_index("name")
    assert info.loc["store_orders", "sql"] == STORE_ORDERS


def test_user_feature_can_use_the_as_of_parameter(shop: Warehouse) -> None:
    query = (
        "SELECT customer_id, max(date_diff('day', ordered_at, CAST($as_of AS TIMESTAMP))) "
        "AS value FROM orders GROUP BY customer_id"
    )
    fs = compute_features(shop, as_of=AS_OF, snapshot="param", user_features={"oldest": query})
    assert fs.frame().set_index("customer_id").loc["c1", "oldest"] == 40


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT customer_id, count(*) AS value FROM no_such_table GROUP BY 1", "no_such_table"),
        ("SELECT customer_id, count(nope) AS value FROM orders GROUP BY 1", "nope"),
        ("SELECT customer_id, amount AS value FROM orders", "repeated customer_id"),
        ("SELECT customer_id, count(*) AS n FROM orders GROUP BY 1", "exactly the columns"),
        ("SELECT customer_id, max(ordered_at) AS value FROM orders GROUP BY 1", "TIMESTAMP"),
        ("SELECT customer_id, CAST('x' AS INTEGER) AS value FROM orders GROUP BY 1", "Conversion"),
        ("DELETE FROM orders", "single SELECT"),
    ],
)
def test_bad_user_feature_is_a_user_error_naming_it(
    shop: Warehouse, query: str, message: str
) -> None:
    with pytest.raises(UserInputError, match=message) as info:
        compute_features(shop, as_of=AS_OF, snapshot="bad", user_features={"bad_one": query})
    assert "bad_one" in str(info.value)
    assert info.value.where == "features.bad_one"
    assert shop.scalar("SELECT count(*) FROM orders") == 6  # nothing was changed
    assert shop.scalar("SELECT count(*) FROM features WHERE snapshot_id = 'bad'") == 0


def test_user_feature_names_are_checked(shop: Warehouse) -> None:
    with pytest.raises(UserInputError, match="another feature"):
        compute_features(shop, as_of=AS_OF, user_features={"monetary": STORE_ORDERS})
    with pytest.raises(UserInputError, match="invalid feature name"):
        compute_features(shop, as_of=AS_OF, user_features={"Bad Name": STORE_ORDERS})


def test_a_feature_changing_type_between_snapshots_is_rejected() -> None:
    wh = build_shop()
    number = "SELECT customer_id, 1 AS value FROM customers GROUP BY 1"
    text = "SELECT customer_id, 'x' AS value FROM customers GROUP BY 1"
    compute_features(wh, as_of=AS_OF, snapshot="a", user_features={"f": number})
    with pytest.raises(UserInputError, match="rename the feature"):
        compute_features(wh, as_of=AS_OF, snapshot="b", user_features={"f": text})
    assert wh.scalar("SELECT count(DISTINCT snapshot_id) FROM features") == 1


def test_new_feature_adds_a_column_null_for_older_snapshots() -> None:
    wh = build_shop()
    compute_features(wh, as_of=AS_OF, snapshot="a", definitions=[builtin("frequency")])
    compute_features(wh, as_of=AS_OF, snapshot="b", definitions=[builtin("monetary")])
    rows = wh.fetchall(
        "SELECT snapshot_id, count(frequency), count(monetary) FROM features GROUP BY 1 ORDER BY 1"
    )
    assert rows == [("a", 3, 0), ("b", 0, 3)]


def test_missing_tables_are_a_user_error() -> None:
    with pytest.raises(UserInputError, match="ingest data first"):
        compute_features(Warehouse(":memory:"), as_of=AS_OF)


def test_nothing_to_compute_is_a_user_error(shop: Warehouse) -> None:
    with pytest.raises(UserInputError, match="no features"):
        compute_features(shop, as_of=AS_OF, definitions=[])


def test_an_empty_features_table_from_the_dictionary_is_replaced() -> None:
    compute_features(build_shop(), as_of=AS_OF)  # registers a features table with many columns
    wh = build_shop()  # ensure_tables now creates that (empty) table
    assert wh.has_table(FEATURES_TABLE)
    fs = compute_features(wh, as_of=AS_OF, definitions=[builtin("frequency")])
    assert wh.columns(FEATURES_TABLE) == [*KEY_COLUMNS, "frequency"]
    assert len(fs) == 3
